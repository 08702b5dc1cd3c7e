//! Human-readable plans, JSON, and the Llama-2-70B-on-groq-v1 study.

use super::cost::{
    gpu_inputs_from_plan, modeled_gpu_token_latency, modeled_token_latency_with, CarryModel,
    CostOptions, GpuSpec, Precision,
};
use super::placement::{place, ChipPlan, PlaceOptions, Plan, TensorInfo, WeightFormat};
use super::{ChipSpec, PlacementError};
use crate::model::{LayerTensor, LlamaConfig, WeightName};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt::Write;

/// `1536 B`, `60.0 KiB`, `211.3 MiB`, `64.2 GiB`.
pub fn fmt_bytes(b: usize) -> String {
    let b = b as f64;
    if b < 1024.0 {
        format!("{b} B")
    } else if b < 1024.0 * 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else if b < 1024.0 * 1024.0 * 1024.0 {
        format!("{:.1} MiB", b / (1024.0 * 1024.0))
    } else {
        format!("{:.2} GiB", b / (1024.0 * 1024.0 * 1024.0))
    }
}

/// `12.3 µs`, `1.84 ms`.
pub fn fmt_seconds(s: f64) -> String {
    if s < 1e-3 {
        format!("{:.1} µs", s * 1e6)
    } else if s < 1.0 {
        format!("{:.2} ms", s * 1e3)
    } else {
        format!("{s:.2} s")
    }
}

fn range(a: usize, b: usize) -> String {
    format!("{a}..{b}")
}

/// `L3 wq[0..576) wk wv kv` — what a chip holds, one layer prefix per layer.
pub fn chip_contents(plan: &Plan, chip: &ChipPlan) -> String {
    let shapes: HashMap<&str, (usize, usize)> = plan
        .model
        .tensors
        .iter()
        .map(|t| (t.weight.as_str(), (t.rows, t.cols)))
        .collect();
    // Forward order: the position of each piece's op in `chip.ops`.
    let op_index = |label: &str| {
        chip.ops
            .iter()
            .position(|o| o == label)
            .unwrap_or(usize::MAX)
    };
    let tied = plan.model.tie_word_embeddings;
    type Item = ((usize, usize, usize), Option<usize>, String);
    let mut items: Vec<Item> = Vec::new();
    for p in &chip.tensors {
        let op = if p.weight == "embed" && tied {
            "lm_head"
        } else {
            p.weight.as_str()
        };
        let key = (op_index(op), p.row_start, p.col_start);
        let (layer, short) = match p.weight.strip_prefix("layers.") {
            Some(rest) => {
                let (l, name) = rest.split_once('.').unwrap_or((rest, ""));
                (l.parse().ok(), name.to_string())
            }
            None if p.weight == "embed" && plan.model.tie_word_embeddings => {
                (None, "lm_head(embed)".to_string())
            }
            None => (None, p.weight.clone()),
        };
        let (rows, cols) = shapes.get(p.weight.as_str()).copied().unwrap_or((0, 0));
        let mut s = short;
        let whole_rows = p.row_start == 0 && p.row_end == rows;
        let whole_cols = p.col_start == 0 && p.col_end == cols;
        if rows == 1 && !whole_cols {
            write!(s, "[{})", range(p.col_start, p.col_end)).unwrap();
        } else if !whole_rows || !whole_cols {
            write!(s, "[{}", range(p.row_start, p.row_end)).unwrap();
            if !whole_cols {
                write!(s, ", {}", range(p.col_start, p.col_end)).unwrap();
            }
            s.push(')');
        }
        items.push((key, layer, s));
    }
    let heads = plan.model.num_kv_heads;
    let ctx = plan.model.context_len;
    for k in &chip.kv {
        let mut s = "kv".to_string();
        let whole_h = k.head_start == 0 && k.head_end == heads;
        let whole_p = k.pos_start == 0 && k.pos_end == ctx;
        if !whole_h || !whole_p {
            s.push('[');
            if !whole_h {
                write!(s, "h{}", range(k.head_start, k.head_end)).unwrap();
            }
            if !whole_p {
                if !whole_h {
                    s.push_str(", ");
                }
                write!(s, "p{}", range(k.pos_start, k.pos_end)).unwrap();
            }
            s.push(')');
        }
        let key = (
            op_index(&format!("layers.{}.attention", k.layer)),
            k.head_start,
            k.pos_start,
        );
        items.push((key, Some(k.layer), s));
    }
    items.sort_by_key(|i| i.0);
    let mut out = String::new();
    let mut last_layer: Option<Option<usize>> = None;
    for (_, layer, s) in items {
        if !out.is_empty() {
            out.push(' ');
        }
        if last_layer != Some(layer) {
            if let Some(l) = layer {
                write!(out, "L{l} ").unwrap();
            }
            last_layer = Some(layer);
        }
        out.push_str(&s);
    }
    out
}

