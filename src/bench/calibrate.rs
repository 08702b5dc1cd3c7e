//! Calibration of this adapter for the GPU cost model ([`crate::chip::GpuSpec`]):
//! memory bandwidth from a plain copy kernel, the cost of one dispatch, and
//! the submit + wait round trip.
//!
//! * **Bandwidth** (`copy_bytes_per_s`): the copy kernel (`shaders/copy.wgsl`)
//!   over the largest buffer one binding allows (≤ 256 MiB; ≤ 64 MiB on CPU
//!   adapters, to keep calibration short). Reported as **bytes read per
//!   second** (the copy also writes as many bytes, so the memory traffic is
//!   twice that: [`Calibration::copy_traffic_bytes_per_s`]), the unit of
//!   "weight bytes / bandwidth" in the cost model. Best of several runs.
//! * **Dispatch** (`dispatch_s`): N dispatches of an empty kernel (same
//!   bindings as the copy, so wgpu inserts the same barriers it does between
//!   real kernels) in one compute pass and one submission, timed for a small
//!   and a large N: `(t(N_large) − t(N_small)) / (N_large − N_small)`, best
//!   of several runs each. What this includes is the device-side cost of a
//!   dispatch plus wgpu's per-dispatch work at submit; the CPU recording of
//!   the pass is outside the timed region.
//! * **Submit + wait** (`submit_wait_s`): an empty command buffer submitted
//!   and waited for, wall clock, median of many.
//!
//! Bandwidth and dispatch runs use GPU timestamps (begin/end of the compute
//! pass) where the device has `TIMESTAMP_QUERY`, else the wall clock around
//! submit + `poll(Wait)`; either way the device is synchronised inside the
//! measurement.

use crate::chip::GpuSpec;
use crate::gpu::{Gpu, GpuError};
use crate::kernels::{copy, KernelOp, Step};
use std::time::{Duration, Instant};

/// This adapter's measured costs (see the module docs for what each means).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Calibration {
    /// Copy kernel: bytes READ per second (bytes written are as many again).
    pub copy_bytes_per_s: f64,
    /// One compute dispatch (with its barrier), seconds.
    pub dispatch_s: f64,
    /// Submit of an empty command buffer + wait for it, seconds.
    pub submit_wait_s: f64,
    /// [`Gpu::describe`] of the adapter measured.
    pub adapter: String,
}

impl Calibration {
    /// Memory traffic of the copy: bytes read plus bytes written per second.
    pub fn copy_traffic_bytes_per_s(&self) -> f64 {
        2.0 * self.copy_bytes_per_s
    }

    /// A [`GpuSpec`] from these numbers (compute rate given: it is not
    /// calibrated here).
    pub fn gpu_spec(&self, name: &str, flops_fp16: f64) -> GpuSpec {
        GpuSpec::measured(
            name,
            self.copy_bytes_per_s,
            flops_fp16,
            self.dispatch_s,
            self.submit_wait_s,
        )
    }
}

/// Sizes and repetitions; [`CalibrateOptions::for_gpu`] picks them.
#[derive(Clone, Debug)]
pub struct CalibrateOptions {
    /// Bytes copied per copy dispatch (multiple of 16).
    pub copy_bytes: u64,
    /// Timed runs per measurement (the best is kept).
    pub runs: usize,
    /// Aim for at least this long per timed copy run (more copies per pass).
    pub copy_run_target: Duration,
    /// Dispatch counts for the difference.
    pub dispatch_small: u32,
    pub dispatch_large_max: u32,
    /// Aim for about this long at the large dispatch count.
    pub dispatch_run_target: Duration,
    /// Round trips timed for submit + wait (the median is kept).
    pub submits: usize,
}

impl CalibrateOptions {
    /// Defaults for `gpu`: the largest copy a binding allows (≤ 256 MiB), or
    /// ≤ 64 MiB on CPU adapters (lavapipe), so calibration stays within a few
    /// seconds there.
    pub fn for_gpu(gpu: &Gpu) -> Self {
        let cpu = gpu.info.device_type == wgpu::DeviceType::Cpu;
        let mut copy_bytes = copy::max_bytes(gpu);
        if cpu {
            copy_bytes = copy_bytes.min(64 << 20);
        }
        CalibrateOptions {
            copy_bytes,
            runs: 5,
            copy_run_target: Duration::from_millis(if cpu { 1 } else { 20 }),
            dispatch_small: 8,
            dispatch_large_max: 8192,
            dispatch_run_target: Duration::from_millis(if cpu { 60 } else { 20 }),
            submits: 40,
        }
    }
}

/// Times one compute pass: GPU timestamps where the device has them, else the
/// wall clock around submit + wait.
pub struct PassTimer<'g> {
    gpu: &'g Gpu,
    ts: Option<Timestamps>,
}

