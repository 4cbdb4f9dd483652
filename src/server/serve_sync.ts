import { DEFAULT_LIMITS } from "../protocol/limits.ts";
import { createHandler, type SyncHandler } from "./handler.ts";
import { consoleLogger, createLog, type Logger } from "./log.ts";
import { Peer, type PeerContext } from "./peer.ts";
import { ownPathsOnly, type PermissionsFunction } from "./permissions.ts";
import { RealmRegistry } from "./realm_registry.ts";
import { SnapshotScheduler } from "./snapshot_scheduler.ts";
import { StatsCounters, type SyncServerStats } from "./stats.ts";
import { type KvLock, lockKvPath } from "./storage/kv_lock.ts";
import { delay, type RetryOptions } from "./storage/retry.ts";
import { TokenAuthority } from "./tokens.ts";
import {
  type JwtProviderOptions,
  type ResolvedJwtProvider,
  resolveJwtProviderOptions,
} from "./identity_provider.ts";

/**
 * How users log in; see {@linkcode ServeSyncOptions.auth}.
 *
 * @example JWT login with short-lived access tokens
 * ```ts
 * import type { AuthOptions } from "@tether/sync/server";
 *
 * const auth: AuthOptions = {
 *   jwtSecret: "a long random secret shared with your identity provider",
 *   accessTokenTtlMs: 5 * 60 * 1000,
 * };
 * ```
 */
export interface AuthOptions {
  /**
   * Secret for HS256 user JWTs: `POST /login` with `{"provider": "jwt"}`
   * accepts a token signed with it whose `sub` is the user id and whose
   * `exp` is in the future. Without it, JWT login is off.
   *
   * @default {undefined}
   */
  jwtSecret?: string | Uint8Array<ArrayBuffer>;
  /**
   * Whether `POST /login` with `{"provider": "anonymous"}` creates a new
   * user. A server with neither this nor `jwtSecret` is a `TypeError`.
   *
   * @default {false}
   */
  allowAnonymous?: boolean;
  /**
   * Tokens from an identity provider (RS256 / ES256, a public key or a
   * JWKS URL): `POST /login` with `{"provider": "jwt"}` accepts them, and so
   * does the HANDSHAKE.
   *
   * @default {undefined}
   */
  jwt?: JwtProviderOptions;
  /**
   * Lifetime of access tokens issued by `POST /login`, in milliseconds.
   * A connection whose token expires without a REFRESH is closed with
   * `token_expired`.
   *
   * @default {1800000}
   */
  accessTokenTtlMs?: number;
  /**
   * Lifetime of refresh tokens, in milliseconds.
   *
   * @default {2592000000}
   */
  refreshTokenTtlMs?: number;
}

/**
 * Limits that protect the server from one client.
 *
 * @example
 * ```ts
 * import type { LimitOptions } from "@tether/sync/server";
 *
 * const limits: LimitOptions = { maxMessageBytes: 4 * 1024 * 1024, maxConnections: 500 };
 * ```
 */
export interface LimitOptions {
  /**
   * Largest WebSocket message accepted, in bytes; announced to clients in
   * HANDSHAKE_REPLY so they split uploads to fit. Larger messages close the
   * connection with `message_too_large`.
   *
   * @default {16777216}
   */
  maxMessageBytes?: number;
  /**
   * Most sessions bound at once on one connection; one more BIND gets a
   * session-scoped `too_many_sessions`.
   *
   * @default {256}
   */
  maxSessionsPerConnection?: number;
  /**
   * Most WebSocket connections at once; one more is refused with
   * `too_many_connections` (try again) and close code 1013.
   *
   * @default {10000}
   */
  maxConnections?: number;
}

/**
 * How the server keeps each realm's history and snapshot.
 *
 * @example Keep only the last 100 versions below the snapshot
 * ```ts
 * import type { HistoryOptions } from "@tether/sync/server";
 *
 * const history: HistoryOptions = { retainVersions: 100 };
 * ```
 */
export interface HistoryOptions {
  /**
   * Whether fresh clients may bootstrap from a materialised snapshot of the
   * realm's state instead of replaying its history. With `false`, no
   * snapshot is kept and history is never compacted.
   *
   * @default {true}
   */
  snapshots?: boolean;
  /**
   * How far the snapshot may lag behind the head, in versions, before an
   * upload triggers advancing it in the background (a bootstrapping client
   * always brings it up to date first).
   *
   * @default {64}
   */
  snapshotLagVersions?: number;
  /**
   * History versions kept below the snapshot's version, so clients that are
   * behind by at most this many catch up by replay; older history is
   * deleted, and clients behind it bootstrap from the snapshot.
   *
   * @default {1000}
   */
  retainVersions?: number;
}

