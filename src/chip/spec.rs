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
}

const GROQ_SRAM: usize = 220 * MIB;

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
        const FIELDS: [&str; 10] = [
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
        };
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
