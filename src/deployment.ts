import type { NativeDeployment } from './native.js';
import { fromNative } from './errors.js';
import type { DeliveryOptions, SubscriptionStats } from './types.js';

export interface DeployLimits {
  /** Linear memory ceiling per instance (default 16 MiB). */
  memoryBytes?: number;
  /** Wall-clock budget per event (default 50 ms); the event's own deadline may be earlier. */
  timeoutMs?: number;
  /** Deterministic CPU budget per event (instructions-ish units). */
  fuel?: number;
}

/** Delivery settings apply to each topic subscription of the deployment: guest status 1 asks for a
 * retry, 2 rejects to the dead letter, a trap or an exceeded limit fails (retried per `retry`). */
export interface DeployOptions extends DeliveryOptions {
  /** Topics or patterns the handler consumes. */
  topics: string[];
  /** Topics the handler may emit (`fraud.*`, `fraud.>`); others are refused and counted. */
  emits?: string[];
  /** Instances, i.e. events handled at once on Rust worker threads (default 1). */
  concurrency?: number;
  limits?: DeployLimits;
  /** Bytes the guest reads with `config_len`/`config_read`; objects are JSON-encoded. */
  config?: Uint8Array | string | object;
  /** Queue of each topic subscription (defaults: the bus's). */
  capacity?: number;
  overflow?: 'block' | 'drop-newest' | 'drop-oldest' | 'error';
  /**
   * Where the handler runs. `'in-process'` (default): Rust worker threads of this process.
   * `'process'`: a helper process per unit of concurrency, in new Linux namespaces under a
   * seccomp-bpf allow-list (docs/isolation.md); fails with `ERR_ISOLATION_UNAVAILABLE` where the
   * platform or kernel refuses. `'process-if-available'`: the same, degrading (seccomp only, or
   * in-process) where refused; `info().sandboxLevel` and `info().degraded` say what is in force.
   */
  isolation?: 'in-process' | 'process' | 'process-if-available';
}

export interface HelperInfo {
  sandboxLevel: 'wasm' | 'wasm+seccomp' | 'wasm+ns+seccomp';
  pid: number | null;
  helpersStarted: number;
  deaths: number;
  seccompKills: number;
  redelivered: number;
  gaveUp: number;
  startTimeUs: number;
  lastExit: string | null;
  lastError: string | null;
}

export interface DeploymentInfo {
  name: string;
  hash: string;
  topics: string[];
  emits: string[];
  concurrency: number;
  isolation: 'in-process' | 'process';
  /** The walls actually in force. */
  sandboxLevel: 'wasm' | 'wasm+seccomp' | 'wasm+ns+seccomp';
  /** Helper process ids (empty in-process). */
  pids: number[];
  /** Why `'process-if-available'` runs in-process. */
  degraded?: string;
  /** Per helper process: restarts, deaths (SIGSYS = seccomp kills), redeliveries, given-up events. */
  helpers?: HelperInfo[];
  limits: { memoryBytes: number; timeoutMs: number; fuel: number | null };
  instances: { live: number; idle: number; created: number; discarded: number };
  /** Handler outcomes; `errors` by code (`ERR_TRAP`, `ERR_TIMEOUT`, …). */
  outcomes: { ack: number; retry: number; reject: number; errors: Record<string, number> };
  emitsPublished: number;
  emitsRefused: number;
  emitsDiscarded: number;
  emitsFailed: number;
  logsDropped: number;
  /** Handler latency in microseconds. */
  latencyUs: { count: number; p50: number; p90: number; p99: number; max: number };
  subscriptions: SubscriptionStats[];
  running: boolean;
}

/** A WebAssembly handler running in the sandbox on the bus's Rust worker threads. */
export class Deployment implements AsyncDisposable {
  readonly #native: NativeDeployment;

  /** @internal */
  constructor(native: NativeDeployment) {
    this.#native = native;
  }

  get name(): string {
    return this.#native.name;
  }

  /** `sha256:<hex>` of the module bytes. */
  get hash(): string {
    return this.#native.hash;
  }

  info(): DeploymentInfo {
    return JSON.parse(this.#native.info()) as DeploymentInfo;
  }

  /** Stops taking events, lets each worker finish the event in hand, releases the instances. */
  async undeploy(): Promise<void> {
    try {
      await this.#native.undeploy();
    } catch (e) {
      throw fromNative(e);
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.undeploy();
  }
}
