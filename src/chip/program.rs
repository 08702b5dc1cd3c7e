//! The program a plan describes: the forward pass ([`crate::graph`])
//! expanded into work items on the chips that hold their weights, cut into
//! pipeline stages, with the activations each chip boundary carries.
//!
//! The placement compiler builds it to fill in the plan's link figures and
//! stores a summary in [`Plan::stages`](super::Plan); the SRAM executor builds
//! the same program from the plan, checks it against that summary and runs
//! it. So `sramlm plan` prints exactly what SRAM mode executes.
//!
//! Rules (the whole scheduling policy):
//! * a matrix runs as one item per row block, on the chip holding the block;
//! * the embedding gather runs on the chips holding the embedding, one item
//!   per row block, each writing the rows it holds (a tied embedding sits at
//!   the tail, so the token's row comes to chip 0 over the loopback link);
//! * a norm runs on the chip holding its vector; attention runs block by
//!   block on the chips holding the layer's KV cache (RoPE on q on the first
//!   of them); `silu_mul` where `w_up` ended;
//! * a stage is a run of consecutive items on one chip; between stages, the
//!   activations live after the boundary ([`graph::live_out`]) move over a
//!   link, only their columns computed so far.

use super::placement::{Carried, ChipPlan};
use crate::graph::{self, Access, Act, NodeKind};
use crate::model::{LlamaConfig, WeightName};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;

/// A block of a layer's KV cache: kv heads × positions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvBlock {
    pub heads: (usize, usize),
    pub positions: (usize, usize),
}

/// One chip's share of one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Work {
    /// Embedding rows `rows` of the table: tokens whose id is in that range
    /// get their row; the first block zeroes the others, later ones keep them.
    Embed {
        rows: (usize, usize),
        first: bool,
    },
    Norm(WeightName),
    /// Rows `rows` of `out (+)= W · inp`.
    Mat {
        w: WeightName,
        rows: (usize, usize),
        inp: Act,
        out: Act,
        acc: bool,
        head: bool,
    },
    /// Rotate q (once per layer, on the first KV chip).
    RopeQ(usize),
    /// Rotate k and store k, v of the step's positions that fall in the block.
    KvWrite(usize, KvBlock),
    /// Fold one KV block into the running attention state.
    AttnBlock {
        layer: usize,
        block: KvBlock,
        init: bool,
        fin: bool,
    },
    Silu(usize),
    /// `out += b` over the whole width (the bias vector `w`).
    Bias {
        w: WeightName,
        out: Act,
    },
    /// RMSNorm of each head of `act` (q or k) by the vector `w`.
    HeadNorm {
        w: WeightName,
        act: Act,
    },
    /// `x += rmsnorm(xn) · w` (a post-norm).
    PostNorm(WeightName),
}

/// A work item on a chip; `node` indexes [`graph::forward`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    pub chip: usize,
    pub node: usize,
    pub work: Work,
}

impl Access for Item {
    fn reads(&self) -> Vec<Act> {
        match self.work {
            Work::Embed { first, .. } => {
                if first {
                    vec![]
                } else {
                    vec![Act::X]
                }
            }
            Work::Norm(_) => vec![Act::X],
            Work::Mat { inp, out, acc, .. } => {
                if acc {
                    vec![inp, out]
                } else {
                    vec![inp]
                }
            }
            Work::RopeQ(_) => vec![Act::Q],
            Work::KvWrite(..) => vec![Act::K, Act::V],
            Work::AttnBlock { init, .. } => {
                if init {
                    vec![Act::Q]
                } else {
                    vec![Act::Q, Act::AttState]
                }
            }
            Work::Silu(_) => vec![Act::G, Act::U],
            Work::Bias { out, .. } => vec![out],
            Work::HeadNorm { act, .. } => vec![act],
            Work::PostNorm(_) => vec![Act::Xn, Act::X],
        }
    }
    fn kills(&self) -> Vec<Act> {
        match self.work {
            Work::Embed { first, .. } => {
                if first {
                    vec![Act::X]
                } else {
                    vec![]
                }
            }
            Work::Norm(_) => vec![Act::Xn],
            // Only the first row block of a product starts it afresh.
            Work::Mat { out, acc, rows, .. } => {
                if !acc && rows.0 == 0 {
                    vec![out]
                } else {
                    vec![]
                }
            }
            Work::AttnBlock { init, fin, .. } => match (init, fin) {
                (_, true) => vec![Act::Att],
                (true, false) => vec![Act::AttState],
                (false, false) => vec![],
            },
            Work::Silu(_) => vec![Act::H],
            Work::RopeQ(_) | Work::KvWrite(..) => vec![],
            Work::Bias { .. } | Work::HeadNorm { .. } | Work::PostNorm(_) => vec![],
        }
    }
}

