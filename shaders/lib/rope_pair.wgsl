// RoPE's rotation of one pair of a head's elements, shared by rope.wgsl,
// attention.wgsl (ROPE) and sram_step.wgsl (op_rope_q, op_kv_write); each
// reads (cos, sin) from its own copy of the table.
// PyTorch: q * cos + rotate_half(q) * sin.

// The elements (i0, i1) rotation i of a head of hd elements turns:
// pair_layout 0 (rotate_half): (i, i + hd/2); 1 (GGUF): (2i, 2i + 1).
fn rope_pair(pair_layout: u32, hd: u32, i: u32) -> vec2<u32> {
    if (pair_layout == 0u) {
        return vec2<u32>(i, i + hd / 2u);
    }
    return vec2<u32>(2u * i, 2u * i + 1u);
}

// The rotation of element e: which rotation i turns it.
fn rope_index(pair_layout: u32, hd: u32, e: u32) -> u32 {
    if (pair_layout == 0u) {
        return e % (hd / 2u);
    }
    return e / 2u;
}

// (x0, x1) at elements (i0, i1) rotated by cs = (cos, sin).
fn rope_rotate(x0: f32, x1: f32, cs: vec2<f32>) -> vec2<f32> {
    return vec2<f32>(x0 * cs.x - x1 * cs.y, x1 * cs.x + x0 * cs.y);
}
