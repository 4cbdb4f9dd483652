// This module is browser compatible.

/**
 * Tether keeps a local database (a *realm*) in sync with a self-hosted
 * server over one WebSocket, with a session API that makes the network
 * visible: state, connection state, upload and download progress, waiting,
 * pausing, resuming and reconnecting.
 *
 * This entry point is the client. It runs in Deno, browsers, Node ≥ 22 and
 * Bun. The server is `@tether/sync/server`; the wire format is documented in
 * `docs/PROTOCOL.md` and implemented by `@tether/sync/protocol`.
 *
 * @example Values a realm stores
 * ```ts
 * import type { Value } from "@tether/sync";
 *
 * const title: Value = "Buy milk";
 * ```
 *
 * @module
 */

export type { Fields, Value } from "./src/model/value.ts";
export {
  ProtocolError,
  type ProtocolErrorCode,
} from "./src/protocol/protocol_error.ts";