impl Item {
    /// Activations written, with how many leading columns are valid after.
    pub fn writes(&self, c: &LlamaConfig) -> Vec<(Act, usize)> {
        match self.work {
            Work::Embed { .. } => vec![(Act::X, c.hidden_size)],
            Work::Norm(_) => vec![(Act::Xn, c.hidden_size)],
            Work::Mat {
                out,
                rows,
                acc,
                head,
                ..
            } => {
                if head || !acc {
                    vec![(out, rows.1)]
                } else {
                    vec![(out, out.width(c))]
                }
            }
            Work::RopeQ(_) | Work::KvWrite(..) => vec![],
            Work::AttnBlock { fin, .. } => {
                if fin {
                    vec![(Act::Att, c.q_dim())]
                } else {
                    vec![(Act::AttState, Act::AttState.width(c))]
                }
            }
            Work::Silu(_) => vec![(Act::H, c.intermediate_size)],
            Work::Bias { out, .. } => vec![(out, out.width(c))],
            Work::HeadNorm { act, .. } => vec![(act, act.width(c))],
            Work::PostNorm(_) => vec![(Act::X, c.hidden_size)],
        }
    }

    /// A short name: `layers.0.wq[0..32)`, `layers.0.attention(h0..4,p0..512)`.
    pub fn label(&self, nodes: &[graph::Node]) -> String {
        let n = &nodes[self.node].label;
        match self.work {
            Work::Embed { rows, .. } | Work::Mat { rows, .. } => {
                format!("{n}[{}..{})", rows.0, rows.1)
            }
            Work::Norm(_) | Work::Silu(_) | Work::Bias { .. } | Work::HeadNorm { .. } => n.clone(),
            Work::PostNorm(_) => n.clone(),
            Work::RopeQ(l) => format!("layers.{l}.rope_q"),
            Work::KvWrite(l, b) => format!(
                "layers.{l}.kv_write(h{}..{},p{}..{})",
                b.heads.0, b.heads.1, b.positions.0, b.positions.1
            ),
            Work::AttnBlock { block: b, .. } => format!(
                "{n}(h{}..{},p{}..{})",
                b.heads.0, b.heads.1, b.positions.0, b.positions.1
            ),
        }
    }
}

/// A pipeline stage: consecutive items on one chip.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stage {
    pub chip: usize,
    pub items: Range<usize>,
}

/// What crosses the boundary after stage `from_stage` (to the next stage).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub from_stage: usize,
    pub from_chip: usize,
    pub to_chip: usize,
    /// Activations and their valid leading columns, packed in this order
    /// (tensor parallelism: what crosses between chips, summed per activation).
    pub carry: Vec<(Act, usize)>,
    /// Every copy the link makes, stage region to stage region; at tp 1 one
    /// per carried activation. A copy between two stages of the same chip
    /// (a tensor-parallel group's next sub-step) is local, not link traffic.
    pub copies: Vec<LinkCopy>,
}

