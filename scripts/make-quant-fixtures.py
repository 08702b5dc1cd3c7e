#!/usr/bin/env python3
"""Builds tests/fixtures/quants/ (developer script, not run by CI).

Everything here is independent of sramlm's code: random raw GGML blocks are
decoded with llama.cpp's own gguf-py (`gguf.quants.dequantize`), and the tiny
model's reference logits come from a plain numpy float64 forward pass over the
tensors gguf-py decodes, with llama.cpp's semantics for a `llama` GGUF (RoPE on
adjacent pairs, as convert_hf_to_gguf.py's permuted q/k weights expect).

Outputs:
  blocks.json         per GGML type: random raw blocks (hex) as a [rows, cols]
                      matrix and gguf-py's float32 decoding of them.
  tiny-kquants.gguf   a 2-layer random-weight Llama whose matrices are Q5_0,
                      Q5_1, Q2_K, Q3_K, Q4_K, Q5_K and Q6_K (token_embd Q4_K,
                      output Q6_K, as Q4_K_M files store them), written with
                      gguf-py's GGUFWriter.
  tiny-kquants.json   the reference: per prompt, the logits of every prompt
                      position, greedy continuation ids and each step's
                      top-1/top-2 logit margin.

Run: /opt/fx/bin/python scripts/make-quant-fixtures.py   (needs gguf, numpy)
"""

import json
import os
import sys

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import GGUFWriter
from gguf.constants import GGML_QUANT_SIZES
from gguf.quants import dequantize

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "quants")

# Offsets of the f16 scale fields in each block (d, then min/dmin when present),
# from ggml-common.h; every other byte is random quant bits / packed scales.
F16_FIELDS = {
    T.Q4_0: [0],
    T.Q4_1: [0, 2],
    T.Q5_0: [0],
    T.Q5_1: [0, 2],
    T.Q8_0: [0],
    T.Q2_K: [80, 82],
    T.Q3_K: [108],
    T.Q4_K: [0, 2],
    T.Q5_K: [0, 2],
    T.Q6_K: [208],
}


def random_blocks(rng, qtype, n_blocks, d_scale=1.0, signed_d=True):
    """Raw bytes of n_blocks random blocks with finite, sane f16 scales."""
    block_len, block_bytes = GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, size=(n_blocks, block_bytes), dtype=np.uint8)
    for i, off in enumerate(F16_FIELDS[qtype]):
        v = rng.uniform(0.2, 1.0, size=n_blocks) * d_scale
        if i == 0 and signed_d:
            v *= rng.choice([-1.0, 1.0], size=n_blocks)
        if i == 1 and qtype in (T.Q4_1, T.Q5_1):
            v = rng.uniform(-1.0, 1.0, size=n_blocks) * d_scale * 8
        raw[:, off:off + 2] = v.astype(np.float16).view(np.uint8).reshape(n_blocks, 2)
    return raw


def matrix(rng, qtype, rows, cols, target_std):
    """Random [rows, cols] weight in `qtype` scaled so its values have about
    `target_std`: (raw bytes [rows, row_bytes], gguf-py decoding [rows, cols])."""
    block_len, block_bytes = GGML_QUANT_SIZES[qtype]
    assert cols % block_len == 0
    nb = rows * cols // block_len
    # Positive d (mins already subtract the offset in the K-quants; Q*_0 are symmetric).
    raw = random_blocks(rng, qtype, nb, signed_d=False)
    fields = F16_FIELDS[qtype]
    if len(fields) == 2:
        # Centre each block: its values are linear in the min field, so pick
        # the min that zeroes the block mean (else every row has its own
        # offset and one logit wins at every position).
        off = fields[1]

        def block_means(m):
            r = raw.copy()
            r[:, off:off + 2] = np.full(nb, m, np.float16).view(np.uint8).reshape(nb, 2)
            return dequantize(r, qtype).astype(np.float64).mean(axis=1)

        a, b = block_means(0.0), block_means(1.0)
        m = (a / (a - b)).astype(np.float16)
        raw[:, off:off + 2] = m.view(np.uint8).reshape(nb, 2)
    vals = dequantize(raw.reshape(rows, -1), qtype)
    f = target_std / float(np.std(vals))
    for off in F16_FIELDS[qtype]:
        h = raw[:, off:off + 2].copy().view(np.float16).astype(np.float32) * f
        raw[:, off:off + 2] = h.astype(np.float16).view(np.uint8)
    raw = raw.reshape(rows, -1)
    vals = dequantize(raw, qtype).astype(np.float32)
    assert np.all(np.isfinite(vals))
    return raw, vals


