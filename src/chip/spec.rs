//! Hardware description of one SRAM-only chip, and the presets sramlm knows.
//!
//! A chip is `sram_bytes` of on-die SRAM and nothing else: weights, KV cache and
//! activations all live in it, and chips talk to each other only over their
//! chip-to-chip links. In the GPU emulation a chip's SRAM is cut into *slices*
//! of `slice_bytes`, one GPU workgroup's shared-memory budget each: a weight
//! tile is sized to fit one slice, so the workgroup that multiplies it can hold
//! it in `var<workgroup>` memory. A chip therefore has
//! `sram_bytes / slice_bytes` slices.
//!
//! # Sources for `groq-v1`
//!
//! * D. Abts et al., "Think Fast: A Tensor Streaming Processor (TSP) for
//!   Accelerating Deep Learning Workloads", ISCA 2020 — the first-generation
//!   GroqChip: 220 MiB of on-die SRAM, ~900 MHz, 188 TFLOP/s FP16 and 750 TOP/s
//!   INT8 (the product brief's numbers), up to 80 TB/s on-die memory bandwidth.
//! * D. Abts et al., "A Software-Defined Tensor Streaming Multiprocessor for
//!   Large-Scale Machine Learning", ISCA 2022 — the multi-chip system: 16
//!   chip-to-chip (C2C) links per TSP, each 4 lanes of 30 Gb/s SerDes, about
//!   14 GB/s per direction per link once cabled; any TSP's memory reachable in
//!   under 3 µs end to end across the largest (10,440-TSP) Dragonfly system.
//!   sramlm assumes 0.6 µs per chip-to-chip hop (an assumption consistent with
//!   that bound, not a published per-hop figure).
//!
//! # Interconnect and economics of `groq-v1`
//!
//! * Nodes: 8 GroqCards per GroqNode, fully connected — each card cables 7
//!   pairs (one per direction) to the 7 other cards (Abts, Hot Chips 34,
//!   2022, "Scale-out Organization"; ISCA 2022): `chips_per_node` 8,
//!   `local_links_per_peer` 1 (7 local + 4 global = 11 of the 16 links; the
//!   exact split of the rest is not modelled).
//! * Global: 4 global (inter-node) ports per card (Hot Chips 34, "Groq
//!   Scale-out Dragonfly Topology"); nodes form a software-scheduled
//!   Dragonfly (ISCA 2022): 9 nodes (72 chips) per rack are directly
//!   connected, racks are connected to each other (up to 10,440 TSPs).
//!   `global_links` 4, `nodes_per_rack` 9.
//! * Striping: the ISCA 2022 network spreads one tensor over several paths
//!   (software-scheduled, non-minimal routing); sramlm models a
//!   point-to-point transfer as striped over `stripe_links` = 4 links.
//! * Price: about US$20,000 per GroqCard (the quantity-1 distributor list
//!   price quoted in Feb 2024 analyses, e.g. isopack.blogspot.com "About that
//!   Groq demo" and the Llama-2-70B "38x" estimate) — an *input*, not a
//!   published Groq price. Power: 215 W per chip (the TDP quoted by
//!   01.me/en/2024/02/groq, Feb 2024); the "10x operating cost" estimate used
//!   ~185 W average per card. Both are labelled modelled wherever printed.
//!
//! * Latency floor per dependent stage: 19.3 µs, FITTED to Llama-2-70B at
//!   270 tok/s per user (see [`GROQ_V1_STAGE_LATENCY_S`]); not sourced.
//!
//! Spec files may set every one of these (`topology`, `chips_per_node`,
//! `nodes_per_rack`, `local_links_per_peer`, `global_links`, `stripe_links`,
//! `price_usd`, `power_w`, `stage_latency_s`); a file without them keeps the
//! old assumption: a chain of chips, one link per hop, no price or power, no
//! latency floor.
//!
//! # Scale models
//!
//! `mini-64k` and `mini-4m` are *scale models* of `groq-v1` so the small
//! models sramlm ships with span many chips. With `r = sram_bytes / 220 MiB`:
//! SRAM bandwidth and compute scale by `r` (sweeping a chip's whole SRAM takes
//! the same ~2.9 µs as on groq-v1), link bandwidth scales by `√r` (weights grow
//! as d², activations crossing a link as d, so a model shrunk to keep its chip
//! count spends the same share of time on links), link count, link latency and
//! clock are unchanged. Their absolute numbers describe no real hardware.

use super::PlacementError;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// One KiB.
pub const KIB: usize = 1024;
/// One MiB.
pub const MIB: usize = 1024 * 1024;

/// Default slice: WebGPU's default `maxComputeWorkgroupStorageSize` (16 KiB).
pub const DEFAULT_SLICE_BYTES: usize = 16 * KIB;

/// Names accepted by [`ChipSpec::preset`].
pub const PRESET_NAMES: [&str; 3] = ["groq-v1", "mini-64k", "mini-4m"];