/// One copy of a link: columns `cols` of `act` from stage `from_stage`'s
/// region to stage `to_stage`'s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkCopy {
    pub from_stage: usize,
    pub to_stage: usize,
    pub from_chip: usize,
    pub to_chip: usize,
    pub act: Act,
    pub cols: (usize, usize),
}

impl LinkCopy {
    /// Both stages on one chip: no link crossed.
    pub fn is_local(&self) -> bool {
        self.from_chip == self.to_chip
    }
    pub fn values(&self) -> usize {
        self.cols.1 - self.cols.0
    }
}

impl Link {
    /// Values per token crossing chips (the logits only on the step's
    /// output rows).
    pub fn values(&self) -> usize {
        self.copies
            .iter()
            .filter(|c| !c.is_local())
            .map(LinkCopy::values)
            .sum()
    }
    /// The loopback: from the tail of the chip chain back to an earlier chip.
    pub fn is_loopback(&self) -> bool {
        self.to_chip < self.from_chip
    }
}

/// The whole program.
#[derive(Clone, Debug, PartialEq)]
pub struct Program {
    pub nodes: Vec<graph::Node>,
    pub items: Vec<Item>,
    pub stages: Vec<Stage>,
    /// The pipeline stages: `groups[g]` = the stages that run side by side
    /// (tensor parallelism: one per chip of the group; else one).
    pub groups: Vec<Range<usize>>,
    /// `links[g]` follows group `g` (at tp 1: `stages[g]`).
    pub links: Vec<Link>,
    /// Tensor-parallel degree the program was derived for.
    pub tp: usize,
}

/// A stage as the plan records it (what `sramlm plan --format json` shows).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagePlan {
    pub chip: usize,
    /// The items the chip runs in this stage, in order.
    pub work: Vec<String>,
    /// The chip the link after this stage goes to (none after the last).
    pub link_to: Option<usize>,
    /// What that link carries per token.
    pub carry: Vec<Carried>,
    /// The pipeline stage (tensor parallelism: the chips whose stages share
    /// a group run side by side).
    #[serde(default)]
    pub group: usize,
    /// Tensor parallelism: each copy of the collective after the group that
    /// leaves this chip (to which chip, which activation, which columns).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sends: Vec<SendPlan>,
}

/// One copy of a tensor-parallel collective, as the plan records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendPlan {
    pub to_chip: usize,
    pub name: String,
    pub cols: (usize, usize),
}

/// Why a plan cannot be run as a program.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProgramError {
    #[error("the plan does not place `{0}`")]
    Missing(String),
    #[error("the plan leaves rows {from}..{to} of `{weight}` unplaced")]
    Gap {
        weight: String,
        from: usize,
        to: usize,
    },
    #[error("the plan splits `{weight}` by columns [{from}, {to}); the SRAM executor runs row blocks only")]
    ColumnSplit {
        weight: String,
        from: usize,
        to: usize,
    },
    #[error("the plan puts `{what}` on chip {chip}, before chip {before} which runs earlier work: not a forward pipeline")]
    NotForward {
        what: String,
        chip: usize,
        before: usize,
    },
    #[error("the plan names an unknown weight `{0}`")]
    UnknownWeight(String),
    #[error("the plan's program differs from the one this version derives from it ({0}): place the model again")]
    Stale(String),
}

/// Row blocks of each weight `(chip, row_start, row_end)` in row order, and
/// each layer's KV blocks in chip order, read from a plan's chips.
struct Assignment {
    rows: HashMap<WeightName, Vec<(usize, usize, usize)>>,
    kv: HashMap<usize, Vec<(usize, KvBlock)>>,
}

