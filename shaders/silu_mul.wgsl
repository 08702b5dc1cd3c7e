// SwiGLU gate: H[t, i] = silu(G[t, i]) * U[t, i]
// (GELU_TANH: GeGLU, gelu_tanh(G) * U)
// PyTorch: h = F.silu(gate_proj(x)) * up_proj(x)

struct Params {
    dim: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}
#include step

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<uniform> S: Step;
@group(0) @binding(2) var<storage, read> G: array<f32>;
@group(0) @binding(3) var<storage, read> U: array<f32>;
@group(0) @binding(4) var<storage, read_write> H: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    let t = gid.y;
    if (t >= S.n_tokens || i >= P.dim) {
        return;
    }
    let o = t * P.dim + i;
    let g = G[o];
#ifdef GELU_TANH
    // GeGLU (Gemma gelu_pytorch_tanh, ggml gelu): PyTorch's
    // 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))); tanh's argument is
    // clamped to +-10, where tanh is 1 to f32 precision, so that no
    // implementation overflows an exp inside it.
    let inner = 0.7978845608028654 * (g + 0.044715 * (g * g * g));
    H[o] = 0.5 * g * (1.0 + tanh(clamp(inner, -10.0, 10.0))) * U[o];
#else
    H[o] = g / (1.0 + exp(-g)) * U[o];
#endif
}
