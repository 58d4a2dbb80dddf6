import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Bus, Context, InvalidArgument, type SluiceEvent } from '../src/index.js';
import { sleep, until, wat } from './helpers.js';

const statusByData = readFileSync(
  fileURLToPath(new URL('../crates/sandbox/tests/fixtures/status_by_data.wat', import.meta.url)),
  'utf8',
);

type DeadLetter = {
  reason: string;
  attempts: number;
  subscription: { id: number; pattern: string; name: string | null };
  deadLetteredAt: number;
  event: SluiceEvent;
};

describe('delivery settings for JS handlers', () => {
  it('retries a throwing handler with backoff and dead-letters it after maxAttempts, while other events flow', async () => {
    const bus = new Bus();
    const dead: DeadLetter[] = [];
    bus.subscribe('order.dead', (e) => void dead.push(e.data as DeadLetter));
    const seen: { id: string; attempt: number; at: number }[] = [];
    const sub = bus.subscribe(
      'order.created',
      (e) => {
        seen.push({ id: e.id, attempt: e.attempt ?? 1, at: performance.now() });
        if ((e.data as { poison?: boolean }).poison) throw new Error('cannot handle');
      },
      { deliveryGuarantee: 'at-least-once', retry: { maxAttempts: 3, backoff: 'fixed', initialMs: 40 }, deadLetter: 'order.dead' },
    );
    await bus.publish('order.created', { poison: true }, { id: 'p1' });
    for (let i = 0; i < 5; i++) await bus.publish('order.created', { n: i }, { id: `ok${i}` });
    expect(await until(() => dead.length === 1)).toBe(true);
    const poison = seen.filter((s) => s.id === 'p1');
    expect(poison.map((s) => s.attempt)).toEqual([1, 2, 3]);
    expect(poison[1]!.at - poison[0]!.at).toBeGreaterThanOrEqual(39);
    expect(poison[2]!.at - poison[1]!.at).toBeGreaterThanOrEqual(39);
    // No head-of-line blocking: the others ran before the first retry.
    expect(seen.slice(0, 6).map((s) => s.id)).toEqual(['p1', 'ok0', 'ok1', 'ok2', 'ok3', 'ok4']);
    expect(dead[0]).toMatchObject({ reason: 'Error: cannot handle', attempts: 3, event: { id: 'p1', type: 'order.created', data: { poison: true } } });
    const s = sub.stats();
    expect(s).toMatchObject({ deliveryGuarantee: 'at-least-once', acked: 5, retried: 2, deadLettered: 1, discarded: 0, failed: 3, inFlight: 0 });
    expect(s.delivered).toBe(s.acked + s.deadLettered + s.discarded + s.duplicatesSuppressed + s.inFlight);
    const total = bus.stats();
    expect(total).toMatchObject({ deadLettered: 1, retried: 2 });
    await bus.close();
  });

  it('an async handler that rejects is retried too; with no dead-letter topic the event is counted discarded', async () => {
    const bus = new Bus();
    let calls = 0;
    const sub = bus.subscribe(
      't',
      async () => {
        calls++;
        await sleep(1);
        throw new Error('down');
      },
      { deliveryGuarantee: 'at-least-once', retry: { maxAttempts: 2, initialMs: 5 } },
    );
    await bus.publish('t', 1);
    expect(await until(() => sub.stats().discarded === 1)).toBe(true);
    expect(calls).toBe(2);
    expect(sub.stats()).toMatchObject({ acked: 0, retried: 1, failed: 2, deadLettered: 0 });
    await bus.close();
  });

  it('keeps per-key order across retries while other keys keep flowing', async () => {
    const bus = new Bus();
    const order: string[] = [];
    let failures = 0;
    bus.subscribe(
      'acct.*',
      (e) => {
        const d = e.data as { k: string; n: number };
        if (d.k === 'a' && d.n === 1 && failures < 2) {
          failures++;
          order.push(`${d.k}${d.n}!`);
          throw new Error('transient');
        }
        order.push(`${d.k}${d.n}`);
      },
      { deliveryGuarantee: 'at-least-once', retry: { maxAttempts: 5, backoff: 'fixed', initialMs: 20 }, ordering: 'per-key', key: 'data.k', concurrency: 4 },
    );
    for (const [k, n] of [['a', 1], ['a', 2], ['b', 1], ['a', 3], ['b', 2]] as const) await bus.publish('acct.x', { k, n });
    expect(await until(() => order.length === 7)).toBe(true);
    expect(order.filter((x) => x.startsWith('a'))).toEqual(['a1!', 'a1!', 'a1', 'a2', 'a3']);
    expect(order.slice(0, 3)).toEqual(['a1!', 'b1', 'b2']);
    await bus.close();
  });

  it('suppresses duplicate ids within the dedupe window and counts them', async () => {
    const bus = new Bus();
    const got: string[] = [];
    const sub = bus.subscribe('t', (e) => void got.push(e.id), { dedupe: { windowMs: 60_000 } });
    for (const id of ['x', 'y', 'x', 'x', 'z']) await bus.publish('t', null, { id });
    expect(await until(() => got.length === 3)).toBe(true);
    await sleep(10);
    expect(got).toEqual(['x', 'y', 'z']);
    expect(sub.stats().duplicatesSuppressed).toBe(2);
    await bus.close();
  });

  it('replays dead letters from the retention: once each, filtered, with the original id', async () => {
    const bus = new Bus();
    let healthy = false;
    const handled: string[] = [];
    bus.subscribe(
      'job',
      (e) => {
        if (!healthy) throw new Error('dependency down');
        handled.push(e.id);
      },
      { deadLetter: 'job.dead' },
    );
    for (let i = 0; i < 4; i++) await bus.publish('job', { n: i }, { id: `j${i}` });
    expect(await until(() => bus.stats().deadLetters.retained === 4)).toBe(true);
    healthy = true;
    expect(await bus.replay('job.dead', { filter: { field: 'n', op: 'gte', value: 2 } })).toBe(2);
    expect(await until(() => handled.length === 2)).toBe(true);
    expect(handled).toEqual(['j2', 'j3']);
    expect(await bus.replay('job.dead', { limit: 1 })).toBe(1);
    expect(await bus.replay('job.dead')).toBe(1);
    expect(await bus.replay('job.dead')).toBe(0);
    expect(await until(() => handled.length === 4)).toBe(true);
    expect(bus.stats().deadLetters).toEqual({ retained: 0, evicted: 0, replayed: 4, journalErrors: 0 });
    await bus.close();
  });

  it('bus.close() waits for retrying events before it finishes', async () => {
    const bus = new Bus();
    let attempts = 0;
    bus.subscribe(
      't',
      () => {
        if (++attempts < 3) throw new Error('again');
      },
      { deliveryGuarantee: 'at-least-once', retry: { maxAttempts: 3, backoff: 'fixed', initialMs: 20 } },
    );
    await bus.publish('t', 1);
    await bus.close();
    expect(attempts).toBe(3);
    expect(bus.stats()).toMatchObject({ acked: 1, retried: 2 });
  });

  it('refuses bad settings with InvalidArgument (ERR_INVALID_ARG)', () => {
    const bus = new Bus();
    const bad = [
      { retry: { maxAttempts: 3 } },
      { deliveryGuarantee: 'exactly-once' },
      { deliveryGuarantee: 'at-least-once', retry: { maxAttempts: 0 } },
      { deliveryGuarantee: 'at-least-once', retry: { jitter: 2 } },
      { deliveryGuarantee: 'at-least-once', retry: { initialMs: 100, maxMs: 10 } },
      { deliveryGuarantee: 'at-least-once', retry: { backoff: 'linear' } },
      { deliveryGuarantee: 'at-least-once', retry: 5 },
      { deadLetter: 'dead.*' },
      { ordering: 'per-key' },
      { key: 'data.k' },
      { ordering: 'per-key', key: 'nope' },
      { dedupe: { size: 0 } },
      { dedupe: { windowMs: -1 } },
    ];
    for (const opts of bad) {
      let err: unknown;
      try {
        bus.subscribe('t', () => {}, opts as never);
      } catch (e) {
        err = e;
      }
      expect(err, JSON.stringify(opts)).toBeInstanceOf(InvalidArgument);
      expect((err as InvalidArgument).code).toBe('ERR_INVALID_ARG');
    }
    expect(bus.stats().subscriptions).toHaveLength(0);
  });
});

