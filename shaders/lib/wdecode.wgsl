// Weight decoding shared by every kernel that reads a weight matrix.
// Expects a binding `W: array<u32>` holding the tensor bytes exactly as in the
// model file (GGML block layouts are not 4-byte aligned for Q8_0/Q4_0/Q5_0/
// Q3_K/Q6_K, hence the unaligned reads), and one of W_F32 / W_F16 / W_BF16 /
// W_Q8_0 / W_Q4_0 / W_Q4_1 / W_Q5_0 / W_Q5_1 / W_Q2_K / W_Q3_K / W_Q4_K /
// W_Q5_K / W_Q6_K defined. `w4(row_byte0, k)` returns weights k..k+3 of the
// row that starts at byte `row_byte0` (k is a multiple of 4; the 4 weights
// always share one (sub-)block and its scales). Layouts as ggml-common.h.
// `wk(row_byte0, c4, len)` returns chunk c4 (weights 4c4 .. 4c4+3) of a row
// of `len` weights: w4, or with KTAIL (float types, `len` not a multiple of
// 4) a row that may start at any even byte, zero past `len`.

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

// The byte at `byte_off`.
fn rd_u8(byte_off: u32) -> u32 {
    return (W[byte_off >> 2u] >> ((byte_off & 3u) * 8u)) & 0xffu;
}

// The 4 bytes of `q` as unsigned floats (callers mask the bits they want).
fn u8x4(q: u32) -> vec4<f32> {
    return vec4<f32>(f32(q & 0xffu), f32((q >> 8u) & 0xffu), f32((q >> 16u) & 0xffu), f32(q >> 24u));
}

