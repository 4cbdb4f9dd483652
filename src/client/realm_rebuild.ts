// This module is browser compatible.

/**
 * Rebuilding object records from the server's state plus local changesets:
 * the pure half of a rejected write (PROTOCOL.md §4.16) and of a client
 * reset (docs/CLIENT.md "Client reset"), with the visible difference each
 * rebuilt record makes.
 */

import type {
  DownloadChangeset,
  Instruction,
  UploadChangeset,
} from "../model/changeset.ts";
import { compareHlc, type Hlc } from "../model/hlc.ts";
import {
  applyInstruction,
  emptyRecord,
  isLive,
  type ObjectChange,
  type ObjectRecord,
  visibleFields,
} from "../model/merge.ts";
import { ObjectStore } from "../model/object_store.ts";
import type { ClientIdentity } from "../protocol/messages.ts";
import { defineField, type Fields } from "../model/value.ts";

/** A key naming one object; lengths prefix it so no pair aliases another. */
export function objectKey(type: string, id: string): string {
  return `${type.length}:${type}${id}`;
}

/**
 * The zero stamp: a delete at it is how the server says "never held", and
 * how a reset writes an object the server does not hold. It outranks no
 * real write, and unlike an empty record it is something a storage stores.
 */
export const ABSENT_STAMP: Hlc = Object.freeze({
  time: 0,
  counter: 0,
  node: 0,
});

/** A record for an object that is not there (a delete at the zero stamp). */
export function absentRecord(type: string, id: string): ObjectRecord {
  return {
    type,
    id,
    putStamp: null,
    deleteStamp: ABSENT_STAMP,
    fields: new Map(),
  };
}

function stampKey(stamp: Hlc): string {
  return `${stamp.time}:${stamp.counter}:${stamp.node}`;
}

function applyTo(
  record: ObjectRecord,
  instruction: Instruction,
  stamp: Hlc,
): void {
  applyInstruction(record, instruction, stamp);
}

/**
 * The records of the objects a rejected changeset touched, rebuilt from
 * the server's `revert` and the later local changesets (each with its own
 * stamp), so a later write survives on top of the server's state.
 *
 * @param touched The rejected changeset's instructions (which objects).
 * @param revert The server's state of those objects.
 * @param later Pending local changesets after the rejected one.
 */
export function rebuildRejected(
  touched: readonly Instruction[],
  revert: readonly DownloadChangeset[],
  later: readonly UploadChangeset[],
): ObjectRecord[] {
  const records = new Map<string, ObjectRecord>();
  for (const { type, id } of touched) {
    records.set(objectKey(type, id), emptyRecord(type, id));
  }
  for (const changeset of revert) {
    for (const instruction of changeset.instructions) {
      const record = records.get(objectKey(instruction.type, instruction.id));
      if (record === undefined) continue;
      applyTo(record, instruction, instruction.stamp ?? changeset.stamp);
    }
  }
  for (const changeset of later) {
    for (const instruction of changeset.instructions) {
      const record = records.get(objectKey(instruction.type, instruction.id));
      if (record === undefined) continue;
      applyTo(record, instruction, instruction.stamp ?? changeset.stamp);
    }
  }
  return [...records.values()];
}

/**
 * What replacing `before` with `after` looks like to `realm.changes()`, or
 * null when nothing visible changed. Fields are compared by the stamp of
 * the write that set them: the same stamp is the same value.
 */
export function visibleChange(
  before: ObjectRecord | undefined,
  after: ObjectRecord,
): ObjectChange | null {
  const wasLive = before !== undefined && isLive(before);
  const live = isLive(after);
  const { type, id } = after;
  if (!live) return wasLive ? { type, id, op: "delete" } : null;
  const fields = visibleFields(after);
  if (!wasLive) return { type, id, op: "put", fields, created: true };
  let removed = false;
  for (const name of before.fields.keys()) {
    if (!after.fields.has(name)) removed = true;
  }
  const samePut = before.putStamp !== null && after.putStamp !== null &&
    compareHlc(before.putStamp, after.putStamp) === 0;
  if (removed || !samePut) {
    return { type, id, op: "put", fields, created: false };
  }
  let changed: Fields | undefined;
  for (const [name, entry] of after.fields) {
    const old = before.fields.get(name);
    if (old !== undefined && compareHlc(old.stamp, entry.stamp) === 0) {
      continue;
    }
    changed ??= {};
    defineField(changed, name, entry.value);
  }
  return changed === undefined
    ? null
    : { type, id, op: "update", fields: changed };
}

/** What a client reset builds from the staged server state. */
export interface ResetBuild {
  /** The new state of every object (the staged store, changed in place). */
  store: ObjectStore;
  /** Changesets synthesized by `recoverAll`, one per original stamp. */
  synthesized: UploadChangeset[];
}

