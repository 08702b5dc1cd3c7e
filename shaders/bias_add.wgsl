// Projection bias: Y[t, i] += B[i] for the step's tokens.
// PyTorch: nn.Linear(..., bias=True) adds `bias` after the product; sramlm
// runs the product first (matmul.wgsl), then this.

struct Params {
    dim: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}
#include step

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<uniform> S: Step;
@group(0) @binding(2) var<storage, read> B: array<f32>;
@group(0) @binding(3) var<storage, read_write> Y: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    let t = gid.y;
    if (t >= S.n_tokens || i >= P.dim) {
        return;
    }
    let o = t * P.dim + i;
    Y[o] = Y[o] + B[i];
}
