/**
 * A small metrics registry (counters, gauges, histograms with labels) that
 * renders the Prometheus text exposition format, version 0.0.4.
 *
 * Hot-path cost: code that counts resolves its child once (`family.labels(…)`
 * at set-up) and then only adds to a number field; names, labels and
 * escaping are turned into text when `/metrics` is scraped, never per
 * increment.
 */

/** The `Content-Type` of {@linkcode MetricsRegistry.render}'s output. */
export const PROMETHEUS_CONTENT_TYPE =
  "text/plain; version=0.0.4; charset=utf-8";

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

/** A counter or gauge child: one time series. */
export class CounterChild {
  /** The current value; add to it directly or through {@linkcode inc}. */
  value = 0;

  /** Adds `amount` (default 1). */
  inc(amount = 1): void {
    this.value += amount;
  }
}

/** A gauge child: one time series that goes up and down. */
export class GaugeChild extends CounterChild {
  /** Sets the value. */
  set(value: number): void {
    this.value = value;
  }

  /** Subtracts `amount` (default 1). */
  dec(amount = 1): void {
    this.value -= amount;
  }
}

/** A histogram child: counts per bucket, sum and count of observations. */
export class HistogramChild {
  /** Upper bounds, ascending (shared with the family; `+Inf` implied). */
  readonly bounds: readonly number[];
  /** Observations per bucket, not cumulative; the last is above every bound. */
  readonly counts: Float64Array;
  /** Sum of the observed values. */
  sum = 0;
  /** Number of observations. */
  count = 0;

  /** @param bounds The family's bucket upper bounds. */
  constructor(bounds: readonly number[]) {
    this.bounds = bounds;
    this.counts = new Float64Array(bounds.length + 1);
  }

  /** Records one observation (seconds, for the `_seconds` families). */
  observe(value: number): void {
    const bounds = this.bounds;
    let index = 0;
    // A dozen buckets: a linear scan beats a binary search here.
    while (index < bounds.length && value > bounds[index]!) index++;
    this.counts[index]!++;
    this.sum += value;
    this.count++;
  }
}

type Kind = "counter" | "gauge" | "histogram";

/** What every family shares: name, help, labels and its children. */
abstract class Family<Child> {
  readonly name: string;
  readonly help: string;
  readonly labelNames: readonly string[];
  readonly #children = new Map<string, { values: string[]; child: Child }>();

  constructor(name: string, help: string, labelNames: readonly string[]) {
    if (!METRIC_NAME.test(name)) {
      throw new TypeError(`Invalid metric name ${JSON.stringify(name)}`);
    }
    for (const label of labelNames) {
      if (!LABEL_NAME.test(label) || label.startsWith("__")) {
        throw new TypeError(
          `Invalid label name ${JSON.stringify(label)} on ${name}`,
        );
      }
    }
    if (new Set(labelNames).size !== labelNames.length) {
      throw new TypeError(`Duplicate label name on ${name}`);
    }
    this.name = name;
    this.help = help;
    this.labelNames = labelNames;
  }

  abstract readonly kind: Kind;
  protected abstract create(): Child;

  /**
   * The child for these label values (one per label name, in order),
   * created on first use. Resolve children once, outside the hot path.
   * Label values should come from a bounded set (message types, error
   * codes): every distinct combination is kept until the process ends.
   */
  labels(...values: string[]): Child {
    if (values.length !== this.labelNames.length) {
      throw new TypeError(
        `${this.name} takes ${this.labelNames.length} label value(s), got ${values.length}`,
      );
    }
    const key = values.join("\u0000");
    let entry = this.#children.get(key);
    if (entry === undefined) {
      entry = { values, child: this.create() };
      this.#children.set(key, entry);
    }
    return entry.child;
  }

  /** Every child with its label values, in creation order. */
  children(): Iterable<{ values: readonly string[]; child: Child }> {
    return this.#children.values();
  }

  /** Appends this family's exposition lines to `out`. */
  abstract render(out: string[]): void;

  protected header(out: string[]): void {
    out.push(`# HELP ${this.name} ${escapeHelp(this.help)}`);
    out.push(`# TYPE ${this.name} ${this.kind}`);
  }

  protected labelText(values: readonly string[], extra = ""): string {
    const parts: string[] = [];
    for (let index = 0; index < values.length; index++) {
      parts.push(
        `${this.labelNames[index]}="${escapeLabelValue(values[index]!)}"`,
      );
    }
    if (extra !== "") parts.push(extra);
    return parts.length === 0 ? "" : `{${parts.join(",")}}`;
  }
}

/** A counter family: values only go up (`_total` names). */
export class CounterFamily extends Family<CounterChild> {
  readonly kind = "counter";

  /** The child of a family without labels. */
  get child(): CounterChild {
    return this.labels();
  }

  protected create(): CounterChild {
    return new CounterChild();
  }

  render(out: string[]): void {
    this.header(out);
    for (const { values, child } of this.children()) {
      out.push(
        `${this.name}${this.labelText(values)} ${formatNumber(child.value)}`,
      );
    }
  }
}

/**
 * A gauge family: a value that goes up and down, set by the code that
 * knows it or read at scrape time from `collect` (which costs nothing
 * between scrapes).
 */
