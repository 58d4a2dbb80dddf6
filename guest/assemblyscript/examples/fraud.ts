// Example handler: scores orders and emits `fraud.flagged` for suspicious ones.
//
// Input:  order.created with JSON data like {"id":"o-1","amount":1200}
// Config: optional threshold as UTF-8 text, e.g. "1000" (default 1000)
// Output: fraud.flagged {"order":"<event id>","amount":<amount>} when amount > threshold
import { Event, Status, emitString, log, LogLevel, jsonNumber, configString, deadlineMs, EmitResult } from "../sdk";
export { sluice_alloc } from "../sdk";
import { dispatch } from "../sdk";

let threshold: f64 = 1000;

export function sluice_init(): i32 {
  const c = configString();
  if (c.length > 0) {
    const t = parseFloat(c);
    if (isNaN(t)) {
      log("config is not a number: " + c, LogLevel.Error);
      return 1;
    }
    threshold = t;
  }
  return 0;
}

export function handle(event: Event): Status {
  if (event.type != "order.created") return Status.Reject;
  // Leave a margin: better to retry later than to be interrupted half-way.
  if (deadlineMs() < 1) return Status.Retry;
  const amount = jsonNumber(event.dataString, "amount");
  if (isNaN(amount)) {
    log("order " + event.id + " has no amount", LogLevel.Warn);
    return Status.Reject;
  }
  if (amount > threshold) {
    const body = '{"order":"' + event.id + '","amount":' + amount.toString() + "}";
    const rc = emitString("fraud.flagged", body);
    if (rc != EmitResult.Ok) {
      log("emit refused: " + rc.toString(), LogLevel.Error);
      return Status.Retry;
    }
  }
  return Status.Ack;
}

export function sluice_handle(ptr: usize, len: i32): i32 {
  return dispatch(ptr, len, handle);
}
