import type { ClientIdentity } from "../../protocol/messages.ts";
import { identityCounterKey, identityKey } from "./keys.ts";
import { delay } from "../../util/delay.ts";
import { backoffDelayMs, retryKv, type RetryOptions } from "./retry.ts";
import type { ServerKv } from "./kv_store.ts";

/**
 * Client identities in Deno KV, one per client per realm (docs/ARCHITECTURE.md
 * "Server storage").
 *
 * Each is issued once, persisted with the last client version integrated from
 * that client, so deduplication survives restarts and history compaction.
 */

/** What the server keeps per realm and client identity. */
export interface IdentityRecord {
  salt: number;
  lastClientVersion: number;
  /**
   * True once a changeset of this identity was refused (rejections.ts): only
   * then does a BIND look for refusals to prune. Every write of the record
   * keeps it.
   */
  rejected?: true;
}

/** Returns a random integer in [1, 2^53). */
export function randomSalt(): number {
  const words = crypto.getRandomValues(new Uint32Array(2));
  return ((words[0]! & 0x1fffff) * 2 ** 32 + words[1]!) || 1;
}

/**
 * Issues a new identity for `realm`: the next number from the realm's
 * counter (guarded by a check, so two processes never issue one twice) and a
 * random salt.
 */
export async function allocateIdentity(
  kv: ServerKv,
  realm: string,
  options: RetryOptions,
): Promise<ClientIdentity> {
  for (let attempt = 1;; attempt++) {
    const counter = await retryKv(
      () => kv.get<number>(identityCounterKey(realm)),
      options,
    );
    const id = (counter.value ?? 0) + 1;
    const salt = randomSalt();
    const record: IdentityRecord = { salt, lastClientVersion: 0 };
    const result = await retryKv(
      () =>
        kv.atomic()
          .check(counter)
          .set(identityCounterKey(realm), id)
          .set(identityKey(realm, id), record)
          .commit(),
      options,
    );
    if (result.ok) return { id, salt };
    await delay(backoffDelayMs(attempt), options.signal);
  }
}

/**
 * Reads the record of `identity`, or null when the realm never issued it or
 * the salt does not match (someone else's, or a different server's).
 */
export async function readIdentity(
  kv: ServerKv,
  realm: string,
  identity: ClientIdentity,
  options: RetryOptions,
): Promise<IdentityRecord | null> {
  const entry = await retryKv(
    () => kv.get<IdentityRecord>(identityKey(realm, identity.id)),
    options,
  );
  return entry.value !== null && entry.value.salt === identity.salt
    ? entry.value
    : null;
}
