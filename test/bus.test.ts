import { describe, expect, it } from 'vitest';
import { Bus, BusClosed, Context, EncodeError, InvalidArgument, QueueFull, SluiceError, Unsupported } from '../src/index.js';
import { sleep, until } from './helpers.js';

/** The `code` of the typed error `f` throws (failing the test if it is not a SluiceError). */
function codeOf(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(SluiceError);
    return (e as SluiceError).code;
  }
  return 'no error';
}

type Events = {
  'order.created': { id: string; amount: number };
  'order.shipped': { id: string };
  'audit.log.write': { line: string };
};

describe('Bus publish → subscribe', () => {
  it('delivers typed events with CloudEvents attributes through the core', async () => {
    const bus = new Bus<Events>({ source: 'shop' });
    const seen: unknown[] = [];
    bus.subscribe('order.created', (e) => {
      seen.push([e.type, e.data.id, e.data.amount, e.source, typeof e.id, typeof e.time]);
    });
    await bus.publish('order.created', { id: 'a', amount: 3 }, { subject: 'eu' });
    expect(await until(() => seen.length === 1)).toBe(true);
    expect(seen[0]).toEqual(['order.created', 'a', 3, 'shop', 'string', 'number']);
    await bus.close();
  });

  it('routes exact, one-segment and rest patterns to every matching subscription', async () => {
    const bus = new Bus<Events>();
    const hits: Record<string, string[]> = { exact: [], one: [], rest: [], none: [] };
    bus.subscribe('order.created', (e) => void hits.exact!.push(e.type));
    bus.subscribe('order.*', (e) => void hits.one!.push(e.type));
    bus.subscribe('audit.>', (e) => void hits.rest!.push(e.type));
    bus.subscribe('payment.*', (e) => void hits.none!.push(e.type));
    await bus.publish('order.created', { id: '1', amount: 1 });
    await bus.publish('order.shipped', { id: '1' });
    await bus.publish('audit.log.write', { line: 'x' });
    await until(() => hits.one!.length === 2 && hits.rest!.length === 1);
    expect(hits).toEqual({
      exact: ['order.created'],
      one: ['order.created', 'order.shipped'],
      rest: ['audit.log.write'],
      none: [],
    });
    expect(bus.stats().unrouted).toBe(0);
    await bus.close();
  });

  it('keeps order for concurrency 1 and bounds concurrency for async handlers', async () => {
    const bus = new Bus<{ n: number }>({ capacity: 64 });
    const order: number[] = [];
    bus.subscribe('n', (e) => void order.push(e.data as number));
    let running = 0;
    let peak = 0;
    let done = 0;
    bus.subscribe(
      'n',
      async () => {
        running++;
        peak = Math.max(peak, running);
        await sleep(1);
        running--;
        done++;
      },
      { concurrency: 4 },
    );
    for (let i = 0; i < 200; i++) await bus.publish('n', i);
    expect(await until(() => done === 200 && order.length === 200)).toBe(true);
    expect(order).toEqual([...Array(200).keys()]);
    expect(peak).toBeLessThanOrEqual(4);
    expect(peak).toBeGreaterThan(1);
    await bus.close();
  });

  it('counts a throwing or rejecting handler, reports it, and keeps delivering', async () => {
    const bus = new Bus<{ t: number }>();
    const errors: unknown[] = [];
    const ok: number[] = [];
    const sub = bus.subscribe(
      't',
      async (e) => {
        const n = e.data as number;
        if (n === 1) throw new Error('sync-ish boom');
        if (n === 2) return Promise.reject(new Error('async boom'));
        ok.push(n);
      },
      { onError: (err) => errors.push((err as Error).message) },
    );
    const syncSub = bus.subscribe('t', (e) => {
      if (e.data === 3) throw new Error('sync boom');
    });
    for (const n of [0, 1, 2, 3, 4]) await bus.publish('t', n);
    await until(() => ok.length === 3);
    await bus.close();
    expect(ok).toEqual([0, 3, 4]);
    expect(errors.sort()).toEqual(['async boom', 'sync-ish boom']);
    expect(sub.stats().failed).toBe(2);
    expect(syncSub.stats().failed).toBe(1);
    // Totals survive close: removed subscriptions are folded into the bus figures.
    expect(bus.stats()).toMatchObject({ failed: 3, delivered: 10, subscriptions: [] });
  });

  it('unsubscribe and Symbol.dispose stop delivery', async () => {
    const bus = new Bus<{ x: number }>();
    const got: number[] = [];
    {
      using sub = bus.subscribe('x', (e) => void got.push(e.data as number));
      await bus.publish('x', 1);
      await until(() => got.length === 1);
      expect(sub.closed).toBe(false);
    }
    await bus.publish('x', 2);
    await sleep(20);
    expect(got).toEqual([1]);
    expect(bus.stats().unrouted).toBe(1);
    await bus.close();
  });

  it('runs declarative filters in the core and JS predicates on the JS thread, counting both', async () => {
    const bus = new Bus<Events>();
    const big: number[] = [];
    const js: number[] = [];
    const core = bus.subscribe('order.created', (e) => void big.push(e.data.amount), {
      filter: [{ field: 'amount', op: 'gte', value: 100 }],
    });
    const fn = bus.subscribe('order.created', (e) => void js.push(e.data.amount), { filter: (e) => e.data.amount % 2 === 0 });
    for (const amount of [5, 100, 150, 7, 200]) await bus.publish('order.created', { id: 'x', amount });
    await until(() => big.length === 3 && js.length === 3);
    await sleep(5);
    expect(big).toEqual([100, 150, 200]);
    expect(js).toEqual([100, 150, 200]);
    expect(core.stats().filtered).toBe(2);
    expect(core.stats().published).toBe(3);
    expect(fn.stats().filtered).toBe(2);
    await bus.close();
  });

  it('publishBatch and tryPublishBatch keep order across mixed topics', async () => {
    const bus = new Bus<Events>();
    const got: string[] = [];
    bus.subscribe('order.*', (e) => void got.push(`${e.type}:${e.data.id}`));
    await bus.publishBatch([
      { type: 'order.created', data: { id: '1', amount: 1 } },
      { type: 'order.shipped', data: { id: '1' } },
    ]);
    expect(bus.tryPublishBatch(Array.from({ length: 3 }, (_, i) => ({ type: 'order.shipped' as const, data: { id: `s${i}` } })))).toBe(3);
    await until(() => got.length === 5);
    expect(got).toEqual(['order.created:1', 'order.shipped:1', 'order.shipped:s0', 'order.shipped:s1', 'order.shipped:s2']);
    await bus.close();
  });

  it('carries byte arrays as bytes', async () => {
    const bus = new Bus();
    const got: unknown[] = [];
    bus.subscribe('bin', (e) => void got.push(e.data));
    await bus.publish('bin', new Uint8Array([0, 1, 255]));
    expect(bus.tryPublish('bin', Buffer.from('hi'))).toBe(true);
    await bus.publish('bin', new Uint8Array([7]), { subject: 'by-name path' });
    await until(() => got.length === 3);
    expect(got.every((d) => Buffer.isBuffer(d))).toBe(true);
    expect(got.map((d) => [...(d as Buffer)])).toEqual([[0, 1, 255], [104, 105], [7]]);
    await bus.close();
  });
});

