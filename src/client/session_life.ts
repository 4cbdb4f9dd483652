// This module is browser compatible.

/**
 * A session's life as one explicit state: where it stands between its
 * start, its bindings to the server, a pause, a fatal error and its close.
 *
 * Every other lifecycle question (may it send, is it bound, what does
 * `session.state` say) is derived from this one value, and every change
 * goes through {@linkcode SessionLife.go}, which refuses a transition the
 * table does not allow. See docs/CLIENT.md "Session rules".
 */

import type { SessionChannel } from "./connection.ts";
import type { SyncError } from "./sync_error.ts";

/**
 * The phases of a session:
 * - `new`: made, not started;
 * - `unbound`: syncing, but not bound (dialling, waiting for a retry or a
 *   rebind delay);
 * - `opened`: a channel is up, the BIND is queued behind earlier messages;
 * - `identifying`: bound, waiting for the server's IDENT before uploading;
 * - `bound`: bound, uploads flow;
 * - `paused`: stopped by `pause()` until `resume()`;
 * - `failed`: stopped for good by a fatal error (the data stays);
 * - `closed`: its realm closed (`error` says whether it had failed).
 */
export type SessionPhase = SessionLifeState["phase"];

/** One state of a session's life, with what that state owns. */
export type SessionLifeState =
  | { readonly phase: "new" }
  | { readonly phase: "unbound" }
  | { readonly phase: "opened"; readonly channel: SessionChannel }
  | { readonly phase: "identifying"; readonly channel: SessionChannel }
  | { readonly phase: "bound"; readonly channel: SessionChannel }
  | { readonly phase: "paused" }
  | { readonly phase: "failed"; readonly error: SyncError }
  | { readonly phase: "closed"; readonly error: SyncError | undefined };

/** The transitions allowed out of each phase. */
const NEXT: Readonly<Record<SessionPhase, readonly SessionPhase[]>> = {
  new: ["unbound", "paused", "failed", "closed"],
  unbound: ["opened", "paused", "failed", "closed"],
  opened: [
    "opened",
    "identifying",
    "bound",
    "unbound",
    "paused",
    "failed",
    "closed",
  ],
  identifying: ["opened", "bound", "unbound", "paused", "failed", "closed"],
  bound: ["opened", "unbound", "paused", "failed", "closed"],
  paused: ["unbound", "failed", "closed"],
  failed: ["closed"],
  closed: [],
};

/** The value of `session.state` (see `SessionState` in sync_session.ts). */
export type PublicSessionState = "active" | "inactive" | "error";

/** Holds a session's {@linkcode SessionLifeState} and its one transition. */
export class SessionLife {
  #state: SessionLifeState = { phase: "new" };

  /** The current state. */
  get state(): SessionLifeState {
    return this.#state;
  }

  /** The current phase. */
  get phase(): SessionPhase {
    return this.#state.phase;
  }

  /**
   * Moves to `next`.
   *
   * @throws {Error} For a transition the table does not allow (a bug).
   */
  go(next: SessionLifeState): void {
    const from = this.#state.phase;
    if (!NEXT[from].includes(next.phase)) {
      throw new Error(`Session cannot go from ${from} to ${next.phase}`);
    }
    this.#state = next;
  }

  /** Whether the session may sync: not paused, failed or closed. */
  get isLive(): boolean {
    const phase = this.#state.phase;
    return phase !== "paused" && phase !== "failed" && phase !== "closed";
  }

  /** Whether `pause()` stopped it. */
  get isPaused(): boolean {
    return this.#state.phase === "paused";
  }

  /** Whether its realm closed it. */
  get isClosed(): boolean {
    return this.#state.phase === "closed";
  }

  /** The fatal error that stopped it, if one did (also once closed). */
  get fatalError(): SyncError | undefined {
    const state = this.#state;
    return state.phase === "failed" || state.phase === "closed"
      ? state.error
      : undefined;
  }

  /** The channel of the current binding, while there is one. */
  get channel(): SessionChannel | undefined {
    const state = this.#state;
    return state.phase === "opened" || state.phase === "identifying" ||
        state.phase === "bound"
      ? state.channel
      : undefined;
  }

  /** Whether a BIND went out on the current channel. */
  get isBound(): boolean {
    const phase = this.#state.phase;
    return phase === "identifying" || phase === "bound";
  }

  /** Whether local changesets may be uploaded now. */
  get canUpload(): boolean {
    return this.#state.phase === "bound";
  }

  /** What `session.state` reports. */
  get publicState(): PublicSessionState {
    if (this.fatalError !== undefined) return "error";
    return this.#state.phase === "paused" || this.#state.phase === "closed"
      ? "inactive"
      : "active";
  }
}
