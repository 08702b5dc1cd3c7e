// A plain bandwidth kernel: dst[i] = src[i] over vec4<f32> (16 bytes a lane),
// grid-stride, so any number of workgroups covers a buffer of any size.
// Used to calibrate memory bandwidth (src/bench/calibrate.rs, benches/).
//
// `empty`: a kernel with the same bindings that does no work (its store is
// guarded by a condition a step never meets), to measure what one dispatch
// costs by itself.

struct Params {
    n_vec4: u32, // vec4<f32> elements to copy
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}
#include step

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<uniform> S: Step;
@group(0) @binding(2) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> dst: array<vec4<f32>>;

const WG: u32 = 256u;

@compute @workgroup_size(256)
fn main(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    if (S.n_tokens == 0u) {
        return;
    }
    let stride = nwg.x * WG;
    for (var i = gid.x; i < P.n_vec4; i += stride) {
        dst[i] = src[i];
    }
}

@compute @workgroup_size(64)
fn empty(@builtin(global_invocation_id) gid: vec3<u32>) {
    // Never true for a real step; keeps every binding in use so both entry
    // points share one bind group layout.
    if (S.n_tokens == 0xffffffffu && gid.x < P.n_vec4) {
        dst[gid.x] = src[gid.x];
    }
}
