import type { ErrorCodeName } from "../protocol/error_codes.ts";

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
