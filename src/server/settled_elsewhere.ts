/**
 * How far a session may acknowledge while a commit's fresh changesets were
 * found settled by another session of the same identity, and not yet known
 * to be refused or integrated (docs/SERVER.md "Refusing one write").
 *
 * Two connections of one identity can upload the same changeset at once and
 * the validation hook answer each differently: the refused one then raises
 * the identity's last client version, so the commit of the allowed one
 * stores nothing and acknowledges it as integrated. The session must read
 * the rejection record first: an acknowledgement would tell the client its
 * write is durable when it is stored nowhere.
 */

import type { UploadChangeset } from "../model/changeset.ts";
import type { HistoryItem } from "./storage/history.ts";

/** See the file comment. */
export class SettledElsewhere {
  // The changesets to resolve, in client version order.
  #waiting: UploadChangeset[] = [];
  // The acknowledgement the commits allowed.
  #wanted = 0;

  /**
   * Notes an upload's commit: `fresh` are the changesets the session took
   * as never settled before, `integrated` what the commit stored of them
   * (in the same order), `acknowledged` how far it would acknowledge.
   * Returns how far the session may acknowledge now.
   */
  note(
    fresh: readonly UploadChangeset[],
    integrated: readonly HistoryItem[],
    acknowledged: number,
  ): number {
    let at = 0;
    for (const changeset of fresh) {
      if (integrated[at]?.clientVersion === changeset.clientVersion) at++;
      else this.#waiting.push(changeset);
    }
    if (acknowledged > this.#wanted) this.#wanted = acknowledged;
    return this.#allowed();
  }

  /** The next changeset to resolve, or undefined when none is left. */
  get next(): UploadChangeset | undefined {
    return this.#waiting[0];
  }

  /**
   * Marks {@linkcode next} resolved (its REJECT sent, or found integrated);
   * returns how far the session may acknowledge now.
   */
  resolved(): number {
    this.#waiting.shift();
    return this.#allowed();
  }

  // Up to the first changeset not resolved yet.
  #allowed(): number {
    const first = this.#waiting[0];
    return first === undefined
      ? this.#wanted
      : Math.min(this.#wanted, first.clientVersion - 1);
  }
}
