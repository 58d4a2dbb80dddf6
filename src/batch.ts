import { Buffer } from 'node:buffer';
import { Context, contextFor } from './context.js';
import type { SluiceEvent } from './types.js';

/** A batch taken from the core: events plus, for some, their publisher's Context. */
export interface Batch {
  events: SluiceEvent[];
  contexts: (Context | undefined)[] | undefined;
  /** Delivery tags to settle with, one per event; `undefined` when the subscription settles by
   * counting only (untracked: tag 0). */
  tags: number[] | undefined;
}

type Extra = [index: number, subject: string | null, traceparent: string | null, deadline: number | null, attempt: number | null];
type Columns = [
  source: string,
  types: string[],
  typeIndex: number[],
  ids: string[],
  time0: number,
  timeDeltas: number[],
  data: unknown[],
  fixups: [number, number, number][],
  tags: number[],
  extras: Extra[],
];

/**
 * Decodes the core's batch text (one JSON.parse for the whole batch). The text is columnar (see
 * crates/core/src/codec.rs): what events share is sent once and the per-event envelope is an id
 * string and a few small numbers, so the parse spends its time on the data; the event objects
 * are built here.
 */
export function decodeBatch(text: string): Batch {
  const [source, types, typeIndex, ids, time0, deltas, data, fixups, tagList, extras] = JSON.parse(text) as Columns;
  const n = data.length;
  const events = new Array<SluiceEvent>(n);
  const oneType = typeIndex.length === 0 ? types[0]! : undefined;
  let time = time0;
  let x = 0;
  for (let i = 0; i < n; i++) {
    const id = ids[i]!;
    time += deltas[i]!;
    const type = oneType ?? types[typeIndex[i]!]!;
    if (x < extras.length && extras[x]![0] === i) events[i] = withExtras(id, type, source, time, extras[x++]!, data[i]);
    else events[i] = { id, type, source, time, data: data[i] };
  }
  const tags = tagList.length === 0 ? undefined : tagList.length === 1 && n > 1 ? countFrom(tagList[0]!, n) : tagList;
  if (fixups.length === 0) return { events, contexts: undefined, tags };
  const contexts: (Context | undefined)[] = [];
  for (const [i, ctxId, binary] of fixups) {
    const ev = events[i]!;
    if (binary) ev.data = Buffer.from(ev.data as string, 'base64');
    if (ctxId) contexts[i] = contextFor(ctxId, ev.deadline);
  }
  return { events, contexts, tags };
}

/** The rarer events with optional fields, keys in the order the core's own encoding has them. */
function withExtras(id: string, type: string, source: string, time: number, e: Extra, data: unknown): SluiceEvent {
  const ev: SluiceEvent = { id, type, source, time } as SluiceEvent;
  if (e[1] !== null) ev.subject = e[1];
  if (e[2] !== null) ev.traceparent = e[2];
  if (e[3] !== null) ev.deadline = e[3];
  if (e[4] !== null) ev.attempt = e[4];
  ev.data = data;
  return ev;
}

/** Consecutive delivery tags, sent as the first alone. */
function countFrom(first: number, n: number): number[] {
  const tags = new Array<number>(n);
  for (let i = 0; i < n; i++) tags[i] = first + i;
  return tags;
}
