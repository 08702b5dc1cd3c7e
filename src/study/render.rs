//! The study as a table and as SVG charts (all figures modelled).

use super::{SideSummary, StudyReport, SweepPoint};
use std::fmt::Write as _;

fn money(x: Option<f64>) -> String {
    match x {
        None => "n/a (no price in the spec)".into(),
        Some(v) if v >= 1e6 => format!("${:.2}M", v / 1e6),
        Some(v) if v >= 1e3 => format!("${:.1}k", v / 1e3),
        Some(v) => format!("${v:.2}"),
    }
}

fn watts(x: Option<f64>) -> String {
    match x {
        None => "n/a (no power in the spec)".into(),
        Some(v) if v >= 1e6 => format!("{:.2} MW", v / 1e6),
        Some(v) if v >= 1e3 => format!("{:.1} kW", v / 1e3),
        Some(v) => format!("{v:.0} W"),
    }
}

fn opt(x: Option<f64>, digits: usize) -> String {
    x.map_or("n/a".into(), |v| format!("{v:.digits$}"))
}

fn bytes(b: f64) -> String {
    if b >= 1e9 {
        format!("{:.1} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1} MB", b / 1e6)
    } else if b >= 1e3 {
        format!("{:.1} kB", b / 1e3)
    } else {
        format!("{b:.0} B")
    }
}

fn us(s: f64) -> String {
    if s >= 1e-3 {
        format!("{:.2} ms", s * 1e3)
    } else {
        format!("{:.1} µs", s * 1e6)
    }
}

/// One row of the side-by-side table: how a side's cell is written.
type Cell = dyn Fn(&SideSummary) -> String;

