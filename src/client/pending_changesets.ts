// This module is browser compatible.

/**
 * The local changesets awaiting the server's acknowledgement, in
 * client-version order, dropped from the front as acknowledgements arrive.
 */

import type { UploadChangeset } from "../model/changeset.ts";
import { trimConsumed } from "../util/consumed_prefix.ts";

/** A local changeset waiting for the server's acknowledgement. */
export interface PendingChangeset {
  /** The changeset as uploaded. */
  changeset: UploadChangeset;
  /** Its encoded size (`encodeUploadChangeset`), the unit of upload progress. */
  bytes: number;
}

/** A realm's pending changesets (internal). */
export class PendingChangesets {
  /**
   * Local changesets in client-version order; those before #head are
   * acknowledged (dropped by moving the head, not by splicing the front off
   * on every acknowledgement, which is linear in what is still pending).
   */
  #pending: PendingChangeset[] = [];
  #head = 0;

  /** Appends a changeset (its client version above every pending one). */
  push(entry: PendingChangeset): void {
    this.#pending.push(entry);
  }

  /** The pending changesets in client-version order (a copy). */
  toArray(): PendingChangeset[] {
    return this.#pending.slice(this.#head);
  }

  /**
   * The pending changesets whose client version is above `clientVersion`,
   * in order, found by binary search: what an upload sends next costs what
   * it sends, not what is still waiting for acknowledgement.
   */
  *after(clientVersion: number): Generator<PendingChangeset> {
    const pending = this.#pending;
    let low = this.#head;
    let high = pending.length;
    while (low < high) {
      const middle = (low + high) >>> 1;
      if (pending[middle]!.changeset.clientVersion <= clientVersion) {
        low = middle + 1;
      } else high = middle;
    }
    // Bounded by the array's length; a push during the iteration is seen.
    for (let index = low; index < pending.length; index++) {
      yield pending[index]!;
    }
  }

  /** Drops pending changesets at or below `acknowledged`. */
  drop(acknowledged: number): void {
    const pending = this.#pending;
    let head = this.#head;
    while (
      head < pending.length && pending[head]!.changeset.clientVersion <=
        acknowledged
    ) head++;
    this.#head = trimConsumed(pending, head);
  }

  /** Drops every pending changeset (a discarding client reset). */
  clear(): void {
    this.#pending = [];
    this.#head = 0;
  }
}
