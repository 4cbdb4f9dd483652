/**
 * The Tether sync server: a WebSocket endpoint on `Deno.serve` that keeps
 * every realm's history in Deno KV, with login, tokens and permissions.
 * Deno only. `docs/SERVER.md` covers running it, its options, its HTTP
 * surface and running several processes on one shared KV.
 *
 * @example A tour: serve, log in, check health, shut down
 * ```ts
 * import { serveSync } from "@tether/sync/server";
 * import assert from "node:assert/strict";
 *
 * await using server = await serveSync({
 *   port: 0,                         // any free port; server.url tells which
 *   kv: ":memory:",                  // or a file path, a KV Connect URL, a Deno.Kv
 *   auth: { allowAnonymous: true },  // or { jwtSecret } for HS256 user tokens
 *   logger: () => {},                // default: one console line per event
 * });
 *
 * const login = await fetch(`${server.url}/login`, {
 *   method: "POST",
 *   body: JSON.stringify({ provider: "anonymous" }),
 * });
 * const { userId, accessToken } = await login.json();
 * assert.equal(typeof userId, "string");
 * assert.equal(typeof accessToken, "string"); // goes in the HANDSHAKE on GET /sync
 *
 * const health = await fetch(`${server.url}/health`);
 * assert.equal(health.status, 200);
 * await health.body?.cancel();
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
export type {
  Permission,
  PermissionsFunction,
} from "./src/server/permissions.ts";
export { ownPathsOnly } from "./src/server/permissions.ts";
export type { SyncServerStats } from "./src/server/stats.ts";
export {
  consoleLogger,
  type Logger,
  type LogLevel,
  type LogRecord,
} from "./src/server/log.ts";
export { KvLockedError } from "./src/server/storage/kv_lock.ts";
