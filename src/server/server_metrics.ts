import { ERROR_CODES } from "../protocol/error_codes.ts";
import { MessageType } from "../protocol/messages.ts";
import {
  type CounterChild,
  type CounterFamily,
  type HistogramChild,
  MetricsRegistry,
} from "./metrics.ts";

/**
 * The server's metric families (docs/SERVER.md "Metrics"), each defined
 * once here, with children pre-resolved so the connection and session code
 * counts with one number add.
 */

/** Where the gauges read their current values at scrape time. */
export interface ServerMetricsSources {
  /** Open WebSocket connections. */
  connections(): number;
  /** Bound sessions across all connections. */
  sessions(): number;
  /**
   * Realms open in this process: with a bound session (or a BIND in
   * progress) or an open `server.realm(path).changes()` feed.
   */
  realms(): number;
}

/** The KV operations timed by `tether_kv_operation_seconds{op}`. */
export const KV_OPERATIONS = ["get", "get_many", "list", "commit"] as const;

/** One of {@linkcode KV_OPERATIONS}. */
export type KvOperation = typeof KV_OPERATIONS[number];

/** Upload-to-acknowledgement latency buckets, in seconds. */
export const UPLOAD_ACK_BUCKETS: readonly number[] = [
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
  10,
];
/** Bootstrap duration buckets, in seconds. */
export const BOOTSTRAP_BUCKETS: readonly number[] = [
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
  10,
  30,
  60,
  120,
];
/** KV operation latency buckets, in seconds. */
export const KV_OPERATION_BUCKETS: readonly number[] = [
  0.0005,
  0.001,
  0.0025,
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
];

// snake_case label values for message types, e.g. "handshake_reply".
const TYPE_LABELS = new Map<number, string>(
  Object.entries(MessageType).map(([name, value]) => [
    value,
    name.replace(/(?<=[a-z])(?=[A-Z])/g, "_").toLowerCase(),
  ]),
);
const CLIENT_TYPES_BELOW = 0x40;

/** Every metric the server exports, with its hot-path children. */
export class ServerMetrics {
  /** The registry, for rendering (and for metrics an embedder adds). */
  readonly registry: MetricsRegistry = new MetricsRegistry();
  /** `tether_changesets_integrated_total`. */
  readonly changesetsIntegrated: CounterChild;
  /** `tether_bytes_received_total`: WebSocket payload bytes in. */
  readonly bytesReceived: CounterChild;
  /** `tether_bytes_sent_total`: WebSocket payload bytes out. */
  readonly bytesSent: CounterChild;
  /** `tether_client_resets_total`. */
  readonly clientResets: CounterChild;
  /** `tether_rejected_writes_total`. */
  readonly rejectedWrites: CounterChild;
  /** `tether_upload_ack_seconds`: UPLOAD received → acknowledged. */
  readonly uploadAck: HistogramChild;
  /** `tether_bootstrap_seconds`: BIND of a fresh client → caught up. */
  readonly bootstrap: HistogramChild;
  readonly #received: CounterChild[];
  readonly #sent: CounterChild[];
  readonly #errors: CounterFamily;
  readonly #errorChildren = new Map<string, CounterChild>();
  readonly #kv: Record<KvOperation, HistogramChild>;

