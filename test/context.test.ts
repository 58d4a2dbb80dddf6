import { describe, expect, it } from 'vitest';
import { Bus, Canceled, Context, DeadlineExceeded } from '../src/index.js';
import { sleep, until } from './helpers.js';

describe('Context', () => {
  it('cancelling a parent cancels every child, and says why', () => {
    const root = Context.background();
    const a = root.withCancel();
    const b = a.withTimeout(60_000);
    const c = b.withValue('user', 'ada');
    expect(c.err).toBeUndefined();
    a.cancel('shutdown');
    expect(b.err).toBeInstanceOf(Canceled);
    expect(c.err?.message).toContain('shutdown');
    expect(c.err?.code).toBe('ERR_CANCELED');
    expect(root.err).toBeUndefined();
    root.cancel();
    expect(root.err).toBeUndefined();
  });

  it('times out with DeadlineExceeded, and its signal aborts with that reason', async () => {
    const ctx = Context.background().withTimeout(20);
    const signal = ctx.signal;
    expect(signal.aborted).toBe(false);
    expect(ctx.deadline).toBeGreaterThan(Date.now());
    await new Promise((r) => signal.addEventListener('abort', r, { once: true }));
    expect(signal.reason).toBeInstanceOf(DeadlineExceeded);
    expect(ctx.err).toBeInstanceOf(DeadlineExceeded);
    // A child never outlives its parent.
    const child = Context.background().withTimeout(50).withDeadline(Date.now() + 60_000);
    expect(child.deadline! - Date.now()).toBeLessThan(100);
  });

  it('child signals abort when the parent is canceled', () => {
    const parent = Context.background().withCancel();
    const child = parent.withCancel();
    const s = child.signal;
    parent.cancel('bye');
    expect(s.aborted).toBe(true);
    expect(s.reason).toBeInstanceOf(Canceled);
  });

  it('fromSignal follows an AbortSignal', () => {
    const ac = new AbortController();
    const ctx = Context.fromSignal(ac.signal);
    expect(ctx.err).toBeUndefined();
    ac.abort('user left');
    expect(ctx.err?.message).toContain('user left');
    const pre = Context.fromSignal(AbortSignal.abort());
    expect(pre.err).toBeInstanceOf(Canceled);
  });

  it('values resolve nearest first and may be any JS value', () => {
    const key = Symbol('k');
    const obj = { x: 1 };
    const ctx = Context.background().withValue('a', '1').withValue(key, obj).withValue('a', '2');
    expect(ctx.value('a')).toBe('2');
    expect(ctx.value(key)).toBe(obj);
    expect(ctx.value('missing')).toBeUndefined();
  });

  it('rejects bad timeouts and deadlines with typed errors', () => {
    expect(() => Context.background().withTimeout(-1)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG' }));
    expect(() => Context.background().withTimeout(Number.NaN)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG' }));
    expect(() => Context.background().withDeadline(new Date('nope'))).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG' }));
  });
});

describe('Context through the bus', () => {
  it('a handler receives the publisher Context and the event carries its deadline', async () => {
    const bus = new Bus();
    const ctx = Context.background().withTimeout(5_000).withValue('tenant', { id: 7 });
    let seen: [Context, number | undefined] | undefined;
    bus.subscribe('t', (e, c) => void (seen = [c, e.deadline]));
    await bus.publish('t', 1, { ctx });
    await until(() => seen !== undefined);
    expect(seen![0]).toBe(ctx);
    expect(seen![0].value('tenant')).toEqual({ id: 7 });
    expect(seen![1]).toBe(ctx.deadline);
    await bus.close();
  });

  it('events whose Context ended before dispatch are expired and counted, not delivered', async () => {
    const bus = new Bus();
    const s = bus.stream('e', { batchSize: 1 });
    const short = Context.background().withTimeout(15);
    const canceled = Context.background().withCancel();
    await bus.publish('e', 'late', { ctx: short });
    await bus.publish('e', 'dropped', { ctx: canceled });
    await bus.publish('e', 'fine');
    canceled.cancel();
    await sleep(30);
    expect((await s.next()).value?.data).toBe('fine');
    const st = s.stats();
    expect(st.expired).toBe(2);
    expect(st.delivered).toBe(1);
    await s.return();
    await bus.close();
  });

  it('publishing with an ended Context fails at once', async () => {
    const bus = new Bus();
    bus.subscribe('x', () => {});
    const ctx = Context.background().withCancel();
    ctx.cancel();
    await expect(bus.publish('x', 1, { ctx })).rejects.toBeInstanceOf(Canceled);
    expect(() => bus.tryPublish('x', 1, { ctx })).toThrow(Canceled);
    expect(bus.stats().published).toBe(0);
    await bus.close();
  });
});
