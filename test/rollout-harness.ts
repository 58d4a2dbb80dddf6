// Shared by the rollout tests of in-process (rollout.test.ts) and process-isolated
// (rollout.isolation.test.ts) deployments: the versions, what they emitted, and the 100+ flips
// under load that both must survive with every event handled exactly once.
import { expect } from 'vitest';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { Bus, Deployment } from '../src/index.js';
import { echoGuest, sleep, until } from './helpers.js';

export const fixture = (name: string) =>
  readFileSync(fileURLToPath(new URL(`../crates/sandbox/tests/fixtures/${name}.wat`, import.meta.url)), 'utf8');

/** A handler that acks every event after emitting the event's data on `topic` (its version). */
export const counter = (topic: string) => echoGuest(topic);

export const sha256 = (b: Uint8Array) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

export type Seen = { topic: string; n: number }[];

/** Counts what the versions emitted, by number and by version topic, in arrival order. */
export function count(bus: Bus) {
  const seen: Seen = [];
  bus.subscribe('count.*', (e) => void seen.push({ topic: e.type, n: e.data as number }), { capacity: 1 << 16 });
  const on = (topic: string) => seen.filter((s) => s.topic === topic).length;
  return { seen, on };
}

/** In-process deployment options on `in.*`, emitting on `count.*`. */
export const deployOptions = (concurrency: number, labels?: Record<string, string>) => ({
  topics: ['in.*'],
  emits: ['count.*'],
  concurrency,
  capacity: 1 << 16,
  overflow: 'block' as const,
  limits: { timeoutMs: 5000 },
  labels,
});

/**
 * Publishes numbers on `in.x` (keyed `k<n % 8>` as subject when `keyed`) while cycling `dep`
 * through rollout 5 % → traffic 50 % → promote → rollout 100 % → rollback → rollback to an
 * older hash, at least `minFlips` steps and until `atLeast` events went out; the publisher
 * keeps going until the flips end, so every version serves events however fast either loop
 * runs. Ends after a whole cycle, with no candidate left. Returns how many were published.
 */
export async function flipUnderLoad(
  bus: Bus,
  dep: Deployment,
  [a, b, c]: Uint8Array[],
  seen: Seen,
  { atLeast, minFlips, keyed = false }: { atLeast: number; minFlips: number; keyed?: boolean },
): Promise<number> {
  let published = 0;
  let flipping = true;
  const publisher = (async () => {
    for (; published < atLeast || flipping; published++) {
      await bus.publish('in.x', published, keyed ? { subject: `k${published % 8}` } : undefined);
      if (published % 50 === 0) await new Promise((r) => setImmediate(r));
    }
  })();
  const steps: ((d: Deployment) => Promise<unknown>)[] = [
    (d) => d.rollout(d.hash === sha256(a!) ? b! : a!, { percent: 5, autoRollback: false, actor: 'ci' }),
    (d) => d.setTraffic({ percent: 50, actor: 'ci' }),
    (d) => d.promote({ actor: 'ci' }),
    (d) => d.rollout(c!, { percent: 100, actor: 'ci' }),
    (d) => d.rollback({ actor: 'ci' }),
    (d) => d.rollback({ toHash: d.hash === sha256(a!) ? sha256(b!) : sha256(a!), actor: 'ci' }),
  ];
  let flips = 0;
  while (published < atLeast || flips < minFlips || flips % steps.length !== 0) {
    await steps[flips % steps.length]!(dep);
    flips++;
    // Let a few events through after every step, so every version gets events.
    const before = seen.length;
    await until(() => seen.length >= before + 3, 5000);
    await sleep(1);
  }
  flipping = false;
  await publisher;
  return published;
}

/** Every one of `total` numbers handled exactly once, by every version, in order per key. */
export async function expectEachOnceInKeyOrder(seen: Seen, total: number, on: (topic: string) => number, waitMs: number) {
  expect(await until(() => seen.length >= total, waitMs)).toBe(true);
  expect(seen.length).toBe(total);
  const times = new Array<number>(total).fill(0);
  for (const s of seen) times[s.n]!++;
  expect(times.every((t) => t === 1)).toBe(true);
  expect(on('count.a') > 0 && on('count.b') > 0 && on('count.c') > 0).toBe(true);
  for (let key = 0; key < 8; key++) {
    const seq = seen.map((s) => s.n).filter((n) => n % 8 === key);
    expect(seq.every((n, i) => i === 0 || n > seq[i - 1]!)).toBe(true);
  }
}
