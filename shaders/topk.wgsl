// The K largest logits of the last output row, best first (ties: lower id
// first), so sampling needs only K (id, logit) pairs back on the CPU.
// K passes of a workgroup-wide arg-max, each excluding what was already taken
// under the total order (value desc, id asc).
// When any logit of the row is NaN or infinite, the first pair is
// [0xffffffff, NaN] (the host reports the non-finite logits; see
// kernels::NON_FINITE).

struct Params {
    vocab: u32,
    k: u32,
    _pad0: u32,
    _pad1: u32,
}
#include step

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<uniform> S: Step;
@group(0) @binding(2) var<storage, read> L: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<u32>; // [k][id, bits]

const WG: u32 = 256u;
var<workgroup> sc: array<f32, 256>;
var<workgroup> redi: array<u32, 512>;
#include select with LOGITS=L

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) lid: u32) {
    let base = (S.n_out_rows - 1u) * P.vocab;
    var p = Pick(3.4e38, NONE, false); // nothing taken yet
    for (var r = 0u; r < P.k; r++) {
        p = pick_after(base, P.vocab, p.v, p.i, lid);
        let w = pick_words(p, r);
        if (lid == 0u) {
            out[2u * r] = w.x;
            out[2u * r + 1u] = w.y;
        }
    }
}
