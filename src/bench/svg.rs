//! A hand-written SVG chart of per-token decode latency, measured next to
//! modeled, for `sramlm bench` reports. No dependencies: the SVG is built as a
//! String. The output is a pure function of the input (deterministic), and
//! degenerate inputs (no series, no samples, NaN/inf/zero/negative values)
//! are skipped, never a panic.
//!
//! Layout, per series: a heading line (label, sample count, and an
//! "INVALID (output mismatch)" marker when the output differed), then a
//! "measured" row (p50 as a bar, p99 as a whisker, every token as a dot) and,
//! when the series has one, a "modeled" row drawn as a hatched, outlined bar.
//! The x axis is per-token latency; it is logarithmic when the values span
//! two decades or more, linear otherwise.

use std::fmt::Write as _;

/// One benchmarked configuration (a model × mode).
#[derive(Clone, Debug, Default)]
pub struct Series {
    /// e.g. "SmolLM2 · VRAM" or "stories260K · SRAM (mini-64k × 73 chips)".
    pub label: String,
    /// Per-token decode latencies in ms, in order (measured).
    pub measured_ms: Vec<f64>,
    /// Modeled per-token latency in ms (cost model), if any.
    pub modeled_ms: Option<f64>,
    /// What the model represents, e.g. "modeled: emulated SRAM cluster (groq-v1)".
    pub modeled_label: Option<String>,
    /// false = output differed from the reference / other mode: drawn greyed
    /// and marked "INVALID (output mismatch)".
    pub valid: bool,
}

const WIDTH: f64 = 900.0;
/// Left edge of the plot area; the row tags ("measured", "modeled") sit left of it.
const PLOT_X0: f64 = 96.0;
/// Right edge of the plot area; value labels may run past it up to TEXT_RIGHT.
const PLOT_X1: f64 = 840.0;
const TEXT_RIGHT: f64 = WIDTH - 8.0;
const FONT: &str = "DejaVu Sans, Verdana, Helvetica, Arial, sans-serif";

const HEADING_H: f64 = 22.0;
const ROW_H: f64 = 22.0;
const BAR_H: f64 = 14.0;
const GROUP_GAP: f64 = 12.0;

const C_TEXT: &str = "#1a1a1a";
const C_MUTED: &str = "#666666";
const C_GRID: &str = "#dcdcdc";
const C_GRID_MINOR: &str = "#f0f0f0";
const C_MEAS_FILL: &str = "#9ec3ec";
const C_MEAS_DARK: &str = "#1f4e8c";
const C_MODEL: &str = "#c8611a";
const C_INVALID_FILL: &str = "#d4d4d4";
const C_INVALID_DARK: &str = "#7a7a7a";
const C_INVALID_MARK: &str = "#c0392b";

