//! `sramlm chips`: the chip presets and the spec files.

use super::{human_bytes, Format};
use anyhow::{bail, Result};
use clap::Args;
use sramlm::chip::ChipSpec;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub(super) struct ChipsArgs {
    /// Also list the JSON spec files in this folder [default: models/chips
    /// here and in the source tree sramlm was built from]
    #[arg(long)]
    pub(super) dir: Option<PathBuf>,
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub(super) format: Format,
}

pub(super) fn run(a: ChipsArgs) -> Result<()> {
    let mut rows: Vec<(String, ChipSpec)> = ChipSpec::presets()
        .into_iter()
        .map(|s| ("preset".to_string(), s))
        .collect();
    let dirs = match &a.dir {
        Some(d) => {
            if !d.is_dir() {
                bail!("{} is not a folder", d.display());
            }
            vec![d.clone()]
        }
        None => {
            let mut v = vec![PathBuf::from("models/chips")];
            let built = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/chips");
            if built.canonicalize().ok() != v[0].canonicalize().ok() {
                v.push(built);
            }
            v
        }
    };
    let mut problems = Vec::new();
    for d in dirs {
        let Ok(list) = std::fs::read_dir(&d) else {
            continue;
        };
        let mut files: Vec<PathBuf> = list
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        for f in files {
            match ChipSpec::load(&f) {
                Ok(spec) => rows.push((f.display().to_string(), spec)),
                Err(e) => problems.push(format!("{}: {e}", f.display())),
            }
        }
    }
    if a.format == Format::Json {
        let list: Vec<_> = rows
            .iter()
            .map(|(src, s)| {
                let mut v = serde_json::to_value(s).unwrap_or_default();
                v["source"] = serde_json::json!(src);
                v["slices_per_chip"] = serde_json::json!(s.slices_per_chip());
                v
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"chips": list, "errors": problems}))?
        );
        return Ok(());
    }
    let rate = |v: f64, unit: &str| {
        let (d, p) = [(1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")]
            .into_iter()
            .find(|(d, _)| v >= *d)
            .unwrap_or((1.0, ""));
        format!("{:.3}", v / d)
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
            + " "
            + p
            + unit
    };
    println!(
        "{:<22} {:>10} {:>9} {:>7} {:>9} {:>11} {:>5} {:>10}",
        "chip", "SRAM", "slice", "slices", "SRAM B/s", "FP16 FLOP/s", "links", "link B/s"
    );
    for (src, c) in &rows {
        let name = if src == "preset" {
            c.name.clone()
        } else {
            format!("{} *", c.name)
        };
        println!(
            "{:<22} {:>10} {:>9} {:>7} {:>9} {:>11} {:>5} {:>10}",
            name,
            human_bytes(c.sram_bytes as u64),
            human_bytes(c.slice_bytes as u64),
            c.slices_per_chip(),
            rate(c.sram_bandwidth, ""),
            rate(c.compute_flops_fp16, ""),
            c.links,
            rate(c.link_bandwidth, ""),
        );
    }
    let files: Vec<&String> = rows
        .iter()
        .map(|r| &r.0)
        .filter(|s| *s != "preset")
        .collect();
    if !files.is_empty() {
        println!("* spec files (use the path with --chip):");
        for f in files {
            println!("    {f}");
        }
    }
    for p in &problems {
        eprintln!("skipped {p}");
    }
    println!(
        "slice = one GPU workgroup's shared-memory budget; rates are per chip (links: per link)"
    );
    Ok(())
}
