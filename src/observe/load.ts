import { isAbsolute, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Observer } from './observer.js';

/**
 * Loads observers named by module specifier: bare names (`sluice/otel`) as packages, `./x.js`
 * and absolute paths relative to the working directory. A module's default export (or its
 * `observer` export) is an observer, or a factory called with no arguments that returns one.
 */
export async function loadObservers(specs: string[]): Promise<Observer[]> {
  return Promise.all(
    specs.map(async (spec) => {
      const url = spec.startsWith('.') || isAbsolute(spec) ? pathToFileURL(resolve(process.cwd(), spec)).href : spec;
      let mod: Record<string, unknown>;
      try {
        mod = (await import(url)) as Record<string, unknown>;
      } catch (e) {
        throw new Error(`cannot load observer module '${spec}': ${(e as Error).message}`, { cause: e });
      }
      const exp = mod.default ?? mod.observer;
      const obs = typeof exp === 'function' ? await (exp as () => Observer | Promise<Observer>)() : exp;
      if (obs === null || typeof obs !== 'object') {
        throw new Error(`observer module '${spec}' exports no observer (default export: an object or a factory)`);
      }
      return obs as Observer;
    }),
  );
}