struct Timestamps {
    set: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    readback: wgpu::Buffer,
    period_ns: f64,
}

impl<'g> PassTimer<'g> {
    pub fn new(gpu: &'g Gpu) -> Self {
        let ts = gpu.level.timestamps.then(|| {
            let set = gpu.device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("calibrate.ts"),
                ty: wgpu::QueryType::Timestamp,
                count: 2,
            });
            let resolve = gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("calibrate.ts.resolve"),
                size: 16,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            Timestamps {
                set,
                resolve,
                readback: gpu.readback_buffer("calibrate.ts.readback", 16),
                period_ns: gpu.queue.get_timestamp_period() as f64,
            }
        });
        PassTimer { gpu, ts }
    }

    /// True when passes are timed with GPU timestamps.
    pub fn gpu_timestamps(&self) -> bool {
        self.ts.is_some()
    }

    /// Records `ops` (each `reps` times, in order) into one compute pass with
    /// `step`, submits it, waits for it; returns seconds.
    pub fn time(&self, step: &Step, ops: &[&KernelOp], reps: u32) -> Result<f64, GpuError> {
        let gpu = self.gpu;
        let mut enc = gpu.device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("calibrate"),
                timestamp_writes: self.ts.as_ref().map(|t| wgpu::ComputePassTimestampWrites {
                    query_set: &t.set,
                    beginning_of_pass_write_index: Some(0),
                    end_of_pass_write_index: Some(1),
                }),
            });
            for _ in 0..reps {
                for op in ops {
                    op.record(&mut pass, step);
                }
            }
        }
        if let Some(t) = &self.ts {
            enc.resolve_query_set(&t.set, 0..2, &t.resolve, 0);
            enc.copy_buffer_to_buffer(&t.resolve, 0, &t.readback, 0, 16);
        }
        let cmd = enc.finish();
        let t0 = Instant::now();
        gpu.queue.submit([cmd]);
        wait(gpu)?;
        let wall = t0.elapsed().as_secs_f64();
        if let Some(t) = &self.ts {
            let bytes = gpu.read(&t.readback, 16)?;
            let v: &[u64] = bytemuck::cast_slice(&bytes);
            let dt = v[1].wrapping_sub(v[0]) as f64 * t.period_ns * 1e-9;
            // A timestamp pair that is out of order or longer than the wall
            // clock (some drivers) is not trusted.
            if dt.is_finite() && dt > 0.0 && v[1] > v[0] && dt <= wall * 1.05 + 1e-4 {
                return Ok(dt);
            }
        }
        Ok(wall)
    }
}

fn wait(gpu: &Gpu) -> Result<(), GpuError> {
    gpu.device
        .poll(wgpu::PollType::wait_indefinitely())
        .map(|_| ())
        .map_err(|e| GpuError::Device(e.to_string()))
}

const ONE: Step = Step::tokens(1, 0);

fn best_of(runs: usize, mut f: impl FnMut() -> Result<f64, GpuError>) -> Result<f64, GpuError> {
    let mut best = f64::INFINITY;
    for _ in 0..runs.max(1) {
        best = best.min(f()?);
    }
    Ok(best)
}

/// Calibrates `gpu` with [`CalibrateOptions::for_gpu`] (about 1–3 s on lavapipe).
pub fn calibrate(gpu: &Gpu) -> Result<Calibration, GpuError> {
    calibrate_with(gpu, &CalibrateOptions::for_gpu(gpu))
}

pub fn calibrate_with(gpu: &Gpu, o: &CalibrateOptions) -> Result<Calibration, GpuError> {
    let timer = PassTimer::new(gpu);
    let step_buf = gpu.uniform("calibrate.step", &ONE);
    Ok(Calibration {
        copy_bytes_per_s: copy_bandwidth(gpu, &timer, &step_buf, o)?,
        dispatch_s: dispatch_cost(gpu, &timer, &step_buf, o)?,
        submit_wait_s: submit_wait(gpu, o)?,
        adapter: gpu.describe(),
    })
}

/// Bytes read per second by the copy kernel (best run).
pub fn copy_bandwidth(
    gpu: &Gpu,
    timer: &PassTimer,
    step_buf: &wgpu::Buffer,
    o: &CalibrateOptions,
) -> Result<f64, GpuError> {
    let bytes = o.copy_bytes.max(16) / 16 * 16;
    let src = gpu.storage_buffer("calibrate.src", bytes)?;
    let dst = gpu.storage_buffer("calibrate.dst", bytes)?;
    let op = copy::build(gpu, step_buf, "calibrate.copy", &src, &dst, bytes)?;
    // Warm-up (first touch, lazy zero-init), then one copy to size the runs.
    timer.time(&ONE, &[&op], 1)?;
    let one = timer.time(&ONE, &[&op], 1)?;
    let reps = (o.copy_run_target.as_secs_f64() / one.max(1e-9))
        .ceil()
        .clamp(1.0, 64.0) as u32;
    let best = best_of(o.runs, || timer.time(&ONE, &[&op], reps))?.min(one * reps as f64);
    Ok(bytes as f64 * reps as f64 / best)
}

