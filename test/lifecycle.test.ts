import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const dist = fileURLToPath(new URL('../dist/index.js', import.meta.url));

function runScript(body: string, timeoutMs = 5000) {
  const script = `import { Bus, Context } from ${JSON.stringify(dist)};\n${body}`;
  return spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: timeoutMs });
}

describe('event loop lifecycle', () => {
  it('a live subscription delivers before the process exits, and close lets it exit', () => {
    const r = runScript(`
      const bus = new Bus();
      bus.subscribe('a', (e) => { console.log('got', e.data); bus.close(); });
      bus.tryPublish('a', 42);
    `);
    expect(r.status).toBe(0);
    expect(r.stdout.trim()).toBe('got 42');
  });

  it('an unref()ed subscription does not hold the process; a ref()ed one does until unsubscribed', () => {
    const unrefd = runScript(`
      const bus = new Bus();
      bus.subscribe('a', () => {}).unref();
      console.log('end');
    `);
    expect(unrefd.status).toBe(0);
    const held = runScript(
      `
      const bus = new Bus();
      const sub = bus.subscribe('a', () => {});
      setTimeout(() => { console.log('still alive'); sub.unsubscribe(); }, 200).unref();
    `,
    );
    expect(held.status).toBe(0);
    expect(held.stdout.trim()).toBe('still alive');
  });

  it('a publish that gave up waiting for space does not hold the process', () => {
    const r = runScript(`
      const bus = new Bus();
      bus.stream('a', { capacity: 1 }).unref();
      await bus.publish('a', 1);
      try { await bus.publish('a', 2, { ctx: Context.background().withTimeout(50) }); }
      catch (e) { console.log(e.code); }
    `);
    expect(r.status).toBe(0);
    expect(r.stdout.trim()).toBe('ERR_DEADLINE_EXCEEDED');
  });

  it('a handler that throws does not crash the process', () => {
    const r = runScript(`
      const bus = new Bus();
      let n = 0;
      bus.subscribe('a', (e) => { n++; if (e.data === 1) throw new Error('boom'); });
      for (const i of [1, 2, 3]) await bus.publish('a', i);
      await bus.close();
      console.log(n, bus.stats().failed);
    `);
    expect(r.stderr).toBe('');
    expect(r.stdout.trim()).toBe('3 1');
  });
});
