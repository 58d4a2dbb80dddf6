#!/usr/bin/env bash
# Builds the process-isolation helper (release, without the test-only escape probes) and puts
# it next to the addon, where `isolation: 'process'` looks for it.
#
# It must reuse what `napi build --platform --release` (npm run build:native) just compiled,
# Wasmtime above all. Cargo reuses a compiled crate only for the same profile, target triple
# and feature set, and features are unified over the packages selected on the command line:
# built alone, sluice-isolate resolves some shared dependencies with fewer features than the
# addon does (napi turns on e.g. `rustc-hash/default`, `memchr/default`, `syn/extra-traits`),
# which changes their hashes and everything above them: Cranelift and Wasmtime compiled twice.
# So: the same triple as napi (explicit `--target`), and `-p sluice-node` in the selection so the
# features are resolved exactly as for the addon; `--bin` keeps the build to the helper alone.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
triple="$(rustc -vV | sed -n 's/^host: //p')"
cargo build --release --target "$triple" --manifest-path "$root/Cargo.toml" \
  -p sluice-node -p sluice-isolate --bin sluice-helper "$@"
install -m 0755 "$target/$triple/release/sluice-helper" "$root/sluice-helper"
