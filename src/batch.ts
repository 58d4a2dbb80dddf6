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

/**
 * Decodes the core's batch text (one JSON.parse for the whole batch; see crates/core/src/codec.rs):
 * `[[event…], [[index, contextId, binary]…]]`, plus `[tag…]` for a handler's deliveries.
 */
export function decodeBatch(text: string): Batch {
  const [events, fixups, tagList] = JSON.parse(text) as [SluiceEvent[], [number, number, number][], number[]?];
  const tags = tagList !== undefined && tagList.length > 0 ? tagList : undefined;
  if (fixups.length === 0) return { events, contexts: undefined, tags };
  const contexts: (Context | undefined)[] = [];
  for (const [i, ctxId, binary] of fixups) {
    const ev = events[i]!;
    if (binary) ev.data = Buffer.from(ev.data as string, 'base64');
    if (ctxId) contexts[i] = contextFor(ctxId, ev.deadline);
  }
  return { events, contexts, tags };
}

