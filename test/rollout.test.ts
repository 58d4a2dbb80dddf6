import { describe, expect, it } from 'vitest';
import { Bus, RolloutError, SandboxError } from '../src/index.js';
import { until, wat } from './helpers.js';
import { count, counter, deployOptions, expectEachOnceInKeyOrder, fixture, flipUnderLoad, sha256 } from './rollout-harness.js';

describe('rollout of WASM handler versions', () => {
  it('flips versions 100+ times under load: every event handled exactly once, per-key order kept', async () => {
    const bus = new Bus();
    const { seen, on } = count(bus);
    const [a, b, c] = await Promise.all([counter('count.a'), counter('count.b'), counter('count.c')]);
    const dep = await bus.deploy('flip', a, deployOptions(1));
    const total = await flipUnderLoad(bus, dep, [a, b, c], seen, { atLeast: 6000, minFlips: 120 });
    await expectEachOnceInKeyOrder(seen, total, on, 20_000);
    const info = dep.info();
    expect(info.outcomes.ack).toBe(total);
    expect(info.history.length).toBeGreaterThan(100);
    expect(info.history.filter((h) => h.action !== 'deploy').every((h) => h.actor === 'ci')).toBe(true);
    expect(await until(() => dep.info().versions.every((v) => v.role === 'current' || (v.released && v.inFlight === 0)))).toBe(true);
    expect(dep.info().instances.live).toBe(1);
    await bus.close();
  });

  it('refuses a hash mismatch and a module that fails to compile, changing nothing', async () => {
    const bus = new Bus();
    const [a, b] = await Promise.all([counter('count.a'), counter('count.b')]);
    const dep = await bus.deploy('refuse', a, deployOptions(1));
    const mismatch = dep.rollout(b, { expectedHash: sha256(a), percent: 100 });
    await expect(mismatch).rejects.toBeInstanceOf(RolloutError);
    await expect(mismatch).rejects.toMatchObject({ code: 'ERR_HASH_MISMATCH' });
    const broken = dep.rollout(await wat(fixture('missing_handle')), { percent: 100 });
    await expect(broken).rejects.toBeInstanceOf(SandboxError);
    await expect(broken).rejects.toMatchObject({ code: 'ERR_COMPILE' });
    await expect(dep.rollout(new Uint8Array([0, 97, 115, 109]), { percent: 100 })).rejects.toMatchObject({ code: 'ERR_COMPILE' });
    await expect(dep.promote()).rejects.toMatchObject({ code: 'ERR_NO_CANDIDATE' });
    await expect(dep.rollback()).rejects.toMatchObject({ code: 'ERR_UNKNOWN_VERSION' });
    await expect(dep.rollout(b, { percent: 150 })).rejects.toMatchObject({ code: 'ERR_INVALID_ARG' });
    const info = dep.info();
    expect(info.hash).toBe(sha256(a));
    expect(info.candidate).toBeNull();
    expect(info.history.map((h) => h.action)).toEqual(['deploy']);
    expect(await dep.rollout(b, { expectedHash: sha256(b), percent: 5 })).toBe(sha256(b));
    expect(dep.info().candidate).toMatchObject({ hash: sha256(b), percent: 5, autoRollback: { maxErrorRate: 0.05, windowMs: 10000, minEvents: 20 } });
    await bus.close();
  });

  it('rolls a candidate that traps on every event back automatically, within the window', async () => {
    const bus = new Bus();
    const { seen } = count(bus);
    const a = await counter('count.a');
    const trap = await wat(fixture('trap'));
    const dep = await bus.deploy('guarded', a, deployOptions(2));
    const started = Date.now();
    await dep.rollout(trap, { percent: 50, autoRollback: { maxErrorRate: 0.5, windowMs: 5000, minEvents: 10 } });
    let sent = 0;
    while (dep.info().lastRollback === null && sent < 5000) await bus.publish('in.x', sent++);
    const took = Date.now() - started;
    const info = dep.info();
    expect(info.lastRollback).toMatchObject({ automatic: true, hash: sha256(trap), restored: sha256(a) });
    expect(info.lastRollback!.reason).toMatch(/error rate/);
    expect(took).toBeLessThan(5000);
    expect(info.candidate).toBeNull();
    expect(info.history.at(-1)!.action).toBe('auto-rollback');
    // Every event either acked by the current version or counted as a trap.
    expect(await until(() => {
      const i = dep.info();
      return i.outcomes.ack + (i.outcomes.errors['ERR_TRAP'] ?? 0) === sent;
    })).toBe(true);
    const trapped = dep.info().outcomes.errors['ERR_TRAP']!;
    expect(trapped).toBeGreaterThanOrEqual(10);
    expect(dep.info().subscriptions[0]!.failed).toBe(trapped);
    for (let i = 0; i < 100; i++) await bus.publish('in.x', 100_000 + i);
    expect(await until(() => seen.filter((s) => s.n >= 100_000).length === 100)).toBe(true);
    await bus.close();
  });

  it('rolls back to the previous version and to an older hash, with an audit trail', async () => {
    const bus = new Bus();
    const { seen } = count(bus);
    const [a, b, c] = await Promise.all([counter('count.a'), counter('count.b'), counter('count.c')]);
    const dep = await bus.deploy('history', a, deployOptions(1, { env: 'prod' }));
    for (const next of [b, c]) {
      await dep.rollout(next, { percent: 5, actor: 'alice' });
      await dep.setTraffic({ percent: 20, actor: 'alice' });
      await dep.rollout(next, { percent: 100, actor: 'alice' });
      expect(await dep.promote({ actor: 'alice' })).toBe(sha256(next));
    }
    expect(await dep.rollback({ toHash: sha256(a), actor: 'bob', reason: 'incident 7' })).toBe(sha256(a));
    expect(dep.hash).toBe(sha256(a));
    await bus.publish('in.x', 1);
    expect(await until(() => seen.length === 1)).toBe(true);
    expect(seen[0]!.topic).toBe('count.a');
    expect(await dep.rollback()).toBe(sha256(c));
    const info = dep.info();
    expect(info.history.map((h) => h.action)).toEqual([
      'deploy', 'rollout', 'traffic', 'rollout', 'promote', 'rollout', 'traffic', 'rollout', 'promote', 'rollback', 'rollback',
    ]);
    expect(info.history[9]).toMatchObject({ hash: sha256(a), previous: sha256(c), actor: 'bob' });
    expect(info.history[9]!.reason).toMatch(/^incident 7/);
    expect(info.lastRollback).toMatchObject({ automatic: false, hash: sha256(a), restored: sha256(c) });
    expect(info.labels).toEqual({ env: 'prod' });
    await expect(dep.rollback({ toHash: `sha256:${'0'.repeat(64)}` })).rejects.toMatchObject({ code: 'ERR_UNKNOWN_VERSION' });
    // A selector this deployment's labels do not satisfy: the candidate gets nothing.
    await dep.rollout(b, { percent: 100, labels: { env: 'staging' } });
    expect(dep.info().candidate).toMatchObject({ labelsMatch: false });
    await bus.publish('in.x', 2);
    expect(await until(() => seen.length === 2)).toBe(true);
    expect(seen[1]!.topic).toBe('count.c');
    expect(await until(() => dep.info().versions.filter((v) => v.role === 'retired').every((v) => v.released))).toBe(true);
    await bus.close();
  });

  it('shadows a candidate: copies compared, its emits never published', async () => {
    const bus = new Bus();
    const { seen, on } = count(bus);
    const [a, b] = await Promise.all([counter('count.a'), counter('count.b')]);
    const dep = await bus.deploy('shadowed', a, deployOptions(1));
    await dep.rollout(b, { percent: 100, shadow: true });
    for (let i = 0; i < 100; i++) await bus.publish('in.x', i);
    expect(await until(() => seen.length === 100 && dep.info().shadow?.compared === 100)).toBe(true);
    expect(on('count.b')).toBe(0);
    expect(dep.info().shadow).toMatchObject({ hash: sha256(b), active: true, copied: 100, emitsDiffer: 100, outcomeDiffers: 0 });
    expect(dep.info().versions.find((v) => v.hash === sha256(b))!.role).toBe('shadow');
    await bus.close();
  });
});
