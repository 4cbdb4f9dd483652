// This module is browser compatible.

/**
 * What one session counts for `session.stats()`: bytes each way and the
 * reconnects of its bindings.
 */

/** A session's counters (see `SessionStats`). */
export interface SessionCounters {
  bytesSent: number;
  bytesReceived: number;
  rttMs: number | undefined;
  reconnects: number;
  pendingUploadBytes: number;
  pendingUploadChangesets: number;
  clientResets: number;
}

/** See the file comment. */
export class SessionTally {
  /** Bytes of this session's frames sent. */
  bytesSent = 0;
  /** Bytes of frames for this session received. */
  bytesReceived = 0;
  /** Bindings that followed a lost one. */
  reconnects = 0;
  #everBound = false;
  #lostSinceBind = false;

  /** The binding was lost: the next BIND counts as a reconnect. */
  lost(): void {
    if (this.#everBound) this.#lostSinceBind = true;
  }

  /** A pause: the next BIND is a resume, not a reconnect. */
  paused(): void {
    this.#lostSinceBind = false;
  }

  /** A BIND went out. */
  bound(): void {
    if (this.#lostSinceBind) this.reconnects++;
    this.#lostSinceBind = false;
    this.#everBound = true;
  }
}
