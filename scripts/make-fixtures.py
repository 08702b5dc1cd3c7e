#!/usr/bin/env python3
"""Builds the tiny random-weight checkpoints that tests/rope_configs.rs checks
sramlm against, with Hugging Face transformers as the reference.

For every case in CASES it:
  1. builds a random-weight model with transformers (float32, weights scaled up
     so greedy choices are well separated), saves it as a safetensors folder
     (float16 weights: half the bytes; the reference is computed from the
     saved weights) with a copy of models/stories260K's tokenizer;
  2. writes `config.v4.json` next to `config.json`: the same settings in the
     transformers 4.x layout (`rope_theta` + `rope_scaling`), and checks that
     transformers reads both layouts to the same model;
  3. records transformers' float32 greedy ids for a fixed prompt of ids (KV
     cache, as `generate` runs it, cross-checked against `generate`), the
     top-1/top-2 logit margin of every step and the full first-step logits,
     in `reference.json`; for RoPE cases also the ids plain RoPE would give,
     to show the scaling changes the result;
  4. converts the folder to GGUF with llama.cpp's convert_hf_to_gguf.py.

llama.cpp's source ships in the PyPI sdist of llama-cpp-python:
    pip download --no-binary :all: --no-deps llama-cpp-python -d /tmp/lcp
    tar xzf /tmp/lcp/llama_cpp_python-*.tar.gz   (vendor/llama.cpp)

Usage (a Python with torch, transformers 5, safetensors):
    python scripts/make-fixtures.py --llama-cpp PATH/vendor/llama.cpp [--only NAME ...]
(or LLAMA_CPP=PATH). Output: tests/fixtures/<group>/<name>/.

To add an architecture: add an entry to ARCHS (model class, config class,
base config) and cases with `arch=` naming it.
"""

import argparse
import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
TOKENIZER_SRC = ROOT / "models" / "stories260K"
TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json"]

# The prompt every case runs (ids of the stories260K vocabulary, 512 tokens).
PROMPT = [1, 403, 407, 261, 378, 288, 395, 283]
N_NEW = 40


def llama_archs():
    from transformers import LlamaConfig, LlamaForCausalLM

    return {
        "cls": LlamaForCausalLM,
        "config_cls": LlamaConfig,
        "base": dict(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            vocab_size=512,
            max_position_embeddings=64,
            rms_norm_eps=1e-5,
            tie_word_embeddings=True,
            bos_token_id=1,
            eos_token_id=2,
            hidden_act="silu",
        ),
    }


def _like_llama(config_cls, model_cls, **extra):
    """An architecture sharing the Llama base config (plus `extra`)."""

    def f():
        import transformers

        base = dict(llama_archs()["base"])
        base.update(extra)
        return {
            "cls": getattr(transformers, model_cls),
            "config_cls": getattr(transformers, config_cls),
            "base": base,
        }

    return f


def gemma3_archs():
    """Gemma 3 text: 6 layers in transformers' default pattern (5 sliding,
    1 full: the pattern llama.cpp's gemma3 graph assumes, as the GGUF
    carries no per-layer list), window 4, RoPE bases 10000 / 1e6."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    base = dict(llama_archs()["base"])
    base.pop("hidden_act")
    base.update(
        intermediate_size=96,
        num_hidden_layers=6,
        hidden_activation="gelu_pytorch_tanh",
        query_pre_attn_scalar=16,
        sliding_window=4,
        rms_norm_eps=1e-6,
        # Tied, the scaled input embedding dominates and every step repeats
        # the last token; an lm_head of its own gives separated varied picks.
        tie_word_embeddings=False,
        pad_token_id=0,
    )
    return {"cls": Gemma3ForCausalLM, "config_cls": Gemma3TextConfig, "base": base}


# name -> () -> {"cls", "config_cls", "base"}.
ARCHS = {
    "llama": llama_archs,
    "qwen2": _like_llama("Qwen2Config", "Qwen2ForCausalLM"),
    "mistral": _like_llama("MistralConfig", "MistralForCausalLM"),
    "qwen3": _like_llama("Qwen3Config", "Qwen3ForCausalLM"),
    "gemma3": gemma3_archs,
}


@dataclass
class Case:
    """One checkpoint: `config` overrides the architecture's base config."""

    name: str
    group: str
    arch: str
    config: dict
    # transformers 4.x layout of the same RoPE settings (None: same as 5.x minus
    # rope_parameters, i.e. plain `rope_theta`).
    v4_rope: dict | None = None
    gguf: bool = True
    # Why there is no GGUF (when gguf is False).
    gguf_note: str = ""
    seed: int = 0
    weight_gain: float = 3.0
    extra: dict = field(default_factory=dict)


