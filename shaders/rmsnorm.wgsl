// RMSNorm over each row: Y[t] = X[t] * rsqrt(mean(X[t]^2) + eps) * w.
// PyTorch (LlamaRMSNorm): w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))

struct Params {
    dim: u32,
    eps: f32,
    _pad0: u32,
    _pad1: u32,
}
#include step

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<uniform> S: Step;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read> X: array<f32>;
@group(0) @binding(4) var<storage, read_write> Y: array<f32>;

const WG: u32 = 64u;
var<workgroup> red: array<f32, 64>;
#include reduce,rms with RMS_SRC=X

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let t = wid.x;
    if (t >= S.n_tokens) {
        return;
    }
    let base = t * P.dim;
    let inv = rms_inv(base, P.dim, P.eps, lid);
    for (var i = lid; i < P.dim; i += WG) {
#ifdef ACCUMULATE
        // Post-norm (Gemma): the residual stream Y += the normed X.
        Y[base + i] = Y[base + i] + w[i] * (X[base + i] * inv);
#else
        Y[base + i] = w[i] * (X[base + i] * inv);
#endif
    }
}
