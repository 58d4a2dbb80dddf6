/**
 * The crash test of test/crash.test.ts for a WASM handler: a real `node` child deploys an
 * at-least-once WASM deployment (real Wasmtime, `echoGuest`: it emits each event's data on
 * `out.n` and acks) on a journal, publishes a numbered stream and is SIGKILLed at a random
 * moment, several times on the same journal. What the guest handled is observed through a
 * durable JS subscription on `out.n` (the guest's emit is appended to the journal before the
 * deployment's acknowledgement, so an acknowledged event's emit survives the kill with it). A
 * final child drains the rest. Then, in Jepsen's queue vocabulary: lost (confirmed, never
 * handled) = 0, unexpected (handled, never published) = 0; duplicates are allowed and reported.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { echoGuest, runLoggedChild } from './helpers.js';

const dist = fileURLToPath(new URL('../dist/index.js', import.meta.url));
const ROUNDS = 6;
const POLICIES = ['always', 'batch', 'never'] as const;
const root = mkdtempSync(join(tmpdir(), 'sluice-crash-wasm-'));
const guestPath = join(root, 'echo.wasm');
beforeAll(async () => writeFileSync(guestPath, await echoGuest('out.n', 0)));
afterAll(() => rmSync(root, { recursive: true, force: true }));

/**
 * `publish` = 1: logs `ready` once deployed, then publishes `start`, `start+1`, … in batches of
 * 32, logging `ok …` once their `publish()` resolved. `publish` = 0: drains and logs `left <n>`.
 * Each log line is one write(2) to a regular file, whole or absent after SIGKILL.
 */
const child = `
import { Bus } from ${JSON.stringify(dist)};
import { openSync, readFileSync, writeSync } from 'node:fs';
const [dir, fsync, start, publish, guest, logPath] = process.argv.slice(1);
const log = openSync(logPath, 'a');
const out = (s) => writeSync(log, s + '\\n');
const bus = new Bus({ journal: { dir, fsync, segmentBytes: 64 * 1024 } });
bus.subscribe('out.n', (e) => { out('d ' + e.data); }, { name: 'observer', deliveryGuarantee: 'at-least-once', capacity: 64 });
await bus.deploy('echo', readFileSync(guest), {
  topics: ['in'], emits: ['out.*'], deliveryGuarantee: 'at-least-once', capacity: 64, concurrency: 1,
});
if (publish === '1') {
  out('ready');
  for (let i = Number(start); ; i += 32) {
    const batch = Array.from({ length: 32 }, (_, k) => i + k);
    await Promise.all(batch.map((n) => bus.publish('in', n)));
    out('ok ' + batch.join(','));
  }
} else {
  const t = setInterval(async () => {
    if (bus.stats().journal.unacknowledged === 0) {
      clearInterval(t);
      out('left ' + (await bus.close()).unacknowledged);
    }
  }, 5);
}
`;

let runs = 0;

/** Runs a child; SIGKILLs it `killAfterReadyMs` after it logged `ready` (null: let it end). */
const run = (args: string[], killAfterReadyMs: number | null) =>
  runLoggedChild(child, [...args, guestPath], join(root, `child-${runs++}.log`), killAfterReadyMs);

/** A small seeded PRNG, so a failing run can be replayed with SLUICE_CRASH_SEED. */
function prng(seed: number) {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 2 ** 32;
  };
}

describe('an at-least-once WASM deployment on a journal survives SIGKILL', () => {
  it(`${ROUNDS} kills at random points: lost = 0, unexpected = 0, duplicates reported`, async () => {
    const seed = Number(process.env.SLUICE_CRASH_SEED ?? Date.now() % 1e9);
    const rand = prng(seed);
    const dir = join(root, 'journal');
    const confirmed = new Set<number>();
    const handled = new Map<number, number>();
    const note = (lines: string[]) => {
      for (const line of lines) {
        if (line.startsWith('ok ')) for (const n of line.slice(3).split(',')) confirmed.add(Number(n));
        else if (line.startsWith('d ')) {
          const n = Number(line.slice(2));
          handled.set(n, (handled.get(n) ?? 0) + 1);
        }
      }
    };
    for (let round = 0; round < ROUNDS; round++) {
      const fsync = POLICIES[round % POLICIES.length]!;
      note(await run([dir, fsync, String(round * 1_000_000), '1'], Math.floor(rand() * 200)));
    }
    const last = await run([dir, 'batch', '0', '0'], null);
    note(last);
    expect(last).toContain('left 0');

    const lost = [...confirmed].filter((n) => !handled.has(n)).length;
    // Round r published from r × 1 000 000 on: anything else was never published.
    const unexpected = [...handled.keys()].filter((n) => !Number.isInteger(n) || n < 0 || n >= ROUNDS * 1_000_000).length;
    const duplicates = [...handled.values()].reduce((s, c) => s + c - 1, 0);
    const unconfirmed = [...handled.keys()].filter((n) => !confirmed.has(n)).length;
    console.log(
      `WASM crash test (seed ${seed}): ${ROUNDS} kills, ${confirmed.size} confirmed, ${handled.size} handled, ` +
        `lost ${lost}, unexpected ${unexpected}, duplicates ${duplicates}, handled though unconfirmed ${unconfirmed}`,
    );
    expect(lost).toBe(0);
    expect(unexpected).toBe(0);
    expect(confirmed.size).toBeGreaterThan(ROUNDS * 10);
  }, 60_000);
});
