/**
 * Crash tests of at-least-once delivery through the public API, in Jepsen's queue vocabulary:
 * a real `node` child publishes a numbered stream to a durable subscription and prints each
 * number once its `publish()` resolved ("confirmed"), and each delivery before its handler
 * returns. The parent SIGKILLs it at a random moment, many times on the same journal; on some
 * rounds it also leaves a torn last record on purpose. A final child drains the rest. Then:
 * lost (confirmed, never delivered) = 0, unexpected (delivered, never published) = 0;
 * duplicates (delivered more than once: killed between a delivery and its acknowledgement
 * reaching the disk) are allowed and reported.
 */
import { describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { appendFileSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const dist = fileURLToPath(new URL('../dist/index.js', import.meta.url));
const ROUNDS = 16;
const TORN_EVERY = 4;
const POLICIES = ['always', 'batch', 'never'] as const;

/**
 * The child: resumes the durable subscription 'c', then publishes `start`, `start+1`, … Its
 * record goes to a file with one write(2) per line: a regular file keeps every completed write
 * across SIGKILL, whereas process.stdout on a pipe may still hold lines in user space.
 */
const child = `
import { Bus } from ${JSON.stringify(dist)};
import { openSync, writeSync } from 'node:fs';
const [dir, fsync, start, publish, logPath] = process.argv.slice(1);
const log = openSync(logPath, 'a');
const bus = new Bus({ journal: { dir, fsync, segmentBytes: 64 * 1024 } });
const out = (s) => writeSync(log, s + '\\n');
out('recovered ' + JSON.stringify(bus.stats().journal.recovered));
bus.subscribe('n', (e) => { out('d ' + e.data); }, { name: 'c', deliveryGuarantee: 'at-least-once', capacity: 64 });
if (publish === '1') {
  process.stdout.write('ready\\n');
  for (let i = Number(start); ; i += 32) {
    const batch = Array.from({ length: 32 }, (_, k) => i + k);
    await Promise.all(batch.map((n) => bus.publish('n', n)));
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

interface Run {
  lines: string[];
  code: number | null;
  signal: NodeJS.Signals | null;
}

let runs = 0;

function run(args: string[], killAfterReadyMs: number | null): Promise<Run> {
  const logPath = join(tmpdir(), `sluice-crash-${process.pid}-${runs++}.log`);
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, ['--input-type=module', '-e', child, ...args, logPath], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let buf = '';
    let err = '';
    const guard = setTimeout(() => p.kill('SIGKILL'), 15_000);
    p.stdout.on('data', (d: Buffer) => {
      buf += d.toString();
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        if (line === 'ready' && killAfterReadyMs !== null) setTimeout(() => p.kill('SIGKILL'), killAfterReadyMs);
      }
    });
    p.stderr.on('data', (d: Buffer) => (err += d.toString()));
    p.on('error', reject);
    p.on('close', (code, signal) => {
      clearTimeout(guard);
      let lines: string[] = [];
      try {
        lines = readFileSync(logPath, 'utf8').split('\n');
        rmSync(logPath, { force: true });
      } catch {
        // No log: the child died before opening it.
      }
      // Each line was one write(2), so a line is whole or absent; a last line without its
      // newline cannot occur, and an empty string after the final newline is ignored.
      if (code !== 0 && signal !== 'SIGKILL') reject(new Error(`child failed (${code}): ${err}`));
      else resolve({ lines, code, signal });
    });
  });
}

/** Appends the first half of the last record of the newest segment: a write torn mid-record. */
function tearLastRecord(dir: string): number {
  const segs = readdirSync(dir).filter((f) => f.endsWith('.seg')).sort();
  const path = join(dir, segs[segs.length - 1]!);
  const b = readFileSync(path);
  let off = 16;
  let last = -1;
  while (off + 12 <= b.length && b[off] === 0xd5) {
    const len = b.readUInt32LE(off + 4);
    if (off + 12 + len > b.length) break;
    last = off;
    off += 12 + len;
  }
  if (last < 0) return 0;
  const rec = b.subarray(last, off);
  const half = rec.subarray(0, Math.max(1, Math.floor(rec.length / 2)));
  appendFileSync(path, half);
  return half.length;
}

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

describe('at-least-once through the public API survives SIGKILL', () => {
  it(`${ROUNDS} kills at random points, every ${TORN_EVERY}th with a torn last record: lost = 0, unexpected = 0`, async () => {
    const seed = Number(process.env.SLUICE_CRASH_SEED ?? Date.now() % 1e9);
    const rand = prng(seed);
    const dir = mkdtempSync(join(tmpdir(), 'sluice-crash-'));
    const confirmed = new Set<number>();
    const delivered = new Map<number, number>();
    const attempted: [number, number][] = [];
    let torn = 0;
    let truncatedSeen = 0;
    let kills = 0;
    const note = (r: Run) => {
      for (const line of r.lines) {
        if (line.startsWith('ok ')) for (const n of line.slice(3).split(',')) confirmed.add(Number(n));
        else if (line.startsWith('d ')) {
          const n = Number(line.slice(2));
          delivered.set(n, (delivered.get(n) ?? 0) + 1);
        } else if (line.startsWith('recovered ')) {
          if (JSON.parse(line.slice(10)).truncatedBytes > 0) truncatedSeen++;
        }
      }
    };
    try {
      for (let round = 0; round < ROUNDS; round++) {
        const start = round * 1_000_000;
        attempted.push([start, start + 1_000_000]);
        const fsync = POLICIES[round % POLICIES.length]!;
        const r = await run([dir, fsync, String(start), '1'], Math.floor(rand() * 250));
        expect(r.signal).toBe('SIGKILL');
        kills++;
        note(r);
        if (round % TORN_EVERY === TORN_EVERY - 1 && tearLastRecord(dir) > 0) torn++;
      }
      const last = await run([dir, 'batch', '0', '0'], null);
      note(last);
      expect(last.lines).toContain('left 0');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    const lost = [...confirmed].filter((n) => !delivered.has(n)).length;
    const unexpected = [...delivered.keys()].filter((n) => !attempted.some(([a, b]) => n >= a && n < b)).length;
    const duplicates = [...delivered.values()].reduce((s, c) => s + c - 1, 0);
    const recovered = [...delivered.keys()].filter((n) => !confirmed.has(n)).length;
    console.log(
      `crash test (seed ${seed}): ${kills} kills, ${torn} torn tails written (${truncatedSeen} cut at open), ` +
        `${confirmed.size} confirmed, ${delivered.size} delivered, lost ${lost}, unexpected ${unexpected}, ` +
        `duplicates ${duplicates}, delivered though unconfirmed ${recovered}`,
    );
    expect(lost).toBe(0);
    expect(unexpected).toBe(0);
    expect(confirmed.size).toBeGreaterThan(ROUNDS * 10);
    expect(truncatedSeen).toBeGreaterThanOrEqual(torn);
  }, 60_000);
});
