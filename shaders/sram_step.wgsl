// The SRAM-mode interpreter: one dispatch runs the pipeline steps of a run;
// each workgroup is one TASK, one slice-sized piece of one work item of one
// pipeline stage (a row tile of a matmul, a norm, the attention of one head
// over one KV block, a link transfer of one carried activation, the arg-max).
// The task table T (built on the CPU, kernels::sram_step and
// exec::sram::schedule) lists the tasks so that everything a task depends on
// has a LOWER index (workgroups take tasks in table order, see `main`); a
// task waits for those with completion counters C (thread 0 spins,
// bounded), runs, and signals its node's counter.
// So the chips active in a pipeline step run side by side with no barrier
// between them, and a whole token is one dispatch.
//
// Memory: W is the chip's slice (SLICE minus the small scratch arrays below):
// matmul tiles, the norm vector and the embedding row are staged into it
// from the chip's SRAM image (Wimg) and every weight is read from there.
// A: the activation arena (one region per stage and activation), KV: the
// KV-cache arena (one region per chip's KV block), R: results.
// The arithmetic of each op is that of the per-op kernels SRAM mode ran
// before (sram_matmul, the embedding gather, rmsnorm, rope, attention
// PARTIAL, silu_mul, the link copy, argmax, topk), so tokens and logits
// match VRAM mode.
// Defines: W_WORDS, HD (head_dim), HD4 = ceil(HD / 4), E_<encoding> for each
// weight encoding the model uses.

@group(0) @binding(0) var<storage, read> T: array<u32>;         // header, tasks, deps
@group(0) @binding(1) var<storage, read> Run: array<u32>;       // micro-batch records, token ids
@group(0) @binding(2) var<storage, read> Wimg: array<u32>;      // the chips' SRAM images, RoPE table
@group(0) @binding(7) var<storage, read> Wimg2: array<u32>;     // their continuation past one binding
// Activations and KV cells written by one workgroup are read by later ones of
// the same dispatch: `@coherent` (COHERENT, where the device has the feature)
// keeps a reader from seeing a stale cached copy on GPUs whose caches are not
// coherent across compute units; CPU adapters run without it.
#ifdef COHERENT
@group(0) @binding(3) @coherent var<storage, read_write> A: array<f32>;
@group(0) @binding(4) @coherent var<storage, read_write> KV: array<f32>;
#else
@group(0) @binding(3) var<storage, read_write> A: array<f32>;   // activations
@group(0) @binding(4) var<storage, read_write> KV: array<f32>;  // KV cache, per chip block
#endif
@group(0) @binding(5) var<storage, read_write> C: array<atomic<u32>>; // [0] stall flag, [1] progress, [2] ticket, nodes
// Words per counter: each on a cache line of its own, so a thread polling
// one counter does not contend with the writes to the others
// (kernels::sram_step::COUNTER_WORDS).
const CW: u32 = 16u;
@group(0) @binding(6) var<storage, read_write> R: array<u32>;   // token ids / logits out

var<workgroup> W: array<u32, {{W_WORDS}}>;
var<workgroup> sc: array<f32, 256>;
var<workgroup> red: array<f32, 64>;
var<workgroup> redi: array<u32, 128>;
var<workgroup> vpart: array<vec4<f32>, 64>;
var<workgroup> qs: array<vec4<f32>, {{HD4}}>;
// A matmul's input row, staged one token at a time (XK4 four-wide chunks;
// 0: never, x is read from A), and its 32-value block sums (Q4_1's offset
// term, lib/q41x).
var<workgroup> XN: array<vec4<f32>, {{XK4N}}>;
var<workgroup> XS: array<f32, {{XSN}}>;

// Resident mode (`resident` below): the token this workgroup is on, and
// whether it keeps its slice's weights staged (resident) after token 0.
// Both 0 in the stepped entry.
var<private> TOK: u32;
var<private> KEEP: bool;
var<private> XSTAGED: bool;
#ifdef SG
// This thread's subgroup size and lane (lib/reduce).
var<private> SG_SIZE: u32;
var<private> SG_LANE: u32;
#endif

const WG: u32 = 64u;
const HD: u32 = {{HD}}u;
const HD4: u32 = {{HD4}}u;
const CHUNK: u32 = 256u;
const XK4: u32 = {{XK4}}u;
const NA: u32 = (HD + WG - 1u) / WG;
const G: u32 = WG / HD4;
// Mirrors kernels::sram_step.
const HDR: u32 = 16u;
const REC: u32 = 20u;

const OP_NOP: u32 = 0u;
const OP_EMBED: u32 = 1u;
const OP_NORM: u32 = 2u;
const OP_MAT: u32 = 3u;
const OP_ROPE_Q: u32 = 4u;
const OP_KV_WRITE: u32 = 5u;
const OP_ATTN: u32 = 6u;
const OP_SILU: u32 = 7u;
const OP_LINK: u32 = 8u;
const OP_ARGMAX: u32 = 9u;
const OP_TOPK: u32 = 10u;
const OP_COPY_OUT: u32 = 11u;
const OP_BIAS: u32 = 20u;
const OP_HEAD_NORM: u32 = 21u;

// The task's record and its micro-batch.
struct Task {
    op: u32,
    mb: u32,
    node: u32,
    sub: u32,
    base: u32, // first parameter word in T
    n_tok: u32,
    pos0: u32,
    out_row0: u32,
    n_out: u32,
    seq: u32,
    ids0: u32,
    rows: u32, // 0, or where the rows' (sequence, position) pairs start in Run
}