/// Renders the chart as a standalone SVG document (starts with `<svg`, ends
/// with `</svg>`). `subtitle` may hold several lines separated by `\n`; long
/// lines are wrapped.
pub fn latency_chart(title: &str, subtitle: &str, series: &[Series]) -> String {
    let prepared: Vec<Prepared> = series.iter().map(Prepared::new).collect();
    let all: Vec<f64> = prepared
        .iter()
        .flat_map(|p| {
            p.points
                .iter()
                .copied()
                .chain(p.modeled.and_then(|m| m.ok()))
        })
        .collect();
    let scale = Scale::for_values(&all);
    let any_invalid = series.iter().any(|s| !s.valid);

    let mut body = String::new();
    let mut y = 0.0;

    // Title and subtitle.
    y += 30.0;
    let title_max = max_chars(WIDTH - 32.0, 18.0);
    let _ = write!(
        body,
        r#"<text x="16" y="{y:.1}" font-size="18" font-weight="bold" fill="{C_TEXT}">{}</text>"#,
        esc(&truncate(title, title_max))
    );
    body.push('\n');
    let sub_lines = wrap(subtitle, max_chars(WIDTH - 32.0, 12.0));
    y += 4.0;
    for line in &sub_lines {
        y += 16.0;
        let _ = write!(
            body,
            r#"<text x="16" y="{y:.1}" font-size="12" fill="{C_MUTED}">{}</text>"#,
            esc(line)
        );
        body.push('\n');
    }

    // Legend.
    y += 14.0;
    y = legend(&mut body, y, any_invalid);

    if series.is_empty() || scale.is_none() {
        y += 30.0;
        let msg = if series.is_empty() {
            "no data: no series to plot"
        } else {
            "no data: no finite, positive latency to plot"
        };
        let _ = write!(
            body,
            r#"<text x="{:.1}" y="{y:.1}" font-size="14" font-style="italic" fill="{C_MUTED}" text-anchor="middle">{msg}</text>"#,
            WIDTH / 2.0
        );
        body.push('\n');
        // Still list the series (with their "no data" rows) if there are any.
        y += 16.0;
        for (s, p) in series.iter().zip(&prepared) {
            y = group(&mut body, y, s, p, None);
        }
        return finish(body, y + 12.0);
    }
    let Some(scale) = scale else {
        return finish(body, y);
    };

    // Plot area: gridlines first (behind the bars), then the groups, then the axis.
    let plot_top = y + 8.0;
    let mut groups = String::new();
    let mut gy = plot_top;
    for (s, p) in series.iter().zip(&prepared) {
        gy = group(&mut groups, gy, s, p, Some(&scale));
    }
    let plot_bottom = gy;
    let axis_y = plot_bottom + 2.0;

    for t in scale.ticks() {
        let x = scale.x(t.value);
        let (color, width) = if t.major {
            (C_GRID, 1.0)
        } else {
            (C_GRID_MINOR, 1.0)
        };
        let _ = write!(
            body,
            r#"<line x1="{x:.1}" y1="{plot_top:.1}" x2="{x:.1}" y2="{axis_y:.1}" stroke="{color}" stroke-width="{width}"/>"#
        );
        body.push('\n');
    }
    body.push_str(&groups);

    // Axis line, ticks, tick labels, axis title.
    let _ = write!(
        body,
        r#"<line x1="{PLOT_X0:.1}" y1="{axis_y:.1}" x2="{PLOT_X1:.1}" y2="{axis_y:.1}" stroke="{C_TEXT}" stroke-width="1"/>"#
    );
    body.push('\n');
    for t in scale.ticks() {
        let x = scale.x(t.value);
        let len = if t.major { 5.0 } else { 3.0 };
        let _ = write!(
            body,
            r#"<line x1="{x:.1}" y1="{axis_y:.1}" x2="{x:.1}" y2="{:.1}" stroke="{C_TEXT}" stroke-width="1"/>"#,
            axis_y + len
        );
        body.push('\n');
        if let Some(label) = &t.label {
            let _ = write!(
                body,
                r#"<text x="{x:.1}" y="{:.1}" font-size="11" fill="{C_TEXT}" text-anchor="middle">{}</text>"#,
                axis_y + 18.0,
                esc(label)
            );
            body.push('\n');
        }
    }
    let axis_title = match scale {
        Scale::Log { .. } => "per-token decode latency (log scale; shorter is faster)",
        Scale::Linear { .. } => "per-token decode latency (linear scale; shorter is faster)",
    };
    let _ = write!(
        body,
        r#"<text x="{:.1}" y="{:.1}" font-size="12" font-weight="bold" fill="{C_TEXT}" text-anchor="middle">{axis_title}</text>"#,
        (PLOT_X0 + PLOT_X1) / 2.0,
        axis_y + 38.0
    );
    body.push('\n');
    finish(body, axis_y + 52.0)
}

/// Formats a latency given in ms with three significant digits and a fitting
/// unit: "12.3 ms", "41 µs", "1.5 s". Non-finite values give "n/a".
pub fn format_ms(ms: f64) -> String {
    if !ms.is_finite() {
        return "n/a".to_string();
    }
    if ms == 0.0 {
        return "0 ms".to_string();
    }
    let r = round_sig(ms, 3);
    let a = r.abs();
    let (x, unit) = if a >= 1000.0 {
        (r / 1000.0, "s")
    } else if a >= 1.0 {
        (r, "ms")
    } else if a >= 1e-3 {
        (r * 1e3, "µs")
    } else {
        (r * 1e6, "ns")
    };
    let ax = x.abs();
    if !(1e-2..1e4).contains(&ax) {
        return format!("{x:.2e} {unit}");
    }
    let s = if ax >= 100.0 {
        format!("{x:.0}")
    } else if ax >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    };
    format!("{} {unit}", trim_zeros(&s))
}

