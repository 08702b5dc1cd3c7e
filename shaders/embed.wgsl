// Token embedding gather: X[t, :] = decode(E[ids[t], :]).
// PyTorch: x = embed_tokens(ids)        # [T, D]
// (Gemma: x = embed_tokens(ids) * sqrt(D), P.scale; 1 otherwise)

struct Params {
    dim: u32,          // D
    row_bytes: u32,    // bytes of one embedding row in file encoding
    vocab: u32,
    scale: f32,        // Gemma: sqrt(D); 1 otherwise
}
#include step

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<uniform> S: Step;
@group(0) @binding(2) var<storage, read> W: array<u32>;
@group(0) @binding(3) var<storage, read> ids: array<u32>;
#ifdef KTAIL
// D not a multiple of 4 (float tables): rows start at any element.
@group(0) @binding(4) var<storage, read_write> X: array<f32>;
#else
@group(0) @binding(4) var<storage, read_write> X: array<vec4<f32>>;
#endif

#include wdecode

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c4 = gid.x;
    let t = gid.y;
    if (t >= S.n_tokens || c4 * 4u >= P.dim) {
        return;
    }
    let id = min(ids[t], P.vocab - 1u);
#ifdef KTAIL
    let v = wk(id * P.row_bytes, c4, P.dim);
    for (var j = 0u; j < min(4u, P.dim - c4 * 4u); j++) {
        X[t * P.dim + c4 * 4u + j] = v[j] * P.scale;
    }
#else
    X[(t * P.dim) / 4u + c4] = w4(id * P.row_bytes, c4 * 4u) * P.scale;
#endif
}
