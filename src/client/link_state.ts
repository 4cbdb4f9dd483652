// This module is browser compatible.

/**
 * A session's link to the server as the user sees it (`connectionState`)
 * and the streams that follow its changes (`connectionStateChanges()`).
 */

import { PushStream } from "../util/push_stream.ts";
import type { RetryInfo } from "./connection.ts";
import type { SyncError } from "./sync_error.ts";

/** A session's link to the server (see `ConnectionState`). */
export type LinkState = "disconnected" | "connecting" | "connected";

/** One transition of the link (see `ConnectionStateChange`). */
export interface LinkChange {
  previous: LinkState;
  current: LinkState;
  error?: SyncError;
  retry?: RetryInfo;
}

/**
 * The current link state and its followers. Each real transition is pushed
 * once, in order, to every open stream, so the getter and the streams
 * always agree.
 */
export class LinkStateFeed {
  #current: LinkState = "disconnected";
  #streams = new Set<PushStream<LinkChange>>();

  /** The state now. */
  get current(): LinkState {
    return this.#current;
  }

  /**
   * Moves to `next` and tells every stream; returns the change, or
   * undefined when the state was already `next`.
   */
  move(
    next: LinkState,
    error?: SyncError,
    retry?: RetryInfo,
  ): LinkChange | undefined {
    const previous = this.#current;
    if (previous === next) return undefined;
    this.#current = next;
    const change: LinkChange = { previous, current: next };
    if (error !== undefined) change.error = error;
    if (retry !== undefined) change.retry = retry;
    for (const stream of [...this.#streams]) stream.push(change);
    return change;
  }

  /**
   * A stream of the changes from now on: it errors at once with `fatal`
   * when the session has failed, ends at once when it is closed, and ends
   * when `signal` aborts.
   */
  follow(
    signal: AbortSignal | undefined,
    fatal: SyncError | undefined,
    closed: boolean,
  ): ReadableStream<LinkChange> {
    const stream: PushStream<LinkChange> = new PushStream({
      latestOnly: false,
      signal,
      onDetach: () => this.#streams.delete(stream),
    });
    if (fatal !== undefined) stream.error(fatal);
    else if (closed) stream.close();
    else if (!stream.isDetached) this.#streams.add(stream);
    return stream.stream;
  }

  /** Ends every stream: with `error` when the session failed. */
  end(error?: SyncError): void {
    for (const stream of [...this.#streams]) {
      if (error === undefined) stream.close();
      else stream.fail(error);
    }
    this.#streams.clear();
  }
}