fn prm(t: Task, i: u32) -> u32 {
    return T[t.base + i];
}

// Row tt's position and KV-cache sequence: consecutive positions of one
// sequence, or (a decode round with several sequences in a micro-batch)
// the row's own pair.
fn tok_pos(t: Task, tt: u32) -> u32 {
    if (t.rows != 0u) {
        return Run[t.rows + 2u * (t.ids0 + tt) + 1u] + TOK;
    }
    return t.pos0 + tt;
}

fn tok_seq(t: Task, tt: u32) -> u32 {
    if (t.rows != 0u) {
        return Run[t.rows + 2u * (t.ids0 + tt)];
    }
    return t.seq;
}

// Chunk c4 of the activation row starting at element xb (zero past k);
// from XN once op_mat has staged the row.
fn xload(xb: u32, c4: u32, k: u32) -> vec4<f32> {
    if (XSTAGED) {
        return XN[c4];
    }
    let i = xb + 4u * c4;
    let r = k - 4u * c4;
    return vec4<f32>(A[i], select(0.0, A[i + 1u], r > 1u), select(0.0, A[i + 2u], r > 2u), select(0.0, A[i + 3u], r > 3u));
}

#ifdef E_F32
#include wdecode,sram_dot as _f32 with W_F32 KTAIL
#endif
#ifdef E_F16
#include wdecode,sram_dot as _f16 with W_F16 KTAIL
#endif
#ifdef E_BF16
#include wdecode,sram_dot as _bf16 with W_BF16 KTAIL
#endif
#ifdef E_Q8_0
#include wdecode,sram_dot as _q8_0 with W_Q8_0
#endif
#ifdef E_Q4_0
#include wdecode,sram_dot as _q4_0 with W_Q4_0
#endif
#ifdef E_Q4_1
#include wdecode,sram_dot as _q4_1 with W_Q4_1
#include q41x
#endif
#ifdef E_Q5_0
#include wdecode,sram_dot as _q5_0 with W_Q5_0
#endif
#ifdef E_Q5_1
#include wdecode,sram_dot as _q5_1 with W_Q5_1
#endif
#ifdef E_Q2_K
#include wdecode,sram_dot as _q2_k with W_Q2_K
#endif
#ifdef E_Q3_K
#include wdecode,sram_dot as _q3_k with W_Q3_K
#endif
#ifdef E_Q4_K
#include wdecode,sram_dot as _q4_k with W_Q4_K
#endif
#ifdef E_Q5_K
#include wdecode,sram_dot as _q5_k with W_Q5_K
#endif
#ifdef E_Q6_K
#include wdecode,sram_dot as _q6_k with W_Q6_K
#endif

// Encodings are numbered as model::DType::ALL.
fn row_dot_any(enc: u32, rb: u32, xb: u32, k: u32) -> f32 {
    switch enc {
#ifdef E_F32
        case 0u: { return row_dot_f32(rb, xb, k); }
#endif
#ifdef E_F16
        case 1u: { return row_dot_f16(rb, xb, k); }
#endif
#ifdef E_BF16
        case 2u: { return row_dot_bf16(rb, xb, k); }
#endif
#ifdef E_Q8_0
        case 3u: { return row_dot_q8_0(rb, xb, k); }
#endif
#ifdef E_Q4_0
        case 4u: { return row_dot_q4_0(rb, xb, k); }
#endif
#ifdef E_Q4_1
        case 5u: { return row_dot_q4_1(rb, xb, k); }
#endif
#ifdef E_Q5_0
        case 6u: { return row_dot_q5_0(rb, xb, k); }
#endif
#ifdef E_Q5_1
        case 7u: { return row_dot_q5_1(rb, xb, k); }
#endif
#ifdef E_Q2_K
        case 8u: { return row_dot_q2_k(rb, xb, k); }
#endif
#ifdef E_Q3_K
        case 9u: { return row_dot_q3_k(rb, xb, k); }
#endif
#ifdef E_Q4_K
        case 10u: { return row_dot_q4_k(rb, xb, k); }
#endif
#ifdef E_Q5_K
        case 11u: { return row_dot_q5_k(rb, xb, k); }
#endif
#ifdef E_Q6_K
        case 12u: { return row_dot_q6_k(rb, xb, k); }
#endif
        default: { return 0.0; }
    }
}

// The row · the staged x, whole blocks (lib/sram_dot row_dot_staged).
fn row_dot_staged_any(enc: u32, rb: u32, nb: u32) -> f32 {
    switch enc {
#ifdef E_F32
        case 0u: { return row_dot_staged_f32(rb, nb); }
#endif
#ifdef E_F16
        case 1u: { return row_dot_staged_f16(rb, nb); }
#endif
#ifdef E_BF16
        case 2u: { return row_dot_staged_bf16(rb, nb); }
#endif
#ifdef E_Q8_0
        case 3u: { return row_dot_staged_q8_0(rb, nb); }
#endif
#ifdef E_Q4_0
        case 4u: { return row_dot_staged_q4_0(rb, nb); }
#endif
#ifdef E_Q4_1
        case 5u: { return row_dot_staged_q4_1(rb, nb); }
#endif
#ifdef E_Q5_0
        case 6u: { return row_dot_staged_q5_0(rb, nb); }
#endif
#ifdef E_Q5_1
        case 7u: { return row_dot_staged_q5_1(rb, nb); }
#endif
#ifdef E_Q2_K
        case 8u: { return row_dot_staged_q2_k(rb, nb); }
#endif
#ifdef E_Q3_K
        case 9u: { return row_dot_staged_q3_k(rb, nb); }
#endif
#ifdef E_Q4_K
        case 10u: { return row_dot_staged_q4_k(rb, nb); }
#endif
#ifdef E_Q5_K
        case 11u: { return row_dot_staged_q5_k(rb, nb); }
#endif
#ifdef E_Q6_K
        case 12u: { return row_dot_staged_q6_k(rb, nb); }
#endif
        default: { return 0.0; }
    }
}

