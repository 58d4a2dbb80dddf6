// Sustained publish → trivial.wasm load for profiling and A/B runs (not part of `npm run bench`).
// One process, one deployment, SECS seconds of publishing, then the rate and each thread's CPU
// time per event (from /proc/self/task), which tells a publisher-bound run from a worker-bound
// one. Run it under `perf record -g` to see where the time goes.
//
//   node bench/wasm-load.js                 # MODE=packed CONC=1 SECS=3
//   MODE=single CONC=2 SECS=5 node bench/wasm-load.js
//
// MODE packed: tryPublishBatch of 256 pre-encoded Uint8Arrays; single: tryPublish(Uint8Array);
// json: tryPublishBatch of 256 objects; single-json: tryPublish(object). The queue is `block`, so a full queue makes the publisher
// yield (setImmediate) and retry rather than drop.
import { readFileSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Bus } from '../dist/index.js';
import { probeVcpus, fmtSlowdown } from './vcpu.js';
import { tryPublishAll } from './publish-all.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const wabt = await (await import('wabt')).default();
const wat = readFileSync(join(root, 'crates/sandbox/tests/fixtures/trivial.wat'), 'utf8');
const trivial = new Uint8Array(wabt.parseWat('trivial.wat', wat).toBinary({}).buffer);

const mode = process.env.MODE ?? 'packed';
const conc = Number(process.env.CONC ?? 1);
const secs = Number(process.env.SECS ?? 3);
if (!['packed', 'single', 'json', 'single-json'].includes(mode)) throw new Error(`MODE must be packed, single, json or single-json, not ${mode}`);

const DATA = { orderId: 'ord-000001', amount: 42, currency: 'EUR', customer: 'cus-1234', items: 3 };
const bytes = new TextEncoder().encode(JSON.stringify(DATA));
const bus = new Bus({ capacity: 65536, overflow: 'block' });
const dep = await bus.deploy('load', trivial, { topics: ['load.w'], concurrency: conc, capacity: 65536, overflow: 'block' });
const batch = Array.from({ length: 256 }, () => ({ type: 'load.w', data: mode === 'json' ? DATA : bytes }));
const turn = () => new Promise((r) => setImmediate(r));

const vcpuBefore = probeVcpus();
const t0 = performance.now();
let sent = 0;
while (performance.now() - t0 < secs * 1000) {
  if (mode === 'single' || mode === 'single-json') {
    const data = mode === 'single' ? bytes : DATA;
    for (let i = 0; i < 16384; i++) {
      while (!bus.tryPublish('load.w', data)) await turn();
      sent++;
    }
    continue;
  }
  for (let j = 0; j < 64; j++) {
    await tryPublishAll(bus, batch, turn);
    sent += batch.length;
  }
}
while (dep.info().outcomes.ack < sent) await turn();
const seconds = (performance.now() - t0) / 1000;
const vcpuAfter = probeVcpus();

// utime + stime of each thread, in clock ticks (100 per second on Linux).
const threads = [];
for (const tid of readdirSync('/proc/self/task')) {
  const stat = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
  const name = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(fields[11]) + Number(fields[12]);
  if (ticks > 10) threads.push(`${name} ${((ticks * 1e7) / sent).toFixed(0)} ns`);
}
const info = dep.info();
console.log(`${mode} conc. ${conc}: ${(sent / seconds / 1e6).toFixed(2)} M events/s over ${seconds.toFixed(1)} s`);
console.log(`  CPU per event by thread: ${threads.join(', ')}`);
console.log(`  vCPU loop time vs the fastest seen: ${fmtSlowdown(vcpuBefore)} before, ${fmtSlowdown(vcpuAfter)} after (bench/vcpu.js)`);
console.log(`  handler time p50 ${(info.latencyUs.p50 * 1e3).toFixed(0)} ns, p99 ${(info.latencyUs.p99 * 1e3).toFixed(0)} ns`);
await dep.undeploy();
await bus.close();
