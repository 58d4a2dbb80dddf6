import wabtInit from 'wabt';

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Polls `cond` until it holds or `ms` pass; returns whether it held. */
export async function until(cond: () => boolean, ms = 5000): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (cond()) return true;
    await sleep(2);
  }
  return cond();
}

/** Compiles a WAT fixture to wasm bytes with wabt (the tests' hostile and minimal guests). */
export async function wat(text: string): Promise<Uint8Array> {
  const wabt = await wabtInit();
  const mod = wabt.parseWat('fixture.wat', text);
  try {
    return mod.toBinary({}).buffer;
  } finally {
    mod.destroy();
  }
}

/**
 * A guest that returns `status` for every event and, when it acks (0), first emits the event's
 * data on `topic`. The data follows the envelope header (its size at offset 6) and the id, type,
 * source, subject and traceparent, whose lengths are at 32–48; the data's length is at 52
 * (docs/abi.md).
 */
export function echoGuest(topic: string, status = 0): Promise<Uint8Array> {
  return wat(`(module
  (import "sluice" "emit" (func $emit (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "${topic}")
  (func (export "sluice_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "sluice_handle") (param $p i32) (param $len i32) (result i32)
    (local $off i32)
    (local.set $off (i32.add (local.get $p) (i32.load16_u offset=6 (local.get $p))))
    (local.set $off (i32.add (local.get $off) (i32.load offset=32 (local.get $p))))
    (local.set $off (i32.add (local.get $off) (i32.load offset=36 (local.get $p))))
    (local.set $off (i32.add (local.get $off) (i32.load offset=40 (local.get $p))))
    (local.set $off (i32.add (local.get $off) (i32.load offset=44 (local.get $p))))
    (local.set $off (i32.add (local.get $off) (i32.load offset=48 (local.get $p))))
    (if (i32.eqz (i32.const ${status}))
      (then (drop (call $emit (i32.const 0) (i32.const ${topic.length}) (local.get $off)
                              (i32.load offset=52 (local.get $p))))))
    (i32.const ${status})))`);
}
