//! VRAM mode: the conventional engine. Every weight lives in a GPU storage
//! buffer in its file encoding; each step streams them through the kernels.
//! Activations and the KV cache are allocated once; a step is one command
//! buffer and one submission; the next token is picked on the GPU.

use super::{ExecCounters, ExecError, Executor, Readback, StepOutput};
use crate::gpu::Gpu;
use crate::kernels::{
    argmax, attention, embed, matmul, rmsnorm, rope, topk, GpuWeight, KernelOp, Step,
};
use crate::model::{LayerTensor, LlamaConfig, ModelWeights, Tensor, WeightName};
use std::sync::Arc;

/// Default prompt-chunk size: tokens per batched prefill pass.
pub const DEFAULT_CHUNK: usize = 256;

#[derive(Clone, Debug)]
pub struct VramOptions {
    /// KV-cache length; `None` = the model's context window.
    pub context: Option<usize>,
    /// Most tokens per step (larger prompts run in several batched passes).
    pub chunk: usize,
}

impl Default for VramOptions {
    fn default() -> Self {
        VramOptions {
            context: None,
            chunk: DEFAULT_CHUNK,
        }
    }
}

/// Weights with the same encoding and row length stacked row-wise into one
/// tensor (Q/K/V; gate/up), so one dispatch computes all of them.
fn stack(parts: &[&Tensor]) -> Tensor {
    let mut bytes = Vec::with_capacity(parts.iter().map(|t| t.byte_len()).sum());
    for t in parts {
        bytes.extend_from_slice(t.bytes.as_slice());
    }
    Tensor {
        dtype: parts[0].dtype,
        shape: vec![parts.iter().map(|t| t.rows()).sum(), parts[0].cols()],
        bytes: crate::model::weights::Bytes::Owned(Arc::new(bytes)),
    }
}

/// Activation buffers, allocated once for `chunk` tokens.
struct Activations {
    ids: wgpu::Buffer,    // [chunk] u32
    x: wgpu::Buffer,      // [chunk, D]   residual stream
    xn: wgpu::Buffer,     // [chunk, D]   normed
    q: wgpu::Buffer,      // [chunk, H*hd]
    k: wgpu::Buffer,      // [chunk, Hkv*hd]
    v: wgpu::Buffer,      // [chunk, Hkv*hd]
    att: wgpu::Buffer,    // [chunk, H*hd]
    h: wgpu::Buffer,      // [chunk, I]
    logits: wgpu::Buffer, // [chunk, V]
    result: wgpu::Buffer, // [max(MAX_K, rows)][id, bits]
    /// Batched decode: each row's (position, KV base) for the attention.
    rows: wgpu::Buffer, // uniform [attention::MAX_ROWS] vec4<u32>
}

pub struct VramExecutor {
    gpu: Arc<Gpu>,
    cfg: LlamaConfig,
    ctx: usize,
    chunk: usize,
    /// Tokens in the KV cache of each resident sequence.
    pos: Vec<usize>,
    /// The sequence `step` and `decode_greedy` work on.
    seq: usize,
    step_buf: wgpu::Buffer,
    act: Activations,
    /// Embedding → layers → final norm, in forward order.
    body: Vec<KernelOp>,
    /// lm_head over the requested logit rows.
    head: Vec<KernelOp>,
    argmax: KernelOp,
    topk: Option<(usize, KernelOp)>,
    /// Sampling penalties before argmax / top-k (built on first use).
    penalty: Option<crate::kernels::penalty::PenaltyOp>,
    readback: wgpu::Buffer,
    readback_size: u64,
    /// Greedy pipelining: two 8-byte readback slots, one per step in flight.
    greedy_slots: [wgpu::Buffer; 2],
    weight_bytes: u64,
    kv_bytes: u64,
    counters: ExecCounters,
    profiler: Option<crate::gpu::profiler::Profiler>,
    _keep: Vec<wgpu::Buffer>,
}

impl VramExecutor {
    pub fn new(
        gpu: Arc<Gpu>,
        cfg: &LlamaConfig,
        w: &ModelWeights,
        opts: &VramOptions,
    ) -> Result<Self, ExecError> {
        Self::new_batched(gpu, cfg, w, opts, 1)
    }

