/**
 * What every connection shares from the server it belongs to.
 */

import type { Log } from "./log.ts";
import type { ServerSettings } from "./options.ts";
import type { RealmRegistry } from "./realm_registry.ts";
import type { StatsCounters } from "./stats.ts";
import type { RetryOptions } from "./storage/retry.ts";
import type { ServerMetrics } from "./server_metrics.ts";
import type { TokenAuthority } from "./tokens.ts";
import type { ServerKv } from "./storage/kv_store.ts";

/** What a connection needs from its server; one object, shared. */
export interface ServerContext {
  /** The server's options, resolved once. */
  settings: ServerSettings;
  kv: ServerKv;
  tokens: TokenAuthority;
  registry: RealmRegistry;
  stats: StatsCounters;
  /** The Prometheus families (`GET /metrics`), counted where things happen. */
  metrics: ServerMetrics;
  log: Log;
  /** Retry pacing for reads and identity writes; signal = server lifetime. */
  retry: RetryOptions;
  /** Aborts when the server shuts down. */
  lifetime: AbortSignal;
  /** Aborts when in-flight commits must give up (shutdown deadline). */
  commitSignal: AbortSignal;
}
