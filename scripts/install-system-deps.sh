#!/usr/bin/env bash
# Debian packages the build and tests need beyond the machine image (Node, npm, Rust, gcc).
# Idempotent: installs only what is missing.
set -euo pipefail
need=()
for pkg in "$@"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi
command -v node >/dev/null || { echo "node is required (Node.js >= 20.3)"; exit 1; }
command -v cargo >/dev/null || { echo "cargo is required (Rust >= 1.88)"; exit 1; }
