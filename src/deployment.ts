import { readFile } from 'node:fs/promises';
import type { NativeDeployment } from './native.js';
import { fromNative } from './errors.js';
import type { DeliveryOptions, Overflow, SubscriptionStats } from './types.js';

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
  /** Queue of each topic subscription (defaults: the bus's). `'spill'` needs a bus with a journal. */
  capacity?: number;
  overflow?: Overflow;
  /**
   * Where the handler runs. `'in-process'` (default): Rust worker threads of this process.
   * `'process'`: a helper process per unit of concurrency, in new Linux namespaces under a
   * seccomp-bpf allow-list (docs/isolation.md); fails with `ERR_ISOLATION_UNAVAILABLE` where the
   * platform or kernel refuses. `'process-if-available'`: the same, degrading (seccomp only, or
   * in-process) where refused; `info().sandboxLevel` and `info().degraded` say what is in force.
   */
  isolation?: 'in-process' | 'process' | 'process-if-available';
  /** Matched by rollout label selectors (`{ env: 'staging' }`). */
  labels?: Record<string, string>;
}

/** Which events a candidate gets. */
export interface TrafficOptions {
  /**
   * Share of matching events, 0–100 (0.01 % steps; default 0: compiled and started, but idle).
   * Chosen by a hash of the event id, so a redelivered event sees the same version, and raising
   * the percent keeps the events already on the candidate there.
   */
  percent?: number;
  /** Only events of these topics or patterns (`order.*`); default every topic. */
  eventTypes?: string[];
  /** The candidate gets traffic only where the deployment's labels include all of these. */
  labels?: Record<string, string>;
  /** Who made the change, for the audit trail. */
  actor?: string;
}

/** Thresholds on the candidate over a sliding window; crossing one reverts routing to current. */
export interface AutoRollbackOptions {
  /** Errors (traps, timeouts, limits; not retry/reject) per event handled. Default 0.05. */
  maxErrorRate?: number;
  /** Handler latency p99 in ms. Default: none. */
  maxP99Ms?: number;
  /** Default 10 000. */
  windowMs?: number;
  /** No verdict on fewer events in the window. Default 20. */
  minEvents?: number;
}

export interface RolloutOptions extends TrafficOptions {
  /** Refuse the bytes (`ERR_HASH_MISMATCH`) unless their `sha256:` is this. */
  expectedHash?: string;
  /** Copies of the selected events go to the candidate; its emits and outcome are only compared. */
  shadow?: boolean;
  /** Automatic rollback thresholds; on with the defaults unless `false`. */
  autoRollback?: AutoRollbackOptions | false;
}

export interface RollbackOptions {
  /** Restore this earlier version (any hash still compiled in this process). */
  toHash?: string;
  reason?: string;
  actor?: string;
}

export interface OutcomeCounts {
  ack: number;
  retry: number;
  reject: number;
  errors: Record<string, number>;
}

/**
 * Handler time per event in µs, as the worker measures it: the guest call with the envelope
 * copy and the limits' setup, plus any wait for a free instance. For events a worker runs back
 * to back it counts from the previous event's end, so its bookkeeping between the two (well
 * under a µs) is included; time spent publishing a handler's emits is not.
 */
export interface LatencyUs {
  count: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
}

export interface VersionInfo {
  hash: string;
  role: 'current' | 'candidate' | 'shadow' | 'retired';
  /** Events in this version's hands right now. */
  inFlight: number;
  /** No instances (or helper processes) are held for it any more. */
  released: boolean;
  /** Helper process ids of its live activation (`isolation: 'process'`; else empty). */
  pids: number[];
  activations: number;
  releases: number;
  releasedAt: number | null;
  instances: { live: number; idle: number; created: number; discarded: number };
  handled: number;
  outcomes: OutcomeCounts;
  latencyUs: LatencyUs;
}

export interface HistoryEntry {
  /** ms since the Unix epoch. */
  at: number;
  action: 'deploy' | 'rollout' | 'traffic' | 'promote' | 'rollback' | 'auto-rollback';
  hash: string;
  /** The version current before the action. */
  previous: string;
  actor?: string;
  reason?: string;
  percent?: number;
  shadow?: true;
}

