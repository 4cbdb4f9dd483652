// This module is browser compatible.

import type { UploadChangeset } from "../../model/changeset.ts";
import type { ObjectRecord } from "../../model/merge.ts";
import type {
  RealmMeta,
  RealmStorage,
  StorageBatch,
  StoredRealm,
} from "./storage.ts";

/**
 * A {@linkcode RealmStorage} in memory: the data lives as long as this
 * object. Records and the meta record are kept by reference, so a caller
 * must not mutate either after committing it unless it commits it again.
 */
export class MemoryStorage implements RealmStorage {
  #meta: RealmMeta | null = null;
  /**
   * Records by type, then id: no key string is built per record and
   * commit (a bootstrap commits every object once).
   */
  #records = new Map<string, Map<string, ObjectRecord>>();
  #pending: UploadChangeset[] = [];
  #closed = false;

  load(): Promise<StoredRealm> {
    if (this.#closed) return this.#rejectClosed("load");
    return Promise.resolve({
      meta: this.#meta === null ? null : { ...this.#meta },
      records: [...this.#records.values()].flatMap((byId) => [
        ...byId.values(),
      ]),
      pending: [...this.#pending],
    });
  }

  commit(batch: StorageBatch): Promise<void> {
    if (this.#closed) return this.#rejectClosed("commit");
    this.#apply(batch);
    return Promise.resolve();
  }

  commitNow(batch: StorageBatch): void {
    if (this.#closed) throw this.#closedError("commit");
    this.#apply(batch);
  }

  #apply(batch: StorageBatch): void {
    let type: string | undefined;
    let byId: Map<string, ObjectRecord> | undefined;
    for (const record of batch.records) {
      // Commits touch runs of one type: look the type up once per run.
      if (record.type !== type || byId === undefined) {
        type = record.type;
        byId = this.#records.get(type);
        if (byId === undefined) {
          byId = new Map();
          this.#records.set(type, byId);
        }
      }
      byId.set(record.id, record);
    }
    for (const changeset of batch.append) this.#pending.push(changeset);
    const acknowledged = batch.meta.acknowledgedClientVersion;
    let drop = 0;
    while (
      drop < this.#pending.length &&
      this.#pending[drop]!.clientVersion <= acknowledged
    ) {
      drop++;
    }
    if (drop > 0) this.#pending.splice(0, drop);
    // Kept by reference like the records (`load` hands out a copy): a
    // committed meta is never changed, a new one is committed instead.
    this.#meta = batch.meta;
  }

  close(): Promise<void> {
    this.#closed = true;
    return Promise.resolve();
  }

  #rejectClosed(what: string): Promise<never> {
    return Promise.reject(this.#closedError(what));
  }

  #closedError(what: string): TypeError {
    return new TypeError(`Cannot ${what}: the storage is closed`);
  }
}