/**
 * Options of {@linkcode serveSync}. Only `kv` and `auth` are required.
 *
 * @example A server for a team: durable store, JWT login, custom permissions
 * ```ts
 * import { type ServeSyncOptions, serveSync } from "@tether/sync/server";
 *
 * const directory = await Deno.makeTempDir();
 * const options: ServeSyncOptions = {
 *   port: 0,
 *   kv: `${directory}/sync.kv`,
 *   auth: { jwtSecret: "secret shared with the identity provider" },
 *   permissions: (userId, path) =>
 *     path.startsWith(`/${userId}/`) ? "readwrite" : path.startsWith("/public/") ? "read" : "none",
 *   logger: () => {},
 * };
 * try {
 *   await using _server = await serveSync(options);
 * } finally {
 *   await Deno.remove(directory, { recursive: true });
 * }
 * ```
 */
export interface ServeSyncOptions {
  /**
   * Port to listen on; 0 picks a free one (`server.url` tells which).
   *
   * @default {8080}
   */
  port?: number;
  /**
   * Interface to listen on. Use `"0.0.0.0"` to accept connections from
   * other machines.
   *
   * @default {"127.0.0.1"}
   */
  hostname?: string;
  /**
   * Where realms are stored:
   * - a file path: a local Deno KV file, served by this process alone (a
   *   second process on the same path is refused at start); the server opens
   *   it, creating its directory, and closes it at shutdown;
   * - `":memory:"`: an in-memory store, gone at shutdown (tests);
   * - an `http://` or `https://` URL: a KV Connect endpoint (self-hosted
   *   denokv or Deno Deploy KV), which several server processes may share;
   *   the access token comes from the `DENO_KV_ACCESS_TOKEN` variable;
   * - an open `Deno.Kv`: used as is and not closed by shutdown (its owner
   *   closes it).
   */
  kv: string | Deno.Kv;
  /** How users log in. */
  auth: AuthOptions;
  /**
   * The operator's token: with it, `/metrics`, `/status` and the admin
   * routes answer requests that send `Authorization: Bearer <adminToken>`
   * (from anywhere); without it, `/metrics` and `/status` answer loopback
   * clients only and the admin routes do not exist (404).
   *
   * @default {undefined}
   */
  adminToken?: string;
  /**
   * Decides what a user may do with a realm path (`~` already replaced by
   * the user id).
   *
   * @default {ownPathsOnly} read and write under `/<userId>/`, nothing else
   */
  permissions?: PermissionsFunction;
  /** Limits per message, connection and server. */
  limits?: LimitOptions;
  /**
   * TLS certificate chain in PEM; with `key`, the server speaks HTTPS and
   * WSS.
   *
   * @default {undefined}
   */
  cert?: string;
  /**
   * TLS private key in PEM, with `cert`.
   *
   * @default {undefined}
   */
  key?: string;
  /**
   * Shuts the server down when aborted.
   *
   * @default {undefined}
   */
  signal?: AbortSignal;
  /**
   * Largest DOWNLOAD message the server builds, in bytes (a changeset larger
   * than this is sent alone). WebSocket delivers whole messages only, so
   * this bounds how long a slow link goes without a complete message (the
   * client's read timeout counts whole messages) and how far apart a
   * client's download progress steps are. For a client that acknowledges
   * what it receives (RECEIVED, as this package's client does) batches are
   * smaller while the link is slow: each is sized to arrive within a
   * quarter of the client's read timeout, but never below 16 KiB (or this
   * value, when smaller).
   *
   * @default {65536}
   */
  downloadBatchBytes?: number;
  /**
   * A connection's unsent bytes above which the server stops reading
   * storage for its sessions until the socket drains (backpressure).
   *
   * @default {1048576}
   */
  sendBufferBytes?: number;
  /**
   * Whether DOWNLOAD frames of at least 8 KiB are sent deflated when that
   * saves at least a sixteenth (PROTOCOL.md §2). The client in this package
   * inflates them; turn this off only for a client that cannot. On the
   * demo's 20,000-object bootstrap it cuts the bytes sent from 1.17 MB to
   * 263 KB at no measurable cost in time on loopback. Compressed UPLOADs are
   * accepted either way.
   *
   * @default {true}
   */
  compression?: boolean;
  /**
   * Time a new connection has to send its HANDSHAKE, and one the server
   * closed has to answer the close (after which it no longer counts
   * against `maxConnections`), in milliseconds.
   *
   * @default {10000}
   */
  handshakeTimeoutMs?: number;
  /**
   * Time shutdown waits for connections to close and in-flight commits to
   * finish before it gives up on them, in milliseconds.
   *
   * @default {5000}
   */
  shutdownTimeoutMs?: number;
  /** Snapshot and history compaction settings. */
  history?: HistoryOptions;
  /**
   * Receives one record per event (connections, sessions, errors sent,
   * retries).
   *
   * @default {consoleLogger} one line per event on the console
   */
  logger?: Logger;
  /**
   * The clock for token lifetimes, in epoch milliseconds.
   *
   * @default {Date.now}
   */
  now?: () => number;
}

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

