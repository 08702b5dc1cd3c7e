// Picking logits, shared by argmax.wgsl, topk.wgsl (LOGITS=L) and
// sram_step.wgsl's op_argmax / op_topk (LOGITS=A): the order is value
// descending, then id ascending, with NaN below everything (`key`); any NaN
// or ±Inf in the row is flagged (`non_finite`) so the host can report it
// (kernels::NON_FINITE). Expects `const WG` (threads, a power of two), the
// define LOGITS (the array the logits are read from) and workgroup arrays
// `sc: array<f32, >= WG>` and `redi: array<u32, >= 2 WG>`.

const NONE: u32 = 0xffffffffu;

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

// true if (v, i) ranks before (bv, bi) (bi = NONE: nothing yet).
fn better(v: f32, i: u32, bv: f32, bi: u32) -> bool {
    return bi == NONE || v > bv || (v == bv && i < bi);
}

// A pick: the logit's key and id, and whether any logit of the row is NaN or
// ±Inf.
struct Pick {
    v: f32,
    i: u32,
    bad: bool,
}

// The first of the n logits at LOGITS[base ..] that ranks after the pick
// (prev_v, prev_i) (prev_i = NONE: the first of all), over the whole
// workgroup (every thread gets it; sc and redi are free again after).
fn pick_after(base: u32, n: u32, prev_v: f32, prev_i: u32, lid: u32) -> Pick {
    var bv = -3.4e38;
    var bi = NONE;
    var nf = 0u;
    for (var i = lid; i < n; i += WG) {
        let raw = {{LOGITS}}[base + i];
        nf |= non_finite(raw);
        let v = key(raw);
        let after = prev_i == NONE || v < prev_v || (v == prev_v && i > prev_i);
        if (after && better(v, i, bv, bi)) {
            bv = v;
            bi = i;
        }
    }
    sc[lid] = bv;
    redi[lid] = bi;
    redi[WG + lid] = nf;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            redi[WG + lid] |= redi[WG + lid + s];
            let ov = sc[lid + s];
            let oi = redi[lid + s];
            if (oi != NONE && better(ov, oi, sc[lid], redi[lid])) {
                sc[lid] = ov;
                redi[lid] = oi;
            }
        }
        workgroupBarrier();
    }
    let p = Pick(sc[0], redi[0], redi[WG] != 0u);
    workgroupBarrier();
    return p;
}

// The two words the host reads for the pick of rank r (0: the best):
// [id, bits of the logit]; a row with a non-finite logit says so in the
// first pair, [NONE, NaN].
fn pick_words(p: Pick, r: u32) -> vec2<u32> {
    if (p.bad && r == 0u) {
        return vec2<u32>(NONE, 0x7fc00000u);
    }
    return vec2<u32>(p.i, bitcast<u32>(p.v));
}
