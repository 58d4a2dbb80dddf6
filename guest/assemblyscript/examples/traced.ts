// Example handler: reports the W3C traceparent it was handed, as JSON `{"traceparent": "…"}` on
// `traced.seen` (null when the event had none). Shows that trace context reaches the guest, and
// the host carries it onto what the guest emits.
import { Event, Status, emitString } from "../sdk";
export { sluice_alloc } from "../sdk";
import { dispatch } from "../sdk";

export function handle(event: Event): Status {
  const tp = event.traceparent;
  emitString("traced.seen", tp === null ? '{"traceparent":null}' : '{"traceparent":"' + tp + '"}');
  return Status.Ack;
}

export function sluice_handle(ptr: usize, len: i32): i32 {
  return dispatch(ptr, len, handle);
}