const DEFAULTS = {
  port: 8080,
  hostname: "127.0.0.1",
  accessTokenTtlMs: 30 * 60 * 1000,
  refreshTokenTtlMs: 30 * 24 * 60 * 60 * 1000,
  maxSessionsPerConnection: 256,
  maxConnections: 10_000,
  downloadBatchBytes: 64 * 1024,
  sendBufferBytes: 1024 * 1024,
  handshakeTimeoutMs: 10_000,
  shutdownTimeoutMs: 5_000,
  snapshotLagVersions: 64,
  retainVersions: 1000,
} as const;

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
  options.signal?.throwIfAborted();
  const logger = options.logger ?? consoleLogger;
  const now = options.now ?? Date.now;
  const log = createLog(logger, now);
  const store = await openStore(options.kv);
  try {
    return await SyncServerInstance.start(store, settings, options, log, now);
  } catch (error) {
    store.release();
    throw error;
  }
}

interface ResolvedSettings {
  adminToken: string | undefined;
  port: number;
  hostname: string;
  jwtSecret: string | Uint8Array<ArrayBuffer> | undefined;
  jwt: ResolvedJwtProvider | undefined;
  allowAnonymous: boolean;
  accessTokenTtlMs: number;
  refreshTokenTtlMs: number;
  permissions: PermissionsFunction;
  maxMessageBytes: number;
  maxSessionsPerConnection: number;
  maxConnections: number;
  downloadBatchBytes: number;
  sendBufferBytes: number;
  compression: boolean;
  handshakeTimeoutMs: number;
  shutdownTimeoutMs: number;
  snapshots: boolean;
  snapshotLagVersions: number;
  retainVersions: number;
}

