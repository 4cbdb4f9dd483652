import type { UploadChangeset } from "../model/changeset.ts";
import {
  type ClientIdentity,
  MessageType,
  type ObjectKey,
  type UploadTooLargeMessage,
} from "../protocol/messages.ts";
import type { Permission } from "./permissions.ts";
import type { HubMember, RealmHub } from "./realm_hub.ts";
import { SessionError, uploadStorageError } from "./session_error.ts";
import type { IntegrateResult } from "./storage/history.ts";
import type { Refusal } from "./storage/rejections.ts";
import { ERROR_CODES } from "../protocol/error_codes.ts";
import { findInvalidUpload } from "./upload_validation.ts";
import type { SessionInit } from "./session_init.ts";
import { type DownloadOwner, DownloadPump } from "./download_pump.ts";
import {
  findRefusal,
  readOnlyMessage,
  readRevert,
  settleRefusal,
  tooLargeRefusal,
  tooLargeStandIn,
} from "./upload_refusal.ts";
import { SettledElsewhere } from "./settled_elsewhere.ts";

/**
 * One bound session on the server, from a completed BIND to its end
 * (docs/ARCHITECTURE.md "Session flow on one connection").
 *
 * Its download pump (download_pump.ts) sends the realm's history after the
 * client's cursor in bounded batches, then live changesets as the hub learns
 * of them; uploads are queued in the hub's group commit and acknowledged as
 * soon as the commit holding them is durable; a MARK is answered once
 * everything held at MARK time was sent.
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

/** See the file comment. */
export class Session implements HubMember, DownloadOwner {
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
  #download: DownloadPump;
  #lastAck: number;
  /** See `SessionInit.settledClientVersion`. */
  #settled: number;
  // The highest client version handed to the hub, and a promise settled
  // once every upload handed so far is (null when none is in flight: an
  // idle session keeps no promise).
  #submitted = 0;
  #committing: Promise<void> | null = null;
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
    this.#download = new DownloadPump(init, this);
    this.#lastAck = init.lastIntegratedClientVersion;
    this.#settled = init.settledClientVersion ??
      init.lastIntegratedClientVersion;
  }

  /**
   * Where the session's download stands, for the status page: sending a
   * snapshot, sending history behind the head, or caught up.
   */
  get phase(): "bootstrapping" | "catching_up" | "live" {
    return this.#download.phase;
  }

  /** Whether the session has ended (or the server is shutting down). */
  get closed(): boolean {
    return this.#ended || this.#init.lifetime.aborted;
  }

  /** Starts sending history; call once, after IDENT (if any) was sent. */
  start(): void {
    this.#init.hub.attach(this);
    this.#download.start();
  }

  /** Tells the pump the realm may have moved on. */
  wake(): void {
    this.#download.wake();
  }

  /** The client version every DOWNLOAD acknowledges. */
  get lastAcknowledged(): number {
    return this.#lastAck;
  }

  /** Ends the session with a session-scoped ERROR, through its connection. */
  fail(error: SessionError): void {
    this.#init.transport.failSession(this, error);
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

  /**
   * The signal for storage reads and waits, made on first use (aborted at
   * once if the session has ended); held with {@linkcode holdWork} while
   * one may run.
   */
  get workSignal(): AbortSignal {
    if (this.#controller === null) {
      this.#controller = new AbortController();
      if (this.#ended) this.#controller.abort();
      else if (this.closed) this.#controller.abort(this.#init.lifetime.reason);
    }
    return this.#controller.signal;
  }

  /** Keeps {@linkcode workSignal} while a storage read or wait may use it. */
  holdWork(): void {
    this.#holds++;
  }

  /** Ends one {@linkcode holdWork}. */
  releaseWork(): void {
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
        this.#storage(() => this.hub.currentRecords(keys, this.workSignal)),
      () => this.#download.cursor,
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
    this.#download.acknowledge(result.integrated, more);
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
    this.#download.sendAtCursor();
  }

  #readRejection(changeset: UploadChangeset): Promise<Refusal | null> {
    return this.#storage(() =>
      this.hub.readRejection(
        this.identity,
        changeset.clientVersion,
        this.workSignal,
      )
    );
  }

  /** Runs a storage step, turning its failures into session errors. */
  async #storage<T>(step: () => Promise<T>): Promise<T> {
    this.holdWork();
    try {
      return await step();
    } catch (error) {
      throw uploadStorageError(error, this.#init.protocolVersion);
    } finally {
      this.releaseWork();
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
    this.#download.mark(requestId, head.version);
  }

  /** Ends the session and waits for its pump to stop. */
  async close(): Promise<void> {
    this.#ended = true;
    this.#controller?.abort();
    this.#init.hub.detach(this);
    await this.#download.stopped;
  }

  /** Resolves once the pump has stopped (after {@linkcode close}). */
  get stopped(): Promise<void> {
    return this.#download.stopped;
  }
}