  /**
   * @param sources Read at each scrape for the three gauges.
   */
  constructor(sources: ServerMetricsSources) {
    const registry = this.registry;
    registry.gauge("tether_connections", "Open WebSocket connections.", {
      collect: () => sources.connections(),
    });
    registry.gauge(
      "tether_sessions",
      "Sessions bound across all connections.",
      { collect: () => sources.sessions() },
    );
    registry.gauge(
      "tether_realms",
      "Realms open in this process: with a bound session or a server-side change feed.",
      { collect: () => sources.realms() },
    );
    this.changesetsIntegrated = registry.counter(
      "tether_changesets_integrated_total",
      "Changesets stored in a realm's history (acknowledged re-uploads are not counted).",
    ).child;
    this.bytesReceived = registry.counter(
      "tether_bytes_received_total",
      "WebSocket payload bytes received.",
    ).child;
    this.bytesSent = registry.counter(
      "tether_bytes_sent_total",
      "WebSocket payload bytes sent (after compression).",
    ).child;
    const received = registry.counter(
      "tether_messages_received_total",
      "Protocol messages received, by type.",
      ["type"],
    );
    const sent = registry.counter(
      "tether_messages_sent_total",
      "Protocol messages sent, by type.",
      ["type"],
    );
    // One slot per type byte: the hot path indexes, never formats.
    const unknownIn = received.labels("unknown");
    const unknownOut = sent.labels("unknown");
    this.#received = new Array<CounterChild>(256).fill(unknownIn);
    this.#sent = new Array<CounterChild>(256).fill(unknownOut);
    for (const [type, label] of TYPE_LABELS) {
      if (type < CLIENT_TYPES_BELOW) {
        this.#received[type] = received.labels(label);
      } else this.#sent[type] = sent.labels(label);
    }
    this.#errors = registry.counter(
      "tether_errors_total",
      "Errors sent to clients, by code.",
      ["code"],
    );
    for (const [name, row] of Object.entries(ERROR_CODES)) {
      // 3xx codes are raised by clients and never sent.
      if (row.code < 300) {
        this.#errorChildren.set(name, this.#errors.labels(name));
      }
    }
    this.clientResets = registry.counter(
      "tether_client_resets_total",
      "Clients told to reset: their state was behind the retained history or inconsistent with it.",
    ).child;
    this.rejectedWrites = registry.counter(
      "tether_rejected_writes_total",
      "Uploaded writes the server refused (permissions or validation).",
    ).child;
    this.uploadAck = registry.histogram(
      "tether_upload_ack_seconds",
      "Time from an UPLOAD's arrival to its acknowledgement, in seconds.",
      UPLOAD_ACK_BUCKETS,
    ).child;
    this.bootstrap = registry.histogram(
      "tether_bootstrap_seconds",
      "Time from a fresh client's BIND to its download catching up, in seconds.",
      BOOTSTRAP_BUCKETS,
    ).child;
    const kv = registry.histogram(
      "tether_kv_operation_seconds",
      "Latency of Deno KV operations, in seconds, by operation.",
      KV_OPERATION_BUCKETS,
      ["op"],
    );
    this.#kv = Object.fromEntries(
      KV_OPERATIONS.map((op) => [op, kv.labels(op)]),
    ) as Record<KvOperation, HistogramChild>;
  }

  /** Counts one received message of `type` and its `bytes`. */
  received(type: number, bytes: number): void {
    this.#received[type & 0xff]!.value++;
    this.bytesReceived.value += bytes;
  }

  /** Counts one sent message of `type` and its `bytes` on the wire. */
  sent(type: number, bytes: number): void {
    this.#sent[type & 0xff]!.value++;
    this.bytesSent.value += bytes;
  }

  /** Messages received so far, every type (for the status page's rates). */
  messagesReceived(): number {
    return sumDistinct(this.#received);
  }

  /** Messages sent so far, every type. */
  messagesSent(): number {
    return sumDistinct(this.#sent);
  }

  /** Counts one error sent to a client. */
  error(code: string): void {
    let child = this.#errorChildren.get(code);
    if (child === undefined) {
      child = this.#errors.labels(code);
      this.#errorChildren.set(code, child);
    }
    child.value++;
  }

  /** The latency histogram of one KV operation. */
  kvOperation(op: KvOperation): HistogramChild {
    return this.#kv[op];
  }

  /** The Prometheus text exposition of every family. */
  render(): string {
    return this.registry.render();
  }
}

// The slots share one child for every unknown type: count each child once.
function sumDistinct(children: readonly CounterChild[]): number {
  let total = 0;
  for (const child of new Set(children)) total += child.value;
  return total;
}
