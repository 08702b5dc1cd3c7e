//! The benchmark latency chart (src/bench/svg.rs): well-formed SVG, escaped
//! text, invalid series marked, modeled bars only where modeled, log axis for
//! wide ranges, no panic on degenerate input.
//!
//! Set SRAMLM_SVG_OUT=/some/file.svg to also write the realistic example chart.

#[path = "../src/bench/svg.rs"]
mod svg;

use svg::{format_ms, latency_chart, Series};

fn series(label: &str, measured: &[f64], modeled: Option<f64>, valid: bool) -> Series {
    Series {
        label: label.to_string(),
        measured_ms: measured.to_vec(),
        modeled_ms: modeled,
        modeled_label: modeled.map(|_| "modeled: emulated SRAM cluster (groq-v1)".to_string()),
        valid,
    }
}

/// Deterministic pseudo-random latencies around `p50` with a tail towards `p99`.
fn latencies(n: usize, p50: f64, p99: f64, seed: u64) -> Vec<f64> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let u = (x >> 11) as f64 / (1u64 << 53) as f64;
            if u < 0.5 {
                p50 * (0.92 + 0.16 * u)
            } else {
                p50 + (p99 - p50) * ((u - 0.5) * 2.0).powi(3) * 1.05
            }
        })
        .collect()
}

fn example() -> Vec<Series> {
    vec![
        Series {
            label: "SmolLM2-135M · VRAM".into(),
            measured_ms: latencies(48, 100.0, 130.0, 1),
            modeled_ms: Some(0.03),
            modeled_label: Some("modeled: this GPU (roofline)".into()),
            valid: true,
        },
        Series {
            label: "SmolLM2-135M · SRAM (groq-v1 × 12 chips)".into(),
            measured_ms: latencies(48, 170.0, 205.0, 2),
            modeled_ms: Some(0.25),
            modeled_label: Some("modeled: emulated SRAM cluster (groq-v1)".into()),
            valid: true,
        },
        Series {
            label: "stories260K · VRAM".into(),
            measured_ms: latencies(64, 9.5, 14.0, 3),
            modeled_ms: Some(0.004),
            modeled_label: Some("modeled: this GPU (roofline)".into()),
            valid: true,
        },
        Series {
            label: "stories260K · SRAM (mini-64k × 73 chips)".into(),
            measured_ms: latencies(64, 16.0, 22.0, 4),
            modeled_ms: Some(0.041),
            modeled_label: Some("modeled: emulated SRAM cluster (mini-64k)".into()),
            valid: false,
        },
    ]
}

/// Checks that every tag is closed in order, that no raw '<' or '&' leaks into
/// text or attributes, and that the document is a single <svg> element.
fn assert_well_formed(doc: &str) {
    assert!(
        doc.starts_with("<svg"),
        "does not start with <svg: {:?}",
        &doc[..doc.len().min(40)]
    );
    assert!(doc.ends_with("</svg>"), "does not end with </svg>");
    let mut stack: Vec<String> = Vec::new();
    let mut rest = doc;
    let mut roots = 0;
    while let Some(open) = rest.find('<') {
        let text = &rest[..open];
        assert!(!text.contains('>'), "stray '>' in text {text:?}");
        check_entities(text);
        let close = rest[open..].find('>').expect("unterminated tag") + open;
        let inner = &rest[open + 1..close];
        assert!(!inner.contains('<'), "'<' inside tag {inner:?}");
        check_entities(inner);
        if let Some(name) = inner.strip_prefix('/') {
            let top = stack
                .pop()
                .unwrap_or_else(|| panic!("close </{name}> with nothing open"));
            assert_eq!(top, name.trim(), "mismatched close tag");
        } else {
            let name: String = inner
                .trim_end_matches('/')
                .split_whitespace()
                .next()
                .expect("empty tag")
                .to_string();
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == ':'),
                "odd tag name {name:?}"
            );
            // Attributes: quotes balanced.
            assert_eq!(
                inner.matches('"').count() % 2,
                0,
                "unbalanced quotes in {inner:?}"
            );
            if stack.is_empty() {
                roots += 1;
            }
            if !inner.ends_with('/') {
                stack.push(name);
            }
        }
        rest = &rest[close + 1..];
    }
    assert!(rest.is_empty(), "trailing text after </svg>: {rest:?}");
    assert!(stack.is_empty(), "unclosed tags: {stack:?}");
    assert_eq!(roots, 1, "expected exactly one root element");
}

fn check_entities(s: &str) {
    for (i, _) in s.match_indices('&') {
        let tail = &s[i..];
        assert!(
            ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"]
                .iter()
                .any(|e| tail.starts_with(e)),
            "unescaped '&' at {tail:?}"
        );
    }
}

fn count(doc: &str, needle: &str) -> usize {
    doc.matches(needle).count()
}

