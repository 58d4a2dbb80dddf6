/**
 * Lifecycle records as observers receive them. The core sends them in batches as arrays (see
 * crates/core/src/observe.rs `encode_records`); this file names the kinds in the core's order and
 * turns one batch into objects.
 */

/** Kind names in the core's order: index = `Kind as u8` in crates/core/src/observe.rs. */
export const KINDS = [
  'published',
  'dropped',
  'expired',
  'delivered',
  'handlerStart',
  'handlerEnd',
  'retried',
  'deadLettered',
  'sandboxTrap',
  'sandboxLimit',
  'rolloutStep',
] as const;

export type KindName = (typeof KINDS)[number];

export const KIND_BIT: Readonly<Record<KindName, number>> = Object.freeze(
  Object.fromEntries(KINDS.map((k, i) => [k, 1 << i])) as Record<KindName, number>,
);

/** One lifecycle event. Fields that do not apply to a kind are `null` (or 0). */
export interface LifecycleRecord<K extends KindName = KindName> {
  kind: K;
  /** Unix time in microseconds. */
  timeUs: number;
  /** Subscription id, 0 for none. */
  subscription: number;
  /** The event's id, type and traceparent, when the record concerns one event. */
  id: string | null;
  type: string | null;
  traceparent: string | null;
  /** How many occurrences this record stands for (bulk drops); usually 1. */
  count: number;
  /**
   * `dropped`: `drop-newest`, `drop-oldest`, `full`, `canceled`, `closed`, `returned`;
   * `published`: `unrouted` when nothing matched; `handlerEnd`: `ack`, `error`, `retry`, `reject`
   * or an error code (`ERR_TRAP`, `ERR_TIMEOUT`, …); `rolloutStep`: the step.
   */
  reason: string | null;
  /** Handler duration and the like, in microseconds; 0 when not applicable. */
  durationUs: number;
  /** Deployment name for WASM handlers, subscription name for JS handlers. */
  name: string | null;
  /** Module hash of a WASM handler, a rollout's figures (JSON), an error message. */
  detail: string | null;
  /** The event's publish time (Unix ms), 0 when the record concerns no event. */
  eventTimeMs: number;
  /** `'js'` for JS handlers timed on the JS thread, `'core'` for records from the core. */
  origin: 'js' | 'core';
  /**
   * JS `handlerEnd` only, when observers sample handler timing (`Observer.handlerTiming`):
   * `count` runs of this subscription with this outcome that were counted but not timed
   * (`durationUs` 0, no event).
   */
  untimed?: true;
}

export type CountsByKind = Record<KindName, number>;

/** What a drained batch says besides its records: per-kind deltas since the previous batch. */
export interface ObservationBatch {
  /** Occurrences per kind since the previous batch (recorded or not). */
  counts: CountsByKind;
  /** Records that did not fit in the core's ring since the previous batch, per kind. */
  lost: CountsByKind;
  /** Records in this batch. */
  records: number;
}

export function zeroCounts(): CountsByKind {
  return Object.fromEntries(KINDS.map((k) => [k, 0])) as CountsByKind;
}

type Raw = [number, number, number, string | null, string | null, string | null, number, string | null, number, string | null, string | null, number];

export interface DecodedBatch {
  counts: number[];
  lost: number[];
  records: LifecycleRecord[];
}

export function decodeRecords(text: string): DecodedBatch {
  const { counts, lost, records } = JSON.parse(text) as { counts: number[]; lost: number[]; records: Raw[] };
  const out: LifecycleRecord[] = new Array(records.length);
  for (let i = 0; i < records.length; i++) {
    const r = records[i]!;
    out[i] = {
      kind: KINDS[r[0]] ?? ('unknown' as KindName),
      timeUs: r[1],
      subscription: r[2],
      id: r[3],
      type: r[4],
      traceparent: r[5],
      count: r[6],
      reason: r[7],
      durationUs: r[8],
      name: r[9],
      detail: r[10],
      eventTimeMs: r[11],
      origin: 'core',
    };
  }
  return { counts, lost, records: out };
}