/// The study as a text table (every number labelled modelled).
pub fn table(r: &StudyReport) -> String {
    let mut out = String::new();
    let m = &r.model;
    let o = &r.options;
    let _ = writeln!(
        out,
        "sramlm study — ALL FIGURES ARE MODELLED (cost model + input prices/powers), not measured"
    );
    let moe = if m.experts > 1 {
        format!(
            ", MoE {} experts, {} per token",
            m.experts, m.experts_per_token
        )
    } else {
        String::new()
    };
    let _ = writeln!(
        out,
        "model {}: {:.4}B parameters ({:.4}B active per token){moe}, {} layers, hidden {}, heads {}/{} kv",
        m.name,
        r.total_params / 1e9,
        r.active_params / 1e9,
        m.layers,
        m.hidden,
        m.heads,
        m.kv_heads
    );
    let _ = writeln!(
        out,
        "workload: {} users, {} KV positions each; weights {}, KV {}, activations {}; objective {:?}; utilization {:.0}%, ${}/kWh, {}-year amortization",
        o.users,
        o.context,
        o.weights.name,
        o.kv.name,
        o.activations.name,
        o.objective,
        o.utilization * 100.0,
        o.electricity_usd_per_kwh,
        o.amortization_years
    );
    let _ = writeln!(out, "latency model: {}", r.latency_floor);
    let rows: [(&str, &Cell); 12] = [
        ("hardware", &|s| s.hardware.clone()),
        ("units needed (modelled)", &|s| s.units.to_string()),
        ("units deployed (whole nodes)", &|s| {
            s.units_deployed.to_string()
        }),
        ("layout (modelled)", &|s| s.layout.clone()),
        ("tok/s per user (modelled)", &|s| {
            format!("{:.1}", s.modeled_tokens_per_s_per_user)
        }),
        ("aggregate tok/s (modelled)", &|s| {
            format!("{:.0}", s.modeled_aggregate_tokens_per_s)
        }),
        ("tok/s per unit (modelled)", &|s| {
            format!("{:.2}", s.modeled_tokens_per_s_per_unit)
        }),
        ("capital (modelled)", &|s| {
            money(s.economics.modeled_capital_usd)
        }),
        ("power (modelled)", &|s| watts(s.economics.modeled_power_w)),
        ("electricity per year (modelled)", &|s| {
            money(s.economics.modeled_electricity_usd_per_year)
        }),
        ("J/token (modelled)", &|s| {
            opt(s.economics.modeled_joules_per_token, 2)
        }),
        ("$/Mtoken (modelled)", &|s| {
            opt(s.economics.modeled_usd_per_mtoken, 3)
        }),
    ];
    let w0 = rows.iter().map(|r| r.0.chars().count()).max().unwrap_or(0);
    let cells: Vec<(String, String)> = rows
        .iter()
        .map(|(_, f)| (f(&r.sram), f(&r.gpu_side)))
        .collect();
    let w1 = cells
        .iter()
        .map(|c| c.0.chars().count())
        .max()
        .unwrap_or(0)
        .max("SRAM cluster".len());
    let _ = writeln!(out, "{:<w0$}  {:<w1$}  GPU fleet", "", "SRAM cluster");
    for ((label, _), (a, b)) in rows.iter().zip(&cells) {
        let _ = writeln!(out, "{label:<w0$}  {a:<w1$}  {b}");
    }
    let l = &r.sram_layout;
    let _ = writeln!(
        out,
        "SRAM per token (modelled, one micro-batch of {}): SRAM {} | compute {} | latency floor +{} ({} dependent stages, each max(work, {}{})) | collectives {} ({} all-reduces of {} each, {}, {}) | stage links {} ({} transfers) | layer overhead {} | period {}; weights {}, KV {}, {:.0}% of SRAM used",
        l.microbatch_users,
        us(l.modeled_sram_s),
        us(l.modeled_compute_s),
        us(l.modeled_latency_floor_s),
        l.dependent_stages_per_token,
        us(l.stage_latency_s),
        super::floor_label(&r.chip),
        us(l.modeled_collective_s),
        l.all_reduces_per_token,
        us(l.all_reduce.modeled_s),
        l.all_reduce.algorithm,
        bytes(l.all_reduce.bytes_sent_per_chip) + " sent per chip",
        us(l.modeled_stage_link_s),
        l.stage_transfers_per_token,
        us(l.modeled_layer_overhead_s),
        us(l.modeled_token_period_s),
        bytes(l.weight_bytes),
        bytes(l.kv_bytes),
        l.sram_utilization * 100.0
    );
    let g = &r.gpu_layout;
    let _ = writeln!(
        out,
        "GPU per token (modelled, batch {}): memory {} | compute {} ({}-bound) | latency floor +{} ({} per stage{}) | NVLink {} | inter-node {} | period {}; weights {}, KV {} per user, {:.1} GB used of {:.0} GB per GPU",
        g.batch,
        us(g.modeled_memory_s),
        us(g.modeled_compute_s),
        g.modeled_bound,
        us(g.modeled_latency_floor_s),
        us(r.gpu.stage_latency_s),
        if r.gpu.stage_latency_s == 0.0 {
            ": none, a roofline"
        } else {
            ", from the GPU spec"
        },
        us(g.modeled_collective_s),
        us(g.modeled_stage_link_s),
        us(g.modeled_token_period_s),
        bytes(g.weight_bytes),
        bytes(g.kv_bytes_per_user),
        g.memory_per_gpu_used / 1e9,
        r.gpu.hbm_bytes / 1e9
    );
    let alts: Vec<String> = r
        .sram_layouts_considered
        .iter()
        .map(|l| {
            format!(
                "tp {}: {} chips, {:.0} tok/s/user",
                l.tp,
                l.chips,
                1.0 / l.modeled_token_period_s
            )
        })
        .collect();
    let _ = writeln!(
        out,
        "SRAM layouts searched (modelled, best first): {}",
        alts.join("; ")
    );
    let alts: Vec<String> = r
        .gpu_layouts_considered
        .iter()
        .map(|l| {
            format!(
                "tp {}: {} GPUs, {:.0} tok/s/user",
                l.tp,
                l.gpus,
                1.0 / l.modeled_token_period_s
            )
        })
        .collect();
    let _ = writeln!(
        out,
        "GPU layouts searched (modelled, best first): {}",
        alts.join("; ")
    );
    if let (Some(a), Some(b)) = (
        r.sram.economics.modeled_capital_usd,
        r.gpu_side.economics.modeled_capital_usd,
    ) {
        let pa = r.sram.economics.modeled_power_w.unwrap_or(f64::NAN);
        let pb = r.gpu_side.economics.modeled_power_w.unwrap_or(f64::NAN);
        let _ = writeln!(
            out,
            "ratios SRAM/GPU (modelled): capital {:.1}×, power {:.1}×, tok/s per user {:.1}×, aggregate tok/s {:.2}×",
            a / b,
            pa / pb,
            r.sram.modeled_tokens_per_s_per_user / r.gpu_side.modeled_tokens_per_s_per_user,
            r.sram.modeled_aggregate_tokens_per_s / r.gpu_side.modeled_aggregate_tokens_per_s
        );
    }
    out
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Two charts in one SVG: the per-token timeline across the SRAM chips
/// (stages of `tp` chips; SRAM/compute, collective and link segments), and
/// speed per user against cost per token for both sides over the users sweep.
pub fn svg(r: &StudyReport) -> String {
    let width = 900.0;
    let mut body = String::new();
    let mut y = 30.0;
    let _ = writeln!(
        body,
        r###"<text x="20" y="{y}" font-size="16" font-weight="bold">{} — per-token timeline on {} (modelled)</text>"###,
        esc(&r.model.name),
        esc(&r.chip.name)
    );
    y += 18.0;
    let l = &r.sram_layout;
    let _ = writeln!(
        body,
        r###"<text x="20" y="{y}" font-size="12" fill="#444">{} users, tp {} × pp {} = {} chips; one micro-batch of {} users through every stage; period {}</text>"###,
        r.options.users,
        l.tp,
        l.pp,
        l.chips,
        l.microbatch_users,
        us(l.modeled_token_period_s)
    );
    y += 14.0;
    // Rows: up to 32 stages shown; the rest folded into one row.
    let stages = &r.sram_stages;
    let shown = stages.len().min(32);
    let total = l.modeled_token_period_s.max(1e-12);
    let (x0, plot_w) = (150.0, width - 180.0);
    let row_h = 14.0;
    let mut t = 0.0;
    let bar = |body: &mut String, y: f64, t0: f64, dt: f64, color: &str, what: &str| {
        if dt <= 0.0 {
            return;
        }
        let x = x0 + t0 / total * plot_w;
        let w = (dt / total * plot_w).max(0.5);
        let _ = writeln!(
            body,
            r###"<rect x="{x:.2}" y="{y:.1}" width="{w:.2}" height="{:.1}" fill="{color}"><title>{what}: {}</title></rect>"###,
            row_h - 3.0,
            us(dt)
        );
    };
    let chip_s = l.modeled_sram_s.max(l.modeled_compute_s) / l.pp as f64;
    let sram_is_bound = l.modeled_sram_s >= l.modeled_compute_s;
    for (i, s) in stages.iter().enumerate() {
        let folded = i >= shown;
        if folded && i > shown {
            // accumulate time only
            t += chip_s + s.modeled_floor_s + s.modeled_collective_s + s.modeled_link_out_s;
            continue;
        }
        let yy = y + (i.min(shown)) as f64 * row_h + 6.0;
        let label = if folded {
            format!("stages {}–{}", i, stages.len() - 1)
        } else {
            format!(
                "stage {} (chips {}–{})",
                s.stage,
                s.first_chip,
                s.first_chip + l.tp - 1
            )
        };
        let _ = writeln!(
            body,
            r###"<text x="{}" y="{:.1}" font-size="10" text-anchor="end">{}</text>"###,
            x0 - 6.0,
            yy + row_h - 5.0,
            esc(&label)
        );
        if folded {
            let rest: f64 = stages[i..]
                .iter()
                .map(|s| chip_s + s.modeled_floor_s + s.modeled_collective_s + s.modeled_link_out_s)
                .sum();
            bar(&mut body, yy, t, rest, "#999", "remaining stages");
            t += chip_s + s.modeled_floor_s + s.modeled_collective_s + s.modeled_link_out_s;
            continue;
        }
        let (c1, w1) = if sram_is_bound {
            ("#4477aa", "SRAM read")
        } else {
            ("#228833", "compute")
        };
        bar(&mut body, yy, t, chip_s, c1, w1);
        t += chip_s;
        bar(
            &mut body,
            yy,
            t,
            s.modeled_floor_s,
            "#aa3377",
            "latency floor of dependent stages (beyond their streaming work)",
        );
        t += s.modeled_floor_s;
        bar(
            &mut body,
            yy,
            t,
            s.modeled_collective_s,
            "#ee7733",
            "collectives (all-reduce/all-gather)",
        );
        t += s.modeled_collective_s;
        bar(
            &mut body,
            yy,
            t,
            s.modeled_link_out_s,
            "#cc3311",
            "link to next stage",
        );
        t += s.modeled_link_out_s;
    }
    y += (shown + usize::from(stages.len() > shown)) as f64 * row_h + 14.0;
    let _ = writeln!(
        body,
        r###"<line x1="{x0}" y1="{y}" x2="{}" y2="{y}" stroke="#000"/><text x="{x0}" y="{}" font-size="10">0</text><text x="{}" y="{}" font-size="10" text-anchor="end">{}</text>"###,
        x0 + plot_w,
        y + 12.0,
        x0 + plot_w,
        y + 12.0,
        us(total)
    );
    y += 26.0;
    for (i, (c, what)) in [
        ("#4477aa", "SRAM read (bound)"),
        ("#228833", "compute (bound)"),
        ("#aa3377", "latency floor"),
        ("#ee7733", "collectives"),
        ("#cc3311", "stage-to-stage link"),
    ]
    .iter()
    .enumerate()
    {
        let x = x0 + i as f64 * 140.0;
        let _ = writeln!(
            body,
            r###"<rect x="{x}" y="{}" width="12" height="10" fill="{c}"/><text x="{}" y="{y}" font-size="11">{what}</text>"###,
            y - 9.0,
            x + 16.0
        );
    }
    y += 40.0;
    // Chart 2: speed per user (x, log) vs $/Mtoken (y, log).
    let _ = writeln!(
        body,
        r###"<text x="20" y="{y}" font-size="16" font-weight="bold">Speed per user against cost per token (modelled; labels: users)</text>"###
    );
    y += 16.0;
    let _ = writeln!(
        body,
        r###"<text x="20" y="{y}" font-size="12" fill="#444">{} vs {}; utilization {:.0}%, ${}/kWh, {}-year amortization</text>"###,
        esc(&r.chip.name),
        esc(&r.gpu.name),
        r.options.utilization * 100.0,
        r.options.electricity_usd_per_kwh,
        r.options.amortization_years
    );
    y += 10.0;
    let pts: Vec<&SweepPoint> = r
        .sweep
        .iter()
        .filter(|p| {
            p.modeled_usd_per_mtoken.is_some_and(|c| c > 0.0)
                && p.modeled_tokens_per_s_per_user > 0.0
        })
        .collect();
    let (px, py, pw, ph) = (x0, y + 10.0, plot_w, 320.0);
    if pts.is_empty() {
        let _ = writeln!(
            body,
            r###"<text x="{px}" y="{}" font-size="12">no cost per token: the chip spec has no price or power</text>"###,
            py + 20.0
        );
        y = py + 40.0;
    } else {
        let lx = |v: f64| v.log10();
        let (mut xa, mut xb, mut ya, mut yb) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for p in &pts {
            let (x, yv) = (
                lx(p.modeled_tokens_per_s_per_user),
                lx(p.modeled_usd_per_mtoken.unwrap()),
            );
            xa = xa.min(x);
            xb = xb.max(x);
            ya = ya.min(yv);
            yb = yb.max(yv);
        }
        let (xa, xb) = (xa.floor(), xb.ceil().max(xa.floor() + 1.0));
        let (ya, yb) = (ya.floor(), yb.ceil().max(ya.floor() + 1.0));
        let sx = |v: f64| px + (lx(v) - xa) / (xb - xa) * pw;
        let sy = |v: f64| py + ph - (lx(v) - ya) / (yb - ya) * ph;
        let _ = writeln!(
            body,
            r###"<rect x="{px}" y="{py}" width="{pw}" height="{ph}" fill="none" stroke="#000"/>"###
        );
        for k in (xa as i32)..=(xb as i32) {
            let x = px + (k as f64 - xa) / (xb - xa) * pw;
            let _ = writeln!(
                body,
                r###"<line x1="{x:.1}" y1="{py}" x2="{x:.1}" y2="{}" stroke="#ddd"/><text x="{x:.1}" y="{}" font-size="10" text-anchor="middle">{}</text>"###,
                py + ph,
                py + ph + 14.0,
                10f64.powi(k)
            );
        }
        for k in (ya as i32)..=(yb as i32) {
            let yv = py + ph - (k as f64 - ya) / (yb - ya) * ph;
            let _ = writeln!(
                body,
                r###"<line x1="{px}" y1="{yv:.1}" x2="{}" y2="{yv:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" font-size="10" text-anchor="end">${}</text>"###,
                px + pw,
                px - 4.0,
                yv + 3.0,
                10f64.powi(k)
            );
        }
        let _ = writeln!(
            body,
            r###"<text x="{}" y="{}" font-size="11" text-anchor="middle">tok/s per user (modelled, log)</text><text x="{}" y="{}" font-size="11" text-anchor="middle" transform="rotate(-90 {} {})">$ per million tokens (modelled, log)</text>"###,
            px + pw / 2.0,
            py + ph + 30.0,
            px - 50.0,
            py + ph / 2.0,
            px - 50.0,
            py + ph / 2.0
        );
        for (side, color, name) in [
            ("sram", "#4477aa", &r.chip.name),
            ("gpu", "#cc3311", &r.gpu.name),
        ] {
            let s: Vec<&&SweepPoint> = pts.iter().filter(|p| p.side == side).collect();
            let path: Vec<String> = s
                .iter()
                .map(|p| {
                    format!(
                        "{:.1},{:.1}",
                        sx(p.modeled_tokens_per_s_per_user),
                        sy(p.modeled_usd_per_mtoken.unwrap())
                    )
                })
                .collect();
            let _ = writeln!(
                body,
                r###"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"/>"###,
                path.join(" ")
            );
            for p in &s {
                let (x, yv) = (
                    sx(p.modeled_tokens_per_s_per_user),
                    sy(p.modeled_usd_per_mtoken.unwrap()),
                );
                let _ = writeln!(
                    body,
                    r###"<circle cx="{x:.1}" cy="{yv:.1}" r="3" fill="{color}"><title>{} users: {:.1} tok/s/user, ${:.3}/Mtok, {} units</title></circle><text x="{:.1}" y="{:.1}" font-size="9" fill="{color}">{}</text>"###,
                    p.users,
                    p.modeled_tokens_per_s_per_user,
                    p.modeled_usd_per_mtoken.unwrap(),
                    p.units,
                    x + 4.0,
                    yv - 4.0,
                    p.users
                );
            }
            let ly = py + 16.0 + if side == "sram" { 0.0 } else { 16.0 };
            let _ = writeln!(
                body,
                r###"<rect x="{}" y="{}" width="12" height="4" fill="{color}"/><text x="{}" y="{ly}" font-size="11">{} ({})</text>"###,
                px + pw - 200.0,
                ly - 4.0,
                px + pw - 184.0,
                esc(name),
                side
            );
        }
        y = py + ph + 44.0;
    }
    format!(
        r###"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{:.0}" viewBox="0 0 {width} {:.0}" font-family="sans-serif">
<rect width="100%" height="100%" fill="white"/>
{body}</svg>
"###,
        y + 10.0,
        y + 10.0
    )
}
