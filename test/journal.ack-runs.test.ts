import { afterAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Bus, Context, type SluiceEvent } from '../src/index.js';
import { until } from './helpers.js';

// A JS subscription sends its acknowledgements to the core as runs of consecutive delivery tags
// (src/subscription.ts, crates/node/src/subscription.rs). A run that reached one tag too far, or
// one too few, would release an event the handler never finished, or keep one it did. This
// checks, through a restart, that exactly the finished events were released.

const root = mkdtempSync(join(tmpdir(), 'sluice-ack-runs-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

/** Never finished (so never acknowledged): gaps at the start, end and middle of runs. */
const unfinished = (i: number) => i === 0 || i % 7 === 3 || i % 11 === 10 || i === 299;
/** Finished later, out of order: runs that do not follow the batch order. */
const late = (i: number) => i % 5 === 1 && !unfinished(i);

describe('acknowledgements as runs of tags', () => {
  it('release exactly the events whose handler finished, and keep the rest across a restart', async () => {
    const dir = join(root, 'j');
    const bus = new Bus({ journal: { dir, fsync: 'batch' } });
    const seen = new Set<number>();
    const finishLate: (() => void)[] = [];
    bus.subscribe(
      'job',
      (e: SluiceEvent) => {
        const i = e.data as number;
        seen.add(i);
        if (unfinished(i)) return new Promise(() => {});
        if (late(i)) return new Promise<void>((r) => finishLate.push(r));
        return undefined;
      },
      { name: 'worker', deliveryGuarantee: 'at-least-once', capacity: 512, concurrency: 512, batchSize: 512 },
    );
    await bus.publishBatch(Array.from({ length: 300 }, (_, i) => ({ type: 'job', data: i })));
    expect(await until(() => seen.size === 300)).toBe(true);
    // Finish the late ones newest first.
    for (const r of finishLate.reverse()) r();
    await new Promise((r) => setTimeout(r, 20));
    const pending = Array.from({ length: 300 }, (_, i) => i).filter(unfinished);
    expect(bus.stats().journal).toMatchObject({ acknowledged: 300 - pending.length, unacknowledged: pending.length });
    expect(await bus.close({ ctx: Context.background().withTimeout(30) })).toEqual({ unacknowledged: pending.length });

    const again = new Bus({ journal: { dir, fsync: 'batch' } });
    const got: number[] = [];
    again.subscribe('job', (e: SluiceEvent) => void got.push(e.data as number), { name: 'worker', deliveryGuarantee: 'at-least-once' });
    expect(await until(() => got.length >= pending.length)).toBe(true);
    await new Promise((r) => setTimeout(r, 20));
    expect(got).toEqual(pending);
    expect(await again.close()).toEqual({ unacknowledged: 0 });
  });
});
