// This module is browser compatible.

/**
 * A session's progress delivery: publishes the `ProgressTracker`'s figures
 * at most once per interval and hands them to callbacks, in order, off the
 * caller's stack (docs/CLIENT.md "Progress semantics").
 */

import { type Clock, Timer } from "../util/clock.ts";
import type {
  Progress,
  ProgressDirection,
  ProgressMode,
  ProgressRegistration,
  ProgressTracker,
} from "./progress.ts";

/** A Realm-style progress callback (see `ProgressCallback`). */
export type ProgressCallbackFn = (
  transferred: number,
  transferable: number,
  progress: Progress,
) => void;

/** One callback registration; `cancel()` ends it (also `using`). */
export class CallbackToken {
  /** The callback registered. */
  readonly callback: ProgressCallbackFn;
  /** The tracker's registration behind it. */
  registration: ProgressRegistration | undefined;
  /** Whether it was cancelled. */
  cancelled = false;
  #onCancel: (token: CallbackToken) => void;

  /**
   * @param callback Receives the reports.
   * @param onCancel Told when the token is cancelled.
   */
  constructor(
    callback: ProgressCallbackFn,
    onCancel: (token: CallbackToken) => void,
  ) {
    this.callback = callback;
    this.#onCancel = onCancel;
  }

  /** Ends the registration; a second call is ignored. */
  cancel(): void {
    if (this.cancelled) return;
    this.cancelled = true;
    this.registration?.cancel();
    this.#onCancel(this);
  }

  /** Same as `cancel()`. */
  [Symbol.dispose](): void {
    this.cancel();
  }
}

/** Throttled publishing and callback delivery; see the module comment. */
export class ProgressNotifier {
  #tracker: ProgressTracker;
  #clock: Clock;
  #intervalMs: number;
  #onCallbackError: (error: unknown) => void;
  #wantMark: () => void;
  #publishTimer: Timer;
  #lastPublishAt = -Infinity;
  #queue: { token: CallbackToken; progress: Progress }[] = [];
  #tokens = new Set<CallbackToken>();

  /**
   * @param tracker The figures.
   * @param clock Time and timers.
   * @param intervalMs Least time between two reports (0: every change).
   * @param onCallbackError Told what a callback threw.
   * @param wantMark Asks the session for a MARK round trip: a download
   *   `forCurrentlyOutstandingWork` registration learns from its reply
   *   when its work is here.
   */
  constructor(
    tracker: ProgressTracker,
    clock: Clock,
    intervalMs: number,
    onCallbackError: (error: unknown) => void,
    wantMark: () => void,
  ) {
    this.#tracker = tracker;
    this.#clock = clock;
    this.#intervalMs = intervalMs;
    this.#onCallbackError = onCallbackError;
    this.#wantMark = wantMark;
    this.#publishTimer = new Timer(clock);
  }

  /** The figures changed: publish now, or when the interval allows. */
  changed(): void {
    if (this.#tracker.registrationCount === 0) return;
    const interval = this.#intervalMs;
    if (interval <= 0 || this.#tracker.hasCompletion) {
      this.#publishNow();
      return;
    }
    if (this.#publishTimer.isRunning) return;
    const now = this.#clock.now();
    const due = this.#lastPublishAt + interval;
    if (now >= due) this.#publishNow();
    else this.#publishTimer.start(() => this.#publishNow(), due - now);
  }

  /** Stops a pending publication (the session ends). */
  stop(): void {
    this.#publishTimer.stop();
  }

  /** Registers a listener with the tracker (a progress stream). */
  register(
    direction: ProgressDirection,
    mode: ProgressMode,
    listener: Parameters<ProgressTracker["register"]>[2],
  ): ProgressRegistration {
    const registration = this.#tracker.register(direction, mode, listener);
    this.#markFor(registration);
    return registration;
  }

  /** Registers a callback; `removeCallback` finds it by identity. */
  addCallback(
    direction: ProgressDirection,
    mode: ProgressMode,
    callback: ProgressCallbackFn,
  ): CallbackToken {
    const token = new CallbackToken(
      callback,
      (cancelled) => this.#tokens.delete(cancelled),
    );
    this.#tokens.add(token);
    token.registration = this.#tracker.register(direction, mode, {
      next: (progress) => this.#queueCallback(token, progress),
      complete: () => this.#tokens.delete(token),
      error: () => this.#tokens.delete(token),
    });
    this.#markFor(token.registration);
    return token;
  }

  /**
   * Registers an internal download callback (`onProgress` of
   * `openRealm`), which `removeCallback` does not see.
   */
  addDownloadCallback(
    callback: (progress: Progress) => void,
  ): ProgressRegistration {
    const token = new CallbackToken(
      (_transferred, _transferable, progress) => callback(progress),
      () => {},
    );
    token.registration = this.#tracker.register(
      "download",
      "forCurrentlyOutstandingWork",
      {
        next: (progress) => this.#queueCallback(token, progress),
        complete: () => {},
        error: () => {},
      },
    );
    this.#markFor(token.registration);
    return token.registration;
  }

  /** Cancels every registration of `callback`. */
  removeCallback(callback: ProgressCallbackFn): void {
    for (const token of [...this.#tokens]) {
      if (token.callback === callback) token.cancel();
    }
  }

  /** Forgets every callback (the tracker has ended them). */
  clearCallbacks(): void {
    this.#tokens.clear();
  }

  /**
   * A `forCurrentlyOutstandingWork` download registration completes when a
   * MARK sent after it is answered (or the server says nothing more is to
   * come), so one is asked for.
   */
  #markFor(registration: ProgressRegistration): void {
    if (
      registration.direction === "download" &&
      registration.mode === "forCurrentlyOutstandingWork" &&
      registration.isActive
    ) {
      this.#wantMark();
    }
  }

  #publishNow(): void {
    this.#publishTimer.stop();
    this.#lastPublishAt = this.#clock.now();
    this.#tracker.publish();
  }

  #queueCallback(token: CallbackToken, progress: Progress): void {
    this.#queue.push({ token, progress });
    if (this.#queue.length > 1) return;
    queueMicrotask(() => {
      const queue = this.#queue;
      this.#queue = [];
      for (const { token, progress } of queue) {
        // A callback earlier in this round may have cancelled this one.
        if (token.cancelled) continue;
        try {
          token.callback(
            progress.transferredBytes,
            progress.transferableBytes,
            progress,
          );
        } catch (error) {
          this.#onCallbackError(error);
        }
      }
    });
  }
}
