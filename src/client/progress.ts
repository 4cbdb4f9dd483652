// This module is browser compatible.

import { trimConsumed } from "../util/consumed_prefix.ts";

/**
 * Which way bytes flow: `"upload"` (local writes to the server) or
 * `"download"` (the server's changesets to this client).
 *
 * @example The named values
 * ```ts
 * import { ProgressDirection } from "@tether/sync";
 *
 * console.log(ProgressDirection.Upload, ProgressDirection.Download);
 * ```
 */
export const ProgressDirection = {
  Upload: "upload",
  Download: "download",
} as const;

/**
 * One of {@linkcode ProgressDirection}'s values.
 *
 * @example A value of the union
 * ```ts
 * import type { ProgressDirection } from "@tether/sync";
 *
 * const direction: ProgressDirection = "download";
 * console.log(direction);
 * ```
 */
export type ProgressDirection =
  typeof ProgressDirection[keyof typeof ProgressDirection];

/**
 * How long a progress registration lasts.
 *
 * - `reportIndefinitely`: until cancelled; cumulative byte figures since the
 *   session started, and an estimate for the current batch of work.
 * - `forCurrentlyOutstandingWork`: captures the work outstanding at
 *   registration, reports relative to it, delivers exactly one complete event
 *   and ends.
 *
 * @example The named values
 * ```ts
 * import { ProgressMode } from "@tether/sync";
 *
 * console.log(ProgressMode.ForCurrentlyOutstandingWork);
 * ```
 */
export const ProgressMode = {
  ReportIndefinitely: "reportIndefinitely",
  ForCurrentlyOutstandingWork: "forCurrentlyOutstandingWork",
} as const;

/**
 * One of {@linkcode ProgressMode}'s values.
 *
 * @example A value of the union
 * ```ts
 * import type { ProgressMode } from "@tether/sync";
 *
 * const mode: ProgressMode = "reportIndefinitely";
 * console.log(mode);
 * ```
 */
export type ProgressMode = typeof ProgressMode[keyof typeof ProgressMode];

/**
 * One progress report.
 *
 * @example Reading a report
 * ```ts
 * import type { Progress } from "@tether/sync";
 * import assert from "node:assert/strict";
 *
 * const p: Progress = {
 *   transferredBytes: 750,
 *   transferableBytes: 1000,
 *   progressEstimate: 0.75,
 *   isTransferComplete: false,
 * };
 * assert.equal(p.transferredBytes / p.transferableBytes, p.progressEstimate);
 * ```
 */
export interface Progress {
  /** Bytes transferred (uploads: acknowledged by the server). */
  transferredBytes: number;
  /** Bytes transferred plus bytes still to transfer. */
  transferableBytes: number;
  /** In [0, 1]; exactly 1 when nothing is outstanding. */
  progressEstimate: number;
  /** Whether nothing is outstanding. */
  isTransferComplete: boolean;
}

/** Where a registration's reports go. */
export interface ProgressSink {
  /** A new report (only when its figures changed). */
  next(progress: Progress): void;
  /** The registration ended after its final report. */
  complete(): void;
  /** The session failed; no more reports. */
  error(reason: unknown): void;
}

/** A registration with a {@linkcode ProgressTracker}. */
export interface ProgressRegistration {
  /** The direction it watches. */
  readonly direction: ProgressDirection;
  /** How long it lasts. */
  readonly mode: ProgressMode;
  /** Whether it still receives reports. */
  readonly isActive: boolean;
  /** Ends it without a further report; a second call is ignored. */
  cancel(): void;
}

interface PendingUpload {
  clientVersion: number;
  bytes: number;
}

class Registration implements ProgressRegistration {
  readonly direction: ProgressDirection;
  readonly mode: ProgressMode;
  readonly sequence: number;
  readonly sink: ProgressSink;
  isActive = true;
  /** Outstanding work: bytes captured, or undefined until the capture. */
  captured: number | undefined;
  /** Cumulative transferred bytes at the capture. */
  base = 0;
  /** Uploads: the last client version the capture covers. */
  targetVersion = 0;
  /**
   * Downloads: the captured work has certainly arrived (the server said it
   * had nothing more, or a MARK sent after the registration was answered).
   * Counted bytes alone never complete a download registration: the
   * captured figure is what the server knew at that moment, and work it
   * learns of later may be older than the registration.
   */
  caughtUp = false;
  lastTransferred = -1;
  lastTransferable = -1;
  lastEstimate = -1;
  #tracker: ProgressTracker;

