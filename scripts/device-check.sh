#!/usr/bin/env bash
# One script for a machine with an NVIDIA GPU (or any real GPU): builds,
# runs the parity tests on the NVIDIA Vulkan adapter, runs a short bench of
# both modes, and prints a short table last. Finishes well inside 10 minutes.
#
#   scripts/device-check.sh            # writes bench-out/ (JSON, SVG, logs)
#
# Adapter: SRAMLM_BACKEND (default vulkan) and SRAMLM_ADAPTER (default
# "nvidia"; set it empty to take the best adapter). The machine may have no
# network: the build runs `cargo --offline` (a warm ~/.cargo registry, or a
# vendored tree); without cargo, prebuilt binaries in target/release are used.
# SmolLM2 runs only where models/SmolLM2-135M-Instruct.Q4_1.gguf exists.
set -uo pipefail
cd "$(dirname "$0")/.."
export CI=1
export SRAMLM_BACKEND="${SRAMLM_BACKEND-vulkan}"
export SRAMLM_ADAPTER="${SRAMLM_ADAPTER-nvidia}"
OUT=${OUT:-bench-out}
mkdir -p "$OUT"
start=$(date +%s)
status=()
step() { # name, timeout seconds, command...
  local name=$1 limit=$2; shift 2
  local t0=$(date +%s)
  if timeout "$limit" "$@" >"$OUT/$name.log" 2>&1; then r=ok; else r="FAILED($?)"; fi
  status+=("$(printf '%-22s %-10s %4ss' "$name" "$r" $(( $(date +%s) - t0 )))")
  tail -n 3 "$OUT/$name.log"
}
BIN=target/release/sramlm
if command -v cargo >/dev/null; then
  step build 420 cargo build --release --offline --bins --tests
fi
[ -x "$BIN" ] || { echo "no $BIN: build failed and no prebuilt binary"; exit 1; }
"$BIN" info | tee "$OUT/info.txt"
test_exe() { # the newest test binary of a test target
  ls -t target/release/deps/"$1"-* 2>/dev/null | grep -v '\.d$' | head -1
}
run_test() { # name, timeout (the GL variants are for CI's llvmpipe: skipped here)
  local exe; exe=$(test_exe "$1")
  if [ -z "$exe" ]; then status+=("$(printf '%-22s %-10s' "$1" 'NO-BINARY')"); return; fi
  step "$1" "$2" "$exe" --nocapture --skip gl
}
run_test vram_parity 120
run_test sram_parity 180
GGUF=models/SmolLM2-135M-Instruct.Q4_1.gguf
if [ -f "$GGUF" ]; then run_test smollm2_parity 300; fi
step bench_stories 120 "$BIN" bench --chip mini-64k --repeat 3 --json "$OUT/stories260K.json" --svg "$OUT/stories260K.svg"
if [ -f "$GGUF" ]; then
  step bench_smollm2 180 "$BIN" bench -m "$GGUF" --chip mini-4m --gen 64 --repeat 3 --json "$OUT/smollm2.json" --svg "$OUT/smollm2.svg"
fi
echo
echo "== sramlm device check: $("$BIN" info --format json | python3 -c 'import json,sys; a=[x for x in json.load(sys.stdin)["adapters"] if x["picked"]]; print(a[0]["name"], a[0]["backend"], a[0]["driver"], a[0]["driver_info"]) if a else print("?")' 2>/dev/null) =="
for s in "${status[@]}"; do echo "$s"; done
for f in "$OUT"/bench_*.log; do [ -f "$f" ] && sed -n '/model · mode/,/^reference/p' "$f"; done
echo "total $(( $(date +%s) - start ))s; outputs in $OUT/"
