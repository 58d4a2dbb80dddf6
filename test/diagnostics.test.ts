import { describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Bus, Context, type TraceEvent } from '../src/index.js';
import { sleep, until } from './helpers.js';

const fraudWasm = fileURLToPath(new URL('../guest/assemblyscript/build/fraud.wasm', import.meta.url));

describe('bus.trace', () => {
  it('writes valid trace-event JSON with publish, dispatch and handler spans and queue-depth counters', async () => {
    const bus = new Bus();
    const file = join(mkdtempSync(join(tmpdir(), 'sluice-trace-')), 'trace.json');
    let handled = 0;
    bus.subscribe('order.created', async () => {
      await sleep(1);
      handled++;
    }, { name: 'orders', concurrency: 4 });
    await bus.deploy('fraud', fraudWasm, { topics: ['order.created'], emits: ['fraud.*'], config: '1000' });
    const stop = new AbortController();
    const tracing = bus.trace({ durationMs: 20_000, file, sampleMs: 5, signal: stop.signal });
    for (let i = 0; i < 40; i++) bus.tryPublish('order.created', { id: `o${i}`, amount: i * 100 });
    bus.tryPublish('nobody.listens', {});
    expect(await until(() => handled === 40 && bus.stats().deployments![0]!.outcomes.ack === 40, 15_000)).toBe(true);
    await sleep(20); // several queue-depth samples
    stop.abort();
    const summary = await tracing;
    const json = JSON.parse(readFileSync(file, 'utf8')) as { traceEvents: TraceEvent[] };
    expect(Array.isArray(json.traceEvents)).toBe(true);
    expect(summary.events).toBe(json.traceEvents.length);
    expect(summary.lost).toBe(0);
    for (const e of json.traceEvents) {
      expect(typeof e.name).toBe('string');
      expect(['X', 'b', 'e', 'i', 'C', 'M']).toContain(e.ph);
      expect(Number.isFinite(e.ts)).toBe(true);
      expect(e.pid).toBe(process.pid);
      expect(Number.isInteger(e.tid)).toBe(true);
      if (e.ph === 'X') expect(e.dur).toBeGreaterThanOrEqual(0);
      if (e.ph === 'b' || e.ph === 'e') expect(typeof e.id).toBe('string');
    }
    const named = (prefix: string, ph: string) => json.traceEvents.filter((e) => e.name.startsWith(prefix) && e.ph === ph);
    expect(named('publish order.created', 'X')).toHaveLength(40);
    // Two consumers of order.created (JS and WASM): a dispatch span each per event.
    expect(named('dispatch order.created', 'b')).toHaveLength(80);
    expect(named('dispatch order.created', 'e')).toHaveLength(80);
    const handles = named('handle order.created', 'b');
    expect(handles).toHaveLength(80);
    expect(new Set(handles.map((h) => h.args!.runtime))).toEqual(new Set(['js', 'wasm']));
    // Every async span closes, never before it opens.
    const open = new Map<string, number>();
    for (const e of json.traceEvents) {
      if (e.ph === 'b') open.set(e.id!, e.ts);
      if (e.ph === 'e') {
        expect(open.has(e.id!)).toBe(true);
        expect(e.ts).toBeGreaterThanOrEqual(open.get(e.id!)!);
        open.delete(e.id!);
      }
    }
    expect(open.size).toBe(0);
    const counters = json.traceEvents.filter((e) => e.ph === 'C');
    expect(counters.length).toBeGreaterThan(5);
    expect(Object.keys(counters[0]!.args!)).toContain('orders');
    expect(json.traceEvents.some((e) => e.ph === 'M' && e.name === 'thread_name' && e.args!.name === 'publish')).toBe(true);
    await bus.close();
  });
});