function resolveOptions(options: ServeSyncOptions): ResolvedSettings {
  if (typeof options !== "object" || options === null) {
    throw new TypeError("Cannot serve: options are required");
  }
  const auth = options.auth;
  if (typeof auth !== "object" || auth === null) {
    throw new TypeError(
      "Cannot serve: options.auth is required (jwtSecret and/or allowAnonymous)",
    );
  }
  const jwtSecret = auth.jwtSecret;
  if (
    jwtSecret !== undefined &&
    !(typeof jwtSecret === "string" || jwtSecret instanceof Uint8Array)
  ) {
    throw new TypeError(
      "Cannot serve: auth.jwtSecret must be a string or bytes",
    );
  }
  if (jwtSecret !== undefined && jwtSecret.length === 0) {
    throw new TypeError("Cannot serve: auth.jwtSecret is empty");
  }
  const allowAnonymous = auth.allowAnonymous ?? false;
  const jwt = auth.jwt === undefined
    ? undefined
    : resolveJwtProviderOptions(auth.jwt);
  if (jwtSecret === undefined && jwt === undefined && !allowAnonymous) {
    throw new TypeError(
      "Cannot serve: no way to log in; set auth.jwtSecret, auth.jwt or auth.allowAnonymous",
    );
  }
  if (
    (options.cert === undefined) !== (options.key === undefined)
  ) {
    throw new TypeError("Cannot serve: cert and key go together");
  }
  const adminToken = options.adminToken;
  if (
    adminToken !== undefined &&
    (typeof adminToken !== "string" || adminToken.length < 16 ||
      /\s/.test(adminToken))
  ) {
    throw new TypeError(
      "Cannot serve: adminToken must be a string of at least 16 characters without white space",
    );
  }
  const limits = options.limits ?? {};
  const history = options.history ?? {};
  return {
    adminToken,
    port: integer("port", options.port ?? DEFAULTS.port, 0, 65535),
    hostname: options.hostname ?? DEFAULTS.hostname,
    jwtSecret,
    jwt,
    allowAnonymous,
    accessTokenTtlMs: integer(
      "auth.accessTokenTtlMs",
      auth.accessTokenTtlMs ?? DEFAULTS.accessTokenTtlMs,
      1,
    ),
    refreshTokenTtlMs: integer(
      "auth.refreshTokenTtlMs",
      auth.refreshTokenTtlMs ?? DEFAULTS.refreshTokenTtlMs,
      1,
    ),
    permissions: options.permissions ?? ownPathsOnly,
    maxMessageBytes: integer(
      "limits.maxMessageBytes",
      limits.maxMessageBytes ?? DEFAULT_LIMITS.maxMessageBytes,
      1024,
    ),
    maxSessionsPerConnection: integer(
      "limits.maxSessionsPerConnection",
      limits.maxSessionsPerConnection ?? DEFAULTS.maxSessionsPerConnection,
      1,
    ),
    maxConnections: integer(
      "limits.maxConnections",
      limits.maxConnections ?? DEFAULTS.maxConnections,
      1,
    ),
    downloadBatchBytes: integer(
      "downloadBatchBytes",
      options.downloadBatchBytes ?? DEFAULTS.downloadBatchBytes,
      1024,
    ),
    sendBufferBytes: integer(
      "sendBufferBytes",
      options.sendBufferBytes ?? DEFAULTS.sendBufferBytes,
      0,
    ),
    compression: options.compression ?? true,
    handshakeTimeoutMs: integer(
      "handshakeTimeoutMs",
      options.handshakeTimeoutMs ?? DEFAULTS.handshakeTimeoutMs,
      1,
    ),
    shutdownTimeoutMs: integer(
      "shutdownTimeoutMs",
      options.shutdownTimeoutMs ?? DEFAULTS.shutdownTimeoutMs,
      0,
    ),
    snapshots: history.snapshots ?? true,
    snapshotLagVersions: integer(
      "history.snapshotLagVersions",
      history.snapshotLagVersions ?? DEFAULTS.snapshotLagVersions,
      1,
    ),
    retainVersions: integer(
      "history.retainVersions",
      history.retainVersions ?? DEFAULTS.retainVersions,
      0,
    ),
  };
}

function integer(
  name: string,
  value: number,
  min: number,
  max = Number.MAX_SAFE_INTEGER,
): number {
  if (!Number.isSafeInteger(value) || value < min || value > max) {
    throw new TypeError(
      `Cannot serve: ${name} must be an integer in [${min}, ${max}], got ${value}`,
    );
  }
  return value;
}

interface Store {
  kv: Deno.Kv;
  /** Closes what this server opened (idempotent). */
  release(): void;
}

async function openStore(kv: string | Deno.Kv): Promise<Store> {
  if (typeof kv !== "string") {
    if (typeof kv !== "object" || kv === null || !("atomic" in kv)) {
      throw new TypeError(
        "Cannot serve: kv must be a path, a URL or a Deno.Kv",
      );
    }
    return { kv, release() {} };
  }
  if (kv === ":memory:" || /^https?:\/\//i.test(kv)) {
    const opened = await Deno.openKv(kv);
    let released = false;
    return {
      kv: opened,
      release() {
        if (released) return;
        released = true;
        opened.close();
      },
    };
  }
  if (kv === "") throw new TypeError("Cannot serve: kv path is empty");
  const directory = parentDirectory(kv);
  if (directory !== "") await Deno.mkdir(directory, { recursive: true });
  const lock: KvLock = await lockKvPath(kv);
  let opened: Deno.Kv;
  try {
    opened = await Deno.openKv(kv);
  } catch (error) {
    lock.release();
    throw error;
  }
  let released = false;
  return {
    kv: opened,
    release() {
      if (released) return;
      released = true;
      try {
        opened.close();
      } finally {
        lock.release();
      }
    },
  };
}

function parentDirectory(path: string): string {
  const index = Math.max(path.lastIndexOf("/"), path.lastIndexOf("\\"));
  return index <= 0 ? "" : path.slice(0, index);
}

class SyncServerInstance implements SyncServer {
  readonly url: string;
  readonly addr: Deno.NetAddr;
  readonly handler: SyncHandler;
  #store: Store;
  #http: Deno.HttpServer<Deno.NetAddr>;
  #settings: ResolvedSettings;
  #stats: StatsCounters;
  #registry: RealmRegistry;
  #snapshots: SnapshotScheduler;
  #peers: Set<Peer>;
  #requests: Set<Promise<void>>;
  #closeHttp: AbortController;
  #lifetime: AbortController;
  #commits: AbortController;
  #log: ReturnType<typeof createLog>;
  #shutdown: Promise<void> | null = null;
  #signal: AbortSignal | undefined;
  #onAbort = () => void this.shutdown();