// ---------------------------------------------------------------------------

/// The plottable numbers of one series.
struct Prepared {
    /// Finite, positive per-token latencies, in order.
    points: Vec<f64>,
    /// How many measured values were skipped (NaN, inf, zero, negative).
    skipped: usize,
    p50: Option<f64>,
    p99: Option<f64>,
    /// None: no modeled value; Some(Err(v)): a value that cannot be plotted.
    modeled: Option<Result<f64, f64>>,
}

impl Prepared {
    fn new(s: &Series) -> Self {
        let points: Vec<f64> = s
            .measured_ms
            .iter()
            .copied()
            .filter(|v| usable(*v))
            .collect();
        let skipped = s.measured_ms.len() - points.len();
        let mut sorted = points.clone();
        sorted.sort_by(|a, b| a.total_cmp(b));
        Prepared {
            p50: percentile(&sorted, 0.50),
            p99: percentile(&sorted, 0.99),
            points,
            skipped,
            modeled: s.modeled_ms.map(|m| if usable(m) { Ok(m) } else { Err(m) }),
        }
    }
}

fn usable(v: f64) -> bool {
    v.is_finite() && v > 0.0
}

/// Linear-interpolated percentile of sorted values; None when empty.
fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    match sorted.len() {
        0 => None,
        1 => Some(sorted[0]),
        n => {
            let idx = p.clamp(0.0, 1.0) * (n - 1) as f64;
            let lo = idx.floor() as usize;
            let hi = (idx.ceil() as usize).min(n - 1);
            let t = idx - lo as f64;
            Some(sorted[lo] + (sorted[hi] - sorted[lo]) * t)
        }
    }
}

enum Scale {
    /// 0 ..= max ms, ticks every `step` ms.
    Linear { max: f64, step: f64 },
    /// 10^lo ..= 10^hi ms, labelled ticks every `step` decades.
    Log { lo: i32, hi: i32, step: i32 },
}

struct Tick {
    value: f64,
    label: Option<String>,
    major: bool,
}

impl Scale {
    /// Log when the values span two decades or more, linear otherwise; None
    /// when there is nothing to plot.
    fn for_values(values: &[f64]) -> Option<Scale> {
        let mut min = f64::INFINITY;
        let mut max = 0.0f64;
        for &v in values.iter().filter(|v| usable(**v)) {
            min = min.min(v);
            max = max.max(v);
        }
        if !(max > 0.0 && min.is_finite()) {
            return None;
        }
        if max / min >= 100.0 {
            let lo = (min * 0.8).log10().floor();
            let hi = (max * 1.05).log10().ceil();
            let (lo, hi) = (lo.max(-400.0) as i32, hi.min(400.0) as i32);
            let hi = hi.max(lo + 1);
            let step = ((hi - lo) + 9) / 10; // at most ~10 labelled decades
            let hi = lo + ((hi - lo) + step - 1) / step * step;
            Some(Scale::Log { lo, hi, step })
        } else {
            let step = nice_step(max * 1.05 / 5.0);
            let max = ((max * 1.05) / step).ceil() * step;
            if !(max.is_finite() && max > 0.0 && step > 0.0) {
                return None;
            }
            Some(Scale::Linear { max, step })
        }
    }

    fn x(&self, v: f64) -> f64 {
        let t = match *self {
            Scale::Linear { max, .. } => v / max,
            Scale::Log { lo, hi, .. } => {
                if v > 0.0 {
                    (v.log10() - lo as f64) / (hi - lo) as f64
                } else {
                    0.0
                }
            }
        };
        let t = if t.is_finite() {
            t.clamp(0.0, 1.0)
        } else {
            0.0
        };
        PLOT_X0 + t * (PLOT_X1 - PLOT_X0)
    }

