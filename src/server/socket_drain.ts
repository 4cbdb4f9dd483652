/**
 * How a session's download waits for its socket's buffer to drain before
 * reading more of the realm (backpressure).
 */

import { delay } from "../util/delay.ts";
import type { SessionInit } from "./session_init.ts";

// How often a paused pump looks at the socket's buffer again.
const DRAIN_POLL_MS = 10;

/**
 * Resolves once the session's socket buffers no more than
 * `highWaterBytes`, once `closed()`, or once `signal()` aborts (never
 * rejects). `signal` is read only when a wait begins, so a session whose
 * socket is drained makes no signal.
 */
export async function waitForDrain(
  session: Pick<
    SessionInit,
    "id" | "path" | "transport" | "highWaterBytes" | "log"
  >,
  signal: () => AbortSignal,
  closed: () => boolean,
): Promise<void> {
  // Backpressure: a slow reader must not make the server buffer the
  // realm's history in memory. Storage is read again once the socket has
  // written most of what it holds.
  let paused = false;
  while (
    !closed() &&
    session.transport.buffersMoreThan(session.highWaterBytes)
  ) {
    if (!paused) {
      paused = true;
      session.log(
        "debug",
        "backpressure_paused",
        `Socket buffer holds ${session.transport.bufferedAmount()} bytes; pausing the download`,
        {
          session: session.id,
          path: session.path,
        },
      );
    }
    try {
      await delay(DRAIN_POLL_MS, signal());
    } catch {
      return;
    }
  }
  if (paused && !closed()) {
    session.log(
      "debug",
      "backpressure_resumed",
      "Socket buffer drained; resuming the download",
      {
        session: session.id,
        path: session.path,
      },
    );
  }
}
