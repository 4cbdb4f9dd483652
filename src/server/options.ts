/**
 * The options of `serveSync` as callers write them, resolved once into the
 * settings every part of the server reads by reference (`docs/SERVER.md`
 * "Embedding it").
 */

import { DEFAULT_LIMITS } from "../protocol/limits.ts";
import { createConsoleLogger, type Logger } from "./log.ts";
import type { ChangesetValidator } from "./changeset_validation.ts";
import { ownPathsOnly, type PermissionsFunction } from "./permissions.ts";
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
   * does the HANDSHAKE (docs/SERVER.md "Identity providers").
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
   * connection with `message_too_large`; a client write that cannot fit is
   * refused alone with that code instead (docs/CLIENT.md "Rejected writes").
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
   * Most bytes the server holds for one connection's uploads that it has
   * received but not yet stored, counted as the memory they take (twice the
   * frame plus 256 bytes per instruction). A client that sends past it
   * gets the connection-scoped, retryable `queue_full` and reconnects; the
   * client library keeps at most 1 MiB of its uploads in flight per
   * connection, shared by its sessions (docs/SERVER.md "Memory").
   *
   * @default {16777216}
   */
  maxQueuedBytesPerConnection?: number;
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
   * upload (or a bootstrap that finds it so) starts advancing it in the
   * background, at most once per realm every 500 ms. No client waits for an
   * advance: a bootstrap takes the snapshot as stored.
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
   *   it, creating its directory, and closes it at shutdown. A path that
   *   exists and is not a Deno KV file (a directory, another application's
   *   SQLite database, bytes that are not SQLite) is refused with a
   *   `TypeError` before anything is opened, and left untouched;
   * - `":memory:"`: a store in the server's own heap, gone at shutdown
   *   (tests, examples, benchmarks): Deno KV's key order, limits and
   *   atomic checks, but each commit runs on the server's thread;
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
   * clients only and the admin routes do not exist (404). At least 16
   * characters, no white space (else `serveSync` throws a `TypeError`).
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
  /**
   * Refuses uploaded changesets on their content: `false` (or a throw)
   * refuses one with `validation_failed`; the writer's receipt rejects with
   * `write_rejected`, its changes are reverted on the client, and the
   * session goes on (docs/SERVER.md "Validating writes").
   *
   * @default {undefined} every changeset a user may write is taken
   */
  validateChangeset?: ChangesetValidator;
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
   * Shuts the server down when aborted. Aborted before `serveSync` (or
   * `createSyncHandler`) resolves, it stops what was started and the call
   * rejects with the signal's reason.
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
   * saves at least a sixteenth (docs/PROTOCOL.md §2). The client in this package
   * inflates them; turn this off only for a client that cannot. On the
   * demo's 20,000-object bootstrap it cuts the bytes sent from 1.17 MB to
   * 263 KB. A connection whose RECEIVEDs measure a link of 4 MiB/s or more
   * gets its DOWNLOADs undeflated: there deflating on the server's thread
   * costs more time than the bytes it saves. Compressed UPLOADs are accepted
   * either way.
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
   * @default {createConsoleLogger()} one line per event of level info and
   *   above on the console (debug records are left out)
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
 * The options of one server, checked and with defaults filled in: made once
 * by {@linkcode resolveOptions} and shared by reference (field names are the
 * option names).
 */
export interface ServerSettings {
  readonly port: number;
  readonly hostname: string;
  readonly jwtSecret: string | Uint8Array<ArrayBuffer> | undefined;
  /** `auth.jwt`, checked. */
  readonly jwt: ResolvedJwtProvider | undefined;
  readonly adminToken: string | undefined;
  readonly allowAnonymous: boolean;
  readonly accessTokenTtlMs: number;
  readonly refreshTokenTtlMs: number;
  readonly permissions: PermissionsFunction;
  readonly validateChangeset: ChangesetValidator | undefined;
  readonly maxMessageBytes: number;
  readonly maxSessionsPerConnection: number;
  readonly maxQueuedBytesPerConnection: number;
  readonly maxConnections: number;
  readonly downloadBatchBytes: number;
  readonly sendBufferBytes: number;
  readonly compression: boolean;
  readonly handshakeTimeoutMs: number;
  readonly shutdownTimeoutMs: number;
  readonly snapshots: boolean;
  readonly snapshotLagVersions: number;
  readonly retainVersions: number;
  /** PEM certificate and key, both or neither. */
  readonly tls: { readonly cert: string; readonly key: string } | null;
  readonly signal: AbortSignal | undefined;
  readonly logger: Logger;
  /** The clock for token lifetimes, in epoch milliseconds. */
  readonly now: () => number;
}

// Debug records (every connection, bind and login) are for a developer's
// own logger; a server run as is prints what an operator needs.
const DEFAULT_LOGGER = createConsoleLogger({ level: "info" });