  constructor(parts: {
    store: Store;
    http: Deno.HttpServer<Deno.NetAddr>;
    handler: SyncHandler;
    settings: ResolvedSettings;
    stats: StatsCounters;
    registry: RealmRegistry;
    snapshots: SnapshotScheduler;
    peers: Set<Peer>;
    requests: Set<Promise<void>>;
    closeHttp: AbortController;
    lifetime: AbortController;
    commits: AbortController;
    log: ReturnType<typeof createLog>;
    signal: AbortSignal | undefined;
    secure: boolean;
  }) {
    this.#store = parts.store;
    this.#http = parts.http;
    this.handler = parts.handler;
    this.#settings = parts.settings;
    this.#stats = parts.stats;
    this.#registry = parts.registry;
    this.#snapshots = parts.snapshots;
    this.#peers = parts.peers;
    this.#requests = parts.requests;
    this.#closeHttp = parts.closeHttp;
    this.#lifetime = parts.lifetime;
    this.#commits = parts.commits;
    this.#log = parts.log;
    this.addr = parts.http.addr;
    this.url = `${parts.secure ? "https" : "http"}://${
      urlHost(this.addr.hostname)
    }:${this.addr.port}`;
    this.#signal = parts.signal;
    parts.signal?.addEventListener("abort", this.#onAbort, { once: true });
  }

  static async start(
    store: Store,
    settings: ResolvedSettings,
    options: ServeSyncOptions,
    log: ReturnType<typeof createLog>,
    now: () => number,
  ): Promise<SyncServerInstance> {
    const lifetime = new AbortController();
    const commits = new AbortController();
    const onRetry = (error: unknown, attempt: number) =>
      log("warn", "kv_retry", `Storage call failed; retry ${attempt}`, {
        error,
      });
    const retry: RetryOptions = { signal: lifetime.signal, onRetry };
    const tokens = await TokenAuthority.open(store.kv, {
      jwtSecret: settings.jwtSecret,
      jwt: settings.jwt,
      log,
      allowAnonymous: settings.allowAnonymous,
      accessTokenTtlMs: settings.accessTokenTtlMs,
      refreshTokenTtlMs: settings.refreshTokenTtlMs,
      now,
    }, retry);
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
    const peers = new Set<Peer>();
    const peerContext: PeerContext = {
      kv: store.kv,
      tokens,
      permissions: settings.permissions,
      registry,
      stats,
      log,
      retry,
      lifetime: lifetime.signal,
      commitSignal: commits.signal,
      maxMessageBytes: settings.maxMessageBytes,
      maxSessionsPerConnection: settings.maxSessionsPerConnection,
      downloadBatchBytes: settings.downloadBatchBytes,
      highWaterBytes: settings.sendBufferBytes,
      handshakeTimeoutMs: settings.handshakeTimeoutMs,
      compression: settings.compression,
      now,
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
        const rejection = peers.size >= settings.maxConnections
          ? {
            code: "too_many_connections" as const,
            message:
              `The server is at its limit of ${settings.maxConnections} connections`,
          }
          : null;
        const peer = new Peer(
          upgrade.socket,
          ++nextConnection,
          peerContext,
          rejection,
        );
        peers.add(peer);
        peer.closed.then(() => peers.delete(peer));
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
      ...(options.cert !== undefined && options.key !== undefined
        ? { cert: options.cert, key: options.key }
        : {}),
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
      peers,
      requests,
      closeHttp,
      lifetime,
      commits,
      log,
      signal: options.signal,
      secure: options.cert !== undefined,
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
    this.#signal?.removeEventListener("abort", this.#onAbort);
    this.#log("info", "shutting_down", "Shutting down");
    // New work stops at once (pumps, watches, binds); commits in flight may
    // finish until the deadline.
    this.#lifetime.abort(new Error("The server is shutting down"));
    for (const peer of this.#peers) {
      peer.fail("server_shutting_down", "The server is shutting down");
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
        Promise.allSettled([...this.#peers].map((peer) => peer.closed)).then(
          () => "drained" as const,
        ),
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
      [...this.#peers].map((peer) =>
        Promise.race([
          peer.closed,
          peer.flushed().then(() => delay(graceMs, grace.signal)),
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
