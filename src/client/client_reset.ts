// This module is browser compatible.

/**
 * A session's client reset (docs/CLIENT.md "Client reset"): the options a
 * realm opens with, and the small state a session keeps while it downloads
 * the server's state afresh into a staging store before replacing its own.
 */

import type { DownloadMessage } from "../protocol/messages.ts";
import type { ClientIdentity } from "../protocol/messages.ts";
import type { ObjectStore } from "../model/object_store.ts";
import type { Realm } from "./realm.ts";
import { moveCursor, type SaltedCursor } from "./local_realm.ts";
import { stagingStore } from "./realm_rebuild.ts";

/**
 * What a session does when the server cannot continue the local history of
 * a realm (restored from a backup, wiped, recreated):
 * - `"recover"` (default): download the server's state afresh and re-apply
 *   the local writes the server never acknowledged, with their original
 *   stamps; their receipts keep working;
 * - `"recoverAll"`: as `"recover"`, and also upload everything the local
 *   copy holds newer than the server's state;
 * - `"discard"`: take the server's state; unacknowledged writes are dropped
 *   and their receipts reject with `client_reset`;
 * - `"manual"`: the session goes to "error" with `client_reset_required`.
 *
 * @example Choosing a mode
 * ```ts
 * import type { ClientResetMode } from "@tether/sync";
 *
 * const mode: ClientResetMode = "recoverAll";
 * console.log(mode);
 * ```
 */
export type ClientResetMode = "recover" | "recoverAll" | "discard" | "manual";

/**
 * What a client reset did, as `onAfter` receives it: numbers of local
 * changesets.
 *
 * @example Reporting a reset
 * ```ts
 * import type { ClientResetResult } from "@tether/sync";
 *
 * const result: ClientResetResult = { recovered: 2, discarded: 0 };
 * console.log(`${result.recovered} writes re-uploaded`);
 * ```
 */
export interface ClientResetResult {
  /**
   * Local changesets re-applied and uploaded again; `recoverAll` counts
   * its synthesized upload (what the server lacked) as one more.
   */
  recovered: number;
  /** Local changesets dropped (`discard`). */
  discarded: number;
}

/**
 * `openRealm({ clientReset })`: the mode and the hooks of a client reset.
 *
 * @example Recovering and telling the user
 * ```ts
 * import type { ClientResetOptions } from "@tether/sync";
 *
 * const clientReset: ClientResetOptions = {
 *   mode: "recover",
 *   onBefore: (realm) => console.log(`resetting ${realm.path}`),
 *   onAfter: (_realm, { recovered, discarded }) =>
 *     console.log(`reset: ${recovered} writes kept, ${discarded} dropped`),
 * };
 * console.log(clientReset.mode);
 * ```
 */
export interface ClientResetOptions {
  /**
   * What to do with the local state.
   *
   * @default {"recover"}
   */
  mode?: ClientResetMode;
  /**
   * Called before anything changes, with the realm as it is, read-only
   * (its `write` throws a `TypeError`). Awaited; a throw is logged and the
   * reset goes on.
   */
  onBefore?: (realm: Realm) => void | Promise<void>;
  /**
   * Called once the realm holds its new state, with what the reset did.
   * Awaited; a throw is logged.
   */
  onAfter?: (realm: Realm, result: ClientResetResult) => void | Promise<void>;
}

/** The session's side of a reset: the staging download in progress. */
export class ClientReset {
  readonly mode: ClientResetMode;
  readonly onBefore: ClientResetOptions["onBefore"];
  readonly onAfter: ClientResetOptions["onAfter"];
  #resets = 0;
  #staging: {
    store: ObjectStore;
    identity: ClientIdentity | undefined;
    cursor: SaltedCursor;
    markId: number | undefined;
  } | undefined;

  /** @param options The realm's `clientReset` option. */
  constructor(options: ClientResetOptions | undefined) {
    this.mode = options?.mode ?? "recover";
    this.onBefore = options?.onBefore;
    this.onAfter = options?.onAfter;
  }

  /** How many resets finished (`stats().clientResets`). */
  get count(): number {
    return this.#resets;
  }

  /** Whether a reset is downloading the server's state. */
  get isStaging(): boolean {
    return this.#staging !== undefined;
  }

  /**
   * A reset starts, or its binding starts over (the link was lost): the
   * staging store starts empty, to be filled by a bind with no identity.
   */
  begin(): void {
    this.#staging = {
      store: stagingStore(),
      identity: undefined,
      cursor: { downloadCursor: 0 },
      markId: undefined,
    };
  }

  /** The reset binding's IDENT. */
  identified(identity: ClientIdentity): void {
    if (this.#staging !== undefined) this.#staging.identity = { ...identity };
  }

  /** The MARK sent right after the reset BIND: its reply means caught up. */
  markSent(requestId: number): void {
    if (this.#staging !== undefined) this.#staging.markId = requestId;
  }

  /** Whether a MARK_REPLY's request id is the catch-up one. */
  isCaughtUp(requestId: number): boolean {
    return this.#staging?.markId === requestId &&
      this.#staging.identity !== undefined;
  }

  /** A DOWNLOAD of the reset binding, applied to the staging store. */
  stage(message: DownloadMessage): void {
    const staging = this.#staging;
    if (staging === undefined) return;
    for (const changeset of message.changesets) {
      staging.store.apply(changeset.stamp, changeset.instructions);
    }
    moveCursor(staging.cursor, message);
  }

  /** Ends the staging and hands over what it downloaded. */
  finish(): {
    store: ObjectStore;
    identity: ClientIdentity;
    downloadCursor: number;
    downloadCursorSalt: number;
  } {
    const staging = this.#staging;
    if (staging === undefined || staging.identity === undefined) {
      throw new Error("No client reset is caught up");
    }
    this.#staging = undefined;
    this.#resets++;
    return {
      store: staging.store,
      identity: staging.identity,
      downloadCursor: staging.cursor.downloadCursor,
      downloadCursorSalt: staging.cursor.downloadCursorSalt ?? 0,
    };
  }

  /** Drops a reset in progress (the session closed or failed). */
  abandon(): void {
    this.#staging = undefined;
  }
}