export interface RollbackInfo {
  at: number;
  /** The version taken out. */
  hash: string;
  /** The version current after it. */
  restored: string;
  automatic: boolean;
  reason: string;
  actor?: string;
  events?: number;
  errorRate?: number;
  p99Ms?: number;
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
  /** Helper process ids of the current version (empty in-process); `versions[].pids` per version. */
  pids: number[];
  /** Why `'process-if-available'` runs in-process. */
  degraded?: string;
  /** Per helper process of the current version: restarts, deaths (SIGSYS = seccomp kills), redeliveries, given-up events. */
  helpers?: HelperInfo[];
  limits: { memoryBytes: number; timeoutMs: number; fuel: number | null };
  instances: { live: number; idle: number; created: number; discarded: number };
  /** Handler outcomes over every version; `errors` by code (`ERR_TRAP`, `ERR_TIMEOUT`, …). */
  outcomes: OutcomeCounts;
  emitsPublished: number;
  emitsRefused: number;
  emitsDiscarded: number;
  emitsFailed: number;
  logsDropped: number;
  /** Handler latency in microseconds. */
  latencyUs: LatencyUs;
  subscriptions: SubscriptionStats[];
  running: boolean;
  labels: Record<string, string>;
  /** Every version this deployment ran, first seen first. */
  versions: VersionInfo[];
  /** The rollout in progress. */
  candidate: {
    hash: string;
    percent: number;
    eventTypes: string[];
    labels: Record<string, string>;
    labelsMatch: boolean;
    shadow: boolean;
    autoRollback: { maxErrorRate: number | null; maxP99Ms: number | null; windowMs: number; minEvents: number } | null;
    since: number;
  } | null;
  /** The current or last shadow rollout: how often the candidate's outcome and emits differed. */
  shadow: {
    hash: string;
    active: boolean;
    copied: number;
    compared: number;
    skipped: number;
    outcomeDiffers: number;
    emitsDiffer: number;
  } | null;
  lastRollback: RollbackInfo | null;
  /** Audit trail, oldest first, at most 256 entries (`historyDropped` counts the rest). */
  history: HistoryEntry[];
  historyDropped: number;
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

  /**
   * Compiles `wasm` off the JS thread and routes it as the candidate; resolves to its hash.
   * Rolling out the candidate's bytes again changes its traffic (5 → 20 → 100 %). Refused,
   * changing nothing, on `ERR_HASH_MISMATCH`, `ERR_COMPILE` (including ABI violations) or
   * `ERR_INSTANTIATE`.
   */
  async rollout(wasm: Uint8Array | string | URL, options: RolloutOptions = {}): Promise<string> {
    const bytes = wasm instanceof Uint8Array ? wasm : await readFile(wasm);
    const auto = options.autoRollback;
    try {
      return await this.#native.rollout(bytes, {
        expectedHash: options.expectedHash,
        traffic: { percent: options.percent, eventTypes: options.eventTypes, labels: options.labels },
        shadow: options.shadow,
        autoRollback: auto === undefined ? undefined : auto === false ? { enabled: false } : { enabled: true, ...auto },
        actor: options.actor,
      });
    } catch (e) {
      throw fromNative(e);
    }
  }

  /** Changes the candidate's traffic (`ERR_NO_CANDIDATE` without one). */
  async setTraffic(traffic: TrafficOptions): Promise<void> {
    const { actor, ...rest } = traffic;
    try {
      await this.#native.setTraffic(rest, actor);
    } catch (e) {
      throw fromNative(e);
    }
  }

  /** Makes the candidate current; resolves to its hash. */
  async promote(options: { actor?: string } = {}): Promise<string> {
    try {
      return await this.#native.promote(options.actor);
    } catch (e) {
      throw fromNative(e);
    }
  }

  /**
   * Drops the candidate; without one, returns to the version current before this one; with
   * `toHash`, restores that earlier version. Resolves to the hash now current.
   */
  async rollback(options: RollbackOptions = {}): Promise<string> {
    try {
      return await this.#native.rollback(options);
    } catch (e) {
      throw fromNative(e);
    }
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