impl Assignment {
    fn from_chips(chips: &[ChipPlan], cfg: &LlamaConfig) -> Result<Self, ProgramError> {
        let mut a = Assignment {
            rows: HashMap::new(),
            kv: HashMap::new(),
        };
        for chip in chips {
            for t in &chip.tensors {
                let w = WeightName::parse(&t.weight)
                    .ok_or_else(|| ProgramError::UnknownWeight(t.weight.clone()))?;
                let shape = w.shape(cfg);
                let cols = shape.last().copied().unwrap_or(0);
                if t.col_start != 0 || t.col_end != cols {
                    return Err(ProgramError::ColumnSplit {
                        weight: t.weight.clone(),
                        from: t.col_start,
                        to: t.col_end,
                    });
                }
                // A norm vector is one "row".
                let (r0, r1) = if shape.len() == 1 {
                    (0, 1)
                } else {
                    (t.row_start, t.row_end)
                };
                a.rows.entry(w).or_default().push((chip.index, r0, r1));
            }
            for k in &chip.kv {
                a.kv.entry(k.layer).or_default().push((
                    chip.index,
                    KvBlock {
                        heads: (k.head_start, k.head_end),
                        positions: (k.pos_start, k.pos_end),
                    },
                ));
            }
        }
        for v in a.kv.values_mut() {
            v.sort_by_key(|b| (b.0, b.1.heads.0, b.1.positions.0));
        }
        for v in a.rows.values_mut() {
            v.sort_by_key(|s| (s.1, s.0));
        }
        Ok(a)
    }

    /// The row blocks of `w`, checked to cover `rows` rows in order.
    fn blocks(&self, w: WeightName, rows: usize) -> Result<&[(usize, usize, usize)], ProgramError> {
        let b = self
            .rows
            .get(&w)
            .ok_or_else(|| ProgramError::Missing(w.to_string()))?;
        let mut next = 0;
        for &(_, r0, r1) in b {
            if r0 != next {
                return Err(ProgramError::Gap {
                    weight: w.to_string(),
                    from: next,
                    to: r0,
                });
            }
            next = r1;
        }
        if next != rows {
            return Err(ProgramError::Gap {
                weight: w.to_string(),
                from: next,
                to: rows,
            });
        }
        Ok(b)
    }
}

