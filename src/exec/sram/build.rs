//! Building the emulated cluster: each chip's SRAM image (the weight rows
//! it holds, laid out contiguously), each stage's activation region and each
//! chip's KV-cache blocks in arenas, and every stage's work items as
//! interpreter codes ([`schedule::Code`]) for the task tables.

use super::schedule::Code;
use super::{ChipStats, LinkCount, SramExecutor, SramOptions, SramStats, TaskOrder};
use crate::chip::program::Work;
use crate::chip::{Plan, Program};
use crate::exec::{ExecCounters, ExecError, SramBuildError};
use crate::gpu::Gpu;
use crate::graph::Act;
use crate::kernels::sram_step::{self, hdr, Op};
use crate::kernels::{rope, topk};
use crate::model::{DType, LayerTensor, LlamaConfig, ModelWeights, WeightName};
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
        return Err(SramBuildError::Unsupported(m).into());
    }
    // Tasks of one dispatch hand activations and KV cells to later tasks
    // through storage: a GPU needs `@coherent` buffers for that (stale reads
    // were measured on an H100 without them); a CPU adapter's memory is.
    if !gpu.level.coherent && gpu.info.device_type != wgpu::DeviceType::Cpu {
        return Err(SramBuildError::NoCoherentMemory {
            adapter: gpu.info.name.clone(),
        }
        .into());
    }
    let limit = gpu.limits.max_compute_workgroup_storage_size as usize;
    let slice = plan.spec.slice_bytes;
    if slice > limit {
        return Err(SramBuildError::SliceOverAdapter { slice, limit }.into());
    }
    crate::kernels::check_sram_kernels(slice, cfg).map_err(SramBuildError::KernelOverSlice)?;
    if let Some(e) = &plan.program_error {
        return Err(SramBuildError::Unrunnable(e.to_string()).into());
    }
    let program = Program::for_tp(cfg, &plan.chips, plan.tp).map_err(SramBuildError::Program)?;
    if program.stage_plans() != plan.stages {
        return Err(SramBuildError::Program(crate::chip::ProgramError::Stale(
            "stages differ".into(),
        ))
        .into());
    }
    let m = &plan.model;
    let ctx = opts.context.unwrap_or(m.context_len);
    if ctx == 0 || ctx > m.context_len {
        return Err(SramBuildError::Context {
            asked: ctx,
            placed: m.context_len,
        }
        .into());
    }
    let mb = match opts.microbatch {
        0 => m.microbatch_tokens,
        n => n,
    }
    .min(ctx);
    if mb > m.microbatch_tokens {
        return Err(SramBuildError::Microbatch {
            asked: mb,
            placed: m.microbatch_tokens,
        }
        .into());
    }
    let batch = match opts.batch {
        0 => m.batch,
        n => n,
    };
    if batch > m.batch {
        return Err(SramBuildError::Batch {
            asked: batch,
            placed: m.batch,
        }
        .into());
    }
    Ok((program, ctx, mb, batch))
}

/// The chips' SRAM images: weight rows and norm vectors, chip by chip, each
/// block at a 4-byte boundary; the RoPE table after them.
#[derive(Default)]
struct Image {
    bytes: Vec<u8>,
    /// (chip, weight, first row, end row) → byte offset.
    blocks: HashMap<(usize, WeightName, usize, usize), usize>,
}

impl Image {
    fn align(&mut self) {
        while !self.bytes.len().is_multiple_of(4) {
            self.bytes.push(0);
        }
    }
    fn block(&mut self, key: (usize, WeightName, usize, usize), data: &[u8]) -> usize {
        if let Some(&o) = self.blocks.get(&key) {
            return o;
        }
        self.align();
        let o = self.bytes.len();
        self.bytes.extend_from_slice(data);
        self.blocks.insert(key, o);
        o
    }
}

/// Activation regions (stage, activation) and KV blocks in word offsets.
struct Arenas {
    acts: BTreeMap<(usize, Act), usize>,
    act_words: usize,
    kv: HashMap<(usize, usize, usize, usize), (usize, usize)>,
    kv_words: usize,
}

