// Workgroup-wide max and sum of one f32 per thread (a tree over `red`; every
// thread gets the result, and `red` is free again when they return).
// Included by attention.wgsl, sram_step.wgsl, and with lib/rms by
// rmsnorm.wgsl and head_norm.wgsl. Expects `const WG` (threads, a power of
// two) and `var<workgroup> red: array<f32, WG>`.

fn reduce_max(v: f32, lid: u32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            red[lid] = max(red[lid], red[lid + s]);
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

fn reduce_sum(v: f32, lid: u32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            red[lid] += red[lid + s];
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}