impl Program {
    /// The program of the chips of a plan for `cfg`.
    pub fn from_chips(cfg: &LlamaConfig, chips: &[ChipPlan]) -> Result<Self, ProgramError> {
        let a = Assignment::from_chips(chips, cfg)?;
        let nodes = graph::forward(cfg);
        let mut items: Vec<Item> = Vec::new();
        // The chip of the last item: later work may not run on an earlier chip.
        let mut cur = 0usize;
        let forward = |what: String, chip: usize, cur: &mut usize| {
            if chip < *cur {
                return Err(ProgramError::NotForward {
                    what,
                    chip,
                    before: *cur,
                });
            }
            *cur = chip;
            Ok(())
        };
        for (ni, n) in nodes.iter().enumerate() {
            let mut push = |chip, work| {
                items.push(Item {
                    chip,
                    node: ni,
                    work,
                })
            };
            match n.kind {
                NodeKind::Embed => {
                    let blocks = a.blocks(WeightName::Embed, cfg.vocab_size)?;
                    let mut last = 0;
                    for (k, &(chip, r0, r1)) in blocks.iter().enumerate() {
                        forward(format!("embed rows {r0}..{r1}"), chip, &mut last)?;
                        push(
                            chip,
                            Work::Embed {
                                rows: (r0, r1),
                                first: k == 0,
                            },
                        );
                    }
                    // Untied: the layers follow the embedding; tied: the
                    // embedding is at the tail and the layers start over.
                    cur = if graph::is_last_use(&nodes, ni) {
                        last
                    } else {
                        0
                    };
                }
                NodeKind::Norm(w) => {
                    let blocks = a.blocks(w, 1)?;
                    let chip = blocks[0].0;
                    forward(n.label.clone(), chip, &mut cur)?;
                    push(chip, Work::Norm(w));
                }
                NodeKind::MatMul {
                    w,
                    inp,
                    out,
                    acc,
                    head,
                } => {
                    for &(chip, r0, r1) in a.blocks(w, w.shape(cfg)[0])? {
                        forward(format!("{} rows {r0}..{r1}", n.label), chip, &mut cur)?;
                        push(
                            chip,
                            Work::Mat {
                                w,
                                rows: (r0, r1),
                                inp,
                                out,
                                acc,
                                head,
                            },
                        );
                    }
                }
                NodeKind::Attention(l) => {
                    let blocks = a.kv.get(&l).ok_or_else(|| {
                        ProgramError::Missing(format!("the KV cache of layer {l}"))
                    })?;
                    let nb = blocks.len();
                    for (bi, &(chip, block)) in blocks.iter().enumerate() {
                        forward(format!("a KV block of layer {l}"), chip, &mut cur)?;
                        if bi == 0 {
                            push(chip, Work::RopeQ(l));
                        }
                        push(chip, Work::KvWrite(l, block));
                        push(
                            chip,
                            Work::AttnBlock {
                                layer: l,
                                block,
                                init: bi == 0,
                                fin: bi == nb - 1,
                            },
                        );
                    }
                }
                NodeKind::SiluMul(l) => push(cur, Work::Silu(l)),
                NodeKind::Bias { w, out } => {
                    let chip = a.blocks(w, 1)?[0].0;
                    forward(n.label.clone(), chip, &mut cur)?;
                    push(chip, Work::Bias { w, out });
                }
                NodeKind::HeadNorm { w, act } => {
                    let chip = a.blocks(w, 1)?[0].0;
                    forward(n.label.clone(), chip, &mut cur)?;
                    push(chip, Work::HeadNorm { w, act });
                }
                NodeKind::PostNorm(w) => {
                    let chip = a.blocks(w, 1)?[0].0;
                    forward(n.label.clone(), chip, &mut cur)?;
                    push(chip, Work::PostNorm(w));
                }
            }
        }

        // Stages and the links between them.
        let mut stages: Vec<Stage> = Vec::new();
        for (i, it) in items.iter().enumerate() {
            match stages.last_mut() {
                Some(s) if s.chip == it.chip => s.items.end = i + 1,
                _ => stages.push(Stage {
                    chip: it.chip,
                    items: i..i + 1,
                }),
            }
        }
        let live = graph::live_out(&items);
        let mut valid: BTreeMap<Act, usize> = BTreeMap::new();
        let mut links = Vec::new();
        for (k, s) in stages.iter().enumerate() {
            for it in &items[s.items.clone()] {
                valid.extend(it.writes(cfg));
            }
            if let Some(next) = stages.get(k + 1) {
                let carry: Vec<(Act, usize)> = live[s.items.end - 1]
                    .iter()
                    .filter_map(|a| valid.get(a).filter(|&&c| c > 0).map(|&c| (*a, c)))
                    .collect();
                let copies = carry
                    .iter()
                    .map(|&(act, c)| LinkCopy {
                        from_stage: k,
                        to_stage: k + 1,
                        from_chip: s.chip,
                        to_chip: next.chip,
                        act,
                        cols: (0, c),
                    })
                    .collect();
                links.push(Link {
                    from_stage: k,
                    from_chip: s.chip,
                    to_chip: next.chip,
                    carry,
                    copies,
                });
            }
        }
        Ok(Program {
            nodes,
            items,
            groups: (0..stages.len()).map(|k| k..k + 1).collect(),
            stages,
            links,
            tp: 1,
        })
    }

    /// The program of a plan's chips at tensor-parallel degree `tp`
    /// (`super::tp`; 1: [`Program::from_chips`]).
    pub fn for_tp(cfg: &LlamaConfig, chips: &[ChipPlan], tp: usize) -> Result<Self, ProgramError> {
        if tp <= 1 {
            Self::from_chips(cfg, chips)
        } else {
            super::tp::program(cfg, chips, tp)
        }
    }

