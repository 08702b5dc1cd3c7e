// Greedy pick on the GPU: the index of the largest logit of row `row`
// (first index on ties, like torch.argmax). Writes [id, bitcast(value)]
// (batched decode: one pair per row); when any logit of the row is NaN or
// infinite, writes [0xffffffff, NaN] instead (the host reports the non-finite
// logits; see kernels::NON_FINITE).

struct Params {
    vocab: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}
#include step

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<uniform> S: Step;
@group(0) @binding(2) var<storage, read> L: array<f32>;      // [rows, vocab]
@group(0) @binding(3) var<storage, read_write> out: array<u32>;

const WG: u32 = 256u;
var<workgroup> sc: array<f32, 256>;
var<workgroup> redi: array<u32, 512>;
#include select with LOGITS=L

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    // Batched decode (S.per_row): workgroup r picks row r into out[2r..2r+2].
    var row = S.n_out_rows - 1u;
    var o = 0u;
    if (S.per_row == 1u) {
        row = wid.x;
        o = 2u * wid.x;
    }
    let w = pick_words(pick_after(row * P.vocab, P.vocab, 0.0, NONE, lid), 0u);
    if (lid == 0u) {
        out[o] = w.x;
        out[o + 1u] = w.y;
    }
}
