/**
 * The Tether sync server: a WebSocket endpoint on `Deno.serve` that keeps
 * each realm's history in Deno KV. Deno only.
 *
 * @module
 */

export {};