/// Seconds per dispatch of an empty kernel (difference of two counts).
pub fn dispatch_cost(
    gpu: &Gpu,
    timer: &PassTimer,
    step_buf: &wgpu::Buffer,
    o: &CalibrateOptions,
) -> Result<f64, GpuError> {
    let src = gpu.storage_buffer("calibrate.empty.src", 256)?;
    let dst = gpu.storage_buffer("calibrate.empty.dst", 256)?;
    let op = copy::build_empty(gpu, step_buf, "calibrate.empty", &src, &dst)?;
    let small = o.dispatch_small.max(1);
    timer.time(&ONE, &[&op], small)?;
    // Size the large count from a probe so it takes about the target time.
    let probe_n = (small * 16).min(o.dispatch_large_max.max(small + 1));
    let probe = timer.time(&ONE, &[&op], probe_n)?;
    let per = (probe / probe_n as f64).max(1e-9);
    let large = ((o.dispatch_run_target.as_secs_f64() / per) as u32)
        .clamp(probe_n, o.dispatch_large_max.max(small + 1))
        .max(small + 1);
    let t_small = best_of(o.runs, || timer.time(&ONE, &[&op], small))?;
    let t_large = best_of(o.runs, || timer.time(&ONE, &[&op], large))?;
    let d = (t_large - t_small) / (large - small) as f64;
    // Noise can make the difference vanish; the average is an upper bound.
    Ok(if d.is_finite() && d > 0.0 {
        d
    } else {
        t_large / large as f64
    })
}

/// Median wall-clock round trip of an empty submission.
pub fn submit_wait(gpu: &Gpu, o: &CalibrateOptions) -> Result<f64, GpuError> {
    let once = || -> Result<f64, GpuError> {
        let enc = gpu.device.create_command_encoder(&Default::default());
        let cmd = enc.finish();
        let t0 = Instant::now();
        gpu.queue.submit([cmd]);
        wait(gpu)?;
        Ok(t0.elapsed().as_secs_f64())
    };
    for _ in 0..3 {
        once()?;
    }
    let mut v = (0..o.submits.max(1))
        .map(|_| once())
        .collect::<Result<Vec<f64>, _>>()?;
    v.sort_by(|a, b| a.total_cmp(b));
    Ok(v[v.len() / 2])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::gpu;

    #[test]
    fn calibration_numbers_are_positive_and_finite() {
        let Some(gpu) = gpu() else { return };
        let t0 = Instant::now();
        let c = calibrate(&gpu).unwrap();
        let took = t0.elapsed();
        eprintln!(
            "calibration ({:.2} s, {}): copy {:.2} GB/s read ({:.2} GB/s traffic), dispatch {:.2} µs, submit+wait {:.1} µs",
            took.as_secs_f64(),
            if gpu.level.timestamps { "GPU timestamps" } else { "wall clock" },
            c.copy_bytes_per_s / 1e9,
            c.copy_traffic_bytes_per_s() / 1e9,
            c.dispatch_s * 1e6,
            c.submit_wait_s * 1e6
        );
        for (what, v) in [
            ("copy_bytes_per_s", c.copy_bytes_per_s),
            ("dispatch_s", c.dispatch_s),
            ("submit_wait_s", c.submit_wait_s),
        ] {
            assert!(v.is_finite() && v > 0.0, "{what} = {v}");
        }
        assert!(c.dispatch_s < 1.0 && c.submit_wait_s < 1.0);
        assert!(!c.adapter.is_empty());
        let g = c.gpu_spec("this", 1e12);
        assert_eq!(g.mem_bandwidth, c.copy_bytes_per_s);
    }

    #[test]
    fn small_calibration_runs() {
        let Some(gpu) = gpu() else { return };
        let o = CalibrateOptions {
            copy_bytes: 1 << 20,
            runs: 2,
            copy_run_target: Duration::from_millis(1),
            dispatch_small: 2,
            dispatch_large_max: 64,
            dispatch_run_target: Duration::from_millis(1),
            submits: 3,
        };
        let c = calibrate_with(&gpu, &o).unwrap();
        assert!(c.copy_bytes_per_s > 0.0 && c.dispatch_s > 0.0 && c.submit_wait_s > 0.0);
    }
}