fn chunk_any(enc: u32, rb: u32, c4: u32, len: u32) -> vec4<f32> {
    switch enc {
#ifdef E_F32
        case 0u: { return chunk_f32(rb, c4, len); }
#endif
#ifdef E_F16
        case 1u: { return chunk_f16(rb, c4, len); }
#endif
#ifdef E_BF16
        case 2u: { return chunk_bf16(rb, c4, len); }
#endif
#ifdef E_Q8_0
        case 3u: { return chunk_q8_0(rb, c4, len); }
#endif
#ifdef E_Q4_0
        case 4u: { return chunk_q4_0(rb, c4, len); }
#endif
#ifdef E_Q4_1
        case 5u: { return chunk_q4_1(rb, c4, len); }
#endif
#ifdef E_Q5_0
        case 6u: { return chunk_q5_0(rb, c4, len); }
#endif
#ifdef E_Q5_1
        case 7u: { return chunk_q5_1(rb, c4, len); }
#endif
#ifdef E_Q2_K
        case 8u: { return chunk_q2_k(rb, c4, len); }
#endif
#ifdef E_Q3_K
        case 9u: { return chunk_q3_k(rb, c4, len); }
#endif
#ifdef E_Q4_K
        case 10u: { return chunk_q4_k(rb, c4, len); }
#endif
#ifdef E_Q5_K
        case 11u: { return chunk_q5_k(rb, c4, len); }
#endif
#ifdef E_Q6_K
        case 12u: { return chunk_q6_k(rb, c4, len); }
#endif
        default: { return vec4<f32>(0.0); }
    }
}

// Word i of the images: the first T[9] words are in Wimg, the rest in Wimg2
// (images larger than one storage binding).
fn img(i: u32) -> u32 {
    if (i < T[9]) {
        return Wimg[i];
    }
    return Wimg2[i - T[9]];
}

// Copies the bytes [byte0, byte0 + len) of the chip's image into the slice
// (whole words; the first byte lands at byte0 & 3).
fn stage(byte0: u32, len: u32, lid: u32) {
    let word0 = byte0 >> 2u;
    var n_words = min(((byte0 + len + 3u) >> 2u) - word0, {{W_WORDS}}u);
    if (KEEP) {
        n_words = 0u; // a resident slice: staged at its first token
    }
    for (var i = lid; i < n_words; i += WG) {
        W[i] = img(word0 + i);
    }
    workgroupBarrier();
}

// Embedding rows [r0, r1) of one chip: a token whose id is
// there gets its row, staged into the slice and decoded from there.
// p: enc, block byte, row_bytes, r0, r1, first, x_off, dim, scale (f32 bits;
// Gemma: sqrt(hidden), else 1)
fn op_embed(t: Task, lid: u32) {
    let enc = prm(t, 0u);
    let blk = prm(t, 1u);
    let row_bytes = prm(t, 2u);
    let r0 = prm(t, 3u);
    let r1 = prm(t, 4u);
    let first = prm(t, 5u);
    let x_off = prm(t, 6u);
    let dim = prm(t, 7u);
    let scale = bitcast<f32>(prm(t, 8u));
    let ids_base = T[2];
    for (var tt = 0u; tt < t.n_tok; tt++) {
        var id = Run[ids_base + t.ids0 + tt];
        if (TOK > 0u) {
            id = R[2u * (TOK - 1u)]; // resident: the previous token's arg-max
        }
        let xb = x_off + tt * dim;
        if (id >= r0 && id < r1) {
            let byte0 = blk + (id - r0) * row_bytes;
            stage(byte0, row_bytes, lid);
            let shift = byte0 & 3u;
            for (var c4 = lid; c4 * 4u < dim; c4 += WG) {
                let v = chunk_any(enc, shift, c4, dim);
                let n = min(4u, dim - c4 * 4u);
                for (var j = 0u; j < n; j++) {
                    A[xb + c4 * 4u + j] = v[j] * scale;
                }
            }
            workgroupBarrier(); // the slice is restaged for the next token
        } else if (first == 1u) {
            for (var i = lid; i < dim; i += WG) {
                A[xb + i] = 0.0;
            }
        }
    }
}

// RMSNorm (rmsnorm.wgsl; lib/rms): the norm vector staged into the slice.
// p: w byte, dim, x_off, y_off, accumulate (1: y += the norm; Gemma's
// post-norms, rmsnorm.wgsl ACCUMULATE)
fn op_norm(t: Task, lid: u32) {
    let dim = prm(t, 1u);
    let x_off = prm(t, 2u);
    let y_off = prm(t, 3u);
    let eps = bitcast<f32>(T[6]);
    stage(prm(t, 0u), dim * 4u, lid);
    for (var tt = 0u; tt < t.n_tok; tt++) {
        let base = tt * dim;
        let inv = rms_inv(x_off + base, dim, eps, lid);
        let accumulate = prm(t, 4u) == 1u;
        for (var i = lid; i < dim; i += WG) {
            let v = bitcast<f32>(W[i]) * (A[x_off + base + i] * inv);
            if (accumulate) {
                A[y_off + base + i] = A[y_off + base + i] + v;
            } else {
                A[y_off + base + i] = v;
            }
        }
    }
}

