import { afterAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  Bus,
  Context,
  JournalError,
  JournalFull,
  JournalLocked,
  JournalReadOnly,
  SluiceError,
  Unsupported,
  type SluiceEvent,
} from '../src/index.js';
import { until } from './helpers.js';

const root = mkdtempSync(join(tmpdir(), 'sluice-journal-test-'));
let n = 0;
const freshDir = () => join(root, `j${n++}`);
afterAll(() => rmSync(root, { recursive: true, force: true }));

/** Mounts a tmpfs of `size` (we run as root in CI); null where mounting is refused. */
function tmpfs(size: string): { dir: string; readOnly(): void; unmount(): void } | null {
  const dir = freshDir();
  mkdirSync(dir, { recursive: true });
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir], { stdio: 'ignore' });
  } catch {
    return null;
  }
  return {
    dir,
    readOnly: () => execFileSync('mount', ['-o', 'remount,ro', dir], { stdio: 'ignore' }),
    // Lazy: the closed journal's files stay open until its handle is garbage-collected.
    unmount: () => execFileSync('umount', ['-l', dir], { stdio: 'ignore' }),
  };
}

describe('a bus with a journal', () => {
  it('rejects bad journal options and keeps spill a clear error without a journal', () => {
    expect(() => new Bus({ journal: { dir: freshDir(), fsync: 'sometimes' as never } })).toThrow(/fsync/);
    expect(() => new Bus({ journal: { dir: freshDir(), batchIntervalMs: 0 } })).toThrow(/batchIntervalMs/);
    expect(() => new Bus({ journal: 42 as never })).toThrow(/journal/);
    const plain = new Bus();
    expect(() => plain.subscribe('x', () => {}, { overflow: 'spill' })).toThrow(Unsupported);
    const bus = new Bus({ journal: { dir: freshDir() } });
    expect(() => bus.subscribe('x', () => {}, { deliveryGuarantee: 'at-least-once' })).toThrow(/needs a name/);
    void bus.close();
  });

  it('a second bus on the same directory gets ERR_JOURNAL_LOCKED; after close the directory is free', async () => {
    const dir = freshDir();
    const a = new Bus({ journal: { dir } });
    let err: unknown;
    try {
      new Bus({ journal: { dir } });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(JournalLocked);
    expect(err).toBeInstanceOf(JournalError);
    expect(err).toBeInstanceOf(SluiceError);
    expect((err as SluiceError).code).toBe('ERR_JOURNAL_LOCKED');
    expect(await a.close()).toEqual({ unacknowledged: 0 });
    const b = new Bus({ journal: { dir } });
    await b.close();
  });

  for (const fsync of ['always', 'batch', 'never'] as const) {
    it(`fsync '${fsync}': a restarted bus delivers exactly the unacknowledged events to the same name`, async () => {
      const dir = freshDir();
      const bus = new Bus({ journal: { dir, fsync } });
      const seen: number[] = [];
      bus.subscribe(
        'order.>',
        (e: SluiceEvent) => {
          seen.push(e.data as number);
          // Odd events are still being handled when the process goes away: never settled.
          return (e.data as number) % 2 ? new Promise(() => {}) : undefined;
        },
        { name: 'billing', deliveryGuarantee: 'at-least-once', capacity: 32, concurrency: 32 },
      );
      for (let i = 0; i < 40; i++) await bus.publish('order.created', i);
      expect(await until(() => seen.length === 40)).toBe(true);
      const st = bus.stats();
      expect(st.journal).toMatchObject({ fsync, appended: 40, acknowledged: 20, unacknowledged: 20 });
      expect(st.subscriptions[0]).toMatchObject({ durable: true, name: 'billing' });
      expect(await bus.close({ ctx: Context.background().withTimeout(30) })).toEqual({ unacknowledged: 20 });
      expect(bus.stats().subscriptions).toEqual([]);
      expect(bus.stats().dropped).toBe(0);

      const again = new Bus({ journal: { dir, fsync } });
      expect(again.stats().journal!.recovered.unacknowledged).toBe(20);
      const got: SluiceEvent[] = [];
      again.subscribe('order.>', (e: SluiceEvent) => void got.push(e), {
        name: 'billing',
        deliveryGuarantee: 'at-least-once',
      });
      await again.publish('order.created', 1000);
      expect(await until(() => got.length === 21)).toBe(true);
      expect(got.map((e) => e.data)).toEqual([...Array.from({ length: 20 }, (_, i) => 2 * i + 1), 1000]);
      // Ids, types and times survive the restart unchanged.
      expect(got[0]!.type).toBe('order.created');
      expect(got[0]!.id).toMatch(/-\d+$/);
      expect(await again.close()).toEqual({ unacknowledged: 0 });
    });
  }

  it('spill: a full queue sends events to the journal and they come back in order', async () => {
    const bus = new Bus({ journal: { dir: freshDir(), fsync: 'never' } });
    const got: number[] = [];
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    bus.subscribe(
      'a',
      async (e: SluiceEvent) => {
        await gate;
        got.push(e.data as number);
      },
      { capacity: 2, overflow: 'spill' },
    );
    for (let i = 0; i < 500; i++) expect(bus.tryPublish('a', i)).toBe(true);
    const before = bus.stats().subscriptions[0]!;
    expect(before.spilled).toBeGreaterThan(490);
    expect(before.droppedNewest + before.droppedFull).toBe(0);
    release();
    expect(await until(() => got.length === 500)).toBe(true);
    expect(got).toEqual(Array.from({ length: 500 }, (_, i) => i));
    await bus.close();
    expect(bus.stats().dropped).toBe(0);
  });

  it('ENOSPC on a small tmpfs is ERR_JOURNAL_FULL at the publisher, for at-least-once and for spill', async (t) => {
    const fs = tmpfs('64k');
    if (!fs) return t.skip();
    try {
      const bus = new Bus({ journal: { dir: fs.dir, fsync: 'batch' } });
      bus.subscribe('d', () => new Promise(() => {}), { name: 'd', deliveryGuarantee: 'at-least-once', capacity: 1 });
      const big = 'x'.repeat(2000);
      let ok = 0;
      let err: unknown;
      for (let i = 0; i < 200 && !err; i++) {
        try {
          await bus.publish('d', big);
          ok++;
        } catch (e) {
          err = e;
        }
      }
      expect(err).toBeInstanceOf(JournalFull);
      expect((err as SluiceError).code).toBe('ERR_JOURNAL_FULL');
      expect(ok).toBeGreaterThan(5);
      // Everything that was confirmed is still there after the failure.
      expect(bus.stats().journal!.unacknowledged).toBe(ok);

      const spilled = bus.subscribe('s', () => new Promise(() => {}), { overflow: 'spill', capacity: 1 });
      await expect(bus.publish('s', 'fits in the queue')).resolves.toBeUndefined();
      await expect(bus.publish('s', big)).rejects.toBeInstanceOf(JournalFull);
      expect(spilled.stats().spillErrors).toBe(1);
      expect(bus.stats().dropped).toBeGreaterThanOrEqual(1);
      await bus.close({ ctx: Context.background().withTimeout(50) });
    } finally {
      fs.unmount();
    }
  });

  it('a read-only directory is ERR_JOURNAL_READONLY when the bus opens', (t) => {
    const fs = tmpfs('1m');
    if (!fs) {
      // Not root: a directory without write permission is read-only to us as well.
      if (process.getuid?.() === 0) return t.skip();
      const dir = freshDir();
      mkdirSync(dir, { mode: 0o555 });
      expect(() => new Bus({ journal: { dir: join(dir, 'j') } })).toThrow(JournalReadOnly);
      return;
    }
    try {
      fs.readOnly();
      let err: unknown;
      try {
        new Bus({ journal: { dir: join(fs.dir, 'j') } });
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(JournalReadOnly);
      expect((err as SluiceError).code).toBe('ERR_JOURNAL_READONLY');
    } finally {
      fs.unmount();
    }
  });

  it('tryPublish persists without waiting for the fsync', async () => {
    const dir = freshDir();
    const bus = new Bus({ journal: { dir, fsync: 'batch', batchIntervalMs: 50 } });
    bus.subscribe('t', () => new Promise(() => {}), { name: 't', deliveryGuarantee: 'at-least-once' });
    expect(bus.tryPublish('t', 1)).toBe(true);
    expect(bus.stats().journal!.appended).toBe(1);
    expect(await bus.close({ ctx: Context.background().withTimeout(50) })).toEqual({ unacknowledged: 1 });
    expect(bus.stats().journal!.lostAfterReturn).toBe(0);
  });
});
