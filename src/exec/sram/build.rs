//! Building the emulated cluster: one [`StageState`] per pipeline stage of
//! the plan's program, its kernels and the link copies between stages.

use super::{ChipStats, LinkOp, SramExecutor, SramOptions, SramStats, StageState};
use crate::chip::program::Work;
use crate::chip::{Plan, Program};
use crate::exec::{ExecCounters, ExecError};
use crate::gpu::Gpu;
use crate::graph::Act;
use crate::kernels::{
    argmax, attention, link_copy, rmsnorm, rope, silu_mul, sram_embed, sram_matmul, topk,
    GpuWeight, KernelOp, Step,
};
use crate::model::{LlamaConfig, ModelWeights, WeightName};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Checks the plan against this adapter and the options, derives its program.
fn check(
    gpu: &Gpu,
    cfg: &LlamaConfig,
    plan: &Plan,
    opts: &SramOptions,
) -> Result<(Program, usize, usize, usize), ExecError> {
    if let Some(m) = super::unsupported_in_sram(cfg) {
        return Err(ExecError::Invalid(m));
    }
    let limit = gpu.limits.max_compute_workgroup_storage_size as usize;
    let slice = plan.spec.slice_bytes;
    if slice > limit {
        return Err(ExecError::Invalid(format!(
            "the chip's SRAM slice is {slice} bytes but this adapter allows {limit} bytes of workgroup storage per workgroup"
        )));
    }
    crate::kernels::check_sram_kernels(slice, cfg).map_err(ExecError::Invalid)?;
    if let Some(e) = &plan.program_error {
        return Err(ExecError::Invalid(format!(
            "SRAM mode cannot run this plan: {e}"
        )));
    }
    let program =
        Program::from_chips(cfg, &plan.chips).map_err(|e| ExecError::Invalid(e.to_string()))?;
    if program.stage_plans() != plan.stages {
        return Err(ExecError::Invalid(
            crate::chip::ProgramError::Stale("stages differ".into()).to_string(),
        ));
    }
    let m = &plan.model;
    let ctx = opts.context.unwrap_or(m.context_len);
    if ctx == 0 || ctx > m.context_len {
        return Err(ExecError::Invalid(format!(
            "a KV cache of {ctx} positions was asked for, but the plan places {}: place with the same --ctx",
            m.context_len
        )));
    }
    let mb = match opts.microbatch {
        0 => m.microbatch_tokens,
        n => n,
    }
    .min(ctx);
    if mb > m.microbatch_tokens {
        return Err(ExecError::Invalid(format!(
            "micro-batches of {mb} tokens were asked for, but the plan's scratch holds {}: place with the same --microbatch",
            m.microbatch_tokens
        )));
    }
    let batch = match opts.batch {
        0 => m.batch,
        n => n,
    };
    if batch > m.batch {
        return Err(ExecError::Invalid(format!(
            "the plan holds KV caches for {} sequence(s) but --batch is {batch}: place with the same batch",
            m.batch
        )));
    }
    Ok((program, ctx, mb, batch))
}

/// Creates (once) and returns stage `k`'s buffer for `a`.
fn local(
    gpu: &Gpu,
    st: &mut StageState,
    k: usize,
    a: Act,
    cfg: &LlamaConfig,
    mb: usize,
) -> Result<wgpu::Buffer, ExecError> {
    if !st.bufs.contains_key(&a) {
        let buf = gpu.storage_buffer(
            &format!("chip{}.stage{k}.{}", st.chip, a.name()),
            (mb * a.width(cfg) * 4) as u64,
        )?;
        st.bufs.insert(a, buf);
    }
    Ok(st.bufs[&a].clone())
}