// One row tile of a matmul (sram_matmul): Y[t, r] (+)= X[t] · W[r] for the
// tile's rows, weights from the slice only; a thread per row (per row and
// token). Where the input row fits XN, each token's x is staged there in
// turn (the first under the barrier that publishes the weights): the
// weights are decoded once per token from the slice, rows of whole 32-weight
// blocks take the block dot (lib/sram_dot row_dot_staged), Q4_1 with the
// staged block sums XS (lib/q41x), as the VRAM matmul's decode path.
// p: enc, block byte, block row0, block row_end, rows per tile, row_bytes,
//    k, n (Y stride), x_off, y_off, flags (1 accumulate, 2 logit rows)
fn op_mat(t: Task, lid: u32) {
    let enc = prm(t, 0u);
    let blk = prm(t, 1u);
    let b_r0 = prm(t, 2u);
    let b_r1 = prm(t, 3u);
    let rpt = prm(t, 4u);
    let row_bytes = prm(t, 5u);
    let k = prm(t, 6u);
    let n = prm(t, 7u);
    let x_off = prm(t, 8u);
    let y_off = prm(t, 9u);
    let flags = prm(t, 10u);
    let r0 = b_r0 + t.sub * rpt;
    let rows = min(rpt, b_r1 - r0);
    let byte0 = blk + (r0 - b_r0) * row_bytes;
    var n_tok = t.n_tok;
    var x_row0 = 0u;
    if ((flags & 2u) != 0u) {
        n_tok = t.n_out;
        x_row0 = t.out_row0;
    }
    let k4n = (k + 3u) / 4u;
    let shift = byte0 & 3u;
    if (k4n > XK4) {
        // x read from the activations, every (row, token) at once.
        stage(byte0, rows * row_bytes, lid);
        let items = rows * n_tok;
        for (var it = lid; it < items; it += WG) {
            let r = it % rows;
            let tt = it / rows;
            let acc = row_dot_any(enc, shift + r * row_bytes, x_off + (x_row0 + tt) * k, k);
            mat_out(y_off + tt * n + r0 + r, acc, flags);
        }
        return;
    }
    // Token by token: its x row into XN (the first under the weights'
    // barrier), then the tile's rows against it. (One token: no loop around
    // the barriers, which lavapipe runs much slower.)
    let blocks = (k & 31u) == 0u;
    let q41 = blocks && enc == 5u;
    let xb0 = x_off + x_row0 * k;
    stage_x(xb0, k, q41, lid);
    stage(byte0, rows * row_bytes, lid);
    if (n_tok == 1u) {
        mat_rows(enc, shift, row_bytes, rows, xb0, k, y_off + r0, flags, q41, blocks, lid);
        return;
    }
    for (var tt = 0u; tt < n_tok; tt++) {
        let xb = xb0 + tt * k;
        if (tt > 0u) {
            workgroupBarrier(); // the previous token's rows have read XN
            stage_x(xb, k, q41, lid);
            workgroupBarrier();
        }
        mat_rows(enc, shift, row_bytes, rows, xb, k, y_off + tt * n + r0, flags, q41, blocks, lid);
    }
}

// The x row at A[xb ..] (k values) into XN, and with q41 its 32-value block
// sums into XS; the caller's barrier publishes them.
fn stage_x(xb: u32, k: u32, q41: bool, lid: u32) {
    for (var c = lid; c * 4u < k; c += WG) {
        XN[c] = xload(xb, c, k);
    }
    if (q41) {
        for (var b = lid; b < k / 32u; b += WG) {
            var v = 0.0;
            for (var i = 0u; i < 32u; i++) {
                v += A[xb + 32u * b + i];
            }
            XS[b] = v;
        }
    }
}

// Rows [0, rows) of the staged tile (rows from byte `shift`) · the staged x
// row (xb: its place in A, for the per-chunk decoders), into Y[y0 + r].
fn mat_rows(enc: u32, shift: u32, row_bytes: u32, rows: u32, xb: u32, k: u32, y0: u32, flags: u32, q41: bool, blocks: bool, lid: u32) {
    XSTAGED = true;
    for (var r = lid; r < rows; r += WG) {
        var acc = 0.0;
        if (q41) {
            acc = q41_row(shift + r * row_bytes, k / 32u);
        } else if (blocks) {
            acc = row_dot_staged_any(enc, shift + r * row_bytes, k / 32u);
        } else {
            acc = row_dot_any(enc, shift + r * row_bytes, xb, k);
        }
        mat_out(y0 + r, acc, flags);
    }
    XSTAGED = false;
}

// Y[o] = v, or += v (flags bit 0: accumulate into the residual).
fn mat_out(o: u32, v: f32, flags: u32) {
    if ((flags & 1u) != 0u) {
        A[o] = A[o] + v;
    } else {
        A[o] = v;
    }
}

// The Q4_1 row at byte rb · the staged x (nb blocks).
fn q41_row(rb: u32, nb: u32) -> f32 {
#ifdef E_Q4_1
    var acc = 0.0;
    for (var b = 0u; b < nb; b++) {
        acc += q41_dot(rb, b);
    }
    return acc;
#else
    return 0.0;
#endif
}

