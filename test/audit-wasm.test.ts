import { describe, expect, it } from 'vitest';
import { existsSync, mkdirSync, mkdtempSync, readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Bus } from '../src/index.js';
import { auditSink } from '../src/observers/audit.js';
import { sleep, until, wat } from './helpers.js';

// The guest answers with the event's data: 0 ack, 1 retry, 2 reject, 3 trap.
const statusByData = readFileSync(fileURLToPath(new URL('../crates/sandbox/tests/fixtures/status_by_data.wat', import.meta.url)), 'utf8');

const lines = (file: string) =>
  existsSync(file)
    ? readFileSync(file, 'utf8')
        .trim()
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as Record<string, unknown>)
    : [];

describe('audit of WASM handlers', () => {
  it('holds a WASM run’s verdict (ack, retry, dead letter) until its audit record is durable', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sluice-audit-wasm-'));
    const file = join(dir, 'later', 'audit.jsonl');
    const bus = new Bus();
    bus.use(auditSink({ file }));
    const dead: unknown[] = [];
    bus.subscribe('in.dead', (e) => void dead.push(e.data));
    const dep = await bus.deploy('status', await wat(statusByData), {
      topics: ['in'],
      deliveryGuarantee: 'at-least-once',
      retry: { maxAttempts: 2, initialMs: 5 },
      deadLetter: 'in.dead',
    });
    await bus.publish('in', 0, { id: 'fine' });
    await bus.publish('in', 1, { id: 'again' });
    await bus.publish('in', 2, { id: 'refused' });
    // The guest ran every event once…
    expect(await until(() => dep.info().outcomes.ack + dep.info().outcomes.retry + dep.info().outcomes.reject === 3)).toBe(true);
    await sleep(100);
    // …but the audit directory does not exist: nothing is settled — no ack, no retry, no dead letter.
    const sub = () => dep.info().subscriptions[0]!;
    expect(sub()).toMatchObject({ acked: 0, retried: 0, deadLettered: 0 });
    expect(dep.info().outcomes).toMatchObject({ ack: 1, retry: 1, reject: 1 });
    expect(dead).toHaveLength(0);
    expect(existsSync(file)).toBe(false);
    const obs = bus.stats().observers!;
    expect(obs.auditHeld).toBe(3);
    expect(obs.auditFailures).toBeGreaterThan(0);

    mkdirSync(join(dir, 'later'));
    // Each verdict lands only after its line is on disk: check the file whenever one moved.
    let ackedSeenWithoutLine = false;
    const ok = await until(() => {
      const s = sub();
      if (s.acked > 0 && !readFileSync(file, 'utf8').includes('"id":"fine"')) ackedSeenWithoutLine = true;
      return s.acked === 1 && s.deadLettered === 2 && dead.length === 2 && bus.stats().observers!.auditPending === 0;
    });
    expect(ok).toBe(true);
    expect(ackedSeenWithoutLine).toBe(false);
    const all = lines(file);
    // The JS handler on the dead-letter topic is audited too (its two runs).
    expect(all.filter((l) => l.runtime === 'js').map((l) => l.type)).toEqual(['in.dead', 'in.dead']);
    const written = all.filter((l) => l.runtime === 'wasm');
    // fine (ack), refused (reject), again twice (retry, then retry → dead letter).
    expect(written).toHaveLength(4);
    expect(written.map((l) => `${l.id as string}:${l.outcome as string}`).sort()).toEqual(['again:retry', 'again:retry', 'fine:ack', 'refused:reject']);
    for (const l of written) {
      expect(l).toMatchObject({ type: 'in', name: 'status', runtime: 'wasm', source: 'sluice' });
      expect(l.module).toMatch(/^sha256:/);
      expect(typeof l.durationUs).toBe('number');
    }
    expect(bus.stats().observers!.auditHeld).toBe(0);
    await bus.close();
  });

  it('bus.close() waits for held WASM runs to be audited; without an audit observer nothing is held', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sluice-audit-wasm-'));
    const file = join(dir, 'later', 'audit.jsonl');
    const bus = new Bus();
    const handle = bus.use(auditSink({ file }));
    const dep = await bus.deploy('status', await wat(statusByData), { topics: ['in'], concurrency: 2 });
    for (let i = 0; i < 20; i++) bus.tryPublish('in', 0);
    expect(await until(() => dep.info().outcomes.ack === 20)).toBe(true);
    let closed = false;
    const closing = bus.close().then(() => (closed = true));
    await sleep(100);
    expect(closed).toBe(false);
    expect(bus.stats().observers!.auditHeld).toBe(20);
    mkdirSync(join(dir, 'later'));
    await closing;
    const written = lines(file);
    expect(written).toHaveLength(20);
    expect(new Set(written.map((l) => l.id)).size).toBe(20);
    handle.remove();

    // Removing the last audit observer switches the gate off: WASM verdicts settle on their worker.
    const plain = new Bus();
    const h = plain.use(auditSink({ file: join(dir, 'none', 'x.jsonl') }));
    h.remove();
    const dep2 = await plain.deploy('status', await wat(statusByData), { topics: ['in'], deliveryGuarantee: 'at-least-once' });
    await plain.publish('in', 0);
    expect(await until(() => dep2.info().subscriptions[0]!.acked === 1)).toBe(true);
    expect(plain.stats().observers!.auditHeld).toBe(0);
    await plain.close();
    expect(await readFile(file, 'utf8')).not.toBe('');
  });
});