    /// The pipeline group of each stage.
    pub fn group_of(&self, stage: usize) -> usize {
        self.groups
            .iter()
            .position(|g| g.contains(&stage))
            .unwrap_or(0)
    }

    /// The summary the plan stores.
    pub fn stage_plans(&self) -> Vec<StagePlan> {
        self.stages
            .iter()
            .enumerate()
            .map(|(k, s)| {
                let g = self.group_of(k);
                let link = self.links.get(g);
                let work = self.items[s.items.clone()]
                    .iter()
                    .map(|i| i.label(&self.nodes))
                    .collect();
                if self.tp <= 1 {
                    return StagePlan {
                        chip: s.chip,
                        work,
                        link_to: link.map(|l| l.to_chip),
                        carry: link.map_or(vec![], |l| {
                            l.carry
                                .iter()
                                .map(|&(a, c)| Carried {
                                    name: a.name().into(),
                                    values: c,
                                })
                                .collect()
                        }),
                        group: g,
                        sends: vec![],
                    };
                }
                // Tensor parallelism: what leaves this chip after the group.
                let out: Vec<&LinkCopy> = link.map_or(vec![], |l| {
                    l.copies
                        .iter()
                        .filter(|c| c.from_stage == k && !c.is_local())
                        .collect()
                });
                let mut carry: Vec<Carried> = Vec::new();
                for c in &out {
                    match carry.iter_mut().find(|x| x.name == c.act.name()) {
                        Some(x) => x.values += c.values(),
                        None => carry.push(Carried {
                            name: c.act.name().into(),
                            values: c.values(),
                        }),
                    }
                }
                let mut to: Vec<usize> = out.iter().map(|c| c.to_chip).collect();
                to.sort_unstable();
                to.dedup();
                StagePlan {
                    chip: s.chip,
                    work,
                    link_to: (to.len() == 1).then(|| to[0]),
                    carry,
                    group: g,
                    sends: out
                        .iter()
                        .map(|c| SendPlan {
                            to_chip: c.to_chip,
                            name: c.act.name().into(),
                            cols: c.cols,
                        })
                        .collect(),
                }
            })
            .collect()
    }

    /// Link bytes per decoded token (4 bytes a value).
    pub fn link_bytes_per_token(&self) -> usize {
        4 * self.links.iter().map(Link::values).sum::<usize>()
    }

