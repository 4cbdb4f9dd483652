/**
 * A bound session's download pump: what the client was sent (its cursor),
 * the history after it in bounded batches or a snapshot in its place, and
 * the MARKs answered once what they wait for was sent
 * (docs/ARCHITECTURE.md "Session flow on one connection").
 */

import type { Instruction } from "../model/changeset.ts";
import { type DownloadMessage, MessageType } from "../protocol/messages.ts";
import { HistoryRemaining } from "./history_remaining.ts";
import { SessionError } from "./session_error.ts";
import type { SessionInit } from "./session_init.ts";
import { shareBatch, shareItems } from "./shared_download.ts";
import { waitForDrain } from "./socket_drain.ts";
import type { HistoryItem } from "./storage/history.ts";
import { snapshotChangeset, type SnapshotInfo } from "./storage/snapshot.ts";

/** What a download pump needs from the session it sends for. */
export interface DownloadOwner {
  /** Whether the session has ended (or the server is shutting down). */
  readonly closed: boolean;
  /** The client version every DOWNLOAD acknowledges. */
  readonly lastAcknowledged: number;
  /** The signal storage reads and waits run under, while held. */
  readonly workSignal: AbortSignal;
  /** Keeps `workSignal` while a run may use it. */
  holdWork(): void;
  /** Lets `workSignal` go once nothing holds it. */
  releaseWork(): void;
  /** Ends the session with a session-scoped ERROR. */
  fail(error: SessionError): void;
}

// #running before `start`: a wake then only notes itself.
const NOT_STARTED: Promise<void> = Promise.resolve();

/** See the file comment. */
export class DownloadPump {
  #init: SessionInit;
  #owner: DownloadOwner;
  #cursor: number;
  #cursorBytes: number;
  // The salt of #cursor, sent with every DOWNLOAD (PROTOCOL.md §4.11).
  #cursorSalt: number;
  // MARKs not answered yet (null: none, the usual case).
  #marks: { requestId: number; target: number }[] | null = null;
  #wakePending = false;
  // The pump's run; null while it is parked with nothing to send, so an
  // idle session keeps no suspended async frame (`wake` starts a new run).
  #running: Promise<void> | null = NOT_STARTED;
  #sentFirst = false;
  // True while the snapshot is being sent: acks keep the client's cursor,
  // and MARK waits for the phase to end.
  #inSnapshot = false;
  // Stored bytes of snapshot records not yet sent (0 outside the phase).
  #snapshotRemaining = 0;
  // What "still to download" counts of the history.
  #remaining: HistoryRemaining;
  #historyAvailable: boolean;
  // Where the acknowledgement being gathered moves the cursor to.
  #ackCursor: { version: number; bytes: number; salt: number } | null = null;

  /**
   * @param init The session's parameters; the pump starts at its download
   *   cursor.
   * @param owner The session it sends for.
   */
  constructor(init: SessionInit, owner: DownloadOwner) {
    this.#init = init;
    this.#owner = owner;
    this.#cursor = init.downloadCursor;
    this.#cursorSalt = init.cursorSalt;
    this.#historyAvailable = init.cursorBytes !== null;
    this.#cursorBytes = init.cursorBytes ?? 0;
    this.#remaining = new HistoryRemaining(this.#cursor, this.#cursorBytes);
  }

  /** The last version the client was sent (its download cursor). */
  get cursor(): number {
    return this.#cursor;
  }

