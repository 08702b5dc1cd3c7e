// Per-head RMSNorm in place (Qwen3 q_norm / k_norm): each head of each of
// the step's rows, X[t, h*hd .. (h+1)*hd], becomes
//   w * (x * rsqrt(mean(x^2) + eps))
// PyTorch (Qwen3Attention): self.q_norm(self.q_proj(h).view(..., -1, head_dim))
// with Qwen3RMSNorm(head_dim): the norm runs over the head dimension only.
// One workgroup per (head, row); dispatched before RoPE (prefill: rope.wgsl;
// decode: attention.wgsl's ROPE variant, which reads the normed rows).

struct Params {
    head_dim: u32,
    n_heads: u32,
    eps: f32,
    _pad0: u32,
}
#include step

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<uniform> S: Step;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read_write> X: array<f32>;

const WG: u32 = 64u;
var<workgroup> red: array<f32, 64>;
#include reduce,rms with RMS_SRC=X

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let h = wid.x;
    let t = wid.y;
    if (t >= S.n_tokens || h >= P.n_heads) {
        return;
    }
    let base = (t * P.n_heads + h) * P.head_dim;
    let inv = rms_inv(base, P.head_dim, P.eps, lid);
    // Each thread rewrites only the elements it read.
    for (var i = lid; i < P.head_dim; i += WG) {
        X[base + i] = w[i] * (X[base + i] * inv);
    }
}
