// Workgroup-wide max and sum of one f32 per thread (a tree over `red`; every
// thread gets the result, and `red` is free again when they return).
// Included by attention.wgsl, sram_step.wgsl, and with lib/rms by
// rmsnorm.wgsl and head_norm.wgsl. Expects `const WG` (threads, a power of
// two) and `var<workgroup> red: array<f32, WG>`. With SG (sram_step.wgsl
// on adapters with subgroups) each subgroup reduces in registers and only
// its total goes through `red`: two barriers instead of log2(WG) + 2 (a
// barrier is most of a small task's cost on lavapipe); then the including
// shader sets `var<private> SG_SIZE, SG_LANE: u32` from the subgroup
// builtins, and subgroup s is threads s * SG_SIZE .. (as matmul.wgsl's SG).

fn reduce_max(v: f32, lid: u32) -> f32 {
#ifdef SG
    let s = subgroupMax(v);
    if (SG_LANE == 0u) {
        red[lid / SG_SIZE] = s;
    }
    workgroupBarrier();
    var m = red[0];
    for (var i = 1u; i < WG / SG_SIZE; i++) {
        m = max(m, red[i]);
    }
    workgroupBarrier();
    return m;
#else
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
#endif
}

fn reduce_sum(v: f32, lid: u32) -> f32 {
#ifdef SG
    let s = subgroupAdd(v);
    if (SG_LANE == 0u) {
        red[lid / SG_SIZE] = s;
    }
    workgroupBarrier();
    var t = red[0];
    for (var i = 1u; i < WG / SG_SIZE; i++) {
        t += red[i];
    }
    workgroupBarrier();
    return t;
#else
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
#endif
}