// RoPE's (cos, sin) for position pos, pair i, from the table `tab` words
// past the first (the layer's: Gemma 3's sliding layers have their own).
fn cos_sin(tab: u32, pos: u32, i: u32) -> vec2<f32> {
    let w = T[3] + tab + 2u * (pos * (HD / 2u) + i);
    return vec2<f32>(bitcast<f32>(img(w)), bitcast<f32>(img(w + 1u)));
}

#include rope_pair

// RoPE on q in place (rope.wgsl; lib/rope_pair). p: q_off, table
fn op_rope_q(t: Task, lid: u32) {
    let q_off = prm(t, 0u);
    let tab = prm(t, 1u);
    let nh = T[4];
    let half = HD / 2u;
    for (var tt = 0u; tt < t.n_tok; tt++) {
        let pos = tok_pos(t, tt);
        let seq = tok_seq(t, tt);
        for (var p = lid; p < nh * half; p += WG) {
            let head = p / half;
            let i = p % half;
            let pr = rope_pair(T[8], HD, i);
            let b = q_off + tt * nh * HD + head * HD;
            let r = rope_rotate(A[b + pr.x], A[b + pr.y], cos_sin(tab, pos, i));
            A[b + pr.x] = r.x;
            A[b + pr.y] = r.y;
        }
    }
}

// Element 0 of KV head h at position pos in a chip's KV block region:
// [sequence][position - p0][head - h0][HD].
fn kv_cell(region: u32, seq: u32, pos: u32, h: u32, p0: u32, p1: u32, h0: u32, h1: u32) -> u32 {
    return region + ((seq * (p1 - p0) + pos - p0) * (h1 - h0) + h - h0) * HD;
}

// RoPE on k and the KV write of the step's positions in this chip's block
// (rope.wgsl; lib/rope_pair). p: k_off, v_off, h0, h1, p0, p1, k region, v region,
// table
fn op_kv_write(t: Task, lid: u32) {
    let k_off = prm(t, 0u);
    let v_off = prm(t, 1u);
    let h0 = prm(t, 2u);
    let h1 = prm(t, 3u);
    let p0 = prm(t, 4u);
    let p1 = prm(t, 5u);
    let kr = prm(t, 6u);
    let vr = prm(t, 7u);
    let tab = prm(t, 8u);
    let kv_dim = T[5] * HD;
    let half = HD / 2u;
    let nh = h1 - h0;
    for (var tt = 0u; tt < t.n_tok; tt++) {
        let pos = tok_pos(t, tt);
        let seq = tok_seq(t, tt);
        if (pos < p0 || pos >= p1) {
            continue;
        }
        for (var p = lid; p < nh * HD; p += WG) {
            let h = h0 + p / HD;
            let d = p % HD;
            KV[kv_cell(vr, seq, pos, h, p0, p1, h0, h1) + d] = A[v_off + tt * kv_dim + h * HD + d];
        }
        for (var p = lid; p < nh * half; p += WG) {
            let h = h0 + p / half;
            let i = p % half;
            let pr = rope_pair(T[8], HD, i);
            let b = k_off + tt * kv_dim + h * HD;
            let r = rope_rotate(A[b + pr.x], A[b + pr.y], cos_sin(tab, pos, i));
            let c = kv_cell(kr, seq, pos, h, p0, p1, h0, h1);
            KV[c + pr.x] = r.x;
            KV[c + pr.y] = r.y;
        }
    }
}

// Chunk i of HD floats at flat index b of A / KV (zero past HD).
fn a4(b: u32, i: u32) -> vec4<f32> {
    let e = b + 4u * i;
    let r = HD - 4u * i;
    return vec4<f32>(A[e], select(0.0, A[e + 1u], r > 1u), select(0.0, A[e + 2u], r > 2u), select(0.0, A[e + 3u], r > 3u));
}
fn kv4(b: u32, i: u32) -> vec4<f32> {
    let e = b + 4u * i;
    let r = HD - 4u * i;
    return vec4<f32>(KV[e], select(0.0, KV[e + 1u], r > 1u), select(0.0, KV[e + 2u], r > 2u), select(0.0, KV[e + 3u], r > 3u));
}

#include reduce,rms with RMS_SRC=A

#include attend

// Chunk i of the key / value at position p of this chip's KV block (lib/attend).
fn key4(s: Keys, p: u32, i: u32) -> vec4<f32> {
    return kv4(s.k + (p - s.first) * s.stride, i);
}
fn val4(s: Keys, p: u32, lane: u32) -> vec4<f32> {
    return kv4(s.v + (p - s.first) * s.stride, lane);
}

