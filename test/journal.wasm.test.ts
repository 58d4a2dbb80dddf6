// The journal in front of WASM deployments: `spill` queues and at-least-once deployments across a
// restart, through the public API with a real journal directory and real Wasmtime guests.
import { afterAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Bus } from '../src/index.js';
import { echoGuest, until } from './helpers.js';

const root = mkdtempSync(join(tmpdir(), 'sluice-journal-wasm-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
let dirs = 0;
const journalDir = () => join(root, `j${dirs++}`);

/** Returns `status` for every event; on ack (0) it emits the event's data on `out.n`. */
const echoing = (status: number) => echoGuest('out.n', status);

describe('journal in front of WASM deployments', () => {
  it('a spill queue in front of a deployment hands every event to the guest, in order', async () => {
    const bus = new Bus({ journal: { dir: journalDir() } });
    const got: unknown[] = [];
    bus.subscribe('out.n', (e) => void got.push(e.data));
    const dep = await bus.deploy('spilling', await echoing(0), {
      topics: ['in'],
      emits: ['out.*'],
      capacity: 4,
      overflow: 'spill',
    });
    // One call puts all 500 in (a few hundred ns each) while the worker hands each to the guest
    // and publishes its emit (µs each): the queue of 4 must overflow into the journal. Publishing
    // them one call at a time from the test loop let a fast worker keep up, and nothing spilled.
    expect(bus.tryPublishBatch(Array.from({ length: 500 }, (_, i) => ({ type: 'in', data: i })))).toBe(500);
    expect(await until(() => got.length === 500, 10_000)).toBe(true);
    expect(got).toEqual(Array.from({ length: 500 }, (_, i) => i));
    const sub = dep.info().subscriptions[0]!;
    expect(sub).toMatchObject({ overflow: 'spill', delivered: 500, spillErrors: 0, droppedNewest: 0, droppedOldest: 0 });
    // A queue of 4 cannot have held 500 events published in one burst: the journal did.
    expect(sub.spilled).toBeGreaterThan(0);
    await bus.close();
  });

  it('an at-least-once deployment gets what it had not acknowledged after a restart', async () => {
    const dir = journalDir();
    const options = {
      topics: ['in'],
      emits: ['out.*'],
      deliveryGuarantee: 'at-least-once' as const,
      // Every first attempt asks for a retry a minute later: nothing is acknowledged before close.
      retry: { maxAttempts: 10, backoff: 'fixed' as const, initialMs: 60_000 },
    };
    {
      const bus = new Bus({ journal: { dir } });
      const dep = await bus.deploy('durable-guest', await echoing(1), options);
      for (let i = 0; i < 100; i++) await bus.publish('in', i);
      expect(await until(() => dep.info().outcomes.retry === 100, 10_000)).toBe(true);
      expect(await bus.close()).toEqual({ unacknowledged: 100 });
    }
    {
      const bus = new Bus({ journal: { dir } });
      const got: number[] = [];
      bus.subscribe('out.n', (e) => void got.push(e.data as number));
      await bus.deploy('durable-guest', await echoing(0), options);
      expect(await until(() => got.length === 100, 10_000)).toBe(true);
      expect([...got].sort((a, b) => a - b)).toEqual(Array.from({ length: 100 }, (_, i) => i));
      expect(await bus.close()).toEqual({ unacknowledged: 0 });
    }
  });
});