/// One SRAM-only chip. All rates are per chip; link bandwidth is per link and
/// per direction.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChipSpec {
    pub name: String,
    /// SRAM per chip, bytes.
    pub sram_bytes: usize,
    /// One slice (= one GPU workgroup's shared-memory budget), bytes.
    pub slice_bytes: usize,
    /// On-die SRAM read bandwidth, bytes per second.
    pub sram_bandwidth: f64,
    /// Dense FP16 multiply-add rate, FLOP/s (a multiply-add is 2 FLOP).
    pub compute_flops_fp16: f64,
    /// Dense INT8 rate, op/s.
    pub compute_ops_int8: f64,
    /// Chip-to-chip links per chip.
    pub links: usize,
    /// Bytes per second per link per direction.
    pub link_bandwidth: f64,
    /// Latency of one chip-to-chip hop, seconds.
    pub link_latency_s: f64,
    /// Core clock, Hz (informational).
    pub clock_hz: f64,
    /// Latency floor of one dependent stage of a token (the work between two
    /// synchronisation points: a layer's attention side, its MLP, a MoE
    /// router, lm_head), seconds: a stage takes `max(its streaming work, this)`
    /// on the token's critical path (see [`crate::chip::cost`], "Latency
    /// model"). groq-v1's value is FITTED to one published point (Llama-2-70B
    /// at 270 tok/s per user), not sourced; 0 (no floor) in a spec file that
    /// does not set `stage_latency_s`.
    #[serde(default)]
    pub stage_latency_s: f64,
    /// How the chips are wired (nodes, links, topology, striping).
    #[serde(default)]
    pub interconnect: Interconnect,
    /// Price and power per chip (inputs for `sramlm study`).
    #[serde(default)]
    pub economics: Economics,
}

/// The network between chips.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Topology {
    /// Chip i talks to chip i+1 only (collectives run as rings).
    Chain,
    /// Fully connected nodes of `chips_per_node` chips; nodes in a chain.
    FullyConnectedNode,
    /// Fully connected nodes; nodes of a rack directly connected over global
    /// links; racks connected to each other (ISCA 2022's Dragonfly).
    Dragonfly,
}

impl Topology {
    pub fn name(self) -> &'static str {
        match self {
            Topology::Chain => "chain",
            Topology::FullyConnectedNode => "fully_connected_node",
            Topology::Dragonfly => "dragonfly",
        }
    }
    pub fn parse(s: &str) -> Option<Topology> {
        match s {
            "chain" => Some(Topology::Chain),
            "fully_connected_node" => Some(Topology::FullyConnectedNode),
            "dragonfly" => Some(Topology::Dragonfly),
            _ => None,
        }
    }
}

/// Chip-to-chip wiring. Link bandwidth and latency are the chip's
/// (`link_bandwidth`, `link_latency_s`, per link, per direction, per hop).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Interconnect {
    pub topology: Topology,
    /// Chips per fully connected node (1 for a chain).
    pub chips_per_node: usize,
    /// Nodes per Dragonfly group (rack), directly connected to each other.
    pub nodes_per_rack: usize,
    /// Links from a chip to each other chip of its node.
    pub local_links_per_peer: usize,
    /// Links from a chip to other nodes.
    pub global_links: usize,
    /// Links a point-to-point transfer is striped over.
    pub stripe_links: usize,
}

impl Default for Interconnect {
    /// The pre-interconnect assumption: a chain, one link per hop.
    fn default() -> Self {
        Interconnect {
            topology: Topology::Chain,
            chips_per_node: 1,
            nodes_per_rack: 1,
            local_links_per_peer: 0,
            global_links: 1,
            stripe_links: 1,
        }
    }
}

impl Interconnect {
    /// groq-v1: 8-chip fully connected nodes, 9-node racks, Dragonfly (see
    /// the module docs for sources).
    pub fn groq_v1() -> Self {
        Interconnect {
            topology: Topology::Dragonfly,
            chips_per_node: 8,
            nodes_per_rack: 9,
            local_links_per_peer: 1,
            global_links: 4,
            stripe_links: 4,
        }
    }
}

/// Price and power of one chip, as inputs (`None`: not known).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Economics {
    /// US dollars per chip (card), modelled input.
    pub price_usd: Option<f64>,
    /// Watts per chip (card) while serving, modelled input.
    pub power_w: Option<f64>,
}

/// The modelled cost of one collective or transfer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CollectiveCost {
    /// `"one_shot"`, `"reduce_scatter_all_gather"`, `"ring"`,
    /// `"hierarchical"`, `"direct"`, `"none"`.
    pub algorithm: String,
    /// Bytes each chip sends.
    pub bytes_sent_per_chip: f64,
    /// Bytes over all links (every chip's sends).
    pub link_bytes_total: f64,
    /// Sequential communication steps (each pays one hop latency at least).
    pub steps: usize,
    pub modeled_s: f64,
}

