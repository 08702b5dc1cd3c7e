// Causal multi-head attention with grouped KV heads, over the KV cache.
// For token t (position pos0 + t) and head h:
//   out[t, h] = softmax(q · K[0..=pos]^T * scale) · V[0..=pos]
// (with a sliding window W > 0: positions pos - W + 1 ..= pos only)
// PyTorch: attn = softmax(q @ repeat_kv(k).T * head_dim**-0.5 + causal_mask) @ repeat_kv(v)
//
// One workgroup per (head, token), WG={{WG}} threads (64 on CPU adapters and in
// SRAM mode, 256 on GPUs), positions in chunks of CHUNK:
// threads score one position each (q from shared memory, K as vec4), the
// chunk's max and sum are reduced in shared memory, then the WG threads
// split as G = WG / (HD/4) position groups × HD/4 vec4 lanes add p · V[j, .]
// for their positions (vec4 V reads coalesce across a group; G chains of
// n / G loads instead of one of n) and the groups are summed; a running
// softmax (max, sum) carries across chunks. HD={{HD}} (head_dim, even, at
// most 256), HD4={{HD4}} = ceil(HD / 4) chunks. HDTAIL (HD not a multiple of 4):
// Q, K, V are read as floats (a head starts at any even element) and the last
// chunk of a head is zero-padded (q and k both, so it adds nothing).
//
// PARTIAL (SRAM mode): the layer's KV cache is split over chips by KV heads and
// positions. Each chip folds its block [kv_head_begin, kv_head_end) x
// [pos_begin, pos_end) into a running softmax state St[t, h] = (m, l, acc[HD])
// that travels chip to chip over the links; the first block starts it (init),
// the last one normalises it into O (finalize).
//
// ROPE (VRAM mode, decode steps: one token): RoPE and the KV-cache write are
// done here instead of in rope.wgsl. Each workgroup rotates its q head and
// its KV head's new k (same arithmetic as rope.wgsl) into workgroup memory
// and uses them for the current position; the first q head of each KV group
// also stores k and v into the cache for later steps. Nobody reads the cache
// at the current position, so no workgroup waits on another. Batched decode
// (S.per_row): T rows, each one token of its own sequence, with its position
// and KV-cache base from the row table R.

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
    pair_layout: u32, // ROPE: 0 rotate_half, pairs (i, i + hd/2); 1 GGUF, pairs (2i, 2i + 1)
    window: u32,      // sliding window (Mistral): keys pos - window + 1 ..= pos; 0: all

}
#include step

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<uniform> S: Step;
#ifdef HDTAIL
alias F4 = f32;
#else
alias F4 = vec4<f32>;
#endif
// F4: vec4 (HD a multiple of 4) or f32 (HDTAIL).
@group(0) @binding(2) var<storage, read> Q: array<F4>;  // [T, H*hd]
#ifdef ROPE
@group(0) @binding(3) var<storage, read_write> Kc: array<F4>; // [ctx, Hkv*hd]
@group(0) @binding(4) var<storage, read_write> Vc: array<F4>; // [ctx, Hkv*hd]
#else
@group(0) @binding(3) var<storage, read> Kc: array<F4>; // [ctx, Hkv*hd]
@group(0) @binding(4) var<storage, read> Vc: array<F4>; // [ctx, Hkv*hd]
#endif
@group(0) @binding(5) var<storage, read_write> O: array<f32>;  // [T, H*hd]
#ifdef PARTIAL
@group(0) @binding(6) var<storage, read_write> St: array<f32>; // [T, H, 2 + hd]
#endif
#ifdef ROPE
@group(0) @binding(6) var<storage, read> cos_sin: array<vec2<f32>>; // [ctx, hd/2]
@group(0) @binding(7) var<storage, read> Kn: array<f32>;            // this step's k [Hkv*hd]
@group(0) @binding(8) var<storage, read> Vn: array<F4>;            // this step's v [Hkv*hd]
// Batched decode (S.per_row = 1): row t's (position, KV-cache base row, -, -).
@group(0) @binding(9) var<uniform> R: array<vec4<u32>, {{MAX_ROWS}}>;
#endif

