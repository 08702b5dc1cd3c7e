//! Tensor parallelism (`--tp N`): each pipeline stage is a GROUP of N chips
//! that run side by side, every matrix split by rows (output features) so
//! that no partial sums need adding:
//!
//! * attention by heads: chip m of a group holds the q rows of its query
//!   heads and the k/v rows and KV-cache cells of the KV heads they read
//!   (whole KV heads; with more chips than KV heads, the k/v rows and cells a
//!   chip needs are replicated, and counted in its SRAM), so its attention
//!   and its KV cache are local;
//! * `w_o`, `w_down` by hidden features, `w_gate` / `w_up` by FFN features,
//!   `lm_head` (or a tied embedding) by vocabulary; norm vectors replicated;
//! * between the sub-steps of a layer the group ALL-GATHERS what the next
//!   sub-step reads whole (`att` before `w_o`, `x` after `w_o` and after
//!   `w_down`, `h` before `w_down`): every chip sends the columns it computed
//!   to every other chip of the next group, each copy a counted link
//!   transfer; the logits are gathered onto the group's first chip, which
//!   runs the read-out. The embedding gather runs chip by chip (untied: on
//!   the first group, tied: on the tail group) and its row goes to every
//!   chip of the first group.
//!
//! [`place_tp`] packs consecutive layers onto a group while each chip's share
//! fits one chip; [`program`] derives the program (stages: one per chip of a
//! group and sub-step; links: the collectives) from a plan's chips, so a
//! plan read back from JSON is checked the same way as at tp 1.

use super::placement::{
    align16, check_size, checked_tensors, choose_tiling, materialize, values, Carried, ChipPlan,
    KvPlacement, ModelSummary, PlaceOptions, Placement, Plan, SliceRange, TensorInfo,
    TensorSummary, Totals, MAX_PLACED_CHIPS,
};
use super::program::{Item, KvBlock, Link, LinkCopy, Program, ProgramError, Stage, Work};
use super::{ChipSpec, PlacementError};
use crate::graph::{self, Act, NodeKind};
use crate::model::{LayerTensor as T, LlamaConfig, WeightName};
use std::collections::{BTreeSet, HashMap};

/// Lane `m`'s share `[m·n/tp, (m+1)·n/tp)` of `n` (uneven splits allowed).
pub fn split(n: usize, tp: usize, m: usize) -> (usize, usize) {
    (m * n / tp, (m + 1) * n / tp)
}

/// Lane `m`'s query heads and the KV heads they read: whole KV heads when
/// `tp` ≤ the KV heads, else query heads split and KV heads replicated.
pub fn heads(cfg: &LlamaConfig, tp: usize, m: usize) -> ((usize, usize), (usize, usize)) {
    let g = cfg.num_heads / cfg.num_kv_heads.max(1);
    if tp <= cfg.num_kv_heads {
        let kv = split(cfg.num_kv_heads, tp, m);
        ((kv.0 * g, kv.1 * g), kv)
    } else {
        let q = split(cfg.num_heads, tp, m);
        (q, (q.0 / g, (q.1 - 1) / g + 1))
    }
}

