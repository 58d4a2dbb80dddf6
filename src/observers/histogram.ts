/**
 * A Prometheus histogram that prom-client's registry serves like its own, observed without
 * hashing labels per observation: each label set is a child found once and then kept (prom-client's
 * own `histogram.labels(…).observe(v)` hashes the labels on every call, which is most of the cost of
 * timing every handler run). Registered with `registry.registerMetric`.
 */
import type { Registry } from 'prom-client';

type Labels = Record<string, string>;

export interface HistogramChild {
  observe(value: number): void;
}

export class FastHistogram {
  readonly name: string;
  readonly help: string;
  readonly type = 'histogram';
  readonly aggregator = 'sum';
  readonly #buckets: number[];
  readonly #children = new Map<string, { labels: Labels; counts: Float64Array; sum: number; count: number }>();

  constructor(options: { name: string; help: string; buckets: number[]; registers: Registry[] }) {
    this.name = options.name;
    this.help = options.help;
    this.#buckets = [...options.buckets].sort((a, b) => a - b);
    for (const r of options.registers) r.registerMetric(this as never);
  }

  /** The child for one label set; keep it and call `observe` on it. */
  child(labels: Labels): HistogramChild {
    const key = JSON.stringify(labels);
    let c = this.#children.get(key);
    if (!c) this.#children.set(key, (c = { labels, counts: new Float64Array(this.#buckets.length), sum: 0, count: 0 }));
    const entry = c;
    const buckets = this.#buckets;
    return {
      observe(v: number) {
        entry.sum += v;
        entry.count++;
        for (let i = 0; i < buckets.length; i++) {
          if (v <= buckets[i]!) {
            entry.counts[i]!++;
            break;
          }
        }
      },
    };
  }

  /** What prom-client's registry reads (`metrics()`, `getMetricsAsJSON()`, `getSingleMetric().get()`). */
  async get() {
    const values: { labels: Record<string, string | number>; value: number; metricName: string }[] = [];
    for (const c of this.#children.values()) {
      let cumulative = 0;
      this.#buckets.forEach((le, i) => {
        cumulative += c.counts[i]!;
        values.push({ labels: { ...c.labels, le }, value: cumulative, metricName: `${this.name}_bucket` });
      });
      values.push({ labels: { ...c.labels, le: '+Inf' }, value: c.count, metricName: `${this.name}_bucket` });
      values.push({ labels: c.labels, value: c.sum, metricName: `${this.name}_sum` });
      values.push({ labels: c.labels, value: c.count, metricName: `${this.name}_count` });
    }
    return { name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator };
  }

  reset(): void {
    for (const c of this.#children.values()) {
      c.counts.fill(0);
      c.sum = 0;
      c.count = 0;
    }
  }
}
