// This module is browser compatible.

/**
 * The upload window of one connection: the bytes of UPLOAD frames its
 * sessions keep sent and not yet acknowledged, shared by all of them, so
 * however many realms upload at once the server holds no more than one
 * window's worth for the connection (its bound counts per connection,
 * docs/SERVER.md "Memory"). Sessions that find it full wait in line and are
 * woken in turn as acknowledgements free it (docs/CLIENT.md "Uploads").
 */

/**
 * The default window: bytes of UPLOAD frames a connection keeps sent but
 * not acknowledged, and the most one frame packs (a larger single changeset
 * still goes alone). The server's default per-connection bound (16 MiB)
 * counts an UPLOAD at two to about five times its frame, so it holds this
 * window with room to spare.
 */
export const UPLOAD_WINDOW_BYTES = 1024 * 1024;

/** See the file comment. */
export class UploadWindow {
  readonly #limit: number;
  #inFlight = 0;
  /** Sessions waiting for room, in the order they found it full. */
  #waiting: (() => void)[] = [];
  /** A wake-up of the waiting sessions is queued. */
  #queued = false;
  /** The waiting sessions are being woken (they may take room now). */
  #waking = false;

  /** @param limit The most bytes kept sent but unacknowledged. */
  constructor(limit: number = UPLOAD_WINDOW_BYTES) {
    if (!Number.isSafeInteger(limit) || limit < 1) {
      throw new RangeError(`limit must be a positive integer, got ${limit}`);
    }
    this.#limit = limit;
  }

  /** The most bytes kept sent but unacknowledged. */
  get limit(): number {
    return this.#limit;
  }

  /** Bytes sent and not yet acknowledged, by every session. */
  get inFlightBytes(): number {
    return this.#inFlight;
  }

  /** Sessions waiting for room. */
  get waiting(): number {
    return this.#waiting.length;
  }

  /**
   * Whether a frame of `bytes` may go now. One always goes into an empty
   * window, however large; while sessions wait in line, none but those
   * being woken may take room (a session acknowledged first would otherwise
   * refill the window before the others' turn).
   */
  fits(bytes: number): boolean {
    if (this.#waiting.length > 0 && !this.#waking) return false;
    return this.#inFlight === 0 || this.#inFlight + bytes <= this.#limit;
  }

  /** A frame of `bytes` went out. */
  take(bytes: number): void {
    this.#inFlight += bytes;
  }

  /**
   * Frames of `bytes` in all were acknowledged (or will never be: their
   * binding is gone); the sessions waiting are woken in turn.
   */
  release(bytes: number): void {
    this.#inFlight = Math.max(0, this.#inFlight - bytes);
    if (bytes > 0 && this.#waiting.length > 0 && !this.#queued) {
      this.#queued = true;
      // After the acknowledging message is handled, not inside it: the
      // sessions woken send from their own turn, not from another's.
      queueMicrotask(() => this.#wake());
    }
  }

  /**
   * Calls `wake` once room is freed, after the sessions already waiting
   * (a session already in line keeps its place).
   */
  wait(wake: () => void): void {
    if (!this.#waiting.includes(wake)) this.#waiting.push(wake);
  }

  /** Takes `wake` out of the line (its session left the binding). */
  forget(wake: () => void): void {
    const index = this.#waiting.indexOf(wake);
    if (index >= 0) this.#waiting.splice(index, 1);
  }

  /**
   * Wakes the sessions in line, in order, until one finds the room still
   * too small (it waits again, first in line): nobody passes it, so a frame
   * larger than what is free goes once the window empties, however busy the
   * other sessions are.
   */
  #wake(): void {
    this.#queued = false;
    this.#waking = true;
    const turn = this.#waiting;
    this.#waiting = [];
    let index = 0;
    try {
      for (; index < turn.length; index++) {
        turn[index]!();
        if (this.#waiting.includes(turn[index]!)) break;
      }
    } finally {
      this.#waking = false;
      // The one that waits again, and everyone after it, keep their order
      // (a wake that threw loses its place, not the others').
      const rest = turn.slice(index + 1)
        .filter((wake) => !this.#waiting.includes(wake));
      this.#waiting.push(...rest);
    }
  }
}
