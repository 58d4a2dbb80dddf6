#!/usr/bin/env bash
# Builds the process-isolation helper (release, without the test-only escape probes) and puts
# it next to the addon, where `isolation: 'process'` looks for it.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
cargo build --release --manifest-path "$root/Cargo.toml" -p sluice-isolate --bin sluice-helper
install -m 0755 "$target/release/sluice-helper" "$root/sluice-helper"
