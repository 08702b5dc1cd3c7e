//! GGUF weight types Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K and Q6_K (and the
//! older Q8_0/Q4_0/Q4_1), checked against code that is not ours and through
//! every kernel path that reads a weight:
//!
//! * `tests/fixtures/quants/blocks.json`: random raw blocks and llama.cpp's
//!   gguf-py `gguf.quants.dequantize` of them (scripts/make-quant-fixtures.py):
//!   our CPU dequantizer, the matvec/prefill products (both matmul paths), the
//!   embedding gather and SRAM mode's sram_matmul against those floats.
//! * Seeded random blocks with odd row counts: every matmul form (plain,
//!   accumulate, logits rows, fused RMSNorm, Q|K|V split, gate/up GLU), the
//!   embedding and sram_matmul row blocks against the CPU dequantizer.
//! * `tiny-kquants.gguf`: a 2-layer random-weight Llama whose matrices use all
//!   seven types (token_embd Q4_K, output Q6_K), run in VRAM mode and SRAM
//!   mode against a numpy float64 forward pass over gguf-py's decoding.

use sramlm::chip::{place, ChipSpec, PlaceOptions, TensorInfo};
use sramlm::exec::sram::{SramExecutor, SramOptions};
use sramlm::exec::vram::{VramExecutor, VramOptions};
use sramlm::exec::{Executor, Readback, StepOutput};
use sramlm::gpu::Gpu;
use sramlm::kernels::{embed, matmul, rmsnorm, silu_mul, sram_matmul, GpuWeight, Step};
use sramlm::model::gguf::GgmlType;
use sramlm::model::weights::{dequantize, Bytes};
use sramlm::model::{self, DType, Tensor};
use sramlm::testing::*;
use std::sync::Arc;

const NEW_TYPES: [DType; 7] = [
    DType::Q5_0,
    DType::Q5_1,
    DType::Q2_K,
    DType::Q3_K,
    DType::Q4_K,
    DType::Q5_K,
    DType::Q6_K,
];

/// Kernel products against the f64 CPU product of the same decoded weights.
const TOL: f32 = 2e-5;

fn tensor(dtype: DType, rows: usize, cols: usize, bytes: Vec<u8>) -> Tensor {
    Tensor {
        dtype,
        shape: vec![rows, cols],
        bytes: Bytes::Owned(Arc::new(bytes)),
    }
}

// ---------------------------------------------------------------------------
// gguf-py block fixtures

struct Fixture {
    name: String,
    dtype: DType,
    rows: usize,
    cols: usize,
    bytes: Vec<u8>,
    values: Vec<f32>,
}

fn fixtures() -> Vec<Fixture> {
    let p = fixture_dir("quants").join("blocks.json");
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let name = t["type"].as_str().unwrap().to_string();
            let ggml = GgmlType::from_id(t["ggml_type"].as_u64().unwrap() as u32).unwrap();
            let dtype = ggml
                .dtype()
                .unwrap_or_else(|| panic!("{name}: sramlm cannot run it"));
            assert_eq!(dtype.name(), name);
            let hex = t["bytes_hex"].as_str().unwrap();
            let bytes = (0..hex.len() / 2)
                .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
                .collect();
            let values = t["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect();
            Fixture {
                name,
                dtype,
                rows: t["rows"].as_u64().unwrap() as usize,
                cols: t["cols"].as_u64().unwrap() as usize,
                bytes,
                values,
            }
        })
        .collect()
}

#[test]
fn fixture_covers_every_quantized_type() {
    let names: Vec<String> = fixtures().into_iter().map(|f| f.name).collect();
    for dt in DType::ALL.into_iter().filter(|d| d.is_quantized()) {
        assert!(names.contains(&dt.name().to_string()), "{dt} missing");
    }
}

