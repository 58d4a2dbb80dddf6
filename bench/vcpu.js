// How fast each vCPU runs a fixed loop right now. On these VMs a vCPU is at times slowed ~1.6×
// by the host, whatever this process does (the same loop pinned to one vCPU takes 33 ms at one
// moment and 52–55 ms a few seconds later, with nothing else running here). A pipeline across
// both vCPUs (publisher + WASM worker) runs at the pace of the slower one, so its rows come out
// bimodal; probing before and after each such case says which kind of moment it was measured in.

import { spawnSync } from 'node:child_process';
import os from 'node:os';

// ~20 ms of independent integer work when the vCPU is not slowed, three times; the child
// reports the fastest, so a burst of this process's own threads (JIT, GC) on that vCPU does not
// read as the host's slowdown, which lasts seconds. Timed inside the child: start-up does not count.
const LOOP = `
let best = Infinity, x = 0;
for (let r = 0; r < 3; r++) {
  let a = 0, b = 1, c = 2, d = 3;
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < 1e7; i++) { a = (a + i) | 0; b ^= i; c = (c + (i << 1)) | 0; d ^= i >>> 1; }
  best = Math.min(best, Number(process.hrtime.bigint() - t0) / 1e6);
  x ^= a ^ b ^ c ^ d;
}
process.stdout.write(String(best) + ' ' + (x & 1));
`;

const CPUS = Math.min(os.availableParallelism(), 8);
let fastest = Infinity;

/** ms for the loop pinned to each vCPU, or `undefined` where `taskset` is missing or fails. */
export function probeVcpus() {
  const out = [];
  for (let cpu = 0; cpu < CPUS; cpu++) {
    const r = spawnSync('taskset', ['-c', String(cpu), process.execPath, '-e', LOOP], { encoding: 'utf8' });
    const ms = r.status === 0 ? Number.parseFloat(r.stdout) : NaN;
    out.push(Number.isFinite(ms) ? ms : undefined);
    if (Number.isFinite(ms)) fastest = Math.min(fastest, ms);
  }
  return out;
}

/** Each vCPU's loop time against the fastest seen in this process: `1.00×/1.58×`. */
export function fmtSlowdown(ms) {
  return ms.map((m) => (m === undefined ? '?' : `${(m / fastest).toFixed(2)}×`)).join('/');
}
