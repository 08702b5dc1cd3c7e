#!/usr/bin/env bash
# Builds llama.cpp's `llama-bench` with the Vulkan backend, statically linked
# against llama/ggml, so one file can be carried to a GPU machine that has no
# compiler (issue #16 point 4: llama.cpp-Vulkan's tg rate next to VRAM mode).
#
#   scripts/build-llama-vulkan.sh [OUT_DIR] [LLAMA_CPP_SRC]
#
# OUT_DIR        where llama-bench goes (default $HOME/.cache/sramlm/llama-vulkan;
#                keep it out of the repository)
# LLAMA_CPP_SRC  a llama.cpp source tree; default: vendor/llama.cpp of the
#                llama-cpp-python sdist ($LCP_VERSION, default 0.3.36), taken
#                from $LCP_SDIST if set, else fetched with `pip download`, and
#                unpacked under OUT_DIR/src.
#
# Needs cmake, a C++17 compiler, glslc and the Vulkan headers (Debian: cmake
# g++ glslc libvulkan-dev; spirv-headers if cmake asks). JOBS (default 2) sets
# the build parallelism; run it under `nice` on a shared machine.
# The product links only system libraries (libvulkan.so.1, libstdc++, libgomp,
# libc, libm); the CPU code is built without -march=native (GGML_NATIVE=OFF):
# ggml then assumes AVX2/FMA/F16C/BMI2, which any server x86-64 since ~2013 has.
set -euo pipefail
OUT_DIR=${1:-$HOME/.cache/sramlm/llama-vulkan}
SRC=${2:-}
LCP_VERSION=${LCP_VERSION:-0.3.36}
JOBS=${JOBS:-2}
mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
for t in cmake glslc c++; do
  command -v "$t" >/dev/null || { echo "build-llama-vulkan: $t not found (Debian: cmake glslc libvulkan-dev g++)" >&2; exit 1; }
done
if [ -z "$SRC" ]; then
  SRC="$OUT_DIR/src/llama_cpp_python-$LCP_VERSION/vendor/llama.cpp"
  if [ ! -f "$SRC/CMakeLists.txt" ]; then
    sdist=${LCP_SDIST:-}
    if [ -z "$sdist" ]; then
      mkdir -p "$OUT_DIR/dl"
      sdist="$OUT_DIR/dl/llama_cpp_python-$LCP_VERSION.tar.gz"
      [ -f "$sdist" ] || python3 -m pip download --no-binary :all: --no-deps \
        -d "$OUT_DIR/dl" "llama-cpp-python==$LCP_VERSION"
    fi
    mkdir -p "$OUT_DIR/src"
    tar -xzf "$sdist" -C "$OUT_DIR/src" "llama_cpp_python-$LCP_VERSION/vendor/llama.cpp"
  fi
fi
[ -f "$SRC/CMakeLists.txt" ] || { echo "build-llama-vulkan: no llama.cpp source at $SRC" >&2; exit 1; }
# Debian 12's Vulkan headers (1.3.239) predate VK_EXT_layer_settings, which
# ggml-vulkan uses only for the validation layer's options (GGML_VK_* debug
# settings): guard that block so older headers build it without them. The
# patch is idempotent and changes nothing when the headers have the extension.
VKCPP="$SRC/ggml/src/ggml-vulkan/ggml-vulkan.cpp"
if [ -f "$VKCPP" ] && ! grep -q 'sramlm: no VK_EXT_layer_settings' "$VKCPP"; then
  perl -0pi -e 's{(\n)(    VkBool32 enable_best_practice = layer_settings;\n.*?    vk::InstanceCreateInfo instance_create_info\(([^;]*?), &layer_setting_info\);\n)}{$1#ifdef VK_EXT_layer_settings\n$2#else // sramlm: no VK_EXT_layer_settings in these headers\n    vk::InstanceCreateInfo instance_create_info($3);\n#endif\n}s' "$VKCPP"
fi
BUILD="$OUT_DIR/build"
gen=()
command -v ninja >/dev/null && gen=(-G Ninja)
cmake -S "$SRC" -B "$BUILD" "${gen[@]}" \
  -DCMAKE_BUILD_TYPE=Release \
  -DBUILD_SHARED_LIBS=OFF \
  -DGGML_VULKAN=ON \
  -DGGML_NATIVE=OFF \
  -DGGML_BACKEND_DL=OFF \
  -DLLAMA_CURL=OFF \
  -DLLAMA_OPENSSL=OFF \
  -DLLAMA_BUILD_TESTS=OFF \
  -DLLAMA_BUILD_EXAMPLES=OFF \
  -DLLAMA_BUILD_SERVER=OFF \
  -DLLAMA_BUILD_TOOLS=ON
cmake --build "$BUILD" --target llama-bench -j "$JOBS"
cp "$BUILD/bin/llama-bench" "$OUT_DIR/llama-bench"
strip "$OUT_DIR/llama-bench" 2>/dev/null || true
echo "built $OUT_DIR/llama-bench ($(du -h "$OUT_DIR/llama-bench" | cut -f1)); ldd:"
ldd "$OUT_DIR/llama-bench" || true
