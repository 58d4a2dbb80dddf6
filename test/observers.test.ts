import { describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Bus, KINDS, type LifecycleRecord, type Observer } from '../src/index.js';
import { sleep, until } from './helpers.js';

type Tally = Record<string, number>;

/** A metrics observer that counts every record by kind and by `kind:reason`. */
function counter(): Observer & { seen: Tally; ids: Map<string, number> } {
  const seen: Tally = {};
  const ids = new Map<string, number>();
  const add = (r: LifecycleRecord) => {
    seen[r.kind] = (seen[r.kind] ?? 0) + r.count;
    if (r.reason) seen[`${r.kind}:${r.reason}`] = (seen[`${r.kind}:${r.reason}`] ?? 0) + r.count;
    if (r.id !== null) {
      const key = `${r.kind}/${r.subscription}/${r.id}`;
      ids.set(key, (ids.get(key) ?? 0) + 1);
    }
  };
  const obs: Observer & { seen: Tally; ids: Map<string, number> } = { seen, ids };
  for (const k of KINDS) (obs as unknown as Record<string, unknown>)[k] = add;
  return obs;
}

describe('observers', () => {
  it('see every lifecycle event exactly once, matching stats()', async () => {
    const bus = new Bus({ capacity: 1024 });
    const obs = counter();
    bus.use(obs);
    let handled = 0;
    bus.subscribe('order.*', () => void handled++, { name: 'all' });
    bus.subscribe('order.created', () => {}, { capacity: 4, overflow: 'drop-newest' });
    const slow = bus.subscribe('order.created', async () => sleep(1), { capacity: 4, overflow: 'drop-oldest' });
    for (let i = 0; i < 300; i++) {
      bus.tryPublish('order.created', { i });
      bus.tryPublish('nobody.listens', { i });
      if (i % 50 === 0) await sleep(1);
    }
    expect(await until(() => handled === 300)).toBe(true);
    expect(await until(() => slow.stats().depth === 0)).toBe(true);
    await sleep(20);
    const stats = bus.stats();
    const s = obs.seen;
    expect(s.published).toBe(stats.published);
    expect(s['published:unrouted']).toBe(stats.unrouted);
    expect(s.delivered - (s['dropped:returned'] ?? 0)).toBe(stats.delivered);
    expect(s.dropped).toBe(stats.dropped);
    expect(s.dropped).toBeGreaterThan(0);
    expect(s['dropped:drop-newest']).toBe(stats.subscriptions.reduce((n, x) => n + x.droppedNewest, 0));
    expect(s['dropped:drop-oldest']).toBe(stats.subscriptions.reduce((n, x) => n + x.droppedOldest, 0));
    expect(s.expired ?? 0).toBe(stats.expired);
    // JS handlers are timed: one start and one end per handled event.
    expect(s.handlerStart).toBe(stats.delivered);
    expect(s.handlerEnd).toBe(stats.delivered);
    // Exactly once: no (kind, subscription, event) seen twice.
    expect([...obs.ids.values()].every((n) => n === 1)).toBe(true);
    expect(Object.values(stats.observers!.lost).every((n) => n === 0)).toBe(true);
    await bus.close();
  });

  it('batch hooks get per-kind deltas that add up to the same totals', async () => {
    const bus = new Bus();
    const total: Tally = {};
    bus.use({ batch: (b) => { for (const [k, n] of Object.entries(b.counts)) total[k] = (total[k] ?? 0) + n; } });
    let n = 0;
    bus.subscribe('a.b', () => void n++);
    for (let i = 0; i < 100; i++) bus.tryPublish('a.b', i);
    await until(() => n === 100);
    const stats = bus.stats();
    expect(total.published).toBe(stats.published);
    expect(total.delivered).toBe(stats.delivered);
    expect(total.handlerEnd).toBe(100);
    await bus.close();
  });

  it('a throwing metrics hook is dropped and counted; delivery and other observers are unchanged', async () => {
    const bus = new Bus();
    const good = counter();
    bus.use({ published: () => { throw new Error('boom'); }, handlerEnd: () => { throw new Error('boom'); } });
    bus.use(good);
    const got: number[] = [];
    bus.subscribe('a.b', (e) => void got.push(e.data as number));
    for (let i = 0; i < 50; i++) bus.tryPublish('a.b', i);
    await until(() => got.length === 50);
    const stats = bus.stats();
    expect(got).toEqual([...Array(50).keys()]);
    expect(stats.failed).toBe(0);
    expect(good.seen.published).toBe(50);
    expect(good.seen.handlerEnd).toBe(50);
    expect(stats.observers!.metricsFailures).toBe(100);
    await bus.close();
  });

  it('a failing tracing hook degrades its sampling instead of failing', async () => {
    const bus = new Bus();
    let calls = 0;
    bus.use({ kind: 'tracing', delivered: () => { calls++; throw new Error('exporter down'); } });
    bus.subscribe('a.b', () => {});
    for (let i = 0; i < 400; i++) bus.tryPublish('a.b', i);
    await until(() => bus.stats().delivered === 400);
    const stats = bus.stats();
    expect(stats.observers!.tracingFailures).toBe(calls);
    // Each failure halves the rate: far fewer calls than events.
    expect(calls).toBeGreaterThan(0);
    expect(calls).toBeLessThan(40);
    await bus.close();
  });

  it('a failing audit sink holds acknowledgement until its write succeeds', async () => {
    const bus = new Bus();
    const written: string[] = [];
    let failuresLeft = 3;
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    bus.use({
      kind: 'audit',
      async audit(rec) {
        await gate;
        if (failuresLeft-- > 0) throw new Error('disk full');
        written.push(`${rec.type}:${rec.id}:${rec.outcome}`);
      },
    });
    let handled = 0;
    const sub = bus.subscribe('pay.ok', () => void handled++, { name: 'payments' });
    bus.tryPublish('pay.ok', { n: 1 });
    bus.tryPublish('pay.ok', { n: 2 });
    await until(() => handled === 1);
    // The first event is handled but not acknowledged: its slot (concurrency 1) stays held,
    // so the second is not started, and close() cannot finish draining.
    let closed = false;
    const closing = bus.close().then(() => (closed = true));
    await sleep(50);
    expect(handled).toBe(1);
    expect(closed).toBe(false);
    expect(bus.stats().observers!.auditPending).toBe(1);
    release();
    await closing;
    expect(handled).toBe(2);
    expect(written).toHaveLength(2);
    expect(written[0]).toMatch(/^pay\.ok:.+:ack$/);
    expect(sub.closed).toBe(true);
  });

  it('loads observers by module specifier from the options', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sluice-obs-'));
    const file = join(dir, 'count.mjs');
    writeFileSync(file, 'export const seen = []; export default () => ({ published: (r) => seen.push(r.type) });\n');
    const bus = await Bus.create({ observers: [file] });
    bus.tryPublish('x.y', 1);
    bus.stats();
    const mod = (await import(file)) as { seen: string[] };
    expect(mod.seen).toEqual(['x.y']);
    await bus.close();
    const bad = new Bus({ observers: ['./no-such-observer.js'] });
    await expect(bad.ready).rejects.toThrow(/cannot load observer module/);
    await bad.close();
  });

  it("loads a built-in by its package specifier ('sluice/audit')", async () => {
    const file = join(mkdtempSync(join(tmpdir(), 'sluice-obs-')), 'audit.jsonl');
    process.env.SLUICE_AUDIT_FILE = file;
    try {
      const bus = await Bus.create({ observers: ['sluice/audit'] });
      let n = 0;
      bus.subscribe('a.b', () => void n++);
      bus.tryPublish('a.b', 1);
      await until(() => n === 1);
      await bus.close();
      expect(JSON.parse(readFileSync(file, 'utf8'))).toMatchObject({ type: 'a.b', outcome: 'ack' });
    } finally {
      delete process.env.SLUICE_AUDIT_FILE;
    }
  });

  it('removing the last observer switches recording off', async () => {
    const bus = new Bus();
    const obs = counter();
    const handle = bus.use(obs);
    bus.tryPublish('a.b', 1);
    bus.stats();
    handle.remove();
    bus.tryPublish('a.b', 2);
    bus.stats();
    expect(obs.seen.published).toBe(1);
    await bus.close();
  });
});
