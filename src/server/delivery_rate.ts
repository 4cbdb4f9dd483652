/**
 * How large a connection's next DOWNLOAD may be, from the rate at which its
 * client acknowledges bytes (RECEIVED, docs/PROTOCOL.md §4.8).
 *
 * The WebSocket API hands a client whole messages only, so a DOWNLOAD that
 * takes longer than the client's read timeout to cross the link gets the
 * connection cut in the middle of it, and again after every reconnect. The
 * server's own socket cannot show a slow link (the kernel takes megabytes
 * long before they are delivered), but the client's acknowledgements can:
 * while the server has data in flight, the acknowledged count grows at the
 * link's rate. So each DOWNLOAD is sized to arrive within a quarter of the
 * client's announced timeout at that rate, between a floor and the server's
 * `downloadBatchBytes`.
 *
 * Pure: the caller passes the time, and nothing here schedules anything.
 */

import { RECEIVED_INTERVAL_BYTES } from "../protocol/messages.ts";

/**
 * The smallest batch a client that acknowledges deliveries gets, and the
 * size of its first ones, before any rate is known, in bytes: twice the
 * compression threshold, so a batch still makes a frame of at least 8 KiB
 * (one DOWNLOAD's string table can make it smaller than its stored size)
 * and is deflated, often to a third, on exactly the slow links that get
 * it. At this size a link must move 16 KiB per client timeout: 137 B/s at
 * the default 120 s.
 */
export const DOWNLOAD_FLOOR_BYTES = 16 * 1024;

/**
 * A DOWNLOAD is sized to arrive within the client's timeout divided by
 * this: room for a rate that was measured high (acknowledgements bunched by
 * a busy client), a link that slowed down, and several sessions whose
 * batches take turns on one socket.
 */
export const TIMEOUT_SHARE_DIVISOR = 4;

/**
 * Bytes per second at or above which a link counts as fast: DOWNLOADs to
 * it are not deflated. Deflating takes the server's thread (and the
 * client's, to inflate) about as long as sending the raw bytes at this
 * rate saves, so above it compression costs more time than it saves
 * (docs/PERFORMANCE.md "Compression only on slow links").
 */
export const FAST_LINK_BYTES_PER_SECOND = 4 * 1024 * 1024;

/**
 * Unacknowledged bytes below which a link counts as idle when a frame is
 * sent (a client acknowledges only every {@link RECEIVED_INTERVAL_BYTES} and
 * only on a large frame, so a few small frames stay unacknowledged on an
 * idle link), and the smallest frame measured from such a start: a smaller
 * one's acknowledgement tells the round trip more than the rate.
 */
const IDLE_LINK_BYTES = RECEIVED_INTERVAL_BYTES;

/** Acknowledgements a rate is measured over, at most. */
const WINDOW = 8;

/** See the file comment. */
export class DeliveryRate {
  readonly #max: number;
  readonly #floor: number;
  #sent = 0;
  #acknowledged = 0;
  #heard = false;
  #timeoutMs = 0;
  // Bytes per millisecond; 0 until measured.
  #rate = 0;
  // The last WINDOW acknowledgements: count, arrival time and the bytes the
  // server had sent by then, in a ring (no allocation per RECEIVED).
  #pointAcknowledged = new Float64Array(WINDOW);
  #pointTime = new Float64Array(WINDOW);
  #pointSent = new Float64Array(WINDOW);
  #points = 0;
  #next = 0;
  // The last frame sent onto a link that carried nothing else (nothing
  // unacknowledged beyond a few small frames): when, and the byte count
  // before it. Null once measured, or while the link is busy.
  #dryStart: { at: number; from: number } | null = null;

  /**
   * @param maxBytes The server's `downloadBatchBytes`: the largest batch.
   * @param floorBytes The smallest batch once the client acknowledges;
   *   at most `maxBytes`.
   */
  constructor(
    maxBytes: number,
    floorBytes: number = Math.min(DOWNLOAD_FLOOR_BYTES, maxBytes),
  ) {
    this.#max = maxBytes;
    this.#floor = Math.min(floorBytes, maxBytes);
  }

  /** Bytes handed to the socket so far. */
  get sentBytes(): number {
    return this.#sent;
  }

  /** The measured delivery rate in bytes per second, 0 while unknown. */
  get bytesPerSecond(): number {
    return this.#rate * 1000;
  }

  /**
   * Whether the link is fast enough that deflating DOWNLOADs would cost more
   * time than it saves: only once a rate at or above
   * {@linkcode FAST_LINK_BYTES_PER_SECOND} was measured. A client that never
   * acknowledges, or one not measured yet, may be on a slow link.
   */
  get isFast(): boolean {
    return this.#rate * 1000 >= FAST_LINK_BYTES_PER_SECOND;
  }

