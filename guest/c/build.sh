#!/usr/bin/env bash
# Builds the C SDK examples to guest/c/build/*.wasm with Debian's clang and lld (wasm-ld).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
command -v clang >/dev/null && command -v wasm-ld >/dev/null || {
  echo "guest/c: clang and lld are needed (apt-get install clang lld)" >&2
  exit 1
}
mkdir -p "$here/build"
for src in "$here"/examples/*.c; do
  name="$(basename "$src" .c)"
  clang --target=wasm32 -O2 -nostdlib -Wl,--no-entry -Wl,--export-dynamic \
    -I "$here" -o "$here/build/$name.wasm" "$src"
  echo "built guest/c/build/$name.wasm"
done
