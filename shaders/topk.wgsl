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
var<workgroup> best_v: array<f32, 256>;
var<workgroup> best_i: array<u32, 256>;
var<workgroup> bad: array<u32, 256>;

// 1 when v is NaN or ±Inf (exponent bits all set), by bits.
fn non_finite(v: f32) -> u32 {
    return select(0u, 1u, (bitcast<u32>(v) & 0x7f800000u) == 0x7f800000u);
}

fn key(v: f32) -> f32 {
    if (v != v) {
        return -3.4e38;
    }
    return v;
}

// true if (v, i) ranks before (bv, bi)
fn better(v: f32, i: u32, bv: f32, bi: u32) -> bool {
    return bi == 0xffffffffu || v > bv || (v == bv && i < bi);
}

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) lid: u32) {
    let base = (S.n_out_rows - 1u) * P.vocab;
    var nf = 0u;
    for (var i = lid; i < P.vocab; i += WG) {
        nf |= non_finite(L[base + i]);
    }
    bad[lid] = nf;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            bad[lid] |= bad[lid + s];
        }
        workgroupBarrier();
    }
    let any_bad = bad[0];
    var prev_v = 3.4e38;
    var prev_i = 0xffffffffu; // nothing taken yet
    for (var r = 0u; r < P.k; r++) {
        var bv = -3.4e38;
        var bi = 0xffffffffu;
        for (var i = lid; i < P.vocab; i += WG) {
            let v = key(L[base + i]);
            // eligible: ranks strictly after the previous pick
            let after = prev_i == 0xffffffffu || v < prev_v || (v == prev_v && i > prev_i);
            if (after && better(v, i, bv, bi)) {
                bv = v;
                bi = i;
            }
        }
        best_v[lid] = bv;
        best_i[lid] = bi;
        workgroupBarrier();
        for (var s = WG / 2u; s > 0u; s >>= 1u) {
            if (lid < s) {
                let ov = best_v[lid + s];
                let oi = best_i[lid + s];
                if (oi != 0xffffffffu && better(ov, oi, best_v[lid], best_i[lid])) {
                    best_v[lid] = ov;
                    best_i[lid] = oi;
                }
            }
            workgroupBarrier();
        }
        prev_v = best_v[0];
        prev_i = best_i[0];
        if (lid == 0u) {
            out[2u * r] = prev_i;
            out[2u * r + 1u] = bitcast<u32>(prev_v);
        }
        workgroupBarrier();
    }
    if (lid == 0u && any_bad != 0u) {
        out[0] = 0xffffffffu;
        out[1] = 0x7fc00000u;
    }
}