// ggml's get_scale_min_k4 for sub-block j of a Q4_K/Q5_K super-block whose 12
// scale bytes start at `sb0`: (6-bit scale, 6-bit min).
fn scale_min_k4(sb0: u32, j: u32) -> vec2<f32> {
    if (j < 4u) {
        return vec2<f32>(f32(rd_u8(sb0 + j) & 63u), f32(rd_u8(sb0 + j + 4u) & 63u));
    }
    let b = rd_u8(sb0 + j + 4u);
    return vec2<f32>(f32((b & 15u) | ((rd_u8(sb0 + j - 4u) >> 6u) << 4u)),
                     f32((b >> 4u) | ((rd_u8(sb0 + j) >> 6u) << 4u)));
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
#ifdef W_Q5_0
    // block (22 bytes): f16 d, u32 qh, 16 bytes; q[j] = nibble | bit j of qh << 4
    let base = row_byte0 + (k >> 5u) * 22u;
    let d = rd_f16(base);
    let j = k & 31u;
    let h = rd_u32(base + 2u) >> j;
    let q = (rd_u32(base + 6u + (j & 15u)) >> ((j >> 4u) * 4u)) & 0x0f0f0f0fu;
    let hb = vec4<f32>(f32(h & 1u), f32((h >> 1u) & 1u), f32((h >> 2u) & 1u), f32((h >> 3u) & 1u));
    return d * (u8x4(q) + 16.0 * hb - vec4<f32>(16.0));
#endif
#ifdef W_Q5_1
    // block (24 bytes, 4-byte aligned): f16 d, f16 m, u32 qh, 16 bytes of nibbles
    let w0 = (row_byte0 >> 2u) + (k >> 5u) * 6u;
    let dm = unpack2x16float(W[w0]);
    let j = k & 31u;
    let h = W[w0 + 1u] >> j;
    let q = (W[w0 + 2u + ((j & 15u) >> 2u)] >> ((j >> 4u) * 4u)) & 0x0f0f0f0fu;
    let hb = vec4<f32>(f32(h & 1u), f32((h >> 1u) & 1u), f32((h >> 2u) & 1u), f32((h >> 3u) & 1u));
    return fma(vec4<f32>(dm.x), u8x4(q) + 16.0 * hb, vec4<f32>(dm.y));
#endif
#ifdef W_Q2_K
    // super-block (84 bytes): scales[16] (4-bit scale | 4-bit min << 4),
    // qs[64] (2-bit), f16 d, f16 dmin. Element e: half h = e/128, shift 2*((e%128)/32),
    // byte qs[32h + e%32], scale e/16.
    let base = row_byte0 + (k >> 8u) * 84u;
    let e = k & 255u;
    let dm = vec2<f32>(rd_f16(base + 80u), rd_f16(base + 82u));
    let sc = rd_u8(base + (e >> 4u));
    let q = (rd_u32(base + 16u + 32u * (e >> 7u) + (e & 31u)) >> (2u * ((e >> 5u) & 3u))) & 0x03030303u;
    return (dm.x * f32(sc & 15u)) * u8x4(q) - vec4<f32>(dm.y * f32(sc >> 4u));
#endif
#ifdef W_Q3_K
    // super-block (110 bytes): hmask[32], qs[64] (2-bit), scales[12] (16 × 6 bits), f16 d.
    // Element e: low 2 bits as Q2_K, 3rd bit = hmask[e%32] bit (e/32) (clear: −4),
    // scale i = e/16: low 4 bits in scales[i%8] (nibble i/8), high 2 bits in
    // scales[8 + i%4] (bits 2*(i/4)); value d * (scale − 32) * q.
    let base = row_byte0 + (k >> 8u) * 110u;
    let e = k & 255u;
    let l = e & 31u;
    let i = e >> 4u;
    let q = (rd_u32(base + 32u + 32u * (e >> 7u) + l) >> (2u * ((e >> 5u) & 3u))) & 0x03030303u;
    let hm = (rd_u32(base + l) >> (e >> 5u)) & 0x01010101u;
    let s = ((rd_u8(base + 96u + (i & 7u)) >> (4u * (i >> 3u))) & 15u)
          | (((rd_u8(base + 104u + (i & 3u)) >> (2u * (i >> 2u))) & 3u) << 4u);
    let dl = rd_f16(base + 108u) * (f32(s) - 32.0);
    return dl * (u8x4(q) + 4.0 * u8x4(hm) - vec4<f32>(4.0));
#endif
#ifdef W_Q4_K
    // super-block (144 bytes, 4-byte aligned): f16 d, f16 dmin, scales[12],
    // qs[128]. Sub-block j = e/32 (scale/min: scale_min_k4); byte
    // qs[32*(e/64) + e%32], low nibble for even j, high for odd.
    let base = row_byte0 + (k >> 8u) * 144u;
    let e = k & 255u;
    let j = e >> 5u;
    let dm = unpack2x16float(W[base >> 2u]);
    let sm = scale_min_k4(base + 4u, j);
    let q = (W[(base + 16u + 32u * (e >> 6u) + (e & 31u)) >> 2u] >> (4u * (j & 1u))) & 0x0f0f0f0fu;
    return (dm.x * sm.x) * u8x4(q) - vec4<f32>(dm.y * sm.y);
#endif
#ifdef W_Q5_K
    // super-block (176 bytes, 4-byte aligned): Q4_K's header, qh[32], qs[128];
    // the 5th bit of element e is bit e/32 of qh[e%32].
    let base = row_byte0 + (k >> 8u) * 176u;
    let e = k & 255u;
    let j = e >> 5u;
    let dm = unpack2x16float(W[base >> 2u]);
    let sm = scale_min_k4(base + 4u, j);
    let hb = (W[(base + 16u + (e & 31u)) >> 2u] >> j) & 0x01010101u;
    let q = (W[(base + 48u + 32u * (e >> 6u) + (e & 31u)) >> 2u] >> (4u * (j & 1u))) & 0x0f0f0f0fu;
    return (dm.x * sm.x) * (u8x4(q) + 16.0 * u8x4(hb)) - vec4<f32>(dm.y * sm.y);
#endif
#ifdef W_Q6_K
    // super-block (210 bytes): ql[128], qh[64], i8 scales[16], f16 d. Element
    // e: half h = e/128, quarter g = (e%128)/32, l = e%32; low 4 bits from
    // ql[64h + 32*(g&1) + l] (high nibble when g >= 2), top 2 bits from
    // qh[32h + l] bits 2g; value d * scales[e/16] * (q − 32).
    let base = row_byte0 + (k >> 8u) * 210u;
    let e = k & 255u;
    let h = e >> 7u;
    let g = (e >> 5u) & 3u;
    let l = e & 31u;
    let lo = (rd_u32(base + 64u * h + 32u * (g & 1u) + l) >> (4u * (g >> 1u))) & 0x0f0f0f0fu;
    let hi = (rd_u32(base + 128u + 32u * h + l) >> (2u * g)) & 0x03030303u;
    let dl = rd_f16(base + 208u) * sext8(rd_u8(base + 192u + (e >> 4u)));
    return dl * (u8x4(lo | (hi << 4u)) - vec4<f32>(32.0));
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
