/**
 * The sessions of one connection as a table from the client's session id to
 * a record with one explicit state (`docs/ARCHITECTURE.md` "Session flow on
 * one connection").
 */

import type { Session } from "./session.ts";
import { SerialQueue } from "../util/serial_queue.ts";

/**
 * Where a session id stands, as the client's own messages define it (what a
 * message may do depends on what the client sent before it, never on how far
 * the server got):
 * - `"binding"`: BIND received, the session not created yet;
 * - `"bound"`: the session exists (from BIND until UNBIND or an ERROR);
 * - `"unbinding"`: UNBIND received while still binding; the id is not
 *   reusable until the queued UNBIND sends UNBOUND;
 * - `"ended"`: a session-scoped ERROR was sent; messages the client sent
 *   before seeing it are ignored, and its UNBIND is still answered;
 * - `"released"`: UNBOUND was sent, so the id is free again, while messages
 *   of the old binding are still being handled (a new BIND waits for them).
 */
export type SessionState =
  | "binding"
  | "bound"
  | "unbinding"
  | "ended"
  | "released";

/** One session id's entry in the table. */
export interface SessionRecord {
  readonly id: number;
  /** Changed only through the table's transitions. */
  readonly state: SessionState;
  /** The server's session from a completed BIND until it ends. */
  session: Session | null;
  /** The id's messages, handled one at a time in arrival order. */
  readonly queue: SerialQueue;
}

interface MutableRecord extends SessionRecord {
  state: SessionState;
}

// Ended ids remembered per connection; a client that fails session after
// session must not grow the table without bound.
const MAX_ENDED_SESSIONS = 1024;

/** See the file comment. */
export class SessionTable {
  #records = new Map<number, MutableRecord>();
  #held = 0;
  #ended = 0;
  #onError: (sessionId: number, error: unknown) => void;

  /**
   * @param onError Called when a step queued for a session throws.
   */
  constructor(onError: (sessionId: number, error: unknown) => void) {
    this.#onError = onError;
  }

  /** Ids binding, bound or unbinding: what counts against the limit. */
  get held(): number {
    return this.#held;
  }

  /** The record of `sessionId`, if the table remembers it. */
  get(sessionId: number): SessionRecord | undefined {
    return this.#records.get(sessionId);
  }

  /** Whether a BIND for `sessionId` is refused because it is in use. */
  isHeld(sessionId: number): boolean {
    const state = this.#records.get(sessionId)?.state;
    return state === "binding" || state === "bound" || state === "unbinding";
  }

  /** Whether the client may send session messages for `sessionId`. */
  isBound(sessionId: number): boolean {
    const state = this.#records.get(sessionId)?.state;
    return state === "binding" || state === "bound";
  }

  /** Every session that exists now (bound, or completed while unbinding). */
  sessions(): Session[] {
    const sessions: Session[] = [];
    for (const record of this.#records.values()) {
      if (record.session !== null) sessions.push(record.session);
    }
    return sessions;
  }

  /**
   * Starts binding `sessionId` (whose id is not held): a new record, or the
   * old one whose queue still runs, so the BIND waits behind it.
   */
  bind(sessionId: number): SessionRecord {
    const record = this.#entry(sessionId);
    this.#move(record, "binding");
    return record;
  }

  /** BIND completed: the session exists (an UNBIND may already wait). */
  bound(record: SessionRecord, session: Session): void {
    const mutable = this.#own(record);
    mutable.session = session;
    if (mutable.state === "binding") this.#move(mutable, "bound");
  }

  /** UNBIND arrived before BIND completed. */
  unbinding(record: SessionRecord): void {
    this.#move(this.#own(record), "unbinding");
  }

  /**
   * A session-scoped ERROR was sent: later messages the client sent before
   * seeing it are ignored. The oldest ended id is forgotten past the bound.
   */
  ended(record: SessionRecord | number): void {
    const mutable = typeof record === "number"
      ? this.#entry(record)
      : this.#own(record);
    this.#move(mutable, "ended");
    // Re-inserted, so the map's order is the order ids ended in.
    this.#records.delete(mutable.id);
    this.#records.set(mutable.id, mutable);
    if (this.#ended <= MAX_ENDED_SESSIONS) return;
    for (const oldest of this.#records.values()) {
      if (oldest.state === "ended") {
        this.released(oldest);
        return;
      }
    }
  }

  /** The record's session has ended; the record may go with it. */
  detach(record: SessionRecord): void {
    const mutable = this.#own(record);
    mutable.session = null;
    this.#forgetIfIdle(mutable);
  }

  /** UNBOUND was sent: the id is free; the record goes once idle. */
  released(record: SessionRecord): void {
    const mutable = this.#own(record);
    this.#move(mutable, "released");
    this.#forgetIfIdle(mutable);
  }

  /**
   * Queues `step` for the record's session id; the promise settles once the
   * queue has run it.
   */
  enqueue(record: SessionRecord, step: () => Promise<void>): Promise<void> {
    const mutable = this.#own(record);
    // The step carries its session id to onError, so the queue (kept as
    // long as the record) needs no closure of its own.
    mutable.queue.push(async () => {
      try {
        await step();
      } catch (error) {
        this.#onError(record.id, error);
      }
    });
    const drained = mutable.queue.drained();
    drained.then(() => this.#forgetIfIdle(mutable));
    return drained;
  }

  #forgetIfIdle(record: MutableRecord): void {
    if (
      record.state === "released" && record.session === null &&
      record.queue.idle &&
      this.#records.get(record.id) === record
    ) {
      this.#records.delete(record.id);
    }
  }

  #entry(sessionId: number): MutableRecord {
    let record = this.#records.get(sessionId);
    if (record === undefined) {
      record = {
        id: sessionId,
        state: "released",
        session: null,
        queue: new SerialQueue(UNREACHED),
      };
      this.#records.set(sessionId, record);
    }
    return record;
  }

  // The one place states change, so the counts follow them.
  #move(record: MutableRecord, to: SessionState): void {
    const from = record.state;
    if (from === to) return;
    this.#held += counts(to) - counts(from);
    this.#ended += (to === "ended" ? 1 : 0) - (from === "ended" ? 1 : 0);
    record.state = to;
  }

  #own(record: SessionRecord): MutableRecord {
    return record as MutableRecord;
  }
}

// Every step a record's queue runs catches its own errors (see enqueue).
const UNREACHED = () => {};

function counts(state: SessionState): number {
  return state === "binding" || state === "bound" || state === "unbinding"
    ? 1
    : 0;
}
