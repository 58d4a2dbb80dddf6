import { describe, expect, it } from 'vitest';
import { Bus, Context, type SluiceEvent } from '../src/index.js';
import { until } from './helpers.js';

// The core hands JS a batch of events as columns (crates/core/src/codec.rs) and src/batch.ts
// rebuilds each event object. These publish everything the envelope can carry through the
// public API, in batches that mix topics, id kinds and optional fields, and check every field of
// every delivered event (and the order of its keys) against what was published.

const keys = (e: object) => Object.keys(e).join(',');

async function deliveredTo(take: (bus: Bus, got: SluiceEvent[]) => void): Promise<{ got: SluiceEvent[]; t0: number; t1: number; ctx: Context }> {
  const bus = new Bus({ source: 'svc/"a"' });
  const got: SluiceEvent[] = [];
  take(bus, got);
  const ctx = Context.background().withTimeout(60_000);
  const t0 = Date.now();
  bus.tryPublish('order.created', { n: 1 });
  bus.tryPublish('order.paid', { n: 2 }, { id: 'given-"1"', subject: 'cust\n7', traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01' });
  bus.tryPublish('order.created', new Uint8Array([0, 255, 7]), { ctx });
  bus.tryPublish('order.created', null);
  bus.tryPublishBatch([
    { type: 'order.paid', data: 'é ünïcode' },
    { type: 'order.created', data: [1, { a: 2 }] },
  ]);
  const t1 = Date.now();
  await until(() => got.length === 6);
  await bus.close();
  return { got, t0, t1, ctx };
}

function check({ got, t0, t1, ctx }: Awaited<ReturnType<typeof deliveredTo>>) {
  expect(got.map((e) => e.type)).toEqual(['order.created', 'order.paid', 'order.created', 'order.created', 'order.paid', 'order.created']);
  expect(got.map((e) => e.data)).toEqual([{ n: 1 }, { n: 2 }, Buffer.from([0, 255, 7]), null, 'é ünïcode', [1, { a: 2 }]]);
  for (const e of got) {
    expect(e.source).toBe('svc/"a"');
    expect(e.time).toBeGreaterThanOrEqual(t0);
    expect(e.time).toBeLessThanOrEqual(t1);
  }
  // The bus's own ids are `<prefix>-<n>`, n counting up per publish; given ids are kept.
  const own = got.filter((_, i) => i !== 1).map((e) => e.id);
  const prefix = own[0]!.slice(0, own[0]!.lastIndexOf('-') + 1);
  const ns = own.map((id) => Number(id.slice(prefix.length)));
  expect(own.every((id) => id.startsWith(prefix))).toBe(true);
  expect(ns).toEqual([...ns].sort((a, b) => a - b));
  expect(new Set(ns).size).toBe(5);
  expect(got[1]!.id).toBe('given-"1"');
  expect(got[1]!.subject).toBe('cust\n7');
  expect(got[1]!.traceparent).toBe('00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01');
  expect(keys(got[1]!)).toBe('id,type,source,time,subject,traceparent,data');
  expect(got[2]!.deadline).toBe(ctx.deadline);
  expect(keys(got[2]!)).toBe('id,type,source,time,deadline,data');
  for (const i of [0, 3, 4, 5]) expect(keys(got[i]!)).toBe('id,type,source,time,data');
}

describe('batches of events as JS receives them', () => {
  it('a handler sees every field of every event as published, in one batch of mixed topics', async () => {
    check(await deliveredTo((bus, got) => bus.subscribe('order.*', (e) => void got.push(e), { batchSize: 64 })));
  });

  it('a stream sees the same events', async () => {
    check(
      await deliveredTo((bus, got) => {
        const s = bus.stream('order.*');
        void (async () => {
          for await (const e of s) got.push(e);
        })();
      }),
    );
  });

  it('a redelivered event carries its attempt number after the other fields', async () => {
    const bus = new Bus();
    const seen: SluiceEvent[] = [];
    bus.subscribe(
      'job',
      (e) => {
        seen.push(e);
        if ((e.attempt ?? 1) < 3) throw new Error('again');
      },
      { deliveryGuarantee: 'at-least-once', retry: { maxAttempts: 3, initialMs: 1, backoff: 'fixed' } },
    );
    await bus.publish('job', { k: 1 }, { subject: 's' });
    await until(() => seen.length === 3);
    expect(seen.map((e) => e.attempt)).toEqual([undefined, 2, 3]);
    expect(new Set(seen.map((e) => e.id)).size).toBe(1);
    expect(keys(seen[2]!)).toBe('id,type,source,time,subject,attempt,data');
    await bus.close();
  });
});
