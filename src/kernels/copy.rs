//! A plain bandwidth kernel (`shaders/copy.wgsl`): `dst[i] = src[i]` over
//! `vec4<f32>`, grid-stride, for buffers up to the adapter's storage-binding
//! limit (typically 64–256 MiB). Also an `empty` entry point with the same
//! bindings that does no work, to measure the cost of a dispatch by itself.
//! Neither is used by the engine: they calibrate the cost model
//! (`src/bench/calibrate.rs`) and the benches.

use super::{KernelClass, KernelOp, Step};
use crate::gpu::{Gpu, GpuError, Shader, ShaderVariant};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    /// `vec4<f32>` elements to copy.
    pub n_vec4: u32,
    pub _pad: [u32; 3],
}

/// Threads per workgroup of `main`.
pub const WG: u32 = 256;
/// Default cap on workgroups: 4096 × 256 threads, each copying every
/// 1 Mi-th vec4 (16 loop iterations for 256 MiB).
pub const MAX_GROUPS: u32 = 4096;
/// Largest copy [`max_bytes`] suggests.
pub const MAX_COPY_BYTES: u64 = 256 << 20;

pub fn variant() -> ShaderVariant {
    ShaderVariant::new("main")
}

pub fn empty_variant() -> ShaderVariant {
    ShaderVariant::new("empty")
}

/// Both entry points, for the GPU-free naga check (`kernels::all_variants`).
pub fn variants() -> Vec<(Shader, ShaderVariant)> {
    vec![(Shader::Copy, variant()), (Shader::Copy, empty_variant())]
}

/// The largest copy (bytes, a multiple of 16) one binding allows on this
/// device, capped at [`MAX_COPY_BYTES`]. Buffers made by
/// [`Gpu::storage_buffer`] of this size are always accepted.
pub fn max_bytes(gpu: &Gpu) -> u64 {
    let limit = gpu
        .limits
        .max_storage_buffer_binding_size
        .min(gpu.limits.max_buffer_size);
    limit.min(MAX_COPY_BYTES) / 16 * 16
}

/// Workgroups for `n_vec4` elements: one lane per element up to `max_groups`
/// workgroups, grid-stride beyond.
pub fn groups_for(n_vec4: u32, max_groups: u32) -> u32 {
    n_vec4.div_ceil(WG).clamp(1, max_groups.max(1))
}

fn check_sizes(
    name: &str,
    src: &wgpu::Buffer,
    dst: &wgpu::Buffer,
    bytes: u64,
) -> Result<u32, GpuError> {
    if !bytes.is_multiple_of(16) {
        return Err(GpuError::Device(format!(
            "copy `{name}`: {bytes} bytes is not a whole number of vec4<f32> (16 bytes)"
        )));
    }
    if bytes > src.size() || bytes > dst.size() {
        return Err(GpuError::Device(format!(
            "copy `{name}`: {bytes} bytes but src has {} and dst {}",
            src.size(),
            dst.size()
        )));
    }
    u32::try_from(bytes / 16).map_err(|_| GpuError::BufferTooLarge {
        what: name.into(),
        size: bytes,
        limit: u32::MAX as u64 * 16,
    })
}

/// Copies the first `bytes` (a multiple of 16) of `src` into `dst`, with up to
/// [`MAX_GROUPS`] workgroups. The dispatch is empty when `Step::n_tokens == 0`.
pub fn build(
    gpu: &Gpu,
    step: &wgpu::Buffer,
    name: &str,
    src: &wgpu::Buffer,
    dst: &wgpu::Buffer,
    bytes: u64,
) -> Result<KernelOp, GpuError> {
    build_with_groups(gpu, step, name, src, dst, bytes, MAX_GROUPS)
}

/// [`build`] with an explicit cap on workgroups (also capped by the device's
/// `max_compute_workgroups_per_dimension`).
pub fn build_with_groups(
    gpu: &Gpu,
    step: &wgpu::Buffer,
    name: &str,
    src: &wgpu::Buffer,
    dst: &wgpu::Buffer,
    bytes: u64,
    max_groups: u32,
) -> Result<KernelOp, GpuError> {
    let n_vec4 = check_sizes(name, src, dst, bytes)?;
    let params = gpu.uniform(
        "copy.params",
        &Params {
            n_vec4,
            _pad: [0; 3],
        },
    );
    let pipe = gpu.pipeline(Shader::Copy, &variant())?;
    let cap = max_groups.min(gpu.limits.max_compute_workgroups_per_dimension);
    let groups = groups_for(n_vec4, cap);
    Ok(KernelOp::new(
        gpu,
        name,
        KernelClass::Elementwise,
        pipe,
        &[&params, step, src, dst],
        move |s: &Step| {
            if s.n_tokens == 0 || n_vec4 == 0 {
                [0, 0, 0]
            } else {
                [groups, 1, 1]
            }
        },
    ))
}

