//! GPU access: adapter choice, device with the adapter's own limits, shader
//! sources with variants, and a pipeline cache.

pub mod litmus;
pub mod profiler;
pub mod shader;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub use shader::{Shader, ShaderVariant};

/// Everything that can go wrong talking to the GPU.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error("no GPU adapter found{0}")]
    NoAdapter(String),
    #[error("unknown backend `{0}` (expected auto, vulkan, gl, metal or dx12)")]
    UnknownBackend(String),
    #[error("cannot open a device on adapter `{adapter}`: {source}")]
    RequestDevice {
        adapter: String,
        source: wgpu::RequestDeviceError,
    },
    #[error("shader `{shader}` failed to compile: {message}")]
    Shader { shader: String, message: String },
    #[error(
        "kernel `{kernel}` needs {needed} bytes of workgroup memory but the adapter allows {limit}"
    )]
    WorkgroupMemory {
        kernel: String,
        needed: u64,
        limit: u32,
    },
    #[error("buffer of {size} bytes for `{what}` exceeds the adapter's limit of {limit} bytes")]
    BufferTooLarge { what: String, size: u64, limit: u64 },
    #[error("GPU error: {0}")]
    Device(String),
    #[error("{0}")]
    Options(String),
    #[error("mapping a readback buffer failed: {0}")]
    Map(String),
}

/// Which wgpu backend to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendChoice {
    #[default]
    Auto,
    Vulkan,
    Gl,
    Metal,
    Dx12,
}

impl BackendChoice {
    pub fn parse(s: &str) -> Result<Self, GpuError> {
        match s.to_ascii_lowercase().as_str() {
            "" | "auto" => Ok(BackendChoice::Auto),
            "vulkan" | "vk" => Ok(BackendChoice::Vulkan),
            "gl" | "gles" | "opengl" => Ok(BackendChoice::Gl),
            "metal" => Ok(BackendChoice::Metal),
            "dx12" | "d3d12" => Ok(BackendChoice::Dx12),
            other => Err(GpuError::UnknownBackend(other.to_string())),
        }
    }
    pub fn backends(self) -> wgpu::Backends {
        match self {
            BackendChoice::Auto => wgpu::Backends::all(),
            BackendChoice::Vulkan => wgpu::Backends::VULKAN,
            BackendChoice::Gl => wgpu::Backends::GL,
            BackendChoice::Metal => wgpu::Backends::METAL,
            BackendChoice::Dx12 => wgpu::Backends::DX12,
        }
    }
}

/// Optional GPU features sramlm can use. Every kernel also has a path without them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct FeatureLevel {
    pub shader_f16: bool,
    pub subgroups: bool,
    /// Use the subgroup matmul path (one subgroup per row). Off on CPU
    /// adapters (lavapipe), where a thread per row measured faster.
    pub subgroup_matmul: bool,
    pub timestamps: bool,
    /// `max_compute_workgroup_storage_size` requested from the device.
    pub workgroup_storage: u32,
    /// `@coherent` storage buffers (MEMORY_DECORATION_COHERENT): SRAM mode's
    /// interpreter hands data between workgroups of one dispatch through them.
    pub coherent: bool,
}

/// How to pick the adapter and what to ask of it.
#[derive(Clone, Debug, Default)]
pub struct GpuOptions {
    pub backend: BackendChoice,
    /// Case-insensitive substring of the adapter name.
    pub adapter: Option<String>,
    /// Force the lowest feature level: no f16, no subgroups, the WebGPU default
    /// 16 KiB of workgroup storage (tests use this to cover the plain path).
    pub downlevel: bool,
    /// Matmul path: `None` picks by adapter (thread per row on CPU adapters,
    /// a subgroup per row elsewhere); `SRAMLM_MATMUL=plain|subgroup` sets it.
    pub subgroup_matmul: Option<bool>,
}

impl GpuOptions {
    /// Options from `SRAMLM_BACKEND`, `SRAMLM_ADAPTER` and `SRAMLM_DOWNLEVEL`
    /// (the switch the test suite uses to choose an adapter).
    pub fn from_env() -> Result<Self, GpuError> {
        let backend = match std::env::var("SRAMLM_BACKEND") {
            Ok(s) => BackendChoice::parse(&s)?,
            Err(_) => BackendChoice::Auto,
        };
        let adapter = std::env::var("SRAMLM_ADAPTER")
            .ok()
            .filter(|s| !s.is_empty());
        let downlevel = std::env::var("SRAMLM_DOWNLEVEL").is_ok_and(|s| s == "1");
        let subgroup_matmul = match std::env::var("SRAMLM_MATMUL").as_deref() {
            Ok("plain") => Some(false),
            Ok("subgroup") => Some(true),
            Ok("") | Err(_) => None,
            Ok(other) => {
                return Err(GpuError::Options(format!(
                    "SRAMLM_MATMUL={other:?}: expected `plain` or `subgroup`"
                )))
            }
        };
        Ok(GpuOptions {
            backend,
            adapter,
            downlevel,
            subgroup_matmul,
        })
    }
}