const WG: u32 = {{WG}}u;
const HD: u32 = {{HD}}u;
const HD4: u32 = {{HD4}}u;
const CHUNK: u32 = 256u;
// Output dims per thread: lid, lid + WG, … (HD ≤ 256, WG ≥ 64: at most 4).
const NA: u32 = (HD + WG - 1u) / WG;

// Chunk i (elements 4i .. 4i+3) of the head starting at flat element b.
// HDTAIL: elements past HD read as 0.
#ifdef HDTAIL
fn q4(b: u32, i: u32) -> vec4<f32> {
    let e = b + 4u * i;
    let r = HD - 4u * i;
    return vec4<f32>(Q[e], select(0.0, Q[e + 1u], r > 1u), select(0.0, Q[e + 2u], r > 2u), select(0.0, Q[e + 3u], r > 3u));
}
fn k4(b: u32, i: u32) -> vec4<f32> {
    let e = b + 4u * i;
    let r = HD - 4u * i;
    return vec4<f32>(Kc[e], select(0.0, Kc[e + 1u], r > 1u), select(0.0, Kc[e + 2u], r > 2u), select(0.0, Kc[e + 3u], r > 3u));
}
fn v4(b: u32, i: u32) -> vec4<f32> {
    let e = b + 4u * i;
    let r = HD - 4u * i;
    return vec4<f32>(Vc[e], select(0.0, Vc[e + 1u], r > 1u), select(0.0, Vc[e + 2u], r > 2u), select(0.0, Vc[e + 3u], r > 3u));
}
fn q1(e: u32) -> f32 {
    return Q[e];
}
#else
fn q4(b: u32, i: u32) -> vec4<f32> {
    return Q[b / 4u + i];
}
fn k4(b: u32, i: u32) -> vec4<f32> {
    return Kc[b / 4u + i];
}
fn v4(b: u32, i: u32) -> vec4<f32> {
    return Vc[b / 4u + i];
}
fn q1(e: u32) -> f32 {
    return Q[e / 4u][e % 4u];
}
#endif
var<workgroup> qs: array<vec4<f32>, {{HD4}}>;
var<workgroup> sc: array<f32, 256>;
var<workgroup> red: array<f32, {{WG}}>;
var<workgroup> vpart: array<vec4<f32>, {{WG}}>;
#ifdef ROPE
var<workgroup> kcur: array<vec4<f32>, {{HD4}}>;
var<workgroup> vcur: array<vec4<f32>, {{HD4}}>;

// RoPE's pair for element e of a head: (cos/sin index, partner element,
// 1 if e is the pair's first). Element e rotated, as rope.wgsl computes it:
// the pair's first x0 c - x1 s, its second x1 c + x0 s.
fn rope_pair(e: u32) -> vec3<u32> {
    let half = HD / 2u;
    if (P.pair_layout == 0u) {
        if (e < half) {
            return vec3<u32>(e, e + half, 1u);
        }
        return vec3<u32>(e - half, e - half, 0u);
    }
    if ((e & 1u) == 0u) {
        return vec3<u32>(e / 2u, e + 1u, 1u);
    }
    return vec3<u32>(e / 2u, e - 1u, 0u);
}

fn rotate(x: f32, y: f32, pr: vec3<u32>, pos: u32) -> f32 {
    let cs = cos_sin[pos * (HD / 2u) + pr.x];
    if (pr.z == 1u) {
        return x * cs.x - y * cs.y;
    }
    return x * cs.x + y * cs.y;
}

// Element e of the q head at flat index b, rotated for position pos (0 past HD).
fn rope_q(b: u32, e: u32, pos: u32) -> f32 {
    if (e >= HD) {
        return 0.0;
    }
    let pr = rope_pair(e);
    return rotate(q1(b + e), q1(b + pr.y), pr, pos);
}

