// This module is browser compatible.

/**
 * The one table of sync error codes, shared by the server (which sends the
 * numbers), the client (which turns them into `SyncError.code` names) and
 * PROTOCOL.md §7 (which documents them). Codes 1xx end a connection, 2xx end
 * a session, 3xx are raised by the client itself and never travel.
 *
 * @example Looking up a row
 * ```ts
 * import { ERROR_CODES } from "@tether/sync/protocol";
 * import assert from "node:assert/strict";
 *
 * assert.equal(ERROR_CODES.permission_denied.code, 200);
 * assert.equal(ERROR_CODES.token_expired.tryAgain, true);
 * ```
 */
export const ERROR_CODES = {
  // Connection scope (ERROR with no session id; the server then closes).
  protocol_violation: {
    code: 100,
    isFatal: true,
    tryAgain: false,
    description: "A message was malformed or not allowed in this state",
  },
  message_too_large: {
    code: 101,
    isFatal: true,
    tryAgain: false,
    description: "A message exceeded the server's size limit",
  },
  unsupported_protocol_version: {
    code: 102,
    isFatal: true,
    tryAgain: false,
    description: "The client and server share no protocol version",
  },
  bad_token: {
    code: 103,
    isFatal: true,
    tryAgain: false,
    description: "The access token is missing, malformed or badly signed",
  },
  token_expired: {
    code: 104,
    isFatal: false,
    tryAgain: true,
    description: "The access token has expired; log in again and reconnect",
  },
  too_many_connections: {
    code: 105,
    isFatal: false,
    tryAgain: true,
    description: "The server is at its connection limit",
  },
  server_shutting_down: {
    code: 106,
    isFatal: false,
    tryAgain: true,
    description: "The server is shutting down",
  },
  internal_server_error: {
    code: 107,
    isFatal: false,
    tryAgain: true,
    description: "The server failed; the request may succeed later",
  },
  queue_full: {
    code: 108,
    isFatal: false,
    tryAgain: true,
    description:
      "The client sent more than the server holds for one connection; reconnect and send more slowly",
  },
  // Session scope (ERROR with a session id; the connection stays up).
  permission_denied: {
    code: 200,
    isFatal: true,
    tryAgain: false,
    description: "The user may not access this realm path",
  },
  invalid_path: {
    code: 201,
    isFatal: true,
    tryAgain: false,
    description: "The realm path is not a valid path",
  },
  too_many_sessions: {
    code: 202,
    isFatal: true,
    tryAgain: false,
    description: "The connection already has the maximum number of sessions",
  },
  write_not_allowed: {
    code: 203,
    isFatal: true,
    tryAgain: false,
    description: "The user may read this realm but not write to it",
  },
  bad_client_identity: {
    code: 204,
    isFatal: true,
    tryAgain: false,
    description:
      "The client identity is unknown to the server or its salt is wrong",
  },
  bad_changeset: {
    code: 205,
    isFatal: true,
    tryAgain: false,
    description: "An uploaded changeset is invalid or out of order",
  },
  session_failed: {
    code: 206,
    isFatal: false,
    tryAgain: true,
    description: "The server could not serve this session right now",
  },
  client_reset_required: {
    code: 207,
    isFatal: false,
    tryAgain: true,
    description:
      "The server cannot continue this client's history of the realm; the client resets",
  },
  validation_failed: {
    code: 208,
    isFatal: false,
    tryAgain: false,
    description: "The server's validation refused an uploaded changeset",
  },

  // Client-local (never on the wire).
  connection_lost: {
    code: 300,
    isFatal: false,
    tryAgain: true,
    description: "The connection closed or could not be opened",
  },
  read_timeout: {
    code: 301,
    isFatal: false,
    tryAgain: true,
    description: "No data arrived within the read timeout",
  },
  connect_timeout: {
    code: 302,
    isFatal: false,
    tryAgain: true,
    description: "The connection was not established within the timeout",
  },
  reconnect_gave_up: {
    code: 303,
    isFatal: true,
    tryAgain: false,
    description: "reconnect.maxAttempts connection attempts failed in a row",
  },
  login_failed: {
    code: 304,
    isFatal: true,
    tryAgain: false,
    description: "The server refused the credentials",
  },
  session_closed: {
    code: 305,
    isFatal: true,
    tryAgain: false,
    description: "The session or its realm was closed while a call waited",
  },
  session_stalled: {
    code: 306,
    isFatal: false,
    tryAgain: true,
    description: "The server did not answer a session's UPLOAD or MARK in time",
  },
  write_rejected: {
    code: 307,
    isFatal: false,
    tryAgain: false,
    description:
      "The server refused one write; its changes were reverted, the session goes on",
  },
  client_reset: {
    code: 308,
    isFatal: false,
    tryAgain: true,
    description:
      "The server could not continue the local history; the realm was reset to the server's state",
  },
  storage_locked: {
    code: 309,
    isFatal: true,
    tryAgain: true,
    description: "The local store is held by another process",
  },
  storage_invalid: {
    code: 310,
    isFatal: true,
    tryAgain: false,
    description: "The local store is foreign, newer, or does not decode",
  },
} as const;

/**
 * A stable snake_case error name, the keys of {@linkcode ERROR_CODES}.
 *
 * @example Naming an error
 * ```ts
 * import type { ErrorCodeName } from "@tether/sync/protocol";
 *
 * const name: ErrorCodeName = "bad_token";
 * ```
 */
export type ErrorCodeName = keyof typeof ERROR_CODES;

/**
 * One row of the error code table.
 *
 * @example Reading a row
 * ```ts
 * import { ERROR_CODES, type ErrorCodeInfo } from "@tether/sync/protocol";
 *
 * const row: ErrorCodeInfo = ERROR_CODES.bad_changeset;
 * console.log(row.code, row.description);
 * ```
 */
export interface ErrorCodeInfo {
  /** The number sent on the wire. */
  code: number;
  /** Whether the error ends the session (it goes to "error"). */
  isFatal: boolean;
  /** Whether retrying later may succeed. */
  tryAgain: boolean;
  /** What the error means. */
  description: string;
}

const NAME_BY_NUMBER = new Map<number, ErrorCodeName>(
  (Object.keys(ERROR_CODES) as ErrorCodeName[]).map((
    name,
  ) => [ERROR_CODES[name].code, name]),
);

/**
 * Returns the name for a wire error number.
 *
 * @param code A number from an ERROR message.
 * @returns The name, or `undefined` for a number not in the table.
 *
 * @example Naming a number from the wire
 * ```ts
 * import { errorCodeName } from "@tether/sync/protocol";
 * import assert from "node:assert/strict";
 *
 * assert.equal(errorCodeName(104), "token_expired");
 * assert.equal(errorCodeName(999), undefined);
 * ```
 */
export function errorCodeName(code: number): ErrorCodeName | undefined {
  return NAME_BY_NUMBER.get(code);
}

/**
 * Returns the wire number for an error name.
 *
 * @param name The error's name.
 * @returns The number an ERROR message carries.
 *
 * @example Finding the number to send
 * ```ts
 * import { errorCodeNumber } from "@tether/sync/protocol";
 * import assert from "node:assert/strict";
 *
 * assert.equal(errorCodeNumber("protocol_violation"), 100);
 * ```
 */
export function errorCodeNumber(name: ErrorCodeName): number {
  return ERROR_CODES[name].code;
}