impl CollectiveCost {
    fn none() -> Self {
        CollectiveCost {
            algorithm: "none".into(),
            bytes_sent_per_chip: 0.0,
            link_bytes_total: 0.0,
            steps: 0,
            modeled_s: 0.0,
        }
    }
}

const GROQ_SRAM: usize = 220 * MIB;

/// groq-v1's latency floor per dependent stage, seconds: FITTED so that the
/// study's fewest-chips layout of Llama-2-70B (fp16 weights, 4096 context,
/// 1 user) runs at 270 tok/s per user (the middle of Groq's published
/// 240–300), and validated on Mixtral 8x7B and Llama-2-7B
/// (`sramlm study --validate`; `study::validation::fit_stage_latency`
/// recomputes it and tests/study.rs checks the two agree). Not a published
/// figure: what the sources give is an order of magnitude smaller (ISCA
/// 2020: 900 MHz, ResNet-50 at batch 1 in ~49 µs for ~50 layers; ISCA 2022:
/// < 3 µs end to end; docs/study.md, "Latency model").
pub const GROQ_V1_STAGE_LATENCY_S: f64 = 19.3e-6;

impl ChipSpec {
    /// First-generation GroqChip (TSP), see the module docs for sources.
    pub fn groq_v1() -> Self {
        ChipSpec {
            name: "groq-v1".into(),
            sram_bytes: GROQ_SRAM,
            slice_bytes: DEFAULT_SLICE_BYTES,
            sram_bandwidth: 80e12,
            compute_flops_fp16: 188e12,
            compute_ops_int8: 750e12,
            links: 16,
            link_bandwidth: 14e9,
            link_latency_s: 0.6e-6,
            clock_hz: 900e6,
            stage_latency_s: GROQ_V1_STAGE_LATENCY_S,
            interconnect: Interconnect::groq_v1(),
            economics: Economics {
                price_usd: Some(20_000.0),
                power_w: Some(215.0),
            },
        }
    }

    /// A scale model of `groq-v1` with `sram_bytes` of SRAM (see module docs).
    pub fn scale_model(name: &str, sram_bytes: usize) -> Self {
        let g = Self::groq_v1();
        let r = sram_bytes as f64 / g.sram_bytes as f64;
        ChipSpec {
            name: name.into(),
            sram_bytes,
            slice_bytes: DEFAULT_SLICE_BYTES,
            sram_bandwidth: g.sram_bandwidth * r,
            compute_flops_fp16: g.compute_flops_fp16 * r,
            compute_ops_int8: g.compute_ops_int8 * r,
            links: g.links,
            link_bandwidth: g.link_bandwidth * r.sqrt(),
            link_latency_s: g.link_latency_s,
            clock_hz: g.clock_hz,
            stage_latency_s: g.stage_latency_s,
            interconnect: g.interconnect,
            economics: Economics::default(),
        }
    }

    /// A preset by name: `groq-v1`; `mini-64k` (64 KiB chips: stories260K,
    /// 1.0 MB of f32 weights, spans 31 of them with its 512-position f32 KV
    /// cache, 21 with 64 positions); `mini-4m` (4 MiB chips: SmolLM2-135M
    /// Q4_1, 92 MiB of weights, needs 24 for the weights alone and 27 with a
    /// 256-position f32 KV cache).
    pub fn preset(name: &str) -> Result<Self, PlacementError> {
        match name {
            "groq-v1" => Ok(Self::groq_v1()),
            "mini-64k" => Ok(Self::scale_model("mini-64k", 64 * KIB)),
            "mini-4m" => Ok(Self::scale_model("mini-4m", 4 * MIB)),
            _ => Err(PlacementError::UnknownPreset {
                name: name.into(),
                known: PRESET_NAMES.join(", "),
            }),
        }
    }

    /// Every preset, in [`PRESET_NAMES`] order.
    pub fn presets() -> Vec<Self> {
        PRESET_NAMES
            .iter()
            .map(|n| Self::preset(n).expect("preset names resolve"))
            .collect()
    }

    /// A preset name, or the path of a JSON spec file.
    pub fn resolve(name_or_path: &str) -> Result<Self, PlacementError> {
        if PRESET_NAMES.contains(&name_or_path) {
            return Self::preset(name_or_path);
        }
        let path = Path::new(name_or_path);
        let looks_like_path =
            path.exists() || name_or_path.contains(['/', '\\']) || path.extension().is_some();
        if looks_like_path {
            Self::load(path)
        } else {
            Self::preset(name_or_path)
        }
    }

