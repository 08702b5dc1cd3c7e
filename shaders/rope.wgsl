// RoPE on Q (in place) and K, then K and V written into the KV cache at
// positions pos0 + t. cos/sin come from a table computed on the CPU the way
// Hugging Face does it (f32 inv_freq * f32 position), so large positions stay exact.
// PyTorch: q, k = apply_rotary_pos_emb(q, k, cos, sin); cache[pos] = k, v
//
// LAYOUT 0 (rotate_half): pairs (i, i + hd/2); LAYOUT 1 (GGUF): pairs (2i, 2i+1).
//
// SRAM mode splits a layer's KV cache over chips by KV heads and positions:
// each chip rotates and stores only its block [kv_head_begin, kv_head_end) x
// [pos_begin, pos_end), and Q is rotated once (do_q). VRAM mode: the full ranges.

struct Params {
    n_heads: u32,
    n_kv_heads: u32,
    head_dim: u32,
    pair_layout: u32,
    kv_head_begin: u32,
    kv_head_end: u32,
    pos_begin: u32,
    pos_end: u32,
    do_q: u32,
    do_kv: u32,
    _pad0: u32,
    _pad1: u32,
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
    let in_block = P.do_kv == 1u && pos >= P.pos_begin && pos < P.pos_end;
    // V copy: one element per thread over kv_dim.
    if (in_block && p < kv_dim) {
        let vh = p / P.head_dim;
        if (vh >= P.kv_head_begin && vh < P.kv_head_end) {
            Vc[(S.kv_base + pos) * kv_dim + p] = V[t * kv_dim + p];
        }
    }
    if (p >= q_pairs + kv_pairs) {
        return;
    }
    var head: u32;
    var i: u32;
    var is_q = p < q_pairs;
    if (is_q) {
        if (P.do_q == 0u) {
            return;
        }
        head = p / half;
        i = p % half;
    } else {
        head = (p - q_pairs) / half;
        i = (p - q_pairs) % half;
        if (!in_block || head < P.kv_head_begin || head >= P.kv_head_end) {
            return;
        }
    }
    var i0: u32;
    var i1: u32;
    if (P.pair_layout == 0u) {
        i0 = i;
        i1 = i + half;
    } else {
        i0 = 2u * i;
        i1 = 2u * i + 1u;
    }
    let cs = cos_sin[pos * half + i];
    if (is_q) {
        let b = t * P.n_heads * P.head_dim + head * P.head_dim;
        let x0 = Q[b + i0];
        let x1 = Q[b + i1];
        Q[b + i0] = x0 * cs.x - x1 * cs.y;
        Q[b + i1] = x1 * cs.x + x0 * cs.y;
    } else {
        let b = t * kv_dim + head * P.head_dim;
        let x0 = K[b + i0];
        let x1 = K[b + i1];
        let c = (S.kv_base + pos) * kv_dim + head * P.head_dim;
        Kc[c + i0] = x0 * cs.x - x1 * cs.y;
        Kc[c + i1] = x1 * cs.x + x0 * cs.y;
    }
}
