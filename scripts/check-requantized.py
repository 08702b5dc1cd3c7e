#!/usr/bin/env python3
"""Requantize a GGUF with llama.cpp's llama-quantize and check sramlm on it.

For each weight type asked for (default: Q4_K_M Q5_K_M Q6_K Q5_0):
  1. `llama-quantize --allow-requantize IN OUT TYPE` (llama.cpp builds it:
     cmake -B build && cmake --build build --target llama-quantize, from the
     `vendor/llama.cpp` of the llama-cpp-python sdist);
  2. the reference: Hugging Face transformers loads OUT with `gguf_file=`
     (gguf-py dequantizes every block to float32) and decodes greedily in
     float32 on the CPU, recording the top-1/top-2 margin of every step;
  3. `sramlm generate --temp 0 --ignore-eos --format json` in VRAM mode and in SRAM mode
     (default chip) on the same prompt ids;
  4. the parity rule of tests/fixtures: ids equal wherever the reference's
     margin is >= 1e-3 (stops comparing after the first allowed divergence).

The requantized files are written to --out (keep them out of git: they are
~100 MB). Prints one line per type and mode; exits 1 on any mismatch.
Developer script, not run by CI (needs torch, transformers, gguf and a
llama.cpp build).

  python scripts/check-requantized.py --quantize PATH/llama-quantize \\
      --model models/SmolLM2-135M-Instruct.Q4_1.gguf --out /tmp/requant
"""
import argparse
import json
import os
import subprocess
import sys

PROMPTS = [
    "Once upon a time",
    "The capital of France is",
    "def fibonacci(n):",
    "Photosynthesis is the process by which",
]
MARGIN = 1e-3


_LOADED = {}


def reference(path, prompt, n):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if path not in _LOADED:
        _LOADED.clear()
        d, f = os.path.split(os.path.abspath(path))
        tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
        model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32)
        model.eval()
        _LOADED[path] = (tok, model)
    tok, model = _LOADED[path]
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    out, margins = [], []
    with torch.no_grad():
        past = None
        x = torch.tensor([ids])
        for _ in range(n):
            r = model(input_ids=x, past_key_values=past, use_cache=True)
            past = r.past_key_values
            logits = r.logits[0, -1]
            top = torch.topk(logits, 2)
            out.append(int(top.indices[0]))
            margins.append(float(top.values[0] - top.values[1]))
            x = top.indices[:1].view(1, 1)
    return ids, out, margins


def sramlm(binary, path, prompt, n, mode):
    cmd = [binary, "generate", "-m", path, "--mode", mode, "--temp", "0", "-n", str(n),
           "--ignore-eos", "--format", "json", prompt]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if r.returncode != 0:
        return None, r.stderr.strip().splitlines()[-1:] or ["exit %d" % r.returncode]
    v = json.loads(r.stdout)
    return v["prompt_ids"], v["ids"]


def compare(ref, margins, got):
    for i, (a, b) in enumerate(zip(ref, got)):
        if a != b:
            return margins[i] < MARGIN, i
    return len(got) >= len(ref), len(got)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quantize", required=True, help="llama-quantize binary")
    ap.add_argument("--model", required=True, help="GGUF to requantize")
    ap.add_argument("--out", required=True, help="folder for the requantized files")
    ap.add_argument("--sramlm", default="target/release/sramlm")
    ap.add_argument("--types", nargs="+", default=["Q4_K_M", "Q5_K_M", "Q6_K", "Q5_0"])
    ap.add_argument("--modes", nargs="+", default=["vram", "sram"])
    ap.add_argument("-n", type=int, default=24)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    base = os.path.splitext(os.path.basename(a.model))[0].rsplit(".", 1)[0]
    ok = True
    for t in a.types:
        dst = os.path.join(a.out, f"{base}.{t}.gguf")
        if not os.path.exists(dst):
            subprocess.run([a.quantize, "--allow-requantize", a.model, dst, t], check=True,
                           capture_output=True)
        for p in PROMPTS:
            ids, ref, margins = reference(dst, p, a.n)
            for mode in a.modes:
                got_prompt, got = sramlm(a.sramlm, dst, p, a.n, mode)
                if got_prompt is None:
                    print(f"{t} {mode} {p!r}: FAILED to run: {got[0] if got else ''}")
                    ok = False
                    continue
                if got_prompt != ids:
                    print(f"{t} {mode} {p!r}: prompt ids differ from transformers' {ids} vs {got_prompt}")
                    ok = False
                    continue
                good, at = compare(ref, margins, got)
                state = "ok" if good else "MISMATCH"
                detail = (f"{len(got)} ids equal" if at == len(got) and good else
                          f"first difference at step {at} (reference margin {margins[at]:.2e})"
                          if at < len(ref) else f"{at} ids")
                print(f"{t} {mode} {p!r}: {state}, {detail}, smallest margin {min(margins):.2e}")
                ok &= good
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
