/**
 * The history bytes a session's "still to download" figure counts
 * (`downloadableBytes`, docs/PROTOCOL.md): those past a base version, less
 * the session's own changesets there, which it never sends back.
 */

import type { Head } from "./storage/history.ts";

/** See the file comment. */
export class HistoryRemaining {
  // Cumulative history bytes the figure counts from, and their version.
  #base: number;
  #baseVersion: number;
  // The session's own changesets beyond #baseVersion (version → stored
  // size): in the history's byte count, but never sent back. Null while
  // there are none (an idle session keeps no map).
  #own: Map<number, number> | null = null;

  /** @param version The base version, whose cumulative bytes are `bytes`. */
  constructor(version: number, bytes: number) {
    this.#base = bytes;
    this.#baseVersion = version;
  }

  /** Notes one of the session's own changesets, stored as `version`. */
  noteOwn(version: number, size: number): void {
    if (version > this.#baseVersion) {
      (this.#own ??= new Map()).set(version, size);
    }
  }

  /** The stored size of the session's own changeset at `version`, or 0. */
  ownSize(version: number): number {
    return this.#own?.get(version) ?? 0;
  }

  /** Counts from `version`, whose cumulative history bytes are `bytes`. */
  setBase(version: number, bytes: number): void {
    this.#base = bytes;
    this.#baseVersion = version;
    const own = this.#own;
    if (own === null) return;
    for (const ownVersion of own.keys()) {
      if (ownVersion <= version) own.delete(ownVersion);
    }
    if (own.size === 0) this.#own = null;
  }

  /** The history bytes past the base up to `head`, less the own ones. */
  bytesTo(head: Head): number {
    // Only own changesets the known head already counts are subtracted: the
    // head may be noted (by the watch) before or after the acknowledgement.
    let own = 0;
    if (this.#own !== null) {
      for (const [version, size] of this.#own) {
        if (version <= head.version) own += size;
      }
    }
    return Math.max(0, head.bytes - this.#base - own);
  }
}