/// A readable table: per chip its layers and tensors, SRAM used / capacity,
/// link bytes in / out per token; then a totals line.
pub fn plan_table(plan: &Plan) -> String {
    let m = &plan.model;
    let s = &plan.spec;
    let t = &plan.totals;
    let mut out = String::new();
    writeln!(
        out,
        "model: {} layers, hidden {}, ffn {}, {} heads / {} kv heads, vocab {}{} — {} params, {} of weights",
        m.num_layers,
        m.hidden_size,
        m.intermediate_size,
        m.num_heads,
        m.num_kv_heads,
        m.vocab_size,
        if m.tie_word_embeddings { ", tied embedding" } else { "" },
        m.params,
        fmt_bytes(m.weight_bytes)
    )
    .unwrap();
    writeln!(
        out,
        "KV cache: {} positions × batch {} × {} B/value = {}; microbatch {} token(s)",
        m.context_len,
        m.batch,
        m.kv_dtype_bytes,
        fmt_bytes(m.kv_bytes),
        m.microbatch_tokens
    )
    .unwrap();
    writeln!(
        out,
        "chip: {} — {} SRAM = {} slices of {}",
        s.name,
        fmt_bytes(s.sram_bytes),
        s.slices_per_chip(),
        fmt_bytes(s.slice_bytes)
    )
    .unwrap();
    out.push('\n');
    let rows: Vec<[String; 5]> = plan
        .chips
        .iter()
        .map(|c| {
            let layers = match (c.stage_layers.first(), c.stage_layers.last()) {
                (Some(a), Some(b)) if a == b => format!("{a}"),
                (Some(a), Some(b)) => format!("{a}-{b}"),
                _ => "-".into(),
            };
            [
                c.index.to_string(),
                layers,
                format!(
                    "{} / {} {:>3.0}%",
                    fmt_bytes(c.sram_used),
                    fmt_bytes(c.sram_capacity),
                    100.0 * c.sram_used as f64 / c.sram_capacity as f64
                ),
                format!(
                    "{} / {}",
                    c.link_bytes_in_per_token, c.link_bytes_out_per_token
                ),
                chip_contents(plan, c),
            ]
        })
        .collect();
    let head = [
        "chip",
        "layers",
        "SRAM used / capacity",
        "link B/token in / out",
        "holds",
    ];
    let w: Vec<usize> = (0..4)
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([head[i].len()])
                .max()
                .unwrap()
        })
        .collect();
    let line = |r: [&str; 5]| {
        format!(
            "{:>w0$}  {:<w1$}  {:>w2$}  {:>w3$}  {}\n",
            r[0],
            r[1],
            r[2],
            r[3],
            r[4],
            w0 = w[0],
            w1 = w[1],
            w2 = w[2],
            w3 = w[3]
        )
    };
    out.push_str(&line(head));
    for r in &rows {
        out.push_str(&line([&r[0], &r[1], &r[2], &r[3], &r[4]]));
    }
    out.push('\n');
    writeln!(
        out,
        "totals: {} chip(s){}; weights {}, KV {}, scratch {}; SRAM used max {} mean {} ({:.0}% of capacity)",
        t.chips_used,
        t.max_chips.map(|m| format!(" of at most {m}")).unwrap_or_default(),
        fmt_bytes(t.weight_bytes),
        fmt_bytes(t.kv_bytes),
        fmt_bytes(t.scratch_bytes),
        fmt_bytes(t.sram_used_max),
        fmt_bytes(t.sram_used_mean as usize),
        100.0 * t.sram_utilization
    )
    .unwrap();
    writeln!(
        out,
        "links: {} B/token in {} transfer(s) ({} hop(s) forward + loopback of {} B)",
        t.link_bytes_per_token, t.link_transfers_per_token, t.hops, t.loopback_bytes_per_token
    )
    .unwrap();
    if plan.tp > 1 {
        out.push_str(&tp_groups(plan));
    }
    out
}