/// Why `tp` cannot split `cfg`, if it cannot.
pub fn check_tp(cfg: &LlamaConfig, tp: usize) -> Result<(), PlacementError> {
    let most = cfg
        .num_heads
        .min(cfg.hidden_size)
        .min(cfg.intermediate_size)
        .min(cfg.vocab_size);
    if tp == 0 {
        return Err(PlacementError::InvalidOptions(
            "--tp must be at least 1".into(),
        ));
    }
    if tp > most {
        return Err(PlacementError::InvalidOptions(format!(
            "--tp {tp}: tensor parallelism splits attention by heads and this model has {} attention heads, so --tp can be at most {most}",
            cfg.num_heads
        )));
    }
    // The group's pieces are weight rows, norms and KV cells: the extra
    // vectors of these architectures (biases, per-head norms, post-norms)
    // are not split or replicated over a group yet.
    let a = &cfg.arch;
    let mut missing: Vec<&str> = Vec::new();
    if a.qkv_bias || a.o_bias {
        missing.push("attention biases");
    }
    if a.mlp_bias {
        missing.push("MLP biases");
    }
    if a.qk_norm {
        missing.push("per-head q/k RMSNorm");
    }
    missing.extend(a.gemma_like());
    if tp > 1 && !missing.is_empty() {
        return Err(PlacementError::InvalidOptions(format!(
            "--tp {tp}: SRAM mode's tensor parallelism does not split {} yet ({}); use --tp 1",
            missing.join(", "),
            a.name
        )));
    }
    if cfg.num_kv_heads == 0 || !cfg.num_heads.is_multiple_of(cfg.num_kv_heads) {
        return Err(PlacementError::InvalidOptions(format!(
            "--tp {tp}: {} attention heads do not share {} KV heads evenly",
            cfg.num_heads, cfg.num_kv_heads
        )));
    }
    Ok(())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Unit {
    Embed,
    Layer(usize),
    Tail,
}

/// What one chip of a group holds of a unit: weight rows (a norm vector is
/// row 0..1) or a layer's KV cells of some heads.
#[derive(Clone, Copy, Debug)]
enum Piece {
    W(WeightName, usize, usize),
    Kv(usize, usize, usize),
}

fn head_weight(cfg: &LlamaConfig) -> WeightName {
    if cfg.tie_word_embeddings {
        WeightName::Embed
    } else {
        WeightName::LmHead
    }
}

fn pieces(cfg: &LlamaConfig, unit: Unit, tp: usize, m: usize) -> Vec<Piece> {
    let hd = cfg.head_dim;
    match unit {
        Unit::Embed => {
            let v = split(cfg.vocab_size, tp, m);
            vec![Piece::W(WeightName::Embed, v.0, v.1)]
        }
        Unit::Tail => {
            let v = split(cfg.vocab_size, tp, m);
            vec![
                Piece::W(WeightName::FinalNorm, 0, 1),
                Piece::W(head_weight(cfg), v.0, v.1),
            ]
        }
        Unit::Layer(l) => {
            let w = |t| WeightName::Layer(l, t);
            let (q, kv) = heads(cfg, tp, m);
            let d = split(cfg.hidden_size, tp, m);
            let f = split(cfg.intermediate_size, tp, m);
            vec![
                Piece::W(w(T::AttnNorm), 0, 1),
                Piece::W(w(T::Q), q.0 * hd, q.1 * hd),
                Piece::W(w(T::K), kv.0 * hd, kv.1 * hd),
                Piece::W(w(T::V), kv.0 * hd, kv.1 * hd),
                Piece::Kv(l, kv.0, kv.1),
                Piece::W(w(T::O), d.0, d.1),
                Piece::W(w(T::FfnNorm), 0, 1),
                Piece::W(w(T::Gate), f.0, f.1),
                Piece::W(w(T::Up), f.0, f.1),
                Piece::W(w(T::Down), d.0, d.1),
            ]
        }
    }
}

/// One chip while it is filled.
#[derive(Clone, Default)]
struct Lane {
    off: usize,
    tensors: Vec<Placement>,
    kv: Vec<KvPlacement>,
    params: usize,
    weight_bytes: usize,
    kv_bytes: usize,
    live: usize,
    score: usize,
    layers: BTreeSet<usize>,
    ops: Vec<String>,
}

struct Ctx<'a> {
    cfg: &'a LlamaConfig,
    spec: &'a ChipSpec,
    opts: &'a PlaceOptions,
    tensors: &'a [TensorInfo],
    nodes: Vec<graph::Node>,
    during: Vec<usize>,
    kv_pos_bytes: usize,
}