    fn ticks(&self) -> Vec<Tick> {
        let mut out = Vec::new();
        match *self {
            Scale::Linear { max, step } => {
                let n = (max / step).round() as i64;
                for i in 0..=n.min(50) {
                    let v = i as f64 * step;
                    let label = if i == 0 {
                        "0".to_string()
                    } else {
                        format_ms(v)
                    };
                    out.push(Tick {
                        value: v,
                        label: Some(label),
                        major: true,
                    });
                }
            }
            Scale::Log { lo, hi, step } => {
                let mut k = lo;
                while k <= hi {
                    out.push(Tick {
                        value: 10f64.powi(k),
                        label: Some(decade_label(k)),
                        major: true,
                    });
                    if step == 1 && k < hi && hi - lo <= 8 {
                        for m in 2..=9 {
                            out.push(Tick {
                                value: m as f64 * 10f64.powi(k),
                                label: None,
                                major: false,
                            });
                        }
                    }
                    k += step;
                }
            }
        }
        out
    }
}

/// "1 ns", "10 µs", "100 ms", "1 s", … for 10^k ms, exactly (no float rounding).
fn decade_label(k: i32) -> String {
    let (unit, base) = match k {
        -6..=-4 => ("ns", -6),
        -3..=-1 => ("µs", -3),
        0..=2 => ("ms", 0),
        3..=5 => ("s", 3),
        _ => return format!("1e{k} ms"),
    };
    format!("1{} {unit}", "0".repeat((k - base) as usize))
}

/// A "nice" step (1, 2 or 5 × 10^e) at least `raw`.
fn nice_step(raw: f64) -> f64 {
    if !(raw.is_finite() && raw > 0.0) {
        return 1.0;
    }
    let e = raw.log10().floor();
    let base = 10f64.powf(e);
    let f = raw / base;
    let m = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    m * base
}

fn round_sig(x: f64, digits: i32) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let e = x.abs().log10().floor() as i32;
    let f = 10f64.powi(digits - 1 - e);
    let r = (x * f).round() / f;
    if r.is_finite() {
        r
    } else {
        x
    }
}

fn trim_zeros(s: &str) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s.to_string()
    }
}

