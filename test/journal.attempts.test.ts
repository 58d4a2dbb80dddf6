/**
 * Retry counts survive SIGKILL, through the public API: a real `node` child runs a durable
 * subscription whose handler always fails (retry: 5 attempts, then a dead-letter topic) and
 * logs each attempt; the parent SIGKILLs it in the middle of the retries, then starts it again
 * on the same journal. The restarted child must continue the count (not start again at 1) and
 * dead-letter the event after 5 attempts in all.
 */
import { describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const dist = fileURLToPath(new URL('../dist/index.js', import.meta.url));
const MAX = 5;

// fsync 'always': a failed attempt's count is on disk before its retry is delivered, so what the
// parent saw before the kill bounds what the restart must continue from.
const child = `
import { Bus } from ${JSON.stringify(dist)};
import { openSync, writeSync } from 'node:fs';
const [dir, publish, logPath] = process.argv.slice(1);
const log = openSync(logPath, 'a');
const out = (s) => writeSync(log, s + '\\n');
const bus = new Bus({ journal: { dir, fsync: 'always' } });
bus.subscribe('dead', (e) => out('dead ' + e.data.attempts), {});
bus.subscribe('job', (e) => {
  out('attempt ' + (e.attempt ?? 1));
  throw new Error('always fails');
}, { name: 'worker', deliveryGuarantee: 'at-least-once', retry: { maxAttempts: ${MAX}, backoff: 'fixed', initialMs: 40 }, deadLetter: 'dead' });
if (publish === '1') await bus.publish('job', { n: 1 });
`;

function run(dir: string, publish: boolean, log: string, killAfterAttempt?: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, ['--input-type=module', '-e', child, dir, publish ? '1' : '0', log], {
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    const started = Date.now();
    const poll = setInterval(() => {
      const lines = readLines(log);
      const attempts = lines.filter((l) => l.startsWith('attempt ')).length;
      const done = lines.some((l) => l.startsWith('dead '));
      if ((killAfterAttempt !== undefined && attempts >= killAfterAttempt) || done) p.kill('SIGKILL');
      if (Date.now() - started > 20_000) {
        p.kill('SIGKILL');
        reject(new Error(`child did not get there: ${lines.join(' | ')}`));
      }
    }, 5);
    p.on('exit', () => {
      clearInterval(poll);
      resolve();
    });
  });
}

function readLines(path: string): string[] {
  try {
    return readFileSync(path, 'utf8').split('\n').filter(Boolean);
  } catch {
    return [];
  }
}

describe('retry counts survive SIGKILL', () => {
  it(`continues the attempt count after a restart and dead-letters after ${MAX} attempts in all`, async () => {
    const root = mkdtempSync(join(tmpdir(), 'sluice-attempts-'));
    try {
      const dir = join(root, 'j');
      const before = join(root, 'before.log');
      const after = join(root, 'after.log');
      await run(dir, true, before, 3);
      const seen = readLines(before).filter((l) => l.startsWith('attempt ')).map((l) => Number(l.slice(8)));
      expect(seen.slice(0, 3)).toEqual([1, 2, 3]);
      const last = seen[seen.length - 1]!;
      expect(last).toBeLessThan(MAX);
      await run(dir, false, after);
      const lines = readLines(after);
      const resumed = lines.filter((l) => l.startsWith('attempt ')).map((l) => Number(l.slice(8)));
      // Killed while attempt `last` ran: its failure may or may not have been recorded.
      expect([last, last + 1]).toContain(resumed[0]);
      expect(resumed).toEqual(Array.from({ length: MAX - resumed[0]! + 1 }, (_, k) => resumed[0]! + k));
      expect(lines).toContain(`dead ${MAX}`);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  }, 60_000);
});