    /// Which stage runs on which micro-batch in each pipeline step: step `s`
    /// runs stage `k` on micro-batch `s − k`; `(stage, micro-batch)` pairs.
    pub fn pipeline(&self, microbatches: usize) -> Vec<Vec<(usize, usize)>> {
        let n = self.groups.len();
        (0..microbatches + n.max(1) - 1)
            .map(|s| {
                (0..n)
                    .filter_map(|k| {
                        s.checked_sub(k)
                            .filter(|&j| j < microbatches)
                            .map(|j| (k, j))
                    })
                    .collect()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chip::{place, ChipSpec, PlaceOptions, TensorInfo};
    use crate::model::DType;

    fn cfg(tied: bool) -> LlamaConfig {
        LlamaConfig::tiny_for_tests(2, 64, tied)
    }

    fn program(tied: bool) -> (Program, crate::chip::Plan) {
        let c = cfg(tied);
        let t = TensorInfo::from_config(&c, DType::F32, DType::F32).unwrap();
        let spec = ChipSpec::preset("mini-64k").unwrap();
        let plan = place(&c, &t, &spec, &PlaceOptions::for_config(&c)).unwrap();
        (Program::from_chips(&c, &plan.chips).unwrap(), plan)
    }

    #[test]
    fn tied_embedding_runs_at_the_tail_and_loops_back_to_chip_0() {
        let (p, plan) = program(true);
        let n = plan.totals.chips_used;
        assert!(n > 2, "{n} chips");
        assert_eq!(plan.stages, p.stage_plans());
        // The gather runs first, on the chips holding the embedding (the
        // last chips, as lm_head), then the layers start on chip 0.
        let embed: Vec<&Item> = p
            .items
            .iter()
            .take_while(|i| matches!(i.work, Work::Embed { .. }))
            .collect();
        assert!(!embed.is_empty());
        assert_eq!(embed.last().unwrap().chip, n - 1);
        assert!(matches!(embed[0].work, Work::Embed { first: true, .. }));
        let lm_head_chips: Vec<usize> = p
            .items
            .iter()
            .filter(|i| matches!(i.work, Work::Mat { head: true, .. }))
            .map(|i| i.chip)
            .collect();
        assert_eq!(embed[0].chip, lm_head_chips[0]);
        let loops: Vec<&Link> = p.links.iter().filter(|l| l.is_loopback()).collect();
        assert_eq!(loops.len(), 1);
        assert_eq!((loops[0].from_chip, loops[0].to_chip), (n - 1, 0));
        assert_eq!(loops[0].carry, vec![(Act::X, 64)]);
        assert_eq!(plan.totals.loopback_bytes_per_token, 4 * 64);
        // Chips advance one stage at a time; every link carries something.
        for l in &p.links {
            assert!(l.values() > 0, "{l:?}");
            assert!(l.is_loopback() || l.to_chip == l.from_chip + 1, "{l:?}");
        }
        assert_eq!(plan.totals.link_bytes_per_token, p.link_bytes_per_token());
    }

    #[test]
    fn untied_embedding_runs_on_chip_0_without_a_loopback() {
        let (p, plan) = program(false);
        assert!(matches!(p.items[0].work, Work::Embed { first: true, .. }));
        assert_eq!(p.items[0].chip, 0);
        assert!(p.links.iter().all(|l| !l.is_loopback()));
        assert_eq!(plan.totals.loopback_bytes_per_token, 0);
        // The last stage ends with the lm_head's last rows.
        let last = p.items.last().unwrap();
        assert!(matches!(last.work, Work::Mat { head: true, rows, .. } if rows.1 == 512));
    }

    #[test]
    fn pipeline_step_s_runs_stage_k_on_micro_batch_s_minus_k() {
        let (p, _) = program(true);
        let n = p.stages.len();
        let steps = p.pipeline(3);
        assert_eq!(steps.len(), 3 + n - 1);
        assert_eq!(steps[0], vec![(0, 0)]);
        assert_eq!(steps[1], vec![(0, 1), (1, 0)]);
        assert_eq!(steps[2], vec![(0, 2), (1, 1), (2, 0)]);
        assert_eq!(steps.last().unwrap(), &vec![(n - 1, 2)]);
        // Every stage sees every micro-batch exactly once, in order.
        for k in 0..n {
            let mbs: Vec<usize> = steps
                .iter()
                .flat_map(|s| s.iter().filter(|x| x.0 == k).map(|x| x.1))
                .collect();
            assert_eq!(mbs, vec![0, 1, 2], "stage {k}");
        }
        // One micro-batch (a decoded token): one stage per step.
        assert!(p.pipeline(1).iter().all(|s| s.len() == 1));
    }

    #[test]
    fn a_program_that_runs_backwards_is_refused() {
        let (_, mut plan) = program(false);
        let c = cfg(false);
        // Move layer 1's wq to chip 0, before the chips running layer 0.
        let (from, i) = plan
            .chips
            .iter()
            .enumerate()
            .find_map(|(ci, ch)| {
                ch.tensors
                    .iter()
                    .position(|t| t.weight == "layers.1.wq")
                    .map(|i| (ci, i))
            })
            .unwrap();
        assert!(from > 0);
        let t = plan.chips[from].tensors.remove(i);
        plan.chips[0].tensors.push(t);
        let e = Program::from_chips(&c, &plan.chips).unwrap_err();
        assert!(matches!(e, ProgramError::NotForward { chip: 0, .. }), "{e}");
    }
}
