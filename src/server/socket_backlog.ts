/**
 * What a connection does while its socket is backed up: it waits for the
 * socket to drain, and keeps only the newest PING to answer once it has.
 */

import { MessageType } from "../protocol/messages.ts";
import { delay } from "../util/delay.ts";
import type { FrameWriter } from "./frame_writer.ts";

// How often a wait looks at the socket's buffer again.
const DRAIN_POLL_MS = 10;

/**
 * Resolves true once `output` holds at most `limit` bytes or `stop()` is
 * true, false once `signal` aborts first (never rejects).
 */
export async function drained(
  output: Pick<FrameWriter, "pendingBytes">,
  limit: number,
  signal: AbortSignal,
  stop: () => boolean = () => false,
): Promise<boolean> {
  while (!stop() && output.pendingBytes() > limit) {
    try {
      await delay(DRAIN_POLL_MS, signal);
    } catch {
      return false;
    }
  }
  return true;
}

/**
 * Answers PINGs with PONGs, holding back all but the newest PING while the
 * socket buffers more than `limit()` bytes.
 */
export class PingAnswerer {
  #output: Pick<FrameWriter, "pendingBytes" | "send">;
  #limit: () => number;
  #signal: AbortSignal;
  #track: (task: Promise<unknown>) => void;
  // The newest PING not answered yet because the socket was backed up.
  #held: number | null = null;

  /**
   * Makes the answerer of one connection.
   *
   * @param output The connection's outbound frames.
   * @param limit The socket's buffer, in bytes, above which PINGs are held.
   * @param signal Aborts when the socket has closed: a held PING is dropped.
   * @param track Registers the wait for a held PING with the connection.
   */
  constructor(
    output: Pick<FrameWriter, "pendingBytes" | "send">,
    limit: () => number,
    signal: AbortSignal,
    track: (task: Promise<unknown>) => void,
  ) {
    this.#output = output;
    this.#limit = limit;
    this.#signal = signal;
    this.#track = track;
  }

  /** Answers the PING sent at `timestamp`, now or once the socket drains. */
  pong(timestamp: number): void {
    if (
      this.#held === null && this.#output.pendingBytes() <= this.#limit()
    ) {
      this.#output.send({ type: MessageType.Pong, timestamp });
      return;
    }
    // A client that sends PINGs without reading the PONGs must not make the
    // server buffer them without bound: while the socket is backed up only
    // the newest PING is kept, and answered once it drains. The client sees
    // life in the bytes it is behind on meanwhile.
    const waiting = this.#held !== null;
    this.#held = timestamp;
    if (!waiting) this.#track(this.#answerHeld());
  }

  async #answerHeld(): Promise<void> {
    if (!await drained(this.#output, this.#limit(), this.#signal)) return;
    const timestamp = this.#held!;
    this.#held = null;
    this.#output.send({ type: MessageType.Pong, timestamp });
  }
}
