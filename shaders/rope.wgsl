// RoPE on Q (in place) and K, then K and V written into the KV cache at
// positions pos0 + t. cos/sin come from a table computed on the CPU the way
// Hugging Face does it (f32 inv_freq * f32 position), so large positions stay exact.
// PyTorch: q, k = apply_rotary_pos_emb(q, k, cos, sin); cache[pos] = k, v
//
// pair_layout 0 (rotate_half): pairs (i, i + hd/2); 1 (GGUF): pairs (2i, 2i+1)
// (lib/rope_pair, which SRAM mode's interpreter shares).

struct Params {
    n_heads: u32,
    n_kv_heads: u32,
    head_dim: u32,
    pair_layout: u32,
}
#include step

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<uniform> S: Step;
@group(0) @binding(2) var<storage, read> cos_sin: array<vec2<f32>>; // [ctx, hd/2]
@group(0) @binding(3) var<storage, read_write> Q: array<f32>;       // [T, H*hd]
@group(0) @binding(4) var<storage, read> K: array<f32>;             // [T, Hkv*hd]
@group(0) @binding(5) var<storage, read> V: array<f32>;             // [T, Hkv*hd]
@group(0) @binding(6) var<storage, read_write> Kc: array<f32>;      // [ctx, Hkv*hd]
@group(0) @binding(7) var<storage, read_write> Vc: array<f32>;      // [ctx, Hkv*hd]
#include rope_pair

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let t = gid.y;
    if (t >= S.n_tokens) {
        return;
    }
    let half = P.head_dim / 2u;
    let q_pairs = P.n_heads * half;
    let kv_dim = P.n_kv_heads * P.head_dim;
    let kv_pairs = P.n_kv_heads * half;
    let p = gid.x;
    let pos = S.pos0 + t;
    let row = (S.kv_base + pos) * kv_dim; // this position's KV-cache row
    // V copy: one element per thread over kv_dim.
    if (p < kv_dim) {
        Vc[row + p] = V[t * kv_dim + p];
    }
    if (p >= q_pairs + kv_pairs) {
        return;
    }
    // Pair p: rotation i of a q head, then of a k head.
    let is_q = p < q_pairs;
    let pk = select(p - q_pairs, p, is_q);
    let head = pk / half;
    let i = pk % half;
    let pr = rope_pair(P.pair_layout, P.head_dim, i);
    let cs = cos_sin[pos * half + i];
    if (is_q) {
        let b = t * P.n_heads * P.head_dim + head * P.head_dim;
        let r = rope_rotate(Q[b + pr.x], Q[b + pr.y], cs);
        Q[b + pr.x] = r.x;
        Q[b + pr.y] = r.y;
    } else {
        let b = t * kv_dim + head * P.head_dim;
        let r = rope_rotate(K[b + pr.x], K[b + pr.y], cs);
        let c = row + head * P.head_dim;
        Kc[c + pr.x] = r.x;
        Kc[c + pr.y] = r.y;
    }
}
