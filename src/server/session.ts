import type { Instruction, UploadChangeset } from "../model/changeset.ts";
import {
  type ClientIdentity,
  type DownloadMessage,
  MessageType,
  type ObjectKey,
  type UploadTooLargeMessage,
} from "../protocol/messages.ts";
import type { Permission } from "./permissions.ts";
import { waitForDrain } from "./socket_drain.ts";
import type { HubMember, RealmHub } from "./realm_hub.ts";
import { SessionError, uploadStorageError } from "./session_error.ts";
import type { HistoryItem, IntegrateResult } from "./storage/history.ts";
import { snapshotChangeset, type SnapshotInfo } from "./storage/snapshot.ts";
import type { Refusal } from "./storage/rejections.ts";
import { ERROR_CODES } from "../protocol/error_codes.ts";
import { findInvalidUpload } from "./upload_validation.ts";
import { shareBatch } from "./shared_download.ts";
import type { SessionInit } from "./session_init.ts";
import {
  findRefusal,
  readOnlyMessage,
  readRevert,
  settleRefusal,
  tooLargeRefusal,
  tooLargeStandIn,
} from "./upload_refusal.ts";
import { SettledElsewhere } from "./settled_elsewhere.ts";
import { HistoryRemaining } from "./history_remaining.ts";

/**
 * One bound session on the server, from a completed BIND to its end
 * (docs/ARCHITECTURE.md "Session flow on one connection").
 *
 * A download pump sends the realm's history after the client's cursor in
 * bounded batches, then live changesets as the hub learns of them; uploads
 * are queued in the hub's group commit and acknowledged as soon as the
 * commit holding them is durable; a MARK is answered once everything held at
 * MARK time was sent.
 */

/** An upload handed to the hub; see `Session.upload`. */
export interface UploadTicket {
  /**
   * Resolves once the upload was acknowledged (or refused); rejects with a
   * `SessionError` when it failed.
   */
  settled: Promise<void>;
}

const SETTLED: UploadTicket = { settled: Promise.resolve() };

// #pump before `start`: a wake then only notes itself.
const NOT_STARTED: Promise<void> = Promise.resolve();

/** See the file comment. */
export class Session implements HubMember {
  /** The client's session id. */
  readonly id: number;
  /** The resolved realm path. */
  readonly path: string;
  /** The client identity the session uploads as. */
  readonly identity: ClientIdentity;
  /** What the user may do with the realm. */
  readonly permission: Permission;
  /** The realm's hub, which this session holds a reference to. */
  readonly hub: RealmHub;
  #init: SessionInit;
  // Aborts the session's storage reads and waits. Made when one needs it and
  // dropped once none runs (#holds), so an idle session holds no signal;
  // the connection aborts it at the server's shutdown (abortWork).
  #controller: AbortController | null = null;
  #holds = 0;
  #ended = false;
  #cursor: number;
  #cursorBytes: number;
  // The salt of #cursor, sent with every DOWNLOAD (PROTOCOL.md §4.11).
  #cursorSalt: number;
  #lastAck: number;
  // MARKs not answered yet (null: none, the usual case).
  #marks: { requestId: number; target: number }[] | null = null;
  /** See `SessionInit.settledClientVersion`. */
  #settled: number;
  #wakePending = false;
  // The pump's run; null while it is parked with nothing to send, so an
  // idle session keeps no suspended async frame (`wake` starts a new run).
  #pump: Promise<void> | null = NOT_STARTED;
  #sentFirst = false;
  // True while the snapshot is being sent: acks keep the client's cursor,
  // and MARK waits for the phase to end.
  #inSnapshot = false;
  // Stored bytes of snapshot records not yet sent (0 outside the phase).
  #snapshotRemaining = 0;
  // What "still to download" counts of the history.
  #remaining: HistoryRemaining;
  #historyAvailable: boolean;
  // The highest client version handed to the hub, and a promise settled
  // once every upload handed so far is (null when none is in flight: an
  // idle session keeps no promise).
  #submitted = 0;
  #committing: Promise<void> | null = null;
  // Where the acknowledgement being gathered moves the cursor to.
  #ackCursor: { version: number; bytes: number; salt: number } | null = null;
  // Fresh uploads a commit found settled by another session of this
  // identity, not yet resolved (null: none, the usual case).
  #elsewhere: SettledElsewhere | null = null;

