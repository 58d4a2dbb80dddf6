/**
 * fast-check model test of durable delivery through the public API: publish, handler success
 * (ack) or failure (no ack), and restart (close + a new bus on the same directory), against a
 * reference model of what the journal must hold. A real SIGKILL is exercised in crash.test.ts;
 * here the point is the exact set and order of what is redelivered.
 */
import { afterAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Bus, Context, type SluiceEvent } from '../src/index.js';
import { until } from './helpers.js';

type Op = { kind: 'publish'; count: number } | { kind: 'restart' };

const root = mkdtempSync(join(tmpdir(), 'sluice-model-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
let runs = 0;

describe('durable subscription vs. a reference model', () => {
  it('redelivers exactly the unacknowledged events, in order, after every restart', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom('batch' as const, 'never' as const),
        fc.integer({ min: 1, max: 8 }),
        fc.integer({ min: 2, max: 4 }),
        fc.array(
          fc.oneof(
            { weight: 3, arbitrary: fc.record({ kind: fc.constant('publish' as const), count: fc.integer({ min: 1, max: 12 }) }) },
            { weight: 1, arbitrary: fc.constant<Op>({ kind: 'restart' }) },
          ),
          { maxLength: 14 },
        ),
        async (fsync, capacity, modulus, ops) => {
          const dir = join(root, `r${runs++}`);
          // The handler never finishes event n in process epoch e when this holds (deterministic,
          // so the model knows which events stay unacknowledged); the others it acknowledges.
          const fails = (n: number, e: number) => (n * 7 + e * 3) % modulus === 0;
          let epoch = 0;
          let next = 0;
          // Model: every unacknowledged event in publish (= journal) order; per process, which
          // of them were delivered and how many handlers hang. A tracked subscription has at
          // most `capacity` events in flight, so once `capacity` handlers hang it stalls: later
          // events stay queued or in the journal, unacknowledged, until the next process.
          let unacked: number[] = [];
          let delivered = new Set<number>();
          let hanging = 0;
          let got: number[] = [];
          const deliver = (): number[] => {
            const want: number[] = [];
            for (const n of unacked) {
              if (delivered.has(n)) continue;
              if (hanging >= capacity) break;
              want.push(n);
              delivered.add(n);
              if (fails(n, epoch)) hanging++;
            }
            unacked = unacked.filter((n) => !delivered.has(n) || fails(n, epoch));
            return want;
          };
          const open = () => {
            const bus = new Bus({ journal: { dir, fsync } });
            const e = epoch;
            bus.subscribe(
              'm',
              (ev: SluiceEvent) => {
                const n = ev.data as number;
                got.push(n);
                return fails(n, e) ? new Promise(() => {}) : undefined;
              },
              { name: 'model', deliveryGuarantee: 'at-least-once', capacity, concurrency: 512 },
            );
            return bus;
          };
          const check = async (bus: Bus, want: number[]) => {
            expect(await until(() => got.length >= want.length, 5000)).toBe(true);
            expect(got).toEqual(want);
            got = [];
            expect(bus.stats().journal!.unacknowledged).toBe(unacked.length);
          };
          let bus = open();
          try {
            for (const op of ops) {
              if (op.kind === 'publish') {
                const batch = Array.from({ length: op.count }, () => next++);
                await Promise.all(batch.map((n) => bus.publish('m', n)));
                unacked.push(...batch);
                await check(bus, deliver());
              } else {
                const closed = await bus.close({ ctx: Context.background().withTimeout(5) });
                expect(closed.unacknowledged).toBe(unacked.length);
                epoch++;
                delivered = new Set();
                hanging = 0;
                bus = open();
                await check(bus, deliver());
              }
            }
          } finally {
            await bus.close({ ctx: Context.background().withTimeout(5) });
          }
        },
      ),
      { numRuns: 30 },
    );
  }, 60_000);
});