/**
 * Builds the state after a client reset: the staged server state, plus the
 * pending local changesets with their original stamps (`recover`,
 * `recoverAll`), plus — for `recoverAll` — every field, put and delete the
 * local copy holds newer than the server's, as changesets numbered from
 * `nextClientVersion`, one per stamp.
 *
 * @param staged The server's state, downloaded afresh (changed in place).
 * @param local Every local record (before the reset).
 * @param pending The unacknowledged local changesets to re-apply.
 * @param recoverAll Whether to synthesize what the server lacks.
 * @param nextClientVersion The first client version for synthesized ones.
 * @param baseServerVersion Their base server version.
 */
export function buildReset(
  staged: ObjectStore,
  local: Iterable<ObjectRecord>,
  pending: readonly UploadChangeset[],
  recoverAll: boolean,
  nextClientVersion: number,
  baseServerVersion: number,
): ResetBuild {
  for (const changeset of pending) {
    staged.apply(changeset.stamp, changeset.instructions);
  }
  const synthesized: UploadChangeset[] = [];
  if (!recoverAll) return { store: staged, synthesized };
  // Grouped by stamp; within a stamp, one instruction per object.
  const groups = new Map<
    string,
    { stamp: Hlc; byObject: Map<string, Instruction> }
  >();
  const add = (stamp: Hlc, instruction: Instruction) => {
    const key = stampKey(stamp);
    let group = groups.get(key);
    if (group === undefined) {
      group = { stamp, byObject: new Map() };
      groups.set(key, group);
    }
    const object = objectKey(instruction.type, instruction.id);
    const existing = group.byObject.get(object);
    if (existing === undefined) {
      group.byObject.set(object, instruction);
    } else if (existing.op !== "delete" && instruction.fields !== null) {
      const fields = existing.fields ?? {};
      for (const name of Object.keys(instruction.fields)) {
        defineField(fields, name, instruction.fields[name]!);
      }
      existing.fields = fields;
      if (instruction.op === "put") existing.op = "put";
    }
  };
  for (const mine of local) {
    const server = staged.record(mine.type, mine.id);
    const newer = (stamp: Hlc, theirs: Hlc | null | undefined) =>
      theirs === null || theirs === undefined || compareHlc(stamp, theirs) > 0;
    const { type, id } = mine;
    if (
      mine.deleteStamp !== null && newer(mine.deleteStamp, server?.deleteStamp)
    ) {
      add(mine.deleteStamp, {
        op: "delete",
        type,
        id,
        fields: null,
        stamp: null,
      });
    }
    if (mine.putStamp !== null && newer(mine.putStamp, server?.putStamp)) {
      add(mine.putStamp, { op: "put", type, id, fields: {}, stamp: null });
    }
    for (const [name, entry] of mine.fields) {
      const theirs = server?.fields.get(name);
      if (!newer(entry.stamp, theirs?.stamp)) continue;
      // Dead on arrival on the server: older than its delete or its put.
      if (
        server?.deleteStamp != null &&
        compareHlc(entry.stamp, server.deleteStamp) <= 0
      ) continue;
      if (
        server?.putStamp != null &&
        compareHlc(entry.stamp, server.putStamp) < 0 &&
        !(mine.putStamp !== null && newer(mine.putStamp, server.putStamp))
      ) continue;
      const fields: Fields = {};
      defineField(fields, name, entry.value);
      add(entry.stamp, { op: "update", type, id, fields, stamp: null });
    }
  }
  const ordered = [...groups.values()].sort((a, b) =>
    compareHlc(a.stamp, b.stamp)
  );
  let clientVersion = nextClientVersion;
  for (const { stamp, byObject } of ordered) {
    const changeset: UploadChangeset = {
      clientVersion: clientVersion++,
      baseServerVersion,
      stamp,
      instructions: [...byObject.values()],
    };
    staged.apply(stamp, changeset.instructions);
    synthesized.push(changeset);
  }
  return { store: staged, synthesized };
}

/** A fresh store for staging a reset's download. */
export function stagingStore(): ObjectStore {
  return new ObjectStore();
}

/** What a client reset replaces the local state with (`LocalRealm.reset`). */
export interface ResetPlan {
  /** The server's state, downloaded afresh into a staging store. */
  staged: ObjectStore;
  /** The identity the server issued for the reset binding. */
  identity: ClientIdentity;
  /** The server version the staged download reached. */
  downloadCursor: number;
  /** Its salt (0 = unknown). */
  downloadCursorSalt: number;
  /** `"discard"` drops the pending changesets; the others re-apply them. */
  mode: "recover" | "recoverAll" | "discard";
}

/** What a client reset did (`LocalRealm.reset`). */
export interface ResetResult {
  /** Client versions of the pending changesets kept (re-applied). */
  recovered: number[];
  /** Client versions of the pending changesets dropped (`discard`). */
  discarded: number[];
  /** Client versions of the changesets `recoverAll` synthesized. */
  synthesized: number[];
  /** The highest client version now acknowledged. */
  acknowledged: number;
}