describe('delivery settings for WASM handlers', () => {
  it('a guest that returns 1 (retry) for an event is retried, then dead-lettered after maxAttempts; others are acked', async () => {
    const bus = new Bus();
    const dead: DeadLetter[] = [];
    bus.subscribe('in.dead', (e) => void dead.push(e.data as DeadLetter));
    const dep = await bus.deploy('status', await wat(statusByData), {
      topics: ['in'],
      deliveryGuarantee: 'at-least-once',
      retry: { maxAttempts: 3, backoff: 'exponential', initialMs: 10 },
      deadLetter: 'in.dead',
    });
    await bus.publish('in', 1, { id: 'poison' });
    await bus.publish('in', 0, { id: 'fine' });
    await bus.publish('in', 2, { id: 'refused' });
    expect(await until(() => dead.length === 2)).toBe(true);
    const byId = Object.fromEntries(dead.map((d) => [d.event.id, d]));
    expect(byId.poison).toMatchObject({ attempts: 3, reason: 'handler returned 1 (retry)', event: { type: 'in', data: 1 } });
    expect(byId.refused).toMatchObject({ attempts: 1, reason: 'handler returned 2 (reject)' });
    const info = dep.info();
    expect(info.outcomes).toMatchObject({ ack: 1, retry: 3, reject: 1 });
    expect(info.subscriptions[0]).toMatchObject({ acked: 1, retried: 2, deadLettered: 2 });
    expect(bus.stats().subscriptions.find((s) => s.name === 'deployment:status')).toMatchObject({ deadLettered: 2 });
    await bus.close();
  });

  it('a trapping guest is a failure: retried, then dead-lettered with the trap as reason', async () => {
    const bus = new Bus();
    const dead: DeadLetter[] = [];
    bus.subscribe('in.dead', (e) => void dead.push(e.data as DeadLetter));
    await bus.deploy('status', await wat(statusByData), {
      topics: ['in'],
      deliveryGuarantee: 'at-least-once',
      retry: { maxAttempts: 2, initialMs: 5 },
      deadLetter: 'in.dead',
    });
    await bus.publish('in', 3, { id: 'trap', ctx: Context.background() });
    expect(await until(() => dead.length === 1)).toBe(true);
    expect(dead[0]!.attempts).toBe(2);
    expect(dead[0]!.reason).toMatch(/^ERR_TRAP/);
    await bus.close();
  });

  it('bad deploy settings are InvalidArgument', async () => {
    const bus = new Bus();
    await expect(bus.deploy('x', await wat(statusByData), { topics: ['in'], retry: { maxAttempts: 4 } })).rejects.toBeInstanceOf(
      InvalidArgument,
    );
    await bus.close();
  });
});