#[test]
fn cpu_dequantizer_matches_gguf_py() {
    for f in fixtures() {
        assert_eq!(
            Some(f.bytes.len()),
            f.dtype.bytes_for(f.rows * f.cols),
            "{}",
            f.name
        );
        let got = dequantize(f.dtype, &f.bytes, f.rows * f.cols);
        assert_close(
            &got,
            &f.values,
            1e-6,
            &format!("{} CPU dequantizer", f.name),
        );
    }
}

#[test]
fn kernels_decode_gguf_py_blocks() {
    for gpu in gpu_paths() {
        for f in fixtures() {
            let t = tensor(f.dtype, f.rows, f.cols, f.bytes.clone());
            let w = GpuWeight::upload(&gpu, "w", &t).unwrap();
            assert_eq!(w.bytes, f.bytes.len());
            let tag = format!("{} (subgroup path: {})", f.name, gpu.level.subgroup_matmul);
            for tokens in [1, 5] {
                let x = seeded(tokens * f.cols, 7);
                let got = matmul_on(&gpu, &w, &x, tokens, None);
                let want = matmul::cpu(&x, &f.values, f.rows, f.cols);
                assert_close(&got, &want, TOL, &format!("matmul T={tokens} {tag}"));
            }
            let ids = [f.rows as u32 - 1, 0, 1, f.rows as u32 - 1];
            let got = embed_on(&gpu, &w, &ids);
            let want = embed::cpu(&f.values, f.cols, &ids);
            assert_close(&got, &want, 1e-6, &format!("embed {tag}"));
        }
    }
    let Some(gpu) = gpu() else { return };
    for f in fixtures() {
        let t = tensor(f.dtype, f.rows, f.cols, f.bytes.clone());
        let w = GpuWeight::upload(&gpu, "w", &t).unwrap();
        // One row per slice: every tile but the first starts inside a word
        // for the unaligned block sizes.
        let slice = (w.row_bytes() as usize + 4).next_multiple_of(4);
        let x = seeded(2 * f.cols, 9);
        let got = sram_on(&gpu, &w, &x, 2, (1, f.rows), slice, false);
        let full = matmul::cpu(&x, &f.values, f.rows, f.cols);
        let want: Vec<f32> = (0..2 * f.rows)
            .map(|i| if i % f.rows == 0 { 0.0 } else { full[i] })
            .collect();
        assert_close(&got, &want, TOL, &format!("sram_matmul {}", f.name));
    }
}

// ---------------------------------------------------------------------------
// Kernel runners

fn matmul_on(gpu: &Gpu, w: &GpuWeight, x: &[f32], tokens: usize, y0: Option<&[f32]>) -> Vec<f32> {
    let xb = gpu.upload("x", bytemuck::cast_slice(x)).unwrap();
    let zeros = vec![0f32; tokens * w.rows];
    let yb = gpu
        .upload("y", bytemuck::cast_slice(y0.unwrap_or(&zeros)))
        .unwrap();
    let step_buf = gpu.uniform("step", &Step::default());
    let ops = matmul::build(
        gpu,
        &step_buf,
        "mm",
        w,
        &xb,
        &yb,
        y0.is_some(),
        matmul::Rows::Tokens,
    )
    .unwrap();
    run(
        gpu,
        &step_buf,
        Step::tokens(tokens as u32, 0),
        &[&ops[0], &ops[1]],
    );
    read_f32(gpu, &yb, tokens * w.rows)
}

fn embed_on(gpu: &Gpu, w: &GpuWeight, ids: &[u32]) -> Vec<f32> {
    let ids_buf = gpu.upload("ids", bytemuck::cast_slice(ids)).unwrap();
    let x = gpu
        .storage_buffer("x", (ids.len() * w.cols * 4) as u64)
        .unwrap();
    let step_buf = gpu.uniform("step", &Step::default());
    let op = embed::build(gpu, &step_buf, w, &ids_buf, &x).unwrap();
    run(gpu, &step_buf, Step::tokens(ids.len() as u32, 0), &[&op]);
    read_f32(gpu, &x, ids.len() * w.cols)
}