#[test]
fn example_chart_is_well_formed_and_complete() {
    let s = example();
    let doc = latency_chart(
        "Decode latency per token",
        "adapter: llvmpipe (LLVM 15.0.7, 256 bits) · driver: Vulkan 1.3 · git 1a2b3c4",
        &s,
    );
    if let Ok(path) = std::env::var("SRAMLM_SVG_OUT") {
        std::fs::write(&path, &doc).expect("write SRAMLM_SVG_OUT");
    }
    assert_well_formed(&doc);
    assert_eq!(count(&doc, r#"class="measured-bar""#), 4);
    assert_eq!(count(&doc, r#"class="modeled-bar""#), 4);
    assert_eq!(count(&doc, r#"class="invalid-mark""#), 1);
    assert!(doc.contains("INVALID (output mismatch)"));
    // Modeled 30 µs … measured ~200 ms: more than 2 decades, log axis with µs and ms ticks.
    assert!(doc.contains("log scale"));
    assert!(
        doc.contains(">10 µs<") && doc.contains(">100 ms<"),
        "decade ticks missing"
    );
    // Every title and label text appears (escaped '·' and '×' pass through).
    assert!(doc.contains("Decode latency per token"));
    assert!(doc.contains("stories260K · SRAM (mini-64k × 73 chips)"));
    assert!(doc.contains("modeled: emulated SRAM cluster (groq-v1)"));
    assert!(doc.contains("git 1a2b3c4"));
    // Legend distinguishes measured from modeled.
    assert!(doc.contains("class=\"legend\""));
    assert!(doc.contains("measured: bar = p50"));
    assert!(doc.contains("modeled: cost-model prediction"));
    // Per-token dots: 48 + 48 + 64 + 64.
    assert_eq!(count(&doc, "<circle"), 224);
    // Deterministic.
    assert_eq!(
        doc,
        latency_chart(
            "Decode latency per token",
            "adapter: llvmpipe (LLVM 15.0.7, 256 bits) · driver: Vulkan 1.3 · git 1a2b3c4",
            &s,
        )
    );
}

#[test]
fn text_is_escaped() {
    let mut s = series("A<B & \"C\" 'd' > e", &[10.0, 12.0], Some(11.0), true);
    s.modeled_label = Some("modeled: <cluster> & co".into());
    let doc = latency_chart("T<itle> & co", "sub & <tle>\nline 2 \u{1} ctrl", &[s]);
    assert_well_formed(&doc);
    assert!(doc.contains("A&lt;B &amp; &quot;C&quot; &apos;d&apos; &gt; e"));
    assert!(doc.contains("T&lt;itle&gt; &amp; co"));
    assert!(doc.contains("sub &amp; &lt;tle&gt;"));
    assert!(doc.contains("modeled: &lt;cluster&gt; &amp; co"));
    assert!(!doc.contains("A<B"));
    assert!(!doc.contains('\u{1}'));
}

#[test]
fn invalid_series_is_marked_and_greyed() {
    let good = series("good", &[5.0, 6.0, 7.0], Some(5.5), true);
    let bad = series("bad", &[5.0, 6.0, 7.0], Some(5.5), false);
    let doc = latency_chart("t", "s", &[good.clone_like(), bad.clone_like()]);
    assert_well_formed(&doc);
    assert_eq!(count(&doc, r#"class="invalid-mark""#), 1);
    assert_eq!(count(&doc, r#"class="series invalid""#), 1);
    assert!(
        doc.contains("url(#hatch-invalid)"),
        "invalid modeled bar not greyed"
    );
    assert!(
        doc.contains("INVALID: output mismatch"),
        "legend lacks the invalid entry"
    );

    let doc = latency_chart("t", "s", &[good]);
    assert!(!doc.contains("INVALID"));
    assert!(!doc.contains("url(#hatch-invalid)"));
}

trait CloneLike {
    fn clone_like(&self) -> Series;
}
impl CloneLike for Series {
    fn clone_like(&self) -> Series {
        Series {
            label: self.label.clone(),
            measured_ms: self.measured_ms.clone(),
            modeled_ms: self.modeled_ms,
            modeled_label: self.modeled_label.clone(),
            valid: self.valid,
        }
    }
}

#[test]
fn modeled_bar_only_when_modeled() {
    let with = series("with", &[3.0, 4.0], Some(3.5), true);
    let without = series("without", &[3.0, 4.0], None, true);
    let doc = latency_chart(
        "t",
        "s",
        &[
            with.clone_like(),
            without.clone_like(),
            without.clone_like(),
        ],
    );
    assert_well_formed(&doc);
    assert_eq!(count(&doc, r#"class="measured-bar""#), 3);
    assert_eq!(count(&doc, r#"class="modeled-bar""#), 1);
    assert_eq!(count(&doc, ">modeled</text>"), 1, "one 'modeled' row tag");

    let doc = latency_chart("t", "s", &[without]);
    assert_eq!(count(&doc, r#"class="modeled-bar""#), 0);

    // A modeled label without the word "modeled" still gets it.
    let mut s = series("x", &[3.0], Some(2.0), true);
    s.modeled_label = Some("this GPU".into());
    let doc = latency_chart("t", "s", &[s]);
    assert!(doc.contains("modeled: this GPU"));
    let mut s = series("x", &[3.0], Some(2.0), true);
    s.modeled_label = None;
    let doc = latency_chart("t", "s", &[s]);
    assert!(doc.contains(" · modeled<"));
}

#[test]
fn axis_scale_follows_value_range() {
    // Narrow range: linear, starting at 0.
    let doc = latency_chart(
        "t",
        "s",
        &[series("a", &[90.0, 100.0, 130.0], Some(80.0), true)],
    );
    assert!(doc.contains("linear scale") && !doc.contains("log scale"));
    assert!(doc.contains(">0<"));
    // Wide range (µs modeled vs ms measured): log.
    let doc = latency_chart(
        "t",
        "s",
        &[series("a", &[90.0, 100.0, 130.0], Some(0.25), true)],
    );
    assert!(doc.contains("log scale") && !doc.contains("linear scale"));
    assert!(doc.contains(">100 µs<") && doc.contains(">1 ms<") && doc.contains(">1 s<"));
    // Wide range across series, measured only.
    let doc = latency_chart(
        "t",
        "s",
        &[
            series("a", &[0.5], None, true),
            series("b", &[400.0], None, true),
        ],
    );
    assert!(doc.contains("log scale"));
}

#[test]
fn degenerate_inputs_do_not_panic() {
    let cases: Vec<Vec<Series>> = vec![
        vec![],
        vec![series("empty", &[], None, true)],
        vec![series("empty+modeled", &[], Some(0.2), true)],
        vec![series(
            "junk",
            &[f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 0.0, -3.0],
            Some(f64::NAN),
            false,
        )],
        vec![series("neg modeled", &[1.0, 2.0], Some(-1.0), true)],
        vec![series("zero modeled", &[1.0], Some(0.0), true)],
        vec![series("single", &[42.0], None, true)],
        vec![series(
            "mixed",
            &[f64::NAN, 3.0, -1.0, 4.0, f64::INFINITY],
            Some(1e-9),
            true,
        )],
        vec![series(
            "tiny",
            &[f64::MIN_POSITIVE, 5e-324],
            Some(1e-300),
            true,
        )],
        vec![series("huge", &[1e300, f64::MAX], Some(1e-300), true)],
        vec![series("equal", &[7.0, 7.0, 7.0], Some(7.0), true)],
        vec![series("", &[1.0], Some(1.0), true)],
        vec![series(
            &"long label ".repeat(40),
            &[1.0, 2.0],
            Some(1.5),
            false,
        )],
        (0..30)
            .map(|i| series(&format!("s{i}"), &[1.0 + i as f64], Some(0.001), i % 3 != 0))
            .collect(),
    ];
    for (i, s) in cases.iter().enumerate() {
        let doc = latency_chart(&format!("case {i}"), "", s);
        assert_well_formed(&doc);
        assert!(
            !["=\"NaN", "=\"inf", "=\"-inf", "-NaN"]
                .iter()
                .any(|b| doc.contains(b)),
            "case {i} leaked a non-finite coordinate"
        );
    }
    // Empty list: a "no data" note, no axis.
    let doc = latency_chart("t", "s", &[]);
    assert!(doc.contains("no data"));
    assert!(!doc.contains("scale;"));
    // No usable values at all: the series is still listed.
    let doc = latency_chart("t", "s", &[series("junk", &[f64::NAN, -1.0], None, true)]);
    assert!(
        doc.contains("no data") && doc.contains("junk") && doc.contains("no usable measurements")
    );
    // Skipped values are reported.
    let doc = latency_chart(
        "t",
        "s",
        &[series("mixed", &[f64::NAN, 3.0, -1.0, 4.0], None, true)],
    );
    assert!(doc.contains("2 tokens measured (2 unusable value(s) skipped)"));
    // Height grows with series count.
    let h = |doc: &str| -> f64 {
        let i = doc.find("height=\"").unwrap() + 8;
        doc[i..doc[i..].find('"').unwrap() + i].parse().unwrap()
    };
    let one = latency_chart("t", "s", &[series("a", &[1.0], Some(1.0), true)]);
    let three = latency_chart(
        "t",
        "s",
        &[
            series("a", &[1.0], Some(1.0), true),
            series("b", &[1.0], Some(1.0), true),
            series("c", &[1.0], Some(1.0), true),
        ],
    );
    assert!(h(&three) > h(&one) + 100.0);
}

#[test]
fn format_ms_picks_units() {
    assert_eq!(format_ms(12.34), "12.3 ms");
    assert_eq!(format_ms(0.041), "41 µs");
    assert_eq!(format_ms(0.25), "250 µs");
    assert_eq!(format_ms(100.0), "100 ms");
    assert_eq!(format_ms(999.6), "1 s");
    assert_eq!(format_ms(1500.0), "1.5 s");
    assert_eq!(format_ms(0.0000025), "2.5 ns");
    assert_eq!(format_ms(0.0), "0 ms");
    assert_eq!(format_ms(f64::NAN), "n/a");
}
