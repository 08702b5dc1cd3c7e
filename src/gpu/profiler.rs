//! GPU time per kernel from timestamp queries (where the adapter has them).
//!
//! When profiling, an executor records each dispatch in its own compute pass
//! with begin/end timestamps; [`Profiler::collect`] reads them back and adds
//! the durations up per kernel class. Profiling changes the pass structure, so
//! it is only switched on for measurements (`sramlm bench`), never by default.

use super::{Gpu, GpuError};
use crate::kernels::KernelClass;
use std::collections::BTreeMap;

/// Most dispatches timed per submission (two queries each).
pub const MAX_TIMED: u32 = wgpu::QUERY_SET_MAX_QUERIES / 2;

pub struct Profiler {
    set: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    readback: wgpu::Buffer,
    period_ns: f64,
    pending: Vec<KernelClass>,
    /// Total GPU nanoseconds and dispatch count per class.
    pub by_class: BTreeMap<KernelClass, (f64, u64)>,
}

impl Profiler {
    /// `None` when the device lacks `TIMESTAMP_QUERY`.
    pub fn new(gpu: &Gpu) -> Option<Self> {
        if !gpu.level.timestamps {
            return None;
        }
        let n = MAX_TIMED * 2;
        let set = gpu.device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("profiler"),
            ty: wgpu::QueryType::Timestamp,
            count: n,
        });
        let size = n as u64 * 8;
        let resolve = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("profiler.resolve"),
            size,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let readback = gpu.readback_buffer("profiler.readback", size);
        Some(Profiler {
            set,
            resolve,
            readback,
            period_ns: gpu.queue.get_timestamp_period() as f64,
            pending: Vec::new(),
            by_class: BTreeMap::new(),
        })
    }

    /// Timestamp writes for the next dispatch of `class`, or `None` when full.
    pub fn next(&mut self, class: KernelClass) -> Option<wgpu::ComputePassTimestampWrites<'_>> {
        let i = self.pending.len() as u32;
        if i >= MAX_TIMED {
            return None;
        }
        self.pending.push(class);
        Some(wgpu::ComputePassTimestampWrites {
            query_set: &self.set,
            beginning_of_pass_write_index: Some(2 * i),
            end_of_pass_write_index: Some(2 * i + 1),
        })
    }

    /// Adds the resolve and copy commands for this submission's timestamps.
    pub fn resolve(&self, enc: &mut wgpu::CommandEncoder) {
        let n = self.pending.len() as u32 * 2;
        if n > 0 {
            enc.resolve_query_set(&self.set, 0..n, &self.resolve, 0);
            enc.copy_buffer_to_buffer(&self.resolve, 0, &self.readback, 0, n as u64 * 8);
        }
    }

    /// After the submission: reads the timestamps and accumulates them.
    pub fn collect(&mut self, gpu: &Gpu) -> Result<(), GpuError> {
        let n = self.pending.len();
        if n == 0 {
            return Ok(());
        }
        let bytes = gpu.read(&self.readback, n as u64 * 16)?;
        let ts: &[u64] = bytemuck::cast_slice(&bytes);
        for (i, class) in self.pending.drain(..).enumerate() {
            let dt = ts[2 * i + 1].saturating_sub(ts[2 * i]) as f64 * self.period_ns;
            let e = self.by_class.entry(class).or_insert((0.0, 0));
            e.0 += dt;
            e.1 += 1;
        }
        Ok(())
    }

    pub fn reset(&mut self) {
        self.by_class.clear();
        self.pending.clear();
    }
}
