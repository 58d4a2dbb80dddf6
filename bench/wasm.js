// WASM handler benchmarks, called from bench/run.js (`npm run bench`).
//
// Peers measured in the same run, one after the other in this process:
//   sluice   bus.deploy(<trivial handler>) on a topic, events published from JS with
//            tryPublishBatch / tryPublish; the handler runs in Wasmtime on a Rust worker thread.
//            Rate = events acked by the handler (dep.info().outcomes.ack) / time from the first
//            publish until the last published event is acked.
//   V8       the same module instantiated with WebAssembly.instantiate in this thread; per event
//            the pre-encoded envelope is copied into its memory and sluice_handle is called
//            (a best case: no isolation, no queue, no backpressure, no other thread). Also with
//            JSON.stringify of the data per event.
//   Extism   @extism/extism (JS SDK, if installed: it is not a dependency) with a hand-written
//            plugin (WAT below) that reads its input like the PDK does; `await plugin.call()` per
//            event. Skipped with a note when the package is missing.
// Plus publish → echo.wasm → emit → JS subscriber latency at half that path's saturating rate,
// and (SLUICE_BENCH_RUST=1) `cargo run --release -p sluice-sandbox --example bench` for compile,
// instantiate and per-limit figures.

import { readFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { Bus } from '../dist/index.js';
import { probeVcpus, fmtSlowdown } from './vcpu.js';
import { tryPublishAll } from './publish-all.js';

const TOPIC = 'bench.wasm';
const ENVELOPE_BYTES = 125; // the size the design's V8 anchor uses
const BATCH = 256;

const EXTISM_WAT = `(module
  ;; Extism kernel functions (JS SDK: CallContext[ENV]); the PDK reads its input the same way.
  (import "extism:host/env" "input_length" (func $input_length (result i64)))
  (import "extism:host/env" "input_load_u64" (func $input_load_u64 (param i64) (result i64)))
  (import "extism:host/env" "input_load_u8" (func $input_load_u8 (param i64) (result i32)))
  (memory (export "memory") 1)
  ;; Acks without reading its input: Extism's floor.
  (func (export "noop") (result i32) (i32.const 0))
  ;; The equivalent of sluice's trivial handler: the event bytes end up in guest memory (at 1024),
  ;; then it returns 0. Copies 8 bytes per host call, then the tail byte by byte.
  (func (export "handle") (result i32)
    (local $len i64) (local $i i64)
    (local.set $len (call $input_length))
    (block $done8 (loop $l8
      (br_if $done8 (i64.gt_u (i64.add (local.get $i) (i64.const 8)) (local.get $len)))
      (i64.store (i32.add (i32.const 1024) (i32.wrap_i64 (local.get $i))) (call $input_load_u64 (local.get $i)))
      (local.set $i (i64.add (local.get $i) (i64.const 8)))
      (br $l8)))
    (block $done1 (loop $l1
      (br_if $done1 (i64.ge_u (local.get $i) (local.get $len)))
      (i32.store8 (i32.add (i32.const 1024) (i32.wrap_i64 (local.get $i))) (call $input_load_u8 (local.get $i)))
      (local.set $i (i64.add (local.get $i) (i64.const 1)))
      (br $l1)))
    (i32.const 0)))`;

// ---------------------------------------------------------------------------------------------
// Envelope v1 (docs/abi.md), encoded in JS for the in-process peers.

const utf8 = new TextEncoder();

function encodeEnvelope({ id, type, source, data }) {
  const idB = utf8.encode(id);
  const typeB = utf8.encode(type);
  const srcB = utf8.encode(source);
  const dataB = typeof data === 'string' ? utf8.encode(data) : data;
  const len = 56 + idB.length + typeB.length + srcB.length + dataB.length;
  const out = new Uint8Array(len);
  const v = new DataView(out.buffer);
  out.set([0x53, 0x4c, 0x45, 0x56]); // "SLEV"
  v.setUint16(4, 1, true);
  v.setUint16(6, 56, true);
  v.setBigInt64(16, BigInt(Date.now()) * 1_000_000n, true);
  v.setUint32(32, idB.length, true);
  v.setUint32(36, typeB.length, true);
  v.setUint32(40, srcB.length, true);
  v.setUint32(52, dataB.length, true);
  let o = 56;
  for (const b of [idB, typeB, srcB, dataB]) {
    out.set(b, o);
    o += b.length;
  }
  return out;
}

/** Event data whose JSON makes an envelope of exactly `total` bytes with these fields. */
function paddedData(fields, total) {
  const fixed = 56 + utf8.encode(fields.id + fields.type + fields.source).length;
  const base = { id: 'o1', amount: 42, pad: '' };
  const need = total - fixed - JSON.stringify(base).length;
  if (need < 0) throw new Error('envelope too small for the data');
  return { ...base, pad: 'x'.repeat(need) };
}

// sluice's own ids look like `21d50a33358f-12345`; source 'sluice'.
const FIELDS = { id: '21d50a33358f-12345', type: TOPIC, source: 'sluice' };
const DATA = Object.freeze(paddedData(FIELDS, ENVELOPE_BYTES));
const ORDER_FIELDS = { id: '21d50a33358f-12345', type: 'order.created', source: 'sluice' };
const ORDER = Object.freeze(paddedData(ORDER_FIELDS, ENVELOPE_BYTES));

// ---------------------------------------------------------------------------------------------

export async function wasmBenches(h) {
  const { measure, immediate, latencyRun, fmtRate, fmtNs, root, rust, latMs } = h;
  const wabt = await (await import('wabt')).default();
  const trivialWat = readFileSync(join(root, 'crates/sandbox/tests/fixtures/trivial.wat'), 'utf8');
  const trivial = new Uint8Array(wabt.parseWat('trivial.wat', trivialWat).toBinary({}).buffer);
  const asDir = join(root, 'guest/assemblyscript/build');
  const fraud = readFileSync(join(asDir, 'fraud.wasm'));
  const echo = readFileSync(join(asDir, 'echo.wasm'));
  const out = { envelopeBytes: ENVELOPE_BYTES, sluice: {}, v8: {}, extism: {}, latency: undefined, rust: undefined };

  // ---- sluice: publish → deployed handler ------------------------------------------------

  async function sluiceCase(name, wasm, { topic = TOPIC, data = DATA, concurrency, mode, config, emits }) {
    const bus = new Bus({ capacity: 65536, overflow: 'block' });
    const dep = await bus.deploy(name.replace(/\W+/g, '-'), wasm, {
      topics: [topic],
      emits,
      concurrency,
      config,
      capacity: 65536,
      overflow: 'block',
    });
    const events = Array.from({ length: BATCH }, () => ({ type: topic, data }));
    let waits = 0;
    const acked = () => dep.info().outcomes.ack;
    const vcpuBefore = probeVcpus();
    const res = await measure('wasm', name, async (n) => {
      const base = acked();
      const t0 = process.hrtime.bigint();
      if (mode === 'batch') {
        for (let sent = 0; sent < n; ) {
          const k = Math.min(BATCH, n - sent);
          waits += await tryPublishAll(bus, k === BATCH ? events : events.slice(0, k), immediate);
          sent += k;
        }
      } else {
        for (let i = 0; i < n; i++) {
          while (!bus.tryPublish(topic, data)) {
            waits++;
            await immediate();
          }
        }
      }
      while (acked() - base < n) await immediate();
      return process.hrtime.bigint() - t0;
    }, { start: 4096, unit: mode === 'batch' ? BATCH : 1 });
    const vcpuAfter = probeVcpus();
    res.vcpuLoopMs = { before: vcpuBefore, after: vcpuAfter };
    const info = dep.info();
    res.deployment = {
      outcomes: info.outcomes,
      instances: info.instances,
      handlerLatencyUs: info.latencyUs,
      publisherWaits: waits,
    };
    const errs = Object.values(info.outcomes.errors).reduce((a, b) => a + b, 0);
    if (errs || info.outcomes.retry || info.outcomes.reject) {
      console.log(`    ! outcomes ${JSON.stringify(info.outcomes)} (should be all ack)`);
    }
    console.log(
      `    handler time in the guest p50 ${fmtNs(info.latencyUs.p50 * 1e3)}  p99 ${fmtNs(info.latencyUs.p99 * 1e3)}; instances ${info.instances.live}; publisher waited for room ${waits}×`,
    );
    // A vCPU the host slowed (bench/vcpu.js) paces the whole publisher → worker pipeline.
    console.log(`    vCPU loop time vs the run's fastest: ${fmtSlowdown(vcpuBefore)} before, ${fmtSlowdown(vcpuAfter)} after`);
    await dep.undeploy();
    await bus.close();
    return res;
  }

  console.log(`\nWASM: publish → trivial handler (crates/sandbox/tests/fixtures/trivial.wat) on Rust workers, events handled per second (≈${ENVELOPE_BYTES} B envelope)`);
  out.sluice.batch1 = await sluiceCase(`sluice tryPublishBatch(${BATCH}) → trivial.wasm, conc. 1`, trivial, { concurrency: 1, mode: 'batch' });
  out.sluice.batch2 = await sluiceCase(`sluice tryPublishBatch(${BATCH}) → trivial.wasm, conc. 2`, trivial, { concurrency: 2, mode: 'batch' });
  out.sluice.single1 = await sluiceCase('sluice tryPublish → trivial.wasm, conc. 1', trivial, { concurrency: 1, mode: 'single' });
  out.sluice.single2 = await sluiceCase('sluice tryPublish → trivial.wasm, conc. 2', trivial, { concurrency: 2, mode: 'single' });
  // The same data pre-encoded once, as the Extism and V8 "pre-encoded" peers receive their input.
  const preEncoded = utf8.encode(JSON.stringify(DATA));
  out.sluice.bytes1 = await sluiceCase('sluice tryPublish(Uint8Array, pre-encoded) → trivial.wasm, conc. 1', trivial, {
    concurrency: 1,
    mode: 'single',
    data: preEncoded,
  });
  out.sluice.bytes2 = await sluiceCase('sluice tryPublish(Uint8Array, pre-encoded) → trivial.wasm, conc. 2', trivial, {
    concurrency: 2,
    mode: 'single',
    data: preEncoded,
  });
  // Batches of those bytes: one packed buffer per call, no JSON.stringify on the publisher.
  out.sluice.packed1 = await sluiceCase(`sluice tryPublishBatch(${BATCH} pre-encoded Uint8Array) → trivial.wasm, conc. 1`, trivial, {
    concurrency: 1,
    mode: 'batch',
    data: preEncoded,
  });
  out.sluice.packed2 = await sluiceCase(`sluice tryPublishBatch(${BATCH} pre-encoded Uint8Array) → trivial.wasm, conc. 2`, trivial, {
    concurrency: 2,
    mode: 'batch',
    data: preEncoded,
  });
  console.log('\nWASM: publish → AssemblyScript fraud.wasm (parses the JSON amount; config "1000"; no emits at amount 42)');
  out.sluice.fraudBatch = await sluiceCase(`sluice tryPublishBatch(${BATCH}) → fraud.wasm (AS), conc. 2`, fraud, {
    topic: 'order.created',
    data: ORDER,
    concurrency: 2,
    mode: 'batch',
    config: '1000',
    emits: ['fraud.*'],
  });

  // ---- V8 in-process ---------------------------------------------------------------------

  console.log('\nWASM peers in this thread: V8 WebAssembly.instantiate, same modules, no isolation/queue/backpressure');
  async function v8Case(name, wasm, fields, { json = false, imports = {} } = {}) {
    const { instance } = await WebAssembly.instantiate(wasm, imports);
    const ex = instance.exports;
    if (ex.sluice_init) ex.sluice_init();
    const data = fields.type === TOPIC ? DATA : ORDER;
    const env = encodeEnvelope({ ...fields, data: JSON.stringify(data) });
    if (env.length !== ENVELOPE_BYTES) throw new Error(`envelope is ${env.length} bytes`);
    const header = env.subarray(0, env.length - JSON.stringify(data).length);
    let mem = new Uint8Array(ex.memory.buffer);
    let acks = 0;
    const res = await measure('wasm-peer', name, (n) => {
      const t0 = process.hrtime.bigint();
      if (!json) {
        for (let i = 0; i < n; i++) {
          const ptr = ex.sluice_alloc(ENVELOPE_BYTES);
          if (mem.buffer !== ex.memory.buffer) mem = new Uint8Array(ex.memory.buffer);
          mem.set(env, ptr);
          if (ex.sluice_handle(ptr, ENVELOPE_BYTES) === 0) acks++;
        }
      } else {
        // Encode per event: the header is fixed, the data is JSON.stringify'd into guest memory.
        for (let i = 0; i < n; i++) {
          const ptr = ex.sluice_alloc(ENVELOPE_BYTES + 64);
          if (mem.buffer !== ex.memory.buffer) mem = new Uint8Array(ex.memory.buffer);
          mem.set(header, ptr);
          const { written } = utf8.encodeInto(JSON.stringify(data), mem.subarray(ptr + header.length, ptr + ENVELOPE_BYTES + 64));
          mem[ptr + 52] = written & 0xff;
          mem[ptr + 53] = written >> 8;
          if (ex.sluice_handle(ptr, header.length + written) === 0) acks++;
        }
      }
      return process.hrtime.bigint() - t0;
    }, { start: 100_000 });
    if (acks === 0) throw new Error(`${name}: the handler never acked`);
    return res;
  }
  // The AssemblyScript modules import host functions: no-ops here (deadline_ms says 50 ms left).
  const noops = {
    sluice: {
      emit: () => 0,
      log: () => {},
      deadline_ms: () => 50n,
      config_len: () => 0,
      config_read: () => 0,
    },
  };
  out.v8.trivial = await v8Case('V8 in-process: trivial.wasm, pre-encoded 125 B event', trivial, FIELDS);
  out.v8.trivialJson = await v8Case('V8 in-process: trivial.wasm, JSON.stringify per event', trivial, FIELDS, { json: true });
  out.v8.fraud = await v8Case('V8 in-process: fraud.wasm (AS), pre-encoded 125 B event', fraud, ORDER_FIELDS, { imports: noops });

  // ---- Extism JS SDK ---------------------------------------------------------------------

  let extism;
  try {
    extism = await import('@extism/extism');
  } catch {
    extism = undefined;
  }
  if (!extism) {
    console.log('\nExtism: @extism/extism is not installed (not a dependency): `npm install --no-save @extism/extism@1.0.3` to measure it');
    out.extism = { skipped: 'not installed' };
  } else {
    let version;
    try {
      version = JSON.parse(readFileSync(join(root, 'node_modules/@extism/extism/package.json'), 'utf8')).version;
    } catch {}
    console.log(`\nExtism JS SDK ${version ?? '?'}: hand-written WAT plugin, \`await plugin.call()\` per event, 125 B input (foreground, no WASI)`);
    const bytes = new Uint8Array(wabt.parseWat('extism.wat', EXTISM_WAT).toBinary({}).buffer);
    const plugin = await extism.createPlugin({ wasm: [{ data: bytes }] }, { useWasi: false, runInWorker: false });
    const input = encodeEnvelope({ ...FIELDS, data: JSON.stringify(DATA) });
    // Check once that `handle` really copies its input into guest memory.
    await plugin.call('handle', input);
    const inst = await plugin.getInstance();
    const copied = new Uint8Array(inst.exports.memory.buffer, 1024, input.length);
    if (!copied.every((b, i) => b === input[i])) throw new Error('extism plugin did not copy its input');
    for (const [key, fn, what] of [
      ['handle', 'handle', 'reads its 125 B input (equivalent)'],
      ['noop', 'noop', 'ignores its input (floor)'],
    ]) {
      out.extism[key] = await measure('wasm-peer', `Extism plugin.call → ${what}`, async (n) => {
        const t0 = process.hrtime.bigint();
        for (let i = 0; i < n; i++) await plugin.call(fn, input);
        return process.hrtime.bigint() - t0;
      }, { start: 10_000 });
    }
    out.extism.version = version;
    await plugin.close();
  }

  // ---- latency: publish → echo.wasm → emit → JS subscriber -------------------------------

  {
    const bus = new Bus({ capacity: 65536, overflow: 'block' });
    const dep = await bus.deploy('echo', echo, { topics: ['lat.in'], emits: ['echo.*'], concurrency: 1 });
    console.log('\nWASM round trip: tryPublish → echo.wasm (AS, re-emits the data on echo.in) → JS sync subscriber');
    let got = 0;
    const sub = bus.subscribe('echo.in', () => {
      got++;
    }, { capacity: 65536, overflow: 'block' });
    const sat = await measure('wasm', 'sluice tryPublish → echo.wasm → emit → JS handler', async (n) => {
      const base = got;
      let sent = 0;
      const t0 = process.hrtime.bigint();
      while (sent < n) {
        if (sent - (got - base) >= 8192) {
          await immediate();
          continue;
        }
        const stop = Math.min(n, sent + 1024);
        for (; sent < stop; sent++) while (!bus.tryPublish('lat.in', DATA)) await immediate();
      }
      while (got - base < n) await immediate();
      return process.hrtime.bigint() - t0;
    }, { start: 4096 });
    sub.unsubscribe();
    const rate = Math.max(1000, Math.round(sat.median / 2));
    const lat = await latencyRun('sluice tryPublish → echo.wasm → JS handler', rate, latMs, (stamp) => bus.tryPublish('lat.in', { t: stamp }), (record) => {
      const s = bus.subscribe('echo.in', (e) => record(e.data.t), { capacity: 65536, overflow: 'block' });
      return async () => s.unsubscribe();
    });
    // The same at fixed low rates: the wake-up path (JS → worker → JS) without a backlog.
    const fixed = [];
    for (const r of [1000, 10_000]) {
      if (r >= rate) continue;
      fixed.push(
        await latencyRun('sluice tryPublish → echo.wasm → JS (fixed rate)', r, Math.min(latMs, 1000), (stamp) => bus.tryPublish('lat.in', { t: stamp }), (record) => {
          const s = bus.subscribe('echo.in', (e) => record(e.data.t), { capacity: 65536, overflow: 'block' });
          return async () => s.unsubscribe();
        }),
      );
    }
    const info = dep.info();
    lat.deployment = { outcomes: info.outcomes, emitsPublished: info.emitsPublished, handlerLatencyUs: info.latencyUs };
    console.log(`    echo.wasm in the guest: p50 ${fmtNs(info.latencyUs.p50 * 1e3)}  p99 ${fmtNs(info.latencyUs.p99 * 1e3)}; emits published ${info.emitsPublished}`);
    out.latency = { saturating: sat, atHalf: lat, fixed };
    await dep.undeploy();
    await bus.close();
  }

  // ---- Rust: compile, instantiate, limits ------------------------------------------------

  if (rust) {
    console.log('\n$ cargo run --release -p sluice-sandbox --example bench');
    const t0 = Date.now();
    const r = spawnSync('cargo', ['run', '--release', '-p', 'sluice-sandbox', '--example', 'bench'], {
      cwd: root,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: 15 * 60_000,
    });
    process.stdout.write(r.stdout ?? '');
    if (r.status !== 0) {
      process.stdout.write((r.stderr ?? '').split('\n').slice(-20).join('\n') + '\n');
      console.log(`  (sandbox bench failed: status ${r.status}${r.error ? `, ${r.error.message}` : ''})`);
    }
    out.rust = { status: r.status, seconds: (Date.now() - t0) / 1000, stdout: r.stdout ?? '' };
  }

  // ---- summary rows ----------------------------------------------------------------------

  const best = [out.sluice.batch1, out.sluice.batch2].reduce((a, b) => (b.median > a.median ? b : a));
  const bestSingle = [out.sluice.single1, out.sluice.single2].reduce((a, b) => (b.median > a.median ? b : a));
  const bestBytes = [out.sluice.bytes1, out.sluice.bytes2].reduce((a, b) => (b.median > a.median ? b : a));
  const bestPacked = [out.sluice.packed1, out.sluice.packed2].reduce((a, b) => (b.median > a.median ? b : a));
  const ratios = [
    [`sluice → trivial.wasm (best batched) / V8 in-process pre-encoded`, best.median / out.v8.trivial.median],
    [`sluice → trivial.wasm (best batched) / V8 in-process + JSON.stringify`, best.median / out.v8.trivialJson.median],
    [`sluice → trivial.wasm (best single) / V8 in-process + JSON.stringify`, bestSingle.median / out.v8.trivialJson.median],
    [`sluice → trivial.wasm (best single, pre-encoded bytes) / V8 in-process pre-encoded`, bestBytes.median / out.v8.trivial.median],
    [`sluice → trivial.wasm (best batched, pre-encoded bytes) / V8 in-process pre-encoded`, bestPacked.median / out.v8.trivial.median],
    [`sluice → fraud.wasm (batched) / V8 in-process fraud.wasm`, out.sluice.fraudBatch.median / out.v8.fraud.median],
  ];
  const top = [best, bestBytes, bestPacked].reduce((a, b) => (b.median > a.median ? b : a));
  const targets = [['publish → trivial WASM ≥ 5 M events/s', `${fmtRate(top.median)} (${top.name})`, top.median >= 5e6]];
  if (out.extism.handle) {
    const eq = out.extism.handle.median;
    const floor = out.extism.noop.median;
    ratios.push([`sluice → trivial.wasm (best batched) / Extism plugin.call (reads input)`, best.median / eq]);
    ratios.push([`sluice → trivial.wasm (best batched) / Extism plugin.call (noop)`, best.median / floor]);
    ratios.push([`sluice → trivial.wasm (best single) / Extism plugin.call (reads input)`, bestSingle.median / eq]);
    ratios.push([`sluice → trivial.wasm (best single, pre-encoded bytes) / Extism plugin.call (reads input)`, bestBytes.median / eq]);
    ratios.push([`sluice → trivial.wasm (best batched, pre-encoded bytes) / Extism plugin.call (reads input)`, bestPacked.median / eq]);
    targets.push([
      'publish → trivial WASM ≥ 10× Extism plugin.call',
      `${(top.median / eq).toFixed(2)}× (vs noop plugin ${(top.median / floor).toFixed(2)}×)`,
      top.median >= 10 * eq,
    ]);
  } else {
    targets.push(['publish → trivial WASM ≥ 10× Extism plugin.call', 'not measured (@extism/extism not installed)', false]);
  }
  out.ratios = ratios;
  out.targets = targets;
  return out;
}