  /**
   * The largest DOWNLOAD to build now, in bytes: `downloadBatchBytes` for a
   * client that never acknowledged (it cannot say how fast it receives) or
   * that never times out; the floor until a rate is known; then the rate
   * times the share of the client's timeout, clamped to [floor, max].
   */
  get batchBytes(): number {
    if (!this.#heard || this.#timeoutMs === 0) return this.#max;
    if (this.#rate === 0) return this.#floor;
    const bytes = Math.floor(
      this.#rate * this.#timeoutMs / TIMEOUT_SHARE_DIVISOR,
    );
    return Math.min(this.#max, Math.max(this.#floor, bytes));
  }

  /**
   * Takes a client that acknowledges deliveries before its first RECEIVED:
   * a protocol 2 client sends none before BIND (docs/PROTOCOL.md §4.8), so
   * that nothing unanswered goes just before it. Its batches are the floor
   * until RECEIVEDs give its timeout and a rate.
   */
  expectAcknowledgements(): void {
    if (this.#heard) return;
    this.#heard = true;
    // Not 0 ("never times out"): unknown, which the floor covers, since no
    // rate can be measured before a RECEIVED brings the real timeout.
    this.#timeoutMs = Number.POSITIVE_INFINITY;
  }

  /**
   * Counts a frame handed to the socket (its size on the wire).
   *
   * @param now The time, in milliseconds, when known: a large frame sent
   *   onto an idle link then gives a rate from its acknowledgement alone
   *   (see {@linkcode noteReceived}).
   */
  noteSent(bytes: number, now?: number): void {
    if (
      now !== undefined && bytes >= IDLE_LINK_BYTES &&
      this.#sent - this.#acknowledged <= IDLE_LINK_BYTES
    ) {
      this.#dryStart = { at: now, from: this.#sent };
    }
    this.#sent += bytes;
  }

  /**
   * Takes a RECEIVED. A rate is measured from the oldest acknowledgement in
   * the window after which the link never ran dry: every byte acknowledged
   * since had been sent by then, so the client received them as fast as the
   * link delivers. That rate, or the last interval's when lower, replaces
   * the estimate, up or down. When the
   * server itself left the link idle in between, the figure only says the
   * link is at least that fast, and raises the estimate at most. So does a
   * large frame sent onto an idle link with its time ({@linkcode noteSent}),
   * from its send to the first acknowledgement past it.
   *
   * @param receivedBytes The client's count of bytes received.
   * @param timeoutMs The client's announced timeout (0 = none).
   * @param now The time, in milliseconds.
   * @returns False when the count is impossible: below an earlier one, or
   *   above what was sent (a protocol violation).
   */
  noteReceived(receivedBytes: number, timeoutMs: number, now: number): boolean {
    if (receivedBytes < this.#acknowledged || receivedBytes > this.#sent) {
      return false;
    }
    this.#heard = true;
    this.#timeoutMs = timeoutMs;
    if (this.#points > 0) this.#measure(receivedBytes, now);
    this.#measureFromIdle(receivedBytes, now);
    const slot = this.#next;
    this.#pointAcknowledged[slot] = receivedBytes;
    this.#pointTime[slot] = now;
    this.#pointSent[slot] = this.#sent;
    this.#next = (slot + 1) % WINDOW;
    if (this.#points < WINDOW) this.#points++;
    this.#acknowledged = receivedBytes;
    return true;
  }

  #measure(receivedBytes: number, now: number): void {
    const oldest = (this.#next - this.#points + WINDOW) % WINDOW;
    for (let index = 0; index < this.#points; index++) {
      const slot = (oldest + index) % WINDOW;
      const rate = this.#rateSince(slot, receivedBytes, now);
      if (rate === 0) return;
      if (this.#pointSent[slot]! >= receivedBytes) {
        // The last interval alone is noisy, but it is the first to show a
        // link that slowed down; the whole window smooths out a burst of
        // acknowledgements. Taking the lower keeps the batch safe from both.
        const newest = (this.#next - 1 + WINDOW) % WINDOW;
        const last = this.#rateSince(newest, receivedBytes, now);
        this.#rate = last === 0 ? rate : Math.min(rate, last);
        return;
      }
      // Only the oldest point gives the lower bound: it spans the most
      // acknowledgements, so a burst of them from a client that was busy
      // for a while cannot pass for a fast link.
      if (index === 0 && rate > this.#rate) this.#rate = rate;
    }
  }

  /**
   * A lower bound from the last frame sent onto an idle link: every byte
   * acknowledged past it was sent at or after it and had arrived by now.
   * Between two acknowledgements the link may have been idle while the
   * server built its next frame, or while the client was busy with the
   * previous one, which an interval between acknowledgements counts as
   * delivery time: on a fast link where the server or the client spends
   * tens of milliseconds per frame, only this bound shows the link as fast.
   * It raises the estimate, never lowers it, once per idle start.
   */
  #measureFromIdle(receivedBytes: number, now: number): void {
    const start = this.#dryStart;
    if (start === null || receivedBytes <= start.from) return;
    this.#dryStart = null;
    const elapsed = now - start.at;
    if (elapsed <= 0) return;
    const rate = (receivedBytes - start.from) / elapsed;
    if (rate > this.#rate) this.#rate = rate;
  }

  /** Bytes per millisecond from a point to now; 0 when not measurable. */
  #rateSince(slot: number, receivedBytes: number, now: number): number {
    const bytes = receivedBytes - this.#pointAcknowledged[slot]!;
    const elapsed = now - this.#pointTime[slot]!;
    return bytes > 0 && elapsed > 0 ? bytes / elapsed : 0;
  }
}