/// Draws one series' group starting at `y`; returns the y below it.
fn group(out: &mut String, y: f64, s: &Series, p: &Prepared, scale: Option<&Scale>) -> f64 {
    let rows = 1.0 + if s.modeled_ms.is_some() { 1.0 } else { 0.0 };
    let h = HEADING_H + rows * ROW_H;
    let (fill, dark) = if s.valid {
        (C_MEAS_FILL, C_MEAS_DARK)
    } else {
        (C_INVALID_FILL, C_INVALID_DARK)
    };

    let _ = write!(
        out,
        r#"<g class="series{}">"#,
        if s.valid { "" } else { " invalid" }
    );
    out.push('\n');
    if !s.valid {
        let _ = write!(
            out,
            r##"<rect x="8" y="{:.1}" width="{:.1}" height="{:.1}" fill="#fbeaea" fill-opacity="0.6" stroke="{C_INVALID_MARK}" stroke-opacity="0.5" stroke-dasharray="4 3"/>"##,
            y + 1.0,
            WIDTH - 16.0,
            h + 2.0
        );
        out.push('\n');
    }

    // Heading: label, sample count, invalid marker.
    let mut note = match p.points.len() {
        0 => String::new(),
        1 => "1 token measured".to_string(),
        n => format!("{n} tokens measured"),
    };
    if p.skipped > 0 {
        let _ = write!(note, " ({} unusable value(s) skipped)", p.skipped);
    }
    let marker = if s.valid {
        ""
    } else {
        "⚠ INVALID (output mismatch)"
    };
    let budget = max_chars(WIDTH - 32.0, 13.0);
    let reserve = note.chars().count() * 11 / 13 + marker.chars().count() + 3;
    let label = truncate(&s.label, budget.saturating_sub(reserve).max(12));
    let _ = write!(
        out,
        r#"<text x="16" y="{:.1}" font-size="13" fill="{}"><tspan font-weight="bold">{}</tspan><tspan dx="8" font-size="11" fill="{C_MUTED}">{}</tspan>"#,
        y + 16.0,
        if s.valid { C_TEXT } else { C_INVALID_DARK },
        esc(&label),
        esc(&note)
    );
    if !s.valid {
        let _ = write!(
            out,
            r#"<tspan class="invalid-mark" dx="10" font-weight="bold" fill="{C_INVALID_MARK}">{}</tspan>"#,
            esc(marker)
        );
    }
    out.push_str("</text>\n");

    // Measured row.
    let cy = y + HEADING_H + ROW_H / 2.0;
    row_tag(out, cy, "measured");
    match (scale, p.p50, p.p99) {
        (Some(scale), Some(p50), Some(p99)) => {
            let x50 = scale.x(p50);
            let x99 = scale.x(p99);
            let _ = write!(
                out,
                r#"<rect class="measured-bar" x="{PLOT_X0:.1}" y="{:.1}" width="{:.1}" height="{BAR_H:.1}" fill="{fill}" stroke="{dark}" stroke-width="1"/>"#,
                cy - BAR_H / 2.0,
                (x50 - PLOT_X0).max(1.5)
            );
            out.push('\n');
            // Every token as a dot, jittered vertically (deterministically).
            let _ = write!(
                out,
                r#"<g class="tokens" fill="{dark}" fill-opacity="0.45">"#
            );
            let jitter = (BAR_H / 2.0 - 2.0) / 4.0;
            for (i, &v) in p.points.iter().enumerate() {
                let dy = ((i * 7 + i / 9) % 9) as f64 - 4.0;
                let _ = write!(
                    out,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="1.7"/>"#,
                    scale.x(v),
                    cy + dy * jitter
                );
            }
            out.push_str("</g>\n");
            // p99 whisker with a cap.
            let _ = write!(
                out,
                r#"<g class="whisker" stroke="{dark}" stroke-width="1.5"><line x1="{x50:.1}" y1="{cy:.1}" x2="{x99:.1}" y2="{cy:.1}"/><line x1="{x99:.1}" y1="{:.1}" x2="{x99:.1}" y2="{:.1}"/></g>"#,
                cy - 6.0,
                cy + 6.0
            );
            out.push('\n');
            let xmax = p.points.iter().fold(x99, |acc, &v| acc.max(scale.x(v)));
            let text = format!("p50 {} · p99 {}", format_ms(p50), format_ms(p99));
            let xmin = p.points.iter().fold(x50, |acc, &v| acc.min(scale.x(v)));
            value_label(out, xmax, xmin, cy, &text, dark, true, false);
        }
        _ => {
            let msg = if s.measured_ms.is_empty() {
                "no measurements"
            } else {
                "no usable measurements (all NaN, infinite, zero or negative)"
            };
            let _ = write!(
                out,
                r#"<text x="{:.1}" y="{:.1}" font-size="11" font-style="italic" fill="{C_MUTED}">{msg}</text>"#,
                PLOT_X0 + 4.0,
                cy + 4.0
            );
            out.push('\n');
        }
    }

    // Modeled row, only when the series has a modeled value.
    if let Some(m) = p.modeled {
        let cy = cy + ROW_H;
        row_tag(out, cy, "modeled");
        let what = match s.modeled_label.as_deref().map(str::trim) {
            Some(l) if !l.is_empty() => {
                if l.to_ascii_lowercase().starts_with("modeled") {
                    l.to_string()
                } else {
                    format!("modeled: {l}")
                }
            }
            _ => "modeled".to_string(),
        };
        let (hatch, stroke) = if s.valid {
            ("hatch-modeled", C_MODEL)
        } else {
            ("hatch-invalid", C_INVALID_DARK)
        };
        match (scale, m) {
            (Some(scale), Ok(v)) => {
                let xe = scale.x(v);
                let _ = write!(
                    out,
                    r#"<rect class="modeled-bar" x="{PLOT_X0:.1}" y="{:.1}" width="{:.1}" height="{BAR_H:.1}" fill="url(#{hatch})" stroke="{stroke}" stroke-width="1.5"/>"#,
                    cy - BAR_H / 2.0,
                    (xe - PLOT_X0).max(1.5)
                );
                out.push('\n');
                let text = format!("{} · {what}", format_ms(v));
                value_label(out, xe, xe, cy, &text, stroke, false, true);
            }
            (_, m) => {
                let msg = match m {
                    Ok(v) => format!("{} · {what}", format_ms(v)),
                    Err(v) => format!("{what}: unusable value ({v})"),
                };
                let _ = write!(
                    out,
                    r#"<text x="{:.1}" y="{:.1}" font-size="11" font-style="italic" fill="{C_MUTED}">{}</text>"#,
                    PLOT_X0 + 4.0,
                    cy + 4.0,
                    esc(&msg)
                );
                out.push('\n');
            }
        }
    }
    out.push_str("</g>\n");
    y + h + GROUP_GAP
}

