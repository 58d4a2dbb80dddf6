import { describe, expect, it } from 'vitest';
import { existsSync } from 'node:fs';
import { Bus, RolloutError } from '../src/index.js';
import { sleep, until, wat } from './helpers.js';
import { count, counter, deployOptions, expectEachOnceInKeyOrder, fixture, flipUnderLoad, sha256 } from './rollout-harness.js';

// Rollout of `isolation: 'process'` deployments: every version runs in helper processes of its
// own. Like test/isolation.test.ts, these need the kernel to allow namespaces and seccomp.

const alive = (pid: number) => existsSync(`/proc/${pid}`);

const isolated = (concurrency: number, labels?: Record<string, string>) => ({
  ...deployOptions(concurrency, labels),
  isolation: 'process' as const,
});

describe("rollout of isolation: 'process' deployments", () => {
  it('flips versions 100+ times under load: every event handled exactly once, per-key order kept', async () => {
    const bus = new Bus();
    const { seen, on } = count(bus);
    const [a, b, c] = await Promise.all([counter('count.a'), counter('count.b'), counter('count.c')]);
    // One dispatcher with a helper per live version: two helpers run at once around a switch,
    // so per-key order is the subscription's promise (one event per key with the handlers at a
    // time), whichever version runs it.
    const dep = await bus.deploy('flip', a, { ...isolated(1), ordering: 'per-key', key: 'subject' });
    const total = await flipUnderLoad(bus, dep, [a, b, c], seen, { atLeast: 3000, minFlips: 102, keyed: true });
    await expectEachOnceInKeyOrder(seen, total, on, 30_000);
    const info = dep.info();
    expect(info.outcomes.ack).toBe(total);
    expect(info.history.length).toBeGreaterThan(100);
    // Retired versions' helpers are closed once their last event is settled: only the
    // current version's helper is left.
    expect(await until(() => dep.info().versions.every((v) => v.role === 'current' || (v.released && v.inFlight === 0 && v.pids.length === 0)))).toBe(true);
    expect(dep.info().pids).toHaveLength(1);
    expect(dep.info().instances.live).toBe(1);
    await bus.close();
    // Every flip starts helpers (tens of ms each): more time than the default.
  }, 180_000);

  it('refuses a hash mismatch and a module that fails to compile in its helper, changing nothing', async () => {
    const bus = new Bus();
    const [a, b] = await Promise.all([counter('count.a'), counter('count.b')]);
    const dep = await bus.deploy('refuse', a, isolated(1));
    const pids = dep.info().pids;
    const mismatch = dep.rollout(b, { expectedHash: sha256(a), percent: 100 });
    await expect(mismatch).rejects.toBeInstanceOf(RolloutError);
    await expect(mismatch).rejects.toMatchObject({ code: 'ERR_HASH_MISMATCH' });
    await expect(dep.rollout(await wat(fixture('missing_handle')), { percent: 100 })).rejects.toMatchObject({ code: 'ERR_COMPILE' });
    await expect(dep.rollout(new Uint8Array([0, 97, 115, 109]), { percent: 100 })).rejects.toMatchObject({ code: 'ERR_COMPILE' });
    await expect(dep.promote()).rejects.toMatchObject({ code: 'ERR_NO_CANDIDATE' });
    const info = dep.info();
    expect(info).toMatchObject({ hash: sha256(a), candidate: null, pids, isolation: 'process' });
    expect(info.history.map((h) => h.action)).toEqual(['deploy']);
    expect(info.versions.map((v) => v.hash)).toEqual([sha256(a)]);
    expect(await dep.rollout(b, { expectedHash: sha256(b), percent: 5 })).toBe(sha256(b));
    await bus.close();
  });

  it('rolls a candidate that traps on every event back automatically, within the window', async () => {
    const bus = new Bus();
    const { seen } = count(bus);
    const a = await counter('count.a');
    const trap = await wat(fixture('trap'));
    const dep = await bus.deploy('guarded', a, isolated(2));
    const started = Date.now();
    await dep.rollout(trap, { percent: 50, autoRollback: { maxErrorRate: 0.5, windowMs: 5000, minEvents: 10 } });
    const trapPids = dep.info().versions.find((v) => v.hash === sha256(trap))!.pids;
    expect(trapPids).toHaveLength(2);
    let sent = 0;
    while (dep.info().lastRollback === null && sent < 5000) {
      await bus.publish('in.x', sent++);
      if (sent % 20 === 0) await sleep(1);
    }
    const took = Date.now() - started;
    const info = dep.info();
    expect(info.lastRollback).toMatchObject({ automatic: true, hash: sha256(trap), restored: sha256(a) });
    expect(info.lastRollback!.reason).toMatch(/error rate/);
    expect(took).toBeLessThan(5000);
    expect(info.candidate).toBeNull();
    expect(info.history.at(-1)!.action).toBe('auto-rollback');
    expect(await until(() => {
      const i = dep.info();
      return i.outcomes.ack + (i.outcomes.errors['ERR_TRAP'] ?? 0) === sent;
    })).toBe(true);
    const trapped = dep.info().outcomes.errors['ERR_TRAP']!;
    expect(trapped).toBeGreaterThanOrEqual(10);
    expect(dep.info().subscriptions[0]!.failed).toBe(trapped);
    // The trapping version's helpers are gone once its last event settled.
    expect(await until(() => trapPids.every((p) => !alive(p)))).toBe(true);
    for (let i = 0; i < 100; i++) await bus.publish('in.x', 100_000 + i);
    expect(await until(() => seen.filter((s) => s.n >= 100_000).length === 100)).toBe(true);
    await bus.close();
  });

  it('promote moves pids to the new helpers and ends the old ones; rollback restores an older hash in new helpers', async () => {
    const bus = new Bus();
    const { seen } = count(bus);
    // Observers get every step (the audit trail) and, per event, the hash of the version that ran it.
    const steps: { reason: string | null; detail: string | null }[] = [];
    const ran: (string | null)[] = [];
    bus.use({
      rolloutStep: (r) => void steps.push({ reason: r.reason, detail: r.detail }),
      handlerEnd: (r) => void (r.name === 'history' && ran.push(r.detail)),
    });
    const [a, b, c] = await Promise.all([counter('count.a'), counter('count.b'), counter('count.c')]);
    const dep = await bus.deploy('history', a, isolated(1, { env: 'prod' }));
    const first = dep.info().pids;
    expect(first).toHaveLength(1);
    await dep.rollout(b, { percent: 5, actor: 'alice' });
    const candidate = dep.info().versions.find((v) => v.hash === sha256(b))!;
    expect(candidate).toMatchObject({ role: 'candidate', released: false, inFlight: 0 });
    expect(candidate.pids).toHaveLength(1);
    expect(candidate.pids[0]).not.toBe(first[0]);
    expect(alive(candidate.pids[0]!)).toBe(true);
    await dep.setTraffic({ percent: 20, actor: 'alice' });
    expect(await dep.promote({ actor: 'alice' })).toBe(sha256(b));
    expect(dep.info().pids).toEqual(candidate.pids);
    // The old version had nothing in flight: its helper is closed and reaped.
    expect(await until(() => !alive(first[0]!))).toBe(true);
    expect(await until(() => dep.info().versions[0]!.released)).toBe(true);
    expect(dep.info().versions[0]).toMatchObject({ hash: sha256(a), role: 'retired', inFlight: 0, pids: [], releases: 1 });
    await dep.rollout(c, { percent: 100, actor: 'alice' });
    await dep.promote({ actor: 'alice' });
    expect(await dep.rollback({ toHash: sha256(a), actor: 'bob', reason: 'incident 7' })).toBe(sha256(a));
    const restored = dep.info();
    expect(restored.hash).toBe(sha256(a));
    expect(restored.pids).toHaveLength(1);
    expect(restored.pids[0]).not.toBe(first[0]);
    expect(restored.versions[0]).toMatchObject({ role: 'current', activations: 2 });
    await bus.publish('in.x', 1);
    expect(await until(() => seen.length === 1)).toBe(true);
    expect(seen[0]!.topic).toBe('count.a');
    expect(await dep.rollback()).toBe(sha256(c));
    const info = dep.info();
    expect(info.history.map((h) => h.action)).toEqual(['deploy', 'rollout', 'traffic', 'promote', 'rollout', 'promote', 'rollback', 'rollback']);
    expect(info.history[6]).toMatchObject({ hash: sha256(a), previous: sha256(c), actor: 'bob' });
    expect(info.lastRollback).toMatchObject({ automatic: false, hash: sha256(a), restored: sha256(c) });
    expect(await until(() => steps.length === 8 && ran.length === 1)).toBe(true);
    expect(steps.map((st) => st.reason)).toEqual(info.history.map((h) => h.action));
    expect(JSON.parse(steps[6]!.detail!)).toMatchObject({ action: 'rollback', hash: sha256(a), actor: 'bob' });
    expect(ran).toEqual([sha256(a)]);
    // Only hashes this deployment ran can be restored: helpers compile, this process never did.
    await expect(dep.rollback({ toHash: `sha256:${'0'.repeat(64)}` })).rejects.toMatchObject({ code: 'ERR_UNKNOWN_VERSION' });
    expect(await until(() => dep.info().versions.filter((v) => v.role === 'retired').every((v) => v.released && v.pids.length === 0))).toBe(true);
    const pids = dep.info().pids;
    await bus.close();
    expect(await until(() => pids.every((p) => !alive(p)))).toBe(true);
  });

  it('events already in a version helper finish there while new ones go to the next version', async () => {
    const bus = new Bus();
    const { seen, on } = count(bus);
    // A slow version: each event spins for a while in its helper, then acks (emitting nothing).
    const slow = await wat(`(module
      (memory (export "memory") 1)
      (func (export "sluice_alloc") (param i32) (result i32) (i32.const 1024))
      (func (export "sluice_handle") (param i32 i32) (result i32)
        (local $i i32)
        (loop $spin
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if $spin (i32.lt_u (local.get $i) (i32.const 30000000))))
        (i32.const 0)))`);
    const b = await counter('count.b');
    const dep = await bus.deploy('drain', slow, { ...isolated(1), emits: ['count.*'] });
    for (let i = 0; i < 10; i++) await bus.publish('in.x', i);
    expect(await until(() => dep.info().versions[0]!.inFlight > 0)).toBe(true);
    await dep.rollout(b, { percent: 100 });
    await dep.promote();
    const old = dep.info().versions[0]!;
    expect(old).toMatchObject({ role: 'retired', released: false });
    expect(old.inFlight).toBeGreaterThan(0);
    for (let i = 10; i < 20; i++) await bus.publish('in.x', i);
    expect(await until(() => dep.info().outcomes.ack === 20, 20_000)).toBe(true);
    expect(on('count.b')).toBeGreaterThanOrEqual(10);
    expect(seen.every((s) => s.topic === 'count.b')).toBe(true);
    expect(await until(() => dep.info().versions[0]!.released)).toBe(true);
    await bus.close();
  });

  it('shadows a candidate in its own helper: copies compared, its emits never published', async () => {
    const bus = new Bus();
    const { seen, on } = count(bus);
    const [a, b] = await Promise.all([counter('count.a'), counter('count.b')]);
    const dep = await bus.deploy('shadowed', a, isolated(1));
    await dep.rollout(b, { percent: 100, shadow: true });
    for (let i = 0; i < 100; i++) await bus.publish('in.x', i);
    expect(await until(() => seen.length === 100 && dep.info().shadow?.compared === 100)).toBe(true);
    expect(on('count.b')).toBe(0);
    expect(dep.info().shadow).toMatchObject({ hash: sha256(b), active: true, copied: 100, emitsDiffer: 100, outcomeDiffers: 0 });
    const shadow = dep.info().versions.find((v) => v.hash === sha256(b))!;
    expect(shadow.role).toBe('shadow');
    expect(shadow.handled).toBe(100);
    expect(dep.info().outcomes.ack).toBe(200);
    await dep.rollback();
    expect(dep.info().shadow?.active).toBe(false);
    expect(await until(() => shadow.pids.every((p) => !alive(p)))).toBe(true);
    await bus.close();
  });
});
