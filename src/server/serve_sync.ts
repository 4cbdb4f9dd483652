/**
 * `serveSync`: the server's parts wired to one listener, with the shutdown
 * that takes them apart (`docs/SERVER.md` "Embedding it").
 */

import { Connection } from "./connection.ts";
import type { ServerContext } from "./server_context.ts";
import { createHandler, type SyncHandler } from "./handler.ts";
import { createLog, type Log } from "./log.ts";
import {
  resolveOptions,
  type ServerSettings,
  type ServeSyncOptions,
} from "./options.ts";
import { RealmRegistry } from "./realm_registry.ts";
import { SnapshotScheduler } from "./snapshot_scheduler.ts";
import { StatsCounters, type SyncServerStats } from "./stats.ts";
import { type KvStore, openKvStore } from "./storage/kv_store.ts";
import type { RetryOptions } from "./storage/retry.ts";
import { TokenAuthority } from "./tokens.ts";
import { delay } from "../util/delay.ts";

export type {
  AuthOptions,
  HistoryOptions,
  LimitOptions,
  ServeSyncOptions,
} from "./options.ts";

/**
 * A running sync server, returned by {@linkcode serveSync}. Dispose it
 * (`await using`) or call `shutdown()`.
 *
 * @example URL, address and stats
 * ```ts
 * import { serveSync, type SyncServer } from "@tether/sync/server";
 * import assert from "node:assert/strict";
 *
 * await using server: SyncServer = await serveSync({
 *   port: 0,
 *   kv: ":memory:",
 *   auth: { allowAnonymous: true },
 *   logger: () => {},
 * });
 * assert.equal(server.url, `http://127.0.0.1:${server.addr.port}`);
 * assert.deepEqual(server.stats(), {
 *   connections: 0,
 *   sessions: 0,
 *   realms: 0,
 *   bytesIn: 0,
 *   bytesOut: 0,
 *   changesetsIntegrated: 0,
 * });
 * ```
 */
export interface SyncServer extends AsyncDisposable {
  /** Base URL of the server, e.g. `http://127.0.0.1:8080` (no trailing slash). */
  readonly url: string;
  /** The address the server listens on. */
  readonly addr: Deno.NetAddr;
  /**
   * The request handler, for calling the HTTP surface without a socket
   * (`/login`, `/health`; WebSocket upgrades need a real connection).
   */
  readonly handler: SyncHandler;
  /** Current counters. */
  stats(): SyncServerStats;
  /**
   * Stops the server: refuses new requests, sends every connection an ERROR
   * `server_shutting_down` and a 1001 close, waits (up to
   * `shutdownTimeoutMs`) for in-flight commits, cuts whatever connection is
   * still open, then releases the KV store and lock it opened. Safe to call
   * more than once.
   */
  shutdown(): Promise<void>;
}

// How long shutdown waits for a client to answer the close, once everything
// sent to it has been written, before cutting its connection.
const CLOSE_GRACE_MS = 1000;

// A snapshot lease left by a crashed process blocks others this long.
const SNAPSHOT_LEASE_MS = 30_000;

/**
 * Starts a sync server: the WebSocket sync endpoint (`GET /sync`),
 * `POST /login` and `GET /health` on `Deno.serve`, with every realm's
 * history in Deno KV.
 *
 * @param options Where to listen, where to store, how users log in.
 * @returns The running server, once it listens.
 * @throws {TypeError} If no login method is enabled or an option is invalid.
 * @throws {KvLockedError} If another live process serves the same KV file.
 * @throws {Deno.errors.AddrInUse} If the port is taken.
 *
 * @example Serve on a free port, check health, shut down
 * ```ts
 * import { serveSync } from "@tether/sync/server";
 * import assert from "node:assert/strict";
 *
 * await using server = await serveSync({
 *   port: 0,
 *   kv: ":memory:",
 *   auth: { allowAnonymous: true },
 *   logger: () => {},
 * });
 * const response = await fetch(`${server.url}/health`);
 * assert.deepEqual(await response.json(), { status: "ok" });
 * assert.equal(server.stats().connections, 0);
 * ```
 */
export async function serveSync(
  options: ServeSyncOptions,
): Promise<SyncServer> {
  const settings = resolveOptions(options);
  settings.signal?.throwIfAborted();
  const log = createLog(settings.logger, settings.now);
  const store = await openKvStore(options.kv);
  try {
    return await SyncServerInstance.start(store, settings, log);
  } catch (error) {
    store.release();
    throw error;
  }
}