describe('the per-event publish path (tryPublish / tryPublishBatch without a Context)', () => {
  it('copies exactly the bytes of a Uint8Array view, wherever it starts in its buffer', async () => {
    const bus = new Bus();
    const got: number[][] = [];
    bus.subscribe('bin', (e) => void got.push([...(e.data as Buffer)]));
    const whole = new Uint8Array([9, 9, 1, 2, 3, 9]);
    expect(bus.tryPublish('bin', whole.subarray(2, 5))).toBe(true);
    expect(bus.tryPublish('bin', new Uint8Array(0))).toBe(true);
    whole.fill(0); // the event owns its copy
    await until(() => got.length === 2);
    expect(got).toEqual([[1, 2, 3], []]);
    await bus.close();
  });

  it('publishes a batch of byte arrays in one piece: exact bytes, in order, each event its own copy', async () => {
    const bus = new Bus();
    const got: string[] = [];
    bus.subscribe('bin.*', (e) => void got.push(`${e.type}:${[...(e.data as Buffer)]}`));
    const whole = new Uint8Array([9, 1, 2, 9, 3, 9]);
    const batch = [whole.subarray(1, 3), new Uint8Array(0), whole.subarray(4, 5), Buffer.from('hi')];
    expect(bus.tryPublishBatch(batch.map((data) => ({ type: 'bin.a', data })))).toBe(4);
    whole.fill(0); // the events own their copies
    // Several topics and a Context take the general path; publishBatch the awaited one.
    const ctx = Context.background().withTimeout(10_000);
    expect(bus.tryPublishBatch([{ type: 'bin.b', data: new Uint8Array([5]) }, { type: 'bin.c', data: new Uint8Array([6]) }], { ctx })).toBe(2);
    await bus.publishBatch([{ type: 'bin.d', data: new Uint8Array([7, 8]) }, { type: 'bin.d', data: new Uint8Array([255]) }], { ctx });
    await until(() => got.length === 8);
    expect(got).toEqual(['bin.a:1,2', 'bin.a:', 'bin.a:3', 'bin.a:104,105', 'bin.b:5', 'bin.c:6', 'bin.d:7,8', 'bin.d:255']);
    ctx.cancel();
    await bus.close();
  });

  it('reuses its packing buffer across tryPublishBatch calls without one batch showing in another', async () => {
    // tryPublishBatch packs into a buffer the bus keeps; each event must still own its bytes,
    // whether the next batch is shorter, longer (the buffer grows) or above the reuse limit.
    const bus = new Bus({ capacity: 4096 });
    const got: string[] = [];
    bus.subscribe('bin', (e) => void got.push(Buffer.from(e.data as Buffer).toString('latin1')));
    const sizes = [5, 1, 64, 3, 2_000_000, 7];
    const expected: string[] = [];
    for (const [b, size] of sizes.entries()) {
      const events = [0, 1].map((i) => {
        const text = String.fromCharCode(97 + b + i).repeat(size - i || 1);
        expected.push(text);
        return { type: 'bin', data: Buffer.from(text, 'latin1') };
      });
      expect(bus.tryPublishBatch(events)).toBe(2);
    }
    await until(() => got.length === expected.length);
    expect(got.map((t) => `${t[0]}×${t.length}`)).toEqual(expected.map((t) => `${t[0]}×${t.length}`));
    expect(got).toEqual(expected);
    await bus.close();
  });

  it('counts a full queue in a packed batch like in any other batch', async () => {
    const bus = new Bus();
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    const sub = bus.subscribe('bin', () => held, { capacity: 2, overflow: 'drop-newest', concurrency: 1 });
    await sleep(5);
    const took = bus.tryPublishBatch(Array.from({ length: 6 }, (_, i) => ({ type: 'bin', data: new Uint8Array([i]) })));
    // One event may already be in the handler (taken from the queue), two fit in the queue.
    expect(took).toBeGreaterThanOrEqual(2);
    expect(took).toBeLessThanOrEqual(3);
    expect(sub.stats().droppedNewest).toBe(6 - took);
    release();
    await bus.close();
  });

  it('publishes a batch mixing JSON data and byte arrays event by event, in order', async () => {
    const bus = new Bus();
    const got: unknown[] = [];
    bus.subscribe('mix', (e) => void got.push(e.data instanceof Uint8Array ? [...e.data] : e.data));
    expect(bus.tryPublishBatch([{ type: 'mix', data: { a: 1 } }, { type: 'mix', data: new Uint8Array([2]) }])).toBe(2);
    await bus.publishBatch([{ type: 'mix', data: new Uint8Array([3]) }, { type: 'mix', data: 'four' }]);
    await until(() => got.length === 4);
    expect(got).toEqual([{ a: 1 }, [2], [3], 'four']);
    await bus.close();
  });

  it('carries non-ASCII JSON text intact, single and batched', async () => {
    const bus = new Bus();
    const got: unknown[] = [];
    bus.subscribe('txt', (e) => void got.push(e.data));
    const data = { s: 'héllo wörld — 🎉 ✓', n: -0.5 };
    expect(bus.tryPublish('txt', data)).toBe(true);
    expect(bus.tryPublishBatch([{ type: 'txt', data }, { type: 'txt', data: { s: '漢字' } }])).toBe(2);
    await until(() => got.length === 3);
    expect(got).toEqual([data, data, { s: '漢字' }]);
    // Around the size where the binding stops converting in one pass (65536 UTF-16 units):
    // three-byte characters fill the one-pass buffer exactly, surrogate pairs take four bytes.
    const sizes = [1360, 2040, 21845, 32768, 65536, 70000];
    const big = sizes.flatMap((n) => [{ s: '漢'.repeat(n) }, { s: '🎉'.repeat(n / 2 | 0) + 'é' }]);
    for (const d of big) expect(bus.tryPublish('txt', d)).toBe(true);
    await until(() => got.length === 3 + big.length);
    expect(got.slice(3)).toEqual(big);
    await bus.close();
  });

  it('routes each publish to its own topic when publishers switch topics (last-topic cache)', async () => {
    const bus = new Bus();
    const got: string[] = [];
    bus.subscribe('t.a', (e) => void got.push(`a:${e.data}`));
    bus.subscribe('t.b', (e) => void got.push(`b:${e.data instanceof Uint8Array ? `bytes ${[...e.data]}` : e.data}`));
    const order = ['t.a', 't.a', 't.b', 't.a', 't.b', 't.b', 't.c', 't.a'];
    // `${…}` builds a new string each time: the cache must compare contents, not identity.
    order.forEach((t, i) => bus.tryPublish(`${t}`, i));
    bus.tryPublish('t.b', new Uint8Array([7]));
    await until(() => got.length === 8);
    const want = order.flatMap((t, i) => (t === 't.c' ? [] : [`${t.slice(2)}:${i}`]));
    expect(got.filter((g) => g.startsWith('a')).join()).toBe(want.filter((g) => g.startsWith('a')).join());
    expect(got.filter((g) => g.startsWith('b')).join()).toBe([...want.filter((g) => g.startsWith('b')), 'b:bytes 7'].join());
    expect(bus.stats().unrouted).toBe(1);
    await bus.close();
  });

  it('refuses after close with ERR_CLOSED and counts every publish it took', async () => {
    const bus = new Bus();
    bus.subscribe('c', () => {});
    for (let i = 0; i < 10; i++) bus.tryPublish('c', i);
    expect(bus.tryPublishBatch(Array.from({ length: 5 }, (_, i) => ({ type: 'c', data: i })))).toBe(5);
    expect(bus.stats().published).toBe(15);
    await bus.close();
    expect(codeOf(() => bus.tryPublish('c', 1))).toBe('ERR_CLOSED');
    expect(codeOf(() => bus.tryPublish('c', new Uint8Array([1])))).toBe('ERR_CLOSED');
    expect(codeOf(() => bus.tryPublishBatch([{ type: 'c', data: 1 }]))).toBe('ERR_CLOSED');
  });
});

