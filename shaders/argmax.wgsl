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
var<workgroup> best_v: array<f32, 256>;
var<workgroup> best_i: array<u32, 256>;
var<workgroup> bad: array<u32, 256>;

// 1 when v is NaN or ±Inf (exponent bits all set), by bits, so no float
// optimisation can fold it away.
fn non_finite(v: f32) -> u32 {
    return select(0u, 1u, (bitcast<u32>(v) & 0x7f800000u) == 0x7f800000u);
}

// NaN sorts below everything.
fn key(v: f32) -> f32 {
    if (v != v) {
        return -3.4e38;
    }
    return v;
}

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    // Batched decode (S.per_row): workgroup r picks row r into out[2r..2r+2].
    var row = S.n_out_rows - 1u;
    var o = 0u;
    if (S.per_row == 1u) {
        row = wid.x;
        o = 2u * wid.x;
    }
    let base = row * P.vocab;
    var bv = -3.4e38;
    var bi = 0xffffffffu;
    var nf = 0u;
    for (var i = lid; i < P.vocab; i += WG) {
        let raw = L[base + i];
        nf |= non_finite(raw);
        let v = key(raw);
        if (v > bv || bi == 0xffffffffu) {
            bv = v;
            bi = i;
        }
    }
    best_v[lid] = bv;
    best_i[lid] = bi;
    bad[lid] = nf;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            bad[lid] |= bad[lid + s];
            let ov = best_v[lid + s];
            let oi = best_i[lid + s];
            let mv = best_v[lid];
            let mi = best_i[lid];
            if (oi != 0xffffffffu && (mi == 0xffffffffu || ov > mv || (ov == mv && oi < mi))) {
                best_v[lid] = ov;
                best_i[lid] = oi;
            }
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        if (bad[0] != 0u) {
            out[o] = 0xffffffffu;
            out[o + 1u] = 0x7fc00000u;
        } else {
            out[o] = best_i[0];
            out[o + 1u] = bitcast<u32>(best_v[0]);
        }
    }
}
