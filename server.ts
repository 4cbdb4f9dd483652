/**
 * The Tether sync server: a WebSocket endpoint on `Deno.serve` that keeps
 * every realm's history in Deno KV, with login, tokens and permissions.
 * Deno only. `docs/SERVER.md` covers running it, its options, its HTTP
 * surface, storage and snapshots, and running several processes on one
 * shared KV; the `serve` command of `@tether/sync/cli` runs it from a shell.
 *
 * @example A tour: serve, log in, sync one change over the wire, shut down
 * ```ts
 * import { serveSync } from "@tether/sync/server";
 * import { decodeMessage, encodeMessage, MessageType, type ServerMessage } from "@tether/sync/protocol";
 * import assert from "node:assert/strict";
 *
 * await using server = await serveSync({
 *   port: 0,                         // any free port; server.url tells which
 *   kv: ":memory:",                  // or a file path, a KV Connect URL, a Deno.Kv
 *   auth: { allowAnonymous: true },  // or { jwtSecret } for HS256 user tokens
 *   logger: () => {},                // default: one console line per event
 * });
 *
 * // POST /login turns credentials into an access token.
 * const login = await fetch(`${server.url}/login`, {
 *   method: "POST",
 *   body: JSON.stringify({ provider: "anonymous" }),
 * });
 * const { userId, accessToken } = await login.json();
 *
 * // GET /sync is the WebSocket endpoint; the token travels in the HANDSHAKE.
 * // (Applications use the client in "@tether/sync"; this speaks the bytes.)
 * const socket = new WebSocket(`${server.url.replace("http", "ws")}/sync`);
 * socket.binaryType = "arraybuffer";
 * const inbox: ServerMessage[] = [];
 * let arrived = () => {};
 * socket.onmessage = (event) => {
 *   inbox.push(decodeMessage(new Uint8Array(event.data)) as ServerMessage);
 *   arrived();
 * };
 * const next = async (): Promise<ServerMessage> => {
 *   const signal = AbortSignal.timeout(5000);
 *   while (inbox.length === 0) {
 *     signal.throwIfAborted();
 *     await new Promise<void>((resolve) => {
 *       arrived = resolve;
 *       signal.addEventListener("abort", () => resolve(), { once: true });
 *     });
 *   }
 *   return inbox.shift()!;
 * };
 * await new Promise((resolve) => socket.onopen = resolve);
 * socket.send(encodeMessage({ type: MessageType.Handshake, minVersion: 1, maxVersion: 1, accessToken }));
 * assert.equal((await next()).type, MessageType.HandshakeReply);
 *
 * // BIND a realm under the user's own path ("~" = the user id): IDENT, then
 * // a DOWNLOAD saying there is nothing to download yet.
 * socket.send(encodeMessage({
 *   type: MessageType.Bind, sessionId: 1, path: "/~/todos",
 *   clientIdentity: null, downloadCursor: 0, uploadCursor: 0,
 * }));
 * assert.equal((await next()).type, MessageType.Ident);
 * assert.equal((await next()).type, MessageType.Download);
 *
 * // UPLOAD one changeset: it is acknowledged at once.
 * socket.send(encodeMessage({
 *   type: MessageType.Upload, sessionId: 1, changesets: [{
 *     clientVersion: 1, baseServerVersion: 0,
 *     stamp: { time: Date.now(), counter: 0, node: 1 },
 *     instructions: [{ op: "put", type: "Task", id: "t1", fields: { title: "Buy milk" }, stamp: null }],
 *   }],
 * }));
 * const ack = await next();
 * assert.ok(ack.type === MessageType.Download && ack.lastIntegratedClientVersion === 1);
 * assert.equal(server.stats().changesetsIntegrated, 1);
 * assert.equal(typeof userId, "string");
 *
 * socket.close();
 * await new Promise((resolve) => socket.onclose = resolve);
 * ```
 *
 * @module
 */

export {
  type AuthOptions,
  type HistoryOptions,
  type LimitOptions,
  serveSync,
  type ServeSyncOptions,
  type SyncServer,
} from "./src/server/serve_sync.ts";
export type { SyncHandler } from "./src/server/handler.ts";
export {
  createSyncHandler,
  type SyncHandlerOptions,
  type SyncRequestHandler,
} from "./src/server/sync_handler.ts";
export {
  type ChangeFeedOptions,
  ChangesCompactedError,
  type RealmChange,
  type RealmChangeset,
  type ServerObject,
  type ServerQuery,
  type ServerRealm,
} from "./src/server/server_realm.ts";
export { Transaction } from "./src/model/transaction.ts";
export type { JwtProviderOptions } from "./src/server/identity_provider.ts";
export type {
  Permission,
  PermissionsFunction,
} from "./src/server/permissions.ts";
export { ownPathsOnly } from "./src/server/permissions.ts";
export type {
  ChangesetToValidate,
  ChangesetValidator,
  ChangeToValidate,
} from "./src/server/changeset_validation.ts";
export type { SyncServerStats } from "./src/server/stats.ts";
export {
  consoleLogger,
  type ConsoleLoggerOptions,
  createConsoleLogger,
  formatLogRecordJson,
  type LogFormat,
  type Logger,
  type LogLevel,
  type LogRecord,
} from "./src/server/log.ts";
export { KvLockedError } from "./src/server/storage/kv_lock.ts";