def blocks_fixture(rng):
    out = []
    for qtype in [T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K]:
        block_len, _ = GGML_QUANT_SIZES[qtype]
        rows, cols = (3, 2 * block_len) if block_len == 256 else (5, 3 * block_len)
        raw = random_blocks(rng, qtype, rows * cols // block_len, d_scale=0.02)
        raw = raw.reshape(rows, -1)
        vals = dequantize(raw, qtype).astype(np.float32)
        assert vals.shape == (rows, cols) and np.all(np.isfinite(vals))
        out.append({
            "type": qtype.name,
            "ggml_type": int(qtype),
            "rows": rows,
            "cols": cols,
            "bytes_hex": raw.tobytes().hex(),
            "values": [float(x) for x in vals.reshape(-1)],
        })
    return {"generator": "scripts/make-quant-fixtures.py (gguf-py gguf.quants.dequantize)", "types": out}


# ---------------------------------------------------------------------------
# Tiny model

HIDDEN, FFN, HEADS, KV_HEADS, LAYERS = 256, 512, 4, 1, 2
HEAD_DIM = HIDDEN // HEADS
THETA, EPS = 10000.0, 1e-5

# Every matrix's type. Layer 0 mixes types within q/k/v and within gate/up
# (as Q4_K_M files do with attn_v), so VRAM mode cannot stack them; layer 1
# keeps each group in one type (the stacked Q|K|V and gate|up products).
LAYER_TYPES = [
    {"attn_q": T.Q4_K, "attn_k": T.Q5_K, "attn_v": T.Q6_K, "attn_output": T.Q5_0,
     "ffn_gate": T.Q5_1, "ffn_up": T.Q4_K, "ffn_down": T.Q6_K},
    {"attn_q": T.Q5_1, "attn_k": T.Q5_1, "attn_v": T.Q5_1, "attn_output": T.Q2_K,
     "ffn_gate": T.Q3_K, "ffn_up": T.Q3_K, "ffn_down": T.Q2_K},
]


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def rmsnorm(x, g):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + EPS) * g


def rope(x, pos):
    # x: [T, heads, hd]; llama.cpp NORM mode: pairs (2i, 2i+1).
    hd = x.shape[-1]
    inv = THETA ** (-np.arange(0, hd, 2, dtype=np.float64) / hd)
    ang = np.asarray(pos, dtype=np.float64)[:, None] * inv[None, :]
    c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    x0, x1 = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = x0 * c - x1 * s
    out[..., 1::2] = x0 * s + x1 * c
    return out


def forward(w, ids):
    """float64 logits [T, vocab] for the whole sequence `ids` from position 0."""
    n = len(ids)
    x = w["token_embd"][ids].astype(np.float64)
    pos = np.arange(n)
    mask = np.triu(np.full((n, n), -np.inf), 1)
    for l in range(LAYERS):
        p = lambda t: w[f"blk.{l}.{t}"]
        h = rmsnorm(x, p("attn_norm"))
        q = (h @ p("attn_q").T).reshape(n, HEADS, HEAD_DIM)
        k = (h @ p("attn_k").T).reshape(n, KV_HEADS, HEAD_DIM)
        v = (h @ p("attn_v").T).reshape(n, KV_HEADS, HEAD_DIM)
        q, k = rope(q, pos), rope(k, pos)
        att = np.empty((n, HEADS, HEAD_DIM))
        for hh in range(HEADS):
            kv = hh // (HEADS // KV_HEADS)
            s = q[:, hh] @ k[:, kv].T / np.sqrt(HEAD_DIM) + mask
            s = np.exp(s - s.max(-1, keepdims=True))
            att[:, hh] = (s / s.sum(-1, keepdims=True)) @ v[:, kv]
        x = x + att.reshape(n, -1) @ p("attn_output").T
        h = rmsnorm(x, p("ffn_norm"))
        g = h @ p("ffn_gate").T
        x = x + ((g / (1 + np.exp(-g))) * (h @ p("ffn_up").T)) @ p("ffn_down").T
    return rmsnorm(x, w["output_norm"]) @ w["output"].T