class SyncServerInstance implements SyncServer {
  readonly url: string;
  readonly addr: Deno.NetAddr;
  readonly handler: SyncHandler;
  #store: KvStore;
  #http: Deno.HttpServer<Deno.NetAddr>;
  #settings: ServerSettings;
  #stats: StatsCounters;
  #registry: RealmRegistry;
  #snapshots: SnapshotScheduler;
  #connections: Set<Connection>;
  #requests: Set<Promise<void>>;
  #closeHttp: AbortController;
  #lifetime: AbortController;
  #commits: AbortController;
  #log: Log;
  #shutdown: Promise<void> | null = null;
  #onAbort = () => void this.shutdown();

  constructor(parts: {
    store: KvStore;
    http: Deno.HttpServer<Deno.NetAddr>;
    handler: SyncHandler;
    settings: ServerSettings;
    stats: StatsCounters;
    registry: RealmRegistry;
    snapshots: SnapshotScheduler;
    connections: Set<Connection>;
    requests: Set<Promise<void>>;
    closeHttp: AbortController;
    lifetime: AbortController;
    commits: AbortController;
    log: Log;
  }) {
    this.#store = parts.store;
    this.#http = parts.http;
    this.handler = parts.handler;
    this.#settings = parts.settings;
    this.#stats = parts.stats;
    this.#registry = parts.registry;
    this.#snapshots = parts.snapshots;
    this.#connections = parts.connections;
    this.#requests = parts.requests;
    this.#closeHttp = parts.closeHttp;
    this.#lifetime = parts.lifetime;
    this.#commits = parts.commits;
    this.#log = parts.log;
    this.addr = parts.http.addr;
    this.url = `${parts.settings.tls !== null ? "https" : "http"}://${
      urlHost(this.addr.hostname)
    }:${this.addr.port}`;
    parts.settings.signal?.addEventListener("abort", this.#onAbort, {
      once: true,
    });
  }

  static async start(
    store: KvStore,
    settings: ServerSettings,
    log: Log,
  ): Promise<SyncServerInstance> {
    const now = settings.now;
    const lifetime = new AbortController();
    const commits = new AbortController();
    const onRetry = (error: unknown, attempt: number) =>
      log("warn", "kv_retry", `Storage call failed; retry ${attempt}`, {
        error,
      });
    const retry: RetryOptions = { signal: lifetime.signal, onRetry };
    const tokens = await TokenAuthority.open(
      store.kv,
      { ...settings, log },
      retry,
    );
    const stats = new StatsCounters();
    const snapshots = new SnapshotScheduler(
      store.kv,
      {
        enabled: settings.snapshots,
        lagVersions: settings.snapshotLagVersions,
        retainVersions: settings.retainVersions,
        leaseMs: SNAPSHOT_LEASE_MS,
      },
      retry,
      log,
      now,
    );
    const registry = new RealmRegistry({
      kv: store.kv,
      retry,
      log,
      onIntegrated: (count) => stats.changesetsIntegrated += count,
      snapshots,
    });
    const connections = new Set<Connection>();
    const context: ServerContext = {
      settings,
      kv: store.kv,
      tokens,
      registry,
      stats,
      log,
      retry,
      lifetime: lifetime.signal,
      commitSignal: commits.signal,
    };
    let nextConnection = 0;
    const handler = createHandler({
      isServing: () => !lifetime.signal.aborted,
      lifetime: lifetime.signal,
      tokens,
      log,
      acceptSocket(request) {
        // Upgrade first, before any await (see HandlerContext.acceptSocket).
        let upgrade;
        try {
          upgrade = Deno.upgradeWebSocket(request);
        } catch (error) {
          return new Response(
            JSON.stringify({
              error: {
                code: "bad_request",
                message: `Cannot upgrade: ${
                  error instanceof Error ? error.message : String(error)
                }`,
              },
            }),
            { status: 400, headers: { "content-type": "application/json" } },
          );
        }
        const rejection = connections.size >= settings.maxConnections
          ? {
            code: "too_many_connections" as const,
            message:
              `The server is at its limit of ${settings.maxConnections} connections`,
          }
          : null;
        const connection = new Connection(
          upgrade.socket,
          ++nextConnection,
          context,
          rejection,
        );
        connections.add(connection);
        connection.closed.then(() => connections.delete(connection));
        return upgrade.response;
      },
    });
    const listening = Promise.withResolvers<void>();
    // Requests whose response has not been sent yet, and the switch that
    // closes the listener and every connection at once (see #stop).
    const requests = new Set<Promise<void>>();
    const closeHttp = new AbortController();
    const serveOptions = {
      port: settings.port,
      hostname: settings.hostname,
      signal: closeHttp.signal,
      onListen: () => listening.resolve(),
      ...(settings.tls ?? {}),
    };
    const http = Deno.serve(serveOptions, (request, info) => {
      const delivered = info.completed.catch(() => {});
      requests.add(delivered);
      delivered.finally(() => requests.delete(delivered));
      return handler(request, info);
    });
    await listening.promise;
    const server = new SyncServerInstance({
      store,
      http,
      handler,
      settings,
      stats,
      registry,
      snapshots,
      connections,
      requests,
      closeHttp,
      lifetime,
      commits,
      log,
    });
    log("info", "listening", `Tether sync server listening on ${server.url}`);
    return server;
  }

  stats(): SyncServerStats {
    const figures = this.#stats.snapshot();
    figures.realms = this.#registry.size;
    return figures;
  }

  shutdown(): Promise<void> {
    this.#shutdown ??= this.#stop();
    return this.#shutdown;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.shutdown();
  }

  async #stop(): Promise<void> {
    this.#settings.signal?.removeEventListener("abort", this.#onAbort);
    this.#log("info", "shutting_down", "Shutting down");
    // New work stops at once (pumps, watches, binds); commits in flight may
    // finish until the deadline.
    this.#lifetime.abort(new Error("The server is shutting down"));
    for (const connection of this.#connections) {
      connection.fail("server_shutting_down", "The server is shutting down");
    }
    let deadline: ReturnType<typeof setTimeout> | undefined;
    const expired = new Promise<"expired">((resolve) => {
      deadline = setTimeout(
        () => resolve("expired"),
        this.#settings.shutdownTimeoutMs,
      );
    });
    let answered = false;
    let outcome: "drained" | "expired" = await Promise.race([
      this.#drain(() => answered = true).then(() => "drained" as const),
      expired,
    ]);
    if (outcome === "expired") this.#forced();
    // What is left holds nothing in flight (an idle keep-alive connection,
    // a request that never finished arriving, a socket whose client does
    // not answer the close) or is past the deadline: it is cut now, with
    // the listener. Deno.HttpServer's graceful shutdown() cannot be used:
    // it waits for the rest of a request body a stalled client never sends,
    // and cannot be cut short once begun. Responses just handed over need
    // one turn of the event loop to reach their sockets first.
    if (answered) await new Promise((resolve) => setTimeout(resolve, 0));
    this.#closeHttp.abort();
    await this.#http.finished;
    if (outcome !== "expired") {
      // The sockets cut just now end their sessions.
      outcome = await Promise.race([
        Promise.allSettled(
          [...this.#connections].map((connection) => connection.closed),
        ).then(() => "drained" as const),
        expired,
      ]);
      if (outcome === "expired") this.#forced();
    }
    clearTimeout(deadline);
    this.#commits.abort(new Error("The server has shut down"));
    await this.#registry.closeAll();
    await this.#snapshots.drain();
    this.#store.release();
    this.#log("info", "stopped", "Stopped");
  }

  /**
   * Resolves once every request in flight has been answered (those reading
   * a body give up at once; new ones get 503 without reading theirs),
   * calling `onAnswered` if there were any, and every connection has closed
   * or finished its work and written what it was sent.
   */
  async #drain(onAnswered: () => void): Promise<void> {
    // Bounded by the deadline it races with.
    while (this.#requests.size > 0) {
      onAnswered();
      await Promise.allSettled([...this.#requests]);
    }
    // A client answers the close within a round trip; one that has not
    // within the grace (a dead link, or not listening) never will.
    const grace = new AbortController();
    const graceMs = Math.min(
      CLOSE_GRACE_MS,
      this.#settings.shutdownTimeoutMs / 2,
    );
    await Promise.allSettled(
      [...this.#connections].map((connection) =>
        Promise.race([
          connection.closed,
          connection.flushed().then(() => delay(graceMs, grace.signal)),
        ])
      ),
    );
    grace.abort();
  }

  #forced(): void {
    this.#log(
      "warn",
      "shutdown_forced",
      `Connections or commits still open after ${this.#settings.shutdownTimeoutMs} ms; abandoning them`,
    );
    // Whatever still runs (a commit that never returns, a stuck request)
    // fails on the closed store instead of holding the shutdown forever.
    this.#commits.abort(new Error("The server shutdown deadline passed"));
  }
}

function urlHost(hostname: string): string {
  if (hostname === "0.0.0.0") return "127.0.0.1";
  if (hostname === "::") return "[::1]";
  return hostname.includes(":") ? `[${hostname}]` : hostname;
}
