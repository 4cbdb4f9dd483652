/**
 * `createSyncHandler`: the whole server (store, tokens, realms, connections,
 * metrics) behind one request handler that an existing HTTP server mounts
 * under a prefix (docs/SERVER.md "Embedding it"); `serveSync` adds a
 * listener to it.
 */

import { Connection } from "./connection.ts";
import type { ServerContext } from "./server_context.ts";
import { createHandler, type SyncHandler } from "./handler.ts";
import { createLog, type Log } from "./log.ts";
import { OpsAccess } from "./ops_access.ts";
import {
  resolveOptions,
  type ServerSettings,
  type ServeSyncOptions,
} from "./options.ts";
import { RealmRegistry } from "./realm_registry.ts";
import { type ServerRealm, ServerRealms } from "./server_realm.ts";
import { ServerMetrics } from "./server_metrics.ts";
import { SnapshotScheduler } from "./snapshot_scheduler.ts";
import { LOCAL_PIECES, REMOTE_PIECES } from "./storage/snapshot.ts";
import { StatsCounters, type SyncServerStats } from "./stats.ts";
import { renderStatusPage, type StatusSession } from "./status_page.ts";
import { ThroughputMeter } from "./throughput.ts";
import { type KvStore, openKvStore } from "./storage/kv_store.ts";
import type { RetryOptions } from "./storage/retry.ts";
import { timeKv } from "./storage/timed_kv.ts";
import { TokenAuthority } from "./tokens.ts";
import { PACKAGE_VERSION } from "./version.ts";
import { delay } from "../util/delay.ts";

/**
 * Options of {@linkcode createSyncHandler}: those of `serveSync` (the
 * listener's `port`, `hostname`, `cert` and `key` are not used) and where
 * the surface is mounted.
 *
 * @example
 * ```ts
 * import type { SyncHandlerOptions } from "@tether/sync/server";
 *
 * const options: SyncHandlerOptions = {
 *   kv: ":memory:",
 *   auth: { allowAnonymous: true },
 *   prefix: "/api/sync",
 * };
 * console.log(options.prefix);
 * ```
 */
export interface SyncHandlerOptions extends ServeSyncOptions {
  /**
   * The path the surface is mounted at, e.g. `/api/sync`: `fetch` serves
   * `/api/sync/sync`, `/api/sync/login`, … and answers 404 for everything
   * else under it. It starts with `/`; a trailing slash is ignored, and
   * characters a URL escapes (`/ápi`) match requests however they are
   * written. A prefix without the leading `/`, with white space, `?`, `#`,
   * `\`, an empty segment or a `.` / `..` segment is a `TypeError`.
   *
   * @default {""} mounted at the root
   */
  prefix?: string;
}

/**
 * The sync server as a request handler, from {@linkcode createSyncHandler}.
 * Dispose it (`await using`) or call `shutdown()` before the HTTP server
 * that mounts it stops. Its methods are bound: `Deno.serve(sync.fetch)`
 * works.
 *
 * @example Mounted under /api/sync in an app's own Deno.serve
 * ```ts
 * import { createSyncHandler } from "@tether/sync/server";
 * import assert from "node:assert/strict";
 *
 * await using sync = await createSyncHandler({
 *   kv: ":memory:",
 *   auth: { allowAnonymous: true },
 *   prefix: "/api/sync",
 *   logger: () => {},
 * });
 * await using app = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, (request, info) => {
 *   if (new URL(request.url).pathname.startsWith("/api/sync/")) return sync.fetch(request, info);
 *   return new Response("the app");
 * });
 * const response = await fetch(`http://127.0.0.1:${app.addr.port}/api/sync/health`);
 * assert.deepEqual(await response.json(), { status: "ok" });
 * ```
 */