/// sram_matmul over rows `[rows.0, rows.1)`; the other outputs stay 0 (or
/// keep `y0` = 0 under accumulate).
#[allow(clippy::too_many_arguments)]
fn sram_on(
    gpu: &Gpu,
    w: &GpuWeight,
    x: &[f32],
    tokens: usize,
    rows: (usize, usize),
    slice_bytes: usize,
    accumulate: bool,
) -> Vec<f32> {
    let xb = gpu.upload("x", bytemuck::cast_slice(x)).unwrap();
    let yb = gpu
        .upload("y", bytemuck::cast_slice(&vec![0f32; tokens * w.rows]))
        .unwrap();
    let step_buf = gpu.uniform("step", &Step::default());
    let spec = sram_matmul::Spec {
        name: "t",
        w,
        row_begin: rows.0,
        row_end: rows.1,
        slice_bytes,
        accumulate,
        out_rows_only: false,
    };
    let op = sram_matmul::build(gpu, &step_buf, &spec, &xb, &yb).unwrap();
    run(gpu, &step_buf, Step::tokens(tokens as u32, 0), &[&op]);
    read_f32(gpu, &yb, tokens * w.rows)
}

// ---------------------------------------------------------------------------
// Every kernel path, seeded random blocks

/// Input rows of different scales (a transposed product shows).
fn inputs(tokens: usize, k: usize, seed: u64) -> Vec<f32> {
    seeded(tokens * k, seed)
        .iter()
        .enumerate()
        .map(|(i, v)| v * (1 + i / k) as f32)
        .collect()
}

#[test]
fn matvec_and_prefill_every_type() {
    for gpu in gpu_paths() {
        for dt in NEW_TYPES {
            // Odd row counts; two blocks per row for the K-quants, 9 for the others.
            let k = if dt.block_len() == 256 { 512 } else { 288 };
            for (n, tokens, acc) in [(37, 1, false), (13, 9, true), (5, 3, false)] {
                let bytes = random_blocks(dt, n * k, 100 + n as u64);
                let wf = dequantize(dt, &bytes, n * k);
                let w = GpuWeight::upload(&gpu, "w", &tensor(dt, n, k, bytes)).unwrap();
                let x = inputs(tokens, k, 3);
                let y0 = seeded(tokens * n, 4);
                let got = matmul_on(&gpu, &w, &x, tokens, acc.then_some(&y0[..]));
                let mut want = matmul::cpu(&x, &wf, n, k);
                if acc {
                    want.iter_mut().zip(&y0).for_each(|(a, b)| *a += b);
                }
                assert_close(
                    &got,
                    &want,
                    TOL,
                    &format!(
                        "matmul {dt} n={n} k={k} T={tokens} acc={acc} subgroup path: {}",
                        gpu.level.subgroup_matmul
                    ),
                );
            }
        }
    }
}

/// The decode forms the VRAM executor uses: RMSNorm fused into the product,
/// Q|K|V stacked (three outputs), gate|up with SwiGLU, and the logits rows
/// (lm_head) — each against rmsnorm then the CPU product.
#[test]
fn fused_norm_split3_glu_and_logits_every_type() {
    for gpu in gpu_paths() {
        for dt in NEW_TYPES {
            fused_on(&gpu, dt);
        }
    }
}