def rope_case(name, params, v4_key="rope_type", gguf=True, gguf_note="", **cfg):
    """A Llama case whose RoPE settings are `params` (transformers 5.x
    `rope_parameters`); the 4.x variant puts `rope_theta` at the top level and
    the rest under `rope_scaling`, naming the type with `v4_key`."""
    theta = params.get("rope_theta", 10000.0)
    rest = {k: v for k, v in params.items() if k != "rope_theta"}
    v4 = {"rope_theta": theta}
    if rest.get("rope_type", "default") != "default":
        scaling = dict(rest)
        scaling[v4_key] = scaling.pop("rope_type")
        v4["rope_scaling"] = scaling
    else:
        v4["rope_scaling"] = None
    return Case(
        name=name,
        group="rope",
        arch="llama",
        config=dict(rope_parameters=params, **cfg),
        v4_rope=v4,
        gguf=gguf,
        gguf_note=gguf_note,
    )


CASES = [
    rope_case("default", {"rope_type": "default", "rope_theta": 500.0}),
    rope_case("linear", {"rope_type": "linear", "rope_theta": 10000.0, "factor": 4.0}, v4_key="type"),
    rope_case(
        "dynamic",
        {"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 4.0},
        max_position_embeddings=16,
        gguf=False,
        gguf_note="convert_hf_to_gguf.py drops dynamic NTK scaling for Llama (llama.cpp has no such RoPE)",
    ),
    rope_case(
        "llama3",
        {
            "rope_type": "llama3",
            "rope_theta": 10000.0,
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 16,
        },
    ),
    rope_case(
        "yarn",
        {
            "rope_type": "yarn",
            "rope_theta": 10000.0,
            "factor": 4.0,
            "original_max_position_embeddings": 16,
        },
    ),
    # Architectures (tests/archs.rs): group "archs", no 4.x RoPE layout.
    Case(name="llama-bias", group="archs", arch="llama", config=dict(attention_bias=True, mlp_bias=True)),
    Case(name="qwen2", group="archs", arch="qwen2", config=dict()),
    # Window 4 < prompt (8) + generation (40): every step past position 3
    # drops keys (the prompt's own last tokens already see only 4).
    Case(name="mistral", group="archs", arch="mistral", config=dict(sliding_window=4)),
    # head_dim 24 given explicitly: q is 4 x 24 = 96 wide, hidden 64.
    Case(name="qwen3", group="archs", arch="qwen3", config=dict(head_dim=24)),
    # Not run by sramlm yet (refused; tests/archs.rs): the reference for when it is.
    Case(name="gemma3", group="archs", arch="gemma3", config=dict()),
]


def build_model(case):
    arch = ARCHS[case.arch]()
    cfg = dict(arch["base"])
    cfg.update(case.config)
    config = arch["config_cls"](**cfg)
    config._attn_implementation = "eager"
    torch.manual_seed(case.seed)
    model = arch["cls"](config).float().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias"):  # attention / MLP biases
                p.copy_(0.5 * torch.randn_like(p))
            elif p.dim() == 1 and case.arch == "gemma3":  # Gemma: scale (1 + w)
                p.copy_(0.1 * torch.randn_like(p))
            elif p.dim() == 1:  # norm weights
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif "embed" in name and case.arch == "gemma3":
                # Gemma scales embeddings by sqrt(hidden) = 8: keep the
                # residual from being only the input token's embedding.
                p.copy_(0.3 * torch.randn_like(p))
            elif "embed" in name:
                p.copy_(torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) * case.weight_gain / p.shape[1] ** 0.5)
    return model


