/**
 * The `serveSync` options of every bench's Tether server: loopback, port 0,
 * the in-process store, anonymous users, and every realm writable.
 */
import type { ServeSyncOptions } from "../server.ts";

/** See the file comment; a bench spreads it into `serveSync`'s options. */
export const BENCH_SERVER_OPTIONS = {
  hostname: "127.0.0.1",
  port: 0,
  kv: ":memory:",
  auth: { allowAnonymous: true },
  // Every bench client shares realms under /bench/.
  permissions: () => "readwrite",
  logger: () => {},
} as const satisfies ServeSyncOptions;
