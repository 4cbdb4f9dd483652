// This module is browser compatible.

/**
 * Tether keeps a local database (a *realm*) in sync with a self-hosted
 * server over one WebSocket, with a session API that makes the network
 * visible: state, connection state, upload and download progress, waiting,
 * pausing, resuming and reconnecting.
 *
 * This entry point is the client. It runs in Deno, browsers, Node ≥ 22 and
 * Bun. The server is `@tether/sync/server`; the guide is `docs/CLIENT.md`
 * and the wire format `docs/PROTOCOL.md`.
 *
 * @example A tour: serve, log in, write, follow progress, close
 * ```ts
 * import { App, Credentials } from "@tether/sync";
 * import { serveSync } from "@tether/sync/server";
 * import assert from "node:assert/strict";
 *
 * // An in-process server on a free port, with an in-memory store.
 * await using server = await serveSync({
 *   port: 0,
 *   kv: ":memory:",
 *   auth: { allowAnonymous: true },
 *   logger: () => {},
 * });
 *
 * await using app = new App({ baseUrl: server.url });
 * const user = await app.logIn(Credentials.anonymous());
 * await using realm = await user.openRealm({ path: "/~/todos", waitForDownload: true });
 *
 * // One transaction, one changeset; resolves once committed locally.
 * const receipt = await realm.write((tx) => {
 *   for (let i = 0; i < 100; i++) tx.put("Task", `t${i}`, { title: `Task ${i}`, done: false });
 * });
 *
 * // Follow the upload until the server has acknowledged all of it.
 * const session = realm.syncSession;
 * for await (
 *   const p of session.getProgressStream("upload", "forCurrentlyOutstandingWork", {
 *     signal: AbortSignal.timeout(5_000),
 *   })
 * ) {
 *   console.log(`${Math.round(p.progressEstimate * 100)}%`);
 * }
 * await receipt.waitForUpload({ signal: AbortSignal.timeout(5_000) });
 * assert.equal(session.stats().pendingUploadChangesets, 0);
 * assert.deepEqual(realm.get("Task", "t1"), { title: "Task 1", done: false });
 * ```
 *
 * @module
 */

export { App, type AppOptions, type LogInOptions } from "./src/client/app.ts";
export {
  Credentials,
  type JwtCredentialsOptions,
} from "./src/client/credentials.ts";
export {
  type RealmConfig,
  type RealmStorageOption,
  User,
} from "./src/client/user.ts";
export {
  type ObjectChange,
  Realm,
  type RealmChange,
  type RealmObject,
  type WriteReceipt,
} from "./src/client/realm.ts";
export { MAX_WRITE_BYTES } from "./src/client/local_realm.ts";
export { Transaction } from "./src/client/transaction.ts";
export {
  ConnectionState,
  type ConnectionStateChange,
  type ProgressCallback,
  type ProgressNotificationToken,
  SessionState,
  type SessionStats,
  type StreamOptions,
  SyncSession,
  type WaitOptions,
} from "./src/client/sync_session.ts";
export {
  type Progress,
  ProgressDirection,
  ProgressMode,
} from "./src/client/progress.ts";
export { SyncError, type SyncErrorOptions } from "./src/client/sync_error.ts";
export type { RetryInfo } from "./src/client/connection.ts";
export { nextDelay, type ReconnectOptions } from "./src/client/backoff.ts";
export type { KeepaliveOptions } from "./src/client/keepalive.ts";
export type { Logger, LogRecord } from "./src/client/log.ts";
export { type Clock, systemClock } from "./src/util/clock.ts";
export {
  ERROR_CODES,
  type ErrorCodeInfo,
  type ErrorCodeName,
} from "./src/protocol/error_codes.ts";
export type { Fields, Value } from "./src/model/value.ts";
export type {
  RealmMeta,
  RealmStorage,
  StorageBatch,
  StoredRealm,
} from "./src/client/storage/storage.ts";
export type { FieldEntry, ObjectRecord } from "./src/model/merge.ts";
export type { Instruction, UploadChangeset } from "./src/model/changeset.ts";
export type { Hlc } from "./src/model/hlc.ts";
export type { ClientIdentity } from "./src/protocol/messages.ts";
export {
  compareValues,
  ValueKind,
  valueKind,
} from "./src/model/value_order.ts";
export type {
  FieldCondition,
  Query,
  Scalar,
  SortKey,
  SortSpec,
  TypedWhere,
  UntypedWhere,
  Where,
} from "./src/model/query.ts";
export type {
  CountOptions,
  LiveQueryOptions,
  WatchObjectOptions,
} from "./src/client/live_query.ts";
export type {
  CollectionChanges,
  LiveQueryUpdate,
  ObjectUpdate,
} from "./src/client/query_engine.ts";
export {
  ProtocolError,
  type ProtocolErrorCode,
} from "./src/protocol/protocol_error.ts";
