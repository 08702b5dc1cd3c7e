// Y[t, n] (+)= sum_k X[t, k] * W[n, k]        W in file encoding (see lib/wdecode)
// PyTorch: y = x @ W.T  (nn.Linear without bias); with ACCUMULATE: x += x2 @ W.T
//
// Each weight row is decoded once per workgroup and multiplied with TT tokens
// (TT=1 decode: a matvec; TT=8 prefill: weights reused across 8 tokens).
// Two paths, one file:
//  - SG (adapter has subgroups): a subgroup per row; lanes take consecutive
//    4-wide chunks of the row (coalesced on GPUs, contiguous vector loads on
//    lavapipe) and finish with subgroupAdd. RPW={{RPW}} rows per workgroup.
//  - plain (no subgroups, e.g. GL): a thread per row, no shared memory, no
//    barriers. 64 rows per workgroup.
// Defines: one W_* type, TT={{TT}}, optional ACCUMULATE, optional SG.
// NORM (TT=1 only): X is the raw residual row and the kernel applies RMSNorm
// itself (weight G, eps P.eps) before the product, so no separate norm
// dispatch runs: each workgroup normalises the row into workgroup memory (XN,
// K4={{K4}} vec4) with the same arithmetic as shaders/rmsnorm.wgsl, then reads
// x from there.
// KTAIL (K not a multiple of 4; float weights only, GGML blocks are whole):
// X rows are read as floats (a row starts at any element), the last 4-wide
// chunk of a row is zero-padded (x and weight both), and weight rows may
// start at any even byte (lib/wdecode: wk).

struct Params {
    n: u32,             // output features (rows of W; GLU: rows of each half)
    k: u32,             // input features (KTAIL: not a multiple of 4)
    row_bytes: u32,     // bytes of one row of W
    out_rows_only: u32, // 1: tokens are S.out_row0 .. + S.n_out_rows (logits), output rows from 0
    split1: u32,        // SPLIT3: rows [0, split1) -> Y, [split1, split2) -> Y2, [split2, n) -> Y3
    split2: u32,
    eps: f32,           // NORM: RMSNorm epsilon
    _pad1: u32,
}
#include step

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<uniform> S: Step;
@group(0) @binding(2) var<storage, read> W: array<u32>;
#ifdef KTAIL
@group(0) @binding(3) var<storage, read> X: array<f32>;
#else
@group(0) @binding(3) var<storage, read> X: array<vec4<f32>>;
#endif
@group(0) @binding(4) var<storage, read_write> Y: array<f32>;
#ifdef SPLIT3
// Q, K and V as one product: W holds Wq, Wk, Wv stacked; each part of the
// output goes to its own buffer. PyTorch: q, k, v = x @ Wq.T, x @ Wk.T, x @ Wv.T
@group(0) @binding(5) var<storage, read_write> Y2: array<f32>;
@group(0) @binding(6) var<storage, read_write> Y3: array<f32>;
#endif
#ifdef NORM
#ifdef SPLIT3
@group(0) @binding(7) var<storage, read> G: array<f32>;
#else
@group(0) @binding(5) var<storage, read> G: array<f32>;
#endif
#endif
#ifdef XSTAGE
// TT=1: the token's x row staged in workgroup memory (normalised with NORM),
// plus its 32-element block sums (the Q4_1 offset term m * sum(x)).
const K4: u32 = {{K4}}u;
var<workgroup> XN: array<vec4<f32>, K4>;
var<workgroup> XS: array<f32, (K4 + 7u) / 8u>;
var<workgroup> red: array<f32, 64>;