fn fused_on(gpu: &Arc<Gpu>, dt: DType) {
    let k = 256;
    let (nq, nk) = (24, 7);
    let rows = nq + 2 * nk; // 38: GLU halves of 19
    let bytes = random_blocks(dt, rows * k, 91);
    let wf = dequantize(dt, &bytes, rows * k);
    let w = GpuWeight::upload(gpu, "w", &tensor(dt, rows, k, bytes)).unwrap();
    let tag = format!("{dt}, subgroup path: {}", gpu.level.subgroup_matmul);
    let eps = 1e-5;
    let x: Vec<f32> = seeded(2 * k, 13).iter().map(|v| 3.0 * v).collect();
    let g: Vec<f32> = seeded(k, 17).iter().map(|v| 1.0 + 0.5 * v).collect();
    let xn = rmsnorm::cpu(&x, &g, eps);
    let xb = gpu.upload("x", bytemuck::cast_slice(&x)).unwrap();
    let gb = gpu.upload("g", bytemuck::cast_slice(&g)).unwrap();
    let xnb = gpu.upload("xn", bytemuck::cast_slice(&xn)).unwrap();
    let norm = Some(matmul::Norm {
        x: &xb,
        weight: &gb,
        eps,
    });
    let step_buf = gpu.uniform("step", &Step::default());
    let decode = Step::tokens(1, 0);
    let want = matmul::cpu(&xn[..k], &wf, rows, k);

    // Fused NORM, plain product.
    let y = gpu.storage_buffer("y", (rows * 4) as u64).unwrap();
    let build = |ys: &[&wgpu::Buffer], fuse, rows_mode, norm| {
        matmul::build_fused(
            gpu, &step_buf, "mm", &w, &xnb, ys, false, rows_mode, fuse, norm,
        )
        .unwrap()
    };
    let ops = build(&[&y], matmul::Fuse::None, matmul::Rows::Tokens, norm);
    run(gpu, &step_buf, decode, &[&ops[0], &ops[1]]);
    assert_close(&read_f32(gpu, &y, rows), &want, TOL, &format!("norm {tag}"));

    // Q|K|V split, decode (fused norm) and prefill (normed rows as input).
    let parts: Vec<wgpu::Buffer> = [nq, nk, nk]
        .iter()
        .map(|&n| gpu.storage_buffer("part", (2 * n * 4) as u64).unwrap())
        .collect();
    let full2 = matmul::cpu(&xn, &wf, rows, k);
    for (step, nt, nm) in [(decode, 1, norm), (Step::tokens(2, 0), 2, None)] {
        let ops = build(
            &[&parts[0], &parts[1], &parts[2]],
            matmul::Fuse::Split3 {
                q_rows: nq,
                k_rows: nk,
            },
            matmul::Rows::Tokens,
            nm,
        );
        run(gpu, &step_buf, step, &[&ops[0], &ops[1]]);
        for (i, (r0, n)) in [(0, nq), (nq, nk), (nq + nk, nk)].into_iter().enumerate() {
            let want: Vec<f32> = (0..nt)
                .flat_map(|t| full2[t * rows + r0..t * rows + r0 + n].to_vec())
                .collect();
            assert_close(
                &read_f32(gpu, &parts[i], nt * n),
                &want,
                TOL,
                &format!("split3 part {i} T={nt} {tag}"),
            );
        }
    }

    // Gate|up with SwiGLU, decode (fused norm) and prefill.
    let half = rows / 2;
    let h = gpu.storage_buffer("h", (2 * half * 4) as u64).unwrap();
    for (step, nt, nm) in [(decode, 1, norm), (Step::tokens(2, 0), 2, None)] {
        let ops = build(&[&h], matmul::Fuse::Glu, matmul::Rows::Tokens, nm);
        run(gpu, &step_buf, step, &[&ops[0], &ops[1]]);
        let gate: Vec<f32> = (0..nt)
            .flat_map(|t| full2[t * rows..t * rows + half].to_vec())
            .collect();
        let up: Vec<f32> = (0..nt)
            .flat_map(|t| full2[t * rows + half..(t + 1) * rows].to_vec())
            .collect();
        assert_close(
            &read_f32(gpu, &h, nt * half),
            &silu_mul::cpu(&gate, &up),
            TOL,
            &format!("glu T={nt} {tag}"),
        );
    }

    // lm_head: only the logits row (row 1 of 2), fused final norm.
    let step = Step {
        n_tokens: 2,
        out_row0: 1,
        n_out_rows: 1,
        ..Default::default()
    };
    let ops = build(&[&y], matmul::Fuse::None, matmul::Rows::OutRows, norm);
    run(gpu, &step_buf, step, &[&ops[0], &ops[1]]);
    assert_close(
        &read_f32(gpu, &y, rows),
        &full2[rows..],
        TOL,
        &format!("logits row {tag}"),
    );
}