/// One adapter as `sramlm info` shows it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct AdapterSummary {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub driver_info: String,
    pub max_workgroup_storage: u32,
    pub max_storage_buffer_binding: u64,
    pub max_buffer_size: u64,
    pub max_invocations_per_workgroup: u32,
    pub max_storage_buffers_per_stage: u32,
    pub shader_f16: bool,
    pub subgroups: bool,
    pub timestamps: bool,
    /// MEMORY_DECORATION_COHERENT (`@coherent` storage buffers).
    pub coherent: bool,
    pub subgroup_min_size: u32,
    pub subgroup_max_size: u32,
}

impl AdapterSummary {
    pub fn of(a: &wgpu::Adapter) -> Self {
        let info = a.get_info();
        let l = a.limits();
        let f = a.features();
        AdapterSummary {
            name: info.name.clone(),
            backend: format!("{:?}", info.backend),
            device_type: format!("{:?}", info.device_type),
            driver: info.driver.clone(),
            driver_info: info.driver_info.clone(),
            max_workgroup_storage: l.max_compute_workgroup_storage_size,
            max_storage_buffer_binding: l.max_storage_buffer_binding_size,
            max_buffer_size: l.max_buffer_size,
            max_invocations_per_workgroup: l.max_compute_invocations_per_workgroup,
            max_storage_buffers_per_stage: l.max_storage_buffers_per_shader_stage,
            shader_f16: f.contains(wgpu::Features::SHADER_F16),
            subgroups: f.contains(wgpu::Features::SUBGROUP),
            timestamps: f.contains(wgpu::Features::TIMESTAMP_QUERY),
            coherent: f.contains(wgpu::Features::MEMORY_DECORATION_COHERENT),
            subgroup_min_size: a.get_info().subgroup_min_size,
            subgroup_max_size: a.get_info().subgroup_max_size,
        }
    }
}

fn instance(backends: wgpu::Backends) -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = backends;
    wgpu::Instance::new(desc)
}

/// All adapters of the chosen backends, in preference order (best first).
pub fn list_adapters(opts: &GpuOptions) -> Vec<wgpu::Adapter> {
    let inst = instance(opts.backend.backends());
    let mut adapters = pollster::block_on(inst.enumerate_adapters(opts.backend.backends()));
    adapters.sort_by_key(|a| {
        let info = a.get_info();
        let ty = match info.device_type {
            wgpu::DeviceType::DiscreteGpu => 0,
            wgpu::DeviceType::IntegratedGpu => 1,
            wgpu::DeviceType::VirtualGpu => 2,
            wgpu::DeviceType::Cpu => 3,
            wgpu::DeviceType::Other => 4,
        };
        let be = match info.backend {
            wgpu::Backend::Vulkan | wgpu::Backend::Metal | wgpu::Backend::Dx12 => 0,
            _ => 1,
        };
        (ty, be)
    });
    adapters
}

