import { describe, expect, it } from 'vitest';
import { existsSync, readFileSync, readlinkSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Bus, IsolationUnavailable } from '../src/index.js';
import { until } from './helpers.js';

const echoWasm = readFileSync(fileURLToPath(new URL('../guest/assemblyscript/build/echo.wasm', import.meta.url)));

const status = (pid: number, field: string) =>
  readFileSync(`/proc/${pid}/status`, 'utf8')
    .split('\n')
    .find((l) => l.startsWith(`${field}:`))
    ?.split(':')[1]
    ?.trim();

describe("bus.deploy(..., { isolation: 'process' })", () => {
  it('runs the handler in a locked-down helper process and reports it in info()', async () => {
    const bus = new Bus();
    const out: unknown[] = [];
    bus.subscribe('echo.>', (e) => {
      out.push(e.data);
    });
    const dep = await bus.deploy('echo', echoWasm, { topics: ['in.*'], emits: ['echo.>'], concurrency: 2, isolation: 'process' });
    const info = dep.info();
    expect(info).toMatchObject({ isolation: 'process', sandboxLevel: 'wasm+ns+seccomp' });
    expect(info.pids).toHaveLength(2);
    for (const pid of info.pids) {
      expect(status(pid, 'Seccomp')).toBe('2');
      expect(status(pid, 'NoNewPrivs')).toBe('1');
      expect(readlinkSync(`/proc/${pid}/ns/net`)).not.toBe(readlinkSync('/proc/self/ns/net'));
    }
    for (let i = 0; i < 100; i++) await bus.publish('in.x', { i });
    expect(await until(() => out.length === 100)).toBe(true);
    expect(dep.info().outcomes.ack).toBe(100);
    await dep.undeploy();
    // Helpers are killed and reaped with the deployment.
    expect(await until(() => info.pids.every((pid) => !existsSync(`/proc/${pid}`)))).toBe(true);
    await bus.close();
  });

  it('in-process deployments say so', async () => {
    const bus = new Bus();
    const dep = await bus.deploy('echo', echoWasm, { topics: ['in.*'] });
    expect(dep.info()).toMatchObject({ isolation: 'in-process', sandboxLevel: 'wasm', pids: [] });
    await bus.close();
  });

  it("'process' fails clearly without its helper; 'process-if-available' degrades and says so", async () => {
    const bus = new Bus();
    process.env.SLUICE_HELPER = '/nonexistent/sluice-helper';
    try {
      const refused = bus.deploy('strict', echoWasm, { topics: ['a'], isolation: 'process' });
      await expect(refused).rejects.toBeInstanceOf(IsolationUnavailable);
      await expect(refused).rejects.toMatchObject({ code: 'ERR_ISOLATION_UNAVAILABLE' });
      const dep = await bus.deploy('lenient', echoWasm, { topics: ['b'], isolation: 'process-if-available' });
      const info = dep.info();
      expect(info).toMatchObject({ isolation: 'in-process', sandboxLevel: 'wasm', pids: [] });
      expect(info.degraded).toMatch(/process isolation unavailable/);
    } finally {
      delete process.env.SLUICE_HELPER;
      await bus.close();
    }
  });
});