describe('overflow policies through the API', () => {
  it('error policy rejects with QueueFull and tryPublish returns false', async () => {
    const bus = new Bus();
    const stream = bus.stream('q', { capacity: 2, overflow: 'error' });
    expect(bus.tryPublish('q', 1)).toBe(true);
    await bus.publish('q', 2);
    expect(bus.tryPublish('q', 3)).toBe(false);
    await expect(bus.publish('q', 4)).rejects.toBeInstanceOf(QueueFull);
    const st = stream.stats();
    expect([st.depth, st.droppedFull]).toEqual([2, 2]);
    await stream.return();
    await bus.close();
  });

  it('drop-newest keeps the first, drop-oldest keeps the last, both counted', async () => {
    const bus = new Bus();
    const newest = bus.stream('d', { capacity: 3, overflow: 'drop-newest', name: 'newest' });
    expect(newest.stats().name).toBe('newest');
    const oldest = bus.stream('d', { capacity: 3, overflow: 'drop-oldest' });
    for (let i = 0; i < 10; i++) await bus.publish('d', i);
    const take = async (s: AsyncIterator<{ data: unknown }>, n: number) => {
      const out: unknown[] = [];
      for (let i = 0; i < n; i++) out.push((await s.next()).value.data);
      return out;
    };
    expect(newest.stats().droppedNewest).toBe(7);
    expect(oldest.stats().droppedOldest).toBe(7);
    expect(await take(newest, 3)).toEqual([0, 1, 2]);
    expect(await take(oldest, 3)).toEqual([7, 8, 9]);
    await bus.close();
  });

  it('block waits for space, and gives up with the Context', async () => {
    const bus = new Bus();
    const s = bus.stream('b', { capacity: 1, overflow: 'block' });
    await bus.publish('b', 1);
    let resolved = false;
    const waiting = bus.publish('b', 2).then(() => (resolved = true));
    await sleep(30);
    expect(resolved).toBe(false);
    expect(s.stats().blockedPublishers).toBe(1);
    expect((await s.next()).value?.data).toBe(1);
    await waiting;
    expect(resolved).toBe(true);

    const ctx = Context.background().withTimeout(30);
    const t0 = Date.now();
    await expect(bus.publish('b', 3, { ctx })).rejects.toMatchObject({ code: 'ERR_DEADLINE_EXCEEDED' });
    expect(Date.now() - t0).toBeLessThan(1000);
    const c2 = Context.background().withCancel();
    const p = bus.publish('b', 4, { ctx: c2 });
    setTimeout(() => c2.cancel('stop'), 10);
    await expect(p).rejects.toMatchObject({ code: 'ERR_CANCELED' });
    expect(s.stats().droppedCanceled).toBe(2);
    expect(bus.tryPublish('b', 5)).toBe(false);
    expect(s.stats().droppedFull).toBe(1);
    await s.return();
    await bus.close();
  });

  it('blocked publishers hold no thread: the libuv pool stays free for I/O', async () => {
    const { readFile } = await import('node:fs/promises');
    const bus = new Bus();
    const s = bus.stream('b', { capacity: 1, overflow: 'block', batchSize: 1 });
    await bus.publish('b', 0);
    // More waiting publishers than libuv has pool threads (4 by default).
    const waiting = Array.from({ length: 8 }, (_, i) => bus.publish('b', i + 1));
    await sleep(20);
    expect(s.stats().blockedPublishers).toBeGreaterThanOrEqual(1);
    const t0 = Date.now();
    await readFile(new URL(import.meta.url));
    expect(Date.now() - t0).toBeLessThan(1000);
    const got: unknown[] = [];
    for (let i = 0; i < 9; i++) got.push((await s.next()).value?.data);
    await Promise.all(waiting);
    expect(got.sort((a, b) => (a as number) - (b as number))).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8]);
    await s.return();
    await bus.close();
  });

  it('spill is refused until the journal exists', () => {
    const bus = new Bus();
    expect(() => bus.subscribe('x', () => {}, { overflow: 'spill' })).toThrow(Unsupported);
    expect(() => new Bus({ overflow: 'spill' })).toThrow(Unsupported);
  });
});

