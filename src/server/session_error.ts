import type { ErrorCodeName } from "../protocol/error_codes.ts";
import { UnknownIdentityError } from "./storage/history.ts";

/**
 * Ends one session with a session-scoped ERROR, leaving its connection open
 * for the others.
 */
export class SessionError extends Error {
  /** The error code sent to the client. */
  readonly code: ErrorCodeName;

  /**
   * @param code The error code sent to the client.
   * @param message Detail for the client and the log.
   * @param options The underlying error, if any.
   */
  constructor(code: ErrorCodeName, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "SessionError";
    this.code = code;
  }
}

/**
 * The session error an upload's storage step failed with: the identity
 * gone from the store (the client must reset; `bad_client_identity` for
 * protocol version 1), or the storage itself.
 */
export function uploadStorageError(
  error: unknown,
  protocolVersion: number,
): SessionError {
  if (error instanceof UnknownIdentityError) {
    return protocolVersion >= 2
      ? new SessionError("client_reset_required", error.message)
      : new SessionError("bad_client_identity", error.message);
  }
  return new SessionError("session_failed", "Cannot upload: storage failed", {
    cause: error,
  });
}