/// Tensor parallelism: each pipeline group's chips, what they run (the first
/// chip's items; the others run their own rows of the same) and the
/// collective after it (who sends which columns of what to whom).
fn tp_groups(plan: &Plan) -> String {
    let mut out = String::new();
    let n = plan.stages.iter().map(|s| s.group + 1).max().unwrap_or(0);
    writeln!(
        out,
        "\ntensor parallelism: --tp {}, {n} pipeline groups (chips of a group run side by side; after each, the collective)",
        plan.tp
    )
    .unwrap();
    for g in 0..n {
        let st: Vec<&super::StagePlan> = plan.stages.iter().filter(|s| s.group == g).collect();
        let chips: Vec<String> = st.iter().map(|s| s.chip.to_string()).collect();
        let mut sends: Vec<String> = Vec::new();
        for s in &st {
            // (activation, columns) and the chips they go to.
            type Key = (String, (usize, usize));
            let mut by: Vec<(Key, Vec<usize>)> = Vec::new();
            for x in &s.sends {
                let key = (x.name.clone(), x.cols);
                match by.iter_mut().find(|b| b.0 == key) {
                    Some(b) => b.1.push(x.to_chip),
                    None => by.push((key, vec![x.to_chip])),
                }
            }
            for ((name, c), to) in by {
                let to: Vec<String> = to.iter().map(|t| t.to_string()).collect();
                sends.push(format!(
                    "{} {name}[{}..{}) → {}",
                    s.chip,
                    c.0,
                    c.1,
                    to.join(",")
                ));
            }
        }
        writeln!(
            out,
            "  group {g} (chips {}): {}{}",
            chips.join(","),
            st.first().map_or(String::new(), |s| s.work.join(", ")),
            if sends.is_empty() {
                String::new()
            } else {
                format!(" ⇒ {}", sends.join("; "))
            }
        )
        .unwrap();
    }
    out
}

/// [`plan_table`] fitted to `width` columns: long lines are wrapped at
/// " ; " / ", " boundaries where they can be, and each chip's "holds"
/// column is cut with "…" (the full list: `plan_table`, `sramlm plan --wide`).
pub fn plan_table_fit(plan: &Plan, width: usize) -> String {
    let full = plan_table(plan);
    let mut out = String::new();
    // The chip rows: every line between the header line and the blank line
    // after the rows, header included.
    let mut in_rows = false;
    for line in full.lines() {
        if line.trim_start().starts_with("chip ") && line.contains("holds") {
            in_rows = true;
        } else if line.is_empty() {
            in_rows = false;
        }
        if in_rows {
            out.push_str(&cut(line, width));
            out.push('\n');
        } else {
            for l in wrap(line, width) {
                out.push_str(&l);
                out.push('\n');
            }
        }
    }
    out
}

/// `s` cut to `width` characters, "…" marking the cut.
pub(crate) fn cut(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_string();
    }
    let mut t: String = s.chars().take(width.saturating_sub(1)).collect();
    t.push('…');
    t
}