export interface SyncRequestHandler extends AsyncDisposable {
  /**
   * Answers one request (a WebSocket upgrade included). Pass the handler
   * info `Deno.serve` gives: `/metrics` and `/status` without an admin
   * token answer loopback clients only, and need the remote address.
   */
  fetch(request: Request, info?: Deno.ServeHandlerInfo): Promise<Response>;
  /** A realm's data, read and written from this process (see `server.realm`). */
  realm(path: string): ServerRealm;
  /** Current counters. */
  stats(): SyncServerStats;
  /**
   * Stops: new requests get 503, every connection an ERROR
   * `server_shutting_down` and a close, commits in flight may finish until
   * `shutdownTimeoutMs`, then the store is released. Safe to call more than
   * once.
   */
  shutdown(): Promise<void>;
}

/**
 * Opens the store and returns the sync server as a request handler, for
 * mounting inside an existing `Deno.serve`, Hono or Oak app.
 *
 * @param options `serveSync`'s options and the `prefix`.
 * @returns The handler, ready.
 * @throws {TypeError} For an invalid option or prefix, or a `kv` path to
 *   something that is not a Deno KV file (left untouched).
 * @throws {KvLockedError} If another live process serves the same KV file.
 *
 * @example Serving /api/sync/health
 * ```ts
 * import { createSyncHandler } from "@tether/sync/server";
 * import assert from "node:assert/strict";
 *
 * await using sync = await createSyncHandler({
 *   kv: ":memory:",
 *   auth: { allowAnonymous: true },
 *   prefix: "/api/sync",
 *   logger: () => {},
 * });
 * const response = await sync.fetch(new Request("http://app/api/sync/health"));
 * assert.equal(response.status, 200);
 * ```
 */
export async function createSyncHandler(
  options: SyncHandlerOptions,
): Promise<SyncRequestHandler> {
  const prefix = resolvePrefix(options?.prefix);
  return await SyncService.open(options, prefix);
}

