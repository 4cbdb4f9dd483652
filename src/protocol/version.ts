// This module is browser compatible.

/**
 * The protocol version this build speaks best (PROTOCOL.md §6).
 *
 * @example The range this build speaks
 * ```ts
 * import { MIN_PROTOCOL_VERSION, PROTOCOL_VERSION } from "@tether/sync/protocol";
 * import assert from "node:assert/strict";
 *
 * assert.ok(MIN_PROTOCOL_VERSION <= PROTOCOL_VERSION);
 * ```
 */
export const PROTOCOL_VERSION = 3;

/**
 * The lowest protocol version this build still speaks (PROTOCOL.md §6).
 *
 * @example A HANDSHAKE offering every version this build speaks
 * ```ts
 * import { MessageType, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION, type HandshakeMessage } from "@tether/sync/protocol";
 *
 * const hello: HandshakeMessage = {
 *   type: MessageType.Handshake,
 *   minVersion: MIN_PROTOCOL_VERSION,
 *   maxVersion: PROTOCOL_VERSION,
 *   accessToken: "",
 * };
 * ```
 */
export const MIN_PROTOCOL_VERSION = 1;

/**
 * Picks the highest version both ends speak (PROTOCOL.md §6).
 *
 * @param clientMin The HANDSHAKE's `minVersion`.
 * @param clientMax The HANDSHAKE's `maxVersion`.
 * @param serverMin Lowest version the server speaks.
 * @param serverMax Highest version the server speaks.
 * @returns The version, or `null` when the ranges do not overlap (or a
 *   range is malformed): the server then answers
 *   `unsupported_protocol_version`.
 *
 * @example Picking a version
 * ```ts
 * import { negotiateVersion } from "@tether/sync/protocol";
 * import assert from "node:assert/strict";
 *
 * assert.equal(negotiateVersion(1, 4, 1, 2), 2);
 * assert.equal(negotiateVersion(3, 4, 1, 2), null);
 * ```
 */
export function negotiateVersion(
  clientMin: number,
  clientMax: number,
  serverMin: number = MIN_PROTOCOL_VERSION,
  serverMax: number = PROTOCOL_VERSION,
): number | null {
  if (clientMin > clientMax) return null;
  const version = Math.min(clientMax, serverMax);
  return version >= Math.max(clientMin, serverMin) ? version : null;
}
