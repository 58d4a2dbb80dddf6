// `tryPublishBatch` until the whole batch is in: it never waits, and when a queue is full it
// takes part of the batch and returns how many events it took. The events of a bench batch are
// interchangeable, so the rest is resent after `wait()` (a turn of the event loop) lets the
// consumers make room. Returns how many times it had to wait.
export async function tryPublishAll(bus, events, wait) {
  let rest = events;
  let waits = 0;
  for (;;) {
    const took = bus.tryPublishBatch(rest);
    if (took === rest.length) return waits;
    rest = rest.slice(took);
    waits++;
    await wait();
  }
}