impl Ctx<'_> {
    fn label(&self, p: Piece) -> String {
        match p {
            Piece::W(w, ..) => {
                let i = (0..self.nodes.len())
                    .rev()
                    .find(|&i| self.nodes[i].weight() == Some(w))
                    .unwrap_or(0);
                self.nodes[i].label.clone()
            }
            Piece::Kv(l, ..) => format!("layers.{l}.attention"),
        }
    }

    fn live(&self, unit: Unit) -> usize {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(i, n)| match unit {
                Unit::Embed => *i == 0,
                Unit::Layer(l) => n.layer == Some(l),
                Unit::Tail => *i > 0 && n.layer.is_none(),
            })
            .map(|(i, _)| self.during[i])
            .max()
            .unwrap_or(0)
    }

    fn scratch(&self, live: usize, score: usize) -> usize {
        align16((live + score) * 4 * self.opts.microbatch_tokens)
    }

    /// Puts `p` after what `lane` holds (no tile straddles a slice); `Err`
    /// past the chip's slices.
    fn put(&self, lane: &mut Lane, p: Piece) -> Result<(), PlacementError> {
        let s = self.spec.slice_bytes;
        let nsl = self.spec.slices_per_chip();
        let start = |lane: &mut Lane, b0: usize| {
            if lane.off % s + b0 > s {
                lane.off = (lane.off / s + 1) * s;
            }
            lane.off
        };
        let slices_of = |tiles: &[super::Tile]| -> Option<(SliceRange, usize)> {
            let (f, l) = (tiles.first()?, tiles.last()?);
            Some((
                SliceRange {
                    first: f.slice,
                    count: l.slice + 1 - f.slice,
                },
                l.slice * s + l.offset_in_slice + l.bytes,
            ))
        };
        let full = || PlacementError::InvalidOptions("over the chip".into());
        match p {
            Piece::W(w, r0, r1) => {
                let t = self.tensors.iter().find(|t| t.name == w).ok_or_else(|| {
                    PlacementError::BadTensors(format!("tensor `{w}` is missing"))
                })?;
                let f = t.dtype;
                let (ql, qb) = (f.block_len(), f.block_bytes());
                let cols = t.cols();
                let tiling = choose_tiling(r1 - r0, cols, ql, qb, s).map_err(|q| {
                    PlacementError::Unsplittable {
                        piece: format!("one {} block of `{w}`", f.name()),
                        bytes: q,
                        container: "a slice".into(),
                        limit: s,
                    }
                })?;
                let b0 = tiling.tile_rows.min(r1 - r0) * (tiling.tile_cols.min(cols) / ql) * qb;
                let off = start(lane, b0);
                let mut pl = Placement {
                    weight: w.to_string(),
                    dtype: f.name().to_string(),
                    row_start: r0,
                    row_end: r1,
                    col_start: 0,
                    col_end: cols,
                    bytes: (r1 - r0) * (cols / ql) * qb,
                    params: (r1 - r0) * cols,
                    tile_rows: tiling.tile_rows,
                    tile_cols: tiling.tile_cols,
                    sram_offset: off,
                    slices: SliceRange { first: 0, count: 0 },
                };
                let (sl, end) = slices_of(&pl.tiles(s)).ok_or_else(full)?;
                if sl.first + sl.count > nsl {
                    return Err(full());
                }
                pl.slices = sl;
                lane.off = end;
                lane.params += pl.params;
                lane.weight_bytes += pl.bytes;
                lane.tensors.push(pl);
            }
            Piece::Kv(l, h0, h1) => {
                let ctx = self.opts.context_len;
                let kvb = self.kv_pos_bytes;
                let tiling = choose_tiling(h1 - h0, ctx, 1, kvb, s / 2).map_err(|b| {
                    PlacementError::Unsplittable {
                        piece: format!("K and V of one position of one KV head of layer {l}"),
                        bytes: 2 * b,
                        container: "a slice".into(),
                        limit: s,
                    }
                })?;
                let (th, tpos) = (tiling.tile_rows.min(h1 - h0), tiling.tile_cols.min(ctx));
                let off = start(lane, th * tpos * kvb);
                let mut k = KvPlacement {
                    layer: l,
                    head_start: h0,
                    head_end: h1,
                    pos_start: 0,
                    pos_end: ctx,
                    bytes: 2 * (h1 - h0) * ctx * kvb,
                    tile_heads: tiling.tile_rows,
                    tile_positions: tiling.tile_cols,
                    bytes_per_position: kvb,
                    sram_offset: off,
                    slices: SliceRange { first: 0, count: 0 },
                };
                let (sl, end) = slices_of(&k.tiles(s)).ok_or_else(full)?;
                if sl.first + sl.count > nsl {
                    return Err(full());
                }
                k.slices = sl;
                lane.off = end;
                lane.kv_bytes += k.bytes;
                let g = self.cfg.num_heads / self.cfg.num_kv_heads.max(1);
                lane.score = lane.score.max(g * th * tpos);
                lane.kv.push(k);
            }
        }
        Ok(())
    }

    /// `lane` with `unit`'s pieces for chip `m` added, or `None` when they
    /// and the scratch do not fit.
    fn with_unit(
        &self,
        lane: &Lane,
        unit: Unit,
        tp: usize,
        m: usize,
    ) -> Result<Option<Lane>, PlacementError> {
        let mut l = lane.clone();
        for p in pieces(self.cfg, unit, tp, m) {
            match self.put(&mut l, p) {
                Ok(()) => {}
                Err(PlacementError::InvalidOptions(_)) => return Ok(None),
                Err(e) => return Err(e),
            }
            let label = self.label(p);
            if l.ops.last() != Some(&label) {
                l.ops.push(label);
            }
        }
        if let Unit::Layer(x) = unit {
            l.layers.insert(x);
        }
        l.live = l.live.max(self.live(unit));
        let end = align16(l.off) + self.scratch(l.live, l.score);
        Ok((end <= self.spec.sram_bytes).then_some(l))
    }
}