    /// Reads a custom spec from a JSON file (see `models/chips/*.json`).
    pub fn load(path: &Path) -> Result<Self, PlacementError> {
        // (a FIFO or device would block or never end)
        if std::fs::metadata(path).is_ok_and(|m| !m.is_file()) {
            return Err(PlacementError::Io {
                path: path.display().to_string(),
                msg: "not a regular file (a directory, FIFO or device); give a JSON file".into(),
            });
        }
        let text = std::fs::read_to_string(path).map_err(|e| PlacementError::Io {
            path: path.display().to_string(),
            msg: e.to_string(),
        })?;
        Self::from_json_str(&text, &path.display().to_string())
    }

    /// Parses a JSON spec; `origin` names the file in error messages.
    ///
    /// Fields: `name` (string), `sram_bytes`, `slice_bytes` (optional, default
    /// 16 KiB) — integers or strings such as `"220 MiB"`, `"16KiB"` —
    /// `sram_bandwidth`, `compute_flops_fp16`, `compute_ops_int8`,
    /// `link_bandwidth` (numbers, per second), `links` (integer),
    /// `link_latency_s`, `clock_hz` (numbers). Unknown fields are rejected so
    /// a typo cannot silently fall back to a default.
    pub fn from_json_str(text: &str, origin: &str) -> Result<Self, PlacementError> {
        let malformed = |field: &str, msg: String| PlacementError::MalformedSpec {
            path: origin.into(),
            field: field.into(),
            msg,
        };
        let v: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| malformed("(file)", format!("not valid JSON: {e}")))?;
        let obj = v
            .as_object()
            .ok_or_else(|| malformed("(file)", "must hold a JSON object".into()))?;
        const FIELDS: [&str; 19] = [
            "name",
            "sram_bytes",
            "slice_bytes",
            "sram_bandwidth",
            "compute_flops_fp16",
            "compute_ops_int8",
            "links",
            "link_bandwidth",
            "link_latency_s",
            "clock_hz",
            "stage_latency_s",
            "topology",
            "chips_per_node",
            "nodes_per_rack",
            "local_links_per_peer",
            "global_links",
            "stripe_links",
            "price_usd",
            "power_w",
        ];
        for key in obj.keys() {
            if !FIELDS.contains(&key.as_str()) && !key.starts_with('_') {
                return Err(malformed(
                    key,
                    format!("unknown field (known: {})", FIELDS.join(", ")),
                ));
            }
        }
        let get = |key: &str| -> Result<&serde_json::Value, PlacementError> {
            match obj.get(key) {
                None | Some(serde_json::Value::Null) => Err(malformed(key, "missing field".into())),
                Some(v) => Ok(v),
            }
        };
        let number = |key: &str| -> Result<f64, PlacementError> {
            let v = get(key)?;
            let x = v
                .as_f64()
                .ok_or_else(|| malformed(key, format!("must be a number, got {v}")))?;
            if !x.is_finite() {
                return Err(malformed(key, format!("must be finite, got {v}")));
            }
            Ok(x)
        };
        let positive = |key: &str| -> Result<f64, PlacementError> {
            let x = number(key)?;
            if x <= 0.0 {
                return Err(PlacementError::InvalidSpec {
                    spec: origin.into(),
                    field: key.into(),
                    msg: format!("must be positive, got {x}"),
                });
            }
            Ok(x)
        };
        let bytes = |key: &str| -> Result<usize, PlacementError> {
            let v = get(key)?;
            let x = match v {
                serde_json::Value::String(s) => parse_byte_size(s)
                    .ok_or_else(|| malformed(key, format!("cannot read `{s}` as a byte size")))?,
                _ => v.as_f64().ok_or_else(|| {
                    malformed(
                        key,
                        format!("must be an integer or a size like \"16 KiB\", got {v}"),
                    )
                })?,
            };
            if x <= 0.0 {
                return Err(PlacementError::InvalidSpec {
                    spec: origin.into(),
                    field: key.into(),
                    msg: format!("must be positive, got {x}"),
                });
            }
            if x.fract() != 0.0 || x > u32::MAX as f64 * 1024.0 {
                return Err(malformed(
                    key,
                    format!("must be a whole number of bytes, got {x}"),
                ));
            }
            Ok(x as usize)
        };
        let name = match get("name")? {
            serde_json::Value::String(s) if !s.is_empty() => s.clone(),
            other => {
                return Err(malformed(
                    "name",
                    format!("must be a non-empty string, got {other}"),
                ))
            }
        };
        let links = positive("links")?;
        if links.fract() != 0.0 {
            return Err(malformed(
                "links",
                format!("must be an integer, got {links}"),
            ));
        }
        let latency = number("link_latency_s")?;
        if latency < 0.0 {
            return Err(PlacementError::InvalidSpec {
                spec: origin.into(),
                field: "link_latency_s".into(),
                msg: format!("must not be negative, got {latency}"),
            });
        }
        let spec = ChipSpec {
            name,
            sram_bytes: bytes("sram_bytes")?,
            slice_bytes: if obj.get("slice_bytes").is_some_and(|v| !v.is_null()) {
                bytes("slice_bytes")?
            } else {
                DEFAULT_SLICE_BYTES
            },
            sram_bandwidth: positive("sram_bandwidth")?,
            compute_flops_fp16: positive("compute_flops_fp16")?,
            compute_ops_int8: positive("compute_ops_int8")?,
            links: links as usize,
            link_bandwidth: positive("link_bandwidth")?,
            link_latency_s: latency,
            clock_hz: positive("clock_hz")?,
            stage_latency_s: 0.0,
            interconnect: Interconnect::default(),
            economics: Economics::default(),
        };
        let present = |k: &str| obj.get(k).is_some_and(|v| !v.is_null());
        let count = |key: &str, min: f64| -> Result<Option<usize>, PlacementError> {
            if !present(key) {
                return Ok(None);
            }
            let x = number(key)?;
            if x.fract() != 0.0 || x < min || x > 1e6 {
                return Err(malformed(
                    key,
                    format!("must be a whole number from {min} to 1000000, got {x}"),
                ));
            }
            Ok(Some(x as usize))
        };
        let mut spec = spec;
        let ic = &mut spec.interconnect;
        if present("topology") {
            let t = obj["topology"]
                .as_str()
                .and_then(Topology::parse)
                .ok_or_else(|| {
                    malformed(
                        "topology",
                        format!(
                            "must be \"chain\", \"fully_connected_node\" or \"dragonfly\", got {}",
                            obj["topology"]
                        ),
                    )
                })?;
            ic.topology = t;
        }
        if let Some(x) = count("chips_per_node", 1.0)? {
            ic.chips_per_node = x;
        }
        if let Some(x) = count("nodes_per_rack", 1.0)? {
            ic.nodes_per_rack = x;
        }
        if let Some(x) = count("local_links_per_peer", 0.0)? {
            ic.local_links_per_peer = x;
        }
        if let Some(x) = count("global_links", 1.0)? {
            ic.global_links = x;
        }
        if let Some(x) = count("stripe_links", 1.0)? {
            ic.stripe_links = x;
        }
        if present("stage_latency_s") {
            let x = number("stage_latency_s")?;
            if !(0.0..=1.0).contains(&x) {
                return Err(PlacementError::InvalidSpec {
                    spec: origin.into(),
                    field: "stage_latency_s".into(),
                    msg: format!("must be from 0 to 1 second, got {x}"),
                });
            }
            spec.stage_latency_s = x;
        }
        if present("price_usd") {
            spec.economics.price_usd = Some(positive("price_usd")?);
        }
        if present("power_w") {
            spec.economics.power_w = Some(positive("power_w")?);
        }
        spec.validate()?;
        Ok(spec)
    }

    /// Checks sizes and rates: everything positive, the slice no larger than
    /// the chip. [`place`](super::place) calls this.
    pub fn validate(&self) -> Result<(), PlacementError> {
        let bad = |field: &str, msg: String| PlacementError::InvalidSpec {
            spec: self.name.clone(),
            field: field.into(),
            msg,
        };
        for (field, v) in [
            ("sram_bytes", self.sram_bytes),
            ("slice_bytes", self.slice_bytes),
            ("links", self.links),
        ] {
            if v == 0 {
                return Err(bad(field, "must be positive, got 0".into()));
            }
        }
        for (field, v) in [
            ("sram_bandwidth", self.sram_bandwidth),
            ("compute_flops_fp16", self.compute_flops_fp16),
            ("compute_ops_int8", self.compute_ops_int8),
            ("link_bandwidth", self.link_bandwidth),
            ("clock_hz", self.clock_hz),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(bad(field, format!("must be positive, got {v}")));
            }
        }
        if !(self.link_latency_s.is_finite() && self.link_latency_s >= 0.0) {
            return Err(bad(
                "link_latency_s",
                format!("must not be negative, got {}", self.link_latency_s),
            ));
        }
        if !(self.stage_latency_s.is_finite() && (0.0..=1.0).contains(&self.stage_latency_s)) {
            return Err(bad(
                "stage_latency_s",
                format!("must be from 0 to 1 second, got {}", self.stage_latency_s),
            ));
        }
        let ic = &self.interconnect;
        if ic.chips_per_node == 0 || ic.nodes_per_rack == 0 || ic.stripe_links == 0 {
            return Err(bad(
                "chips_per_node",
                "chips_per_node, nodes_per_rack and stripe_links must be positive".into(),
            ));
        }
        if ic.topology != Topology::Chain && ic.chips_per_node > 1 && ic.local_links_per_peer == 0 {
            return Err(bad(
                "local_links_per_peer",
                format!(
                    "must be at least 1 for a {} topology with {} chips per node",
                    ic.topology.name(),
                    ic.chips_per_node
                ),
            ));
        }
        let wired = ic.local_links_per_peer * (ic.chips_per_node - 1) + ic.global_links;
        if ic.topology != Topology::Chain && wired > self.links {
            return Err(bad(
                "links",
                format!(
                    "{} local links ({} per peer × {} peers) + {} global links exceed the chip's {} links",
                    ic.local_links_per_peer * (ic.chips_per_node - 1),
                    ic.local_links_per_peer,
                    ic.chips_per_node - 1,
                    ic.global_links,
                    self.links
                ),
            ));
        }
        if ic.stripe_links > self.links {
            return Err(bad(
                "stripe_links",
                format!(
                    "{} is more than the chip's {} links",
                    ic.stripe_links, self.links
                ),
            ));
        }
        for (field, v) in [
            ("price_usd", self.economics.price_usd),
            ("power_w", self.economics.power_w),
        ] {
            if let Some(v) = v {
                if !(v.is_finite() && v > 0.0) {
                    return Err(bad(field, format!("must be positive, got {v}")));
                }
            }
        }
        if self.slice_bytes > self.sram_bytes {
            return Err(PlacementError::SliceLargerThanChip {
                spec: self.name.clone(),
                slice: self.slice_bytes,
                chip: self.sram_bytes,
            });
        }
        Ok(())
    }

    /// The same chip with another slice size (e.g. the adapter's
    /// `max_compute_workgroup_storage_size`).
    pub fn with_slice_bytes(mut self, slice_bytes: usize) -> Result<Self, PlacementError> {
        self.slice_bytes = slice_bytes;
        self.validate()?;
        Ok(self)
    }

    /// Errors when a slice does not fit one workgroup of the GPU adapter
    /// (`adapter_limit` = `wgpu::Limits::max_compute_workgroup_storage_size`).
    pub fn check_slice_against_limit(&self, adapter_limit: u32) -> Result<(), PlacementError> {
        if self.slice_bytes > adapter_limit as usize {
            return Err(PlacementError::SliceOverAdapterLimit {
                slice: self.slice_bytes,
                limit: adapter_limit as usize,
            });
        }
        Ok(())
    }

    /// Time to move `bytes` over `links` parallel links, plus one hop.
    fn hop_s(&self, bytes: f64, links: usize) -> f64 {
        bytes / (links.max(1) as f64 * self.link_bandwidth) + self.link_latency_s
    }

    /// Hops on the shortest path from chip `a` to chip `b` (chips numbered
    /// node by node, rack by rack).
    pub fn hops_between(&self, a: usize, b: usize) -> usize {
        if a == b {
            return 0;
        }
        let ic = &self.interconnect;
        let (na, nb) = (a / ic.chips_per_node, b / ic.chips_per_node);
        match ic.topology {
            Topology::Chain => a.abs_diff(b),
            _ if na == nb => 1,
            Topology::FullyConnectedNode => na.abs_diff(nb) + 1,
            Topology::Dragonfly => {
                if na / ic.nodes_per_rack == nb / ic.nodes_per_rack {
                    2 // global link to the node, local link to the chip
                } else {
                    3 // local, global (rack to rack), local
                }
            }
        }
    }

    /// A point-to-point transfer of `bytes` over `hops` hops, striped over
    /// `stripe_links` links (store-and-forward per hop is not modelled: the
    /// TSP forwards streams, so only latency is paid per extra hop).
    pub fn p2p(&self, bytes: f64, hops: usize) -> CollectiveCost {
        if hops == 0 {
            return CollectiveCost::none();
        }
        let s = self.interconnect.stripe_links.min(self.links).max(1);
        CollectiveCost {
            algorithm: "direct".into(),
            bytes_sent_per_chip: bytes,
            link_bytes_total: bytes,
            steps: hops,
            modeled_s: bytes / (s as f64 * self.link_bandwidth) + hops as f64 * self.link_latency_s,
        }
    }

    /// Ring all-reduce over `n` chips, `links` links per neighbour.
    fn ring_all_reduce(&self, n: usize, bytes: f64, links: usize, hops: usize) -> CollectiveCost {
        let steps = 2 * (n - 1);
        let per = bytes / n as f64;
        CollectiveCost {
            algorithm: "ring".into(),
            bytes_sent_per_chip: steps as f64 * per,
            link_bytes_total: n as f64 * steps as f64 * per,
            steps,
            modeled_s: steps as f64
                * (per / (links.max(1) as f64 * self.link_bandwidth)
                    + hops as f64 * self.link_latency_s),
        }
    }

    /// All-reduce (sum) of a `bytes`-long vector held by each of `n` chips
    /// (the first `n` chips of a group aligned to a node). Fully connected
    /// groups pick the faster of one-shot (each chip sends its whole vector
    /// to every peer: one step, `(n−1)·bytes` per chip) and reduce-scatter +
    /// all-gather (two steps, `2(n−1)/n·bytes` per chip); a chain runs a
    /// ring (`2(n−1)` steps); groups wider than a node reduce within each
    /// node, all-reduce the node's shard between counterpart chips of the
    /// nodes over global links, and gather within each node.
    pub fn all_reduce(&self, n: usize, bytes: f64) -> CollectiveCost {
        if n <= 1 || bytes <= 0.0 {
            return CollectiveCost::none();
        }
        let ic = &self.interconnect;
        if ic.topology == Topology::Chain || ic.chips_per_node == 1 {
            let mut c = self.ring_all_reduce(n, bytes, ic.stripe_links.min(self.links), 1);
            if ic.topology != Topology::Chain {
                c.algorithm = "ring".into();
            }
            return c;
        }
        let lpp = ic.local_links_per_peer.max(1);
        if n <= ic.chips_per_node {
            let one_shot = CollectiveCost {
                algorithm: "one_shot".into(),
                bytes_sent_per_chip: (n - 1) as f64 * bytes,
                link_bytes_total: (n * (n - 1)) as f64 * bytes,
                steps: 1,
                modeled_s: self.hop_s(bytes, lpp),
            };
            let per = bytes / n as f64;
            let rs_ag = CollectiveCost {
                algorithm: "reduce_scatter_all_gather".into(),
                bytes_sent_per_chip: 2.0 * (n - 1) as f64 * per,
                link_bytes_total: 2.0 * (n * (n - 1)) as f64 * per,
                steps: 2,
                modeled_s: 2.0 * self.hop_s(per, lpp),
            };
            return if one_shot.modeled_s < rs_ag.modeled_s {
                one_shot
            } else {
                rs_ag
            };
        }
        // Hierarchical: c chips per node, g nodes.
        let c = ic.chips_per_node;
        let g = n.div_ceil(c);
        let shard = bytes / c as f64;
        let intra = self.hop_s(shard, lpp);
        let intra_bytes = (c - 1) as f64 * shard;
        let gl = ic.global_links.max(1);
        let hops = match ic.topology {
            Topology::Dragonfly if g <= ic.nodes_per_rack => 1,
            Topology::Dragonfly => 2,
            _ => 1,
        };
        let ring = self.ring_all_reduce(g, shard, gl, hops);
        let inter = if ic.topology == Topology::Dragonfly {
            let one_shot_s = shard * (g - 1) as f64 / (gl as f64 * self.link_bandwidth)
                + hops as f64 * self.link_latency_s;
            if one_shot_s < ring.modeled_s {
                ((g - 1) as f64 * shard, one_shot_s, 1)
            } else {
                (ring.bytes_sent_per_chip, ring.modeled_s, ring.steps)
            }
        } else {
            (ring.bytes_sent_per_chip, ring.modeled_s, ring.steps)
        };
        let per_chip = 2.0 * intra_bytes + inter.0;
        CollectiveCost {
            algorithm: "hierarchical".into(),
            bytes_sent_per_chip: per_chip,
            link_bytes_total: n as f64 * per_chip,
            steps: 2 + inter.2,
            modeled_s: 2.0 * intra + inter.1,
        }
    }

    /// All-gather: each of `n` chips holds `piece` bytes and ends with all
    /// `n·piece` (one step in a fully connected node, `n−1` on a chain, node
    /// blocks exchanged between counterparts across nodes).
    pub fn all_gather(&self, n: usize, piece: f64) -> CollectiveCost {
        if n <= 1 || piece <= 0.0 {
            return CollectiveCost::none();
        }
        let ic = &self.interconnect;
        if ic.topology == Topology::Chain || ic.chips_per_node == 1 {
            let steps = n - 1;
            let s = ic.stripe_links.min(self.links);
            return CollectiveCost {
                algorithm: "ring".into(),
                bytes_sent_per_chip: steps as f64 * piece,
                link_bytes_total: (n * steps) as f64 * piece,
                steps,
                modeled_s: steps as f64 * self.hop_s(piece, s),
            };
        }
        let lpp = ic.local_links_per_peer.max(1);
        let c = ic.chips_per_node.min(n);
        let intra = self.hop_s(piece, lpp);
        let intra_bytes = (c - 1) as f64 * piece;
        if n <= ic.chips_per_node {
            return CollectiveCost {
                algorithm: "one_shot".into(),
                bytes_sent_per_chip: intra_bytes,
                link_bytes_total: n as f64 * intra_bytes,
                steps: 1,
                modeled_s: intra,
            };
        }
        let g = n.div_ceil(c);
        let block = c as f64 * piece;
        let gl = ic.global_links.max(1) as f64;
        let hops = if ic.topology == Topology::Dragonfly && g > ic.nodes_per_rack {
            2
        } else {
            1
        };
        let (inter_s, inter_steps) = match ic.topology {
            Topology::Dragonfly => (
                block * (g - 1) as f64 / (gl * self.link_bandwidth)
                    + hops as f64 * self.link_latency_s,
                1,
            ),
            _ => (
                (g - 1) as f64 * (block / (gl * self.link_bandwidth) + self.link_latency_s),
                g - 1,
            ),
        };
        let per_chip = intra_bytes + (g - 1) as f64 * block;
        CollectiveCost {
            algorithm: "hierarchical".into(),
            bytes_sent_per_chip: per_chip,
            link_bytes_total: n as f64 * per_chip,
            steps: 1 + inter_steps,
            modeled_s: intra + inter_s,
        }
    }

    /// Whole slices per chip.
    pub fn slices_per_chip(&self) -> usize {
        self.sram_bytes / self.slice_bytes
    }
}

