/**
 * Counters `server.stats()` reports: gauges (`connections`, `sessions`,
 * `realms`) are current; totals (`bytesIn`, `bytesOut`,
 * `changesetsIntegrated`) count since the server started.
 *
 * @example
 * ```ts
 * import { serveSync, type SyncServerStats } from "@tether/sync/server";
 * import assert from "node:assert/strict";
 *
 * await using server = await serveSync({
 *   port: 0,
 *   kv: ":memory:",
 *   auth: { allowAnonymous: true },
 *   logger: () => {},
 * });
 * const stats: SyncServerStats = server.stats();
 * assert.equal(stats.changesetsIntegrated, 0);
 * ```
 */
export interface SyncServerStats {
  /** Open WebSocket connections. */
  connections: number;
  /** Bound sessions across all connections. */
  sessions: number;
  /**
   * Realms open in this process: with a bound session (or a BIND in
   * progress) or an open `server.realm(path).changes()` feed, each holding
   * the realm's watch and change cache.
   */
  realms: number;
  /** WebSocket payload bytes received. */
  bytesIn: number;
  /** WebSocket payload bytes sent. */
  bytesOut: number;
  /**
   * Changesets this server stored in a realm's history (re-uploads that
   * were only acknowledged are not counted).
   */
  changesetsIntegrated: number;
}

/** The mutable counters behind {@linkcode SyncServerStats}. */
export class StatsCounters {
  connections = 0;
  sessions = 0;
  realms = 0;
  bytesIn = 0;
  bytesOut = 0;
  changesetsIntegrated = 0;

  /** A copy of the current figures. */
  snapshot(): SyncServerStats {
    return {
      connections: this.connections,
      sessions: this.sessions,
      realms: this.realms,
      bytesIn: this.bytesIn,
      bytesOut: this.bytesOut,
      changesetsIntegrated: this.changesetsIntegrated,
    };
  }
}