/// `s` wrapped to `width` at spaces after separators (`;`, `,`, `—`),
/// continuation lines indented by two spaces.
pub(crate) fn wrap(s: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut rest = s.to_string();
    let mut indent = "";
    while indent.len() + rest.chars().count() > width {
        let limit = width - indent.len();
        let byte_limit = rest
            .char_indices()
            .nth(limit)
            .map_or(rest.len(), |(i, _)| i);
        let head = &rest[..byte_limit];
        let at = ["; ", ", ", " — ", " "].iter().find_map(|sep| {
            head.rfind(sep)
                .map(|i| i + sep.len())
                .filter(|&i| i > limit / 3)
        });
        let Some(at) = at else { break };
        lines.push(format!("{indent}{}", rest[..at].trim_end()));
        rest = rest[at..].to_string();
        indent = "  ";
    }
    lines.push(format!("{indent}{rest}"));
    lines
}

/// The plan as pretty JSON (stable snake_case field names).
pub fn plan_json(plan: &Plan) -> String {
    serde_json::to_string_pretty(plan).expect("a plan always serializes")
}

/// One way to run a model for [`study`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scenario {
    pub label: String,
    /// Every matrix, embedding and lm_head included.
    pub matrices: WeightFormat,
    pub norms: WeightFormat,
    pub precision: Precision,
    pub kv_dtype_bytes: usize,
    /// `None`: the config's context.
    pub context_len: Option<usize>,
    pub batch: usize,
}

/// Llama-2-70B as Groq would run it: int8 weights (1 byte per value; scales
/// not counted) and fp16 weights, fp16 norms and KV cache, full 4096 context,
/// one sequence.
pub fn llama2_70b_scenarios() -> Vec<Scenario> {
    [
        (
            "int8 weights, int8 compute",
            WeightFormat::Int8,
            Precision::Int8,
        ),
        (
            "Q8_0 weights (34 B / 32 values), int8 compute",
            WeightFormat::Q8_0,
            Precision::Int8,
        ),
        (
            "fp16 weights, fp16 compute",
            WeightFormat::F16,
            Precision::Fp16,
        ),
    ]
    .into_iter()
    .map(|(label, matrices, precision)| Scenario {
        label: label.into(),
        matrices,
        norms: WeightFormat::F16,
        precision,
        kv_dtype_bytes: 2,
        context_len: None,
        batch: 1,
    })
    .collect()
}

/// The same plan costed under other link assumptions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StudyVariant {
    pub label: String,
    pub modeled_link_s: f64,
    pub modeled_token_latency_s: f64,
    pub modeled_tokens_per_s_per_user: f64,
}

/// The result of one [`Scenario`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StudyRow {
    pub label: String,
    pub spec: String,
    pub chips: usize,
    pub weight_bytes: usize,
    pub kv_bytes: usize,
    pub sram_utilization: f64,
    pub link_bytes_per_token: usize,
    /// As planned: f32 live sets on one link per hop (what the emulator moves).
    pub modeled_sram_s: f64,
    pub modeled_compute_s: f64,
    pub modeled_link_s: f64,
    /// What the latency floor per dependent stage adds (`chip::cost`,
    /// "Latency model"; groq-v1's floor is fitted), the stages, the floor.
    pub modeled_floor_s: f64,
    pub dependent_stages: usize,
    pub stage_latency_s: f64,
    pub modeled_token_latency_s: f64,
    pub modeled_tokens_per_s_per_user: f64,
    /// Sequences in flight that fill the pipeline, and the throughput then
    /// (assuming their KV caches were resident: this plan holds `batch`).
    pub modeled_pipeline_depth: f64,
    pub modeled_full_pipeline_tokens_per_s: f64,
    /// fp16 activations; fp16 residual stream only (a lower bound).
    pub variants: Vec<StudyVariant>,
    /// The same model and context on an H100 (modeled; ignores whether it
    /// fits the GPU's memory), for scale.
    pub modeled_h100_tokens_per_s: f64,
}