  /** See `Session.phase`. */
  get phase(): "bootstrapping" | "catching_up" | "live" {
    if (this.#inSnapshot) return "bootstrapping";
    return this.#cursor < this.#init.hub.head.version ? "catching_up" : "live";
  }

  /** Starts sending history; call once. */
  start(): void {
    // #run awaits before it ends, so the run clears #running after this.
    this.#running = this.#run(true);
  }

  /** Resolves once the current run has ended (or at once when parked). */
  get stopped(): Promise<void> {
    return this.#running ?? NOT_STARTED;
  }

  /** Tells the pump the realm may have moved on. */
  wake(): void {
    this.#wakePending = true;
    if (this.#running !== null || this.#owner.closed) return;
    // Caught up to what memory holds: send it in this turn rather than
    // after the pump's turns; the pump runs only if more is left.
    if (this.#sendCached() && this.#cursor >= this.#init.hub.head.version) {
      this.#wakePending = false;
      this.#answerMarks();
      return;
    }
    this.#running = this.#run(false);
  }

  /** Answers MARK `requestId` once everything up to `target` was sent. */
  mark(requestId: number, target: number): void {
    (this.#marks ??= []).push({ requestId, target });
    this.wake();
  }

  /**
   * Acknowledges what one commit stored of the session's uploads
   * (`integrated`, the client's own changesets); `more` when another upload
   * of the session settles with the same commit, whose call then sends the
   * one DOWNLOAD for both.
   */
  acknowledge(integrated: readonly HistoryItem[], more: boolean): void {
    for (const item of integrated) {
      this.#remaining.noteOwn(item.version, item.size);
    }
    // The acknowledgement also moves the cursor over this upload's
    // versions when they directly follow it: they are the client's own, so
    // the pump would otherwise send an empty DOWNLOAD for them right after
    // this one (docs/ARCHITECTURE.md).
    const ack = this.#ackCursor ??= {
      version: this.#cursor,
      bytes: this.#cursorBytes,
      salt: this.#cursorSalt,
    };
    if (!this.#inSnapshot && this.#historyAvailable) {
      for (const item of integrated) {
        if (item.version !== ack.version + 1) break;
        ack.version = item.version;
        ack.bytes = item.cumulativeBytes;
        ack.salt = item.salt;
      }
    }
    // Another upload of this session settles with the same commit: one
    // DOWNLOAD acknowledges both.
    if (more) return;
    this.#ackCursor = null;
    this.#sendDownload(ack.version, ack.bytes, ack.salt, [], 0);
  }

  /**
   * Sends an empty DOWNLOAD that keeps the cursor: the first, or an
   * acknowledgement.
   */
  sendAtCursor(): void {
    this.#sendDownload(
      this.#cursor,
      this.#cursorBytes,
      this.#cursorSalt,
      [],
      0,
    );
  }

  // Sends the next batch now if the pump would send it from memory at once
  // (past the first DOWNLOAD, history available, socket below its high
  // water mark); false when it did not.
  #sendCached(): boolean {
    if (
      !this.#sentFirst || !this.#historyAvailable || this.#inSnapshot ||
      this.#cursor >= this.#init.hub.head.version ||
      this.#init.transport.buffersMoreThan(this.#init.highWaterBytes)
    ) {
      return false;
    }
    const items = this.#init.hub.readCached(
      this.#cursor + 1,
      this.#batchBudget(),
    );
    if (items.length === 0) return false;
    this.#sendItems(items);
    return true;
  }

  /**
   * One run of the pump: sends what there is, then ends (parks) once
   * nothing is left and no wake came meanwhile. `first`: the run `start`
   * begins, which bootstraps when it must.
   */
  async #run(first: boolean): Promise<void> {
    this.#owner.holdWork();
    try {
      const hub = this.#init.hub;
      if (
        first && (!this.#historyAvailable ||
          (hub.snapshotsEnabled && this.#cursor === 0))
      ) {
        await this.#bootstrap();
      }
      while (!this.#owner.closed) {
        // A wake from here on is seen by this pass, or makes another one.
        this.#wakePending = false;
        await this.#waitForDrain();
        if (this.#owner.closed) return;
        const head = this.#init.hub.head;
        if (this.#cursor < head.version) {
          await this.#sendHistory();
          continue;
        }
        if (!this.#sentFirst) this.sendAtCursor();
        this.#answerMarks();
        if (!this.#wakePending) return;
      }
    } catch (error) {
      if (this.#owner.closed) return;
      this.#owner.fail(
        error instanceof SessionError ? error : new SessionError(
          "session_failed",
          "Cannot send the realm's history: storage failed",
          { cause: error },
        ),
      );
    } finally {
      this.#running = null;
      this.#owner.releaseWork();
    }
  }

  async #sendHistory(): Promise<void> {
    const read = await this.#init.hub.read(
      this.#cursor + 1,
      this.#batchBudget(),
      this.#owner.workSignal,
    );
    if (this.#owner.closed) return;
    if (read.gap) {
      // Compacted meanwhile: the snapshot holds what the history did.
      this.#historyAvailable = false;
      await this.#bootstrap();
      return;
    }
    this.#sendItems(read.items);
  }

  // Sends the history items that follow the cursor as one DOWNLOAD.
  #sendItems(items: readonly HistoryItem[]): void {
    const from = this.#cursor;
    const identity = this.#init.identity.id;
    let version = from;
    let bytes = this.#cursorBytes;
    let salt = this.#cursorSalt;
    // What "still to download" counted of these versions: their stored
    // sizes, but for this session's own uploads, which it never counted.
    let counted = 0;
    // Whether the batch holds every item: none passed, none the client's
    // own (the usual case, whose batch the sessions share ready-made).
    let whole = true;
    for (const item of items) {
      // Already passed (an acknowledgement moved the cursor over the
      // client's own versions while this batch was read).
      if (item.version <= version) {
        whole = false;
        continue;
      }
      // The client has its own changesets; only the version moves past them.
      if (item.identity === identity) whole = false;
      counted += item.cumulativeBytes - bytes -
        this.#remaining.ownSize(item.version);
      version = item.version;
      bytes = item.cumulativeBytes;
      salt = item.salt;
    }
    // Every version read was passed meanwhile: nothing to send.
    if (version === from) return;
    let changesets;
    if (whole) changesets = shareItems(items);
    else {
      const kept = [];
      for (const item of items) {
        if (item.version > from && item.identity !== identity) {
          kept.push(item.changeset);
        }
      }
      changesets = shareBatch(kept);
    }
    // Sessions at the same cursor send the same batch: encoded once. Both
    // callers saw the session open in this turn.
    this.#emitDownload(version, bytes, salt, changesets, counted);
  }

  /** Stored bytes the next batch may hold (a larger changeset goes alone). */
  #batchBudget(): number {
    const batch = Math.min(
      this.#init.downloadBatchBytes,
      this.#init.transport.batchBytes(),
    );
    return batch - DOWNLOAD_HEADER_BYTES;
  }

  #compactedError(): SessionError {
    return new SessionError(
      "session_failed",
      `Cannot send history after version ${this.#cursor}: it was compacted`,
    );
  }

  /**
   * Sends the snapshot instead of the history up to its version, when it is
   * cheaper (or the history is gone). The snapshot is taken as stored; one
   * behind the head is advanced in the background for later bootstraps.
   */
  async #bootstrap(): Promise<void> {
    const hub = this.#init.hub;
    for (let attempt = 0; attempt < 3 && !this.#owner.closed; attempt++) {
      // The snapshot as stored: building one while the client waits costs
      // more than sending the history it would replace.
      const snapshot = await hub.storedSnapshot(this.#owner.workSignal);
      if (this.#owner.closed) return;
      const head = hub.head;
      if (snapshot.version === this.#cursor && !this.#historyAvailable) {
        // Only the entry at the cursor is gone; what follows it is there.
        this.#cursorBytes = snapshot.historyBytes;
        this.#remaining.setBase(snapshot.version, snapshot.historyBytes);
        this.#historyAvailable = true;
        return;
      }
      if (snapshot.version <= this.#cursor) {
        if (this.#historyAvailable) return;
        throw this.#compactedError();
      }
      const snapshotCost = snapshot.bytes +
        Math.max(0, head.bytes - snapshot.historyBytes);
      const historyCost = head.bytes - this.#cursorBytes;
      if (this.#historyAvailable && historyCost <= snapshotCost) return;
      if (await this.#sendSnapshot(snapshot)) return;
    }
    if (!this.#owner.closed) throw this.#compactedError();
  }

  /**
   * Streams the snapshot's records in batches of at most
   * `downloadBatchBytes`. Every DOWNLOAD keeps the client's cursor but the
   * last, which carries the snapshot's version.
   */
  async #sendSnapshot(snapshot: SnapshotInfo): Promise<boolean> {
    this.#inSnapshot = true;
    this.#snapshotRemaining = snapshot.bytes;
    this.#remaining.setBase(snapshot.version, snapshot.historyBytes);
    let budget = this.#batchBudget();
    let batch: Instruction[] = [];
    let batchBytes = 0;
    try {
      for await (
        const object of this.#init.hub.listSnapshot(this.#owner.workSignal)
      ) {
        if (this.#owner.closed) return false;
        if (batch.length > 0 && batchBytes + object.size > budget) {
          await this.#waitForDrain();
          if (this.#owner.closed) return false;
          // At least 1 until the last batch, as 0 says "caught up": records
          // written meanwhile can make the snapshot larger than its version
          // record says (then the count is no longer exact).
          this.#snapshotRemaining = Math.max(
            1,
            this.#snapshotRemaining - batchBytes,
          );
          this.#sendDownload(
            this.#cursor,
            this.#cursorBytes,
            this.#cursorSalt,
            [
              snapshotChangeset(snapshot.version, batch),
            ],
            batchBytes,
          );
          batch = [];
          batchBytes = 0;
          budget = this.#batchBudget();
        }
        for (const instruction of object.instructions) batch.push(instruction);
        batchBytes += object.size;
      }
    } finally {
      if (this.#owner.closed) this.#inSnapshot = false;
    }
    if (this.#owner.closed) return false;
    this.#snapshotRemaining = 0;
    this.#inSnapshot = false;
    this.#historyAvailable = true;
    this.#sendDownload(
      snapshot.version,
      snapshot.historyBytes,
      snapshot.salt ?? 0,
      batch.length === 0 ? [] : [snapshotChangeset(snapshot.version, batch)],
      batchBytes,
    );
    return true;
  }

  /**
   * Sends a DOWNLOAD moving the client's cursor to `version`.
   * `changesetBytes` is what it takes off "still to download" (see
   * `DownloadMessage.changesetBytes`): with no upload in between, the last
   * figure sent equals this message's `changesetBytes + downloadableBytes`.
   */
  #sendDownload(
    version: number,
    cursorBytes: number,
    salt: number,
    changesets: DownloadMessage["changesets"],
    changesetBytes: number,
  ): void {
    if (this.#owner.closed) return;
    this.#emitDownload(version, cursorBytes, salt, changesets, changesetBytes);
  }

  // #sendDownload for a session seen open in this turn.
  #emitDownload(
    version: number,
    cursorBytes: number,
    salt: number,
    changesets: DownloadMessage["changesets"],
    changesetBytes: number,
  ): void {
    this.#cursor = version;
    this.#cursorBytes = cursorBytes;
    this.#cursorSalt = salt;
    if (!this.#inSnapshot) this.#remaining.setBase(version, cursorBytes);
    this.#sentFirst = true;
    const downloadableBytes = this.#snapshotRemaining +
      this.#remaining.bytesTo(this.#init.hub.head);
    // Two literals rather than a spread: one DOWNLOAD per session per
    // commit in a fan-out, and copying properties in is the slow way.
    this.#init.transport.send(
      this.#init.protocolVersion >= 2
        ? {
          type: MessageType.Download,
          sessionId: this.#init.id,
          serverVersion: version,
          serverVersionSalt: salt,
          lastIntegratedClientVersion: this.#owner.lastAcknowledged,
          downloadableBytes,
          changesetBytes,
          changesets,
        }
        : {
          // Version 1 has no salts on the wire.
          type: MessageType.Download,
          sessionId: this.#init.id,
          serverVersion: version,
          lastIntegratedClientVersion: this.#owner.lastAcknowledged,
          downloadableBytes,
          changesetBytes,
          changesets,
        },
    );
    if (downloadableBytes === 0 && this.#init.onCaughtUp !== undefined) {
      const caughtUp = this.#init.onCaughtUp;
      this.#init.onCaughtUp = undefined;
      caughtUp();
    }
  }

  #answerMarks(): void {
    if (this.#marks === null || this.#inSnapshot) return;
    const remaining = [];
    for (const mark of this.#marks) {
      if (mark.target <= this.#cursor) {
        this.#init.transport.send({
          type: MessageType.MarkReply,
          sessionId: this.#init.id,
          requestId: mark.requestId,
        });
      } else {
        remaining.push(mark);
      }
    }
    this.#marks = remaining.length === 0 ? null : remaining;
  }

  #waitForDrain(): Promise<void> {
    return waitForDrain(
      this.#init,
      () => this.#owner.workSignal,
      () => this.#owner.closed,
    );
  }
}

/**
 * Bytes a DOWNLOAD needs beyond its changesets: the tag, five varuint fields
 * (`changesetBytes` the fifth), the version salt (at most 5 bytes), the
 * block's lengths and the count.
 */
export const DOWNLOAD_HEADER_BYTES = 61;
