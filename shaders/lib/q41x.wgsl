// Q4_1 against a staged x row: the block dot of the VRAM matmul's decode
// path (shaders/matmul.wgsl, XSTAGE + Q41X) and of the SRAM interpreter's
// (shaders/sram_step.wgsl, op_mat). The including shader declares W (the
// weights, u32 words), XN (the x row, vec4) and XS (its 32-element block sums).
// Q4_1 block blk of the row at byte rb · the staged x:
//   sum_j (d q_j + m) x_j = d * sum_j q_j x_j + m * XS[blk].
// Each nibble is masked in place, never shifted down: (q & (15 << s)) is
// q_j * 2^s exactly, so lane c of `lo` / `hi` collects q_j x_j * 2^s with one
// s per lane, and the powers of two are taken out once per block (exact).
const NIB: vec4<u32> = vec4<u32>(0xfu, 0xf00u, 0xf0000u, 0xf000000u);
const UNSHIFT: vec4<f32> = vec4<f32>(1.0, 1.0 / 256.0, 1.0 / 65536.0, 1.0 / 16777216.0);

fn nib_at(q: u32) -> vec4<f32> {
    return vec4<f32>(bitcast<vec4<i32>>(vec4<u32>(q) & NIB));
}

fn q41_dot(rb: u32, blk: u32) -> f32 {
    let w0 = (rb + blk * 20u) >> 2u;
    let dm = unpack2x16float(W[w0]);
    let xb = blk * 8u;
    let q0 = W[w0 + 1u];
    let q1 = W[w0 + 2u];
    let q2 = W[w0 + 3u];
    let q3 = W[w0 + 4u];
    // Byte i of word c holds q[4c + i] (low nibble) and q[4c + i + 16] (high).
    var lo = nib_at(q0) * XN[xb];
    lo = fma(nib_at(q1), XN[xb + 1u], lo);
    lo = fma(nib_at(q2), XN[xb + 2u], lo);
    lo = fma(nib_at(q3), XN[xb + 3u], lo);
    var hi = nib_at(q0 >> 4u) * XN[xb + 4u];
    hi = fma(nib_at(q1 >> 4u), XN[xb + 5u], hi);
    hi = fma(nib_at(q2 >> 4u), XN[xb + 6u], hi);
    hi = fma(nib_at(q3 >> 4u), XN[xb + 7u], hi);
    return fma(dm.x, dot(lo + hi, UNSHIFT), dm.y * XS[blk]);
}
