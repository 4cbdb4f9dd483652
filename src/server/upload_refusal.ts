/**
 * Why a session refuses an uploaded changeset, and the revert its REJECT
 * carries (PROTOCOL.md §4.16).
 *
 * `Session` delegates here: the decision reads only the session's
 * permission and the server's validation hook, and the revert only the
 * realm's current records, so neither touches the session's state.
 */

import type {
  DownloadChangeset,
  Instruction,
  UploadChangeset,
} from "../model/changeset.ts";
import { recordToInstructions } from "../model/merge.ts";
import type { UploadTooLargeMessage } from "../protocol/messages.ts";
import type { Log } from "./log.ts";
import type { Permission } from "./permissions.ts";
import { SessionError } from "./session_error.ts";
import { findInvalidUpload } from "./upload_validation.ts";
import {
  type ChangesetValidator,
  changesToValidate,
} from "./changeset_validation.ts";
import type { ObjectKey, RealmState } from "./storage/realm_state.ts";
import type { Refusal } from "./storage/rejections.ts";
import { SNAPSHOT_STAMP, snapshotChangeset } from "./storage/snapshot.ts";

/**
 * Reads of a refused changeset's objects before giving up on one as new as
 * what the session already sent (each read that falls short saw a commit
 * land meanwhile, so more than a couple means the realm never stops).
 */
const MAX_REVERT_READS = 20;

/** What the refusal decision reads of its session. */
export interface RefusalContext {
  /** The session's id, for the log. */
  id: number;
  /** The resolved realm path. */
  path: string;
  /** The user the hook is told of. */
  userId: string;
  /** What the user may do with the realm. */
  permission: Permission;
  /** The server's validation hook, if any. */
  validateChangeset: ChangesetValidator | undefined;
  /** Where a throwing hook is logged. */
  log: Log;
  /** The server's frame limit, named by a `message_too_large` refusal. */
  maxMessageBytes: number;
}

/** The message of an upload to a realm the user may only read. */
export function readOnlyMessage(path: string): string {
  return `Cannot upload: the realm ${
    JSON.stringify(path)
  } is read-only for this user`;
}

/** Why the server will not take `changeset`, or null to take it. */
export async function findRefusal(
  context: RefusalContext,
  changeset: UploadChangeset,
): Promise<Refusal | null> {
  if (context.permission !== "readwrite") {
    return {
      code: "write_not_allowed",
      message: readOnlyMessage(context.path).replace("Cannot upload: ", ""),
    };
  }
  const validate = context.validateChangeset;
  if (validate === undefined) return null;
  try {
    const verdict = await validate({
      userId: context.userId,
      path: context.path,
      changes: changesToValidate(changeset),
    });
    if (verdict === true) return null;
    return {
      code: "validation_failed",
      message:
        `the server's validation refused client version ${changeset.clientVersion}`,
    };
  } catch (error) {
    context.log(
      "warn",
      "validation_failed",
      "validateChangeset threw; the changeset is refused",
      { session: context.id, path: context.path, error },
    );
    return {
      code: "validation_failed",
      message:
        `the server's validation failed on client version ${changeset.clientVersion}`,
    };
  }
}

/**
 * Why the server will not take a changeset the client could not send under
 * its frame limit: `write_not_allowed` where no write is, else
 * `message_too_large`.
 */
export function tooLargeRefusal(
  context: RefusalContext,
  message: UploadTooLargeMessage,
): Refusal {
  if (context.permission !== "readwrite") {
    return {
      code: "write_not_allowed",
      message: readOnlyMessage(context.path).replace("Cannot upload: ", ""),
    };
  }
  return {
    code: "message_too_large",
    message:
      `client version ${message.clientVersion} is ${message.changesetBytes} bytes encoded, more than the server's limit of ${context.maxMessageBytes} bytes per message`,
  };
}

/**
 * What goes through `Session.upload` in place of a changeset too large to
 * upload: its client version with no instructions, so no path can store
 * anything of it (the objects it names travel beside it).
 *
 * @throws {SessionError} `bad_changeset` for objects no upload could name,
 *   or one named twice (see `findInvalidUpload`).
 */
export function tooLargeStandIn(
  message: UploadTooLargeMessage,
  path: string,
): UploadChangeset {
  const named: UploadChangeset = {
    clientVersion: message.clientVersion,
    baseServerVersion: 0,
    stamp: SNAPSHOT_STAMP,
    instructions: message.objects.map(({ type, id }) => ({
      op: "delete",
      type,
      id,
      fields: null,
      stamp: null,
    })),
  };
  const invalid = findInvalidUpload([named], path);
  if (invalid !== null) {
    throw new SessionError("bad_changeset", `Cannot refuse: ${invalid}`);
  }
  return { ...named, instructions: [] };
}

/**
 * Reads the server's current state of every object `changeset` touched (or
 * of `objects`, when given), at least as new as `cursor()`, as the revert
 * of a REJECT; null once `closed()`.
 *
 * The client replaces those objects with the revert: it must hold every
 * version the session already sent, or the client would lose what they did
 * to those objects (a DOWNLOAD can go out while the state is read).
 *
 * @throws {SessionError} `session_failed` when the realm kept moving past
 *   every read.
 */
export async function readRevert(
  changeset: UploadChangeset,
  read: (keys: readonly ObjectKey[]) => Promise<RealmState>,
  cursor: () => number,
  closed: () => boolean,
  objects?: readonly ObjectKey[],
): Promise<DownloadChangeset | null> {
  const keys = objects ??
    changeset.instructions.map(({ type, id }) => ({ type, id }));
  let state = await read(keys);
  for (let reads = 1; state.version < cursor(); reads++) {
    if (closed()) return null;
    if (reads >= MAX_REVERT_READS) {
      throw new SessionError(
        "session_failed",
        `Cannot refuse client version ${changeset.clientVersion}: the realm kept moving past its state being read`,
      );
    }
    state = await read(keys);
  }
  if (closed()) return null;
  const instructions: Instruction[] = [];
  for (const record of state.records.values()) {
    const revert = recordToInstructions(record);
    // Never written on the server: a delete at the zero stamp puts the
    // object back to "absent" without outranking anything.
    if (revert.length === 0) {
      revert.push({
        op: "delete",
        type: record.type,
        id: record.id,
        fields: null,
        stamp: SNAPSHOT_STAMP,
      });
    }
    for (const instruction of revert) instructions.push(instruction);
  }
  return snapshotChangeset(state.version, instructions);
}

/** The storage steps {@linkcode settleRefusal} takes, run by the session. */
export interface RefusalStore {
  /** Records the refusal; false when the version was settled already. */
  reject(): Promise<boolean>;
  /** The refusal recorded for the version, or null. */
  read(): Promise<Refusal | null>;
}

/**
 * Settles `changeset` as refused by `refusal` (logged when this call
 * settled it) and returns the refusal its REJECT carries: the one recorded
 * when another session of the identity refused it first, or null when one
 * integrated it first, so it is acknowledged like any re-upload.
 */
export async function settleRefusal(
  context: RefusalContext,
  changeset: UploadChangeset,
  refusal: Refusal,
  store: RefusalStore,
): Promise<Refusal | null> {
  if (!await store.reject()) return await store.read();
  context.log(
    "info",
    "write_rejected",
    `Refused client version ${changeset.clientVersion}: ${refusal.message}`,
    {
      session: context.id,
      path: context.path,
      userId: context.userId,
      code: refusal.code,
    },
  );
  return refusal;
}
