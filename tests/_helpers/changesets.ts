/**
 * Small builders for changesets in tests: `upload(1, [put("Task", "a",
 * { done: false })])`.
 */
import type {
  DownloadChangeset,
  Instruction,
  UploadChangeset,
} from "../../src/model/changeset.ts";
import type { Hlc } from "../../src/model/hlc.ts";
import type { Fields } from "../../src/model/value.ts";
import type { DownloadMessage } from "../../src/protocol/messages.ts";

/** A put instruction (no own stamp). */
export function put(type: string, id: string, fields: Fields): Instruction {
  return { op: "put", type, id, fields, stamp: null };
}

/** An update instruction (no own stamp). */
export function update(type: string, id: string, fields: Fields): Instruction {
  return { op: "update", type, id, fields, stamp: null };
}

/** A delete instruction (no own stamp). */
export function remove(type: string, id: string): Instruction {
  return { op: "delete", type, id, fields: null, stamp: null };
}

/** A stamp at `time` from replica `node`. */
export function stampAt(time: number, node = 1, counter = 0): Hlc {
  return { time, counter, node };
}

/** An upload changeset with client version `clientVersion`. */
export function upload(
  clientVersion: number,
  instructions: Instruction[],
  options: { node?: number; time?: number; baseServerVersion?: number } = {},
): UploadChangeset {
  return {
    clientVersion,
    baseServerVersion: options.baseServerVersion ?? 0,
    stamp: stampAt(
      options.time ?? 1_700_000_000_000 + clientVersion,
      options.node ?? 1,
    ),
    instructions,
  };
}

/**
 * A changeset as the server sends it at `serverVersion`, stamped at `time`
 * by replica 99 (another client's).
 */
export function serverChangeset(
  serverVersion: number,
  time: number,
  instructions: Instruction[],
): DownloadChangeset {
  return {
    serverVersion,
    stamp: { time, counter: 0, node: 99 },
    instructions,
  };
}

/**
 * A DOWNLOAD for session 1 carrying `changesets` (no byte counts), that
 * acknowledges the client's changesets up to version `ack`.
 */
export function download(
  serverVersion: number,
  changesets: DownloadChangeset[],
  ack = 0,
): DownloadMessage {
  return {
    type: 0x43,
    sessionId: 1,
    serverVersion,
    lastIntegratedClientVersion: ack,
    downloadableBytes: 0,
    changesetBytes: 0,
    changesets,
  };
}
