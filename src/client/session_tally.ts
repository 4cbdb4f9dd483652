// This module is browser compatible.

/** The figures behind `session.stats()`, and the counters a session keeps. */

/**
 * Counters of one session.
 *
 * @example Showing the pending writes
 * ```ts
 * import type { SessionStats } from "@tether/sync";
 *
 * const stats: SessionStats = {
 *   bytesSent: 0, bytesReceived: 0, rttMs: undefined, reconnects: 0,
 *   pendingUploadBytes: 0, pendingUploadChangesets: 0,
 *   clientResets: 0,
 * };
 * console.log(`${stats.pendingUploadChangesets} writes waiting for the server`);
 * ```
 */
export interface SessionStats {
  /** Bytes this session sent (BIND, UPLOAD, MARK, UNBIND frames). */
  bytesSent: number;
  /** Bytes this session received (IDENT, DOWNLOAD, MARK_REPLY… frames). */
  bytesReceived: number;
  /** The connection's last measured round-trip time (PING → PONG), in ms. */
  rttMs: number | undefined;
  /** How often the session bound again after its connection was lost. */
  reconnects: number;
  /** Bytes of local changesets the server has not acknowledged yet. */
  pendingUploadBytes: number;
  /** Number of local changesets the server has not acknowledged yet. */
  pendingUploadChangesets: number;
  /**
   * Client resets this session performed (docs/CLIENT.md "Client reset").
   */
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

  /**
   * `session.stats()` from these counters and what the session adds.
   *
   * @param rttMs The connection's last round-trip time, if any.
   * @param pending The progress tracker's figures of unacknowledged writes.
   * @param clientResets Client resets performed.
   */
  stats(
    rttMs: number | undefined,
    pending: { pendingUploadBytes: number; pendingUploadChangesets: number },
    clientResets: number,
  ): SessionStats {
    return {
      bytesSent: this.bytesSent,
      bytesReceived: this.bytesReceived,
      rttMs,
      reconnects: this.reconnects,
      pendingUploadBytes: pending.pendingUploadBytes,
      pendingUploadChangesets: pending.pendingUploadChangesets,
      clientResets,
    };
  }

  /** A BIND went out. */
  bound(): void {
    if (this.#lostSinceBind) this.reconnects++;
    this.#lostSinceBind = false;
    this.#everBound = true;
  }
}
