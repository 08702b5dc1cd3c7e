// A chip-to-chip link transfer: copies the first `cols` columns of `rows`
// rows of an activation buffer (row stride `stride`) into a link buffer (or
// back out of it), packed. Every byte moved here is counted as link traffic.

struct Params {
    cols: u32,
    src_stride: u32,
    dst_stride: u32,
    src_off: u32,
    dst_off: u32,
    out_rows: u32, // 1: the step's logit rows (S.n_out_rows) instead of its tokens
    _pad1: u32,
    _pad2: u32,
}
#include step

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<uniform> S: Step;
@group(0) @binding(2) var<storage, read> src: array<f32>;
@group(0) @binding(3) var<storage, read_write> dst: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    let t = gid.y;
    var n = S.n_tokens;
    if (P.out_rows == 1u) {
        n = S.n_out_rows;
    }
    if (t >= n || c >= P.cols) {
        return;
    }
    dst[P.dst_off + t * P.dst_stride + c] = src[P.src_off + t * P.src_stride + c];
}