/// Plans `cfg` on `spec` once per scenario and costs each plan.
pub fn study(
    cfg: &LlamaConfig,
    spec: &ChipSpec,
    scenarios: &[Scenario],
) -> Result<Vec<StudyRow>, PlacementError> {
    scenarios
        .iter()
        .map(|sc| {
            // A block format whose block does not divide a row falls back
            // to f16 for that tensor (as llama.cpp's quantizer does), so the
            // study runs on every model (stories260K's rows are 172 long).
            let tensors = TensorInfo::from_config_with(cfg, |w| match w {
                WeightName::FinalNorm
                | WeightName::Layer(_, LayerTensor::AttnNorm)
                | WeightName::Layer(_, LayerTensor::FfnNorm) => sc.norms,
                _ if w
                    .shape(cfg)
                    .last()
                    .is_some_and(|&c| c % sc.matrices.block_len() != 0) =>
                {
                    WeightFormat::F16
                }
                _ => sc.matrices,
            })?;
            let mut opts = PlaceOptions::for_config(cfg);
            opts.kv_dtype_bytes = sc.kv_dtype_bytes;
            opts.batch = sc.batch;
            if let Some(c) = sc.context_len {
                opts.context_len = c;
            }
            let plan = place(cfg, &tensors, spec, &opts)?;
            let one = modeled_token_latency_with(&plan, spec, &CostOptions::new(sc.precision));
            let mut o = CostOptions::new(sc.precision);
            o.inflight = one.modeled_pipeline_depth.ceil() as usize;
            let full = modeled_token_latency_with(&plan, spec, &o);
            let variants = [
                ("fp16 activations", 2, CarryModel::AsPlanned),
                (
                    "fp16 residual stream only (lower bound)",
                    2,
                    CarryModel::ResidualOnly,
                ),
            ]
            .into_iter()
            .map(|(label, act, carry)| {
                let mut o = CostOptions::new(sc.precision);
                o.activation_bytes = act;
                o.carry = carry;
                let c = modeled_token_latency_with(&plan, spec, &o);
                StudyVariant {
                    label: label.into(),
                    modeled_link_s: c.modeled_link_s,
                    modeled_token_latency_s: c.modeled_token_latency_s,
                    modeled_tokens_per_s_per_user: c.modeled_tokens_per_s_per_user,
                }
            })
            .collect();
            let (wb, kvb, flops) = gpu_inputs_from_plan(&plan, None);
            let gpu = modeled_gpu_token_latency(
                wb,
                kvb,
                flops,
                cfg.num_layers * 12 + 4,
                &GpuSpec::h100_sxm(),
            );
            Ok(StudyRow {
                label: sc.label.clone(),
                spec: spec.name.clone(),
                chips: plan.totals.chips_used,
                weight_bytes: plan.totals.weight_bytes,
                kv_bytes: plan.totals.kv_bytes,
                sram_utilization: plan.totals.sram_utilization,
                link_bytes_per_token: plan.totals.link_bytes_per_token,
                modeled_sram_s: one.modeled_sram_s,
                modeled_compute_s: one.modeled_compute_s,
                modeled_link_s: one.modeled_link_s,
                modeled_floor_s: one.modeled_floor_s,
                dependent_stages: one.dependent_stages,
                stage_latency_s: one.stage_latency_s,
                modeled_token_latency_s: one.modeled_token_latency_s,
                modeled_tokens_per_s_per_user: one.modeled_tokens_per_s_per_user,
                modeled_pipeline_depth: one.modeled_pipeline_depth,
                modeled_full_pipeline_tokens_per_s: full.modeled_throughput_tokens_per_s,
                variants,
                modeled_h100_tokens_per_s: gpu.modeled_tokens_per_s,
            })
        })
        .collect()
}