pub(super) fn build(
    gpu: Arc<Gpu>,
    cfg: &LlamaConfig,
    w: &ModelWeights,
    plan: &Plan,
    opts: &SramOptions,
) -> Result<SramExecutor, ExecError> {
    let (program, ctx, mb, batch) = check(&gpu, cfg, plan, opts)?;
    let slice = plan.spec.slice_bytes;
    if std::env::var_os("SRAMLM_DEBUG_SCHEDULE").is_some() {
        for (s, l) in program.stage_plans().iter().enumerate() {
            eprintln!("stage {s} chip {}: {:?} -> {:?}", l.chip, l.work, l.carry);
        }
    }

    // Weights: one GPU buffer per tensor (the staging source: GPU memory
    // standing in for the chips' resident SRAM contents); kernels read only
    // the rows their chip holds.
    let tensor = |n: WeightName| {
        w.get(n)
            .ok_or_else(|| ExecError::Invalid(format!("missing weight {n}")))
    };
    let mut mats: HashMap<WeightName, GpuWeight> = HashMap::new();
    let mut norms: HashMap<WeightName, wgpu::Buffer> = HashMap::new();
    let mut staged = 0u64;
    for it in &program.items {
        let matrix = match it.work {
            Work::Mat { w, .. } => Some(w),
            Work::Embed { .. } => Some(WeightName::Embed),
            _ => None,
        };
        if let Some(name) = matrix {
            if let std::collections::hash_map::Entry::Vacant(e) = mats.entry(name) {
                e.insert(GpuWeight::upload(&gpu, &name.to_string(), tensor(name)?)?);
            }
            if let Work::Mat { rows, .. } = it.work {
                staged += ((rows.1 - rows.0) * mats[&name].row_bytes() as usize) as u64;
            }
        }
        if let Work::Norm(n) = it.work {
            let b = gpu.upload(&n.to_string(), bytemuck::cast_slice(&tensor(n)?.to_f32()))?;
            norms.insert(n, b);
        }
    }
    let table = rope::rope_table(ctx, cfg.head_dim, cfg.rope_theta, &cfg.rope_scaling);
    let cos_sin = gpu.upload("rope.cos_sin", bytemuck::cast_slice(&table))?;
    let result = gpu.storage_buffer("result", (2 * topk::MAX_K * 4) as u64)?;
    let batch_results = gpu.storage_buffer("batch_results", (batch * 8) as u64)?;
    let shape = rope::Shape {
        n_heads: cfg.num_heads,
        n_kv_heads: cfg.num_kv_heads,
        head_dim: cfg.head_dim,
        layout: cfg.rope_layout,
    };

    // The stages and their kernels.
    let mut stages: Vec<StageState> = Vec::new();
    let mut kv: HashMap<usize, (wgpu::Buffer, wgpu::Buffer)> = HashMap::new();
    let mut kv_bytes = 0u64;
    let mut keep = vec![cos_sin.clone()];
    for (k, s) in program.stages.iter().enumerate() {
        let c = s.chip;
        let mut st = StageState {
            chip: c,
            step_buf: gpu.uniform(&format!("chip{c}.stage{k}.step"), &Step::default()),
            bufs: BTreeMap::new(),
            ids: None,
            recv: vec![],
            compute: vec![],
            send: vec![],
        };
        let step_buf = st.step_buf.clone();
        for it in &program.items[s.items.clone()] {
            let name = format!("chip{c}.{}", it.label(&program.nodes));
            let op = match it.work {
                Work::Embed { rows, first } => {
                    let x = local(&gpu, &mut st, k, Act::X, cfg, mb)?;
                    if st.ids.is_none() {
                        st.ids = Some(
                            gpu.storage_buffer(&format!("chip{c}.stage{k}.ids"), (mb * 4) as u64)?,
                        );
                    }
                    let ids = st.ids.clone().expect("ids");
                    sram_embed::build(
                        &gpu,
                        &step_buf,
                        &name,
                        &mats[&WeightName::Embed],
                        rows,
                        first,
                        &ids,
                        &x,
                    )?
                }
                Work::Norm(wn) => {
                    let x = local(&gpu, &mut st, k, Act::X, cfg, mb)?;
                    let xn = local(&gpu, &mut st, k, Act::Xn, cfg, mb)?;
                    rmsnorm::build_variant(
                        &gpu,
                        &step_buf,
                        &name,
                        cfg.hidden_size,
                        cfg.rms_norm_eps,
                        &norms[&wn],
                        &x,
                        &xn,
                        &rmsnorm::sram_variant(cfg.hidden_size),
                    )?
                }
                Work::Mat {
                    w: wn,
                    rows,
                    inp,
                    out,
                    acc,
                    head,
                } => {
                    let x = local(&gpu, &mut st, k, inp, cfg, mb)?;
                    let y = local(&gpu, &mut st, k, out, cfg, mb)?;
                    let spec = sram_matmul::Spec {
                        name: &name,
                        w: &mats[&wn],
                        row_begin: rows.0,
                        row_end: rows.1,
                        slice_bytes: slice,
                        accumulate: acc,
                        out_rows_only: head,
                    };
                    sram_matmul::build(&gpu, &step_buf, &spec, &x, &y)?
                }
                Work::RopeQ(l) | Work::KvWrite(l, _) | Work::AttnBlock { layer: l, .. } => {
                    // The layer's KV cache: one GPU buffer pair standing in
                    // for the KV blocks in the chips' SRAM; each chip's
                    // kernels touch only their own block.
                    let kd = (batch * ctx * cfg.kv_dim() * 4) as u64;
                    let (kc, vc) = match kv.get(&l) {
                        Some(p) => p.clone(),
                        None => {
                            let p = (
                                gpu.storage_buffer(&format!("layers.{l}.k_cache"), kd)?,
                                gpu.storage_buffer(&format!("layers.{l}.v_cache"), kd)?,
                            );
                            kv_bytes += 2 * kd;
                            kv.insert(l, p.clone());
                            p
                        }
                    };
                    let q = local(&gpu, &mut st, k, Act::Q, cfg, mb)?;
                    match it.work {
                        Work::AttnBlock {
                            block, init, fin, ..
                        } => {
                            let att = local(&gpu, &mut st, k, Act::Att, cfg, mb)?;
                            let state = local(&gpu, &mut st, k, Act::AttState, cfg, mb)?;
                            let block = attention::Block {
                                kv_heads: block.heads,
                                positions: block.positions,
                                init,
                                finalize: fin,
                            };
                            attention::build_block(
                                &gpu,
                                &step_buf,
                                &name,
                                cfg.num_heads,
                                cfg.num_kv_heads,
                                cfg.head_dim,
                                block,
                                &q,
                                &kc,
                                &vc,
                                &att,
                                &state,
                            )?
                        }
                        _ => {
                            let kb = local(&gpu, &mut st, k, Act::K, cfg, mb)?;
                            let vb = local(&gpu, &mut st, k, Act::V, cfg, mb)?;
                            let part = match it.work {
                                Work::KvWrite(_, b) => rope::Part {
                                    q: false,
                                    kv: Some((b.heads, b.positions)),
                                },
                                _ => rope::Part { q: true, kv: None },
                            };
                            rope::build_part(
                                &gpu, &step_buf, &name, &shape, part, &cos_sin, &q, &kb, &vb, &kc,
                                &vc,
                            )?
                        }
                    }
                }
                Work::Silu(_) => {
                    let g = local(&gpu, &mut st, k, Act::G, cfg, mb)?;
                    let u = local(&gpu, &mut st, k, Act::U, cfg, mb)?;
                    let h = local(&gpu, &mut st, k, Act::H, cfg, mb)?;
                    silu_mul::build(&gpu, &step_buf, &name, cfg.intermediate_size, &g, &u, &h)?
                }
            };
            st.compute.push(op);
        }
        stages.push(st);
    }

    // The links: after stage k, pack the live activations into the link
    // buffer (on stage k's chip), unpack them on stage k + 1's chip.
    for l in &program.links {
        let (k, n) = (l.from_stage, l.from_stage + 1);
        let width = l.values();
        let label = format!("link{}->{}", l.from_chip, l.to_chip);
        let link = gpu.storage_buffer(&label, (mb * width.max(1) * 4) as u64)?;
        let mut off = 0;
        for &(a, cols) in &l.carry {
            let src = local(&gpu, &mut stages[k], k, a, cfg, mb)?;
            let dst = local(&gpu, &mut stages[n], n, a, cfg, mb)?;
            let rows = if a == Act::Logits {
                link_copy::Rows::OutRows
            } else {
                link_copy::Rows::Tokens
            };
            let aw = a.width(cfg);
            let name = format!("{label}.{}", a.name());
            let send = link_copy::build(
                &gpu,
                &stages[k].step_buf,
                &name,
                cols,
                rows,
                (&src, aw, 0),
                (&link, width, off),
            )?;
            let recv = link_copy::build(
                &gpu,
                &stages[n].step_buf,
                &name,
                cols,
                rows,
                (&link, width, off),
                (&dst, aw, 0),
            )?;
            stages[k].send.push(LinkOp {
                op: send,
                values: cols,
                out_rows: a == Act::Logits,
            });
            stages[n].recv.push(recv);
            off += cols;
        }
        keep.push(link);
    }

    // Sampling on the chip of the last stage.
    let last = stages
        .len()
        .checked_sub(1)
        .ok_or_else(|| ExecError::Invalid("the plan's program is empty".into()))?;
    let last_logits = local(&gpu, &mut stages[last], last, Act::Logits, cfg, mb)?;
    let argmax = argmax::build(
        &gpu,
        &stages[last].step_buf,
        cfg.vocab_size,
        &last_logits,
        &result,
    )?;
    keep.extend(norms.into_values());
    keep.extend(kv.into_values().flat_map(|(k, v)| [k, v]));

    let mut chip_stats: BTreeMap<usize, ChipStats> = BTreeMap::new();
    for (k, st) in stages.iter().enumerate() {
        let e = chip_stats.entry(st.chip).or_insert(ChipStats {
            chip: st.chip,
            link_bytes_in_per_token: 0,
            link_bytes_out_per_token: 0,
            dispatches_compute: 0,
        });
        e.dispatches_compute += st.compute.len();
        if let Some(l) = program.links.get(k) {
            e.link_bytes_out_per_token += 4 * l.values();
        }
        if let Some(l) = k.checked_sub(1).and_then(|p| program.links.get(p)) {
            e.link_bytes_in_per_token += 4 * l.values();
        }
    }
    let t = &plan.totals;
    let stats = SramStats {
        chip_preset: plan.spec.name.clone(),
        chips_used: t.chips_used,
        slice_bytes: slice,
        sram_used_max_bytes: t.sram_used_max,
        sram_used_mean_bytes: t.sram_used_mean,
        microbatch_tokens: mb,
        pipeline_stages: program.stages.len(),
        link_bytes_per_token: program.link_bytes_per_token(),
        link_transfers_per_token: program.links.iter().map(|l| l.carry.len()).sum(),
        link_hops_per_token: program
            .links
            .iter()
            .map(|l| (l.to_chip + t.chips_used - l.from_chip) % t.chips_used.max(1))
            .sum(),
        link_bytes_counted: 0,
        link_copies_counted: 0,
        emulation_staged_bytes_per_step: staged,
        pipeline_steps_last: 0,
        stages_active_mean_last: 0.0,
    };
    let readback_size = (2 * topk::MAX_K * 4) as u64;
    Ok(SramExecutor {
        readback: gpu.readback_buffer("readback", readback_size),
        gpu,
        cfg: cfg.clone(),
        program,
        ctx,
        mb,
        pos: vec![0; batch],
        seq: 0,
        stages,
        result,
        batch_results,
        argmax,
        topk: None,
        last_logits,
        all_logits: None,
        readback_size,
        weight_bytes: w.total_bytes() as u64,
        kv_bytes,
        counters: ExecCounters::default(),
        profiler: None,
        stats,
        chip_stats: chip_stats.into_values().collect(),
        _keep: keep,
    })
}

/// `topk` over the last stage's logits.
pub(super) fn build_topk(ex: &SramExecutor, k: usize) -> Result<KernelOp, ExecError> {
    let last = ex.stages.last().expect("stages");
    Ok(topk::build(
        &ex.gpu,
        &last.step_buf,
        ex.cfg.vocab_size,
        k,
        &ex.last_logits,
        &ex.result,
    )?)
}