// XN = X[row] (NORM: rms_norm(X[row]) * G, the arithmetic of rmsnorm.wgsl),
// computed by the whole workgroup (64 threads).
// PyTorch (LlamaRMSNorm): w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))
// SG: the sum of squares is reduced per subgroup (subgroupAdd), then over
// the workgroup's subgroups: two barriers instead of seven.
fn stage_row(row: u32, lid: u32, sg_size: u32, lane: u32) {
    let base = row * x_stride();
#ifdef NORM
    var ss = 0.0;
    for (var i = lid; i < P.k; i += 64u) {
#ifdef KTAIL
        let v = X[base + i];
#else
        let v = X[base + i / 4u][i % 4u];
#endif
        ss = fma(v, v, ss);
    }
#ifdef SG
    let part = subgroupAdd(ss);
    if (lane == 0u) {
        red[lid / sg_size] = part;
    }
    workgroupBarrier();
    var total = 0.0;
    for (var i = 0u; i < (64u + sg_size - 1u) / sg_size; i++) {
        total += red[i];
    }
    let inv = inverseSqrt(total / f32(P.k) + P.eps);
#else
    red[lid] = ss;
    workgroupBarrier();
    for (var s = 32u; s > 0u; s >>= 1u) {
        if (lid < s) {
            red[lid] += red[lid + s];
        }
        workgroupBarrier();
    }
    let inv = inverseSqrt(red[0] / f32(P.k) + P.eps);
#endif
    for (var i = lid; i < K4; i += 64u) {
        let e = 4u * i;
        // Past K (KTAIL's last chunk): g = 0, so XN stays zero there.
        let g = vec4<f32>(G[e], select(0.0, G[e + 1u], e + 1u < P.k), select(0.0, G[e + 2u], e + 2u < P.k), select(0.0, G[e + 3u], e + 3u < P.k));
        XN[i] = g * (xload(base, i) * inv);
    }
#else
    for (var i = lid; i < K4; i += 64u) {
        XN[i] = xload(base, i);
    }
#endif
    workgroupBarrier();
#ifdef W_Q4_1
    for (var b = lid; b < K4 / 8u; b += 64u) {
        let v = XN[8u * b] + XN[8u * b + 1u] + XN[8u * b + 2u] + XN[8u * b + 3u]
              + XN[8u * b + 4u] + XN[8u * b + 5u] + XN[8u * b + 6u] + XN[8u * b + 7u];
        XS[b] = v.x + v.y + v.z + v.w;
    }
    workgroupBarrier();
#endif
}
#endif

// Elements of X between two rows' starts: floats with KTAIL, else vec4.
fn x_stride() -> u32 {
#ifdef KTAIL
    return P.k;
#else
    return P.k / 4u;
#endif
}

// Chunk c4 (elements 4c4 .. 4c4+3) of the X row starting at `off` (in
// x_stride units); KTAIL: elements past K read as 0.
fn xload(off: u32, c4: u32) -> vec4<f32> {
#ifdef KTAIL
    let i = off + 4u * c4;
    let r = P.k - 4u * c4;
    return vec4<f32>(X[i], select(0.0, X[i + 1u], r > 1u), select(0.0, X[i + 2u], r > 2u), select(0.0, X[i + 3u], r > 3u));
#else
    return X[off + c4];
#endif
}

// Chunk c4 of the x row at `off` (XSTAGE: the staged row, off = 0).
fn xc(off: u32, c4: u32) -> vec4<f32> {
#ifdef XSTAGE
    return XN[off + c4];
#else
    return xload(off, c4);
#endif
}

#ifdef BLOCKS
// x chunk i (vec4 index into X; with NORM into the normalised row XN).
fn xat(i: u32) -> vec4<f32> {
#ifdef XSTAGE
    return XN[i];
#else
    return X[i];
#endif
}
#endif

// GLU: W holds W_gate then W_up (n rows each); the output is
// silu(x @ Wg.T) * (x @ Wu.T), the SwiGLU gate, in one dispatch.

#include wdecode

#ifdef XSTAGE
#ifdef W_Q4_1
#include q41x
#endif
#endif

