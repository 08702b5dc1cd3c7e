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
#ifdef STAGE_WEIGHT
// SRAM mode: the norm weight is staged into the slice and read from there.
var<workgroup> wsram: array<f32, {{DIM}}>;
#endif

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let t = wid.x;
    if (t >= S.n_tokens) {
        return;
    }
    let base = t * P.dim;
#ifdef STAGE_WEIGHT
    for (var i = lid; i < P.dim; i += WG) {
        wsram[i] = w[i];
    }
#endif
    var ss = 0.0;
    for (var i = lid; i < P.dim; i += WG) {
        let v = X[base + i];
        ss = fma(v, v, ss);
    }
    red[lid] = ss;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            red[lid] += red[lid + s];
        }
        workgroupBarrier();
    }
    let inv = inverseSqrt(red[0] / f32(P.dim) + P.eps);
    for (var i = lid; i < P.dim; i += WG) {
#ifdef STAGE_WEIGHT
        Y[base + i] = wsram[i] * (X[base + i] * inv);
#else
#ifdef ACCUMULATE
        // Post-norm (Gemma): the residual stream Y += the normed X.
        Y[base + i] = Y[base + i] + w[i] * (X[base + i] * inv);
#else
        Y[base + i] = w[i] * (X[base + i] * inv);
#endif
#endif
    }
}