/// "measured" / "modeled" at the left of a row.
fn row_tag(out: &mut String, cy: f64, tag: &str) {
    let _ = write!(
        out,
        r#"<text x="{:.1}" y="{:.1}" font-size="11" fill="{C_MUTED}" text-anchor="end">{tag}</text>"#,
        PLOT_X0 - 8.0,
        cy + 4.0
    );
    out.push('\n');
}

/// A value label right of `x_after` (past everything drawn in the row); when
/// it would run off the chart, it goes right-aligned inside the bar, ending at
/// `x_inside_end` (left of the row's marks), on a white backing where the bar
/// is hatched or the label still overlaps marks.
#[allow(clippy::too_many_arguments)]
fn value_label(
    out: &mut String,
    x_after: f64,
    x_inside_end: f64,
    cy: f64,
    text: &str,
    color: &str,
    bold: bool,
    hatched: bool,
) {
    let size = 11.0;
    let w = text_width(text, size);
    let weight = if bold { "bold" } else { "normal" };
    if x_after + 6.0 + w <= TEXT_RIGHT {
        let _ = write!(
            out,
            r#"<text class="value" x="{:.1}" y="{:.1}" font-size="{size}" font-weight="{weight}" fill="{color}">{}</text>"#,
            x_after + 6.0,
            cy + 4.0,
            esc(text)
        );
    } else {
        let clean = x_inside_end - 6.0 - w >= PLOT_X0 + 4.0;
        let xe = (x_inside_end - 6.0).max(PLOT_X0 + 4.0 + w).min(TEXT_RIGHT);
        if hatched || !clean {
            let _ = write!(
                out,
                r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="14" fill="#ffffff" fill-opacity="0.9"/>"##,
                xe - w - 2.0,
                cy - 7.0,
                w + 4.0
            );
        }
        let _ = write!(
            out,
            r#"<text class="value" x="{xe:.1}" y="{:.1}" font-size="{size}" font-weight="{weight}" fill="{color}" text-anchor="end">{}</text>"#,
            cy + 4.0,
            esc(text)
        );
    }
    out.push('\n');
}