    /// With KV caches for `batch` sequences (each `context` positions), which
    /// [`Executor::decode_rows`] decodes together: one row per sequence in
    /// each matvec, each row's own position and cache in the attention.
    /// At most [`VramExecutor::max_rows`] rows per batched step.
    pub fn new_batched(
        gpu: Arc<Gpu>,
        cfg: &LlamaConfig,
        w: &ModelWeights,
        opts: &VramOptions,
        batch: usize,
    ) -> Result<Self, ExecError> {
        let ctx = opts.context.unwrap_or(cfg.max_position_embeddings).max(1);
        let chunk = opts.chunk.clamp(1, ctx);
        if batch == 0 {
            return Err(ExecError::EmptyBatch);
        }
        // Rows of a batched step live in the chunk-sized activations.
        let chunk = chunk.max(batch.min(attention::MAX_ROWS));
        let (d, qd, kvd, inter, vocab) = (
            cfg.hidden_size,
            cfg.q_dim(),
            cfg.kv_dim(),
            cfg.intermediate_size,
            cfg.vocab_size,
        );
        let f = |n: usize| (n * 4) as u64;
        let buf = |label: &str, size: u64| gpu.storage_buffer(label, size);
        let act = Activations {
            ids: buf("ids", f(chunk))?,
            x: buf("x", f(chunk * d))?,
            xn: buf("xn", f(chunk * d))?,
            q: buf("q", f(chunk * qd))?,
            k: buf("k", f(chunk * kvd))?,
            v: buf("v", f(chunk * kvd))?,
            att: buf("att", f(chunk * qd))?,
            h: buf("h", f(chunk * inter))?,
            logits: buf("logits", f(chunk * vocab))?,
            result: buf("result", f(2 * topk::MAX_K.max(chunk)))?,
            rows: attention::row_table(&gpu),
        };
        let step_buf = gpu.uniform("step", &Step::default());
        // One cos/sin table per distinct RoPE the layers use (Gemma 3: the
        // full-attention layers' and the sliding layers').
        let (tables, layer_table) = cfg.rope_tables();
        let cos_sin = tables
            .iter()
            .enumerate()
            .map(|(t, (theta, scaling))| {
                let table = rope::rope_table(ctx, cfg.head_dim, *theta, scaling);
                gpu.upload(&format!("rope.cos_sin.{t}"), bytemuck::cast_slice(&table))
            })
            .collect::<Result<Vec<_>, _>>()?;

        // Weights: matrices as stored, norm vectors widened to f32 (tiny).
        let weight_bytes = w.total_bytes() as u64;
        let upload = |name: WeightName, t: &Tensor| -> Result<GpuWeight, ExecError> {
            Ok(GpuWeight::upload(&gpu, &name.to_string(), t)?)
        };
        let norm = |gpu: &Gpu, name: WeightName, t: &Tensor| {
            gpu.upload(&name.to_string(), bytemuck::cast_slice(&t.to_f32()))
        };
        // RMSNorm weights: Gemma's (1 + w), added in f32 as transformers does.
        let offset = cfg.arch.norm_weight_offset;
        let norm_w = |gpu: &Gpu, name: WeightName, t: &Tensor| {
            let w: Vec<f32> = t.to_f32().into_iter().map(|v| offset + v).collect();
            gpu.upload(&name.to_string(), bytemuck::cast_slice(&w))
        };

        let mut body = Vec::new();
        let mut keep = cos_sin.clone();
        // x = embed_tokens(ids) (Gemma: * sqrt(D))                [T, D]
        let embed_w = upload(WeightName::Embed, &w.embed)?;
        body.push(embed::build_scaled(
            &gpu,
            &step_buf,
            &embed_w,
            &act.ids,
            &act.x,
            cfg.arch.embed_scale.unwrap_or(1.0),
        )?);
        let mut kv_bytes = 0u64;
        let shape = rope::Shape {
            n_heads: cfg.num_heads,
            n_kv_heads: cfg.num_kv_heads,
            head_dim: cfg.head_dim,
            layout: cfg.rope_layout,
        };
        let mut mats = Vec::new();
        let scale = cfg.attn_scale();
        // Gate and up outputs, for layers whose gate/up weights cannot stack.
        let mut glu_scratch: Option<(wgpu::Buffer, wgpu::Buffer)> = None;
        // RMSNorm of the residual x into xn as a dispatch of its own, on the
        // steps `when` holds (prefill); decode products normalise x inside
        // (see matmul::Norm).
        let norm_op = |name: &str, weight: &wgpu::Buffer, when: fn(&Step) -> bool| {
            rmsnorm::build(
                &gpu,
                &step_buf,
                name,
                d,
                cfg.rms_norm_eps,
                weight,
                &act.x,
                &act.xn,
            )
            .map(|op| op.only_when(when))
        };
        for (i, lw) in w.layers.iter().enumerate() {
            let name = |t| WeightName::Layer(i, t);
            // This layer's sliding window (0: full causal attention) and RoPE table.
            let window = cfg.layer_window(i);
            let cos_sin = &cos_sin[layer_table[i]];
            let k_cache = buf(&format!("layers.{i}.k_cache"), f(batch * ctx * kvd))?;
            let v_cache = buf(&format!("layers.{i}.v_cache"), f(batch * ctx * kvd))?;
            kv_bytes += 2 * f(batch * ctx * kvd);
            let attn_norm = norm_w(&gpu, name(LayerTensor::AttnNorm), &lw.attn_norm)?;
            let ffn_norm = norm_w(&gpu, name(LayerTensor::FfnNorm), &lw.ffn_norm)?;
            // Q/K/V stacked into one weight (one dispatch for all three), and
            // gate/up stacked (one dispatch that also applies SiLU·mul). Same
            // bytes as the file, in one buffer each. Only weights of one
            // encoding stack (Q4_K_M files keep attn_v in Q6_K): a mixed set
            // runs as separate products (`mixed_qkv`, `mixed_gu`).
            let same = |ts: &[&Tensor]| ts.iter().all(|t| t.dtype == ts[0].dtype);
            let mixed_qkv = (!same(&[&lw.wq, &lw.wk, &lw.wv]))
                .then(|| -> Result<_, ExecError> {
                    Ok([
                        upload(name(LayerTensor::Q), &lw.wq)?,
                        upload(name(LayerTensor::K), &lw.wk)?,
                        upload(name(LayerTensor::V), &lw.wv)?,
                    ])
                })
                .transpose()?;
            // Gate/up biases go in before SiLU, and the fused product knows
            // only SiLU: separate products then.
            let mixed_gu = (!same(&[&lw.w_gate, &lw.w_up])
                || lw.bias(LayerTensor::Gate).is_some()
                || cfg.arch.activation != crate::model::Activation::Silu)
                .then(|| -> Result<_, ExecError> {
                    Ok([
                        upload(name(LayerTensor::Gate), &lw.w_gate)?,
                        upload(name(LayerTensor::Up), &lw.w_up)?,
                    ])
                })
                .transpose()?;
            let wqkv = match mixed_qkv {
                Some(_) => None,
                None => Some(GpuWeight::upload(
                    &gpu,
                    &format!("layers.{i}.wqkv"),
                    &stack(&[&lw.wq, &lw.wk, &lw.wv]),
                )?),
            };
            let wo = upload(name(LayerTensor::O), &lw.wo)?;
            let wgu = match mixed_gu {
                Some(_) => None,
                None => Some(GpuWeight::upload(
                    &gpu,
                    &format!("layers.{i}.w_gate_up"),
                    &stack(&[&lw.w_gate, &lw.w_up]),
                )?),
            };
            let wd = upload(name(LayerTensor::Down), &lw.w_down)?;
            let l = format!("layers.{i}");
            // y += bias after the product of projection `t`, if it has one.
            let mut biases = Vec::new();
            let mut bias_op =
                |t: LayerTensor, y: &wgpu::Buffer| -> Result<Option<KernelOp>, ExecError> {
                    let Some(b) = lw.bias(t) else { return Ok(None) };
                    let bn = WeightName::Bias(i, t);
                    let bb = norm(&gpu, bn, b)?;
                    let op = crate::kernels::bias_add::build(
                        &gpu,
                        &step_buf,
                        &bn.to_string(),
                        b.numel(),
                        &bb,
                        y,
                    )?;
                    biases.push(bb);
                    Ok(Some(op))
                };
            let mm = |n: &str, wt: &GpuWeight, x: &wgpu::Buffer, y: &wgpu::Buffer, acc: bool| {
                matmul::build(
                    &gpu,
                    &step_buf,
                    &format!("{l}.{n}"),
                    wt,
                    x,
                    y,
                    acc,
                    matmul::Rows::Tokens,
                )
            };
            // y = xn @ W.T for one projection of a layer whose q|k|v or
            // gate|up are stored separately (decode steps: the norm inside).
            let normed_mm =
                |n: &str, wt: &GpuWeight, y: &wgpu::Buffer, nm: Option<matmul::Norm<'_>>| {
                    matmul::build_fused(
                        &gpu,
                        &step_buf,
                        &format!("{l}.{n}"),
                        wt,
                        &act.xn,
                        &[y],
                        false,
                        matmul::Rows::Tokens,
                        matmul::Fuse::None,
                        nm,
                    )
                };
            // xn = rms_norm(x) * attn_norm                        [T, D]
            // (decode steps: inside the QKV product, see matmul::Norm)
            body.push(norm_op(&format!("{l}.attn_norm"), &attn_norm, |s| {
                s.n_tokens > 1 && !s.per_row()
            })?);
            // q, k, v = xn @ Wq.T, xn @ Wk.T, xn @ Wv.T           [T, H*hd], [T, Hkv*hd] x2
            let attn_nm = Some(matmul::Norm {
                x: &act.x,
                weight: &attn_norm,
                eps: cfg.rms_norm_eps,
            });
            match (&wqkv, &mixed_qkv) {
                (Some(wqkv), _) => body.extend(matmul::build_fused(
                    &gpu,
                    &step_buf,
                    &format!("{l}.wqkv"),
                    wqkv,
                    &act.xn,
                    &[&act.q, &act.k, &act.v],
                    false,
                    matmul::Rows::Tokens,
                    matmul::Fuse::Split3 {
                        q_rows: qd,
                        k_rows: kvd,
                    },
                    attn_nm,
                )?),
                (None, Some(parts)) => {
                    for (wt, (n, y)) in
                        parts
                            .iter()
                            .zip([("wq", &act.q), ("wk", &act.k), ("wv", &act.v)])
                    {
                        body.extend(normed_mm(n, wt, y, attn_nm)?);
                    }
                }
                (None, None) => unreachable!("q/k/v weights are stacked or separate"),
            }
            // q, k, v += their biases (before RoPE, as transformers adds them)
            for (t, y) in [
                (LayerTensor::Q, &act.q),
                (LayerTensor::K, &act.k),
                (LayerTensor::V, &act.v),
            ] {
                body.extend(bias_op(t, y)?);
            }
            // q, k = per-head rms_norm(q) * q_norm, … * k_norm (Qwen3; before RoPE)
            for (t, y, heads) in [
                (LayerTensor::Q, &act.q, cfg.num_heads),
                (LayerTensor::K, &act.k, cfg.num_kv_heads),
            ] {
                let Some(hw) = lw.head_norm(t) else { continue };
                let hn = WeightName::HeadNorm(i, t);
                let hb = norm_w(&gpu, hn, hw)?;
                body.push(crate::kernels::head_norm::build(
                    &gpu,
                    &step_buf,
                    &hn.to_string(),
                    heads,
                    cfg.head_dim,
                    cfg.rms_norm_eps,
                    &hb,
                    y,
                )?);
                keep.push(hb);
            }
            // q, k = rope(q, k, pos); k_cache[pos], v_cache[pos] = k, v
            // (decode steps: inside the attention kernel below)
            body.push(
                rope::build(
                    &gpu,
                    &step_buf,
                    &format!("{l}.rope"),
                    &shape,
                    cos_sin,
                    &act.q,
                    &act.k,
                    &act.v,
                    &k_cache,
                    &v_cache,
                )?
                .only_when(|s| s.n_tokens > 1 && !s.per_row()),
            );
            // att = softmax(q k^T * scale + causal) v             [T, H*hd]
            // (scale = hd^-0.5 unless the architecture sets one)
            body.push(
                attention::build_scaled(
                    &gpu,
                    &step_buf,
                    &format!("{l}.attention"),
                    (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim),
                    [&act.q, &k_cache, &v_cache, &act.att],
                    window,
                    scale,
                )?
                .only_when(|s| s.n_tokens > 1 && !s.per_row()),
            );
            body.push(attention::build_decode_rope_scaled(
                &gpu,
                &step_buf,
                &format!("{l}.rope_attention"),
                &shape,
                cos_sin,
                [
                    &act.q, &act.k, &act.v, &k_cache, &v_cache, &act.att, &act.rows,
                ],
                window,
                scale,
            )?);
            // Post-norms (Gemma): the product goes to xn (free between the
            // q|k|v and gate|up products), then x += rms_norm(xn) * w.
            let post = |t: LayerTensor| -> Result<Option<wgpu::Buffer>, ExecError> {
                lw.post_norm(t)
                    .map(|pw| norm_w(&gpu, WeightName::PostNorm(i, t), pw))
                    .transpose()
                    .map_err(Into::into)
            };
            let (post_attn, post_ffn) = (post(LayerTensor::O)?, post(LayerTensor::Down)?);
            let post_op = |t: LayerTensor, pw: &wgpu::Buffer| {
                rmsnorm::build_accumulate(
                    &gpu,
                    &step_buf,
                    &WeightName::PostNorm(i, t).to_string(),
                    d,
                    cfg.rms_norm_eps,
                    pw,
                    &act.xn,
                    &act.x,
                )
            };
            // x += att @ Wo.T (+ bo)                              [T, D]
            // (post-norm: x += rms_norm(att @ Wo.T + bo) * w)
            match &post_attn {
                None => {
                    body.extend(mm("wo", &wo, &act.att, &act.x, true)?);
                    body.extend(bias_op(LayerTensor::O, &act.x)?);
                }
                Some(pw) => {
                    body.extend(mm("wo", &wo, &act.att, &act.xn, false)?);
                    body.extend(bias_op(LayerTensor::O, &act.xn)?);
                    body.push(post_op(LayerTensor::O, pw)?);
                }
            }
            // xn = rms_norm(x) * ffn_norm
            // (decode steps: inside the gate/up product)
            body.push(norm_op(&format!("{l}.ffn_norm"), &ffn_norm, |s| {
                s.n_tokens > 1 && !s.per_row()
            })?);
            // h = silu(xn @ Wg.T) * (xn @ Wu.T)                   [T, I]
            let ffn_nm = Some(matmul::Norm {
                x: &act.x,
                weight: &ffn_norm,
                eps: cfg.rms_norm_eps,
            });
            match (&wgu, &mixed_gu) {
                (Some(wgu), _) => body.extend(matmul::build_fused(
                    &gpu,
                    &step_buf,
                    &format!("{l}.w_gate_up"),
                    wgu,
                    &act.xn,
                    &[&act.h],
                    false,
                    matmul::Rows::Tokens,
                    matmul::Fuse::Glu,
                    ffn_nm,
                )?),
                (None, Some([wg, wu])) => {
                    // Gate and up into scratch rows, then silu(g) * u.
                    if glu_scratch.is_none() {
                        glu_scratch = Some((
                            buf("glu.gate", f(chunk * inter))?,
                            buf("glu.up", f(chunk * inter))?,
                        ));
                    }
                    let (g, u) = glu_scratch.as_ref().expect("allocated above");
                    for (wt, n, y) in [(wg, "w_gate", g), (wu, "w_up", u)] {
                        body.extend(normed_mm(n, wt, y, ffn_nm)?);
                    }
                    body.extend(bias_op(LayerTensor::Gate, g)?);
                    body.extend(bias_op(LayerTensor::Up, u)?);
                    body.push(crate::kernels::silu_mul::build_act(
                        &gpu,
                        &step_buf,
                        &format!("{l}.silu_mul"),
                        inter,
                        g,
                        u,
                        &act.h,
                        cfg.arch.activation,
                    )?);
                }
                (None, None) => unreachable!("gate/up weights are stacked or separate"),
            }
            // x += h @ Wd.T (+ bd)                               [T, D]
            // (post-norm: x += rms_norm(h @ Wd.T + bd) * w)
            match &post_ffn {
                None => {
                    body.extend(mm("w_down", &wd, &act.h, &act.x, true)?);
                    body.extend(bias_op(LayerTensor::Down, &act.x)?);
                }
                Some(pw) => {
                    body.extend(mm("w_down", &wd, &act.h, &act.xn, false)?);
                    body.extend(bias_op(LayerTensor::Down, &act.xn)?);
                    body.push(post_op(LayerTensor::Down, pw)?);
                }
            }
            keep.extend([k_cache, v_cache, attn_norm, ffn_norm]);
            keep.extend(post_attn.into_iter().chain(post_ffn));
            keep.extend(biases);
            mats.extend(wqkv.into_iter().chain(mixed_qkv.into_iter().flatten()));
            mats.extend(wgu.into_iter().chain(mixed_gu.into_iter().flatten()));
            mats.extend([wo, wd]);
        }
        // xn = rms_norm(x) * final_norm
        let final_norm = norm_w(&gpu, WeightName::FinalNorm, &w.final_norm)?;
        // (one logit row: inside the lm_head product)
        body.push(norm_op("final_norm", &final_norm, |s| {
            s.n_out_rows > 1 && !s.per_row()
        })?);
        // logits[rows] = xn[rows] @ W_out.T (tied: the embedding)   [rows, V]
        let out_w = match &w.lm_head {
            Some(t) => upload(WeightName::LmHead, t)?,
            None => embed_w,
        };
        let head: Vec<KernelOp> = matmul::build_fused(
            &gpu,
            &step_buf,
            "lm_head",
            &out_w,
            &act.xn,
            &[&act.logits],
            false,
            matmul::Rows::OutRows,
            matmul::Fuse::None,
            Some(matmul::Norm {
                x: &act.x,
                weight: &final_norm,
                eps: cfg.rms_norm_eps,
            }),
        )?
        .into();
        let argmax = argmax::build(&gpu, &step_buf, vocab, &act.logits, &act.result)?;
        keep.push(final_norm);
        keep.extend(glu_scratch.into_iter().flat_map(|(g, u)| [g, u]));
        let readback_size = f(2 * topk::MAX_K);
        let readback = gpu.readback_buffer("readback", readback_size);
        let greedy_slots = [
            gpu.readback_buffer("greedy.0", 8),
            gpu.readback_buffer("greedy.1", 8),
        ];
        Ok(VramExecutor {
            gpu,
            cfg: cfg.clone(),
            ctx,
            chunk,
            pos: vec![0; batch],
            seq: 0,
            step_buf,
            act,
            body,
            head,
            argmax,
            topk: None,
            penalty: None,
            readback,
            readback_size,
            greedy_slots,
            weight_bytes,
            kv_bytes,
            counters: ExecCounters::default(),
            profiler: None,
            _keep: keep,
        })
    }

    pub fn gpu(&self) -> &Arc<Gpu> {
        &self.gpu
    }

    /// Name and class of every dispatch a step can record, in order: the
    /// body (embedding → final norm), then the lm_head (argmax, top-k and
    /// penalties left out).
    pub fn ops(&self) -> Vec<(&str, crate::kernels::KernelClass)> {
        self.body
            .iter()
            .chain(&self.head)
            .map(|op| (op.name.as_str(), op.class))
            .collect()
    }

    /// Most rows (sequences) one batched decode step takes.
    pub fn max_rows(&self) -> usize {
        self.chunk.min(attention::MAX_ROWS)
    }

    /// Times every dispatch with timestamp queries (one pass per dispatch).
    /// Returns false when the adapter has no timestamps.
    pub fn enable_profiling(&mut self, on: bool) -> bool {
        self.profiler = if on {
            crate::gpu::profiler::Profiler::new(&self.gpu)
        } else {
            None
        };
        self.profiler.is_some()
    }

    fn ensure_readback(&mut self, size: u64) {
        if size > self.readback_size {
            self.readback = self.gpu.readback_buffer("readback", size);
            self.readback_size = size;
        }
    }

    /// Records the step's dispatches (body, head if logit rows are asked
    /// for, argmax / top-k) into `enc`; returns how many were recorded.
    fn record_ops(
        &mut self,
        enc: &mut wgpu::CommandEncoder,
        step: &Step,
        rb: Option<Readback>,
    ) -> u64 {
        let step = *step;
        let n_out_rows = step.n_out_rows;
        let mut dispatched = 0u64;
        {
            let mut ops: Vec<&KernelOp> = self.body.iter().collect();
            if n_out_rows > 0 {
                ops.extend(self.head.iter());
            }
            if matches!(
                rb,
                Some(Readback::Argmax | Readback::TopK(_) | Readback::LastLogits)
            ) {
                ops.extend(self.penalty.as_ref().and_then(|p| p.op()));
            }
            match rb {
                Some(Readback::Argmax) => ops.push(&self.argmax),
                Some(Readback::TopK(_)) => ops.extend(self.topk.as_ref().map(|t| &t.1)),
                _ => {}
            }
            if let Some(prof) = self.profiler.as_mut() {
                // Profiling: one pass per dispatch, each with timestamps.
                for op in ops {
                    if op.groups(&step).contains(&0) {
                        continue;
                    }
                    let tw = prof.next(op.class);
                    let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: Some(&op.name),
                        timestamp_writes: tw,
                    });
                    op.record(&mut pass, &step);
                    self.counters.count(op.class);
                    dispatched += 1;
                }
                prof.resolve(enc);
            } else {
                let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("forward"),
                    timestamp_writes: None,
                });
                for op in ops {
                    if op.record(&mut pass, &step) {
                        self.counters.count(op.class);
                        dispatched += 1;
                    }
                }
            }
        }
        dispatched
    }

    /// Submits one greedy decode step at the current position whose input id
    /// is already in `act.ids`; its pick goes to `greedy_slots[slot]` and into
    /// `act.ids` for the step after it (fed back on the GPU).
    fn submit_greedy(&mut self, slot: usize) -> wgpu::SubmissionIndex {
        let step = Step {
            kv_base: (self.seq * self.ctx) as u32,
            ..Step::tokens(1, self.pos[self.seq] as u32)
        };
        self.gpu
            .queue
            .write_buffer(&self.step_buf, 0, bytemuck::bytes_of(&step));
        let mut enc = self
            .gpu
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("greedy step"),
            });
        let dispatched = self.record_ops(&mut enc, &step, Some(Readback::Argmax));
        enc.copy_buffer_to_buffer(&self.act.result, 0, &self.greedy_slots[slot], 0, 8);
        enc.copy_buffer_to_buffer(&self.act.result, 0, &self.act.ids, 0, 4);
        let idx = self.gpu.queue.submit([enc.finish()]);
        self.counters.steps += 1;
        self.counters.submissions += 1;
        self.counters.dispatches_last_decode = dispatched;
        self.pos[self.seq] += 1;
        idx
    }

    /// Runs one chunk (≤ `self.chunk` tokens) and reads back `rb`.
    fn run_chunk(
        &mut self,
        ids: &[u32],
        rb: Option<Readback>,
    ) -> Result<Option<StepOutput>, ExecError> {
        let n = ids.len();
        let vocab = self.cfg.vocab_size;
        let (out_row0, n_out_rows) = match rb {
            None => (0, 0),
            Some(Readback::AllLogits) => (0, n),
            Some(_) => (n - 1, 1),
        };
        let step = Step {
            n_tokens: n as u32,
            pos0: self.pos[self.seq] as u32,
            out_row0: out_row0 as u32,
            n_out_rows: n_out_rows as u32,
            kv_base: (self.seq * self.ctx) as u32,
            _pad: [0; 3],
        };
        let q = &self.gpu.queue;
        q.write_buffer(&self.step_buf, 0, bytemuck::bytes_of(&step));
        q.write_buffer(&self.act.ids, 0, bytemuck::cast_slice(ids));
        if let Some(Readback::TopK(k)) = rb {
            let k = k.clamp(1, topk::MAX_K.min(vocab));
            if self.topk.as_ref().map(|t| t.0) != Some(k) {
                let op = topk::build(
                    &self.gpu,
                    &self.step_buf,
                    vocab,
                    k,
                    &self.act.logits,
                    &self.act.result,
                )?;
                self.topk = Some((k, op));
            }
        }
        let mut enc = self
            .gpu
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("step"),
            });
        let dispatched = self.record_ops(&mut enc, &step, rb);
        let read_len: u64 = match rb {
            None => 0,
            Some(Readback::Argmax) => 8,
            Some(Readback::TopK(_)) => 8 * self.topk.as_ref().map_or(1, |t| t.0) as u64,
            Some(Readback::LastLogits) => (vocab * 4) as u64,
            Some(Readback::AllLogits) => (n * vocab * 4) as u64,
        };
        if read_len > 0 {
            self.ensure_readback(read_len);
            let src = match rb {
                Some(Readback::Argmax) | Some(Readback::TopK(_)) => &self.act.result,
                _ => &self.act.logits,
            };
            enc.copy_buffer_to_buffer(src, 0, &self.readback, 0, read_len);
        }
        self.gpu.queue.submit([enc.finish()]);
        self.counters.submissions += 1;
        if n == 1 {
            self.counters.dispatches_last_decode = dispatched;
        }
        self.pos[self.seq] += n;
        if let Some(prof) = self.profiler.as_mut() {
            prof.collect(&self.gpu)?;
        }
        if read_len == 0 {
            return Ok(None);
        }
        let bytes = self.gpu.read(&self.readback, read_len)?;
        self.counters.readback_bytes += read_len;
        Ok(rb.map(|rb| super::decode_readback(rb, &bytes, n, false)))
    }
}

