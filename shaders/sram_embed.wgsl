// SRAM mode's embedding gather on one chip: the chip holds rows
// [row0, row1) of the table. A token whose id falls there gets its row; the
// first chip of the gather zeroes the others, later chips leave them (their
// rows came over the link from the chip before).
// PyTorch: x = embed_tokens(ids)        # [T, D], rows split across chips

struct Params {
    dim: u32,          // D
    row_bytes: u32,    // bytes of one embedding row in file encoding
    row0: u32,         // first row this chip holds
    row1: u32,         // one past its last row
    first: u32,        // 1: the first chip of the gather
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}
#include step

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<uniform> S: Step;
@group(0) @binding(2) var<storage, read> W: array<u32>;
@group(0) @binding(3) var<storage, read> ids: array<u32>;
@group(0) @binding(4) var<storage, read_write> X: array<f32>;

#include wdecode

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c4 = gid.x;
    let t = gid.y;
    if (t >= S.n_tokens || c4 * 4u >= P.dim) {
        return;
    }
    let id = ids[t];
    let n = min(4u, P.dim - c4 * 4u);
    if (id >= P.row0 && id < P.row1) {
        // Only rows this chip holds are read.
        let v = wk(id * P.row_bytes, c4, P.dim);
        for (var j = 0u; j < n; j++) {
            X[t * P.dim + c4 * 4u + j] = v[j];
        }
    } else if (P.first == 1u) {
        for (var j = 0u; j < n; j++) {
            X[t * P.dim + c4 * 4u + j] = 0.0;
        }
    }
}