describe('bus.diagnose', () => {
  it('names a subscription storm created on purpose (subscribe per request, never unsubscribed)', async () => {
    const bus = new Bus();
    bus.subscribe('order.created', () => {});
    // The classic leak: every request subscribes to its reply topic and never unsubscribes.
    const request = () => bus.subscribe('rpc.reply', () => {}, { capacity: 8 }).unref();
    for (let i = 0; i < 300; i++) request();
    const diagnosing = bus.diagnose({ windowMs: 100 });
    for (let i = 0; i < 200; i++) request(); // still leaking while it watches
    const d = await diagnosing;
    expect(d.healthy).toBe(false);
    const storm = d.findings.find((f) => f.code === 'SUBSCRIPTION_STORM');
    expect(storm?.severity).toBe('critical');
    expect(storm?.subject).toBe('rpc.reply');
    expect(d.findings[0]!.code).toBe('SUBSCRIPTION_STORM');
    expect(d.subscriptions.growthPerSecond).toBeGreaterThan(0);
    expect(d.subscriptions.topPatterns[0]!.pattern).toBe('rpc.reply');
    expect(d.text).toMatch(/SUBSCRIPTION_STORM: subscription storm: \d+ live subscriptions, growing by \d+\/s, \d+ of them on 'rpc.reply'/);
    await bus.close();
  });

  it('names a full queue with publishers blocked behind it, and for how long', async () => {
    const bus = new Bus<{ 'job.run': number }>();
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    bus.subscribe('job.run', () => gate, { name: 'worker', capacity: 2, overflow: 'block' });
    const ctx = Context.background().withTimeout(10_000);
    bus.tryPublish('job.run', 0);
    bus.tryPublish('job.run', 1);
    await until(() => bus.stats().subscriptions[0]!.depth === 1); // 0 is in its handler
    expect(bus.tryPublish('job.run', 2)).toBe(true); // now the queue is full
    const blocked = bus.publish('job.run', 99, { ctx });
    await until(() => bus.stats().subscriptions[0]!.blockedPublishers > 0);
    await sleep(30);
    const d = await bus.diagnose({ windowMs: 50 });
    const full = d.findings.find((f) => f.code === 'QUEUE_FULL');
    const pub = d.findings.find((f) => f.code === 'PUBLISHERS_BLOCKED');
    expect(full?.subject).toBe('worker');
    expect(full?.severity).toBe('critical');
    expect(pub?.message).toMatch(/1 publisher\(s\) blocked on worker for \d+ ms/);
    expect(d.queues[0]!.blockedForMs).toBeGreaterThanOrEqual(50);
    expect(d.text).toContain('QUEUE_FULL');
    release();
    await blocked;
    await bus.close();
  });

  it('names the slowest handler and reports a healthy bus as healthy', async () => {
    const bus = new Bus();
    bus.subscribe('a.fast', () => {}, { name: 'fast' });
    bus.subscribe('a.slow', async () => sleep(15), { name: 'slow' });
    // (A loaded test machine may lag its event loop; that is not what this checks.)
    const idle = await bus.diagnose({ windowMs: 20, eventLoopLagMs: 5000 });
    expect(idle.findings.filter((f) => f.severity !== 'info')).toEqual([]);
    expect(idle.healthy).toBe(true);
    const run = setInterval(() => {
      bus.tryPublish('a.fast', 1);
      bus.tryPublish('a.slow', 1);
    }, 2);
    const d = await bus.diagnose({ windowMs: 150, slowHandlerMs: 10 });
    clearInterval(run);
    expect(d.handlers[0]!.name).toBe('slow');
    expect(d.handlers[0]!.runtime).toBe('js');
    expect(d.findings.find((f) => f.code === 'SLOW_HANDLER')?.subject).toBe('slow');
    expect(d.eventLoop.maxMs).toBeGreaterThanOrEqual(0);
    await bus.close();
  });
});

describe('bus.stats', () => {
  it('has per-deployment detail beside per-subscription counters', async () => {
    const bus = new Bus();
    const dep = await bus.deploy('fraud', fraudWasm, { topics: ['order.created'], emits: ['fraud.*'], config: '1000' });
    bus.tryPublish('order.created', { id: 'a', amount: 5000 });
    await until(() => (bus.stats().deployments?.[0]?.outcomes.ack ?? 0) === 1);
    const s = bus.stats();
    expect(s.deployments).toHaveLength(1);
    expect(s.deployments![0]!.name).toBe('fraud');
    expect(s.deployments![0]!.hash).toBe(dep.hash);
    expect(s.subscriptions.some((x) => x.name === 'deployment:fraud')).toBe(true);
    await dep.undeploy();
    expect(bus.stats().deployments).toEqual([]);
    await bus.close();
  });
});