/// The study as text, one paragraph per scenario.
pub fn study_table(rows: &[StudyRow]) -> String {
    let mut out = String::new();
    for r in rows {
        writeln!(
            out,
            "{} on {}: {} chips (weights {}, KV {}, {:.0}% of SRAM used)",
            r.label,
            r.spec,
            r.chips,
            fmt_bytes(r.weight_bytes),
            fmt_bytes(r.kv_bytes),
            100.0 * r.sram_utilization,
        )
        .unwrap();
        writeln!(
            out,
            "  modeled, f32 live sets over 1 link/hop ({} B/token): SRAM {} (compute {}, hidden under SRAM) + latency floor {} ({} dependent stages, each at least {}) + links {} = {} -> {:.0} tok/s per user",
            r.link_bytes_per_token,
            fmt_seconds(r.modeled_sram_s),
            fmt_seconds(r.modeled_compute_s),
            fmt_seconds(r.modeled_floor_s),
            r.dependent_stages,
            fmt_seconds(r.stage_latency_s),
            fmt_seconds(r.modeled_link_s),
            fmt_seconds(r.modeled_token_latency_s),
            r.modeled_tokens_per_s_per_user,
        )
        .unwrap();
        for v in &r.variants {
            writeln!(
                out,
                "  modeled, {}: links {} -> {} -> {:.0} tok/s per user",
                v.label,
                fmt_seconds(v.modeled_link_s),
                fmt_seconds(v.modeled_token_latency_s),
                v.modeled_tokens_per_s_per_user
            )
            .unwrap();
        }
        writeln!(
            out,
            "  modeled pipeline full at {:.0} sequences in flight: {:.0} tok/s total (their KV caches need a plan with that batch, which this one does not hold); H100 (same bytes, ignoring capacity): {:.0} tok/s",
            r.modeled_pipeline_depth.ceil(),
            r.modeled_full_pipeline_tokens_per_s,
            r.modeled_h100_tokens_per_s,
        )
        .unwrap();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::DType;

    #[test]
    fn table_names_tensors_and_totals() {
        let c = LlamaConfig::tiny_for_tests(2, 64, true);
        let t = TensorInfo::from_config(&c, DType::F32, DType::F32).unwrap();
        let spec = ChipSpec::preset("mini-64k").unwrap();
        let plan = place(&c, &t, &spec, &PlaceOptions::for_config(&c)).unwrap();
        let table = plan_table(&plan);
        assert!(table.contains("L0 attn_norm wq"), "{table}");
        assert!(table.contains("lm_head(embed)"), "{table}");
        assert!(table.contains("totals:"), "{table}");
        let back: Plan = serde_json::from_str(&plan_json(&plan)).unwrap();
        assert_eq!(back, plan);
    }

    #[test]
    fn fitted_plan_table_is_at_most_100_columns() {
        // A config whose plan has lines wider than 100 columns.
        let c = LlamaConfig::tiny_for_tests(2, 64, true);
        let t = TensorInfo::from_config(&c, DType::F32, DType::F32).unwrap();
        let spec = ChipSpec::preset("mini-64k").unwrap();
        let plan = place(&c, &t, &spec, &PlaceOptions::for_config(&c)).unwrap();
        let wide = plan_table(&plan);
        assert!(wide.lines().any(|l| l.chars().count() > 100), "{wide}");
        let fit = plan_table_fit(&plan, 100);
        for l in fit.lines() {
            assert!(l.chars().count() <= 100, "{l:?}\n{fit}");
        }
        // Same chip rows, same totals; the cut rows are marked.
        let rows = |t: &str| {
            t.lines()
                .filter(|l| {
                    l.split_whitespace()
                        .next()
                        .is_some_and(|w| w.parse::<usize>().is_ok())
                })
                .count()
        };
        assert!(rows(&wide) > 1);
        assert_eq!(rows(&fit), rows(&wide));
        assert!(fit.contains('…'), "{fit}");
        assert!(fit.contains("totals:") && fit.contains("links:"), "{fit}");
        assert_eq!(wrap("a, b", 100), vec!["a, b"]);
        assert_eq!(cut("abcdef", 4), "abc…");
    }
}
