// Y[t, n] (+)= sum_k X[t, k] * W[n, k]        W in file encoding (see lib/wdecode)
// PyTorch: y = x @ W.T  (nn.Linear without bias); with ACCUMULATE: x += x2 @ W.T
//
// One workgroup of 64 threads computes R output rows for TT tokens. Threads
// split K (consecutive threads read consecutive 4-wide chunks of a weight row,
// which coalesces on GPUs and vectorises on lavapipe); the R*TT partial sums
// are then reduced across the workgroup in shared memory.
// Defines: one W_* type, R={{R}}, TT={{TT}}, optional ACCUMULATE.

struct Params {
    n: u32,            // output features (rows of W)
    k: u32,            // input features (multiple of 4)
    row_bytes: u32,    // bytes of one row of W
    out_rows_only: u32, // 1: tokens are S.out_row0 .. + S.n_out_rows (logits), output rows from 0
}
struct Step {
    n_tokens: u32,
    pos0: u32,
    out_row0: u32,
    n_out_rows: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<uniform> S: Step;
@group(0) @binding(2) var<storage, read> W: array<u32>;
@group(0) @binding(3) var<storage, read> X: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> Y: array<f32>;

#include wdecode

const WG: u32 = 64u;
const R: u32 = {{R}}u;
const TT: u32 = {{TT}}u;
const RT: u32 = R * TT;
var<workgroup> red: array<f32, {{RED}}>; // WG * R * TT

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let n0 = wid.x * R;
    let t0 = wid.y * TT;
    var n_tok = S.n_tokens;
    var x_row0 = 0u;
    if (P.out_rows_only == 1u) {
        n_tok = S.n_out_rows;
        x_row0 = S.out_row0;
    }
    if (t0 >= n_tok) {
        return;
    }
    let k4n = P.k / 4u;
    var acc: array<f32, RT>;
    for (var j = 0u; j < RT; j++) {
        acc[j] = 0.0;
    }
    for (var k4 = lid; k4 < k4n; k4 += WG) {
        var xs: array<vec4<f32>, TT>;
        for (var t = 0u; t < TT; t++) {
            let tt = min(t0 + t, n_tok - 1u);
            xs[t] = X[(x_row0 + tt) * k4n + k4];
        }
        for (var r = 0u; r < R; r++) {
            let n = min(n0 + r, P.n - 1u);
            let w = w4(n * P.row_bytes, k4 * 4u);
            for (var t = 0u; t < TT; t++) {
                acc[r * TT + t] += dot(w, xs[t]);
            }
        }
    }
    for (var j = 0u; j < RT; j++) {
        red[lid * RT + j] = acc[j];
    }
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            for (var j = 0u; j < RT; j++) {
                red[lid * RT + j] += red[(lid + s) * RT + j];
            }
        }
        workgroupBarrier();
    }
    if (lid < RT) {
        let r = lid / TT;
        let t = lid % TT;
        let n = n0 + r;
        let tok = t0 + t;
        if (n < P.n && tok < n_tok) {
            let o = tok * P.n + n;
#ifdef ACCUMULATE
            Y[o] = Y[o] + red[lid];
#else
            Y[o] = red[lid];
#endif
        }
    }
}