// Query head t.sub + p12 folded over this chip's KV block (lib/attend, as
// attention.wgsl) into the running softmax state carried from block to
// block, or normalised into Att by the last block. p: q_off, att_off,
// st_off, h0, h1, p0, p1, k region, v region, init, finalize, window (0:
// full causal; else only the keys pos - window + 1 ..= pos, as
// attention.wgsl), first query head (tensor parallelism)
fn op_attn(t: Task, lid: u32) {
    let q_off = prm(t, 0u);
    let att_off = prm(t, 1u);
    let st_off = prm(t, 2u);
    let h0 = prm(t, 3u);
    let h1 = prm(t, 4u);
    let p0 = prm(t, 5u);
    let p1 = prm(t, 6u);
    let kr = prm(t, 7u);
    let vr = prm(t, 8u);
    let init = prm(t, 9u);
    let fin = prm(t, 10u);
    let n_heads = T[4];
    let scale = bitcast<f32>(T[7]);
    let h = t.sub + prm(t, 12u); // p12: first query head (tensor parallelism)
    let kvh = h / (n_heads / T[5]);
    let pstride = (h1 - h0) * HD;
    for (var tt = 0u; tt < t.n_tok; tt++) {
        let pos = tok_pos(t, tt);
        let seq = tok_seq(t, tt);
        let qb = q_off + tt * n_heads * HD + h * HD;
        for (var i = lid; i < HD4; i += WG) {
            qs[i] = a4(qb, i);
        }
        workgroupBarrier();
        let r = key_range(pos, p0, p1, prm(t, 11u), kvh >= h0 && kvh < h1);
        let kb = kv_cell(kr, seq, r.x, kvh, p0, p1, h0, h1);
        let vb = kv_cell(vr, seq, r.x, kvh, p0, p1, h0, h1);
        let ob = att_off + tt * n_heads * HD + h * HD;
        let sb = st_off + (tt * n_heads + h) * (2u + HD);
        // The running state, read before thread 0 rewrites it below: the
        // barriers inside `attend` order the two (none when no key is here).
        var m0 = -3.0e38;
        var l0 = 0.0;
        if (init == 0u) {
            m0 = A[sb];
            l0 = A[sb + 1u];
        }
        let st = attend(Keys(r.x, r.y, kb, vb, pstride, pos), scale, lid);
        if (r.x == r.y) {
            workgroupBarrier();
        }
        let m_new = max(m0, st.m);
        var a = 0.0;
        if (l0 > 0.0) {
            a = exp(m0 - m_new);
        }
        var b = 0.0;
        if (st.l > 0.0) {
            b = exp(st.m - m_new);
        }
        let l_new = l0 * a + st.l * b;
        for (var k = 0u; k < NA; k++) {
            let d = lid + k * WG;
            if (d < HD) {
                let mine = st.acc[k];
                var prev = 0.0;
                if (init == 0u) {
                    prev = A[sb + 2u + d];
                }
                let merged = prev * a + mine * b;
                if (fin == 1u) {
                    A[ob + d] = merged / l_new;
                } else {
                    A[sb + 2u + d] = merged;
                }
            }
        }
        if (lid == 0u && fin == 0u) {
            A[sb] = m_new;
            A[sb + 1u] = l_new;
        }
        if (tt + 1u < t.n_tok) {
            workgroupBarrier(); // qs, sc, vpart and the state are reused for the next token
        }
    }
}

// A projection's bias (bias_add.wgsl): out[t, c] += b[c] for the columns of
// chunk t.sub, the bias staged from the chip's image into the slice.
// p: b byte, n (out width), out_off, values per chunk
fn op_bias(t: Task, lid: u32) {
    let n = prm(t, 1u);
    let y_off = prm(t, 2u);
    let chunk = prm(t, 3u);
    let c0 = t.sub * chunk;
    let len = min(chunk, n - c0);
    stage(prm(t, 0u) + c0 * 4u, len * 4u, lid);
    for (var i = lid; i < t.n_tok * len; i += WG) {
        let o = y_off + (i / len) * n + c0 + i % len;
        A[o] = A[o] + bitcast<f32>(W[i % len]);
    }
}

// Per-head RMSNorm in place (head_norm.wgsl) of head t.sub of q or k, for
// every token of the step; the [HD] weight staged into the slice.
// p: w byte, act_off, heads of the activation
fn op_head_norm(t: Task, lid: u32) {
    let x_off = prm(t, 1u);
    let nh = prm(t, 2u);
    let eps = bitcast<f32>(T[6]);
    stage(prm(t, 0u), HD * 4u, lid);
    for (var tt = 0u; tt < t.n_tok; tt++) {
        let base = x_off + (tt * nh + t.sub) * HD;
        let inv = rms_inv(base, HD, eps, lid);
        for (var i = lid; i < HD; i += WG) {
            A[base + i] = bitcast<f32>(W[i]) * (A[base + i] * inv);
        }
        workgroupBarrier();
    }
}

// SwiGLU gate (silu_mul.wgsl), or GeGLU (gelu == 1: Gemma's
// gelu_pytorch_tanh, silu_mul.wgsl GELU_TANH). p: g_off, u_off, h_off, dim,
// gelu, and the features [c0, c1) of each row (tensor parallelism; c1 = 0:
// all)
fn op_silu(t: Task, lid: u32) {
    let g_off = prm(t, 0u);
    let u_off = prm(t, 1u);
    let h_off = prm(t, 2u);
    let dim = prm(t, 3u);
    let gelu = prm(t, 4u) == 1u;
    var c0 = prm(t, 5u);
    var c1 = prm(t, 6u);
    if (c1 == 0u) {
        c0 = 0u;
        c1 = dim;
    }
    let w = c1 - c0;
    for (var e = lid; e < t.n_tok * w; e += WG) {
        let i = (e / w) * dim + c0 + e % w;
        let g = A[g_off + i];
        if (gelu) {
            let inner = 0.7978845608028654 * (g + 0.044715 * (g * g * g));
            A[h_off + i] = 0.5 * g * (1.0 + tanh(clamp(inner, -10.0, 10.0))) * A[u_off + i];
        } else {
            A[h_off + i] = g / (1.0 + exp(-g)) * A[u_off + i];
        }
    }
}

