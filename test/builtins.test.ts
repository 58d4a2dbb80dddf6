import { describe, expect, it } from 'vitest';
import { mkdirSync, mkdtempSync, readFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor, type ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { SpanKind } from '@opentelemetry/api';
import { Registry } from 'prom-client';
import { Bus } from '../src/index.js';
import { otelObserver } from '../src/observers/otel.js';
import { prometheusObserver } from '../src/observers/prometheus.js';
import { auditSink } from '../src/observers/audit.js';
import { sleep, until } from './helpers.js';

const guest = (name: string) => fileURLToPath(new URL(`../guest/assemblyscript/build/${name}.wasm`, import.meta.url));
const parentOf = (s: ReadableSpan) =>
  (s as unknown as { parentSpanContext?: { spanId: string } }).parentSpanContext?.spanId ??
  (s as unknown as { parentSpanId?: string }).parentSpanId;

describe('sluice/otel', () => {
  it('carries one trace from a JS publish through a WASM handler and its emits to a JS handler', async () => {
    const exporter = new InMemorySpanExporter();
    const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
    const bus = new Bus();
    bus.use(otelObserver({ tracer: provider.getTracer('test') }));
    await bus.deploy('traced', guest('traced'), { topics: ['order.created'], emits: ['traced.*'] });
    const seen: { guestSaw: string | null; eventTp: string | undefined }[] = [];
    bus.subscribe('traced.seen', (e) => void seen.push({ guestSaw: (e.data as { traceparent: string | null }).traceparent, eventTp: e.traceparent }), {
      name: 'audit-trail',
    });
    await bus.publish('order.created', { id: 'o1' });
    await until(() => seen.length === 1);
    await until(() => exporter.getFinishedSpans().length >= 3);
    const spans = exporter.getFinishedSpans();
    const send = spans.find((s) => s.name === 'send order.created')!;
    const wasm = spans.find((s) => s.name === 'process order.created')!;
    const js = spans.find((s) => s.name === 'process traced.seen')!;
    expect(send.kind).toBe(SpanKind.PRODUCER);
    expect(send.attributes['messaging.operation.type']).toBe('send');
    expect(send.attributes['messaging.destination.name']).toBe('order.created');
    expect(send.attributes['messaging.system']).toBe('sluice');
    const tp = `00-${send.spanContext().traceId}-${send.spanContext().spanId}-01`;
    // The guest was handed the traceparent, and the host carried it onto its emit.
    expect(seen[0]).toEqual({ guestSaw: tp, eventTp: tp });
    for (const s of [wasm, js]) {
      expect(s.kind).toBe(SpanKind.CONSUMER);
      expect(s.spanContext().traceId).toBe(send.spanContext().traceId);
      expect(parentOf(s)).toBe(send.spanContext().spanId);
      expect(s.attributes['messaging.operation.type']).toBe('process');
    }
    expect(wasm.attributes['sluice.handler.runtime']).toBe('wasm');
    expect(wasm.attributes['messaging.consumer.group.name']).toBe('traced');
    expect(wasm.attributes['sluice.module.hash']).toMatch(/^sha256:/);
    expect(js.attributes['sluice.handler.runtime']).toBe('js');
    expect(js.attributes['messaging.consumer.group.name']).toBe('audit-trail');
    expect(js.attributes['messaging.message.id']).toBeTypeOf('string');
    // A span lasts as long as its handler ran, after its event was sent.
    expect(wasm.startTime[0] * 1e9 + wasm.startTime[1]).toBeGreaterThanOrEqual(send.startTime[0] * 1e9 + send.startTime[1] - 1e6);
    await bus.close();
  });

  it('keeps a caller-supplied traceparent and marks failed handlers as errors', async () => {
    const exporter = new InMemorySpanExporter();
    const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
    const bus = new Bus();
    bus.use(otelObserver({ tracer: provider.getTracer('test') }));
    bus.subscribe('job.x', () => {
      throw new Error('nope');
    });
    const tp = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
    bus.tryPublish('job.x', 1, { traceparent: tp });
    await until(() => exporter.getFinishedSpans().length === 1);
    const [span] = exporter.getFinishedSpans();
    expect(span!.spanContext().traceId).toBe('4bf92f3577b34da6a3ce929d0e0e4736');
    expect(parentOf(span!)).toBe('00f067aa0ba902b7');
    expect(span!.status.code).toBe(2); // ERROR
    expect(span!.attributes['error.type']).toBe('error');
    await bus.close();
  });

  it('traces a published batch per event, as if published one by one', async () => {
    const exporter = new InMemorySpanExporter();
    const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
    const bus = new Bus();
    bus.use(otelObserver({ tracer: provider.getTracer('test') }));
    const seen: (string | undefined)[] = [];
    bus.subscribe('batch.*', (e) => void seen.push(e.traceparent));
    const given = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
    expect(bus.tryPublishBatch([1, 2, 3].map((i) => ({ type: 'batch.a', data: i })))).toBe(3);
    await bus.publishBatch([{ type: 'batch.a', data: 4 }, { type: 'batch.b', data: 5 }]);
    bus.tryPublish('batch.a', 6, { traceparent: given });
    await until(() => seen.length === 6 && exporter.getFinishedSpans().length === 5 + 6);
    const sends = exporter.getFinishedSpans().filter((s) => s.kind === SpanKind.PRODUCER);
    expect(sends.map((s) => s.name)).toEqual(['send batch.a', 'send batch.a', 'send batch.a', 'send batch.a', 'send batch.b']);
    // Each event carries its own send span's context: five traces, each handled once.
    const expected = sends.map((s) => `00-${s.spanContext().traceId}-${s.spanContext().spanId}-01`);
    expect(seen.slice(0, 5).sort()).toEqual([...expected].sort());
    expect(new Set(sends.map((s) => s.spanContext().traceId)).size).toBe(5);
    expect(seen[5]).toBe(given);
    const processes = exporter.getFinishedSpans().filter((s) => s.kind === SpanKind.CONSUMER);
    for (const send of sends) {
      expect(processes.filter((p) => parentOf(p) === send.spanContext().spanId)).toHaveLength(1);
    }
    await bus.close();
  });

  it('traces 1 in sampleEvery events of a batch, the others carry no traceparent', async () => {
    const exporter = new InMemorySpanExporter();
    const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
    const bus = new Bus();
    bus.use(otelObserver({ tracer: provider.getTracer('test'), sampleEvery: 4 }));
    const seen: (string | undefined)[] = [];
    bus.subscribe('batch.a', (e) => void seen.push(e.traceparent));
    expect(bus.tryPublishBatch(Array.from({ length: 8 }, (_, i) => ({ type: 'batch.a', data: i })))).toBe(8);
    await until(() => seen.length === 8);
    expect(seen.filter((t) => t !== undefined)).toHaveLength(2);
    await until(() => exporter.getFinishedSpans().length === 4);
    await bus.close();
  });
});

describe('sluice/prometheus', () => {
  it('exports counts, drops by reason, queue gauges, handler histograms and per-version counters on the given registry', async () => {
    const registry = new Registry();
    const bus = new Bus();
    bus.use(prometheusObserver({ registry }));
    let n = 0;
    bus.subscribe('order.created', () => void n++, { name: 'orders' });
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    bus.subscribe('order.created', () => gate, { name: 'stuck', capacity: 2, overflow: 'drop-newest' });
    const dep = await bus.deploy('fraud', guest('fraud'), { topics: ['order.created'], emits: ['fraud.*'], config: '1000' });
    for (let i = 0; i < 20; i++) bus.tryPublish('order.created', { id: `o${i}`, amount: i * 100 });
    await until(() => n === 20 && bus.stats().deployments![0]!.outcomes.ack === 20);
    const value = async (name: string, labels: Record<string, string> = {}) => {
      const m = (await registry.getSingleMetric(name)!.get()).values;
      return m
        .filter((v) => Object.entries(labels).every(([k, x]) => (v.labels as Record<string, unknown>)[k] === x))
        .reduce((a, v) => a + v.value, 0);
    };
    await sleep(60);
    const stats = bus.stats();
    expect(await value('sluice_events_published_total')).toBe(stats.published);
    expect(await value('sluice_events_delivered_total')).toBe(stats.delivered);
    expect(await value('sluice_events_dropped_total', { reason: 'drop-newest' })).toBe(
      stats.subscriptions.find((s) => s.name === 'stuck')!.droppedNewest,
    );
    // One event is in its (stuck) handler, one waits in the queue, the rest were dropped.
    expect(await value('sluice_queue_depth', { subscription: 'stuck' })).toBe(1);
    expect(await value('sluice_events_dropped_total', { reason: 'drop-newest' })).toBe(18);
    expect(await value('sluice_queue_capacity', { subscription: 'stuck' })).toBe(2);
    const hist = (await registry.getSingleMetric('sluice_handler_duration_seconds')!.get()).values;
    const count = (handler: string, runtime: string) =>
      hist
        .filter((v) => v.metricName === 'sluice_handler_duration_seconds_count' && v.labels.handler === handler && v.labels.runtime === runtime)
        .reduce((a, v) => a + v.value, 0);
    // Every run is counted; JS runs are timed 1 in 16 by default, WASM runs (timed in Rust) all.
    expect(await value('sluice_handler_runs_total', { handler: 'orders', runtime: 'js', outcome: 'ack' })).toBe(20);
    expect(await value('sluice_handler_runs_total', { handler: 'fraud', runtime: 'wasm', outcome: 'ack' })).toBe(20);
    expect(count('orders', 'js')).toBeGreaterThanOrEqual(1);
    expect(count('orders', 'js')).toBeLessThan(20);
    expect(count('fraud', 'wasm')).toBe(20);
    expect(await value('sluice_deployment_events_total', { deployment: 'fraud', version: dep.hash, outcome: 'ack' })).toBe(20);
    const text = await registry.metrics();
    expect(text).toContain('sluice_queue_lag_seconds{subscription="orders"}');
    release();
    await bus.close();
  });

  it('counts every JS run by outcome under sampled timing, and times every run with handlerTiming: 1', async () => {
    for (const handlerTiming of [1, 8]) {
      const registry = new Registry();
      const bus = new Bus();
      bus.use(prometheusObserver({ registry, handlerTiming }));
      let n = 0;
      bus.subscribe(
        'job.run',
        (e) => {
          n++;
          if ((e.data as number) % 5 === 0) throw new Error('every fifth fails');
        },
        { name: 'jobs' },
      );
      for (let i = 1; i <= 40; i++) bus.tryPublish('job.run', i);
      await until(() => n === 40);
      await sleep(60);
      const values = async (name: string) => (await registry.getSingleMetric(name)!.get()).values;
      const runs = await values('sluice_handler_runs_total');
      const byOutcome = (o: string) => runs.filter((v) => v.labels.handler === 'jobs' && v.labels.outcome === o).reduce((a, v) => a + v.value, 0);
      expect([byOutcome('ack'), byOutcome('error')]).toEqual([32, 8]);
      const timed = (await values('sluice_handler_duration_seconds'))
        .filter((v) => v.metricName === 'sluice_handler_duration_seconds_count' && v.labels.handler === 'jobs')
        .reduce((a, v) => a + v.value, 0);
      expect(timed).toBe(handlerTiming === 1 ? 40 : 5);
      await bus.close();
    }
  });
});

describe('sluice/audit', () => {
  it('appends fsynced JSON lines, and holds acknowledgement while its file cannot be written', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sluice-audit-'));
    const file = join(dir, 'later', 'audit.jsonl');
    const bus = new Bus();
    const sink = auditSink({ file });
    bus.use(sink);
    let handled = 0;
    bus.subscribe('pay.done', () => void handled++, { name: 'payments', concurrency: 4 });
    for (let i = 0; i < 5; i++) bus.tryPublish('pay.done', { i });
    await until(() => handled === 4);
    let closed = false;
    const closing = bus.close().then(() => (closed = true));
    await sleep(80);
    // The directory does not exist: every write fails and is retried; nothing is acknowledged.
    expect(existsSync(file)).toBe(false);
    expect(closed).toBe(false);
    expect(handled).toBe(4); // concurrency 4: the fifth waits for a slot
    expect(bus.stats().observers!.auditFailures).toBeGreaterThan(0);
    mkdirSync(join(dir, 'later'));
    await closing;
    const lines = readFileSync(file, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines).toHaveLength(5);
    expect(new Set(lines.map((l) => l.id)).size).toBe(5);
    expect(lines[0]).toMatchObject({ type: 'pay.done', name: 'payments', outcome: 'ack', source: 'sluice' });
    expect(sink.written).toBe(5);
  });
});