function resolvePrefix(prefix: unknown): string {
  if (prefix === undefined || prefix === "" || prefix === "/") return "";
  if (
    typeof prefix !== "string" || !prefix.startsWith("/") ||
    /[\s?#\\]/.test(prefix) || prefix.includes("//") ||
    /\/\.\.?(\/|$)/.test(prefix)
  ) {
    throw new TypeError(
      `Cannot serve: prefix must be a path such as "/api/sync", got ${
        JSON.stringify(prefix)
      }`,
    );
  }
  // Compared with request paths as the URL parser spells them: "/ápi"
  // arrives as "/%C3%A1pi".
  const path = new URL(prefix, "http://prefix").pathname;
  return path.endsWith("/") ? path.slice(0, -1) : path;
}

// How long shutdown waits for a client to answer the close, once everything
// sent to it has been written, before cutting its connection.
const CLOSE_GRACE_MS = 1000;

// A snapshot lease left by a crashed process blocks others this long.
const SNAPSHOT_LEASE_MS = 30_000;

/** A listener that {@linkcode SyncService.shutdown} closes at the right time. */
export interface ServiceListener {
  /** Closes the listener and cuts what it still holds. */
  close(): Promise<void>;
}

/** The server without its listener; see the file comment. */
export class SyncService implements SyncRequestHandler {
  readonly settings: ServerSettings;
  readonly handler: SyncHandler;
  readonly log: Log;
  #store: KvStore;
  #stats: StatsCounters;
  #registry: RealmRegistry;
  #snapshots: SnapshotScheduler;
  #realms: ServerRealms;
  #connections: Set<Connection>;
  #requests = new Set<Promise<unknown>>();
  #lifetime: AbortController;
  #commits: AbortController;
  #listener: ServiceListener | null = null;
  #shutdown: Promise<void> | null = null;
  #onAbort = () => void this.shutdown();

  private constructor(parts: {
    store: KvStore;
    settings: ServerSettings;
    log: Log;
    handler: SyncHandler;
    stats: StatsCounters;
    registry: RealmRegistry;
    snapshots: SnapshotScheduler;
    realms: ServerRealms;
    connections: Set<Connection>;
    lifetime: AbortController;
    commits: AbortController;
  }) {
    this.#store = parts.store;
    this.settings = parts.settings;
    this.log = parts.log;
    this.handler = parts.handler;
    this.#stats = parts.stats;
    this.#registry = parts.registry;
    this.#snapshots = parts.snapshots;
    this.#realms = parts.realms;
    this.#connections = parts.connections;
    this.#lifetime = parts.lifetime;
    this.#commits = parts.commits;
    parts.settings.signal?.addEventListener("abort", this.#onAbort, {
      once: true,
    });
    // Bound, so they work detached, as handlers are passed around:
    // `Deno.serve(sync.fetch)`, `{ fetch: sync.fetch }`, a signal listener
    // calling `sync.shutdown`.
    this.fetch = this.fetch.bind(this);
    this.realm = this.realm.bind(this);
    this.stats = this.stats.bind(this);
    this.shutdown = this.shutdown.bind(this);
  }

  /** Resolves the options, opens the store and builds every part. */
  static async open(
    options: ServeSyncOptions,
    prefix: string,
  ): Promise<SyncService> {
    const settings = resolveOptions(options);
    settings.signal?.throwIfAborted();
    const log = createLog(settings.logger, settings.now);
    const store = await openKvStore(options.kv);
    let service: SyncService;
    try {
      settings.signal?.throwIfAborted();
      service = await SyncService.#start(store, settings, log, prefix);
    } catch (error) {
      store.release();
      throw error;
    }
    await service.throwIfAborted();
    return service;
  }

  /**
   * Shuts down and rejects with the signal's reason if the `signal` option
   * aborted while the server was starting: its abort listener, added once
   * the parts exist, never fires for a signal that had already aborted.
   */
  async throwIfAborted(): Promise<void> {
    const signal = this.settings.signal;
    if (signal === undefined || !signal.aborted) return;
    await this.shutdown();
    throw signal.reason;
  }

  static async #start(
    store: KvStore,
    settings: ServerSettings,
    log: Log,
    prefix: string,
  ): Promise<SyncService> {
    const now = settings.now;
    const lifetime = new AbortController();
    const commits = new AbortController();
    const onRetry = (error: unknown, attempt: number) =>
      log("warn", "kv_retry", `Storage call failed; retry ${attempt}`, {
        error,
      });
    const retry: RetryOptions = { signal: lifetime.signal, onRetry };
    const stats = new StatsCounters();
    let registry: RealmRegistry | null = null;
    const metrics = new ServerMetrics({
      connections: () => stats.connections,
      sessions: () => stats.sessions,
      realms: () => registry?.size ?? 0,
    });
    const kv = timeKv(
      store.kv,
      (op, seconds) => metrics.kvOperation(op).observe(seconds),
    );
    const tokens = await TokenAuthority.open(kv, { ...settings, log }, retry);
    const access = await OpsAccess.create(settings.adminToken);
    const snapshots = new SnapshotScheduler(
      kv,
      {
        enabled: settings.snapshots,
        lagVersions: settings.snapshotLagVersions,
        retainVersions: settings.retainVersions,
        leaseMs: SNAPSHOT_LEASE_MS,
        pieces: store.remote ? REMOTE_PIECES : LOCAL_PIECES,
      },
      retry,
      log,
      now,
    );
    registry = new RealmRegistry({
      kv,
      watchHeads: store.shared,
      retry,
      log,
      onIntegrated: (count) => {
        stats.changesetsIntegrated += count;
        metrics.changesetsIntegrated.value += count;
      },
      snapshots,
    });
    const realms = new ServerRealms({
      kv,
      retry,
      registry,
      lifetime: lifetime.signal,
      commitSignal: commits.signal,
      now,
    });
    const connections = new Set<Connection>();
    const context: ServerContext = {
      settings,
      kv,
      tokens,
      registry,
      stats,
      metrics,
      log,
      retry,
      lifetime: lifetime.signal,
      commitSignal: commits.signal,
    };
    const startedAt = now();
    const throughput = new ThroughputMeter();
    let nextConnection = 0;
    const handler = createHandler({
      isServing: () => !lifetime.signal.aborted,
      lifetime: lifetime.signal,
      tokens,
      log,
      prefix,
      access,
      metrics: () => metrics.render(),
      status: () => {
        const time = now();
        const sessionList: StatusSession[] = [];
        for (const connection of connections) {
          for (const row of connection.statusRows()) sessionList.push(row);
        }
        return renderStatusPage({
          time,
          startedAt,
          version: PACKAGE_VERSION,
          connections: stats.connections,
          sessions: stats.sessions,
          realms: registry!.size,
          totals: {
            bytesIn: stats.bytesIn,
            bytesOut: stats.bytesOut,
            changesets: stats.changesetsIntegrated,
          },
          throughput: throughput.sample(time, {
            bytesIn: stats.bytesIn,
            bytesOut: stats.bytesOut,
            messagesIn: metrics.messagesReceived(),
            messagesOut: metrics.messagesSent(),
            changesets: stats.changesetsIntegrated,
          }),
          sessionList,
        });
      },
      checkStore: async () => {
        await kv.get(["tether", "health"]);
      },
      admin: {
        realms,
        maxBodyBytes: settings.maxMessageBytes,
        lifetime: lifetime.signal,
      },
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
    return new SyncService({
      store,
      settings,
      log,
      handler,
      stats,
      registry,
      snapshots,
      realms,
      connections,
      lifetime,
      commits,
    });
  }

  /**
   * Called by `serveSync` with its listener: tracks requests by
   * `info.completed` and closes the listener during shutdown.
   */
  attachListener(listener: ServiceListener): void {
    this.#listener = listener;
  }

  /** Counts a request until it has been answered (see {@linkcode shutdown}). */
  track(done: Promise<unknown>): void {
    const settled = done.catch(() => {});
    this.#requests.add(settled);
    settled.finally(() => this.#requests.delete(settled));
  }

  fetch(request: Request, info?: Deno.ServeHandlerInfo): Promise<Response> {
    // Called at once: a WebSocket upgrade must happen before any await.
    let answer: Promise<Response>;
    try {
      answer = Promise.resolve(this.handler(request, info));
    } catch (error) {
      answer = Promise.reject(error);
    }
    if (this.#listener === null) this.track(answer);
    return answer;
  }

  realm(path: string): ServerRealm {
    return this.#realms.realm(path);
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
    this.settings.signal?.removeEventListener("abort", this.#onAbort);
    this.log("info", "shutting_down", "Shutting down");
    // New work stops at once (pumps, watches, binds, feeds); commits in
    // flight may finish until the deadline.
    this.#lifetime.abort(new Error("The server is shutting down"));
    for (const connection of this.#connections) {
      connection.fail("server_shutting_down", "The server is shutting down");
    }
    let deadline: ReturnType<typeof setTimeout> | undefined;
    const expired = new Promise<"expired">((resolve) => {
      deadline = setTimeout(
        () => resolve("expired"),
        this.settings.shutdownTimeoutMs,
      );
    });
    let answered = false;
    let outcome: "drained" | "expired" = await Promise.race([
      this.#drain(() => answered = true).then(() => "drained" as const),
      expired,
    ]);
    if (outcome === "expired") this.#forced();
    if (this.#listener !== null) {
      // What is left holds nothing in flight (an idle keep-alive
      // connection, a request that never finished arriving, a socket whose
      // client does not answer the close) or is past the deadline: it is
      // cut now, with the listener. Deno.HttpServer's graceful shutdown()
      // cannot be used: it waits for the rest of a request body a stalled
      // client never sends, and cannot be cut short once begun. Responses
      // just handed over need one turn of the event loop to reach their
      // sockets first.
      if (answered) await new Promise((resolve) => setTimeout(resolve, 0));
      await this.#listener.close();
    }
    if (outcome !== "expired") {
      // The sockets cut just now (or closing by themselves, when mounted
      // in someone else's server) end their sessions.
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
    this.log("info", "stopped", "Stopped");
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
      this.settings.shutdownTimeoutMs / 2,
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
    this.log(
      "warn",
      "shutdown_forced",
      `Connections or commits still open after ${this.settings.shutdownTimeoutMs} ms; abandoning them`,
    );
    // Whatever still runs (a commit that never returns, a stuck request)
    // fails on the closed store instead of holding the shutdown forever.
    this.#commits.abort(new Error("The server shutdown deadline passed"));
  }
}
