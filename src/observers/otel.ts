/**
 * `sluice/otel`: OpenTelemetry spans for publish and handle, following the messaging semantic
 * conventions (`messaging.operation.type` `send` / `process`, span names `send {topic}` /
 * `process {topic}`). Depends only on `@opentelemetry/api` (an optional peer dependency): install
 * and register an SDK to export the spans.
 *
 * Trace context travels in the event as a W3C `traceparent`: an event published without one gets
 * the context of its `send` span (a child of the active span); WASM handlers receive it in their
 * envelope and the host puts it on what they emit, so one trace crosses host, guest and back.
 * Handler spans (`process`) are made from the core's records, children of the event's traceparent,
 * with the handler's real start and end times.
 */
import {
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  context,
  isSpanContextValid,
  trace,
  type Attributes,
  type Tracer,
  type TracerProvider,
} from '@opentelemetry/api';
import type { LifecycleRecord, Observer } from '../index.js';

export interface OtelOptions {
  /** Defaults to `trace.getTracer('sluice')` from the global provider. */
  tracer?: Tracer;
  tracerProvider?: TracerProvider;
  /** 1 in `sampleEvery` events without a sampled traceparent is traced (default 1). */
  sampleEvery?: number;
  /** `messaging.system` (default `sluice`). */
  system?: string;
}

const TP = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;

function parentContext(traceparent: string | null) {
  const m = traceparent === null ? null : TP.exec(traceparent);
  if (!m) return ROOT_CONTEXT;
  return trace.setSpanContext(ROOT_CONTEXT, {
    traceId: m[1]!,
    spanId: m[2]!,
    traceFlags: parseInt(m[3]!, 16),
    isRemote: true,
  });
}

export function otelObserver(options: OtelOptions = {}): Observer {
  const tracer = options.tracer ?? (options.tracerProvider ?? trace.getTracerProvider()).getTracer('sluice');
  const system = options.system ?? 'sluice';
  const sampleEvery = options.sampleEvery ?? 1;
  if (!Number.isInteger(sampleEvery) || sampleEvery < 1) throw new RangeError(`sampleEvery must be a positive integer, got ${sampleEvery}`);
  let publishes = 0;

  const processSpan = (r: LifecycleRecord<'handlerEnd'>) => {
    // Events published without a traceparent were not chosen for tracing (see inject).
    if (r.traceparent === null) return;
    const attributes: Attributes = {
      'messaging.system': system,
      'messaging.operation.type': 'process',
      'messaging.operation.name': 'process',
      'messaging.destination.name': r.type ?? '',
    };
    if (r.id !== null) attributes['messaging.message.id'] = r.id;
    if (r.name !== null) attributes['messaging.consumer.group.name'] = r.name;
    attributes['sluice.subscription.id'] = r.subscription;
    attributes['sluice.handler.runtime'] = r.origin === 'js' ? 'js' : 'wasm';
    if (r.origin !== 'js' && r.detail !== null) attributes['sluice.module.hash'] = r.detail;
    const endMs = r.timeUs / 1000;
    const span = tracer.startSpan(
      `process ${r.type ?? ''}`,
      { kind: SpanKind.CONSUMER, startTime: endMs - r.durationUs / 1000, attributes },
      parentContext(r.traceparent),
    );
    if (r.reason !== 'ack') {
      span.setAttribute('error.type', r.reason ?? 'error');
      span.setStatus({ code: SpanStatusCode.ERROR, message: r.reason ?? undefined });
    }
    span.end(endMs);
  };

  return {
    name: 'sluice/otel',
    kind: 'tracing',
    sampleEvery,
    inject(type) {
      // 1 in `sampleEvery` publishes starts a trace; the others carry no traceparent. A publish
      // under an active sampled span always joins it.
      const active = trace.getSpanContext(context.active());
      if (sampleEvery > 1 && !(active && (active.traceFlags & 1) === 1) && publishes++ % sampleEvery !== 0) return undefined;
      const span = tracer.startSpan(
        `send ${type}`,
        {
          kind: SpanKind.PRODUCER,
          attributes: {
            'messaging.system': system,
            'messaging.operation.type': 'send',
            'messaging.operation.name': 'send',
            'messaging.destination.name': type,
          },
        },
        context.active(),
      );
      const sc = span.spanContext();
      span.end();
      if (!isSpanContextValid(sc)) return undefined;
      return `00-${sc.traceId}-${sc.spanId}-${(sc.traceFlags & 1) === 1 ? '01' : '00'}`;
    },
    handlerEnd: processSpan,
  };
}

export default otelObserver;
