/**
 * The changesets the server refused, per client identity: a refusal settles
 * the changeset's client version like an integration does (a re-upload is
 * not integrated), and its record lets a re-upload whose REJECT was lost on
 * a cut connection be refused again instead of acknowledged
 * (docs/PROTOCOL.md §4.16).
 */

import type { ClientIdentity } from "../../protocol/messages.ts";
import { delay } from "../../util/delay.ts";
import type { IdentityRecord } from "./identities.ts";
import { identityKey, rejectionKey } from "./keys.ts";
import { backoffDelayMs, retryKv, type RetryOptions } from "./retry.ts";
import { UnknownIdentityError } from "./history.ts";
import type { ServerKv } from "./kv_store.ts";

/** Why a changeset was refused, as REJECT carries it. */
export interface Refusal {
  /** A session-scope error code name (`write_not_allowed`, …). */
  code: "write_not_allowed" | "validation_failed" | "message_too_large";
  /** Human-readable detail. */
  message: string;
}

/**
 * Settles `clientVersion` of `identity` as refused: raises the identity's
 * last client version to it and records the refusal, in one atomic commit.
 * Returns false when that version was already settled (integrated or
 * refused before), changing nothing.
 *
 * @throws {UnknownIdentityError} When the identity is gone (store wiped).
 */
export async function recordRejection(
  kv: ServerKv,
  realm: string,
  identity: ClientIdentity,
  clientVersion: number,
  refusal: Refusal,
  options: RetryOptions,
): Promise<boolean> {
  for (let attempt = 1;; attempt++) {
    const entry = await retryKv(
      () => kv.get<IdentityRecord>(identityKey(realm, identity.id)),
      options,
    );
    const record = entry.value;
    if (record === null || record.salt !== identity.salt) {
      throw new UnknownIdentityError(
        `Cannot refuse a changeset: client identity ${identity.id} is unknown in realm ${
          JSON.stringify(realm)
        }`,
      );
    }
    if (record.lastClientVersion >= clientVersion) return false;
    const result = await retryKv(
      () =>
        kv.atomic()
          .check(entry)
          .set(
            identityKey(realm, identity.id),
            {
              salt: record.salt,
              lastClientVersion: clientVersion,
              rejected: true,
            } satisfies IdentityRecord,
          )
          .set(rejectionKey(realm, identity.id, clientVersion), refusal)
          .commit(),
      options,
    );
    if (result.ok) return true;
    await delay(backoffDelayMs(attempt), options.signal);
  }
}

/** The refusal recorded for one client version, or null. */
export async function readRejection(
  kv: ServerKv,
  realm: string,
  identity: number,
  clientVersion: number,
  options: RetryOptions,
): Promise<Refusal | null> {
  const entry = await retryKv(
    () => kv.get<Refusal>(rejectionKey(realm, identity, clientVersion)),
    options,
  );
  return entry.value;
}

/**
 * The lowest client version above `after` whose refusal is recorded, or
 * null: the first refusal a client binding with upload cursor `after` may
 * not have heard of (its REJECT lost with a connection).
 */
export async function firstRejectionAfter(
  kv: ServerKv,
  realm: string,
  identity: number,
  after: number,
  options: RetryOptions,
): Promise<number | null> {
  return await retryKv(async () => {
    for await (
      const entry of kv.list({
        start: rejectionKey(realm, identity, after + 1),
        end: rejectionKey(realm, identity, Number.MAX_SAFE_INTEGER),
      }, { limit: 1 })
    ) {
      return entry.key.at(-1) as number;
    }
    return null;
  }, options);
}

/**
 * Forgets the refusals at or below `settledThrough`: the client's BIND says
 * it has settled them, so a re-upload of those versions cannot come.
 */
export async function pruneRejections(
  kv: ServerKv,
  realm: string,
  identity: number,
  settledThrough: number,
  options: RetryOptions,
): Promise<void> {
  const keys = await retryKv(async () => {
    const found: Deno.KvKey[] = [];
    for await (
      const entry of kv.list({
        start: rejectionKey(realm, identity, 0),
        end: rejectionKey(realm, identity, settledThrough + 1),
      }, { limit: 100 })
    ) {
      found.push(entry.key);
    }
    return found;
  }, options);
  if (keys.length === 0) return;
  const operation = kv.atomic();
  for (const key of keys) operation.delete(key);
  await retryKv(() => operation.commit(), options);
}
