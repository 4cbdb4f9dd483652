// This module is browser compatible.

/**
 * Group commit of local writes: writes applied in memory while a storage
 * commit is in flight are committed together by the next one, so a durable
 * store costs one commit per burst, not one per write.
 */

import type { UploadChangeset } from "../model/changeset.ts";
import type { ObjectRecord } from "../model/merge.ts";
import type { RealmMeta, RealmStorage } from "./storage/storage.ts";

interface CommitGroup {
  /** Copies of the touched records, by type, then id. */
  records: Map<string, Map<string, ObjectRecord>>;
  append: UploadChangeset[];
  /** The meta record after the last write of the group. */
  meta: RealmMeta;
  /** What each write does once durable, in write order. */
  committed: (() => void)[];
  done: PromiseWithResolvers<void>;
}

/** See the file comment. */
export class GroupCommit {
  #storage: RealmStorage;
  /** Local writes applied in memory, waiting to be committed together. */
  #group: CommitGroup | null = null;
  /** The commit loop while one runs. */
  #flushing: Promise<void> | null = null;
  /** A failed commit: memory and storage disagree, so nothing more commits. */
  #failure: { error: unknown } | null = null;

  /** @param storage Where the groups are committed. */
  constructor(storage: RealmStorage) {
    this.#storage = storage;
  }

  /**
   * Adds a local write to the group the next storage commit writes, and
   * starts the commit loop if it is idle. The records are copied now, so
   * later writes cannot leak into this commit. Resolves (after `committed`
   * ran) once the write is durable.
   */
  stage(
    records: ObjectRecord[],
    changeset: UploadChangeset,
    meta: RealmMeta,
    committed: () => void,
  ): Promise<void> {
    if (this.#failure !== null) return Promise.reject(this.#failure.error);
    const storage = this.#storage;
    if (this.#flushing === null && storage.commitNow !== undefined) {
      // Nothing in flight and a storage that commits before returning:
      // commit this write alone, now. The records need no copy, since no
      // later write can reach them before the commit.
      try {
        storage.commitNow({ meta, records, append: [changeset] });
      } catch (error) {
        this.#failure = { error };
        return Promise.reject(error);
      }
      committed();
      return Promise.resolve();
    }
    let group = this.#group;
    if (group === null) {
      group = {
        records: new Map(),
        append: [],
        meta,
        committed: [],
        done: Promise.withResolvers(),
      };
      // Handled by the writes that wait on it; never unhandled.
      group.done.promise.catch(() => {});
      this.#group = group;
    }
    for (const record of records) {
      let byId = group.records.get(record.type);
      if (byId === undefined) {
        byId = new Map();
        group.records.set(record.type, byId);
      }
      byId.set(record.id, {
        type: record.type,
        id: record.id,
        putStamp: record.putStamp,
        deleteStamp: record.deleteStamp,
        fields: new Map(record.fields),
      });
    }
    group.append.push(changeset);
    group.meta = meta;
    group.committed.push(committed);
    this.#flushing ??= this.#flush();
    return group.done.promise;
  }

  /**
   * Whether nothing is staged or being committed and no commit failed:
   * another commit may then go to the storage at once, in order.
   */
  get idle(): boolean {
    return this.#flushing === null && this.#failure === null;
  }

  /** The failed commit's error (after which nothing more commits), or null. */
  get failure(): { readonly error: unknown } | null {
    return this.#failure;
  }

  /**
   * Waits until every staged write is committed; throws the error of a
   * failed commit (after which nothing more commits).
   */
  async drain(): Promise<void> {
    while (this.#flushing !== null) await this.#flushing;
    if (this.#failure !== null) throw this.#failure.error;
  }

  async #flush(): Promise<void> {
    // Bounded: each round takes the whole group; a round's writes were
    // applied before it started.
    while (this.#group !== null) {
      const group = this.#group;
      this.#group = null;
      if (this.#failure !== null) {
        group.done.reject(this.#failure.error);
        continue;
      }
      try {
        await this.#storage.commit({
          meta: group.meta,
          records: [...group.records.values()].flatMap((byId) => [
            ...byId.values(),
          ]),
          append: group.append,
        });
      } catch (error) {
        this.#failure = { error };
        group.done.reject(error);
        continue;
      }
      for (const committed of group.committed) committed();
      group.done.resolve();
    }
    this.#flushing = null;
  }
}