#[test]
fn embedding_and_sram_row_blocks_every_type() {
    let Some(gpu) = gpu() else { return };
    for dt in NEW_TYPES {
        let (n, k) = (29, 512);
        let bytes = random_blocks(dt, n * k, 55);
        let wf = dequantize(dt, &bytes, n * k);
        let w = GpuWeight::upload(&gpu, "w", &tensor(dt, n, k, bytes)).unwrap();
        let ids = [28u32, 0, 3, 17, 3];
        assert_close(
            &embed_on(&gpu, &w, &ids),
            &embed::cpu(&wf, k, &ids),
            1e-6,
            &format!("embed {dt}"),
        );
        let row_bytes = w.row_bytes() as usize;
        assert_eq!(
            row_bytes,
            k / 256 * dt.block_bytes() * (256 / dt.block_len())
        );
        // 3 rows per slice (plus the spare word unaligned tiles need); a row
        // block that starts mid-matrix, as the placement cuts them.
        let slice = (3 * row_bytes + 4).next_multiple_of(4);
        assert_eq!(sram_matmul::rows_per_tile(row_bytes, slice), 3);
        for (tokens, rows) in [(1, (0, n)), (4, (5, 26))] {
            let x = inputs(tokens, k, 8);
            let got = sram_on(&gpu, &w, &x, tokens, rows, slice, true);
            let full = matmul::cpu(&x, &wf, n, k);
            let want: Vec<f32> = (0..tokens * n)
                .map(|i| {
                    if (rows.0..rows.1).contains(&(i % n)) {
                        full[i]
                    } else {
                        0.0
                    }
                })
                .collect();
            assert_close(
                &got,
                &want,
                TOL,
                &format!("sram_matmul {dt} rows {rows:?} T={tokens}"),
            );
        }
    }
}

#[test]
fn block_lengths_are_checked_per_type() {
    // A row of 288 values is whole Q5_0 blocks but not whole K-quant super-blocks.
    for dt in NEW_TYPES {
        let ok = dt.bytes_for(288);
        assert_eq!(ok.is_some(), dt.block_len() == 32, "{dt}");
        let e = TensorInfo::new(model::WeightName::Embed, dt, vec![3, 288]);
        if dt.block_len() == 256 {
            let msg = e.unwrap_err().to_string();
            assert!(
                msg.contains(&format!("not a multiple of the {dt} block length 256")),
                "{msg}"
            );
        } else {
            assert_eq!(e.unwrap().bytes, 3 * 9 * dt.block_bytes());
        }
    }
}

// ---------------------------------------------------------------------------
// End to end: a tiny Llama GGUF with every new type

struct RefPrompt {
    key: String,
    ids: Vec<u32>,
    logits: Vec<Vec<f32>>,
    greedy: Vec<u32>,
    margins: Vec<f32>,
}

fn tiny() -> (model::Model, Vec<RefPrompt>, serde_json::Value) {
    let dir = fixture_dir("quants");
    let m = model::load(&dir.join("tiny-kquants.gguf")).unwrap();
    let text = std::fs::read_to_string(dir.join("tiny-kquants.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let f32s = |x: &serde_json::Value| -> Vec<f32> {
        x.as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect()
    };
    let prompts = v["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| RefPrompt {
            key: p["key"].as_str().unwrap().into(),
            ids: f32s(&p["input_ids"]).iter().map(|&x| x as u32).collect(),
            logits: p["logits"].as_array().unwrap().iter().map(f32s).collect(),
            greedy: f32s(&p["greedy_ids"]).iter().map(|&x| x as u32).collect(),
            margins: f32s(&p["top1_minus_top2"]),
        })
        .collect();
    (m, prompts, v)
}

