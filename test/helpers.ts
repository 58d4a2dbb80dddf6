import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import wabtInit from 'wabt';

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Polls `cond` until it holds or `ms` pass; returns whether it held. */
export async function until(cond: () => boolean, ms = 5000): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (cond()) return true;
    await sleep(2);
  }
  return cond();
}

/** Compiles a WAT fixture to wasm bytes with wabt (the tests' hostile and minimal guests). */
export async function wat(text: string): Promise<Uint8Array> {
  const wabt = await wabtInit();
  const mod = wabt.parseWat('fixture.wat', text);
  try {
    return mod.toBinary({}).buffer;
  } finally {
    mod.destroy();
  }
}

/**
 * A guest that returns `status` for every event and, when it acks (0), first emits the event's
 * data on `topic`. The data follows the envelope header (its size at offset 6) and the id, type,
 * source, subject and traceparent, whose lengths are at 32–48; the data's length is at 52
 * (docs/abi.md).
 */
export function echoGuest(topic: string, status = 0): Promise<Uint8Array> {
  return wat(`(module
  (import "sluice" "emit" (func $emit (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "${topic}")
  (func (export "sluice_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "sluice_handle") (param $p i32) (param $len i32) (result i32)
    (local $off i32)
    (local.set $off (i32.add (local.get $p) (i32.load16_u offset=6 (local.get $p))))
    (local.set $off (i32.add (local.get $off) (i32.load offset=32 (local.get $p))))
    (local.set $off (i32.add (local.get $off) (i32.load offset=36 (local.get $p))))
    (local.set $off (i32.add (local.get $off) (i32.load offset=40 (local.get $p))))
    (local.set $off (i32.add (local.get $off) (i32.load offset=44 (local.get $p))))
    (local.set $off (i32.add (local.get $off) (i32.load offset=48 (local.get $p))))
    (if (i32.eqz (i32.const ${status}))
      (then (drop (call $emit (i32.const 0) (i32.const ${topic.length}) (local.get $off)
                              (i32.load offset=52 (local.get $p))))))
    (i32.const ${status})))`);
}

/**
 * Runs `script` (ES module text) in a child `node` with `args` and, last, `logPath`, and
 * resolves with the lines of that log. A child writes each line with one write(2) to the
 * regular file, so a line is whole or absent after SIGKILL. With `killAfterReadyMs` set the
 * child is SIGKILLed that long after it logged `ready` (or `ready …`) and must end by that
 * kill; with `null` it must exit 0. Either way it is killed after 20 s.
 */
export function runLoggedChild(script: string, args: (string | number)[], logPath: string, killAfterReadyMs: number | null): Promise<string[]> {
  const lines = () => {
    try {
      return readFileSync(logPath, 'utf8').split('\n').filter(Boolean);
    } catch {
      return [];
    }
  };
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, ['--input-type=module', '-e', script, ...args.map(String), logPath], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let err = '';
    p.stderr.on('data', (d: Buffer) => (err += d.toString()));
    let armed = false;
    const started = Date.now();
    const poll = setInterval(() => {
      if (!armed && killAfterReadyMs !== null && lines().some((l) => l === 'ready' || l.startsWith('ready '))) {
        armed = true;
        setTimeout(() => p.kill('SIGKILL'), killAfterReadyMs);
      }
      if (Date.now() - started > 20_000) p.kill('SIGKILL');
    }, 5);
    p.on('error', reject);
    p.on('close', (code, signal) => {
      clearInterval(poll);
      const ok = killAfterReadyMs !== null ? signal === 'SIGKILL' && armed : code === 0;
      if (ok) return resolve(lines());
      const notes = lines().filter((l) => !l.startsWith('d ') && !l.startsWith('ok '));
      reject(new Error(`child ended (${code}, ${signal}): ${err} ${notes.join(' | ')}`));
    });
  });
}
