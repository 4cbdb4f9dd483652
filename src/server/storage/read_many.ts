/**
 * Reads any number of KV keys, in order: Deno KV's `getMany` takes at most
 * `GET_MANY_KEYS` keys a call, so the calls for the rest go out together.
 */

import type { ServerKv } from "./kv_store.ts";

/** Keys one `getMany` call may read (Deno KV's limit). */
export const GET_MANY_KEYS = 10;

/** The entries of `keys`, in their order (one `getMany` per 10 keys). */
export async function readMany<T>(
  kv: ServerKv,
  keys: readonly Deno.KvKey[],
): Promise<Deno.KvEntryMaybe<T>[]> {
  const reads: Promise<Deno.KvEntryMaybe<T>[]>[] = [];
  for (let at = 0; at < keys.length; at += GET_MANY_KEYS) {
    reads.push(kv.getMany<T[]>(keys.slice(at, at + GET_MANY_KEYS)));
  }
  return (await Promise.all(reads)).flat();
}