/// Draws the legend at `y` (top of its first line), wrapping items that do
/// not fit; returns the y below it.
fn legend(out: &mut String, y: f64, any_invalid: bool) -> f64 {
    let mut items: Vec<(&str, &str)> = vec![
        (
            "measured",
            "measured: bar = p50, whisker = p99, dots = tokens",
        ),
        ("modeled", "modeled: cost-model prediction"),
    ];
    if any_invalid {
        items.push(("invalid", "INVALID: output mismatch"));
    }
    let size = 11.0;
    let (mut x, mut y) = (16.0, y);
    let _ = write!(out, r#"<g class="legend">"#);
    out.push('\n');
    for (kind, text) in items {
        let w = 30.0 + text_width(text, size) + 18.0;
        if x > 16.0 && x + w > WIDTH - 16.0 {
            x = 16.0;
            y += 20.0;
        }
        let (sy, sh) = (y + 2.0, 12.0);
        let _ = match kind {
            "measured" => write!(
                out,
                r#"<rect class="legend-swatch" x="{x:.1}" y="{sy:.1}" width="18" height="{sh}" fill="{C_MEAS_FILL}" stroke="{C_MEAS_DARK}"/><line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{C_MEAS_DARK}" stroke-width="1.5"/><line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{C_MEAS_DARK}" stroke-width="1.5"/>"#,
                x + 18.0,
                sy + sh / 2.0,
                x + 24.0,
                sy + sh / 2.0,
                x + 24.0,
                sy + 1.0,
                x + 24.0,
                sy + sh - 1.0
            ),
            "modeled" => write!(
                out,
                r#"<rect class="legend-swatch" x="{x:.1}" y="{sy:.1}" width="24" height="{sh}" fill="url(#hatch-modeled)" stroke="{C_MODEL}" stroke-width="1.5"/>"#
            ),
            _ => write!(
                out,
                r##"<rect class="legend-swatch" x="{x:.1}" y="{sy:.1}" width="24" height="{sh}" fill="{C_INVALID_FILL}" stroke="{C_INVALID_MARK}" stroke-dasharray="3 2"/>"##
            ),
        };
        let _ = write!(
            out,
            r#"<text x="{:.1}" y="{:.1}" font-size="{size}" fill="{C_TEXT}">{}</text>"#,
            x + 30.0,
            y + 12.0,
            esc(text)
        );
        out.push('\n');
        x += w;
    }
    out.push_str("</g>\n");
    y + 20.0
}

/// Wraps the header around the body.
fn finish(body: String, height: f64) -> String {
    let height = height.ceil();
    let mut s = String::with_capacity(body.len() + 1024);
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH:.0}" height="{height:.0}" viewBox="0 0 {WIDTH:.0} {height:.0}" font-family="{FONT}">"#
    );
    s.push('\n');
    let _ = write!(
        s,
        r##"<defs><pattern id="hatch-modeled" patternUnits="userSpaceOnUse" width="6" height="6" patternTransform="rotate(45)"><rect width="6" height="6" fill="#fdf0e6"/><line x1="0" y1="0" x2="0" y2="6" stroke="{C_MODEL}" stroke-width="2.5"/></pattern><pattern id="hatch-invalid" patternUnits="userSpaceOnUse" width="6" height="6" patternTransform="rotate(45)"><rect width="6" height="6" fill="#f2f2f2"/><line x1="0" y1="0" x2="0" y2="6" stroke="{C_INVALID_DARK}" stroke-width="2"/></pattern></defs>"##
    );
    s.push('\n');
    let _ = write!(
        s,
        r##"<rect x="0" y="0" width="{WIDTH:.0}" height="{height:.0}" fill="#ffffff"/>"##
    );
    s.push('\n');
    s.push_str(&body);
    s.push_str("</svg>");
    s
}

/// Escapes XML special characters and drops characters XML 1.0 forbids.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(' '),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => {}
            c => out.push(c),
        }
    }
    out
}

/// Rough rendered width of `s` in a sans-serif font at `size` px.
fn text_width(s: &str, size: f64) -> f64 {
    s.chars().count() as f64 * size * 0.6
}

fn max_chars(width: f64, size: f64) -> usize {
    (width / (size * 0.6)).floor().max(1.0) as usize
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// Splits on '\n', then word-wraps each line to `max` characters.
fn wrap(s: &str, max: usize) -> Vec<String> {
    let mut lines = Vec::new();
    for para in s.lines() {
        let mut cur = String::new();
        for word in para.split_whitespace() {
            let word = truncate(word, max);
            let need = cur.chars().count() + usize::from(!cur.is_empty()) + word.chars().count();
            if !cur.is_empty() && need > max {
                lines.push(std::mem::take(&mut cur));
            }
            if !cur.is_empty() {
                cur.push(' ');
            }
            cur.push_str(&word);
        }
        if !cur.is_empty() {
            lines.push(cur);
        }
    }
    lines
}
