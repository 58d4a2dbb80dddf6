import { describe, expect, it } from 'vitest';
import { existsSync, readFileSync, readlinkSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Bus, IsolationUnavailable, type SluiceEvent } from '../src/index.js';
import { until, wat } from './helpers.js';

const echoWasm = readFileSync(fileURLToPath(new URL('../guest/assemblyscript/build/echo.wasm', import.meta.url)));

// data 0 acks, 1 asks for a retry, 2 rejects, 3 traps (crates/sandbox/tests/fixtures).
const statusByData = readFileSync(
  fileURLToPath(new URL('../crates/sandbox/tests/fixtures/status_by_data.wat', import.meta.url)),
  'utf8',
);

type DeadLetter = { reason: string; attempts: number; subscription: { name: string | null }; event: SluiceEvent };

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

describe("delivery settings through isolation: 'process'", () => {
  it('retry and reject from a guest in a helper: retried up to maxAttempts, then dead-lettered with the envelope', async () => {
    const bus = new Bus();
    const dead: DeadLetter[] = [];
    bus.subscribe('in.dead', (e) => void dead.push(e.data as DeadLetter));
    const dep = await bus.deploy('status', await wat(statusByData), {
      topics: ['in'],
      isolation: 'process',
      deliveryGuarantee: 'at-least-once',
      retry: { maxAttempts: 3, backoff: 'fixed', initialMs: 10 },
      deadLetter: 'in.dead',
    });
    expect(dep.info()).toMatchObject({ isolation: 'process', sandboxLevel: 'wasm+ns+seccomp' });
    await bus.publish('in', 1, { id: 'poison', subject: 'order-7' });
    await bus.publish('in', 0, { id: 'fine' });
    await bus.publish('in', 2, { id: 'refused' });
    expect(await until(() => dead.length === 2)).toBe(true);
    const byId = Object.fromEntries(dead.map((d) => [d.event.id, d]));
    // The same reasons as in-process: the isolation mode does not change what users see.
    expect(byId.poison).toMatchObject({
      attempts: 3,
      reason: 'handler returned 1 (retry)',
      subscription: { name: 'deployment:status' },
      event: { id: 'poison', type: 'in', subject: 'order-7', data: 1 },
    });
    expect(byId.refused).toMatchObject({ attempts: 1, reason: 'handler returned 2 (reject)', event: { id: 'refused', data: 2 } });
    const info = dep.info();
    // Every attempt ran in the helper: three retries of the poison event, then no more.
    expect(info.outcomes).toMatchObject({ ack: 1, retry: 3, reject: 1 });
    expect(info.subscriptions[0]).toMatchObject({ acked: 1, retried: 2, deadLettered: 2 });
    expect(info.helpers?.[0]).toMatchObject({ deaths: 0 });
    await bus.close();
  });

  it('a guest trapping in the helper is a failure: retried, then dead-lettered with the trap as reason; the helper survives', async () => {
    const bus = new Bus();
    const dead: DeadLetter[] = [];
    bus.subscribe('in.dead', (e) => void dead.push(e.data as DeadLetter));
    const dep = await bus.deploy('status', await wat(statusByData), {
      topics: ['in'],
      isolation: 'process',
      deliveryGuarantee: 'at-least-once',
      retry: { maxAttempts: 2, backoff: 'fixed', initialMs: 5 },
      deadLetter: 'in.dead',
    });
    const pid = dep.info().pids[0];
    await bus.publish('in', 3, { id: 'trap' });
    await bus.publish('in', 0, { id: 'after' });
    expect(await until(() => dead.length === 1 && dep.info().outcomes.ack === 1)).toBe(true);
    expect(dead[0]).toMatchObject({ attempts: 2, event: { id: 'trap', data: 3 } });
    expect(dead[0]!.reason).toMatch(/^ERR_TRAP/);
    // A trap is the guest's failure, not the helper's: the same process keeps serving.
    expect(dep.info().pids, JSON.stringify(dep.info().helpers)).toEqual([pid]);
    expect(dep.info().helpers?.[0]).toMatchObject({ deaths: 0 });
    await bus.close();
  });
});