def load(arch_name, folder):
    arch = ARCHS[arch_name]()
    m = arch["cls"].from_pretrained(folder, dtype=torch.float32, attn_implementation="eager")
    return m.eval()


def greedy(model, prompt, n_new):
    """Greedy decoding with the KV cache (one forward for the prompt, then one
    per token, as `generate` does): ids, top1-top2 margins, first logits."""
    ids, margins = [], []
    with torch.no_grad():
        out = model(torch.tensor([prompt]), use_cache=True)
        first = out.logits[0, -1].clone()
        past = out.past_key_values
        logits = first
        for _ in range(n_new):
            top = torch.topk(logits, 2)
            nxt = int(top.indices[0])
            ids.append(nxt)
            margins.append(float(top.values[0] - top.values[1]))
            out = model(torch.tensor([[nxt]]), past_key_values=past, use_cache=True)
            past = out.past_key_values
            logits = out.logits[0, -1]
    return ids, margins, first


def check_generate(model, prompt, ids):
    with torch.no_grad():
        g = model.generate(
            torch.tensor([prompt]),
            max_new_tokens=len(ids),
            min_new_tokens=len(ids),
            do_sample=False,
            eos_token_id=None,
            pad_token_id=0,
        )
    got = g[0, len(prompt):].tolist()
    assert got == ids, f"generate disagrees with the cached loop: {got} vs {ids}"


def check_full_forward(model, prompt, ids, margins):
    """The cached loop against one full causal forward (no cache) over the
    prompt and the generated ids: the same picks wherever the margin is
    clear, logits within 1e-4. For sliding-window models this pins the
    window semantics of the mask (`kv_idx > q_idx - sliding_window`) and
    of the cache to each other."""
    with torch.no_grad():
        full = model(torch.tensor([prompt + ids[:-1]]), use_cache=False).logits[0]
    n = len(prompt)
    for i, (want, m) in enumerate(zip(ids, margins)):
        got = int(torch.argmax(full[n - 1 + i]))
        assert m < 1e-3 or got == want, f"full forward picks {got} at step {i}, cached loop {want}"
    return full


def write_v4_config(folder, case):
    cfg = json.loads((folder / "config.json").read_text())
    cfg.pop("rope_parameters", None)
    cfg.update(copy.deepcopy(case.v4_rope))
    (folder / "config.v4.json").write_text(json.dumps(cfg, indent=2) + "\n")


# The fixtures borrow stories260K's Llama (sentencepiece-BPE) tokenizer,
# which Qwen2's GPT-2-style vocab reader refuses; for those archs the
# converter runs with llama's vocab reader (`_set_vocab_llama_hf`). Tensors
# and the other metadata are the converter's own.
_VOCAB_SHIM = """
import runpy, sys
sys.path.insert(0, sys.argv[1])
import conversion.qwen as q
q.Qwen2Model.set_vocab = lambda self: self._set_vocab_llama_hf()
import conversion.gemma as g
g.Gemma3Model.set_vocab = lambda self: self._set_vocab_llama_hf()
sys.argv = [sys.argv[1] + '/convert_hf_to_gguf.py'] + sys.argv[2:]
runpy.run_path(sys.argv[0], run_name='__main__')
"""


def convert_gguf(llama_cpp, folder, out, arch="llama"):
    env = dict(os.environ)
    env["PYTHONPATH"] = str(llama_cpp / "gguf-py") + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [
        sys.executable,
        *(["-c", _VOCAB_SHIM, str(llama_cpp)] if arch != "llama" and arch != "mistral" else [str(llama_cpp / "convert_hf_to_gguf.py")]),
        str(folder),
        "--outfile",
        str(out),
        "--outtype",
        "f16",
    ]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        sys.stderr.write(r.stdout[-4000:] + r.stderr[-4000:])
        raise SystemExit(f"convert_hf_to_gguf.py failed for {folder}")


