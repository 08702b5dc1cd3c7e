// SwiGLU gate: H[t, i] = silu(G[t, i]) * U[t, i]
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
    H[o] = g / (1.0 + exp(-g)) * U[o];
}
