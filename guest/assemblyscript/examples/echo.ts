// Example handler: re-emits every event's data on `echo.<last segment of its type>`.
// A trivial handler, used to measure per-event overhead.
import { Event, Status, emit } from "../sdk";
export { sluice_alloc } from "../sdk";
import { dispatch } from "../sdk";

export function handle(event: Event): Status {
  const type = event.type;
  const dot = type.lastIndexOf(".");
  emit("echo." + type.substring(dot + 1), event.data);
  return Status.Ack;
}

export function sluice_handle(ptr: usize, len: i32): i32 {
  return dispatch(ptr, len, handle);
}
