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
