// Sampling penalties on the GPU, in place on the last logit row, before
// argmax / top-k: for each listed id (distinct ids),
//   l = l > 0 ? l * mul_pos : l * mul_neg;  l -= offset
// mul_pos = 1 / repeat_penalty, mul_neg = repeat_penalty (llama.cpp's
// repetition penalty), offset = presence + frequency · count (OpenAI's).

struct Params {
    vocab: u32,
    count: u32,
    _pad0: u32,
    _pad1: u32,
}
#include step

struct Entry {
    id: u32,
    mul_pos: f32,
    mul_neg: f32,
    offset: f32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<uniform> S: Step;
@group(0) @binding(2) var<storage, read_write> L: array<f32>;   // [rows, vocab]
@group(0) @binding(3) var<storage, read> E: array<Entry>;

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) lid: u32) {
    let base = (S.n_out_rows - 1u) * P.vocab;
    for (var i = lid; i < P.count; i += 64u) {
        let e = E[i];
        if (e.id < P.vocab) {
            var l = L[base + e.id];
            if (l > 0.0) {
                l = l * e.mul_pos;
            } else {
                l = l * e.mul_neg;
            }
            L[base + e.id] = l - e.offset;
        }
    }
}
