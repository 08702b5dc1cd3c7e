#!/usr/bin/env bash
# One script for a machine with an NVIDIA GPU (or any real GPU): builds,
# runs the parity tests on the NVIDIA Vulkan adapter, benchmarks both modes,
# and prints a short table last. Finishes well inside 10 minutes.
#
#   scripts/device-check.sh [stories|smollm2|all]    # default: all
#
#   stories   parity tests on stories260K, its bench, the kernel benches
#             (matvec weight-streaming rate next to the copy kernel's)
#   smollm2   SmolLM2 parity tests and benches (needs the GGUF): both modes,
#             the plain (thread-per-row) matvec for comparison, and a
#             128-token prompt
#
# Adapter: SRAMLM_BACKEND (default vulkan) and SRAMLM_ADAPTER (default
# "nvidia"; set it empty to take the best adapter). The machine may have no
# network: the build runs `cargo --offline` (a warm ~/.cargo registry, or a
# vendored tree); without cargo, prebuilt binaries in target/release (and the
# test and bench executables in target/release/deps) are used.
# Results go to $OUT (default bench-out/): JSON and SVG per bench, and every
# log in logs.tgz.
#
# On a container whose NVIDIA driver is mounted in (as on the lent H100):
# install the Vulkan loader and glvnd (Debian libvulkan1 libegl1 libglvnd0
# libopengl0 libgl1 libglx0 libgles2; without glvnd the NVIDIA ICD fails with
# "Could not get 'vkCreateInstance'") and point the loader at the driver:
#   export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
# Prebuilt test binaries look for their fixtures under the path they were
# built in: link the checkout there if it differs.
#
# Optional llama.cpp comparison (issue #16 point 4): with LLAMA_BENCH set to a
# llama-bench built by scripts/build-llama-vulkan.sh, the smollm2 part runs it
# on the same GGUF right after sramlm's bench (Vulkan backend, all layers on
# the GPU, pp128 and tg64, 3 repetitions; JSON in $OUT/llama-bench-vulkan.json)
# and the final table puts its rates next to VRAM mode's. ggml-vulkan takes the
# discrete GPUs and skips CPU devices (lavapipe) by itself; set
# GGML_VK_VISIBLE_DEVICES=<index> to pick one (index as in --list-devices).
set -uo pipefail
cd "$(dirname "$0")/.."
what=${1:-all}
export CI=1
export SRAMLM_BACKEND="${SRAMLM_BACKEND-vulkan}"
export SRAMLM_ADAPTER="${SRAMLM_ADAPTER-nvidia}"
OUT=${OUT:-bench-out}
LOGS=$(mktemp -d)
mkdir -p "$OUT"
start=$(date +%s)
status=()
step() { # name, timeout seconds, command...
  local name=$1 limit=$2; shift 2
  local t0=$(date +%s)
  if timeout "$limit" "$@" >"$LOGS/$name.log" 2>&1; then r=ok; else r="FAILED($?)"; fi
  status+=("$(printf '%-24s %-10s %4ss' "$name" "$r" $(( $(date +%s) - t0 )))")
  tail -n 3 "$LOGS/$name.log"
}
BIN=target/release/sramlm
if command -v cargo >/dev/null; then
  step build 420 cargo build --release --offline --bins --tests
  step build_benches 300 cargo bench --offline --bench kernels --no-run
fi
[ -x "$BIN" ] || { echo "no $BIN: build failed and no prebuilt binary"; exit 1; }
"$BIN" info | tee "$LOGS/info.txt"
exe() { # the newest executable of a test or bench target
  ls -t target/release/deps/"$1"-* 2>/dev/null | grep -v '\.d$' | head -1
}
run_test() { # name, timeout (the GL variants are for CI's llvmpipe: skipped here)
  local e; e=$(exe "$1")
  if [ -z "$e" ]; then status+=("$(printf '%-24s %-10s' "$1" 'NO-BINARY')"); return; fi
  step "$1" "$2" "$e" --nocapture --skip gl
}
GGUF=models/SmolLM2-135M-Instruct.Q4_1.gguf
LLAMA_BENCH=${LLAMA_BENCH:-}
if [ "$what" != smollm2 ]; then
  run_test vram_parity 120
  run_test sram_parity 180
  step bench_stories 120 "$BIN" bench --chip mini-64k --repeat 3 \
    --json "$OUT/stories260K.json" --svg "$OUT/stories260K.svg"
  k=$(exe kernels)
  if [ -n "$k" ]; then
    # Matvec weight-streaming rates at SmolLM2 shapes next to the copy kernel.
    step kernels 240 "$k" --bench --warm-up-time 1 --measurement-time 2 \
      'matmul_decode/(Q4_1|Q8_0|F32)|copy'
  fi
