// Causal multi-head attention with grouped KV heads, over the KV cache.
// For token t (position pos0 + t) and head h:
//   out[t, h] = softmax(q · K[0..=pos]^T * scale) · V[0..=pos]
// (with a sliding window W > 0: positions pos - W + 1 ..= pos only)
// PyTorch: attn = softmax(q @ repeat_kv(k).T * head_dim**-0.5 + causal_mask) @ repeat_kv(v)
//
// One workgroup per (head, token), WG={{WG}} threads (64 on CPU adapters,
// 256 on GPUs), positions in chunks of CHUNK (the softmax itself:
// lib/attend, which SRAM mode's interpreter shares). HD={{HD}} (head_dim,
// even, at most 256), HD4={{HD4}} = ceil(HD / 4) chunks. HDTAIL (HD not a
// multiple of 4): Q, K, V are read as floats (a head starts at any even
// element) and the last chunk of a head is zero-padded (q and k both, so it
// adds nothing).
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
    pair_layout: u32, // ROPE: 0 rotate_half, pairs (i, i + hd/2); 1 GGUF, pairs (2i, 2i + 1)
    window: u32,      // sliding window (Mistral): keys pos - window + 1 ..= pos; 0: all
    _pad0: u32,
    _pad1: u32,
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

#include rope_pair

// The pair (i0, i1) element e belongs to (lib/rope_pair), and its rotation
// index i.
fn pair_of(e: u32) -> vec3<u32> {
    let i = rope_index(P.pair_layout, HD, e);
    return vec3<u32>(rope_pair(P.pair_layout, HD, i), i);
}

// Element e of the pair pr = pair_of(e) holding (x0, x1), rotated for
// position pos.
fn rotate(x0: f32, x1: f32, e: u32, pr: vec3<u32>, pos: u32) -> f32 {
    let r = rope_rotate(x0, x1, cos_sin[pos * (HD / 2u) + pr.z]);
    return select(r.y, r.x, e == pr.x);
}

// Element e of the q head at flat index b, rotated for position pos (0 past HD).
fn rope_q(b: u32, e: u32, pos: u32) -> f32 {
    if (e >= HD) {
        return 0.0;
    }
    let pr = pair_of(e);
    return rotate(q1(b + pr.x), q1(b + pr.y), e, pr, pos);
}

// Element e of this step's k head at flat index b, rotated for position pos (0 past HD).
fn rope_k(b: u32, e: u32, pos: u32) -> f32 {
    if (e >= HD) {
        return 0.0;
    }
    let pr = pair_of(e);
    return rotate(Kn[b + pr.x], Kn[b + pr.y], e, pr, pos);
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

#include reduce,attend

// Chunk i of the key / value at position p (lib/attend); ROPE: the current
// position's from workgroup memory (not in the cache yet).
fn key4(s: Keys, p: u32, i: u32) -> vec4<f32> {
#ifdef ROPE
    if (p == s.pos) {
        return kcur[i];
    }
#endif
    return k4(s.k + (p - s.first) * s.stride, i);
}
fn val4(s: Keys, p: u32, lane: u32) -> vec4<f32> {
#ifdef ROPE
    if (p == s.pos) {
        return vcur[lane];
    }
#endif
    return v4(s.v + (p - s.first) * s.stride, lane);
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
    let r = key_range(pos, 0u, 0xffffffffu, P.window, true);
    let kb0 = (kv_base + r.x) * kv_dim + kvh * HD;
    let st = attend(Keys(r.x, r.y, kb0, kb0, kv_dim, pos), P.scale, lid);
    let ob = t * P.n_heads * HD + h * HD;
    let inv_l = 1.0 / st.l;
    for (var k = 0u; k < NA; k++) {
        let d = lid + k * WG;
        if (d < HD) {
            O[ob + d] = st.acc[k] * inv_l;
        }
    }
}