/// Places `cfg` at tensor-parallel degree `tp` (1: [`super::place`]). Each
/// layer (and the embedding, the tail) is split over the `tp` chips of a
/// group; consecutive layers share a group while every chip's share fits.
pub fn place_tp(
    cfg: &LlamaConfig,
    tensors: &[TensorInfo],
    spec: &ChipSpec,
    opts: &PlaceOptions,
    tp: usize,
) -> Result<Plan, PlacementError> {
    if tp == 1 {
        return super::place(cfg, tensors, spec, opts);
    }
    let ordered = checked_tensors(cfg, tensors, spec, opts)?;
    check_tp(cfg, tp)?;
    if opts.max_chips == Some(0) {
        return Err(PlacementError::InvalidOptions(
            "`max_chips` must be positive, got 0".into(),
        ));
    }
    let kv_pos_bytes = cfg
        .head_dim
        .checked_mul(opts.kv_dtype_bytes)
        .and_then(|x| x.checked_mul(opts.batch))
        .ok_or_else(|| PlacementError::InvalidOptions("KV cache size overflows".into()))?;
    check_size(cfg, &ordered, spec, opts, kv_pos_bytes)?;
    let nodes = graph::forward(cfg);
    let during = graph::live_during(&nodes)
        .iter()
        .map(|s| values(&materialize(s, cfg)))
        .collect();
    let cx = Ctx {
        cfg,
        spec,
        opts,
        tensors: &ordered,
        nodes,
        during,
        kv_pos_bytes,
    };
    let mut units = Vec::new();
    if !cfg.tie_word_embeddings {
        units.push(Unit::Embed);
    }
    units.extend((0..cfg.num_layers).map(Unit::Layer));
    units.push(Unit::Tail);

    let mut groups: Vec<Vec<Lane>> = vec![vec![Lane::default(); tp]];
    for &u in &units {
        let cur = groups.last().expect("a group");
        let empty = cur.iter().all(|l| l.ops.is_empty());
        let mut next = Vec::with_capacity(tp);
        for (m, lane) in cur.iter().enumerate() {
            match cx.with_unit(lane, u, tp, m)? {
                Some(l) => next.push(l),
                None => break,
            }
        }
        if next.len() == tp {
            *groups.last_mut().expect("a group") = next;
            continue;
        }
        let what = match u {
            Unit::Embed => "the embedding".to_string(),
            Unit::Layer(l) => format!("layer {l}"),
            Unit::Tail => "the final norm and lm_head".to_string(),
        };
        let refuse = || {
            PlacementError::InvalidOptions(format!(
                "--tp {tp}: one chip's share of {what} (1/{tp} of it, with its activation scratch) does not fit one `{}` chip of {} bytes; use a larger chip or a higher --tp",
                spec.name, spec.sram_bytes
            ))
        };
        if empty {
            return Err(refuse());
        }
        if (groups.len() + 1) * tp >= MAX_PLACED_CHIPS {
            return Err(PlacementError::InvalidOptions(format!(
                "the placement needs more than {MAX_PLACED_CHIPS} `{}` chips, the most sramlm places",
                spec.name
            )));
        }
        let mut fresh = Vec::with_capacity(tp);
        for m in 0..tp {
            fresh.push(
                cx.with_unit(&Lane::default(), u, tp, m)?
                    .ok_or_else(refuse)?,
            );
        }
        groups.push(fresh);
    }

    let s = spec.slice_bytes;
    let nsl = spec.slices_per_chip();
    let mut chips: Vec<ChipPlan> = Vec::new();
    for lane in groups.into_iter().flatten() {
        let scratch_bytes = cx.scratch(lane.live, lane.score);
        let scratch_offset = align16(lane.off);
        let high = scratch_offset + scratch_bytes;
        chips.push(ChipPlan {
            index: chips.len(),
            stage_layers: lane.layers.into_iter().collect(),
            ops: lane.ops,
            tensors: lane.tensors,
            kv: lane.kv,
            params: lane.params,
            weight_bytes: lane.weight_bytes,
            kv_bytes: lane.kv_bytes,
            scratch_bytes,
            scratch_offset,
            sram_used: lane.weight_bytes + lane.kv_bytes + scratch_bytes,
            sram_high_water: high,
            sram_capacity: spec.sram_bytes,
            slices_used: high.div_ceil(s).min(nsl),
            slices_total: nsl,
            link_bytes_in_per_token: 0,
            link_bytes_out_per_token: 0,
            carry_in: vec![],
            carry_out: vec![],
        });
    }
    let n = chips.len();
    if let Some(max) = opts.max_chips {
        if n > max {
            return Err(PlacementError::TooFewChips {
                needed: n,
                given: max,
            });
        }
    }
    let p = program(cfg, &chips, tp).map_err(|e| {
        PlacementError::InvalidOptions(format!("--tp {tp}: the plan is not runnable: {e}"))
    })?;
    // What each chip sends and receives over links per token.
    for l in &p.links {
        for c in l.copies.iter().filter(|c| !c.is_local()) {
            for (v, chip) in [(0, c.from_chip), (1, c.to_chip)] {
                let list = if v == 0 {
                    &mut chips[chip].carry_out
                } else {
                    &mut chips[chip].carry_in
                };
                match list.iter_mut().find(|x| x.name == c.act.name()) {
                    Some(x) => x.values += c.values(),
                    None => list.push(Carried {
                        name: c.act.name().into(),
                        values: c.values(),
                    }),
                }
            }
        }
    }
    // A tied embedding's row goes from the tail to the first group over the
    // link after the last gather stage.
    let gathers = p
        .groups
        .iter()
        .take_while(|g| {
            p.items[p.stages[g.start].items.clone()]
                .iter()
                .any(|i| matches!(i.work, Work::Embed { .. }))
        })
        .count();
    let loopback = match gathers.checked_sub(1) {
        Some(g) if cfg.tie_word_embeddings => 4 * p.links[g].values(),
        _ => 0,
    };
    for chip in &mut chips {
        chip.link_bytes_in_per_token = 4 * values(&chip.carry_in);
        chip.link_bytes_out_per_token = 4 * values(&chip.carry_out);
    }
    let stages = p.stage_plans();
    let used: Vec<usize> = chips.iter().map(|c| c.sram_used).collect();
    let totals = Totals {
        chips_used: n,
        max_chips: opts.max_chips,
        weight_bytes: chips.iter().map(|c| c.weight_bytes).sum(),
        kv_bytes: chips.iter().map(|c| c.kv_bytes).sum(),
        scratch_bytes: chips.iter().map(|c| c.scratch_bytes).sum(),
        sram_used_total: used.iter().sum(),
        sram_used_max: used.iter().copied().max().unwrap_or(0),
        sram_used_mean: used.iter().sum::<usize>() as f64 / n as f64,
        sram_utilization: used.iter().sum::<usize>() as f64 / (n * spec.sram_bytes) as f64,
        link_bytes_per_token: p.link_bytes_per_token(),
        loopback_bytes_per_token: loopback,
        link_transfers_per_token: p
            .links
            .iter()
            .map(|l| l.copies.iter().filter(|c| !c.is_local()).count())
            .sum(),
        hops: n - 1,
        pipeline_stages: p.groups.len(),
    };
    let weight_bytes: usize = ordered.iter().map(|t| t.bytes).sum();
    let model = ModelSummary {
        hidden_size: cfg.hidden_size,
        intermediate_size: cfg.intermediate_size,
        num_layers: cfg.num_layers,
        num_heads: cfg.num_heads,
        num_kv_heads: cfg.num_kv_heads,
        head_dim: cfg.head_dim,
        vocab_size: cfg.vocab_size,
        tie_word_embeddings: cfg.tie_word_embeddings,
        embedding_placement: if cfg.tie_word_embeddings {
            format!("tied: placed once, at the tail, as lm_head split by vocabulary over {tp} chips; the next token's row is gathered there chip by chip and sent to every chip of the first group")
        } else {
            format!("untied: embed split by vocabulary over the first group's {tp} chips, lm_head over the last group's")
        },
        params: ordered.iter().map(|t| t.numel()).sum(),
        weight_bytes,
        kv_bytes: cfg.num_layers * 2 * opts.context_len * cfg.num_kv_heads * kv_pos_bytes,
        context_len: opts.context_len,
        kv_dtype_bytes: opts.kv_dtype_bytes,
        batch: opts.batch,
        microbatch_tokens: opts.microbatch_tokens,
        tensors: ordered.iter().map(TensorSummary::of).collect(),
    };
    Ok(Plan {
        spec: spec.clone(),
        model,
        chips,
        totals,
        stages,
        program_error: None,
        tp,
    })
}

