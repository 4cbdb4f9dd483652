/**
 * The current state of a realm's objects as the server holds it: the
 * snapshot's records with the history after the snapshot's version merged
 * on top (docs/SERVER.md "Storage").
 *
 * The snapshot lags the head, and records may be ahead of the snapshot's
 * version record (a step in progress), never behind it; merging is a join,
 * so applying history the records already hold changes nothing. Reads are
 * not one KV snapshot: the result is the state at `version` or newer.
 */

import type { ObjectKey } from "../../protocol/messages.ts";
import type { Instruction } from "../../model/changeset.ts";
import {
  applyInstruction,
  emptyRecord,
  type ObjectRecord,
} from "../../model/merge.ts";
import type { StoredBytes } from "./chunks.ts";
import { readHead, readHistory } from "./history.ts";
import { objectKey } from "./keys.ts";
import { GET_MANY_KEYS, readMany } from "./read_many.ts";
import { retryKv, type RetryOptions } from "./retry.ts";
import {
  decodeRecordInstructions,
  listSnapshotObjects,
  readObjectBytes,
  readSnapshotInfo,
  SNAPSHOT_STAMP,
} from "./snapshot.ts";
import type { ServerKv } from "./kv_store.ts";

// An object named by type and id: the protocol's own shape.
export type { ObjectKey };

/** Records read by {@linkcode readObjectRecords} or {@linkcode readRealmState}. */
export interface RealmState {
  /** The head version the records include (at least). */
  version: number;
  /** The records by {@linkcode recordName}, tombstones included. */
  records: Map<string, ObjectRecord>;
}

// History read per step while merging the tail on top of the snapshot.
const TAIL_STEP_BYTES = 1024 * 1024;
// A snapshot that advances (and compacts) while the tail is read makes the
// read start over; give up after this many tries.
const MAX_ATTEMPTS = 5;

/** The map key of one object: length-prefixed so ("ab","c") ≠ ("a","bc"). */
export function recordName(type: string, id: string): string {
  return `${type.length}:${type}${id}`;
}

/**
 * Reads the server's current records of `keys` (an object never written
 * comes back as an empty record).
 */
export function readObjectRecords(
  kv: ServerKv,
  realm: string,
  keys: readonly ObjectKey[],
  retry: RetryOptions,
): Promise<RealmState> {
  return readState(kv, realm, retry, async (records) => {
    for (let at = 0; at < keys.length; at += READ_ROUND_KEYS) {
      const round = keys.slice(at, at + READ_ROUND_KEYS);
      const entries = await retryKv(
        () =>
          readMany<StoredBytes>(
            kv,
            round.map(({ type, id }) => objectKey(realm, type, id)),
          ),
        retry,
      );
      for (let index = 0; index < round.length; index++) {
        const { type, id } = round[index]!;
        const entry = entries[index]!;
        const record = emptyRecord(type, id);
        if (entry.value !== null) {
          const bytes = await readObjectBytes(
            kv,
            realm,
            entry as Deno.KvEntry<StoredBytes>,
            retry,
          );
          if (bytes !== null) {
            applyAll(record, decodeRecordInstructions(bytes));
          }
        }
        records.set(recordName(type, id), record);
      }
    }
  }, true);
}

// Keys read at once (32 `getMany` calls): a backend write of thousands of
// objects reads them all first (docs/SERVER.md "Server-side data access").
const READ_ROUND_KEYS = 32 * GET_MANY_KEYS;

/** Reads every record of the realm (for server-side reads and queries). */
export function readRealmState(
  kv: ServerKv,
  realm: string,
  retry: RetryOptions,
): Promise<RealmState> {
  return readState(kv, realm, retry, async (records) => {
    for await (const object of listSnapshotObjects(kv, realm, retry)) {
      const first = object.instructions[0];
      if (first === undefined) continue;
      const name = recordName(first.type, first.id);
      let record = records.get(name);
      if (record === undefined) {
        record = emptyRecord(first.type, first.id);
        records.set(name, record);
      }
      applyAll(record, object.instructions);
    }
  }, false);
}

async function readState(
  kv: ServerKv,
  realm: string,
  retry: RetryOptions,
  loadSnapshot: (records: Map<string, ObjectRecord>) => Promise<void>,
  onlyLoaded: boolean,
): Promise<RealmState> {
  for (let attempt = 1;; attempt++) {
    const snapshot = await readSnapshotInfo(kv, realm, retry);
    const head = await readHead(kv, realm, retry);
    const records = new Map<string, ObjectRecord>();
    await loadSnapshot(records);
    let from = snapshot.version + 1;
    let complete = true;
    while (from <= head.version) {
      const read = await readHistory(
        kv,
        realm,
        from,
        head.version,
        TAIL_STEP_BYTES,
        retry,
      );
      if (read.gap) {
        complete = false;
        break;
      }
      for (const item of read.items) {
        const { stamp, instructions } = item.changeset;
        for (const instruction of instructions) {
          const name = recordName(instruction.type, instruction.id);
          let record = records.get(name);
          if (record === undefined) {
            if (onlyLoaded) continue;
            record = emptyRecord(instruction.type, instruction.id);
            records.set(name, record);
          }
          applyInstruction(record, instruction, instruction.stamp ?? stamp);
        }
        from = item.version + 1;
      }
    }
    if (complete) return { version: head.version, records };
    if (attempt >= MAX_ATTEMPTS) {
      throw new Error(
        `Cannot read the state of ${
          JSON.stringify(realm)
        }: the snapshot kept advancing past the history being read`,
      );
    }
  }
}

function applyAll(record: ObjectRecord, instructions: Instruction[]): void {
  for (const instruction of instructions) {
    applyInstruction(record, instruction, instruction.stamp ?? SNAPSHOT_STAMP);
  }
}