impl Executor for VramExecutor {
    fn mode(&self) -> &'static str {
        "vram"
    }
    fn context_len(&self) -> usize {
        self.ctx
    }
    fn position(&self) -> usize {
        self.pos[self.seq]
    }
    /// Forgets every sequence and selects sequence 0.
    fn reset(&mut self) {
        self.pos.iter_mut().for_each(|p| *p = 0);
        self.seq = 0;
    }
    fn sequences(&self) -> usize {
        self.pos.len()
    }
    fn select(&mut self, seq: usize) -> Result<(), ExecError> {
        if seq >= self.pos.len() {
            return Err(ExecError::NoSuchSequence {
                seq,
                resident: self.pos.len(),
            });
        }
        self.seq = seq;
        Ok(())
    }
    fn truncate(&mut self, pos: usize) -> Result<(), ExecError> {
        super::check_truncate(pos, self.pos[self.seq])?;
        self.pos[self.seq] = pos;
        Ok(())
    }
    fn decode_batch(&mut self, tokens: &[u32]) -> Result<Vec<u32>, ExecError> {
        if tokens.len() != self.pos.len() {
            return Err(ExecError::BatchMismatch {
                tokens: tokens.len(),
                sequences: self.pos.len(),
            });
        }
        let rows: Vec<(usize, u32)> = tokens.iter().copied().enumerate().collect();
        Ok(self
            .decode_rows(&rows, Readback::Argmax)?
            .iter()
            .map(super::argmax_of)
            .collect())
    }
    /// One step of one token for each listed sequence, all rows in the same
    /// dispatches: the matvecs run over every row (the weights are read once
    /// per workgroup for all rows) and the attention takes each row's own
    /// position and KV cache from the row table. Each row's arithmetic is the
    /// one of its solo decode step, so results equal solo runs exactly.
    fn decode_rows(
        &mut self,
        rows: &[(usize, u32)],
        rb: Readback,
    ) -> Result<Vec<StepOutput>, ExecError> {
        let b = rows.len();
        if b == 0 {
            return Ok(Vec::new());
        }
        if b > self.max_rows() {
            return Err(ExecError::TooManyRows {
                rows: b,
                max: self.max_rows(),
            });
        }
        let mut seen = vec![false; self.pos.len()];
        let mut table = Vec::with_capacity(b);
        for &(seq, tok) in rows {
            if seq >= self.pos.len() || std::mem::replace(&mut seen[seq], true) {
                return Err(if seq < self.pos.len() {
                    ExecError::DuplicateSequence { seq }
                } else {
                    ExecError::NoSuchSequence {
                        seq,
                        resident: self.pos.len(),
                    }
                });
            }
            super::check_step(&[tok], self.pos[seq], self.ctx, self.cfg.vocab_size)?;
            table.push((self.pos[seq], seq * self.ctx));
        }
        let vocab = self.cfg.vocab_size;
        let ids: Vec<u32> = rows.iter().map(|r| r.1).collect();
        let step = Step::decode_rows(b as u32);
        let q = &self.gpu.queue;
        q.write_buffer(&self.step_buf, 0, bytemuck::bytes_of(&step));
        q.write_buffer(&self.act.ids, 0, bytemuck::cast_slice(&ids));
        q.write_buffer(
            &self.act.rows,
            0,
            bytemuck::cast_slice(&attention::row_entries(&table)),
        );
        let greedy = rb == Readback::Argmax;
        let mut enc = self
            .gpu
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("batched decode step"),
            });
        let dispatched = self.record_ops(&mut enc, &step, greedy.then_some(rb));
        let read_len = if greedy { 8 * b } else { b * vocab * 4 } as u64;
        self.ensure_readback(read_len);
        let src = if greedy {
            &self.act.result
        } else {
            &self.act.logits
        };
        enc.copy_buffer_to_buffer(src, 0, &self.readback, 0, read_len);
        self.gpu.queue.submit([enc.finish()]);
        self.counters.steps += 1;
        self.counters.submissions += 1;
        self.counters.dispatches_last_decode = dispatched;
        for &(seq, _) in rows {
            self.pos[seq] += 1;
        }
        if let Some(prof) = self.profiler.as_mut() {
            prof.collect(&self.gpu)?;
        }
        let bytes = self.gpu.read(&self.readback, read_len)?;
        self.counters.readback_bytes += read_len;
        if greedy {
            let words: &[u32] = bytemuck::cast_slice(&bytes);
            return Ok(words
                .chunks(2)
                .map(|p| StepOutput::Token {
                    id: p[0],
                    logit: f32::from_bits(p[1]),
                })
                .collect());
        }
        let logits: &[f32] = bytemuck::cast_slice(&bytes);
        Ok(logits
            .chunks(vocab)
            .map(|row| match rb {
                // No per-row top-k kernel: the k best of the row, on the CPU.
                Readback::TopK(k) => StepOutput::Candidates(super::top_k_of(row, k)),
                _ => StepOutput::Logits {
                    rows: 1,
                    data: row.to_vec(),
                },
            })
            .collect())
    }
    fn step(&mut self, ids: &[u32], rb: Readback) -> Result<StepOutput, ExecError> {
        super::check_step(ids, self.pos[self.seq], self.ctx, self.cfg.vocab_size)?;
        for (_, scaling) in self.cfg.rope_tables().0 {
            rope::check_step(scaling, self.pos[self.seq], ids.len())
                .map_err(ExecError::Position)?;
        }
        self.counters.steps += 1;
        let chunks: Vec<&[u32]> = ids.chunks(self.chunk).collect();
        let last = chunks.len() - 1;
        let mut all = Vec::new();
        let mut rows = 0;
        for (i, c) in chunks.into_iter().enumerate() {
            // Every chunk's logits when all are asked for; else the last chunk's.
            let want = (rb == Readback::AllLogits || i == last).then_some(rb);
            match self.run_chunk(c, want)? {
                Some(StepOutput::Logits { rows: r, data }) if rb == Readback::AllLogits => {
                    rows += r;
                    all.extend(data);
                }
                Some(out) if i == last => return Ok(out),
                _ => {}
            }
        }
        Ok(StepOutput::Logits { rows, data: all })
    }
    fn set_penalties(
        &mut self,
        list: &[crate::kernels::penalty::Entry],
    ) -> Result<bool, ExecError> {
        if list.is_empty() && self.penalty.is_none() {
            return Ok(true);
        }
        let fits = self
            .penalty
            .as_ref()
            .is_some_and(|p| p.capacity() >= list.len());
        if !fits {
            self.penalty = Some(crate::kernels::penalty::PenaltyOp::new(
                &self.gpu,
                &self.step_buf,
                self.cfg.vocab_size,
                &self.act.logits,
                list.len().next_power_of_two(),
            )?);
        }
        if let Some(p) = self.penalty.as_mut() {
            p.set(&self.gpu, list);
        }
        Ok(true)
    }
    fn counters(&self) -> &ExecCounters {
        &self.counters
    }
    fn weight_bytes(&self) -> u64 {
        self.weight_bytes
    }
    fn kv_bytes(&self) -> u64 {
        self.kv_bytes
    }
    fn profile(
        &self,
    ) -> Option<std::collections::BTreeMap<crate::kernels::KernelClass, (f64, u64)>> {
        self.profiler.as_ref().map(|p| p.by_class.clone())
    }
    fn set_profiling(&mut self, on: bool) -> bool {
        self.enable_profiling(on)
    }
    /// Pipelined: step i + 1 is recorded and submitted (its input id copied
    /// from step i's argmax on the GPU) before step i's id is read back, so
    /// the CPU's recording and the readback round trip overlap GPU work.
    fn decode_greedy(
        &mut self,
        first: u32,
        n: usize,
        on_token: &mut dyn FnMut(u32) -> bool,
    ) -> Result<Vec<u32>, ExecError> {
        if self.profiler.is_some() {
            // One pass per dispatch with timestamps: keep steps apart.
            return super::decode_greedy_blocking(self, first, n, on_token);
        }
        let n = n.min(self.ctx.saturating_sub(self.pos[self.seq]));
        if n == 0 {
            return Ok(Vec::new());
        }
        super::check_step(&[first], self.pos[self.seq], self.ctx, self.cfg.vocab_size)?;
        let start = self.pos[self.seq];
        self.gpu
            .queue
            .write_buffer(&self.act.ids, 0, bytemuck::bytes_of(&first));
        let mut in_flight = self.submit_greedy(0);
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let next = (i + 1 < n).then(|| self.submit_greedy((i + 1) % 2));
            let bytes =
                self.gpu
                    .read_after(&self.greedy_slots[i % 2], 8, Some(in_flight.clone()))?;
            self.counters.readback_bytes += 8;
            let id = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
            out.push(id);
            if !on_token(id) {
                break;
            }
            if let Some(idx) = next {
                in_flight = idx;
            }
        }
        // A step submitted past a stop only wrote the cache beyond the
        // position kept here: later steps overwrite it.
        self.pos[self.seq] = start + out.len();
        Ok(out)
    }
}