fi
if [ "$what" != stories ] && [ -f "$GGUF" ]; then
  run_test smollm2_parity 300
  step bench_smollm2 180 "$BIN" bench -m "$GGUF" --chip mini-4m --gen 64 --repeat 3 \
    --json "$OUT/smollm2.json" --svg "$OUT/smollm2.svg"
  if [ -n "$LLAMA_BENCH" ]; then
    if [ -x "$LLAMA_BENCH" ]; then
      # The devices first (into the log), then the bench; JSON on stdout.
      step llama_bench_vulkan 150 sh -c '"$0" --list-devices; "$0" -m "$1" -ngl 99 -p 128 -n 64 -r 3 -o json >"$2"' \
        "$LLAMA_BENCH" "$GGUF" "$OUT/llama-bench-vulkan.json"
    else
      status+=("$(printf '%-24s %-10s' llama_bench_vulkan "NO-BINARY($LLAMA_BENCH)")")
    fi
  fi
  step bench_smollm2_plain 120 env SRAMLM_MATMUL=plain "$BIN" bench -m "$GGUF" --modes vram \
    --gen 64 --repeat 3 --json "$OUT/smollm2-plain.json"
  step bench_smollm2_p128 180 "$BIN" bench -m "$GGUF" --chip mini-4m --prompt-len 128 \
    --gen 32 --repeat 3 --json "$OUT/smollm2-p128.json"
fi
echo
echo "== sramlm device check: $("$BIN" info --format json | python3 -c 'import json,sys; a=[x for x in json.load(sys.stdin)["adapters"] if x["picked"]]; print(a[0]["name"], a[0]["backend"], a[0]["driver"], a[0]["driver_info"]) if a else print("?")' 2>/dev/null) =="
for s in "${status[@]}"; do echo "$s"; done
for f in "$LOGS"/bench_*.log; do [ -f "$f" ] && sed -n '/model · mode/,/^reference/p' "$f"; done
if [ -s "$OUT/llama-bench-vulkan.json" ]; then
  echo "-- SmolLM2 Q4_1: sramlm VRAM mode vs llama.cpp Vulkan (llama-bench), tok/s --"
  python3 - "$OUT/smollm2.json" "$OUT/smollm2-p128.json" "$OUT/llama-bench-vulkan.json" <<'PY' ||
import json, sys
def vram(path, key):
    try:
        return next(r["result"][key] for r in json.load(open(path)) if r["mode"].lower().startswith("vram"))
    except Exception:
        return None
fmt = lambda v: "-" if v is None else f"{v:,.1f}"
print(f"sramlm VRAM   tg {fmt(vram(sys.argv[1], 'decode_tok_s'))} (gen 64 after a 43-token prompt, median of 3)"
      f"   pp {fmt(vram(sys.argv[2], 'prefill_tok_s'))} (128-token prompt)")
for r in json.load(open(sys.argv[3])):
    kind = f"tg{r['n_gen']}" if r["n_gen"] else f"pp{r['n_prompt']}"
    print(f"llama.cpp     {kind:6} {r['avg_ts']:,.1f} ± {r['stddev_ts']:,.1f} (mean of {len(r.get('samples_ts', [])) or '?'};"
          f" {r.get('backends', '?')}, {r.get('gpu_info', '?')}, build {r.get('build_commit', '?')})")
PY
    grep -E '"(gpu_info|n_prompt|n_gen|avg_ts)"' "$OUT/llama-bench-vulkan.json"
fi
[ -f "$LOGS/kernels.log" ] && grep -E '^(matmul|copy)|thrpt' "$LOGS/kernels.log"
tar -czf "$OUT/logs-$what.tgz" -C "$LOGS" .
echo "total $(( $(date +%s) - start ))s; outputs in $OUT/"
