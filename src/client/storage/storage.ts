// This module is browser compatible.

import type { UploadChangeset } from "../../model/changeset.ts";
import type { ObjectRecord } from "../../model/merge.ts";
import type { ClientIdentity } from "../../protocol/messages.ts";

/**
 * What a local realm keeps besides its objects: who it is and how far it
 * got. Written whole with every commit.
 */
export interface RealmMeta {
  /**
   * The replica node id in this realm's HLC stamps: a random integer in
   * [1, 2^48) chosen when the realm is first created (docs/ARCHITECTURE.md
   * "Data model").
   */
  nodeId: number;
  /**
   * The identity the server issued for this realm (IDENT), or null before
   * the first bind. Distinct from `nodeId`: it deduplicates re-uploads.
   */
  clientIdentity: ClientIdentity | null;
  /** The last server version integrated locally (0 = none). */
  downloadCursor: number;
  /**
   * The salt the server gave `downloadCursor` (absent when 0, unknown): sent
   * back at BIND so the server can tell its version from another history's
   * version of the same number (docs/CLIENT.md "Client reset"). A storage
   * that does not keep it only loses that check.
   */
  downloadCursorSalt?: number;
  /** The last client version committed locally (0 = none). */
  lastClientVersion: number;
  /** The last client version the server acknowledged (0 = none). */
  acknowledgedClientVersion: number;
  /**
   * The acknowledged client version when a client reset gave the realm its
   * current identity (absent when it never reset). Versions up to it were
   * settled under an earlier identity, which the server's record of the
   * new one does not count: the upload cursor sent at BIND stays 0 until
   * the server acknowledges a later version (docs/CLIENT.md "Client
   * reset").
   */
  resetClientVersion?: number;
}

/** Everything a storage holds for one realm. */
export interface StoredRealm {
  /** The meta record, or null for a realm never committed to. */
  meta: RealmMeta | null;
  /** Every object record, live or dead (tombstones included). */
  records: ObjectRecord[];
  /**
   * Local changesets not yet acknowledged by the server, in client-version
   * order.
   */
  pending: UploadChangeset[];
}

/** One atomic change to a storage. */
export interface StorageBatch {
  /** The meta record after this change. */
  meta: RealmMeta;
  /** Object records written by this change (their whole new state). */
  records: readonly ObjectRecord[];
  /** Local changesets committed by this change, to keep until acknowledged. */
  append: readonly UploadChangeset[];
}

/**
 * Where a local realm keeps its data. The in-memory implementation keeps it
 * for the life of the open realm; a durable implementation (Deno KV, a
 * later issue) must make each `commit` atomic, so pending changesets,
 * cursors and the client identity survive a crash together.
 *
 * Pending changesets at or below `meta.acknowledgedClientVersion` are no
 * longer needed and may be dropped by the commit that raises it.
 */
export interface RealmStorage {
  /** Reads everything stored (empty for a new realm). */
  load(): Promise<StoredRealm>;
  /** Applies one batch atomically; batches apply in call order. */
  commit(batch: StorageBatch): Promise<void>;
  /**
   * Optional: does what `commit` does, complete before it returns (durable,
   * for a durable storage), and throws what `commit` would reject with. A
   * realm then integrates a DOWNLOAD, or commits a local write, that nothing
   * is ahead of without a turn of the event loop. The in-memory storage
   * offers it; storages whose commits wait for I/O (Deno KV, IndexedDB)
   * leave it out.
   */
  commitNow?(batch: StorageBatch): void;
  /** Releases the storage; further calls reject. */
  close(): Promise<void>;
}
