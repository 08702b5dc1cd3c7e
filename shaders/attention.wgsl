// Causal multi-head attention with grouped KV heads, over the KV cache.
// For token t (position pos0 + t) and head h:
//   out[t, h] = softmax(q · K[0..=pos]^T * scale) · V[0..=pos]
// PyTorch: attn = softmax(q @ repeat_kv(k).T * head_dim**-0.5 + causal_mask) @ repeat_kv(v)
//
// One workgroup per (head, token). Each thread walks positions lid, lid+64, …
// with an online softmax (running max, sum and weighted V); the 64 partial
// states are then merged in shared memory. HD={{HD}} (head_dim), CH={{CH}}
// (dims merged per round, divides HD).
//
// PARTIAL (SRAM mode): the layer's KV cache is split over chips by KV heads and
// positions. Each chip folds its block [kv_head_begin, kv_head_end) x
// [pos_begin, pos_end) into a running softmax state St[t, h] = (m, l, acc[HD])
// that travels chip to chip over the links; the first block starts it (init),
// the last one normalises it into O (finalize).

struct Params {
    n_heads: u32,
    n_kv_heads: u32,
    head_dim: u32,
    scale: f32,
    kv_head_begin: u32,
    kv_head_end: u32,
    pos_begin: u32,
    pos_end: u32,
    init: u32,
    finalize: u32,
    _pad0: u32,
    _pad1: u32,
}
struct Step {
    n_tokens: u32,
    pos0: u32,
    out_row0: u32,
    n_out_rows: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<uniform> S: Step;
@group(0) @binding(2) var<storage, read> Q: array<f32>;       // [T, H*hd]
@group(0) @binding(3) var<storage, read> Kc: array<f32>;      // [ctx, Hkv*hd]
@group(0) @binding(4) var<storage, read> Vc: array<f32>;      // [ctx, Hkv*hd]
@group(0) @binding(5) var<storage, read_write> O: array<f32>; // [T, H*hd]
#ifdef PARTIAL
@group(0) @binding(6) var<storage, read_write> St: array<f32>; // [T, H, 2 + hd]
#endif

const WG: u32 = 64u;
const HD: u32 = {{HD}}u;
const CH: u32 = {{CH}}u;
var<workgroup> red_m: array<f32, 64>;
var<workgroup> red_v: array<f32, {{REDV}}>; // WG * CH

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let h = wid.x;
    let t = wid.y;
    if (t >= S.n_tokens) {
        return;
    }
    let pos = S.pos0 + t;
    let kvh = h / (P.n_heads / P.n_kv_heads);
    let kv_dim = P.n_kv_heads * HD;
    let qb = t * P.n_heads * HD + h * HD;
    var q: array<f32, HD>;
    for (var d = 0u; d < HD; d++) {
        q[d] = Q[qb + d];
    }
    var m = -3.0e38;
    var l = 0.0;
    var acc: array<f32, HD>;
    for (var d = 0u; d < HD; d++) {
        acc[d] = 0.0;
    }
    var s_begin = P.pos_begin;
    var s_end = min(P.pos_end, pos + 1u);
    if (kvh < P.kv_head_begin || kvh >= P.kv_head_end) {
        s_end = s_begin; // not this block's head: nothing to fold in
    }
    for (var s = s_begin + lid; s < s_end; s += WG) {
        let kb = s * kv_dim + kvh * HD;
        var dotp = 0.0;
        for (var d = 0u; d < HD; d++) {
            dotp = fma(q[d], Kc[kb + d], dotp);
        }
        let score = dotp * P.scale;
        let m_new = max(m, score);
        let corr = exp(m - m_new);
        let p = exp(score - m_new);
        l = l * corr + p;
        for (var d = 0u; d < HD; d++) {
            acc[d] = fma(p, Vc[kb + d], acc[d] * corr);
        }
        m = m_new;
    }
    // Global max.
    red_m[lid] = m;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            red_m[lid] = max(red_m[lid], red_m[lid + s]);
        }
        workgroupBarrier();
    }
    let gm = red_m[0];
    workgroupBarrier();
    var f = 0.0;
    if (l > 0.0) {
        f = exp(m - gm);
    }
    // Global sum of l.
    red_m[lid] = l * f;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            red_m[lid] += red_m[lid + s];
        }
        workgroupBarrier();
    }
    let l_sum = red_m[0];
    let ob = t * P.n_heads * HD + h * HD;
#ifdef PARTIAL
    let sb = (t * P.n_heads + h) * (2u + HD);
    var m0 = -3.0e38;
    var l0 = 0.0;
    if (P.init == 0u) {
        m0 = St[sb];
        l0 = St[sb + 1u];
    }
    let m_new = max(m0, gm);
    var a = 0.0;
    if (l0 > 0.0) {
        a = exp(m0 - m_new);
    }
    var b = 0.0;
    if (l_sum > 0.0) {
        b = exp(gm - m_new);
    }
    let l_new = l0 * a + l_sum * b;
    let inv_l = 1.0 / l_new;
#else
    let inv_l = 1.0 / l_sum;
#endif
    for (var c = 0u; c < HD; c += CH) {
        for (var j = 0u; j < CH; j++) {
            red_v[lid * CH + j] = acc[c + j] * f;
        }
        workgroupBarrier();
        for (var s = WG / 2u; s > 0u; s >>= 1u) {
            if (lid < s) {
                for (var j = 0u; j < CH; j++) {
                    red_v[lid * CH + j] += red_v[(lid + s) * CH + j];
                }
            }
            workgroupBarrier();
        }
        if (lid < CH) {
#ifdef PARTIAL
            var acc0 = 0.0;
            if (P.init == 0u) {
                acc0 = St[sb + 2u + c + lid];
            }
            let merged = acc0 * a + red_v[lid] * b;
            if (P.finalize == 1u) {
                O[ob + c + lid] = merged * inv_l;
            } else {
                St[sb + 2u + c + lid] = merged;
            }
#else
            O[ob + c + lid] = red_v[lid] * inv_l;
#endif
        }
        workgroupBarrier();
    }
#ifdef PARTIAL
    if (lid == 0u && P.finalize == 0u) {
        St[sb] = m_new;
        St[sb + 1u] = l_new;
    }
#endif
}