/// A sub-step of the program: per chip of its group, the items it runs and
/// the columns of each activation it computes; what is live after it.
/// One chip of a sub-step: the chip, its (graph node, work) items, the
/// columns of each activation it computes.
type SegLane = (usize, Vec<(usize, Work)>, Vec<(Act, (usize, usize))>);

struct Seg {
    lanes: Vec<SegLane>,
    live: Vec<Act>,
}

/// The program of a tensor-parallel plan's chips: groups of `tp`
/// consecutive chips (see the module docs).
pub fn program(cfg: &LlamaConfig, chips: &[ChipPlan], tp: usize) -> Result<Program, ProgramError> {
    let stale = |m: String| ProgramError::Stale(m);
    if chips.is_empty() || !chips.len().is_multiple_of(tp) {
        return Err(stale(format!(
            "{} chips do not form groups of --tp {tp}",
            chips.len()
        )));
    }
    let nodes = graph::forward(cfg);
    // Each chip's rows of each weight and its KV block of each layer.
    let mut rows: HashMap<(usize, WeightName), (usize, usize)> = HashMap::new();
    let mut kv: HashMap<(usize, usize), KvBlock> = HashMap::new();
    for c in chips {
        for t in &c.tensors {
            let w = WeightName::parse(&t.weight)
                .ok_or_else(|| ProgramError::UnknownWeight(t.weight.clone()))?;
            let cols = w.shape(cfg).last().copied().unwrap_or(0);
            if t.col_start != 0 || t.col_end != cols {
                return Err(ProgramError::ColumnSplit {
                    weight: t.weight.clone(),
                    from: t.col_start,
                    to: t.col_end,
                });
            }
            let e = rows.entry((c.index, w)).or_insert((t.row_start, t.row_end));
            if e.1 == t.row_start {
                e.1 = t.row_end;
            } else if *e != (t.row_start, t.row_end) {
                return Err(stale(format!(
                    "chip {} holds two apart row ranges of `{w}`",
                    c.index
                )));
            }
        }
        for k in &c.kv {
            if kv
                .insert(
                    (c.index, k.layer),
                    KvBlock {
                        heads: (k.head_start, k.head_end),
                        positions: (k.pos_start, k.pos_end),
                    },
                )
                .is_some()
            {
                return Err(stale(format!(
                    "chip {} holds two KV blocks of layer {}",
                    c.index, k.layer
                )));
            }
        }
    }
    let n_groups = chips.len() / tp;
    // The group holding w, and each of its chips' rows (covering it in order).
    let lanes_of = |w: WeightName| -> Result<(usize, Vec<(usize, usize)>), ProgramError> {
        let g = (0..chips.len())
            .find(|&c| rows.contains_key(&(c, w)))
            .ok_or_else(|| ProgramError::Missing(w.to_string()))?
            / tp;
        let shape = w.shape(cfg);
        let total = if shape.len() == 1 { 1 } else { shape[0] };
        let mut next = 0;
        let mut v = Vec::new();
        for m in 0..tp {
            let r = *rows
                .get(&(g * tp + m, w))
                .ok_or_else(|| stale(format!("chip {} lacks its share of `{w}`", g * tp + m)))?;
            // k/v rows repeat where chips share a KV head (tp > KV heads).
            let kv_row = matches!(w, WeightName::Layer(_, T::K | T::V));
            if total > 1 {
                if r.0 != next && !(kv_row && r.0 < next && r.1 >= next && m > 0) {
                    return Err(ProgramError::Gap {
                        weight: w.to_string(),
                        from: next,
                        to: r.0,
                    });
                }
                next = r.1;
            }
            v.push(r);
        }
        if total > 1 && next != total {
            return Err(ProgramError::Gap {
                weight: w.to_string(),
                from: next,
                to: total,
            });
        }
        Ok((g, v))
    };
    let node = |f: &dyn Fn(&NodeKind) -> bool| -> usize {
        nodes.iter().position(|n| f(&n.kind)).unwrap_or(0)
    };
    let mat_node = |w: WeightName| node(&|k| matches!(*k, NodeKind::MatMul { w: x, .. } if x == w));
    let norm_node = |w: WeightName| node(&|k| *k == NodeKind::Norm(w));
    let mat =
        |w: WeightName, r: (usize, usize), inp: Act, out: Act, acc: bool, head: bool| Work::Mat {
            w,
            rows: r,
            inp,
            out,
            acc,
            head,
        };
    let d = cfg.hidden_size;
    let hd = cfg.head_dim;
    let mut segs: Vec<Seg> = Vec::new();

    // The embedding gather, chip by chip in row order.
    let mut blocks: Vec<(usize, (usize, usize))> = (0..chips.len())
        .filter_map(|c| rows.get(&(c, WeightName::Embed)).map(|&r| (c, r)))
        .collect();
    blocks.sort_by_key(|b| (b.1 .0, b.0));
    let mut next = 0;
    for (i, &(c, r)) in blocks.iter().enumerate() {
        if r.0 != next {
            return Err(ProgramError::Gap {
                weight: "embed".into(),
                from: next,
                to: r.0,
            });
        }
        next = r.1;
        segs.push(Seg {
            lanes: vec![(
                c,
                vec![(
                    0,
                    Work::Embed {
                        rows: r,
                        first: i == 0,
                    },
                )],
                vec![(Act::X, (0, d))],
            )],
            live: vec![Act::X],
        });
    }
    if next != cfg.vocab_size {
        return Err(ProgramError::Gap {
            weight: "embed".into(),
            from: next,
            to: cfg.vocab_size,
        });
    }

    let mut last_group = 0;
    for l in 0..cfg.num_layers {
        let w = |t| WeightName::Layer(l, t);
        let (g, q) = lanes_of(w(T::Q))?;
        if g < last_group {
            return Err(ProgramError::NotForward {
                what: format!("layer {l}"),
                chip: g * tp,
                before: last_group * tp,
            });
        }
        last_group = g;
        let mut parts = Vec::new();
        for t in [
            T::AttnNorm,
            T::K,
            T::V,
            T::O,
            T::FfnNorm,
            T::Gate,
            T::Up,
            T::Down,
        ] {
            let (gg, r) = lanes_of(w(t))?;
            if gg != g {
                return Err(stale(format!(
                    "`{}` is not on the group of layer {l}'s wq",
                    w(t)
                )));
            }
            parts.push(r);
        }
        let [_, k, _, o, _, gate, _, down] = &parts[..] else {
            unreachable!()
        };
        let att = nodes
            .iter()
            .position(|n| n.kind == NodeKind::Attention(l))
            .unwrap_or(0);
        let silu = nodes
            .iter()
            .position(|n| n.kind == NodeKind::SiluMul(l))
            .unwrap_or(0);
        let (mut a, mut b, mut c, mut dd) = (vec![], vec![], vec![], vec![]);
        for m in 0..tp {
            let chip = g * tp + m;
            let block = *kv
                .get(&(chip, l))
                .ok_or_else(|| stale(format!("chip {chip} lacks its KV block of layer {l}")))?;
            let qh = (q[m].0 / hd, q[m].1 / hd);
            let gq = cfg.num_heads / cfg.num_kv_heads.max(1);
            if block.heads != (k[m].0 / hd, k[m].1 / hd)
                || qh.1 <= qh.0
                || block.heads.0 > qh.0 / gq
                || block.heads.1 < (qh.1 - 1) / gq + 1
                || block.positions.0 != 0
            {
                return Err(stale(format!(
                    "chip {chip}: the KV heads of layer {l} do not serve its query heads"
                )));
            }
            a.push((
                chip,
                vec![
                    (norm_node(w(T::AttnNorm)), Work::Norm(w(T::AttnNorm))),
                    (
                        mat_node(w(T::Q)),
                        mat(w(T::Q), q[m], Act::Xn, Act::Q, false, false),
                    ),
                    (
                        mat_node(w(T::K)),
                        mat(w(T::K), k[m], Act::Xn, Act::K, false, false),
                    ),
                    (
                        mat_node(w(T::V)),
                        mat(w(T::V), k[m], Act::Xn, Act::V, false, false),
                    ),
                    (att, Work::RopeQ(l)),
                    (att, Work::KvWrite(l, block)),
                    (
                        att,
                        Work::AttnBlock {
                            layer: l,
                            block,
                            init: true,
                            fin: true,
                        },
                    ),
                ],
                vec![(Act::Att, q[m])],
            ));
            b.push((
                chip,
                vec![(
                    mat_node(w(T::O)),
                    mat(w(T::O), o[m], Act::Att, Act::X, true, false),
                )],
                vec![(Act::X, o[m])],
            ));
            c.push((
                chip,
                vec![
                    (norm_node(w(T::FfnNorm)), Work::Norm(w(T::FfnNorm))),
                    (
                        mat_node(w(T::Gate)),
                        mat(w(T::Gate), gate[m], Act::Xn, Act::G, false, false),
                    ),
                    (
                        mat_node(w(T::Up)),
                        mat(w(T::Up), gate[m], Act::Xn, Act::U, false, false),
                    ),
                    (silu, Work::Silu(l)),
                ],
                vec![(Act::H, gate[m])],
            ));
            dd.push((
                chip,
                vec![(
                    mat_node(w(T::Down)),
                    mat(w(T::Down), down[m], Act::H, Act::X, true, false),
                )],
                vec![(Act::X, down[m])],
            ));
        }
        if parts[6] != parts[5] {
            return Err(stale(format!(
                "layer {l}: w_up's rows differ from w_gate's"
            )));
        }
        segs.push(Seg {
            lanes: a,
            live: vec![Act::X, Act::Att],
        });
        segs.push(Seg {
            lanes: b,
            live: vec![Act::X],
        });
        segs.push(Seg {
            lanes: c,
            live: vec![Act::X, Act::H],
        });
        segs.push(Seg {
            lanes: dd,
            live: vec![Act::X],
        });
    }
    // The tail: final norm and the lm_head by vocabulary, then the logits
    // gathered onto the group's first chip for the read-out.
    let hw = head_weight(cfg);
    let (g, _) = lanes_of(WeightName::FinalNorm)?;
    let (gh, v) = {
        // A tied embedding's rows are the head's; its group is the tail's.
        let r: Vec<(usize, usize)> = (0..tp)
            .map(|m| rows.get(&(g * tp + m, hw)).copied())
            .collect::<Option<_>>()
            .ok_or_else(|| stale(format!("the final group lacks `{hw}`")))?;
        (g, r)
    };
    if gh < last_group || g >= n_groups {
        return Err(ProgramError::NotForward {
            what: "lm_head".into(),
            chip: gh * tp,
            before: last_group * tp,
        });
    }
    let head = nodes.len() - 1;
    segs.push(Seg {
        lanes: (0..tp)
            .map(|m| {
                (
                    g * tp + m,
                    vec![
                        (
                            norm_node(WeightName::FinalNorm),
                            Work::Norm(WeightName::FinalNorm),
                        ),
                        (head, mat(hw, v[m], Act::Xn, Act::Logits, false, true)),
                    ],
                    vec![(Act::Logits, v[m])],
                )
            })
            .collect(),
        live: vec![Act::Logits],
    });
    segs.push(Seg {
        lanes: vec![(g * tp, vec![], vec![])],
        live: vec![],
    });

    // Flatten: a stage per chip of each sub-step; the links between.
    let mut items = Vec::new();
    let mut stages = Vec::new();
    let mut groups = Vec::new();
    for s in &segs {
        let first = stages.len();
        for (chip, work, _) in &s.lanes {
            let i0 = items.len();
            items.extend(work.iter().map(|&(node, work)| Item {
                chip: *chip,
                node,
                work,
            }));
            stages.push(Stage {
                chip: *chip,
                items: i0..items.len(),
            });
        }
        groups.push(first..stages.len());
    }
    let mut links = Vec::new();
    for (si, s) in segs.iter().enumerate().take(segs.len() - 1) {
        let (from, to) = (groups[si].clone(), groups[si + 1].clone());
        let mut copies = Vec::new();
        for &act in &s.live {
            let width = act.width(cfg);
            let written: Vec<(usize, (usize, usize))> = s
                .lanes
                .iter()
                .enumerate()
                .flat_map(|(m, l)| l.2.iter().filter(|x| x.0 == act).map(move |x| (m, x.1)))
                .collect();
            for (tm, tl) in segs[si + 1].lanes.iter().enumerate() {
                let to_stage = to.start + tm;
                if written.is_empty() {
                    // Held whole by every chip of the group: from the same
                    // chip when it is in the group, else from the first.
                    let m = s.lanes.iter().position(|l| l.0 == tl.0).unwrap_or(0);
                    copies.push(LinkCopy {
                        from_stage: from.start + m,
                        to_stage,
                        from_chip: s.lanes[m].0,
                        to_chip: tl.0,
                        act,
                        cols: (0, width),
                    });
                } else {
                    for &(m, cols) in &written {
                        if cols.1 > cols.0 {
                            copies.push(LinkCopy {
                                from_stage: from.start + m,
                                to_stage,
                                from_chip: s.lanes[m].0,
                                to_chip: tl.0,
                                act,
                                cols,
                            });
                        }
                    }
                }
            }
        }
        let mut carry: Vec<(Act, usize)> = Vec::new();
        for c in copies.iter().filter(|c| !c.is_local()) {
            match carry.iter_mut().find(|x| x.0 == c.act) {
                Some(x) => x.1 += c.values(),
                None => carry.push((c.act, c.values())),
            }
        }
        links.push(Link {
            from_stage: from.start,
            from_chip: s.lanes[0].0,
            to_chip: segs[si + 1].lanes[0].0,
            carry,
            copies,
        });
    }
    Ok(Program {
        nodes,
        items,
        stages,
        groups,
        links,
        tp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chip::{place, PlaceOptions};
    use crate::model::DType;

    fn plan(tp: usize, tied: bool, kv_heads: usize) -> (LlamaConfig, Plan) {
        let mut c = LlamaConfig::tiny_for_tests(2, 64, tied);
        c.num_kv_heads = kv_heads;
        let t = TensorInfo::from_config(&c, DType::F32, DType::F32).unwrap();
        // A layer's half takes a chip: several groups.
        let spec = ChipSpec::scale_model("t", 128 * 1024);
        let mut o = PlaceOptions::for_config(&c);
        o.context_len = 32;
        let p = place_tp(&c, &t, &spec, &o, tp).unwrap();
        (c, p)
    }

    #[test]
    fn groups_split_every_layer_and_gather_through_counted_links() {
        for tied in [true, false] {
            for tp in [2, 4] {
                let (c, p) = plan(tp, tied, c_kv());
                p.check().unwrap();
                assert_eq!(p.tp, tp);
                assert_eq!(p.totals.chips_used % tp, 0);
                let prog = Program::for_tp(&c, &p.chips, tp).unwrap();
                assert_eq!(prog.stage_plans(), p.stages);
                // Every layer's wq is split over one group of tp chips.
                for l in 0..c.num_layers {
                    let holders: Vec<usize> = p
                        .chips
                        .iter()
                        .filter(|ch| {
                            ch.tensors
                                .iter()
                                .any(|t| t.weight == format!("layers.{l}.wq"))
                        })
                        .map(|ch| ch.index)
                        .collect();
                    assert_eq!(holders.len(), tp, "{holders:?}");
                    assert_eq!(holders[0] % tp, 0);
                    assert!(holders.windows(2).all(|w| w[1] == w[0] + 1));
                }
                // Per token: each layer all-gathers att, x (twice) and h.
                let gathers = prog.links.iter().filter(|l| l.values() > 0).count();
                assert!(gathers >= 4 * c.num_layers, "{gathers}");
                assert_eq!(p.totals.link_bytes_per_token, prog.link_bytes_per_token());
                let planned: usize = p
                    .stages
                    .iter()
                    .flat_map(|s| &s.carry)
                    .map(|c| 4 * c.values)
                    .sum();
                assert_eq!(planned, p.totals.link_bytes_per_token);
                // The last group is the read-out on one chip.
                assert_eq!(prog.groups.last().unwrap().len(), 1);
                assert!(p.totals.chips_used > tp, "{}", p.totals.chips_used);
            }
        }
    }

    fn c_kv() -> usize {
        LlamaConfig::tiny_for_tests(2, 64, true).num_kv_heads
    }

    #[test]
    fn more_chips_than_kv_heads_replicate_kv_and_too_many_are_refused() {
        let c0 = LlamaConfig::tiny_for_tests(2, 64, true);
        if c0.num_heads >= 4 {
            let (c, p) = plan(4, true, 1);
            p.check().unwrap();
            Program::for_tp(&c, &p.chips, 4).unwrap();
            let kv_chips = p.chips.iter().filter(|ch| !ch.kv.is_empty()).count();
            assert!(kv_chips >= 4);
        }
        let t = TensorInfo::from_config(&c0, DType::F32, DType::F32).unwrap();
        let spec = ChipSpec::preset("mini-64k").unwrap();
        let e = place_tp(
            &c0,
            &t,
            &spec,
            &PlaceOptions::for_config(&c0),
            c0.num_heads + 1,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("--tp") && e.contains("heads"), "{e}");
        // A share larger than a chip is refused by name.
        let e = place_tp(&c0, &t, &spec, &PlaceOptions::for_config(&c0), 2)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--tp 2") && e.contains("layer 0") && e.contains("mini-64k"),
            "{e}"
        );
        // tp 1 is today's placement.
        let o = PlaceOptions::for_config(&c0);
        assert_eq!(
            place_tp(&c0, &t, &spec, &o, 1).unwrap(),
            place(&c0, &t, &spec, &o).unwrap()
        );
    }
}
