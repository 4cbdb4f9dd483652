// This module is browser compatible.

import {
  ERROR_CODES,
  type ErrorCodeName,
  errorCodeName,
} from "../protocol/error_codes.ts";

/**
 * Options for {@linkcode SyncError}.
 *
 * @example Wrapping a cause
 * ```ts
 * import { SyncError, type SyncErrorOptions } from "@tether/sync";
 *
 * const options: SyncErrorOptions = { cause: new TypeError("fetch failed") };
 * console.log(new SyncError("connection_lost", "Cannot log in", options).willRetry);
 * ```
 */
export interface SyncErrorOptions {
  /**
   * Whether the client will retry on its own (reconnect, rebind); defaults to
   * the code's `tryAgain` in the error table.
   */
  willRetry?: boolean;
  /** The underlying error, if any. */
  cause?: unknown;
}

/**
 * Why a sync operation failed: a stable snake_case `code` from the error
 * table (`ERROR_CODES`; docs/PROTOCOL.md §7 documents the numbers), a message,
 * whether it is fatal (the session goes to "error") and whether the client
 * retries on its own.
 *
 * Fatal errors (a bad token, a forbidden path, a protocol violation, giving
 * up after `reconnect.maxAttempts`) end the session; transient ones only
 * reconnect. Client-local codes (`connection_lost`, `read_timeout`,
 * `connect_timeout`, `reconnect_gave_up`, `login_failed`, `session_closed`,
 * `session_stalled`, and the local-store codes `storage_locked` and
 * `storage_invalid`) never travel on the wire.
 *
 * @example Inspecting an error
 * ```ts
 * import { SyncError } from "@tether/sync";
 * import assert from "node:assert/strict";
 *
 * const error = new SyncError("permission_denied", "Cannot open realm: /other/x is not yours");
 * assert.ok(error instanceof Error);
 * assert.equal(error.name, "SyncError");
 * assert.equal(error.code, "permission_denied");
 * assert.equal(error.isFatal, true);
 * assert.equal(error.willRetry, false);
 * ```
 */
export class SyncError extends Error {
  /** The stable error name, e.g. `"permission_denied"`. */
  readonly code: ErrorCodeName;
  /** Whether the error ended the session (its state is then "error"). */
  readonly isFatal: boolean;
  /** Whether the client retries on its own after this error. */
  readonly willRetry: boolean;

  /**
   * Creates a sync error.
   *
   * @param code A name from the error table.
   * @param message Human-readable detail.
   * @param options Retry flag and cause.
   * @throws {TypeError} If `code` is not in the error table.
   */
  constructor(
    code: ErrorCodeName,
    message: string,
    options: SyncErrorOptions = {},
  ) {
    const info = ERROR_CODES[code];
    if (info === undefined) {
      throw new TypeError(
        `Cannot create SyncError: unknown code ${JSON.stringify(code)}`,
      );
    }
    super(
      message,
      options.cause === undefined ? undefined : { cause: options.cause },
    );
    this.name = "SyncError";
    this.code = code;
    this.isFatal = info.isFatal;
    this.willRetry = options.willRetry ?? (info.tryAgain && !info.isFatal);
  }
}

/**
 * Turns an ERROR message's numeric code into a {@linkcode SyncError}. A
 * number this build does not know becomes `protocol_violation` when the
 * server says not to try again, and `internal_server_error` when it does.
 */
export function syncErrorFromWire(
  code: number,
  tryAgain: boolean,
  message: string,
): SyncError {
  const name = errorCodeName(code) ??
    (tryAgain ? "internal_server_error" : "protocol_violation");
  const known = errorCodeName(code) !== undefined;
  return new SyncError(
    name,
    known ? message : `Unknown server error ${code}: ${message}`,
    { willRetry: tryAgain && !ERROR_CODES[name].isFatal },
  );
}