#ifdef BLOCKS
// One decoded block (lib/wdecode) · x chunks xb .. xb+7.
fn bdot(w: WBlock, xb: u32) -> f32 {
    let a = dot(w.v0, xat(xb)) + dot(w.v1, xat(xb + 1u)) + dot(w.v2, xat(xb + 2u)) + dot(w.v3, xat(xb + 3u));
    let b = dot(w.v4, xat(xb + 4u)) + dot(w.v5, xat(xb + 5u)) + dot(w.v6, xat(xb + 6u)) + dot(w.v7, xat(xb + 7u));
    return a + b;
}
#endif

// Accumulators are explicit vectors (no private arrays: lavapipe/LLVM keeps
// those in memory when indexed in loops). ACC holds tokens t0..t0+3, ACC2
// tokens t0+4..t0+7 (TT=8 only).
const TT: u32 = {{TT}}u;

fn store(tok: u32, n: u32, v: f32) {
#ifdef SPLIT3
    if (n < P.split1) {
        Y[tok * P.split1 + n] = v;
    } else if (n < P.split2) {
        Y2[tok * (P.split2 - P.split1) + n - P.split1] = v;
    } else {
        Y3[tok * (P.n - P.split2) + n - P.split2] = v;
    }
#else
    let o = tok * P.n + n;
#ifdef ACCUMULATE
    Y[o] = Y[o] + v;
#else
    Y[o] = v;
#endif
#endif
}

// The product for row n (GLU: the gated pair of rows n and n + P.n).
fn row_dot(n: u32, xr0: u32, last: u32, k4n: u32, start: u32, stride: u32) -> array<vec4<f32>, 2> {
#ifdef GLU
    let g = dot_rows(n * P.row_bytes, xr0, last, k4n, start, stride);
    let u = dot_rows((n + P.n) * P.row_bytes, xr0, last, k4n, start, stride);
    return array<vec4<f32>, 2>(g[0] / (vec4<f32>(1.0) + exp(-g[0])) * u[0], g[1] / (vec4<f32>(1.0) + exp(-g[1])) * u[1]);
#else
    return dot_rows(n * P.row_bytes, xr0, last, k4n, start, stride);
#endif
}

fn store_all(t0: u32, n_tok: u32, n: u32, a: vec4<f32>, b: vec4<f32>) {
    for (var t = 0u; t < TT; t++) {
        if (t0 + t < n_tok) {
            var v: f32;
            if (t < 4u) {
                v = a[t];
            } else {
                v = b[t - 4u];
            }
            store(t0 + t, n, v);
        }
    }
}

// Row `rb` (byte offset) · the TT token rows starting at x row `xr0`, over
// 4-wide chunks k4 = start, start + stride, … < k4n = ceil(K / 4)
fn dot_rows(rb: u32, xr0: u32, last: u32, k4n: u32, start: u32, stride: u32) -> array<vec4<f32>, 2> {
    var a = vec4<f32>(0.0);
    var b = vec4<f32>(0.0);
    // Row offsets of the token rows (clamped to the last valid one).
    let xs = x_stride();
    let x0 = min(xr0, last) * xs;
#ifndef TT1
    let x1 = min(xr0 + 1u, last) * xs;
    let x2 = min(xr0 + 2u, last) * xs;
    let x3 = min(xr0 + 3u, last) * xs;
#endif
#ifdef TT8
    let x4 = min(xr0 + 4u, last) * xs;
    let x5 = min(xr0 + 5u, last) * xs;
    let x6 = min(xr0 + 6u, last) * xs;
    let x7 = min(xr0 + 7u, last) * xs;
#endif
#ifdef BLOCKS
    // Whole 32-weight blocks (scale decoded once per block), then the tail.
    let nb = k4n / 8u;
    for (var blk = start; blk < nb; blk += stride) {
#ifdef Q41X
        a.x += q41_dot(rb, blk);
#else
        let w = wblock(rb, blk);
        let xb = blk * 8u;
#ifdef TT1
        a.x += bdot(w, x0 + xb);
#else
        a += vec4<f32>(bdot(w, x0 + xb), bdot(w, x1 + xb), bdot(w, x2 + xb), bdot(w, x3 + xb));
#endif
#ifdef TT8
        b += vec4<f32>(bdot(w, x4 + xb), bdot(w, x5 + xb), bdot(w, x6 + xb), bdot(w, x7 + xb));
#endif
#endif
    }
    let k4_0 = nb * 8u + start;
#else
    let k4_0 = start;
#endif
    for (var k4 = k4_0; k4 < k4n; k4 += stride) {
        let w = wk(rb, k4, P.k);
#ifdef TT1
        a.x += dot(w, xc(x0, k4));
#else
        a += vec4<f32>(dot(w, xc(x0, k4)), dot(w, xc(x1, k4)), dot(w, xc(x2, k4)), dot(w, xc(x3, k4)));
#endif
#ifdef TT8
        b += vec4<f32>(dot(w, xc(x4, k4)), dot(w, xc(x5, k4)), dot(w, xc(x6, k4)), dot(w, xc(x7, k4)));
#endif
    }
    return array<vec4<f32>, 2>(a, b);
}

