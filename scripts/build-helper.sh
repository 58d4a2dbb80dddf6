#!/usr/bin/env bash
# Builds the process-isolation helper (release, without the test-only escape probes) and puts
# it next to the addon, where `isolation: 'process'` looks for it. Built for the host triple
# explicitly, like `napi build`, so both share one set of compiled dependencies (Wasmtime).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
triple="$(rustc -vV | sed -n 's/^host: //p')"
cargo build --release --target "$triple" --manifest-path "$root/Cargo.toml" -p sluice-isolate --bin sluice-helper
install -m 0755 "$target/$triple/release/sluice-helper" "$root/sluice-helper"