// Element e of this step's k head at flat index b, rotated for position pos (0 past HD).
fn rope_k(b: u32, e: u32, pos: u32) -> f32 {
    if (e >= HD) {
        return 0.0;
    }
    let pr = rope_pair(e);
    return rotate(Kn[b + e], Kn[b + pr.y], pr, pos);
}

// Chunk i of this step's v head at flat index b (0 past HD).
fn vn4(b: u32, i: u32) -> vec4<f32> {
#ifdef HDTAIL
    let e = b + 4u * i;
    let r = HD - 4u * i;
    return vec4<f32>(Vn[e], select(0.0, Vn[e + 1u], r > 1u), select(0.0, Vn[e + 2u], r > 2u), select(0.0, Vn[e + 3u], r > 3u));
#else
    return Vn[b / 4u + i];
#endif
}
#endif
// V phase: G = WG / HD4 position groups of HD4 threads (threads past G * HD4 idle).
const G: u32 = WG / HD4;

fn reduce_max(v: f32, lid: u32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            red[lid] = max(red[lid], red[lid + s]);
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

fn reduce_sum(v: f32, lid: u32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            red[lid] += red[lid + s];
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let h = wid.x;
    let t = wid.y;
    if (t >= S.n_tokens) {
        return;
    }
    var pos = S.pos0 + t;
    var kv_base = S.kv_base;
#ifdef ROPE
    if (S.per_row == 1u) {
        // Batched decode: every row is one token of its own sequence.
        pos = R[t].x;
        kv_base = R[t].y;
    }
#endif
    let kvh = h / (P.n_heads / P.n_kv_heads);
    let kv_dim = P.n_kv_heads * HD;
    let qb = t * P.n_heads * HD + h * HD;
#ifdef ROPE
    // One token (decode): rotate q and the new k, stage the new v.
    let kb = t * kv_dim + kvh * HD;
    for (var i = lid; i < HD4; i += WG) {
        let e = 4u * i;
        qs[i] = vec4<f32>(rope_q(qb, e, pos), rope_q(qb, e + 1u, pos), rope_q(qb, e + 2u, pos), rope_q(qb, e + 3u, pos));
        kcur[i] = vec4<f32>(rope_k(kb, e, pos), rope_k(kb, e + 1u, pos), rope_k(kb, e + 2u, pos), rope_k(kb, e + 3u, pos));
        vcur[i] = vn4(kb, i);
    }
    workgroupBarrier();
    if (h % (P.n_heads / P.n_kv_heads) == 0u) {
        let c = (kv_base + pos) * kv_dim + kvh * HD;
#ifdef HDTAIL
        for (var e = lid; e < HD; e += WG) {
            Kc[c + e] = kcur[e / 4u][e % 4u];
            Vc[c + e] = vcur[e / 4u][e % 4u];
        }
#else
        for (var i = lid; i < HD4; i += WG) {
            Kc[c / 4u + i] = kcur[i];
            Vc[c / 4u + i] = vcur[i];
        }
#endif
    }
#else
    for (var i = lid; i < HD4; i += WG) {
        qs[i] = q4(qb, i);
    }
    workgroupBarrier();
#endif
    var s_begin = P.pos_begin;
    if (P.window > 0u && pos + 1u > P.window) {
        // transformers' sliding window: kv_idx > q_idx - sliding_window.
        s_begin = max(s_begin, pos + 1u - P.window);
    }
    var s_end = min(P.pos_end, pos + 1u);
    if (kvh < P.kv_head_begin || kvh >= P.kv_head_end || s_end < s_begin) {
        s_end = s_begin; // not this block's head: nothing to fold in
    }
    var m_run = -3.0e38;
    var l_run = 0.0;
    // Thread lid owns dims lid + k * WG, k < NA (component k).
    var acc = vec4<f32>(0.0);
    for (var c0 = s_begin; c0 < s_end; c0 += CHUNK) {
        let n = min(CHUNK, s_end - c0);
        var local_max = -3.0e38;
        for (var j = lid; j < n; j += WG) {
            let kbj = (kv_base + c0 + j) * kv_dim + kvh * HD;
            var d = 0.0;
#ifdef ROPE
            if (c0 + j == pos) {
                for (var i = 0u; i < HD4; i++) {
                    d += dot(qs[i], kcur[i]);
                }
            } else {
                for (var i = 0u; i < HD4; i++) {
                    d += dot(qs[i], k4(kbj, i));
                }
            }
#else
            for (var i = 0u; i < HD4; i++) {
                d += dot(qs[i], k4(kbj, i));
            }
#endif
            let score = d * P.scale;
            sc[j] = score;
            local_max = max(local_max, score);
        }
        let m_new = max(m_run, reduce_max(local_max, lid));
        let corr = exp(m_run - m_new);
        var local_sum = 0.0;
        for (var j = lid; j < n; j += WG) {
            let p = exp(sc[j] - m_new);
            sc[j] = p;
            local_sum += p;
        }
        let chunk_sum = reduce_sum(local_sum, lid);
        l_run = l_run * corr + chunk_sum;
        let vb = (kv_base + c0) * kv_dim + kvh * HD;
        let lane = lid % HD4;
        let grp = lid / HD4;
        var av = vec4<f32>(0.0);
        if (grp < G) {
            for (var j = grp; j < n; j += G) {
#ifdef ROPE
                if (c0 + j == pos) {
                    av = fma(vec4<f32>(sc[j]), vcur[lane], av);
                } else {
                    av = fma(vec4<f32>(sc[j]), v4(vb + j * kv_dim, lane), av);
                }
#else
                av = fma(vec4<f32>(sc[j]), v4(vb + j * kv_dim, lane), av);
#endif
            }
        }
        vpart[lid] = av;
        workgroupBarrier();
        var a = vec4<f32>(0.0);
        for (var g = 0u; g < G; g++) {
            for (var k = 0u; k < NA; k++) {
                let d = lid + k * WG;
                if (d < HD) {
                    a[k] += vpart[g * HD4 + d / 4u][d % 4u];
                }
            }
        }
        acc = acc * corr + a;
        m_run = m_new;
        workgroupBarrier(); // sc is rewritten by the next chunk
    }
    let ob = t * P.n_heads * HD + h * HD;
#ifdef PARTIAL
    let sb = (t * P.n_heads + h) * (2u + HD);
    var m0 = -3.0e38;
    var l0 = 0.0;
    if (P.init == 0u) {
        m0 = St[sb];
        l0 = St[sb + 1u];
    }
    // Everyone has read the old (m, l) before thread 0 overwrites it below.
    workgroupBarrier();
    let m_new = max(m0, m_run);
    var a = 0.0;
    if (l0 > 0.0) {
        a = exp(m0 - m_new);
    }
    var b = 0.0;
    if (l_run > 0.0) {
        b = exp(m_run - m_new);
    }
    let l_new = l0 * a + l_run * b;
    for (var k = 0u; k < NA; k++) {
        let d = lid + k * WG;
        if (d < HD) {
            let mine = acc[k];
            var prev = 0.0;
            if (P.init == 0u) {
                prev = St[sb + 2u + d];
            }
            let merged = prev * a + mine * b;
            if (P.finalize == 1u) {
                O[ob + d] = merged / l_new;
            } else {
                St[sb + 2u + d] = merged;
            }
        }
    }
    if (lid == 0u && P.finalize == 0u) {
        St[sb] = m_new;
        St[sb + 1u] = l_new;
    }
#else
    let inv_l = 1.0 / l_run;
    for (var k = 0u; k < NA; k++) {
        let d = lid + k * WG;
        if (d < HD) {
            O[ob + d] = acc[k] * inv_l;
        }
    }
#endif
}