  constructor(
    tracker: ProgressTracker,
    direction: ProgressDirection,
    mode: ProgressMode,
    sequence: number,
    sink: ProgressSink,
  ) {
    this.#tracker = tracker;
    this.direction = direction;
    this.mode = mode;
    this.sequence = sequence;
    this.sink = sink;
  }

  cancel(): void {
    if (!this.isActive) return;
    this.isActive = false;
    this.#tracker.unregister(this);
  }
}

function report(transferred: number, transferable: number): Progress {
  const complete = transferred >= transferable;
  return {
    transferredBytes: transferred,
    transferableBytes: transferable,
    progressEstimate: complete
      ? 1
      : Math.min(1, Math.max(0, transferred / transferable)),
    isTransferComplete: complete,
  };
}

/**
 * The progress bookkeeping of one session, as a pure state machine: it is
 * told what happened (a local commit, an acknowledgement, a DOWNLOAD, a
 * caught-up MARK) and computes what every registration should report. It
 * never schedules anything; the session decides when to `publish()`.
 *
 * Figures (docs/CLIENT.md "Progress semantics"):
 * - upload transferred = bytes of local changesets the server acknowledged
 *   since the session started; transferable = that + bytes not yet
 *   acknowledged;
 * - download transferred = the sum of the DOWNLOADs' `changesetBytes`
 *   (what each took off the server's count); transferable = that + the
 *   server's last `downloadableBytes`.
 *
 * Both download figures are in the server's unit (stored changeset sizes),
 * so while nothing new is uploaded, transferable stays put and transferred
 * climbs to it DOWNLOAD by DOWNLOAD. When the server's count drops without
 * bytes arriving (a compacted history replaced by a smaller snapshot), the
 * cumulative transferable holds instead of falling, and transferred catches
 * up with it once the server says it has nothing more. A
 * `forCurrentlyOutstandingWork` download completes only once its work is
 * known to be here — a DOWNLOAD saying nothing more is to come, or the
 * answer to a MARK sent after the registration ({@linkcode caughtUp}) —
 * not merely because the bytes counted reached the captured figure: that
 * figure is what the server knew at the time.
 */
export class ProgressTracker {
  #uploadAcknowledged = 0;
  // Pending uploads in commit order; those before #uploadPendingHead are
  // acknowledged (an index instead of `shift()`, which is linear per call
  // and made acknowledging a long queue quadratic).
  #uploadPending: PendingUpload[] = [];
  #uploadPendingHead = 0;
  #uploadPendingBytes = 0;
  #uploadBatchStart = 0;
  #lastCommittedVersion = 0;
  #lastAcknowledgedVersion = 0;

  #downloadKnown = false;
  #downloaded = 0;
  /** Cumulative transferable download bytes; never decreases. */
  #downloadTotal = 0;
  #downloadBatchStart = 0;

  #registrations = new Set<Registration>();
  #sequence = 0;

  /** Bytes of local changesets not yet acknowledged. */
  get pendingUploadBytes(): number {
    return this.#uploadPendingBytes;
  }

  /** Number of local changesets not yet acknowledged. */
  get pendingUploadChangesets(): number {
    return this.#uploadPending.length - this.#uploadPendingHead;
  }

  /** The last client version committed locally. */
  get lastCommittedVersion(): number {
    return this.#lastCommittedVersion;
  }

  /** The last client version the server acknowledged. */
  get lastAcknowledgedVersion(): number {
    return this.#lastAcknowledgedVersion;
  }

  /** Whether the server has reported any download figure yet. */
  get isDownloadKnown(): boolean {
    return this.#downloadKnown;
  }

  /**
   * A number that grows with every registration; a caught-up MARK completes
   * the download registrations made before it was sent (pass the value read
   * when sending it to {@linkcode caughtUp}).
   */
  get sequence(): number {
    return this.#sequence;
  }

  /** Number of active registrations. */
  get registrationCount(): number {
    return this.#registrations.size;
  }

