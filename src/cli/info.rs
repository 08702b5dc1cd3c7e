//! `sramlm info`: GPU adapters, their limits and features, and a model summary.

use super::{human_bytes, load_model, Format, GpuArgs};
use anyhow::Result;
use clap::Args;
use sramlm::gpu;
use sramlm::model::{self, Model};
use std::path::PathBuf;

#[derive(Args, Debug)]
pub(super) struct InfoArgs {
    /// Also summarise this model (folder or .gguf)
    #[arg(short, long)]
    pub(super) model: Option<PathBuf>,
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub(super) format: Format,
    /// Run the resident-mode litmus on the picked adapter (cached per
    /// adapter, driver and footprint; cached results are always shown)
    #[arg(long)]
    pub(super) litmus: bool,
    /// Workgroup footprint (bytes) the litmus probes: the SRAM slice
    #[arg(long, default_value_t = sramlm::chip::DEFAULT_SLICE_BYTES as u32)]
    pub(super) litmus_slice: u32,
    #[command(flatten)]
    pub(super) gpu: GpuArgs,
}

pub(super) fn run(a: InfoArgs) -> Result<()> {
    let opts = a.gpu.options()?;
    let adapters = gpu::list_adapters(&opts);
    let picked = gpu::pick_adapter(&opts).ok().map(|p| p.get_info());
    let summaries: Vec<_> = adapters.iter().map(gpu::AdapterSummary::of).collect();
    let is_picked = |s: &gpu::AdapterSummary| {
        picked
            .as_ref()
            .is_some_and(|p| p.name == s.name && format!("{:?}", p.backend) == s.backend)
    };
    let model = match &a.model {
        Some(p) => Some(load_model(Some(p))?),
        None => None,
    };
    let mut litmus_note = None;
    if a.litmus {
        let g = gpu::Gpu::new(&opts)?;
        let (_, src) = gpu::litmus::cached_or_measure(&g, a.litmus_slice)?;
        if let gpu::litmus::Source::Measured(Some(n)) = src {
            litmus_note = Some(n);
        }
    }
    let litmus = gpu::litmus::all_cached();
    if a.format == Format::Json {
        let list: Vec<_> = summaries
            .iter()
            .map(|s| {
                let mut v = serde_json::to_value(s).unwrap_or_default();
                v["picked"] = serde_json::json!(is_picked(s));
                v
            })
            .collect();
        let mut obj = serde_json::json!({ "adapters": list });
        if let Some(m) = &model {
            obj["model"] = model_json(m);
        }
        obj["litmus"] = match &litmus {
            Ok(l) => serde_json::to_value(l)?,
            Err(e) => serde_json::json!({ "error": e }),
        };
        if let Some(n) = &litmus_note {
            obj["litmus_note"] = serde_json::json!(n);
        }
        println!("{}", serde_json::to_string_pretty(&obj)?);
        return Ok(());
    }
    if summaries.is_empty() {
        println!(
            "no GPU adapters found (on Linux without a GPU: apt-get install mesa-vulkan-drivers)"
        );
    }
    for s in &summaries {
        println!(
            "{} {} [{} / {}]",
            if is_picked(s) { "*" } else { " " },
            s.name,
            s.backend,
            s.device_type
        );
        println!("    driver: {} {}", s.driver, s.driver_info);
        println!(
            "    workgroup storage: {} | storage binding: {} | buffer: {} | invocations/workgroup: {} | storage buffers/stage: {}",
            human_bytes(s.max_workgroup_storage as u64),
            human_bytes(s.max_storage_buffer_binding),
            human_bytes(s.max_buffer_size),
            s.max_invocations_per_workgroup,
            s.max_storage_buffers_per_stage
        );
        println!(
            "    features: shader-f16 {} | subgroups {} (size {}-{}) | timestamps {} | coherent storage {}",
            yes(s.shader_f16),
            yes(s.subgroups),
            s.subgroup_min_size,
            s.subgroup_max_size,
            yes(s.timestamps),
            yes(s.coherent)
        );
        for l in litmus.iter().flatten() {
            if l.adapter == s.name && l.backend == s.backend && l.driver_info == s.driver_info {
                println!("    {} ({})", l.summary(), l.reason);
            }
        }
    }
    match (&litmus, a.litmus) {
        (Err(e), _) => println!("resident-mode litmus cache: {e}"),
        (Ok(l), false) if l.is_empty() => {
            println!("resident-mode litmus: not measured yet (sramlm info --litmus)")
        }
        _ => {}
    }
    if let Some(n) = &litmus_note {
        println!("resident-mode litmus: {n}");
    }
    if picked.is_some() {
        println!("(* = the adapter sramlm picks with these options)");
    }
    if let Some(m) = &model {
        println!();
        print_model(m);
    }
    Ok(())
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn dtype_bytes(m: &Model) -> std::collections::BTreeMap<String, (usize, u64)> {
    let mut by = std::collections::BTreeMap::new();
    for w in model::WeightName::all(&m.config) {
        if let Some(t) = m.weights.get(w) {
            let e = by
                .entry(t.dtype.name().to_string())
                .or_insert((0usize, 0u64));
            e.0 += 1;
            e.1 += t.byte_len() as u64;
        }
    }
    by
}

fn model_json(m: &Model) -> serde_json::Value {
    serde_json::json!({
        "name": m.name,
        "path": m.path,
        "format": m.format,
        "config": m.config,
        "parameters": m.config.param_count(),
        "weight_bytes_gpu": m.weights.total_bytes(),
        "tensors_by_dtype": dtype_bytes(m).into_iter().map(|(k, (n, b))| (k, serde_json::json!({"tensors": n, "bytes": b}))).collect::<serde_json::Map<_, _>>(),
    })
}

fn print_model(m: &Model) {
    let c = &m.config;
    println!("model: {} ({}, {})", m.name, m.format, m.path.display());
    println!(
        "    {} layers, hidden {}, ffn {}, heads {}/{} kv, head_dim {}, vocab {}, context {}, rope theta {} ({:?}), tied embeddings: {}",
        c.num_layers,
        c.hidden_size,
        c.intermediate_size,
        c.num_heads,
        c.num_kv_heads,
        c.head_dim,
        c.vocab_size,
        c.max_position_embeddings,
        c.rope_theta,
        c.rope_layout,
        yes(c.tie_word_embeddings)
    );
    println!("    rope: {}", c.rope_scaling.describe());
    println!("    architecture: {}", c.arch.describe());
    println!(
        "    parameters: {} | weight memory on the GPU (file encoding): {}",
        c.param_count(),
        human_bytes(m.weights.total_bytes() as u64)
    );
    for (dt, (n, b)) in dtype_bytes(m) {
        println!("    {dt}: {n} tensors, {}", human_bytes(b));
    }
}