impl Arenas {
    fn act(&mut self, k: usize, a: Act, cfg: &LlamaConfig, mb: usize) -> u32 {
        let w = a.width(cfg) * mb;
        let next = &mut self.act_words;
        *self.acts.entry((k, a)).or_insert_with(|| {
            let o = *next;
            *next += w;
            o
        }) as u32
    }
}

/// Counters the executor starts with (grown for longer runs).
const COUNTERS0: usize = 4096;

fn u(v: usize) -> u32 {
    v as u32
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
    let dims = sram_step::Dims::of(cfg, slice);
    let tile = sram_step::tile_bytes(slice, dims);
    let tensor = |n: WeightName| w.get(n).ok_or(SramBuildError::MissingWeight(n));
    let mut img = Image::default();
    let mut ar = Arenas {
        acts: BTreeMap::new(),
        act_words: 0,
        kv: HashMap::new(),
        kv_words: 0,
    };
    let mut encodings: Vec<DType> = Vec::new();
    let mut staged = 0u64;
    let hd = cfg.head_dim;
    // The RoPE tables (one per distinct base and scaling the layers use,
    // `LlamaConfig::rope_tables`; Gemma 3: two), and each layer's table as a
    // word offset from the first (the header's ROPE_OFF).
    let (rope_tables, rope_idx) = cfg.rope_tables();
    let rope_data: Vec<Vec<f32>> = rope_tables
        .iter()
        .map(|(theta, scaling)| rope::rope_table(ctx, hd, *theta, scaling))
        .collect();
    let rope_rel: Vec<usize> = rope_data
        .iter()
        .scan(0, |a, t| {
            let o = *a;
            *a += t.len();
            Some(o)
        })
        .collect();
    let rope_table_of: Vec<usize> = rope_idx.iter().map(|&i| rope_rel[i]).collect();
    let mut codes: Vec<Vec<Code>> = Vec::new();
    for (k, s) in program.stages.iter().enumerate() {
        let c = s.chip;
        let mut stage_codes = Vec::new();
        for it in &program.items[s.items.clone()] {
            let name = it.label(&program.nodes);
            // A weight row block of this chip into its image.
            let mut rows_of = |img: &mut Image, wn: WeightName, r0: usize, r1: usize| {
                let t = tensor(wn)?;
                let rb = t.cols() / t.dtype.block_len() * t.dtype.block_bytes();
                let off = img.block((c, wn, r0, r1), &t.bytes.as_slice()[r0 * rb..r1 * rb]);
                if !encodings.contains(&t.dtype) {
                    encodings.push(t.dtype);
                }
                Ok::<_, ExecError>((t.dtype, t.cols(), t.rows(), rb, off))
            };
            let code = match it.work {
                Work::Embed { rows, first } => {
                    let (dt, dim, _, rb, off) =
                        rows_of(&mut img, WeightName::Embed, rows.0, rows.1)?;
                    if rb + 4 > tile {
                        return Err(slice_error(&name, rb + 4, tile, slice));
                    }
                    let x = ar.act(k, Act::X, cfg, mb);
                    Code::one(
                        Op::Embed,
                        &[
                            sram_step::encoding(dt),
                            u(off),
                            u(rb),
                            u(rows.0),
                            u(rows.1),
                            u32::from(first),
                            x,
                            u(dim),
                            // Gemma: the row × sqrt(hidden).
                            cfg.arch.embed_scale.unwrap_or(1.0).to_bits(),
                        ],
                    )
                }
                Work::Norm(wn) | Work::PostNorm(wn) => {
                    // Gemma's (1 + w) added in f32, as VRAM mode at upload.
                    let off_w = cfg.arch.norm_weight_offset;
                    let v: Vec<f32> = tensor(wn)?.to_f32().iter().map(|x| off_w + x).collect();
                    let off = img.block((c, wn, 0, 1), bytemuck::cast_slice(&v));
                    if v.len() * 4 > tile {
                        return Err(slice_error(&name, v.len() * 4, tile, slice));
                    }
                    let x = ar.act(k, Act::X, cfg, mb);
                    let xn = ar.act(k, Act::Xn, cfg, mb);
                    if matches!(it.work, Work::PostNorm(_)) {
                        // x += rmsnorm(xn) · w
                        Code::one(Op::Norm, &[u(off), u(v.len()), xn, x, 1])
                    } else {
                        Code::one(Op::Norm, &[u(off), u(v.len()), x, xn])
                    }
                }
                Work::Mat {
                    w: wn,
                    rows,
                    inp,
                    out,
                    acc,
                    head,
                } => {
                    let (dt, kk, n, rb, off) = rows_of(&mut img, wn, rows.0, rows.1)?;
                    let rpt = sram_step::rows_per_tile(rb, tile);
                    if rpt == 0 {
                        return Err(slice_error(&name, rb + 4, tile, slice));
                    }
                    staged += ((rows.1 - rows.0) * rb) as u64;
                    let x = ar.act(k, inp, cfg, mb);
                    let y = ar.act(k, out, cfg, mb);
                    let flags = u32::from(acc) | (u32::from(head) << 1);
                    Code::shared(
                        Op::Mat,
                        &[
                            sram_step::encoding(dt),
                            u(off),
                            u(rows.0),
                            u(rows.1),
                            u(rpt),
                            u(rb),
                            u(kk),
                            u(n),
                            x,
                            y,
                            flags,
                        ],
                        u((rows.1 - rows.0).div_ceil(rpt)),
                    )
                }
                Work::RopeQ(l) => Code::one(
                    Op::RopeQ,
                    &[ar.act(k, Act::Q, cfg, mb), u(rope_table_of[l])],
                ),
                Work::KvWrite(l, b)
                | Work::AttnBlock {
                    layer: l, block: b, ..
                } => {
                    // This chip's block of layer l's KV cache: its own region
                    // (sequence × positions × heads × head_dim), K then V.
                    let cells =
                        batch * (b.positions.1 - b.positions.0) * (b.heads.1 - b.heads.0) * hd;
                    let key = (l, b.heads.0, b.positions.0, c);
                    let next = &mut ar.kv_words;
                    let (kr, vr) = *ar.kv.entry(key).or_insert_with(|| {
                        let o = *next;
                        *next += 2 * cells;
                        (o, o + cells)
                    });
                    let blk = [b.heads.0, b.heads.1, b.positions.0, b.positions.1].map(u);
                    match it.work {
                        Work::KvWrite(..) => {
                            let kx = ar.act(k, Act::K, cfg, mb);
                            let vx = ar.act(k, Act::V, cfg, mb);
                            let mut p = vec![kx, vx];
                            p.extend(blk);
                            p.extend([u(kr), u(vr), u(rope_table_of[l])]);
                            Code::one(Op::KvWrite, &p)
                        }
                        Work::AttnBlock { init, fin, .. } => {
                            let q = ar.act(k, Act::Q, cfg, mb);
                            let att = ar.act(k, Act::Att, cfg, mb);
                            let st = ar.act(k, Act::AttState, cfg, mb);
                            let mut p = vec![q, att, st];
                            p.extend(blk);
                            p.extend([u(kr), u(vr), u32::from(init), u32::from(fin)]);
                            // The layer's sliding window (0: full causal).
                            p.push(u(cfg.layer_window(l)));
                            // Tensor parallelism: only this chip's query heads
                            // (the rows of wq it holds; parameter 12: the first).
                            let (h0, h1) =
                                tp_rows(&program, k, WeightName::Layer(l, LayerTensor::Q))
                                    .map_or((0, cfg.num_heads), |r| (r.0 / hd, r.1 / hd));
                            p.push(u(h0));
                            Code::shared(Op::Attn, &p, u(h1 - h0))
                        }
                        _ => unreachable!(),
                    }
                }
                Work::Bias { w: wn, out } => {
                    // The bias in f32 in this chip's image; one task per
                    // slice-sized chunk of it.
                    let v = tensor(wn)?.to_f32();
                    let off = img.block((c, wn, 0, 1), bytemuck::cast_slice(&v));
                    let chunk = tile / 4;
                    if chunk == 0 {
                        return Err(slice_error(&name, 4, tile, slice));
                    }
                    let y = ar.act(k, out, cfg, mb);
                    Code::shared(
                        Op::Bias,
                        &[u(off), u(v.len()), y, u(chunk)],
                        u(v.len().div_ceil(chunk)),
                    )
                }
                Work::HeadNorm { w: wn, act } => {
                    // [head_dim] in f32 (Gemma's 1 + w added here, as VRAM
                    // mode does at upload); one task per head.
                    let off_w = cfg.arch.norm_weight_offset;
                    let v: Vec<f32> = tensor(wn)?.to_f32().iter().map(|x| off_w + x).collect();
                    let off = img.block((c, wn, 0, 1), bytemuck::cast_slice(&v));
                    if v.len() * 4 > tile {
                        return Err(slice_error(&name, v.len() * 4, tile, slice));
                    }
                    let heads = act.width(cfg) / hd;
                    let x = ar.act(k, act, cfg, mb);
                    Code::shared(Op::HeadNorm, &[u(off), x, u(heads)], u(heads))
                }
                Work::Silu(l) => {
                    let g = ar.act(k, Act::G, cfg, mb);
                    let uu = ar.act(k, Act::U, cfg, mb);
                    let h = ar.act(k, Act::H, cfg, mb);
                    let gelu = cfg.arch.activation != crate::model::Activation::Silu;
                    // Tensor parallelism: only the features of this chip's
                    // w_gate rows (parameters 5, 6; 0, 0: all).
                    let (f0, f1) = tp_rows(&program, k, WeightName::Layer(l, LayerTensor::Gate))
                        .unwrap_or((0, 0));
                    Code::one(
                        Op::Silu,
                        &[
                            g,
                            uu,
                            h,
                            u(cfg.intermediate_size),
                            u32::from(gelu),
                            u(f0),
                            u(f1),
                        ],
                    )
                }
            };
            stage_codes.push(code);
        }
        if stage_codes.is_empty() {
            // A stage with no work (tensor parallelism: the read-out's chip
            // after the logits' gather) is one no-op task.
            stage_codes.push(Code::shared(Op::Nop, &[], 0));
        }
        codes.push(stage_codes);
    }

    // The links: after stage k, each live activation's valid columns go
    // from stage k's region straight into stage k + 1's; one task carries
    // LINK_COPIES activations (a task's fixed cost is most of a small copy).
    let mut link_codes = Vec::new();
    let mut link_counts = Vec::new();
    for l in &program.links {
        let mut params: Vec<[u32; sram_step::PARAMS]> = Vec::new();
        let mut counts = Vec::new();
        for (i, c) in l.copies.iter().enumerate() {
            let a = c.act;
            let src = ar.act(c.from_stage, a, cfg, mb) + u(c.cols.0);
            let dst = ar.act(c.to_stage, a, cfg, mb) + u(c.cols.0);
            let aw = u(a.width(cfg));
            let out_rows = a == Act::Logits;
            let slot = i % sram_step::LINK_COPIES;
            if slot == 0 {
                params.push([0; sram_step::PARAMS]);
            }
            let p = params.last_mut().expect("pushed above");
            p[6 * slot..6 * slot + 6].copy_from_slice(&[
                src,
                aw,
                dst,
                aw,
                u(c.values()),
                u32::from(out_rows),
            ]);
            // A copy between two stages of one chip is no link traffic.
            if !c.is_local() {
                counts.push(LinkCount {
                    values: c.values(),
                    out_rows,
                });
            }
        }
        link_codes.push(Code {
            op: Op::Link,
            tasks: u(params.len()),
            params: if params.is_empty() {
                vec![[0; sram_step::PARAMS]]
            } else {
                params
            },
        });
        link_counts.push(counts);
    }
    let last = program
        .stages
        .len()
        .checked_sub(1)
        .ok_or(SramBuildError::EmptyProgram)?;
    let logits_off = ar.act(last, Act::Logits, cfg, mb) as usize;

    // The RoPE tables after the images (not weights: every chip computes
    // them), one after the other (`rope_rel`).
    img.align();
    let rope_off = img.bytes.len() / 4;
    for table in &rope_data {
        img.bytes.extend_from_slice(bytemuck::cast_slice(table));
    }
    let limit = gpu
        .limits
        .max_storage_buffer_binding_size
        .min(gpu.limits.max_buffer_size);
    // Two bindings hold the images (and the RoPE table after them): the
    // first as full as one binding allows, the rest in the second.
    let first = (((limit - 4) / 4) as usize * 4)
        .min(opts.image_split_bytes.map_or(usize::MAX, |b| b / 4 * 4))
        .min(img.bytes.len());
    if (img.bytes.len() - first) as u64 + 4 > limit {
        return Err(SramBuildError::OverBinding {
            what: "SRAM images",
            bytes: img.bytes.len() as u64,
            limit,
            hint: " (two bindings hold at most twice that)".into(),
        }
        .into());
    }
    let image = gpu.upload("sram.images", &img.bytes[..first])?;
    let image2 = gpu.upload("sram.images2", &img.bytes[first..])?;
    let kv_need = (ar.kv_words * 4) as u64;
    if kv_need > limit {
        return Err(SramBuildError::OverBinding {
            what: "KV-cache blocks",
            bytes: kv_need,
            limit,
            hint: format!(" (--ctx {ctx}, {batch} sequence(s)): use a smaller --ctx or --batch"),
        }
        .into());
    }
    let act_need = (ar.act_words * 4) as u64;
    if act_need > limit {
        return Err(SramBuildError::OverBinding {
            what: "activations",
            bytes: act_need,
            limit,
            hint: format!(" ({mb}-token micro-batches): use a smaller --microbatch"),
        }
        .into());
    }
    let acts = gpu.storage_buffer("sram.activations", (ar.act_words * 4) as u64)?;
    let kv = gpu.storage_buffer("sram.kv_cache", (ar.kv_words.max(1) * 4) as u64)?;
    let kv_bytes = (ar.kv_words * 4) as u64;
    let max_mbs = ctx.max(batch);
    // Micro-batch records, token ids, then per-row (sequence, position).
    let run_buf = gpu.storage_buffer(
        "sram.run",
        ((max_mbs * sram_step::MB_WORDS + ctx.max(batch) + 2 * batch) * 4) as u64,
    )?;
    let counters_buf = gpu.storage_buffer(
        "sram.counters",
        (COUNTERS0 * 4 * sram_step::COUNTER_WORDS) as u64,
    )?;
    let results_len = (2 * topk::MAX_K).max(2 * batch);
    let results = gpu.storage_buffer("sram.results", (results_len * 4) as u64)?;
    let mut variant =
        sram_step::variant(slice, dims, &encodings).map_err(SramBuildError::KernelOverSlice)?;
    if gpu.level.coherent {
        variant = variant.define("COHERENT");
    }
    // Reductions by subgroup where the adapter has them (lib/reduce).
    if gpu.level.subgroups {
        variant = variant.define("SG");
    }
    let pipeline = sram_step::pipeline(&gpu, &variant)?;
    let resident_variant = variant.clone();
    let mut header = [0u32; sram_step::HDR];
    header[hdr::SPIN_LIMIT] = sram_step::SPIN_LIMIT;
    header[hdr::IDS_BASE] = u(max_mbs * sram_step::MB_WORDS);
    header[hdr::ROWS_BASE] = u(max_mbs * sram_step::MB_WORDS + ctx.max(batch));
    header[hdr::ROPE_OFF] = u(rope_off);
    header[hdr::N_HEADS] = u(cfg.num_heads);
    header[hdr::N_KV_HEADS] = u(cfg.num_kv_heads);
    header[hdr::EPS] = cfg.rms_norm_eps.to_bits();
    header[hdr::SCALE] = cfg
        .arch
        .attn_scale
        .unwrap_or_else(|| crate::kernels::attention::default_scale(hd))
        .to_bits();
    header[hdr::PAIR_LAYOUT] = cfg.rope_layout.as_u32();
    header[hdr::IMG_SPLIT] = u(first / 4);
    let order = match opts.task_order {
        Some(o) => o,
        None => TaskOrder::default_for(&gpu)?,
    };
    header[hdr::TASK_ORDER] = u32::from(order == TaskOrder::Ticket);

    let mut chip_stats: BTreeMap<usize, ChipStats> = BTreeMap::new();
    for st in &program.stages {
        chip_stats.entry(st.chip).or_insert(ChipStats {
            chip: st.chip,
            link_bytes_in_per_token: 0,
            link_bytes_out_per_token: 0,
            dispatches_compute: 0,
        });
    }
    for st in &program.stages {
        if let Some(e) = chip_stats.get_mut(&st.chip) {
            e.dispatches_compute += st.items.len();
        }
    }
    for c in program.links.iter().flat_map(|l| &l.copies) {
        if c.is_local() {
            continue;
        }
        if let Some(e) = chip_stats.get_mut(&c.from_chip) {
            e.link_bytes_out_per_token += 4 * c.values();
        }
        if let Some(e) = chip_stats.get_mut(&c.to_chip) {
            e.link_bytes_in_per_token += 4 * c.values();
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
        pipeline_stages: program.groups.len(),
        link_bytes_per_token: program.link_bytes_per_token(),
        link_transfers_per_token: program
            .links
            .iter()
            .flat_map(|l| &l.copies)
            .filter(|c| !c.is_local())
            .count(),
        link_hops_per_token: program
            .links
            .iter()
            .flat_map(|l| &l.copies)
            .filter(|c| !c.is_local())
            .map(|l| (l.to_chip + t.chips_used - l.from_chip) % t.chips_used.max(1))
            .sum(),
        link_bytes_counted: 0,
        link_copies_counted: 0,
        emulation_staged_bytes_per_step: staged,
        pipeline_steps_last: 0,
        stages_active_mean_last: 0.0,
        chips_active_mean_last: 0.0,
        dispatches_last: 0,
        tasks_last: 0,
        resident: None,
    };
    let readback_size = (2 * topk::MAX_K * 4 + 4) as u64;
    Ok(SramExecutor {
        readback: gpu.readback_buffer("readback", readback_size),
        gpu,
        cfg: cfg.clone(),
        program,
        ctx,
        mb,
        pos: vec![0; batch],
        seq: 0,
        codes,
        link_codes,
        link_counts,
        pipeline,
        resident_variant,
        resident_capacity: None,
        header,
        logits_off,
        image,
        image2,
        acts,
        kv,
        run_buf,
        counters_buf,
        counters_len: COUNTERS0,
        results,
        results_len,
        tables: HashMap::new(),
        readback_size,
        weight_bytes: w.total_bytes() as u64,
        kv_bytes,
        counters: ExecCounters::default(),
        profiler: None,
        stats,
        chip_stats: chip_stats.into_values().collect(),
    })
}

/// A weight block that does not fit the slice's tile.
fn slice_error(what: &str, need: usize, tile: usize, slice: usize) -> ExecError {
    SramBuildError::SliceTooSmall {
        what: what.to_string(),
        need,
        tile,
        slice,
    }
    .into()
}

/// Tensor parallelism: the rows of `w` the chip of stage `k` holds, when
/// the stage's group has several chips (at tp 1: `None`, all rows).
fn tp_rows(program: &Program, k: usize, w: WeightName) -> Option<(usize, usize)> {
    if program.groups[program.group_of(k)].len() < 2 {
        return None;
    }
    let chip = program.stages[k].chip;
    program.items.iter().find_map(|i| match i.work {
        Work::Mat { w: x, rows, .. } if x == w && i.chip == chip => Some(rows),
        _ => None,
    })
}