  /**
   * Sets where acknowledgements start (changesets acknowledged before this
   * session existed are not counted) — call once, before anything else.
   */
  restore(lastAcknowledgedVersion: number): void {
    this.#lastAcknowledgedVersion = lastAcknowledgedVersion;
    this.#lastCommittedVersion = Math.max(
      this.#lastCommittedVersion,
      lastAcknowledgedVersion,
    );
  }

  /** A local changeset was committed and awaits upload. */
  localCommitted(clientVersion: number, bytes: number): void {
    if (clientVersion <= this.#lastAcknowledgedVersion) return;
    if (this.#uploadPendingBytes === 0) {
      this.#uploadBatchStart = this.#uploadAcknowledged;
    }
    this.#uploadPending.push({ clientVersion, bytes });
    this.#uploadPendingBytes += bytes;
    this.#lastCommittedVersion = Math.max(
      this.#lastCommittedVersion,
      clientVersion,
    );
  }

  /** The server acknowledged every local changeset up to `clientVersion`. */
  acknowledged(clientVersion: number): void {
    if (clientVersion <= this.#lastAcknowledgedVersion) return;
    this.#lastAcknowledgedVersion = clientVersion;
    const pending = this.#uploadPending;
    let head = this.#uploadPendingHead;
    while (
      head < pending.length && pending[head]!.clientVersion <= clientVersion
    ) {
      const { bytes } = pending[head]!;
      head++;
      this.#uploadPendingBytes -= bytes;
      this.#uploadAcknowledged += bytes;
    }
    this.#uploadPendingHead = trimConsumed(pending, head);
    if (this.#uploadPendingBytes === 0) {
      this.#uploadBatchStart = this.#uploadAcknowledged;
    }
  }

  /**
   * A DOWNLOAD arrived: it took `changesetBytes` off the server's count (0
   * for one that only acknowledges), which now stands at
   * `downloadableBytes`.
   */
  downloaded(changesetBytes: number, downloadableBytes: number): void {
    const before = this.#downloaded;
    this.#downloaded += changesetBytes;
    this.#downloadKnown = true;
    this.#downloadTotal = Math.max(
      this.#downloadTotal,
      this.#downloaded + downloadableBytes,
    );
    for (const registration of this.#registrations) {
      if (
        registration.direction === "download" &&
        registration.mode === "forCurrentlyOutstandingWork" &&
        registration.captured === undefined
      ) {
        // Registered before any figure: the outstanding work is this
        // DOWNLOAD's and what is still to come.
        registration.base = before;
        registration.captured = this.#downloadTotal - before;
      }
    }
    if (downloadableBytes === 0) {
      // The server says this session has caught up: whatever was announced
      // has arrived, even if its count dropped on the way.
      this.#downloaded = this.#downloadTotal;
      this.#downloadBatchStart = this.#downloaded;
      for (const registration of this.#registrations) {
        if (
          registration.direction === "download" &&
          registration.mode === "forCurrentlyOutstandingWork"
        ) {
          registration.caughtUp = true;
        }
      }
    }
  }

  /**
   * A MARK sent when {@linkcode sequence} read `markSequence` was answered:
   * everything the server held then has arrived. Download registrations made
   * before it complete; an unknown download figure becomes "nothing
   * outstanding".
   */
  caughtUp(markSequence: number): void {
    if (!this.#downloadKnown) {
      this.#downloadKnown = true;
      this.#downloadTotal = this.#downloaded;
      this.#downloadBatchStart = this.#downloaded;
    }
    for (const registration of this.#registrations) {
      if (
        registration.direction === "download" &&
        registration.mode === "forCurrentlyOutstandingWork" &&
        registration.sequence < markSequence
      ) {
        registration.captured ??= 0;
        registration.caughtUp = true;
      }
    }
  }

  /**
   * The cumulative figures a `reportIndefinitely` registration sees now, or
   * undefined while the download figure is unknown.
   */
  current(direction: ProgressDirection): Progress | undefined {
    if (direction === "upload") {
      return this.#batchReport(
        this.#uploadAcknowledged,
        this.#uploadAcknowledged + this.#uploadPendingBytes,
        this.#uploadBatchStart,
      );
    }
    if (!this.#downloadKnown) return undefined;
    return this.#batchReport(
      this.#downloaded,
      this.#downloadTotal,
      this.#downloadBatchStart,
    );
  }

  #batchReport(
    transferred: number,
    transferable: number,
    batchStart: number,
  ): Progress {
    const complete = transferred >= transferable;
    return {
      transferredBytes: transferred,
      transferableBytes: transferable,
      progressEstimate: complete ? 1 : Math.min(
        1,
        Math.max(0, (transferred - batchStart) / (transferable - batchStart)),
      ),
      isTransferComplete: complete,
    };
  }

  /**
   * Registers `sink`. If figures are known, the first report is delivered
   * at once (and, for `forCurrentlyOutstandingWork` with nothing
   * outstanding, the registration completes at once).
   */
  register(
    direction: ProgressDirection,
    mode: ProgressMode,
    sink: ProgressSink,
  ): ProgressRegistration {
    const registration = new Registration(
      this,
      direction,
      mode,
      ++this.#sequence,
      sink,
    );
    if (mode === "forCurrentlyOutstandingWork") {
      if (direction === "upload") {
        registration.captured = this.#uploadPendingBytes;
        registration.base = this.#uploadAcknowledged;
        registration.targetVersion = this.#lastCommittedVersion;
      } else if (this.#downloadKnown) {
        registration.captured = this.#downloadTotal - this.#downloaded;
        registration.base = this.#downloaded;
        registration.caughtUp = registration.captured === 0;
      }
    }
    this.#registrations.add(registration);
    this.#publishTo(registration);
    return registration;
  }

  /** Removes a registration (its `cancel()` calls this). */
  unregister(registration: ProgressRegistration): void {
    this.#registrations.delete(registration as Registration);
    (registration as Registration).isActive = false;
  }

  /** Whether some registration would receive a complete report now. */
  get hasCompletion(): boolean {
    for (const registration of this.#registrations) {
      const progress = this.#figures(registration);
      if (
        progress !== undefined && progress.isTransferComplete &&
        (registration.lastTransferred !== progress.transferredBytes ||
          registration.lastTransferable !== progress.transferableBytes ||
          registration.lastEstimate !== 1)
      ) {
        return true;
      }
    }
    return false;
  }

  /**
   * Delivers the latest figures to every registration whose figures changed,
   * and ends the `forCurrentlyOutstandingWork` ones that completed. A sink
   * may cancel its own or another registration meanwhile.
   */
  publish(): void {
    for (const registration of [...this.#registrations]) {
      if (registration.isActive) this.#publishTo(registration);
    }
  }

  /**
   * Ends every registration: with `reason`, as an error; without, as a
   * normal end (the session closed).
   */
  close(reason?: unknown): void {
    const registrations = [...this.#registrations];
    this.#registrations.clear();
    for (const registration of registrations) {
      registration.isActive = false;
      if (reason === undefined) registration.sink.complete();
      else registration.sink.error(reason);
    }
  }

  #figures(registration: Registration): Progress | undefined {
    if (registration.mode === "reportIndefinitely") {
      return this.current(registration.direction);
    }
    const captured = registration.captured;
    if (captured === undefined) return undefined;
    if (registration.direction === "upload") {
      if (this.#lastAcknowledgedVersion >= registration.targetVersion) {
        return report(captured, captured);
      }
      return report(
        Math.min(captured, this.#uploadAcknowledged - registration.base),
        captured,
      );
    }
    if (registration.caughtUp) return report(captured, captured);
    // Not known to be here yet. The bytes counted reach the captured figure
    // before that only when other uploads arrived meanwhile (the server's
    // count grew) — then one byte is shown as still missing.
    return report(
      Math.max(0, Math.min(captured - 1, this.#downloaded - registration.base)),
      captured,
    );
  }

  #publishTo(registration: Registration): void {
    const progress = this.#figures(registration);
    if (progress === undefined) return;
    if (
      progress.transferredBytes !== registration.lastTransferred ||
      progress.transferableBytes !== registration.lastTransferable ||
      progress.progressEstimate !== registration.lastEstimate
    ) {
      registration.lastTransferred = progress.transferredBytes;
      registration.lastTransferable = progress.transferableBytes;
      registration.lastEstimate = progress.progressEstimate;
      registration.sink.next(progress);
    }
    if (
      registration.isActive &&
      registration.mode === "forCurrentlyOutstandingWork" &&
      progress.isTransferComplete
    ) {
      registration.isActive = false;
      this.#registrations.delete(registration);
      registration.sink.complete();
    }
  }
}