// A link transfer of up to two carried activations (kernels::sram_step::
// LINK_COPIES): for each, the first cols columns of the step's rows, from
// the sending stage's region into the receiving stage's.
// p (6 words each; cols 0: no second): src_off, src stride, dst_off,
// dst stride, cols, logit rows
fn op_link(t: Task, lid: u32) {
    for (var c = 0u; c < 2u; c++) {
        let src = prm(t, 6u * c);
        let ss = prm(t, 6u * c + 1u);
        let dst = prm(t, 6u * c + 2u);
        let ds = prm(t, 6u * c + 3u);
        let cols = prm(t, 6u * c + 4u);
        var rows = t.n_tok;
        if (prm(t, 6u * c + 5u) == 1u) {
            rows = t.n_out;
        }
        for (var i = lid; i < rows * cols; i += WG) {
            let r = i / cols;
            let e = i % cols;
            A[dst + r * ds + e] = A[src + r * ss + e];
        }
    }
}

#include select with LOGITS=A

// Greedy pick over the last logit row (argmax.wgsl; lib/select), or with
// p3 = 1 over row t.sub. p: logits_off, vocab, out word, per row
fn op_argmax(t: Task, lid: u32) {
    let vocab = prm(t, 1u);
    var row = t.n_out - 1u;
    var o = prm(t, 2u) + 2u * TOK;
    if (prm(t, 3u) == 1u) {
        // p3 = 1: one task per row (row t.sub, into pair p2 / 2 + t.sub).
        if (t.sub >= t.n_out) {
            return;
        }
        row = t.sub;
        o += 2u * t.sub;
    }
    let base = prm(t, 0u) + row * vocab;
    let w = pick_words(pick_after(base, vocab, 0.0, NONE, lid), 0u);
    if (lid == 0u) {
        R[o] = w.x;
        R[o + 1u] = w.y;
    }
}

// The k largest logits of the last row, best first (topk.wgsl; lib/select).
// p: logits_off, vocab, k
fn op_topk(t: Task, lid: u32) {
    let vocab = prm(t, 1u);
    let kk = prm(t, 2u);
    let base = prm(t, 0u) + (t.n_out - 1u) * vocab;
    var p = Pick(3.4e38, NONE, false);
    for (var r = 0u; r < kk; r++) {
        p = pick_after(base, vocab, p.v, p.i, lid);
        let w = pick_words(p, r);
        if (lid == 0u) {
            R[2u * r] = w.x;
            R[2u * r + 1u] = w.y;
        }
    }
}

// Every logit row of the micro-batch into R at its first token's row.
// p: logits_off, vocab
fn op_copy_out(t: Task, lid: u32) {
    let src = prm(t, 0u);
    let vocab = prm(t, 1u);
    let dst = t.ids0 * vocab;
    for (var i = lid; i < t.n_out * vocab; i += WG) {
        R[dst + i] = bitcast<u32>(A[src + i]);
    }
}

// Thread 0 spins until counter C[c] reaches want. No task may wait forever:
// when no task of the dispatch has finished (C[1], the progress count) for
// T[1] polls, or another task has stalled, it raises the flag C[0] and goes
// on. (Progress and the flag are looked at every 256 polls.) st = (polls,
// progress last seen), carried over the waits of one task.
fn spin_until(c: u32, want: u32, st: ptr<function, vec2<u32>>) {
    loop {
        // A read-modify-write: lavapipe hoists a relaxed atomicLoad out of
        // this loop (gpu::litmus), so a wait on a workgroup running at the
        // same time would never see it finish.
        if (atomicOr(&C[CW * c], 0u) >= want) {
            break;
        }
        (*st).x++;
        if (((*st).x & 255u) == 0u) {
            let now = atomicOr(&C[CW], 0u);
            if (now != (*st).y) {
                (*st).y = now;
                (*st).x = 0u;
            }
            if ((*st).x >= T[1] || atomicLoad(&C[0]) != 0u) {
                atomicMax(&C[0], 1u);
                break;
            }
        }
    }
}

// Thread 0 waits until every counter this task depends on has reached its
// target (all earlier tasks), bounded as spin_until.
fn wait_deps(dep_off: u32, dep_n: u32, lid: u32) {
    if (lid == 0u) {
        var st = vec2<u32>(0u, atomicOr(&C[CW], 0u));
        for (var d = 0u; d < dep_n; d++) {
            let c = T[dep_off + 2u * d];
            let want = T[dep_off + 2u * d + 1u] * (TOK + 1u);
            spin_until(c, want, &st);
        }
    }
    // A control barrier: every thread waits for thread 0 (and sees storage).
    storageBarrier();
}

// Which task a workgroup runs (T[15], kernels::sram_step::hdr::TASK_ORDER):
// * by TICKET (C[2]): tasks are claimed in table order by whichever
//   workgroups are running, so every task a claimed task waits for was
//   claimed earlier by a running workgroup and the earliest unfinished
//   claimed task can always finish, whatever order the GPU starts
//   workgroups in; and on a CPU adapter that hands each thread a contiguous
//   range of workgroup ids (lavapipe), the threads still take consecutive
//   tasks, so independent tasks (a matmul's row tiles, the chips of one
//   pipeline step) run side by side. Costs a hand-over between threads at
//   almost every dependency, which an oversubscribed CPU makes slow.
// * by workgroup id: relies on workgroups starting in index order.
var<workgroup> ticket: u32;

@compute @workgroup_size(64)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
#ifdef SG
    @builtin(subgroup_size) sg_size: u32,
    @builtin(subgroup_invocation_id) sg_lane: u32,