/// Logits of the f32 engine against the float64 reference.
const LOGIT_TOL: f32 = 1e-4;
/// The parity rule: greedy ids must agree where the reference's top-1/top-2
/// margin is at least this.
const MARGIN: f32 = 1e-3;

#[test]
fn tiny_kquant_model_loads_with_file_bytes() {
    let (m, _, v) = tiny();
    let types = v["tensor_types"].as_object().unwrap();
    let sizes = v["tensor_bytes"].as_object().unwrap();
    let mut seen = std::collections::HashSet::new();
    let mut matrix_bytes = 0;
    for w in model::WeightName::all(&m.config) {
        let t = m.weights.get(w).unwrap();
        let name = w.gguf();
        let stem = name.trim_end_matches(".weight");
        match types.get(stem) {
            Some(ty) => {
                assert_eq!(t.dtype.name(), ty.as_str().unwrap(), "{name}");
                assert_eq!(t.byte_len() as u64, sizes[stem].as_u64().unwrap(), "{name}");
                matrix_bytes += t.byte_len();
                seen.insert(t.dtype);
            }
            None => assert_eq!(t.dtype, DType::F32, "{name}"),
        }
    }
    for dt in NEW_TYPES {
        assert!(seen.contains(&dt), "the fixture model has no {dt} matrix");
    }
    let norms = (2 * m.config.num_layers + 1) * m.config.hidden_size * 4;
    assert_eq!(m.weights.total_bytes(), matrix_bytes + norms);
    // GPU memory for weights = the file's tensor bytes.
    let Some(gpu) = gpu() else { return };
    let exec = VramExecutor::new(gpu, &m.config, &m.weights, &VramOptions::default()).unwrap();
    assert_eq!(exec.weight_bytes(), m.weights.total_bytes() as u64);
}

fn argmax_margin(l: &[f32]) -> (u32, f32) {
    let mut idx: Vec<usize> = (0..l.len()).collect();
    idx.sort_by(|&a, &b| l[b].total_cmp(&l[a]).then(a.cmp(&b)));
    (idx[0] as u32, l[idx[0]] - l[idx[1]])
}

/// Prompt logits within LOGIT_TOL; then decode steps teacher-forced with the
/// reference's greedy ids, each step's arg-max equal to the reference where
/// its margin is at least MARGIN; then the executor's own greedy loop
/// (`generate`) up to the first position under MARGIN.
fn check_tiny(exec: &mut dyn Executor, m: &model::Model, prompts: &[RefPrompt], what: &str) {
    let vocab = m.config.vocab_size;
    for p in prompts {
        exec.reset();
        let StepOutput::Logits { rows, data } = exec.step(&p.ids, Readback::AllLogits).unwrap()
        else {
            panic!("{what}: logits expected")
        };
        assert_eq!(rows, p.ids.len());
        let want: Vec<f32> = p.logits.concat();
        assert_eq!(data.len(), want.len(), "{what} {}", p.key);
        let mut worst = 0f32;
        for (i, (g, w)) in data.iter().zip(&want).enumerate() {
            let e = (g - w).abs();
            assert!(
                e <= LOGIT_TOL,
                "{what} {}: logit {i}: got {g}, want {w} (tolerance {LOGIT_TOL:e})",
                p.key
            );
            worst = worst.max(e);
        }
        eprintln!("{what} {}: prompt logits max error {worst:.2e}", p.key);
        let mut last = data[(rows - 1) * vocab..].to_vec();
        for (i, (&id, &margin)) in p.greedy.iter().zip(&p.margins).enumerate() {
            let (got, got_margin) = argmax_margin(&last);
            if margin >= MARGIN {
                assert_eq!(got, id, "{what} {}: greedy step {i}", p.key);
            }
            assert!(
                (got_margin - margin).abs() <= 2.0 * LOGIT_TOL || margin < MARGIN,
                "{what} {}: step {i} margin {got_margin} vs {margin}",
                p.key
            );
            if i + 1 == p.greedy.len() {
                break;
            }
            let StepOutput::Logits { data, .. } = exec.step(&[id], Readback::LastLogits).unwrap()
            else {
                panic!("{what}: logits expected")
            };
            last = data;
        }
        exec.reset();
        let opts = sramlm::generate::GenerateOptions {
            max_tokens: p.greedy.len(),
            sampling: sramlm::sampling::SamplingOptions {
                temperature: 0.0,
                ..Default::default()
            },
            ignore_eos: true,
            ..Default::default()
        };
        let g = sramlm::generate::generate(exec, &m.tokenizer, &m.config, &p.ids, &opts, |_| {})
            .unwrap();
        let sure = p
            .margins
            .iter()
            .position(|&x| x < MARGIN)
            .unwrap_or(p.margins.len());
        assert_eq!(
            g.ids[..sure],
            p.greedy[..sure],
            "{what} {}: greedy continuation",
            p.key
        );
    }
}

