#!/usr/bin/env bash
# Installs what the test suite needs on a Debian 12 (bookworm) machine:
# Mesa 25 lavapipe (Vulkan on the CPU) and llvmpipe (GL/EGL) from bookworm-backports.
# Debian 12's own Mesa 22.3.6 lavapipe silently cuts shader loops after 65,535
# iterations, which turns kernels wrong without an error, so backports are required.
#
# Run it as root (`bash .ci/install-deps.sh`, e.g. in a container) or as a
# user with sudo (it re-runs itself through sudo).
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    exec sudo -E bash "$0" "$@"
  fi
  echo "install-deps.sh: needs root: run it as root, or install sudo" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-deps.sh: this script is for Debian 12 (apt-get not found); install Mesa's lavapipe (Vulkan) with your package manager" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
if ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
  # Same mirror as the machine's existing bookworm entry.
  mirror=$( (cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null || true) \
    | grep -E '^(URIs:|deb )' | grep -m1 -E 'debian/? *$|debian ' | sed -E 's/^URIs: *//; s/^deb +(\[[^]]*\] +)?//; s/ .*//' || true)
  mirror=${mirror:-http://deb.debian.org/debian}
  echo "deb ${mirror} bookworm-backports main" > /etc/apt/sources.list.d/bookworm-backports.list
fi
apt-get update -qq
apt-get install -y -qq -t bookworm-backports mesa-vulkan-drivers libegl-mesa0 libgl1-mesa-dri libgles2 libvulkan1 >/dev/null
# tests/serve.rs: curl and the `openai` Python package as real clients of
# `sramlm serve` (Debian's Python is externally managed: pip needs the flag).
apt-get install -y -qq curl python3 python3-pip >/dev/null
python3 -m pip install -q --break-system-packages openai
