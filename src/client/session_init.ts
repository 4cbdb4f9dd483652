// This module is browser compatible.

/** What a session engine (`SessionCore`) is built from. */

import type { ClientConfig } from "./client_config.ts";
import type { ClientResetOptions } from "./client_reset.ts";
import type { Connection } from "./connection.ts";
import type { LocalRealm } from "./local_realm.ts";
import type { Realm } from "./realm.ts";

/** See the file comment. */
export interface SessionInit {
  /** The realm path, as given to `openRealm`. */
  path: string;
  /** The local copy. */
  local: LocalRealm;
  /** The user's shared connection (made on first use). */
  connection: () => Connection;
  /**
   * The app's resolved configuration: clock, randomness, `reconnect`,
   * `progressIntervalMs`, `keepalive.responseTimeoutMs` (how long an
   * unanswered UPLOAD or MARK may wait), logger.
   */
  config: ClientConfig;
  /** The realm's `clientReset` option (docs/CLIENT.md "Client reset"). */
  clientReset?: ClientResetOptions | undefined;
  /**
   * The realm a client reset hook receives: read-only for `onBefore`, which
   * sees the local state before the reset.
   */
  realm?: (hook: "onBefore" | "onAfter") => Realm;
}