#ifdef SG
// Rows per workgroup: the host picks 64 / subgroup size, so that each
// subgroup takes one row (a subgroup of another size loops or idles).
const RPW: u32 = {{RPW}}u;

@compute @workgroup_size(64)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_size) sg_size: u32,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    var n_tok = S.n_tokens;
    var x_row0 = 0u;
    if (P.out_rows_only == 1u) {
        n_tok = S.n_out_rows;
        x_row0 = S.out_row0;
    }
    let t0 = wid.y * TT;
    if (t0 >= n_tok) {
        return;
    }
    let k4n = (P.k + 3u) / 4u;
#ifdef XSTAGE
    // x comes from XN (workgroup memory), staged (normalised) here.
    stage_row(x_row0 + t0, lid, sg_size, lane);
    let xr = 0u;
    let xl = 0u;
#else
    let xr = x_row0 + t0;
    let xl = x_row0 + n_tok - 1u;
#endif
    let sg_id = lid / sg_size;
    let n_sg = (64u + sg_size - 1u) / sg_size;
    for (var r = sg_id; r < RPW; r += n_sg) {
        let n = wid.x * RPW + r;
        // Subgroup-uniform: the whole subgroup skips rows past the end.
        if (n >= P.n) {
            break;
        }
#ifdef GLU
        // The gate needs the full sums before SiLU: reduce both halves first.
        let g = dot_rows(n * P.row_bytes, xr, xl, k4n, lane, sg_size);
        let u = dot_rows((n + P.n) * P.row_bytes, xr, xl, k4n, lane, sg_size);
        let g0 = subgroupAdd(g[0]);
        let g1 = subgroupAdd(g[1]);
        let a = g0 / (vec4<f32>(1.0) + exp(-g0)) * subgroupAdd(u[0]);
        let b = g1 / (vec4<f32>(1.0) + exp(-g1)) * subgroupAdd(u[1]);
#else
        let ab = dot_rows(n * P.row_bytes, xr, xl, k4n, lane, sg_size);
        let a = subgroupAdd(ab[0]);
        let b = subgroupAdd(ab[1]);
#endif
        if (lane == 0u) {
            store_all(t0, n_tok, n, a, b);
        }
    }
}
#else
@compute @workgroup_size(64)
fn main(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    var n_tok = S.n_tokens;
    var x_row0 = 0u;
    if (P.out_rows_only == 1u) {
        n_tok = S.n_out_rows;
        x_row0 = S.out_row0;
    }
    let n = gid.x;
    let t0 = wid.y * TT;
    if (t0 >= n_tok) {
        return;
    }
#ifdef XSTAGE
    stage_row(x_row0 + t0, lid, 1u, 0u);
    let xr = 0u;
    let xl = 0u;
#else
    let xr = x_row0 + t0;
    let xl = x_row0 + n_tok - 1u;
#endif
    if (n >= P.n) {
        return;
    }
    let ab = row_dot(n, xr, xl, (P.k + 3u) / 4u, 0u, 1u);
    store_all(t0, n_tok, n, ab[0], ab[1]);
}
#endif