type IntegerSetting =
  | "port"
  | "accessTokenTtlMs"
  | "refreshTokenTtlMs"
  | "maxMessageBytes"
  | "maxSessionsPerConnection"
  | "maxQueuedBytesPerConnection"
  | "maxConnections"
  | "downloadBatchBytes"
  | "sendBufferBytes"
  | "handshakeTimeoutMs"
  | "shutdownTimeoutMs"
  | "snapshotLagVersions"
  | "retainVersions";

interface IntegerRow {
  setting: IntegerSetting;
  /** The option's name in error messages. */
  name: string;
  read(options: ServeSyncOptions): number | undefined;
  fallback: number;
  min: number;
  max?: number;
}

// Every integer option, in the order they are checked (the first bad one is
// the one reported).
const INTEGER_OPTIONS: readonly IntegerRow[] = [
  {
    setting: "port",
    name: "port",
    read: (o) => o.port,
    fallback: 8080,
    min: 0,
    max: 65535,
  },
  {
    setting: "accessTokenTtlMs",
    name: "auth.accessTokenTtlMs",
    read: (o) => o.auth.accessTokenTtlMs,
    fallback: 30 * 60 * 1000,
    min: 1,
  },
  {
    setting: "refreshTokenTtlMs",
    name: "auth.refreshTokenTtlMs",
    read: (o) => o.auth.refreshTokenTtlMs,
    fallback: 30 * 24 * 60 * 60 * 1000,
    min: 1,
  },
  {
    setting: "maxMessageBytes",
    name: "limits.maxMessageBytes",
    read: (o) => o.limits?.maxMessageBytes,
    fallback: DEFAULT_LIMITS.maxMessageBytes,
    min: 1024,
  },
  {
    setting: "maxSessionsPerConnection",
    name: "limits.maxSessionsPerConnection",
    read: (o) => o.limits?.maxSessionsPerConnection,
    fallback: 256,
    min: 1,
  },
  {
    setting: "maxQueuedBytesPerConnection",
    name: "limits.maxQueuedBytesPerConnection",
    read: (o) => o.limits?.maxQueuedBytesPerConnection,
    fallback: 16 * 1024 * 1024,
    min: 1024,
  },
  {
    setting: "maxConnections",
    name: "limits.maxConnections",
    read: (o) => o.limits?.maxConnections,
    fallback: 10_000,
    min: 1,
  },
  {
    setting: "downloadBatchBytes",
    name: "downloadBatchBytes",
    read: (o) => o.downloadBatchBytes,
    fallback: 64 * 1024,
    min: 1024,
  },
  {
    setting: "sendBufferBytes",
    name: "sendBufferBytes",
    read: (o) => o.sendBufferBytes,
    fallback: 1024 * 1024,
    min: 0,
  },
  {
    setting: "handshakeTimeoutMs",
    name: "handshakeTimeoutMs",
    read: (o) => o.handshakeTimeoutMs,
    fallback: 10_000,
    min: 1,
  },
  {
    setting: "shutdownTimeoutMs",
    name: "shutdownTimeoutMs",
    read: (o) => o.shutdownTimeoutMs,
    fallback: 5_000,
    min: 0,
  },
  {
    setting: "snapshotLagVersions",
    name: "history.snapshotLagVersions",
    read: (o) => o.history?.snapshotLagVersions,
    fallback: 64,
    min: 1,
  },
  {
    setting: "retainVersions",
    name: "history.retainVersions",
    read: (o) => o.history?.retainVersions,
    fallback: 1000,
    min: 0,
  },
];

/**
 * Checks `options` and fills in defaults.
 *
 * @throws {TypeError} Naming the first option that is missing or invalid.
 */
export function resolveOptions(options: ServeSyncOptions): ServerSettings {
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
  const { cert, key } = options;
  if ((cert === undefined) !== (key === undefined)) {
    throw new TypeError("Cannot serve: cert and key go together");
  }
  const integers = {} as Record<IntegerSetting, number>;
  for (const row of INTEGER_OPTIONS) {
    integers[row.setting] = integer(
      row.name,
      row.read(options) ?? row.fallback,
      row.min,
      row.max,
    );
  }
  return {
    ...integers,
    hostname: options.hostname ?? "127.0.0.1",
    jwtSecret,
    jwt,
    adminToken,
    allowAnonymous,
    permissions: options.permissions ?? ownPathsOnly,
    validateChangeset: validator(options.validateChangeset),
    compression: options.compression ?? true,
    snapshots: options.history?.snapshots ?? true,
    tls: cert !== undefined && key !== undefined ? { cert, key } : null,
    signal: options.signal,
    logger: options.logger ?? DEFAULT_LOGGER,
    now: options.now ?? Date.now,
  };
}

function validator(
  value: ChangesetValidator | undefined,
): ChangesetValidator | undefined {
  if (value !== undefined && typeof value !== "function") {
    throw new TypeError(
      "Cannot serve: validateChangeset must be a function",
    );
  }
  return value;
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
