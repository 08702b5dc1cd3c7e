#!/usr/bin/env python3
"""Extra transformers references for the Gemma 3 fixture (tests/archs.rs):
the same weights (tests/fixtures/archs/gemma3/model.safetensors) under other
configs, and the weights its GGUF holds.

Each variant is a patch of config.json (keys set, keys removed). For each,
transformers 5 (float32, eager attention) gives the greedy ids of the
fixture's prompt with the KV cache, every step's top-1/top-2 margin and the
first step's logits, checked against one full forward. Variants:

  v4_layout           4.x keys: `sliding_window_pattern` 6, `rope_theta`,
                      `rope_local_base_freq` instead of `layer_types` and
                      nested `rope_parameters` (must equal the main reference)
  window_past_prompt  `sliding_window` 64 >= every position run (the window
                      never cuts; must differ from the main reference)
  linear_rope_full    Gemma 3 4B+'s RoPE: linear scaling, factor 8, on the
                      full-attention layer only (5.x nested rope_parameters)
  query_pre_attn_scalar_64  scores scaled by 64^-0.5, not head_dim^-0.5
  v4_pattern2_linear  `sliding_window_pattern` 2 (layers s,f,s,f,s,f) with a
                      4.x `rope_scaling` (linear 8: full layers only)

and `gguf`: the folder's model with every norm weight replaced by the value
gemma3.gguf stores minus 1 (llama.cpp's converter adds Gemma's 1 to the norm
weights in float16, so the file holds (1 + w) rounded to float16 and a
runner of the GGUF computes with those): what transformers computes on the
weights the GGUF describes.

Usage (no llama.cpp needed; reads the committed fixture):
    /path/to/python scripts/make-gemma3-variants.py
writes tests/fixtures/archs/gemma3/variants.json.
"""

import importlib.util
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "tests" / "fixtures" / "archs" / "gemma3"

spec = importlib.util.spec_from_file_location("mf", ROOT / "scripts" / "make-fixtures.py")
mf = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mf)

VARIANTS = {
    "v4_layout": (
        {"sliding_window_pattern": 6, "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0},
        ["layer_types", "rope_parameters", "_sliding_window_pattern"],
    ),
    "window_past_prompt": ({"sliding_window": 64}, []),
    "linear_rope_full": (
        {
            "rope_parameters": {
                "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1000000.0},
                "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
            }
        },
        [],
    ),
    "query_pre_attn_scalar_64": ({"query_pre_attn_scalar": 64}, []),
    "v4_pattern2_linear": (
        {
            "sliding_window_pattern": 2,
            "rope_theta": 1000000.0,
            "rope_local_base_freq": 10000.0,
            "rope_scaling": {"rope_type": "linear", "factor": 8.0},
        },
        ["layer_types", "rope_parameters", "_sliding_window_pattern"],
    ),
}


def run(model):
    ids, margins, first = mf.greedy(model, mf.PROMPT, mf.N_NEW)
    mf.check_full_forward(model, mf.PROMPT, ids, margins)
    return {
        "new_ids": ids,
        "top1_minus_top2_margin": margins,
        "first_step_logits": [round(float(x), 6) for x in first],
    }


def main():
    base_cfg = json.loads((FIX / "config.json").read_text())
    main_ref = json.loads((FIX / "reference.json").read_text())
    out = {"transformers": __import__("transformers").__version__, "variants": {}}
    for name, (set_keys, drop) in VARIANTS.items():
        cfg = dict(base_cfg)
        for k in drop:
            cfg.pop(k, None)
        cfg.update(set_keys)
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            for f in ["model.safetensors", "tokenizer.json", "tokenizer_config.json"]:
                shutil.copy(FIX / f, tmp / f)
            (tmp / "config.json").write_text(json.dumps(cfg))
            model = mf.load("gemma3", tmp)
            r = run(model)
            r["layer_types"] = model.config.layer_types
        same = r["new_ids"] == main_ref["new_ids"]
        if name == "v4_layout":
            assert same, "the 4.x layout must give the main reference"
        else:
            assert not same, f"{name}: the variant changes nothing"
        r["set"] = set_keys
        r["remove"] = drop
        out["variants"][name] = r
        print(name, r["new_ids"][:8], "layers", r["layer_types"])

    # The GGUF's weights: norms = stored value - 1 (exact in float32).
    import gguf

    reader = gguf.GGUFReader(str(FIX / main_ref["gguf"]))
    stored = {t.name: np.array(t.data) for t in reader.tensors}
    model = mf.load("gemma3", FIX)
    names = {
        "input_layernorm": "attn_norm",
        "post_attention_layernorm": "post_attention_norm",
        "pre_feedforward_layernorm": "ffn_norm",
        "post_feedforward_layernorm": "post_ffw_norm",
        "self_attn.q_norm": "attn_q_norm",
        "self_attn.k_norm": "attn_k_norm",
    }
    changed = 0
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if p.dim() != 1:
                continue
            if pname == "model.norm.weight":
                g = "output_norm.weight"
            else:
                parts = pname.split(".")
                layer = parts[2]
                mod = ".".join(parts[3:-1])
                g = f"blk.{layer}.{names[mod]}.weight"
            v = torch.from_numpy(stored[g].astype(np.float32)) - 1.0
            assert torch.equal(v + 1.0, torch.from_numpy(stored[g].astype(np.float32)))
            changed += int(not torch.equal(v, p.float()))
            p.copy_(v)
    assert changed > 0
    r = run(model)
    r["note"] = "norm weights as gemma3.gguf stores them ((1 + w) rounded to float16) minus 1"
    out["gguf"] = r
    print("gguf", r["new_ids"][:8], "same ids as the folder:", r["new_ids"] == main_ref["new_ids"])

    # transformers 5 does not tie an embedding and an lm_head.weight that the
    # file holds with different values, whatever tie_word_embeddings says:
    # tests/archs.rs relies on that (the fixture with the flag set must give
    # the main reference).
    cfg = dict(base_cfg, tie_word_embeddings=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for f in ["model.safetensors", "tokenizer.json", "tokenizer_config.json"]:
            shutil.copy(FIX / f, tmp / f)
        (tmp / "config.json").write_text(json.dumps(cfg))
        model = mf.load("gemma3", tmp)
        assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()
        ids, _, first = mf.greedy(model, mf.PROMPT, mf.N_NEW)
        assert ids == main_ref["new_ids"], "tie_word_embeddings with a distinct lm_head"
    out["tie_flag_with_distinct_lm_head_gives_main_reference"] = True
    (FIX / "variants.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
