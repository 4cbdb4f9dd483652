/**
 * Per-second rates from cumulative counters (bytes, messages, changesets),
 * for the status page's throughput line: a small state object fed samples
 * with the time they were taken, so it needs no timer of its own.
 */

/** Cumulative counters at one instant. */
export interface ThroughputTotals {
  /** WebSocket payload bytes received since start. */
  bytesIn: number;
  /** WebSocket payload bytes sent since start. */
  bytesOut: number;
  /** Protocol messages received since start. */
  messagesIn: number;
  /** Protocol messages sent since start. */
  messagesOut: number;
  /** Changesets integrated since start. */
  changesets: number;
}

/** Rates per second over the meter's window. */
export type ThroughputRates = { [K in keyof ThroughputTotals]: number };

const KEYS: readonly (keyof ThroughputTotals)[] = [
  "bytesIn",
  "bytesOut",
  "messagesIn",
  "messagesOut",
  "changesets",
];

/**
 * Keeps samples of the last `windowMs` and answers the average rate over
 * them: what the status page shows, smoothed over a few refreshes.
 */
export class ThroughputMeter {
  readonly #windowMs: number;
  readonly #samples: Array<{ time: number; totals: ThroughputTotals }> = [];

  /**
   * @param windowMs How far back rates look, in milliseconds.
   */
  constructor(windowMs = 10_000) {
    if (!(windowMs > 0)) throw new RangeError("windowMs must be positive");
    this.#windowMs = windowMs;
  }

  /**
   * Records the totals at `time` (epoch milliseconds, not decreasing) and
   * returns the rates since the oldest sample within the window (zeros
   * until there are two samples).
   */
  sample(time: number, totals: ThroughputTotals): ThroughputRates {
    const samples = this.#samples;
    const last = samples[samples.length - 1];
    if (last !== undefined && time < last.time) {
      throw new RangeError("Throughput samples must not go back in time");
    }
    samples.push({ time, totals: { ...totals } });
    // Keep one sample at or beyond the window's start, so the rate spans
    // the whole window once it has been running that long.
    while (samples.length > 2 && samples[1]!.time <= time - this.#windowMs) {
      samples.shift();
    }
    const first = samples[0]!;
    const seconds = (time - first.time) / 1000;
    const rates = {} as ThroughputRates;
    for (const key of KEYS) {
      rates[key] = seconds > 0
        ? Math.max(0, totals[key] - first.totals[key]) / seconds
        : 0;
    }
    return rates;
  }
}
