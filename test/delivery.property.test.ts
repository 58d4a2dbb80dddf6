import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { Bus, QueueFull } from '../src/index.js';
import { sleep, until } from './helpers.js';

type Op = { kind: 'publish' } | { kind: 'take' };

describe('overflow policies match a reference model at the capacity boundary', () => {
  for (const policy of ['drop-newest', 'drop-oldest', 'error'] as const) {
    it(policy, async () => {
      await fc.assert(
        fc.asyncProperty(
          fc.integer({ min: 1, max: 8 }),
          fc.array(fc.oneof(fc.constant<Op>({ kind: 'publish' }), fc.constant<Op>({ kind: 'take' })), { maxLength: 60 }),
          async (capacity, ops) => {
            const bus = new Bus();
            const stream = bus.stream('p', { capacity, overflow: policy, batchSize: 1 });
            const model: number[] = [];
            const got: number[] = [];
            const want: number[] = [];
            let n = 0;
            let dropped = 0;
            for (const op of ops) {
              if (op.kind === 'publish') {
                const v = n++;
                const full = model.length === capacity;
                let accepted = !full;
                if (policy === 'error') {
                  if (full) {
                    await expect(bus.publish('p', v)).rejects.toBeInstanceOf(QueueFull);
                    dropped++;
                  } else {
                    await bus.publish('p', v);
                    model.push(v);
                  }
                  continue;
                }
                if (full && policy === 'drop-newest') dropped++;
                else if (full) {
                  model.shift();
                  dropped++;
                  accepted = true;
                }
                if (!full || policy === 'drop-oldest') model.push(v);
                expect(bus.tryPublish('p', v)).toBe(accepted);
              } else if (model.length > 0) {
                want.push(model.shift()!);
                got.push((await stream.next()).value!.data as number);
              }
            }
            expect(got).toEqual(want);
            const st = stream.stats();
            expect(st.depth).toBe(model.length);
            const droppedSeen = policy === 'drop-newest' ? st.droppedNewest : policy === 'drop-oldest' ? st.droppedOldest : st.droppedFull;
            expect(droppedSeen).toBe(dropped);
            // Books balance: every published event is delivered, dropped or still queued.
            expect(st.published).toBe(st.delivered + st.expired + st.droppedOldest + st.droppedClosed + st.depth);
            await stream.return();
            await bus.close();
          },
        ),
        { numRuns: 60 },
      );
    });
  }
});

describe('under concurrent publishers with block, nothing is lost, duplicated or reordered', () => {
  it('per-publisher order holds for every subscription', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 6 }),
        fc.integer({ min: 2, max: 5 }),
        fc.integer({ min: 1, max: 80 }),
        fc.integer({ min: 1, max: 4 }),
        async (capacity, publishers, perPublisher, concurrency) => {
          const bus = new Bus<{ [k: string]: { p: number; i: number } }>({ capacity, overflow: 'block' });
          const ordered: { p: number; i: number }[] = [];
          const parallel: { p: number; i: number }[] = [];
          bus.subscribe('x.*', async (e) => {
            if (Math.random() < 0.2) await sleep(0);
            ordered.push(e.data);
          });
          bus.subscribe('x.>', async (e) => {
            await sleep(0);
            parallel.push(e.data);
          }, { concurrency });
          await Promise.all(
            Array.from({ length: publishers }, async (_, p) => {
              for (let i = 0; i < perPublisher; i++) await bus.publish(`x.p${p}`, { p, i });
            }),
          );
          const total = publishers * perPublisher;
          expect(await until(() => ordered.length === total && parallel.length === total, 10_000)).toBe(true);
          for (const got of [ordered, parallel]) {
            const keys = new Set(got.map((d) => `${d.p}:${d.i}`));
            expect(keys.size).toBe(total);
          }
          for (let p = 0; p < publishers; p++) {
            expect(ordered.filter((d) => d.p === p).map((d) => d.i)).toEqual([...Array(perPublisher).keys()]);
          }
          const st = bus.stats();
          expect(st.dropped).toBe(0);
          await bus.close();
        },
      ),
      { numRuns: 25 },
    );
  });
});
