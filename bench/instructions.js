// Instructions per event on the publish path, counted by valgrind's callgrind: unlike wall or CPU
// time this does not move with the load of a shared 2-core VM, so two commits can be compared
// on a busy machine. Each case runs in a fresh `node` twice under callgrind — with 0 and with N
// events after the same warm-up — and the difference divided by N is reported.
//
//   node bench/instructions.js [case …]      (needs `valgrind`; N = SLUICE_BENCH_IR_N, 100000)
//
// The same file is the child: `node bench/instructions.js --run <case> <n>`.
import { spawnSync } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { fileURLToPath } from 'node:url';

const self = fileURLToPath(import.meta.url);
const TYPE = 'order.created';
const OBJ = { id: 'o1', amount: 42 };

async function cases() {
  const { Bus } = await import('../dist/index.js');
  const bus = new Bus();
  // One subscriber that never drains: drop-oldest keeps the queue full, so every publish also
  // frees the event it displaces (the steady state of a consumer that keeps up, in allocations).
  bus.stream(TYPE, { capacity: 1 << 16, overflow: 'drop-oldest' });
  const bytes = new TextEncoder().encode(JSON.stringify(OBJ));
  const batch = Array.from({ length: 256 }, () => ({ type: TYPE, data: OBJ }));
  const packed = Array.from({ length: 256 }, () => ({ type: TYPE, data: bytes }));
  const ee = new EventEmitter();
  let sum = 0;
  ee.on(TYPE, (d) => (sum += d.amount));
  return {
    'node:events emit (peer)': (n) => {
      for (let i = 0; i < n; i++) ee.emit(TYPE, OBJ);
      return sum;
    },
    'JSON.stringify of the event data': (n) => {
      let len = 0;
      for (let i = 0; i < n; i++) len += JSON.stringify(OBJ).length;
      return len;
    },
    'sluice tryPublish(type, Uint8Array)': (n) => {
      for (let i = 0; i < n; i++) bus.tryPublish(TYPE, bytes);
    },
    'sluice tryPublish(type, object)': (n) => {
      for (let i = 0; i < n; i++) bus.tryPublish(TYPE, OBJ);
    },
    'sluice tryPublishBatch(256 objects)': (n) => {
      for (let i = 0; i < n / 256; i++) bus.tryPublishBatch(batch);
    },
    'sluice tryPublishBatch(256 Uint8Arrays)': (n) => {
      for (let i = 0; i < n / 256; i++) bus.tryPublishBatch(packed);
    },
  };
}

if (process.argv[2] === '--run') {
  const all = await cases();
  const run = all[process.argv[3]];
  run(25_600); // warm-up: the JIT has settled before the counted part in both runs
  run(Number(process.argv[4]));
  process.exit(0);
}

function instructions(name, n) {
  const r = spawnSync('valgrind', ['--tool=callgrind', '--callgrind-out-file=/dev/null', process.execPath, self, '--run', name, String(n)], {
    encoding: 'utf8',
  });
  const m = /I\s+refs:\s+([\d,]+)/.exec(r.stderr ?? '');
  if (r.error || !m) throw new Error(`callgrind failed for ${name}: ${r.error?.message ?? r.stderr?.slice(-400)}`);
  return Number(m[1].replaceAll(',', ''));
}

const N = Number(process.env.SLUICE_BENCH_IR_N ?? 102_400);
const names = Object.keys(await cases());
const chosen = process.argv.length > 2 ? process.argv.slice(2) : names;
console.log(`instructions per event (callgrind, N = ${N}), node ${process.version}`);
for (const name of chosen) {
  if (!names.includes(name)) throw new Error(`unknown case ${name}; cases: ${names.join(' | ')}`);
  const per = (instructions(name, N) - instructions(name, 0)) / N;
  console.log(`  ${name.padEnd(44)} ${per.toFixed(0).padStart(6)}`);
}
process.exit(0);
