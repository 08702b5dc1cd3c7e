// Weight decoding shared by every kernel that reads a weight matrix.
// Expects a binding `W: array<u32>` holding the tensor bytes exactly as in the
// model file (GGML block layouts are not 4-byte aligned for Q8_0/Q4_0, hence
// the unaligned reads), and one of W_F32 / W_F16 / W_BF16 / W_Q8_0 / W_Q4_0 /
// W_Q4_1 defined. `w4(row_byte0, k)` returns weights k..k+3 of the row that
// starts at byte `row_byte0` (k is a multiple of 4). `wk(row_byte0, c4, len)`
// returns chunk c4 (weights 4c4 .. 4c4+3) of a row of `len` weights: w4, or
// with KTAIL (float types, `len` not a multiple of 4) a row that may start
// at any even byte, zero past `len`.

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

// 32 consecutive weights (one GGML block) as 8 vec4.
struct WBlock {
    v0: vec4<f32>, v1: vec4<f32>, v2: vec4<f32>, v3: vec4<f32>,
    v4: vec4<f32>, v5: vec4<f32>, v6: vec4<f32>, v7: vec4<f32>,
}

fn nib_lo(q: u32) -> vec4<f32> {
    return vec4<f32>(f32(q & 15u), f32((q >> 8u) & 15u), f32((q >> 16u) & 15u), f32((q >> 24u) & 15u));
}

// Weights blk*32 .. blk*32+31: a quantized block's scale is decoded once.
fn wblock(row_byte0: u32, blk: u32) -> WBlock {
    let k = blk * 32u;
#ifdef W_Q4_1
    let w0 = (row_byte0 + blk * 20u) >> 2u;
    let dm = unpack2x16float(W[w0]);
    let d = vec4<f32>(dm.x);
    let m = vec4<f32>(dm.y);
    let q0 = W[w0 + 1u];
    let q1 = W[w0 + 2u];
    let q2 = W[w0 + 3u];
    let q3 = W[w0 + 4u];
    return WBlock(fma(d, nib_lo(q0), m), fma(d, nib_lo(q1), m), fma(d, nib_lo(q2), m), fma(d, nib_lo(q3), m),
                  fma(d, nib_lo(q0 >> 4u), m), fma(d, nib_lo(q1 >> 4u), m), fma(d, nib_lo(q2 >> 4u), m), fma(d, nib_lo(q3 >> 4u), m));
#else
#ifdef W_Q8_0
    // 34-byte blocks: the scale sits at a 2- or 0-mod-4 offset; read 9 words once.
    let base = row_byte0 + blk * 34u;
    let w0 = base >> 2u;
    let odd = (base & 2u) != 0u;
    let dd = unpack2x16float(W[w0]);
    var d = dd.x;
    if (odd) {
        d = dd.y;
    }
    var q: array<u32, 8>;
    if (odd) {
        for (var j = 0u; j < 8u; j++) {
            q[j] = W[w0 + 1u + j];
        }
    } else {
        for (var j = 0u; j < 8u; j++) {
            q[j] = (W[w0 + j] >> 16u) | (W[w0 + j + 1u] << 16u);
        }
    }
    return WBlock(d * s8x4(q[0]), d * s8x4(q[1]), d * s8x4(q[2]), d * s8x4(q[3]),
                  d * s8x4(q[4]), d * s8x4(q[5]), d * s8x4(q[6]), d * s8x4(q[7]));
#else
    return WBlock(w4(row_byte0, k), w4(row_byte0, k + 4u), w4(row_byte0, k + 8u), w4(row_byte0, k + 12u),
                  w4(row_byte0, k + 16u), w4(row_byte0, k + 20u), w4(row_byte0, k + 24u), w4(row_byte0, k + 28u));
#endif
#endif
}

// The 4 signed bytes of `q` as floats.
fn s8x4(q: u32) -> vec4<f32> {
    return vec4<f32>(vec4<i32>(bitcast<i32>(q << 24u), bitcast<i32>(q << 16u), bitcast<i32>(q << 8u), bitcast<i32>(q)) >> vec4<u32>(24u));
}

#ifdef KTAIL
// Weight k of the row at byte row_byte0 (float types; any even row start).
fn w1(row_byte0: u32, k: u32) -> f32 {
#ifdef W_F32
    return bitcast<f32>(W[(row_byte0 >> 2u) + k]);
#endif
#ifdef W_F16
    return rd_f16(row_byte0 + 2u * k);
#endif
#ifdef W_BF16
    let b = row_byte0 + 2u * k;
    return bitcast<f32>(((W[b >> 2u] >> ((b & 2u) * 8u)) & 0xffffu) << 16u);
#endif
}

// Weights k..k+3 of a row starting at any even byte (all four inside the row).
fn w4u(row_byte0: u32, k: u32) -> vec4<f32> {
#ifdef W_F32
    return w4(row_byte0, k);
#endif
#ifdef W_F16
    let b = row_byte0 + 2u * k;
    return vec4<f32>(unpack2x16float(rd_u32(b)), unpack2x16float(rd_u32(b + 4u)));
#endif
#ifdef W_BF16
    let b = row_byte0 + 2u * k;
    let lo = rd_u32(b);
    let hi = rd_u32(b + 4u);
    return vec4<f32>(bitcast<f32>(lo << 16u), bitcast<f32>(lo & 0xffff0000u), bitcast<f32>(hi << 16u), bitcast<f32>(hi & 0xffff0000u));
#endif
}
#endif

fn wk(row_byte0: u32, c4: u32, len: u32) -> vec4<f32> {
#ifdef KTAIL
    let k = 4u * c4;
    if (k + 4u <= len) {
        return w4u(row_byte0, k);
    }
    // The row's last, partial chunk: only weights inside the row are read.
    var v = vec4<f32>(0.0);
    for (var j = 0u; j < len - k; j++) {
        v[j] = w1(row_byte0, k + j);
    }
    return v;
#else
    return w4(row_byte0, 4u * c4);
#endif
}