#[test]
fn tiny_kquant_model_vram_matches_reference() {
    let Some(gpu) = gpu() else { return };
    let (m, prompts, _) = tiny();
    for chunk in [512, 3] {
        let opts = VramOptions {
            context: Some(64),
            chunk,
        };
        let mut exec = VramExecutor::new(gpu.clone(), &m.config, &m.weights, &opts).unwrap();
        check_tiny(&mut exec, &m, &prompts, &format!("vram chunk {chunk}"));
    }
}

#[test]
fn tiny_kquant_model_sram_matches_reference() {
    let Some(gpu) = gpu() else { return };
    let (m, prompts, _) = tiny();
    for preset in ["mini-64k", "mini-4m"] {
        let spec = ChipSpec::preset(preset).unwrap();
        let mut opts = PlaceOptions::for_config(&m.config);
        opts.context_len = 64;
        opts.microbatch_tokens = 4;
        let plan = place(
            &m.config,
            &TensorInfo::from_weights(&m.weights),
            &spec,
            &opts,
        )
        .unwrap();
        let mut exec = SramExecutor::new(
            gpu.clone(),
            &m.config,
            &m.weights,
            &plan,
            &SramOptions {
                image_split_bytes: None,
                task_order: None,
                batch: 1,
                context: Some(64),
                microbatch: 4,
            },
        )
        .unwrap();
        let what = format!("sram {preset} x{}", plan.totals.chips_used);
        check_tiny(&mut exec, &m, &prompts, &what);
    }
}

#[test]
fn info_reports_weight_memory_per_type() {
    let path = fixture_dir("quants").join("tiny-kquants.gguf");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sramlm"))
        .arg("info")
        .arg("-m")
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let (m, _, v) = tiny();
    for dt in NEW_TYPES {
        let (mut n, mut bytes) = (0, 0);
        for (name, ty) in v["tensor_types"].as_object().unwrap() {
            if ty.as_str() == Some(dt.name()) {
                n += 1;
                bytes += v["tensor_bytes"][name].as_u64().unwrap();
            }
        }
        let line = format!("    {dt}: {n} tensors, ");
        let at = text
            .find(&line)
            .unwrap_or_else(|| panic!("no `{line}` line in:\n{text}"));
        let shown = text[at + line.len()..].lines().next().unwrap();
        let kib = bytes as f64 / 1024.0;
        assert!(
            shown.contains(&format!("{kib:.1} KiB")),
            "{dt}: {shown} vs {bytes} bytes"
        );
    }
    let want = format!("parameters: {} |", params(&m));
    assert!(text.contains(&want), "no `{want}` in:\n{text}");
}

fn params(m: &model::Model) -> usize {
    model::WeightName::all(&m.config)
        .into_iter()
        .map(|w| m.weights.get(w).unwrap().numel())
        .sum()
}
