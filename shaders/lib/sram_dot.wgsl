// Per-encoding helpers of the SRAM-step interpreter (shaders/sram_step.wgsl),
// included once per weight encoding next to lib/wdecode with a name suffix
// (`#include wdecode,sram_dot as _f32 with W_F32 KTAIL`), so one module holds
// every decoder the model needs and picks one at run time. W is the slice
// (workgroup memory); xload reads the activation row (zero past k).

// sum_k W[row at byte rb][k] * X[xb + k]: sram_matmul's inner loop.
fn row_dot(rb: u32, xb: u32, k: u32) -> f32 {
    var acc = 0.0;
    let k4n = (k + 3u) / 4u;
    for (var k4 = 0u; k4 < k4n; k4++) {
        acc += dot(wk(rb, k4, k), xload(xb, k4, k));
    }
    return acc;
}

// The row at byte rb (nb whole 32-weight blocks) · the staged x row XN: a
// quantized block's scale decoded once (lib/wdecode wblock; the VRAM
// matmul's BLOCKS path).
fn row_dot_staged(rb: u32, nb: u32) -> f32 {
    var acc = 0.0;
    for (var b = 0u; b < nb; b++) {
        let w = wblock(rb, b);
        let x = 8u * b;
        acc += dot(w.v0, XN[x]) + dot(w.v1, XN[x + 1u]) + dot(w.v2, XN[x + 2u]) + dot(w.v3, XN[x + 3u])
            + dot(w.v4, XN[x + 4u]) + dot(w.v5, XN[x + 5u]) + dot(w.v6, XN[x + 6u]) + dot(w.v7, XN[x + 7u]);
    }
    return acc;
}

// Weights 4c4 .. 4c4+3 of the row at byte rb (zero past len).
fn chunk(rb: u32, c4: u32, len: u32) -> vec4<f32> {
    return wk(rb, c4, len);
}