  /** @param init The session's parameters; see {@linkcode SessionInit}. */
  constructor(init: SessionInit) {
    this.id = init.id;
    this.path = init.path;
    this.identity = init.identity;
    this.permission = init.permission;
    this.hub = init.hub;
    this.#init = init;
    this.#cursor = init.downloadCursor;
    this.#cursorSalt = init.cursorSalt;
    this.#historyAvailable = init.cursorBytes !== null;
    this.#cursorBytes = init.cursorBytes ?? 0;
    this.#remaining = new HistoryRemaining(this.#cursor, this.#cursorBytes);
    this.#lastAck = init.lastIntegratedClientVersion;
    this.#settled = init.settledClientVersion ??
      init.lastIntegratedClientVersion;
  }

  /**
   * Where the session's download stands, for the status page: sending a
   * snapshot, sending history behind the head, or caught up.
   */
  get phase(): "bootstrapping" | "catching_up" | "live" {
    if (this.#inSnapshot) return "bootstrapping";
    return this.#cursor < this.#init.hub.head.version ? "catching_up" : "live";
  }

  /** Whether the session has ended (or the server is shutting down). */
  get closed(): boolean {
    return this.#ended || this.#init.lifetime.aborted;
  }

  /** Starts sending history; call once, after IDENT (if any) was sent. */
  start(): void {
    this.#init.hub.attach(this);
    // #run awaits before it ends, so the run clears #pump after this.
    this.#pump = this.#run(true);
  }

  /** Tells the pump the realm may have moved on. */
  wake(): void {
    this.#wakePending = true;
    if (this.#pump !== null || this.closed) return;
    // Caught up to what memory holds: send it in this turn rather than
    // after the pump's turns; the pump runs only if more is left.
    if (this.#sendCached() && this.#cursor >= this.#init.hub.head.version) {
      this.#wakePending = false;
      this.#answerMarks();
      return;
    }
    this.#pump = this.#run(false);
  }

  // Sends the next batch now if the pump would send it from memory at once
  // (past the first DOWNLOAD, history available, socket below its high
  // water mark); false when it did not.
  #sendCached(): boolean {
    if (
      !this.#sentFirst || !this.#historyAvailable || this.#inSnapshot ||
      this.#cursor >= this.#init.hub.head.version ||
      this.#init.transport.bufferedAmount() > this.#init.highWaterBytes
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
   * Aborts the storage reads and waits in flight: the server's lifetime has
   * ended (so {@linkcode closed} is already true). The connection calls
   * this for its sessions, instead of each session holding a signal linked
   * to the lifetime.
   */
  abortWork(): void {
    this.#controller?.abort(this.#init.lifetime.reason);
  }

  // The signal for storage reads and waits, made on first use (aborted at
  // once if the session has ended); see #controller.
  get #signal(): AbortSignal {
    if (this.#controller === null) {
      this.#controller = new AbortController();
      if (this.#ended) this.#controller.abort();
      else if (this.closed) this.#controller.abort(this.#init.lifetime.reason);
    }
    return this.#controller.signal;
  }

  #hold(): void {
    this.#holds++;
  }

  #unhold(): void {
    this.#holds--;
    // Nothing can abort a dropped signal, so only one nobody uses goes.
    if (this.#holds === 0 && !this.closed) this.#controller = null;
  }

  /**
   * Hands uploaded changesets to the realm's hub and returns once they are
   * queued there, in order: the connection may read the session's next
   * message while they commit (the hub commits what is queued together,
   * docs/ARCHITECTURE.md "Write flow on the server"). `settled` resolves
   * once the acknowledging DOWNLOAD (or REJECT) was handed to the socket,
   * after the commit that holds them is durable.
   *
   * With protocol version 2 a changeset the server will not take on its own
   * merits (a read-only realm, the validation hook) is refused alone with a
   * REJECT and the session goes on (PROTOCOL.md §4.16); with version 1 the
   * refusal ends the session, as it always did.
   *
   * @param tooLarge Set when `changesets` is the one empty stand-in of a
   *   changeset the client could not send ({@linkcode uploadTooLarge}).
   * @throws {SessionError} `bad_changeset`, `client_reset_required` (or
   *   `bad_client_identity` for version 1), `session_failed`, and with
   *   version 1 `write_not_allowed`; `settled` rejects with the same.
   */
  async upload(
    changesets: readonly UploadChangeset[],
    tooLarge?: UploadTooLargeMessage,
  ): Promise<UploadTicket> {
    const rejects = this.#init.protocolVersion >= 2;
    if (!rejects && this.permission !== "readwrite") {
      throw new SessionError("write_not_allowed", readOnlyMessage(this.path));
    }
    const invalid = findInvalidUpload(changesets, this.path);
    if (invalid !== null) {
      throw new SessionError("bad_changeset", `Cannot upload: ${invalid}`);
    }
    // A validation hook may read the realm: it sees this session's earlier
    // uploads stored, as it did when each upload waited for its commit.
    if (this.#init.validateChangeset !== undefined) {
      await this.#committing;
      if (this.closed) return SETTLED;
    }
    let run: UploadChangeset[] = [];
    // The changesets of `run` not known to be settled (see #acknowledge).
    const fresh = new Set<UploadChangeset>();
    for (const changeset of changesets) {
      if (this.closed) return SETTLED;
      if (
        changeset.clientVersion > this.#lastAck &&
        changeset.clientVersion <= this.#submitted
      ) {
        // Sent again on this binding while its first copy commits: decide
        // on it once that is settled, like any re-upload.
        await this.#integrate(run, fresh).settled;
        run = [];
        await this.#committing;
        if (this.closed) return SETTLED;
      }
      if (
        changeset.clientVersion <= this.#lastAck ||
        changeset.clientVersion <= this.#settled
      ) {
        // Settled before: a re-upload. One refused before is refused
        // again (its REJECT may have been lost with a connection).
        const refusal = rejects ? await this.#readRejection(changeset) : null;
        if (refusal === null) {
          run.push(changeset);
          continue;
        }
        await this.#integrate(run, fresh).settled;
        run = [];
        await this.#sendReject(changeset, refusal, tooLarge?.objects);
        continue;
      }
      const refusal = tooLarge === undefined
        ? await findRefusal(this.#init, changeset)
        : tooLargeRefusal(this.#init, tooLarge);
      if (refusal === null) {
        run.push(changeset);
        fresh.add(changeset);
        continue;
      }
      if (!rejects) {
        throw new SessionError(
          "write_not_allowed",
          `Cannot upload: ${refusal.message}`,
        );
      }
      await this.#integrate(run, fresh).settled;
      run = [];
      const recorded = await settleRefusal(this.#init, changeset, refusal, {
        reject: () =>
          this.#storage(() =>
            this.hub.reject(
              this.identity,
              changeset.clientVersion,
              refusal,
              this.#init.commitSignal,
            )
          ),
        read: () => this.#readRejection(changeset),
      });
      // Settled meanwhile by an integration (another connection of this
      // identity won): acknowledge it like any re-upload.
      if (recorded === null) run.push(changeset);
      else await this.#sendReject(changeset, recorded, tooLarge?.objects);
    }
    return this.#integrate(run, fresh);
  }

  /**
   * Refuses a changeset the client could not send under the server's frame
   * limit (UPLOAD_TOO_LARGE, protocol version 3, PROTOCOL.md §4.17), in order
   * with the session's uploads: settled like any refusal, with REJECT
   * `message_too_large` (or `write_not_allowed` on a read-only realm) and
   * the server's state of the objects it names; a version settled before is
   * answered as it was then.
   *
   * What goes through {@linkcode upload} in its place has no instructions
   * (`tooLargeStandIn`), so no path there can store anything of it.
   *
   * @throws {SessionError} `bad_changeset` for objects no upload could
   *   name (see `findInvalidUpload`), else as {@linkcode upload}.
   */
  uploadTooLarge(message: UploadTooLargeMessage): Promise<UploadTicket> {
    return this.upload([tooLargeStandIn(message, this.path)], message);
  }

  /**
   * Resolves once every upload this session handed to the hub is settled
   * (never rejects): the realm must stay held until then.
   */
  get committing(): Promise<void> {
    return this.#committing ?? Promise.resolve();
  }

  /**
   * Sends REJECT for `changeset` with the server's current state of every
   * object it touched (or of `objects`, for a changeset too large to
   * upload), and acknowledges its client version.
   */
  async #sendReject(
    changeset: UploadChangeset,
    refusal: Refusal,
    objects?: readonly ObjectKey[],
  ): Promise<void> {
    const revert = await readRevert(
      changeset,
      (keys) =>
        this.#storage(() => this.hub.currentRecords(keys, this.#signal)),
      () => this.#cursor,
      () => this.closed,
      objects,
    );
    if (revert === null) return;
    if (changeset.clientVersion > this.#lastAck) {
      this.#lastAck = changeset.clientVersion;
    }
    this.#init.transport.send({
      type: MessageType.Reject,
      sessionId: this.id,
      clientVersion: changeset.clientVersion,
      code: ERROR_CODES[refusal.code].code,
      message: refusal.message,
      revert: [revert],
    });
  }

  /**
   * Queues `changesets` in the hub. The acknowledgement goes out from the
   * hub's commit: one DOWNLOAD for this session's uploads settled together.
   */
  #integrate(
    changesets: readonly UploadChangeset[],
    freshSet: ReadonlySet<UploadChangeset>,
  ): UploadTicket {
    if (changesets.length === 0 || this.closed) return SETTLED;
    const fresh = changesets.filter((changeset) => freshSet.has(changeset));
    this.#submitted = Math.max(
      this.#submitted,
      changesets[changesets.length - 1]!.clientVersion,
    );
    let lastUploaded = 0;
    for (const { clientVersion } of changesets) {
      if (clientVersion > lastUploaded) lastUploaded = clientVersion;
    }
    // The hub settles in order, so the newest upload settles last.
    const previous = this.#committing;
    const settled = this.#storage(() =>
      this.#init.hub.integrate(
        this.identity,
        changesets,
        this.#init.commitSignal,
        (result, more) => this.#acknowledge(result, more, lastUploaded, fresh),
        this,
      )
    ).then(async () => {
      if (this.#elsewhere === null) return;
      // After the earlier uploads have settled (their resolution included):
      // one loop at a time, so each REJECT goes out once and in order.
      await previous;
      await this.#resolveElsewhere();
    });
    const all: Promise<void> = settled.then(() => previous, () => previous)
      .then(() => {
        if (this.#committing === all) this.#committing = null;
      });
    this.#committing = all;
    return { settled };
  }

  #acknowledge(
    result: IntegrateResult,
    more: boolean,
    lastUploaded: number,
    fresh: readonly UploadChangeset[],
  ): void {
    if (this.closed) return;
    // Acknowledge no further than this upload: the identity's record may
    // also count versions another session of it settled — among them a
    // refusal whose REJECT this session must send first, when the client
    // uploads it here again.
    let acknowledged = Math.min(
      result.lastIntegratedClientVersion,
      lastUploaded,
    );
    // Nor past a fresh one the commit found settled (every stored one is
    // fresh), until #resolveElsewhere read whether it was refused.
    if (this.#elsewhere !== null || fresh.length > result.integrated.length) {
      acknowledged = (this.#elsewhere ??= new SettledElsewhere())
        .note(fresh, result.integrated, acknowledged);
    }
    if (acknowledged > this.#lastAck) this.#lastAck = acknowledged;
    for (const item of result.integrated) {
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
      for (const item of result.integrated) {
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
   * Resolves the changesets #acknowledged held back (settled_elsewhere.ts):
   * REJECT for each one refused, then a DOWNLOAD acknowledging past them.
   */
  async #resolveElsewhere(): Promise<void> {
    const elsewhere = this.#elsewhere;
    let allowed = 0;
    for (let next; (next = elsewhere?.next) !== undefined;) {
      const refusal = await this.#readRejection(next);
      if (refusal !== null && this.#init.protocolVersion < 2) {
        throw new SessionError(
          "write_not_allowed",
          `Cannot upload: ${refusal.message}`,
        );
      }
      if (refusal !== null) await this.#sendReject(next, refusal);
      if (this.closed) return;
      allowed = elsewhere!.resolved();
    }
    this.#elsewhere = null;
    if (allowed <= this.#lastAck) return;
    this.#lastAck = allowed;
    this.#sendAtCursor();
  }

  #readRejection(changeset: UploadChangeset): Promise<Refusal | null> {
    return this.#storage(() =>
      this.hub.readRejection(
        this.identity,
        changeset.clientVersion,
        this.#signal,
      )
    );
  }

  /** Runs a storage step, turning its failures into session errors. */
  async #storage<T>(step: () => Promise<T>): Promise<T> {
    this.#hold();
    try {
      return await step();
    } catch (error) {
      throw uploadStorageError(error, this.#init.protocolVersion);
    } finally {
      this.#unhold();
    }
  }

  /**
   * Registers a MARK: answered once everything the realm held now has been
   * sent to this session.
   */
  async mark(requestId: number): Promise<void> {
    // The UPLOADs before it are settled first, so MARK_REPLY still comes
    // after their acknowledgements, as when each waited for its commit.
    await this.#committing;
    if (this.closed) return;
    let head;
    try {
      head = await this.#init.hub.refreshHead();
    } catch (error) {
      throw new SessionError("session_failed", "Cannot read the realm head", {
        cause: error,
      });
    }
    (this.#marks ??= []).push({ requestId, target: head.version });
    this.wake();
  }

  /** Ends the session and waits for its pump to stop. */
  async close(): Promise<void> {
    this.#ended = true;
    this.#controller?.abort();
    this.#init.hub.detach(this);
    await this.#pump;
  }

  /** Resolves once the pump has stopped (after {@linkcode close}). */
  get stopped(): Promise<void> {
    return this.#pump ?? NOT_STARTED;
  }

  /**
   * One run of the pump: sends what there is, then ends (parks) once
   * nothing is left and no wake came meanwhile. `first`: the run `start`
   * begins, which bootstraps when it must.
   */
  async #run(first: boolean): Promise<void> {
    this.#hold();
    try {
      const hub = this.#init.hub;
      if (
        first && (!this.#historyAvailable ||
          (hub.snapshotsEnabled && this.#cursor === 0))
      ) {
        await this.#bootstrap();
      }
      while (!this.closed) {
        // A wake from here on is seen by this pass, or makes another one.
        this.#wakePending = false;
        await this.#waitForDrain();
        if (this.closed) return;
        const head = this.#init.hub.head;
        if (this.#cursor < head.version) {
          await this.#sendHistory();
          continue;
        }
        if (!this.#sentFirst) this.#sendAtCursor();
        this.#answerMarks();
        if (!this.#wakePending) return;
      }
    } catch (error) {
      if (this.closed) return;
      this.#init.transport.failSession(
        this,
        error instanceof SessionError ? error : new SessionError(
          "session_failed",
          "Cannot send the realm's history: storage failed",
          { cause: error },
        ),
      );
    } finally {
      this.#pump = null;
      this.#unhold();
    }
  }

  async #sendHistory(): Promise<void> {
    const read = await this.#init.hub.read(
      this.#cursor + 1,
      this.#batchBudget(),
      this.#signal,
    );
    if (this.closed) return;
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
    const changesets = [];
    let version = this.#cursor;
    let bytes = this.#cursorBytes;
    let salt = this.#cursorSalt;
    // What "still to download" counted of these versions: their stored
    // sizes, but for this session's own uploads, which it never counted.
    let counted = 0;
    for (const item of items) {
      // Already passed (an acknowledgement moved the cursor over the
      // client's own versions while this batch was read).
      if (item.version <= version) continue;
      // The client has its own changesets; only the version moves past them.
      if (item.identity !== this.identity.id) {
        changesets.push(item.changeset);
      }
      counted += item.cumulativeBytes - bytes -
        this.#remaining.ownSize(item.version);
      version = item.version;
      bytes = item.cumulativeBytes;
      salt = item.salt;
    }
    // Every version read was passed meanwhile: nothing to send.
    if (version === this.#cursor) return;
    // Sessions at the same cursor send the same batch: encoded once.
    this.#sendDownload(version, bytes, salt, shareBatch(changesets), counted);
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
    for (let attempt = 0; attempt < 3 && !this.closed; attempt++) {
      // The snapshot as stored: building one while the client waits costs
      // more than sending the history it would replace.
      const snapshot = await hub.storedSnapshot(this.#signal);
      if (this.closed) return;
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
    if (!this.closed) throw this.#compactedError();
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
      for await (const object of this.#init.hub.listSnapshot(this.#signal)) {
        if (this.closed) return false;
        if (batch.length > 0 && batchBytes + object.size > budget) {
          await this.#waitForDrain();
          if (this.closed) return false;
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
      if (this.closed) this.#inSnapshot = false;
    }
    if (this.closed) return false;
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
    if (this.closed) return;
    this.#cursor = version;
    this.#cursorBytes = cursorBytes;
    this.#cursorSalt = salt;
    if (!this.#inSnapshot) this.#remaining.setBase(version, cursorBytes);
    this.#sentFirst = true;
    const downloadableBytes = this.#snapshotRemaining +
      this.#remaining.bytesTo(this.#init.hub.head);
    this.#init.transport.send({
      type: MessageType.Download,
      sessionId: this.id,
      serverVersion: version,
      // Version 1 has no salts on the wire.
      ...(this.#init.protocolVersion >= 2 ? { serverVersionSalt: salt } : {}),
      lastIntegratedClientVersion: this.#lastAck,
      downloadableBytes,
      changesetBytes,
      changesets,
    });
    if (downloadableBytes === 0 && this.#init.onCaughtUp !== undefined) {
      const caughtUp = this.#init.onCaughtUp;
      this.#init.onCaughtUp = undefined;
      caughtUp();
    }
  }

  // An empty DOWNLOAD that keeps the cursor: the first, or an acknowledgement.
  #sendAtCursor(): void {
    this.#sendDownload(
      this.#cursor,
      this.#cursorBytes,
      this.#cursorSalt,
      [],
      0,
    );
  }

  #answerMarks(): void {
    if (this.#marks === null || this.#inSnapshot) return;
    const remaining = [];
    for (const mark of this.#marks) {
      if (mark.target <= this.#cursor) {
        this.#init.transport.send({
          type: MessageType.MarkReply,
          sessionId: this.id,
          requestId: mark.requestId,
        });
      } else {
        remaining.push(mark);
      }
    }
    this.#marks = remaining.length === 0 ? null : remaining;
  }

  #waitForDrain(): Promise<void> {
    return waitForDrain(this.#init, () => this.#signal, () => this.closed);
  }
}

/**
 * Bytes a DOWNLOAD needs beyond its changesets: the tag, five varuint fields
 * (`changesetBytes` the fifth), the version salt (at most 5 bytes), the
 * block's lengths and the count.
 */
export const DOWNLOAD_HEADER_BYTES = 61;