describe('bad input gets typed errors', () => {
  it('rejects bad capacity, policy, pattern, topic, data, and use after close', async () => {
    expect(codeOf(() => new Bus({ capacity: 0 }))).toBe('ERR_INVALID_ARG');
    expect(codeOf(() => new Bus({ capacity: -5 }))).toBe('ERR_INVALID_ARG');
    expect(codeOf(() => new Bus({ capacity: 1.5 }))).toBe('ERR_INVALID_ARG');
    expect(codeOf(() => new Bus({ overflow: 'sometimes' as never }))).toBe('ERR_INVALID_ARG');
    const bus = new Bus();
    expect(codeOf(() => bus.subscribe('a..b', () => {}))).toBe('ERR_INVALID_ARG');
    expect(codeOf(() => bus.subscribe('a.>.b', () => {}))).toBe('ERR_INVALID_ARG');
    expect(codeOf(() => bus.subscribe('a', () => {}, { concurrency: 0 }))).toBe('ERR_INVALID_ARG');
    expect(codeOf(() => bus.subscribe('a', () => {}, { filter: { field: 'x', op: 'regex' as never, value: 1 } }))).toBe(
      'ERR_INVALID_ARG',
    );
    expect(codeOf(() => bus.tryPublish('a.*', 1))).toBe('ERR_INVALID_ARG');
    expect(codeOf(() => bus.tryPublish('', 1))).toBe('ERR_INVALID_ARG');
    expect(codeOf(() => bus.tryPublish('a', 10n as never))).toBe('ERR_ENCODE');
    expect(codeOf(() => bus.tryPublish('a', (() => 1) as never))).toBe('ERR_ENCODE');
    await expect(bus.publish('a', 10n as never)).rejects.toBeInstanceOf(EncodeError);
    expect(codeOf(() => bus.subscribe('a', 'nope' as never))).toBe('ERR_INVALID_ARG');
    await bus.close();
    await expect(bus.publish('a', 1)).rejects.toBeInstanceOf(BusClosed);
    expect(codeOf(() => bus.tryPublish('a', 1))).toBe('ERR_CLOSED');
    expect(codeOf(() => bus.subscribe('a', () => {}))).toBe('ERR_CLOSED');
    expect(InvalidArgument).toBeDefined();
  });
});

