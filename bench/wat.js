// WAT → wasm bytes for the benches' small handlers (the tests use `wat()` in test/helpers.ts).
import wabtInit from 'wabt';

const wabt = await wabtInit();

/** Compiles WebAssembly text to module bytes. */
export function wat(text) {
  const mod = wabt.parseWat('bench.wat', text);
  try {
    return mod.toBinary({}).buffer;
  } finally {
    mod.destroy();
  }
}
