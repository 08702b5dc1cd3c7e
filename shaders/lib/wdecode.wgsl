// Weight decoding shared by every kernel that reads a weight matrix.
// Expects a binding `W: array<u32>` holding the tensor bytes exactly as in the
// model file (GGML block layouts are not 4-byte aligned for Q8_0/Q4_0, hence
// the unaligned reads), and one of W_F32 / W_F16 / W_BF16 / W_Q8_0 / W_Q4_0 /
// W_Q4_1 defined. `w4(row_byte0, k)` returns weights k..k+3 of the row that
// starts at byte `row_byte0` (k is a multiple of 4).

fn rd_u32(byte_off: u32) -> u32 {
    let i = byte_off >> 2u;
    let s = (byte_off & 3u) * 8u;
    if (s == 0u) {
        return W[i];
    }
    return (W[i] >> s) | (W[i + 1u] << (32u - s));
}

// An f16 at an even byte offset, widened to f32.
fn rd_f16(byte_off: u32) -> f32 {
    let word = W[byte_off >> 2u];
    return unpack2x16float(word >> ((byte_off & 2u) * 8u)).x;
}

fn sext8(b: u32) -> f32 {
    return f32((i32(b << 24u)) >> 24u);
}

fn w4(row_byte0: u32, k: u32) -> vec4<f32> {
#ifdef W_F32
    let i = (row_byte0 >> 2u) + k;
    return vec4<f32>(bitcast<f32>(W[i]), bitcast<f32>(W[i + 1u]), bitcast<f32>(W[i + 2u]), bitcast<f32>(W[i + 3u]));
#endif
#ifdef W_F16
    let i = (row_byte0 >> 2u) + (k >> 1u);
    return vec4<f32>(unpack2x16float(W[i]), unpack2x16float(W[i + 1u]));
#endif
#ifdef W_BF16
    let i = (row_byte0 >> 2u) + (k >> 1u);
    let a = W[i];
    let b = W[i + 1u];
    return vec4<f32>(bitcast<f32>(a << 16u), bitcast<f32>(a & 0xffff0000u), bitcast<f32>(b << 16u), bitcast<f32>(b & 0xffff0000u));
#endif
#ifdef W_Q8_0
    // block: f16 d, 32 x i8
    let base = row_byte0 + (k >> 5u) * 34u;
    let d = rd_f16(base);
    let q = rd_u32(base + 2u + (k & 31u));
    return d * vec4<f32>(sext8(q & 0xffu), sext8((q >> 8u) & 0xffu), sext8((q >> 16u) & 0xffu), sext8(q >> 24u));
#endif
#ifdef W_Q4_0
    // block: f16 d, 16 bytes; byte j holds q[j] (low nibble) and q[j+16] (high)
    let base = row_byte0 + (k >> 5u) * 18u;
    let d = rd_f16(base);
    let j = k & 31u;
    let q = rd_u32(base + 2u + (j & 15u)) >> ((j >> 4u) * 4u);
    let qv = vec4<f32>(f32(q & 15u), f32((q >> 8u) & 15u), f32((q >> 16u) & 15u), f32((q >> 24u) & 15u));
    return d * (qv - vec4<f32>(8.0));
#endif
#ifdef W_Q4_1
    // block: f16 d, f16 m, 16 bytes of nibbles (4-byte aligned: 20-byte blocks)
    let base = row_byte0 + (k >> 5u) * 20u;
    let dm = unpack2x16float(W[base >> 2u]);
    let j = k & 31u;
    let q = W[(base + 4u + (j & 15u)) >> 2u] >> ((j >> 4u) * 4u);
    let qv = vec4<f32>(f32(q & 15u), f32((q >> 8u) & 15u), f32((q >> 16u) & 15u), f32((q >> 24u) & 15u));
    return fma(vec4<f32>(dm.x), qv, vec4<f32>(dm.y));
#endif
}