export class GaugeFamily extends Family<GaugeChild> {
  readonly kind = "gauge";
  readonly #collect: (() => number) | undefined;

  constructor(
    name: string,
    help: string,
    labelNames: readonly string[],
    collect?: () => number,
  ) {
    super(name, help, labelNames);
    if (collect !== undefined && labelNames.length > 0) {
      throw new TypeError(`${name}: a collected gauge has no labels`);
    }
    this.#collect = collect;
    // A gauge without labels always has its one series, 0 until set.
    if (labelNames.length === 0) this.labels();
  }

  /** The child of a family without labels. */
  get child(): GaugeChild {
    return this.labels();
  }

  protected create(): GaugeChild {
    return new GaugeChild();
  }

  render(out: string[]): void {
    if (this.#collect !== undefined) this.child.set(this.#collect());
    this.header(out);
    for (const { values, child } of this.children()) {
      out.push(
        `${this.name}${this.labelText(values)} ${formatNumber(child.value)}`,
      );
    }
  }
}

/** A histogram family: `_bucket{le=…}` (cumulative), `_sum` and `_count`. */
export class HistogramFamily extends Family<HistogramChild> {
  readonly kind = "histogram";
  /** Bucket upper bounds, ascending, without `+Inf`. */
  readonly bounds: readonly number[];
  readonly #boundTexts: readonly string[];

  constructor(
    name: string,
    help: string,
    bounds: readonly number[],
    labelNames: readonly string[],
  ) {
    super(name, help, labelNames);
    if (labelNames.includes("le")) {
      throw new TypeError(`${name}: "le" is reserved in a histogram`);
    }
    if (bounds.length === 0) {
      throw new TypeError(`${name}: a histogram needs buckets`);
    }
    for (let index = 0; index < bounds.length; index++) {
      const bound = bounds[index]!;
      if (
        !Number.isFinite(bound) || (index > 0 && bound <= bounds[index - 1]!)
      ) {
        throw new TypeError(
          `${name}: bucket bounds must be finite and increasing`,
        );
      }
    }
    this.bounds = [...bounds];
    this.#boundTexts = [...this.bounds.map(formatNumber), "+Inf"];
  }

  /** The child of a family without labels. */
  get child(): HistogramChild {
    return this.labels();
  }

  protected create(): HistogramChild {
    return new HistogramChild(this.bounds);
  }

  render(out: string[]): void {
    this.header(out);
    for (const { values, child } of this.children()) {
      let cumulative = 0;
      for (let index = 0; index < this.#boundTexts.length; index++) {
        cumulative += child.counts[index]!;
        out.push(
          `${this.name}_bucket${
            this.labelText(values, `le="${this.#boundTexts[index]}"`)
          } ${formatNumber(cumulative)}`,
        );
      }
      const labels = this.labelText(values);
      out.push(`${this.name}_sum${labels} ${formatNumber(child.sum)}`);
      out.push(`${this.name}_count${labels} ${formatNumber(child.count)}`);
    }
  }
}

/** Families by name, rendered together. */
export class MetricsRegistry {
  readonly #families = new Map<string, Family<unknown>>();

  /** Registers a counter family. */
  counter(
    name: string,
    help: string,
    labelNames: readonly string[] = [],
  ): CounterFamily {
    return this.#add(new CounterFamily(name, help, labelNames));
  }

  /**
   * Registers a gauge family; with `collect` (no labels), its value is read
   * at each render.
   */
  gauge(
    name: string,
    help: string,
    options: { labelNames?: readonly string[]; collect?: () => number } = {},
  ): GaugeFamily {
    return this.#add(
      new GaugeFamily(name, help, options.labelNames ?? [], options.collect),
    );
  }

  /** Registers a histogram family with these bucket upper bounds. */
  histogram(
    name: string,
    help: string,
    bounds: readonly number[],
    labelNames: readonly string[] = [],
  ): HistogramFamily {
    return this.#add(new HistogramFamily(name, help, bounds, labelNames));
  }

  /** The exposition text of every family, in registration order. */
  render(): string {
    const out: string[] = [];
    for (const family of this.#families.values()) family.render(out);
    return out.length === 0 ? "" : `${out.join("\n")}\n`;
  }

  #add<F extends Family<unknown>>(family: F): F {
    if (this.#families.has(family.name)) {
      throw new TypeError(`Metric ${family.name} is already registered`);
    }
    this.#families.set(family.name, family);
    return family;
  }
}

/** Escapes `# HELP` text: backslash and line feed. */
export function escapeHelp(text: string): string {
  return text.replaceAll("\\", "\\\\").replaceAll("\n", "\\n");
}

/** Escapes a label value: backslash, double quote and line feed. */
export function escapeLabelValue(text: string): string {
  return text.replaceAll("\\", "\\\\").replaceAll('"', '\\"').replaceAll(
    "\n",
    "\\n",
  );
}

/** A sample value as Prometheus parses it (`+Inf`, `-Inf`, `NaN`). */
export function formatNumber(value: number): string {
  if (Number.isNaN(value)) return "NaN";
  if (value === Infinity) return "+Inf";
  if (value === -Infinity) return "-Inf";
  return String(value);
}