/// `"220 MiB"`, `"16KiB"`, `"4 MB"`, `"65536"`, `"64 k"` → bytes.
pub fn parse_byte_size(s: &str) -> Option<f64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let x: f64 = num.trim().parse().ok()?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kib" => 1024.0,
        "m" | "mib" => 1024.0 * 1024.0,
        "g" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        _ => return None,
    };
    Some(x * mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid() {
        for s in ChipSpec::presets() {
            s.validate().unwrap();
            assert_eq!(s.slice_bytes, DEFAULT_SLICE_BYTES);
        }
        let g = ChipSpec::groq_v1();
        assert_eq!(g.sram_bytes, 230_686_720);
        assert_eq!(g.slices_per_chip(), 14080);
        let m = ChipSpec::preset("mini-4m").unwrap();
        // SRAM sweep time is preserved by the scale model.
        let t = |s: &ChipSpec| s.sram_bytes as f64 / s.sram_bandwidth;
        assert!((t(&m) - t(&g)).abs() < 1e-12);
    }

    #[test]
    fn unknown_preset_lists_known_ones() {
        let e = ChipSpec::resolve("groq-v9").unwrap_err().to_string();
        assert!(
            e.contains("groq-v9") && e.contains("mini-64k") && e.contains("groq-v1"),
            "{e}"
        );
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(parse_byte_size("220 MiB"), Some(220.0 * 1048576.0));
        assert_eq!(parse_byte_size("16KiB"), Some(16384.0));
        assert_eq!(parse_byte_size("4 MB"), Some(4e6));
        assert_eq!(parse_byte_size("1.5 k"), Some(1536.0));
        assert_eq!(parse_byte_size("12 parsecs"), None);
    }

    const GOOD: &str = r#"{"name":"t","sram_bytes":"64 KiB","slice_bytes":4096,"sram_bandwidth":1e9,
        "compute_flops_fp16":1e9,"compute_ops_int8":2e9,"links":4,"link_bandwidth":1e8,
        "link_latency_s":1e-6,"clock_hz":1e9}"#;

    #[test]
    fn parses_custom_spec() {
        let s = ChipSpec::from_json_str(GOOD, "t.json").unwrap();
        assert_eq!(s.sram_bytes, 65536);
        assert_eq!(s.slices_per_chip(), 16);
    }

    #[test]
    fn malformed_spec_names_file_and_field() {
        let e = ChipSpec::from_json_str(
            &GOOD.replace("\"links\":4", "\"links\":\"four\""),
            "my.json",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("my.json") && e.contains("links"), "{e}");
        let e = ChipSpec::from_json_str(
            &GOOD.replace("\"clock_hz\":1e9", "\"clok_hz\":1e9"),
            "my.json",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("clok_hz"), "{e}");
        let e = ChipSpec::from_json_str("{", "broken.json")
            .unwrap_err()
            .to_string();
        assert!(e.contains("broken.json"), "{e}");
    }

    #[test]
    fn zero_negative_and_oversized_slices() {
        let e = ChipSpec::from_json_str(&GOOD.replace("\"64 KiB\"", "0"), "z.json")
            .unwrap_err()
            .to_string();
        assert!(e.contains("sram_bytes") && e.contains("positive"), "{e}");
        let e = ChipSpec::from_json_str(
            &GOOD.replace("\"sram_bandwidth\":1e9", "\"sram_bandwidth\":-1"),
            "n.json",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("sram_bandwidth") && e.contains("positive"),
            "{e}"
        );
        let e = ChipSpec::from_json_str(
            &GOOD.replace("\"slice_bytes\":4096", "\"slice_bytes\":131072"),
            "s.json",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("131072") && e.contains("65536"), "{e}");
        assert!(ChipSpec::groq_v1().with_slice_bytes(0).is_err());
    }

    #[test]
    fn slice_against_adapter_limit() {
        let s = ChipSpec::groq_v1().with_slice_bytes(32 * KIB).unwrap();
        let e = s.check_slice_against_limit(16384).unwrap_err().to_string();
        assert!(e.contains("32768") && e.contains("16384"), "{e}");
        s.check_slice_against_limit(32768).unwrap();
    }
}