#endif
) {
#ifdef SG
    SG_SIZE = sg_size;
    SG_LANE = sg_lane;
#endif
    // By workgroup id the index needs no barrier (a barrier is a large part
    // of a small task's cost on lavapipe).
    var ti = wid.y * nwg.x + wid.x;
    if (T[15] == 1u) {
        if (lid == 0u) {
            ticket = atomicAdd(&C[2u * CW], 1u);
        }
        ti = workgroupUniformLoad(&ticket);
    }
    if (ti >= T[0]) {
        return;
    }
    run_task(ti, lid);
}

// Task ti: waits for what it depends on, runs, counts itself done. On token
// TOK (resident mode) its position is TOK past the record's, and its
// counters' targets are TOK + 1 times the table's (they are never reset).
fn run_task(ti: u32, lid: u32) {
    let r = HDR + ti * REC;
    let mb = T[r + 1u];
    let m = 8u * mb;
    let t = Task(T[r], mb, T[r + 2u], T[r + 5u], r + 6u, Run[m], Run[m + 1u] + TOK, Run[m + 2u], Run[m + 3u], Run[m + 5u], Run[m + 6u], Run[m + 7u]);
    wait_deps(T[r + 3u], T[r + 4u], lid);
    switch t.op {
        case OP_EMBED: { op_embed(t, lid); }
        case OP_NORM: { op_norm(t, lid); }
        case OP_MAT: { op_mat(t, lid); }
        case OP_ROPE_Q: { op_rope_q(t, lid); }
        case OP_KV_WRITE: { op_kv_write(t, lid); }
        case OP_ATTN: { op_attn(t, lid); }
        case OP_SILU: { op_silu(t, lid); }
        case OP_LINK: { op_link(t, lid); }
        case OP_ARGMAX: { op_argmax(t, lid); }
        case OP_TOPK: { op_topk(t, lid); }
        case OP_COPY_OUT: { op_copy_out(t, lid); }
        case OP_BIAS: { op_bias(t, lid); }
        case OP_HEAD_NORM: { op_head_norm(t, lid); }
        default: {}
    }
    // Publish this task's writes (a control barrier), then count it done.
    storageBarrier();
    if (lid == 0u) {
        atomicAdd(&C[CW * t.node], 1u);
        atomicAdd(&C[CW], 1u);
    }
}

#ifdef RESIDENT
// Resident mode: ONE dispatch of K workgroups (K at most the workgroups the
// litmus saw run at once, gpu::litmus) decodes T[RES_TOKENS] greedy tokens.
// Each workgroup has a list of tasks of the decode table (exec::sram::
// resident): a resident workgroup owns one slice (a matmul row tile or a
// norm vector) whose weights it stages at token 0 and keeps in W; worker
// workgroups run the rest, restaging as the stepped interpreter does. Every
// workgroup walks tokens in order and, within a token, its tasks in table
// order. A task's counter waits are the table's targets times (token + 1);
// a task with no dependency (the embedding) also waits for the previous
// token's arg-max, whose id it reads from R (the loopback to chip 0 happens
// here, not on the host). Every wait is bounded (wait_deps: stall flag).
//
// Why this cannot deadlock: order all (token, task) pairs token-major, then
// by table index. Every dependency of a pair comes earlier in that order
// (lower index, or the previous token's arg-max). Take the earliest pair not
// done: everything before it is done, so its dependencies are met, and its
// owner has finished every earlier pair of its own list, so the owner is at
// this pair (the owner is running: all K workgroups are co-resident, which
// is what the litmus measured). So some pair always progresses.
//
// T[RES_LISTS]: per workgroup (offset, length, keeps weights), then the
// lists of task indices. T[RES_TAIL]: the arg-max's counter (one task).
const RES_LISTS: u32 = 12u;
const RES_TOKENS: u32 = 13u;
const RES_TAIL: u32 = 14u;

@compute @workgroup_size(64)
fn resident(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
#ifdef SG
    @builtin(subgroup_size) sg_size: u32,
    @builtin(subgroup_invocation_id) sg_lane: u32,
#endif
) {
#ifdef SG
    SG_SIZE = sg_size;
    SG_LANE = sg_lane;
#endif
    let l = T[RES_LISTS] + 3u * wid.x;
    let off = T[l];
    let len = T[l + 1u];
    let keeps = T[l + 2u] == 1u;
    let n_tok = T[RES_TOKENS];
    for (var tok = 0u; tok < n_tok; tok++) {
        TOK = tok;
        for (var i = 0u; i < len; i++) {
            let ti = T[off + i];
            KEEP = keeps && tok > 0u;
            if (tok > 0u && T[HDR + ti * REC + 4u] == 0u) {
                wait_tail(tok, lid);
            }
            run_task(ti, lid);
            // The stall flag, read by thread 0 and seen by all (redi is
            // free between tasks).
            if (lid == 0u) {
                redi[0] = atomicOr(&C[0], 0u);
            }
            if (workgroupUniformLoad(&redi[0]) != 0u) {
                return;
            }
        }
    }
}

// Thread 0 waits until token tok - 1's arg-max is done (bounded as wait_deps).
fn wait_tail(tok: u32, lid: u32) {
    if (lid == 0u) {
        var st = vec2<u32>(0u, atomicOr(&C[CW], 0u));
        spin_until(T[RES_TAIL], tok, &st);
    }
    storageBarrier();
}
#endif
