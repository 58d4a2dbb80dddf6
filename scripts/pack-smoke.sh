#!/usr/bin/env bash
# Packs sluice the napi-rs way (the main package plus the per-platform package that carries the
# prebuilt addon), installs both tarballs into an empty directory, and runs a publish/subscribe
# round trip there. Needs a prior `npm run build`.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

node_file="$(ls "$root"/sluice.*.node | head -n1)"
platform="$(basename "$node_file" .node)"; platform="${platform#sluice.}"
cp "$node_file" "$root/sluice-helper" "$root/npm/$platform/"
(cd "$root/npm/$platform" && npm pack --silent --pack-destination "$work" >/dev/null)
rm -f "$root/npm/$platform/$(basename "$node_file")" "$root/npm/$platform/sluice-helper"
# --ignore-scripts: the build already ran; packing must not rebuild.
(cd "$root" && npm pack --silent --ignore-scripts --pack-destination "$work" >/dev/null)

mkdir "$work/app"
cd "$work/app"
npm init -y >/dev/null
npm install --no-audit --no-fund --silent "$work"/sluice-linux-*.tgz "$work"/sluice-0*.tgz
cat > smoke.mjs <<'JS'
import { Bus, Context, QueueFull } from 'sluice';
const bus = new Bus();
const got = [];
bus.subscribe('order.*', (e) => { got.push(e.data.id); });
await bus.publish('order.created', { id: 'a' }, { ctx: Context.background().withTimeout(1000) });
bus.stream('full', { capacity: 1, overflow: 'error' });
bus.tryPublish('full', 1);
let typed = false;
try { await bus.publish('full', 2); } catch (e) { typed = e instanceof QueueFull && e.code === 'ERR_QUEUE_FULL'; }
// The isolation helper ships beside the addon and locks itself down.
const ack = Buffer.from('AGFzbQEAAAABDAJgAX8Bf2ACf38BfwMDAgABBQMBAAEHKQMGbWVtb3J5AgAMc2x1aWNlX2FsbG9jAAANc2x1aWNlX2hhbmRsZQABCgwCBQBBgAgLBABBAAs=', 'base64');
const dep = await bus.deploy('iso', ack, { topics: ['iso.in'], isolation: 'process' });
const level = dep.info().sandboxLevel;
await dep.undeploy();
await bus.close();
if (got.join() !== 'a' || !typed || level !== 'wasm+ns+seccomp') { console.error('pack smoke failed', got, typed, level); process.exit(1); }
// Subpath exports resolve from the tarball (sluice/audit needs no optional peer).
const { auditSink } = await import('sluice/audit');
if (typeof auditSink !== 'function') { console.error('pack smoke failed: sluice/audit'); process.exit(1); }
console.log('pack smoke: ok (installed from tarballs, no build tools used)');
JS
node smoke.mjs
test ! -e node_modules/sluice/crates || { echo "Rust sources leaked into the tarball"; exit 1; }
