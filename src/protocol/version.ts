// This module is browser compatible.

/** The protocol version this build speaks best (PROTOCOL.md §2). */
export const PROTOCOL_VERSION = 1;

/** The lowest protocol version this build still speaks. */
export const MIN_PROTOCOL_VERSION = 1;

/**
 * Picks the highest version both ends speak, or `null` when the ranges do not
 * overlap (or are malformed).
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