def tiny_model(rng):
    byte_chars = bytes_to_unicode()
    tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] + [byte_chars[b] for b in range(256)] + ["Ġh"]
    vocab = len(tokens)
    path = os.path.join(OUT, "tiny-kquants.gguf")
    gw = GGUFWriter(path, "llama")
    gw.add_name("tiny-kquants")
    gw.add_block_count(LAYERS)
    gw.add_context_length(64)
    gw.add_embedding_length(HIDDEN)
    gw.add_feed_forward_length(FFN)
    gw.add_head_count(HEADS)
    gw.add_head_count_kv(KV_HEADS)
    gw.add_rope_freq_base(THETA)
    gw.add_layer_norm_rms_eps(EPS)
    gw.add_rope_dimension_count(HEAD_DIM)
    gw.add_vocab_size(vocab)
    gw.add_tokenizer_model("gpt2")
    gw.add_tokenizer_pre("smollm")
    gw.add_token_list(tokens)
    gw.add_token_types([3, 3, 3] + [1] * (vocab - 3))
    gw.add_token_merges(["Ġ h"])
    gw.add_bos_token_id(1)
    gw.add_eos_token_id(2)
    gw.add_add_bos_token(False)

    w = {}
    sizes = {}

    def quant(name, qtype, rows, cols, std):
        raw, vals = matrix(rng, qtype, rows, cols, std)
        gw.add_tensor(name + ".weight", raw, raw_dtype=qtype)
        w[name] = vals.astype(np.float64)
        sizes[name] = (qtype.name, raw.nbytes)

    def norm(name, n):
        v = (1.0 + 0.2 * rng.standard_normal(n)).astype(np.float32)
        gw.add_tensor(name + ".weight", v)
        w[name] = v.astype(np.float64)

    quant("token_embd", T.Q4_K, vocab, HIDDEN, 1.0)
    for l in range(LAYERS):
        ty = LAYER_TYPES[l]
        norm(f"blk.{l}.attn_norm", HIDDEN)
        quant(f"blk.{l}.attn_q", ty["attn_q"], HEADS * HEAD_DIM, HIDDEN, 0.12)
        quant(f"blk.{l}.attn_k", ty["attn_k"], KV_HEADS * HEAD_DIM, HIDDEN, 0.12)
        quant(f"blk.{l}.attn_v", ty["attn_v"], KV_HEADS * HEAD_DIM, HIDDEN, 0.08)
        quant(f"blk.{l}.attn_output", ty["attn_output"], HIDDEN, HEADS * HEAD_DIM, 0.06)
        norm(f"blk.{l}.ffn_norm", HIDDEN)
        quant(f"blk.{l}.ffn_gate", ty["ffn_gate"], FFN, HIDDEN, 0.08)
        quant(f"blk.{l}.ffn_up", ty["ffn_up"], FFN, HIDDEN, 0.08)
        quant(f"blk.{l}.ffn_down", ty["ffn_down"], HIDDEN, FFN, 0.05)
    norm("output_norm", HIDDEN)
    quant("output", T.Q6_K, vocab, HIDDEN, 0.15)
    gw.write_header_to_file()
    gw.write_kv_data_to_file()
    gw.write_tensors_to_file()
    gw.close()

    prompts = []
    for key, ids, n_new in [("seven", [1, 75, 104, 200, 36, 9, 150], 16), ("one", [5], 12)]:
        logits = forward(w, ids)
        seq = list(ids)
        new_ids, margins = [], []
        for _ in range(n_new):
            last = forward(w, seq)[-1]
            order = np.argsort(-last, kind="stable")
            new_ids.append(int(order[0]))
            margins.append(float(last[order[0]] - last[order[1]]))
            seq.append(int(order[0]))
        prompts.append({
            "key": key,
            "input_ids": ids,
            "logits": [[float(np.float32(v)) for v in row] for row in logits],
            "greedy_ids": new_ids,
            "top1_minus_top2": margins,
        })
    ref = {
        "generator": "scripts/make-quant-fixtures.py (numpy float64 forward over gguf-py dequantized tensors)",
        "vocab": vocab,
        "tensor_types": {k: v[0] for k, v in sizes.items()},
        "tensor_bytes": {k: v[1] for k, v in sizes.items()},
        "prompts": prompts,
    }
    with open(os.path.join(OUT, "tiny-kquants.json"), "w") as f:
        json.dump(ref, f, indent=1)
    return path


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(20261203)
    with open(os.path.join(OUT, "blocks.json"), "w") as f:
        json.dump(blocks_fixture(rng), f)
    path = tiny_model(rng)
    for name in sorted(os.listdir(OUT)):
        size = os.path.getsize(os.path.join(OUT, name))
        print(f"{name}: {size} bytes")
        assert size < 1_000_000, f"{name} is too large for a committed fixture"


if __name__ == "__main__":
    sys.exit(main())
