// SRAM-mode matmul: one workgroup = one SRAM slice of an emulated chip.
// The slice's weight tile (rows tile_row0 .. +rows_per_tile of W, file
// encoding) is copied into workgroup memory once per step; the compute loop
// then reads weights ONLY from that workgroup array, never from the storage
// buffer. X (activations, arriving over the chip's links) is read from storage.
//   Y[t, n] (+)= sum_k X[t, k] * W[n, k]     for n in this slice's rows
// PyTorch: y = x @ W.T (restricted to the chip's row block)
// Defines: one W_* type; SLICE_WORDS={{SLICE_WORDS}} (the slice budget / 4,
// from ChipSpec via one place: kernels::sram_matmul::variant); optional ACCUMULATE;
// KTAIL (K not a multiple of 4, float weights): X rows read as floats, the
// last chunk zero-padded, rows at any even byte (lib/wdecode: wk).

struct Params {
    n: u32,             // rows of the whole W
    k: u32,             // input features
    row_bytes: u32,     // bytes of one row of W
    out_rows_only: u32, // 1: logits rows (S.out_row0 ..), written from row 0
    row_begin: u32,     // first row of W held by this chip
    row_end: u32,       // one past the last row held by this chip
    rows_per_tile: u32, // rows one slice holds
    _pad: u32,
}
#include step

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<uniform> S: Step;
@group(0) @binding(2) var<storage, read> Wg: array<u32>;   // weights in GPU memory (staging only)
#ifdef KTAIL
@group(0) @binding(3) var<storage, read> X: array<f32>;
#else
@group(0) @binding(3) var<storage, read> X: array<vec4<f32>>;
#endif
@group(0) @binding(4) var<storage, read_write> Y: array<f32>;

// The slice: the only place the compute loop reads weights from.
var<workgroup> W: array<u32, {{SLICE_WORDS}}>;

#include wdecode

const WG: u32 = 64u;

// Chunk c4 of the x row starting at element `xb` (KTAIL: floats, 0 past K;
// else vec4 units).
fn xload(xb: u32, c4: u32) -> vec4<f32> {
#ifdef KTAIL
    let i = xb + 4u * c4;
    let r = P.k - 4u * c4;
    return vec4<f32>(X[i], select(0.0, X[i + 1u], r > 1u), select(0.0, X[i + 2u], r > 2u), select(0.0, X[i + 3u], r > 3u));
#else
    return X[xb + c4];
#endif
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r0 = P.row_begin + wid.x * P.rows_per_tile;
    if (r0 >= P.row_end) {
        return;
    }
    let rows = min(P.rows_per_tile, P.row_end - r0);
    // Stage the tile: whole words covering bytes [r0*row_bytes, (r0+rows)*row_bytes).
    let byte0 = r0 * P.row_bytes;
    let word0 = byte0 >> 2u;
    let word_end = (byte0 + rows * P.row_bytes + 3u) >> 2u;
    let n_words = min(word_end - word0, {{SLICE_WORDS}}u);
    for (var i = lid; i < n_words; i += WG) {
        W[i] = Wg[word0 + i];
    }
    workgroupBarrier();
    let shift = byte0 & 3u; // the tile may start inside a word (Q8_0/Q4_0 rows)
    var n_tok = S.n_tokens;
    var x_row0 = 0u;
    if (P.out_rows_only == 1u) {
        n_tok = S.n_out_rows;
        x_row0 = S.out_row0;
    }
    let k4n = (P.k + 3u) / 4u;
#ifdef KTAIL
    let xs = P.k;
#else
    let xs = k4n;
#endif
    let items = rows * n_tok;
    for (var it = lid; it < items; it += WG) {
        let r = it % rows;
        let t = it / rows;
        let rb = shift + r * P.row_bytes;
        let xb = (x_row0 + t) * xs;
        var acc = 0.0;
        for (var k4 = 0u; k4 < k4n; k4++) {
            acc += dot(wk(rb, k4, P.k), xload(xb, k4));
        }
        let o = t * P.n + r0 + r;
#ifdef ACCUMULATE
        Y[o] = Y[o] + acc;
#else
        Y[o] = acc;
#endif
    }
}