/// The `empty` entry point: one workgroup of 64 threads that writes nothing
/// (same bindings as the copy; `src`/`dst` may be tiny).
pub fn build_empty(
    gpu: &Gpu,
    step: &wgpu::Buffer,
    name: &str,
    src: &wgpu::Buffer,
    dst: &wgpu::Buffer,
) -> Result<KernelOp, GpuError> {
    let n_vec4 = (src.size().min(dst.size()) / 16).min(u32::MAX as u64) as u32;
    let params = gpu.uniform(
        "copy.params",
        &Params {
            n_vec4,
            _pad: [0; 3],
        },
    );
    let pipe = gpu.pipeline(Shader::Copy, &empty_variant())?;
    Ok(KernelOp::new(
        gpu,
        name,
        KernelClass::Elementwise,
        pipe,
        &[&params, step, src, dst],
        |s: &Step| {
            if s.n_tokens == 0 {
                [0, 0, 0]
            } else {
                [1, 1, 1]
            }
        },
    ))
}

/// CPU reference: the first `n` floats of `src`.
pub fn cpu(src: &[f32], n: usize) -> Vec<f32> {
    src[..n].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    const ONE: Step = Step::tokens(1, 0);

    /// Copies `n_vec4` vec4s with at most `max_groups` workgroups; the rest of
    /// `dst` must keep its old contents.
    fn check(n_vec4: usize, max_groups: u32) {
        let Some(gpu) = gpu() else { return };
        let total = n_vec4 * 4 + 12;
        let src = seeded(total, 7);
        let old = seeded(total, 8);
        let sb = gpu.upload("src", bytemuck::cast_slice(&src)).unwrap();
        let db = gpu.upload("dst", bytemuck::cast_slice(&old)).unwrap();
        let step_buf = gpu.uniform("step", &Step::default());
        let op = build_with_groups(
            &gpu,
            &step_buf,
            "copy",
            &sb,
            &db,
            (n_vec4 * 16) as u64,
            max_groups,
        )
        .unwrap();
        run(&gpu, &step_buf, ONE, &[&op]);
        let got = read_f32(&gpu, &db, total);
        let mut want = cpu(&src, n_vec4 * 4);
        want.extend_from_slice(&old[n_vec4 * 4..]);
        assert_eq!(got, want, "copy of {n_vec4} vec4 with ≤{max_groups} groups");
    }

    #[test]
    fn copy_one_lane_per_element() {
        check(1, MAX_GROUPS);
        check(WG as usize * 3 + 5, MAX_GROUPS);
    }

    #[test]
    fn copy_grid_stride() {
        // 2 workgroups of 256 lanes over 5000 vec4s: ~10 iterations a lane.
        check(5000, 2);
        check(WG as usize * 4, 1);
    }

    #[test]
    fn copy_of_a_megabyte_with_default_grid() {
        check((1 << 20) / 16, MAX_GROUPS);
    }

    #[test]
    fn empty_kernel_writes_nothing_and_step_zero_copies_nothing() {
        let Some(gpu) = gpu() else { return };
        let src = seeded(256, 1);
        let old = seeded(256, 2);
        let sb = gpu.upload("src", bytemuck::cast_slice(&src)).unwrap();
        let db = gpu.upload("dst", bytemuck::cast_slice(&old)).unwrap();
        let step_buf = gpu.uniform("step", &Step::default());
        let empty = build_empty(&gpu, &step_buf, "empty", &sb, &db).unwrap();
        let copy = build(&gpu, &step_buf, "copy", &sb, &db, 256 * 4).unwrap();
        assert_eq!(empty.groups(&ONE), [1, 1, 1]);
        run(&gpu, &step_buf, ONE, &[&empty, &empty, &empty]);
        assert_eq!(read_f32(&gpu, &db, 256), old);
        assert_eq!(copy.groups(&Step::default()), [0, 0, 0]);
        run(&gpu, &step_buf, Step::default(), &[&copy]);
        assert_eq!(read_f32(&gpu, &db, 256), old);
    }

    #[test]
    fn sizes_are_checked() {
        let Some(gpu) = gpu() else { return };
        let sb = gpu.storage_buffer("src", 64).unwrap();
        let db = gpu.storage_buffer("dst", 32).unwrap();
        let step_buf = gpu.uniform("step", &Step::default());
        assert!(build(&gpu, &step_buf, "c", &sb, &db, 20).is_err());
        assert!(build(&gpu, &step_buf, "c", &sb, &db, 64).is_err());
        assert!(build(&gpu, &step_buf, "c", &sb, &db, 32).is_ok());
        let m = max_bytes(&gpu);
        assert!(m > 0 && m.is_multiple_of(16) && m <= MAX_COPY_BYTES);
    }

    /// GPU-free: both entry points validate with naga and use no workgroup memory.
    #[test]
    fn variants_validate() {
        use crate::gpu::shader::{validate, workgroup_bytes};
        for (s, v) in variants() {
            let src = s.source(&v);
            validate(&src).unwrap_or_else(|e| panic!("copy:{}: {e}", v.entry));
            assert_eq!(workgroup_bytes(&src, &v).unwrap(), 0);
        }
    }

    #[test]
    fn groups_cover_the_buffer() {
        assert_eq!(groups_for(0, MAX_GROUPS), 1);
        assert_eq!(groups_for(1, MAX_GROUPS), 1);
        assert_eq!(groups_for(257, MAX_GROUPS), 2);
        assert_eq!(groups_for(u32::MAX, MAX_GROUPS), MAX_GROUPS);
        assert_eq!(groups_for(1000, 0), 1);
    }
}
