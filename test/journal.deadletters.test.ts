/**
 * Dead letters on a bus with a journal survive SIGKILL, through the public API: a real `node`
 * child runs a durable subscription whose handler fails every odd number (dead-lettered on
 * `job.dead` at the first failure) and is SIGKILLed; a bus reopened on the same directory
 * finds the dead letters for `bus.replay`, replays each once, and not again after another
 * restart.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Bus } from '../src/index.js';
import { runLoggedChild, until } from './helpers.js';

const dist = fileURLToPath(new URL('../dist/index.js', import.meta.url));
const root = mkdtempSync(join(tmpdir(), 'sluice-deadletters-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
let runs = 0;

const worker = {
  name: 'worker',
  deliveryGuarantee: 'at-least-once' as const,
  deadLetter: 'job.dead',
};

/**
 * The child (its worker logs `d <n>` for each even number it acknowledges when streaming).
 * `count` > 0: publishes 0 … count−1, waits until every one is settled, then makes
 * what the settles wrote durable (a later record's fsync covers every earlier one) and logs
 * `ready`. `count` = 0: publishes `start`, `start+1`, … forever, logging `ok <n>` once each
 * publish resolved. One write(2) per log line, so a line survives SIGKILL whole or not at all.
 */
const child = `
import { Bus } from ${JSON.stringify(dist)};
import { openSync, writeSync } from 'node:fs';
const [dir, count, start, logPath] = process.argv.slice(1).map((a, i) => (i === 0 || i === 3 ? a : Number(a)));
const log = openSync(logPath, 'a');
const out = (s) => writeSync(log, s + '\\n');
const bus = new Bus({ journal: { dir, fsync: 'batch' } });
bus.subscribe('job', (e) => {
  if (e.data % 2 === 1) throw new Error('odd');
  if (count === 0) out('d ' + e.data);
}, ${JSON.stringify(worker)});
bus.subscribe('sync', () => {}, { name: 'sync', deliveryGuarantee: 'at-least-once' });
if (count > 0) {
  for (let i = 0; i < count; i++) await bus.publish('job', i);
  const settled = () => { const s = bus.stats(); return s.acked + s.deadLettered === count; };
  while (!settled()) await new Promise((r) => setTimeout(r, 2));
  await bus.publish('sync', 0);
  out('ready ' + JSON.stringify(bus.stats().deadLetters));
} else {
  out('ready');
  for (let i = start; ; i++) {
    await bus.publish('job', i);
    out('ok ' + i);
  }
}
`;

/** Runs the child until it logs `ready`, then SIGKILLs it `killAfterMs` later. */
const runChild = (args: (string | number)[], killAfterMs: number) =>
  runLoggedChild(child, args, join(root, `child-${runs++}.log`), killAfterMs);

describe('dead letters on a journal survive SIGKILL', () => {
  it('a reopened bus replays every dead letter of the killed process once, and not after another restart', async () => {
    const dir = join(root, 'once');
    const N = 40;
    const lines = await runChild([dir, N, 0], 0);
    expect(lines.find((l) => l.startsWith('ready '))).toBe(`ready ${JSON.stringify({ retained: N / 2, evicted: 0, replayed: 0, journalErrors: 0 })}`);

    const odd = Array.from({ length: N / 2 }, (_, k) => 2 * k + 1);
    {
      const bus = new Bus({ journal: { dir } });
      expect(bus.stats().deadLetters).toEqual({ retained: N / 2, evicted: 0, replayed: 0, journalErrors: 0 });
      const got: number[] = [];
      const ids: string[] = [];
      bus.subscribe('job', (e) => void (got.push(e.data as number), ids.push(e.id)), worker);
      // Every event was settled before the kill: nothing comes back to the worker by itself.
      await new Promise((r) => setTimeout(r, 50));
      expect(got).toEqual([]);
      expect(await bus.replay('job.dead', { limit: 3 })).toBe(3);
      expect(await until(() => got.length === 3, 5000)).toBe(true);
      expect(bus.stats().deadLetters).toMatchObject({ retained: N / 2 - 3, replayed: 3 });
      expect(await bus.replay('job.dead')).toBe(N / 2 - 3);
      expect(await until(() => got.length === N / 2, 5000)).toBe(true);
      expect(got).toEqual(odd);
      expect(new Set(ids).size).toBe(N / 2);
      expect(bus.stats().deadLetters).toMatchObject({ retained: 0, replayed: N / 2 });
      expect(await bus.close()).toEqual({ unacknowledged: 0 });
    }
    {
      const bus = new Bus({ journal: { dir } });
      expect(bus.stats().deadLetters.retained).toBe(0);
      expect(await bus.replay('job.dead')).toBe(0);
      await bus.close();
    }
  }, 30_000);

  it('SIGKILLed at random points while dead-lettering: every confirmed event is delivered or replayed (lost = 0, unexpected = 0)', async () => {
    const dir = join(root, 'random');
    const ROUNDS = 5;
    const seed = Number(process.env.SLUICE_CRASH_SEED ?? Date.now() % 1e9);
    let s = seed >>> 0 || 1;
    const rand = () => ((s = (s * 1103515245 + 12345) >>> 0), s / 2 ** 32);
    const confirmed = new Set<number>();
    const delivered = new Map<number, number>();
    const count = (n: number) => delivered.set(n, (delivered.get(n) ?? 0) + 1);
    for (let round = 0; round < ROUNDS; round++) {
      const lines = await runChild([dir, 0, round * 1_000_000], 20 + Math.floor(rand() * 200));
      for (const l of lines) {
        if (l.startsWith('ok ')) confirmed.add(Number(l.slice(3)));
        else if (l.startsWith('d ')) count(Number(l.slice(2)));
      }
    }
    const bus = new Bus({ journal: { dir } });
    const retained = bus.stats().deadLetters.retained;
    // What the last child had not settled comes back to the worker; then the dead letters.
    bus.subscribe('job', (e) => void count(e.data as number), worker);
    expect(await until(() => bus.stats().journal!.unacknowledged === 0, 10_000)).toBe(true);
    expect(await bus.replay('job.dead')).toBe(retained);
    expect(await until(() => bus.stats().journal!.unacknowledged === 0, 10_000)).toBe(true);
    expect(await bus.close()).toEqual({ unacknowledged: 0 });

    const lost = [...confirmed].filter((n) => !delivered.has(n));
    // Each round published from round × 1 000 000 on: anything else was never published.
    const unexpected = [...delivered.keys()].filter((n) => !Number.isInteger(n) || n < 0 || n >= ROUNDS * 1_000_000);
    const duplicates = [...delivered.values()].reduce((a, c) => a + c - 1, 0);
    console.log(
      `dead-letter crash test (seed ${seed}): ${ROUNDS} kills, ${confirmed.size} confirmed, ${retained} dead letters replayed ` +
        `after the last kill, lost ${lost.length}, unexpected ${unexpected.length}, duplicates ${duplicates}`,
    );
    expect(lost).toEqual([]);
    expect(unexpected).toEqual([]);
    expect(confirmed.size).toBeGreaterThan(ROUNDS * 5);
    expect(retained).toBeGreaterThan(0);
    const again = new Bus({ journal: { dir } });
    expect(again.stats().deadLetters.retained).toBe(0);
    await again.close();
  }, 60_000);
});