def make(case, llama_cpp, out_root):
    import transformers

    folder = out_root / case.group / case.name
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    model = build_model(case)
    # float16 on disk; the reference runs in float32 from the saved weights.
    model.half().save_pretrained(folder, safe_serialization=True)
    for f in TOKENIZER_FILES:
        shutil.copy(TOKENIZER_SRC / f, folder / f)
    (folder / "generation_config.json").unlink(missing_ok=True)

    ref = load(case.arch, folder)
    ids, margins, first = greedy(ref, PROMPT, N_NEW)
    check_generate(ref, PROMPT, ids)
    full = check_full_forward(ref, PROMPT, ids, margins)
    assert (full[len(PROMPT) - 1] - first).abs().max() < 1e-4
    if ref.config.__dict__.get("sliding_window") and case.arch == "mistral":
        # The same weights with full attention must pick differently, or
        # the window would not be tested.
        cfg = json.loads((folder / "config.json").read_text())
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            for f in folder.iterdir():
                shutil.copy(f, tmp / f.name)
            cfg["sliding_window"] = None
            (tmp / "config.json").write_text(json.dumps(cfg))
            no_window_ids, no_window_margins, _ = greedy(load(case.arch, tmp), PROMPT, N_NEW)
        assert no_window_ids != ids, f"{case.name}: the sliding window changes nothing"

    out = {
        "name": case.name,
        "arch": case.arch,
        "prompt_ids": PROMPT,
        "new_ids": ids,
        "top1_minus_top2_margin": margins,
        "first_step_logits": [round(float(x), 6) for x in first],
        "config_overrides": case.config,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "dtype": "float32 compute, float16 weights on disk",
        "context_needed": len(PROMPT) + N_NEW,
    }
    if "no_window_ids" in locals():
        # What a runner without the window (the GGUF, see below) must give.
        out["new_ids_if_full_attention"] = no_window_ids
        out["margins_if_full_attention"] = no_window_margins

    if case.v4_rope is not None:
        write_v4_config(folder, case)
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            for f in folder.iterdir():
                if f.name not in ("config.json", "config.v4.json"):
                    shutil.copy(f, tmp / f.name)
            shutil.copy(folder / "config.v4.json", tmp / "config.json")
            v4 = load(case.arch, tmp)
            ids4, _, first4 = greedy(v4, PROMPT, N_NEW)
            assert ids4 == ids and torch.equal(first4, first), f"{case.name}: 4.x layout differs"
            # The same weights under plain RoPE with the same theta: the
            # scaling must change the ids, or the case would test nothing.
            cfg = json.loads((tmp / "config.json").read_text())
            cfg["rope_scaling"] = None
            (tmp / "config.json").write_text(json.dumps(cfg))
            plain_ids, _, _ = greedy(load(case.arch, tmp), PROMPT, N_NEW)
        out["new_ids_if_plain_rope"] = plain_ids
        rope_type = case.config.get("rope_parameters", {}).get("rope_type", "default")
        if rope_type != "default":
            assert plain_ids != ids, f"{case.name}: RoPE scaling does not change the ids"

    if case.gguf:
        convert_gguf(llama_cpp, folder, folder / f"{case.name}.gguf", case.arch)
        out["gguf"] = f"{case.name}.gguf"
    else:
        out["gguf"] = None
        out["gguf_note"] = case.gguf_note
    (folder / "reference.json").write_text(json.dumps(out, indent=1) + "\n")
    sizes = {f.name: f.stat().st_size for f in folder.iterdir()}
    print(f"{case.group}/{case.name}: ids {ids[:8]}..., min margin {min(margins):.4f}, files {sizes}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llama-cpp", default=os.environ.get("LLAMA_CPP"), help="llama.cpp checkout (vendor/llama.cpp of the llama-cpp-python sdist)")
    ap.add_argument("--out", default=str(ROOT / "tests" / "fixtures"))
    ap.add_argument("--only", nargs="*", help="case names to rebuild")
    a = ap.parse_args()
    if not a.llama_cpp:
        ap.error("give --llama-cpp PATH or set LLAMA_CPP")
    llama_cpp = Path(a.llama_cpp)
    if not (llama_cpp / "convert_hf_to_gguf.py").exists():
        ap.error(f"{llama_cpp} has no convert_hf_to_gguf.py")
    torch.set_num_threads(1)
    for case in CASES:
        if a.only and case.name not in a.only:
            continue
        make(case, llama_cpp, Path(a.out))


if __name__ == "__main__":
    main()