/// The adapter sramlm would pick for these options.
pub fn pick_adapter(opts: &GpuOptions) -> Result<wgpu::Adapter, GpuError> {
    let all = list_adapters(opts);
    // "llvmpipe (Vulkan)": the same device shows once per backend.
    let names: Vec<String> = all
        .iter()
        .map(|a| {
            let i = a.get_info();
            format!("{} ({:?})", i.name, i.backend)
        })
        .collect();
    let found = match &opts.adapter {
        Some(want) => {
            let w = want.to_lowercase();
            all.into_iter()
                .find(|a| a.get_info().name.to_lowercase().contains(&w))
        }
        None => all.into_iter().next(),
    };
    found.ok_or_else(|| {
        let mut why = String::new();
        if opts.backend != BackendChoice::Auto {
            why.push_str(&format!(" for backend {:?}", opts.backend));
        }
        if let Some(a) = &opts.adapter {
            why.push_str(&format!(" matching `{a}`"));
        }
        if names.is_empty() {
            why.push_str(" (on Linux without a GPU install Mesa's lavapipe: `apt-get install mesa-vulkan-drivers`)");
        } else {
            why.push_str(&format!(" (available: {})", names.join(", ")));
        }
        GpuError::NoAdapter(why)
    })
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct PipelineKey {
    shader: &'static str,
    entry: &'static str,
    defines: Vec<String>,
    constants: Vec<(String, u64)>,
}

/// An open device plus the pipeline cache. Cheap to share behind an `Arc`.
pub struct Gpu {
    pub adapter: wgpu::Adapter,
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    pub level: FeatureLevel,
    pipelines: Mutex<HashMap<PipelineKey, Arc<wgpu::ComputePipeline>>>,
}

impl Gpu {
    pub fn new(opts: &GpuOptions) -> Result<Arc<Gpu>, GpuError> {
        let adapter = pick_adapter(opts)?;
        Self::with_adapter(adapter, opts.downlevel, opts.subgroup_matmul)
    }

    /// Opens a device with the adapter's own limits (the wgpu defaults cap
    /// workgroup memory at 16 KiB), or with the WebGPU defaults if `downlevel`.
    pub fn with_adapter(
        adapter: wgpu::Adapter,
        downlevel: bool,
        subgroup_matmul: Option<bool>,
    ) -> Result<Arc<Gpu>, GpuError> {
        let info = adapter.get_info();
        let have = adapter.features();
        let mut want = wgpu::Features::empty();
        if !downlevel {
            for f in [
                wgpu::Features::SHADER_F16,
                wgpu::Features::SUBGROUP,
                wgpu::Features::TIMESTAMP_QUERY,
            ] {
                if have.contains(f) {
                    want |= f;
                }
            }
        }
        if have.contains(wgpu::Features::MEMORY_DECORATION_COHERENT) {
            want |= wgpu::Features::MEMORY_DECORATION_COHERENT;
        }
        let limits = if downlevel {
            // WebGPU defaults, but never above what the adapter has.
            wgpu::Limits::default().using_resolution(adapter.limits())
        } else {
            adapter.limits()
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("sramlm"),
            required_features: want,
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|source| GpuError::RequestDevice {
            adapter: info.name.clone(),
            source,
        })?;
        let level = FeatureLevel {
            shader_f16: want.contains(wgpu::Features::SHADER_F16),
            subgroups: want.contains(wgpu::Features::SUBGROUP),
            subgroup_matmul: want.contains(wgpu::Features::SUBGROUP)
                && subgroup_matmul.unwrap_or(info.device_type != wgpu::DeviceType::Cpu),
            timestamps: want.contains(wgpu::Features::TIMESTAMP_QUERY),
            workgroup_storage: limits.max_compute_workgroup_storage_size,
            coherent: want.contains(wgpu::Features::MEMORY_DECORATION_COHERENT),
        };
        Ok(Arc::new(Gpu {
            adapter,
            device,
            queue,
            info,
            limits,
            level,
            pipelines: Mutex::new(HashMap::new()),
        }))
    }

    /// One line naming the adapter, for logs and test output.
    pub fn describe(&self) -> String {
        format!(
            "{} ({:?}, {:?}, driver {} {})",
            self.info.name,
            self.info.backend,
            self.info.device_type,
            self.info.driver,
            self.info.driver_info
        )
    }

    /// A compute pipeline for `shader` with `defines` (type/feature variants)
    /// and override `constants`, cached. Its workgroup-memory footprint is
    /// checked against the device limit first (wgpu does not reject an
    /// oversized workgroup array).
    pub fn pipeline(
        &self,
        shader: Shader,
        variant: &ShaderVariant,
    ) -> Result<Arc<wgpu::ComputePipeline>, GpuError> {
        let key = PipelineKey {
            shader: shader.name(),
            entry: variant.entry,
            defines: variant.defines.clone(),
            constants: variant
                .constants
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_bits()))
                .collect(),
        };
        if let Some(p) = self
            .pipelines
            .lock()
            .map_err(|e| GpuError::Device(e.to_string()))?
            .get(&key)
        {
            return Ok(p.clone());
        }
        let source = shader.source(variant);
        let needed =
            shader::workgroup_bytes(&source, variant).map_err(|message| GpuError::Shader {
                shader: shader.name().into(),
                message,
            })?;
        let limit = self.limits.max_compute_workgroup_storage_size;
        if needed > limit as u64 {
            return Err(GpuError::WorkgroupMemory {
                kernel: format!("{}:{}", shader.name(), variant.entry),
                needed,
                limit,
            });
        }
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = self
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(shader.name()),
                source: wgpu::ShaderSource::Wgsl(source.into()),
            });
        let constants: Vec<(&str, f64)> = variant.constants.iter().map(|(k, v)| (*k, *v)).collect();
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(shader.name()),
                layout: None,
                module: &module,
                entry_point: Some(variant.entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants: &constants,
                    // Every kernel writes its workgroup memory before reading it;
                    // zero-filling large arrays made GL compiles take minutes.
                    zero_initialize_workgroup_memory: false,
                },
                cache: None,
            });
        if let Some(err) = pollster::block_on(scope.pop()) {
            return Err(GpuError::Shader {
                shader: shader.name().into(),
                message: err.to_string(),
            });
        }
        let p = Arc::new(pipeline);
        self.pipelines
            .lock()
            .map_err(|e| GpuError::Device(e.to_string()))?
            .insert(key, p.clone());
        Ok(p)
    }

    pub fn storage_buffer(&self, label: &str, size: u64) -> Result<wgpu::Buffer, GpuError> {
        let size = size.max(4).div_ceil(4) * 4;
        let limit = self
            .limits
            .max_storage_buffer_binding_size
            .min(self.limits.max_buffer_size);
        if size > limit {
            return Err(GpuError::BufferTooLarge {
                what: label.into(),
                size,
                limit,
            });
        }
        Ok(self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_DST
                | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        }))
    }

    /// A storage buffer holding `bytes` (padded to a multiple of 4 plus one
    /// spare word, so kernels may read one word past an unaligned end).
    pub fn upload(&self, label: &str, bytes: &[u8]) -> Result<wgpu::Buffer, GpuError> {
        let size = (bytes.len() as u64).div_ceil(4) * 4 + 4;
        let buf = self.storage_buffer(label, size)?;
        let whole = bytes.len() / 4 * 4;
        if whole > 0 {
            self.queue.write_buffer(&buf, 0, &bytes[..whole]);
        }
        if whole < bytes.len() {
            let mut tail = [0u8; 4];
            tail[..bytes.len() - whole].copy_from_slice(&bytes[whole..]);
            self.queue.write_buffer(&buf, whole as u64, &tail);
        }
        Ok(buf)
    }

    pub fn uniform<T: bytemuck::Pod>(&self, label: &str, value: &T) -> wgpu::Buffer {
        let buf = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: (std::mem::size_of::<T>() as u64).max(16).div_ceil(16) * 16,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.queue.write_buffer(&buf, 0, bytemuck::bytes_of(value));
        buf
    }

    pub fn readback_buffer(&self, label: &str, size: u64) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: size.max(4).div_ceil(4) * 4,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    /// Waits for all submitted work, then maps `buf` and copies `len` bytes out.
    pub fn read(&self, buf: &wgpu::Buffer, len: u64) -> Result<Vec<u8>, GpuError> {
        self.read_after(buf, len, None)
    }

    /// [`Gpu::read`] that waits only for submission `after` (later
    /// submissions keep running), or for all work if `None`.
    pub fn read_after(
        &self,
        buf: &wgpu::Buffer,
        len: u64,
        after: Option<wgpu::SubmissionIndex>,
    ) -> Result<Vec<u8>, GpuError> {
        let len = len.div_ceil(4) * 4;
        let (tx, rx) = std::sync::mpsc::channel();
        buf.map_async(wgpu::MapMode::Read, 0..len, move |r| {
            let _ = tx.send(r);
        });
        self.device
            .poll(wgpu::PollType::Wait {
                submission_index: after,
                timeout: None,
            })
            .map_err(|e| GpuError::Device(e.to_string()))?;
        rx.recv()
            .map_err(|e| GpuError::Map(e.to_string()))?
            .map_err(|e| GpuError::Map(e.to_string()))?;
        let out = buf
            .get_mapped_range(0..len)
            .map_err(|e| GpuError::Map(e.to_string()))?
            .to_vec();
        buf.unmap();
        Ok(out)
    }

    /// Copies a storage buffer's first `len` bytes back to the CPU (tests, debugging).
    pub fn read_storage(&self, src: &wgpu::Buffer, len: u64) -> Result<Vec<u8>, GpuError> {
        let len4 = len.div_ceil(4) * 4;
        let rb = self.readback_buffer("read_storage", len4);
        let mut enc = self.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(src, 0, &rb, 0, len4);
        self.queue.submit([enc.finish()]);
        let mut v = self.read(&rb, len4)?;
        v.truncate(len as usize);
        Ok(v)
    }
}
