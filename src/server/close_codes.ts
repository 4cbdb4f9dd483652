/**
 * The WebSocket close a connection-scoped error ends with (`docs/ARCHITECTURE.md`
 * "Session flow on one connection").
 */

import type { ErrorCodeName } from "../protocol/error_codes.ts";

/** WebSocket close codes (docs/ARCHITECTURE.md "Session flow on one connection"). */
const CloseCode = {
  Normal: 1000,
  GoingAway: 1001,
  ProtocolError: 1002,
  Policy: 1008,
  TooBig: 1009,
  InternalError: 1011,
  TryAgainLater: 1013,
} as const;

const CONNECTION_CLOSE_CODES: Partial<Record<ErrorCodeName, number>> = {
  protocol_violation: CloseCode.ProtocolError,
  message_too_large: CloseCode.TooBig,
  unsupported_protocol_version: CloseCode.ProtocolError,
  bad_token: CloseCode.Policy,
  token_expired: CloseCode.Policy,
  too_many_connections: CloseCode.TryAgainLater,
  server_shutting_down: CloseCode.GoingAway,
  internal_server_error: CloseCode.InternalError,
};

/** The close code that goes with a connection-scoped error code. */
export function closeCodeFor(code: ErrorCodeName): number {
  return CONNECTION_CLOSE_CODES[code] ?? CloseCode.ProtocolError;
}

// A close reason is limited to 123 bytes of UTF-8.
const MAX_REASON_BYTES = 123;

/** `reason` cut to fit a close frame, never inside a character. */
export function closeReason(reason: string): string {
  return truncateUtf8(reason, MAX_REASON_BYTES);
}

function truncateUtf8(text: string, maxBytes: number): string {
  const bytes = new TextEncoder().encode(text);
  if (bytes.length <= maxBytes) return text;
  let end = maxBytes;
  // Do not cut a multi-byte character in half.
  while (end > 0 && (bytes[end]! & 0xc0) === 0x80) end--;
  return new TextDecoder().decode(bytes.subarray(0, end));
}