describe('close', () => {
  it('drains queued events to handlers before releasing', async () => {
    const bus = new Bus({ capacity: 1000 });
    let n = 0;
    bus.subscribe('w', async () => {
      await sleep(0);
      n++;
    });
    for (let i = 0; i < 100; i++) bus.tryPublish('w', i);
    await bus.close();
    expect(n).toBe(100);
    expect(bus.closed).toBe(true);
  });

  it('stops draining when its Context ends and counts what was left', async () => {
    const bus = new Bus({ capacity: 1000 });
    let n = 0;
    const sub = bus.subscribe('w', async () => {
      await sleep(20);
      n++;
    });
    for (let i = 0; i < 50; i++) bus.tryPublish('w', i);
    await bus.close({ ctx: Context.background().withTimeout(60) });
    const st = sub.stats();
    expect(n).toBeLessThan(50);
    expect(st.droppedClosed).toBeGreaterThan(0);
    expect(st.delivered + st.droppedClosed).toBe(50);
  });
});

describe('stream', () => {
  it('iterates matching events and ends on abort with the signal reason', async () => {
    const bus = new Bus<Events>();
    const ac = new AbortController();
    const got: string[] = [];
    const loop = (async () => {
      for await (const e of bus.stream('order.*', { signal: ac.signal })) {
        got.push(e.type);
        if (got.length === 2) ac.abort(new Error('enough'));
      }
    })();
    await bus.publish('order.created', { id: '1', amount: 1 });
    await bus.publish('order.shipped', { id: '1' });
    await expect(loop).rejects.toThrow('enough');
    expect(got).toEqual(['order.created', 'order.shipped']);
    expect(bus.stats().subscriptions.length).toBe(0);
    await bus.close();
  });

  it('is AsyncDisposable and ends when the bus closes', async () => {
    const bus = new Bus();
    {
      await using s = bus.stream('z');
      bus.tryPublish('z', 1);
      expect((await s.next()).value?.data).toBe(1);
    }
    expect(bus.stats().subscriptions.length).toBe(0);
    const s2 = bus.stream('z');
    const next = s2.next();
    await sleep(5);
    await bus.close();
    expect(await next).toEqual({ value: undefined, done: true });
  });
});
