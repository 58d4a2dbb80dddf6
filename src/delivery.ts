import type { DeliveryInit } from './native.js';
import { InvalidArgument } from './errors.js';
import type { DeliveryOptions } from './types.js';

function object(v: unknown, name: string): Record<string, unknown> | undefined {
  if (v === undefined) return undefined;
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new InvalidArgument(`${name} must be an object`);
  return v as Record<string, unknown>;
}

/**
 * Flattens the public delivery settings for the binding; the core checks the values (ranges,
 * combinations) and answers `ERR_INVALID_ARG`. `undefined` when none is set.
 */
export function deliveryInit(o: DeliveryOptions): DeliveryInit | undefined {
  const retry = object(o.retry, 'retry');
  const dedupe = object(o.dedupe, 'dedupe');
  if (
    o.deliveryGuarantee === undefined &&
    retry === undefined &&
    o.deadLetter === undefined &&
    o.ordering === undefined &&
    o.key === undefined &&
    dedupe === undefined
  ) {
    return undefined;
  }
  return {
    guarantee: o.deliveryGuarantee,
    maxAttempts: retry?.maxAttempts as number | undefined,
    backoff: retry?.backoff as string | undefined,
    initialMs: retry?.initialMs as number | undefined,
    maxMs: retry?.maxMs as number | undefined,
    jitter: retry?.jitter as number | undefined,
    deadLetter: o.deadLetter,
    ordering: o.ordering,
    key: o.key,
    dedupeWindowMs: dedupe?.windowMs as number | undefined,
    dedupeSize: dedupe?.size as number | undefined,
  };
}
