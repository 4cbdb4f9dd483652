// This module is browser compatible.

import type { DownloadChangeset, UploadChangeset } from "../model/changeset.ts";
import { BlockWriter } from "./block.ts";
import { writeDownloadChangeset, writeUploadChangeset } from "./changesets.ts";
import {
  type DownloadMessage,
  MAX_VERSION_SALT,
  type Message,
  MessageType,
  SALTED_DOWNLOAD_TAG,
} from "./messages.ts";
import { ProtocolError } from "./protocol_error.ts";
import {
  writeF64,
  Writer,
  writeRaw,
  writeString,
  writeU8,
  writeVarUint,
} from "./writer.ts";

/** The four bytes after a HANDSHAKE tag: "TTHR" (PROTOCOL.md §4.1). */
export const HANDSHAKE_MAGIC: Uint8Array<ArrayBuffer> = new Uint8Array([
  0x54,
  0x54,
  0x48,
  0x52,
]);

// Encoding is synchronous, so one writer and one block writer serve every
// call. A call made while another is running (a getter on a field value that
// encodes a message, say) gets fresh ones.
const sharedWriter = new Writer();
const sharedBlock = new BlockWriter();
let encoding = false;

/**
 * Encodes one message as a frame (PROTOCOL.md §2): tag byte, then fields.
 * The frame is never compressed; see `compressFrame`.
 *
 * Without `writer`, the frame is a buffer of its own (`byteOffset` 0,
 * `buffer` exactly the frame), so it can be kept, transferred or
 * structured-cloned freely. With `writer`, it is a view into the writer's
 * buffer, valid until the next `encodeMessage` with that writer: meant for a
 * frame that is sent at once (`WebSocket.send` copies what it is given), it
 * saves allocating a buffer per frame, which in Deno costs about a third of
 * encoding a small message (PERFORMANCE.md).
 *
 * Version salts (protocol version 2, PROTOCOL.md §4.11) are written only
 * when not 0: a BIND's `downloadCursorSalt` after its upload cursor, a
 * DOWNLOAD's `serverVersionSalt` in the salted form
 * ({@linkcode SALTED_DOWNLOAD_TAG}). Without them a frame is exactly what
 * version 1 sends, so a peer talking version 1 leaves them out.
 *
 * @param message The message.
 * @param writer A writer of one's own to encode into; the frame returned is
 *   then a view into it, overwritten by the writer's next use.
 * @returns The frame's bytes.
 * @throws {ProtocolError} `unencodable_value` for field values outside the
 *   data model (`undefined`, functions, symbols, class instances, cycles or
 *   nesting deeper than `DEFAULT_LIMITS.maxDepth`), integers outside the
 *   wire ranges (a salt above {@linkcode MAX_VERSION_SALT}), stamps out of
 *   range, or an unknown message type.
 *
 * @example Encoding a PING
 * ```ts
 * import { encodeMessage, MessageType } from "@tether/sync/protocol";
 * import assert from "node:assert/strict";
 *
 * const frame = encodeMessage({ type: MessageType.Ping, timestamp: 1.5 });
 * assert.deepEqual([...frame], [0x06, 0, 0, 0, 0, 0, 0, 0xf8, 0x3f]);
 * ```
 *
 * @example Values outside the data model are refused
 * ```ts
 * import { encodeMessage, MessageType, ProtocolError } from "@tether/sync/protocol";
 * import assert from "node:assert/strict";
 *
 * assert.throws(
 *   () =>
 *     encodeMessage({
 *       type: MessageType.Upload,
 *       sessionId: 1,
 *       changesets: [{
 *         clientVersion: 1,
 *         baseServerVersion: 0,
 *         stamp: { time: 1, counter: 0, node: 1 },
 *         instructions: [{
 *           op: "put",
 *           type: "Task",
 *           id: "t1",
 *           fields: { due: new Map() as never },
 *           stamp: null,
 *         }],
 *       }],
 *     }),
 *   (error) => error instanceof ProtocolError && error.code === "unencodable_value",
 * );
 * ```
 */
export function encodeMessage(
  message: Message,
  writer?: Writer,
): Uint8Array<ArrayBuffer> {
  const reentrant = encoding;
  const frame = writer ?? (reentrant ? new Writer(1024) : sharedWriter);
  const block = reentrant ? new BlockWriter() : sharedBlock;
  encoding = true;
  try {
    frame.reset();
    writeMessage(frame, message, block);
    return writer === undefined
      ? frame.finish()
      : frame.bytes.subarray(0, frame.pos);
  } finally {
    block.release();
    encoding = reentrant;
  }
}

function writeMessage(
  writer: Writer,
  message: Message,
  block: BlockWriter,
): void {
  if (message.type === MessageType.Download) {
    writeDownloadHeader(writer, message);
    writeDownloadBlock(writer, block, message.changesets);
    return;
  }
  writeU8(writer, message.type);
  switch (message.type) {
    case MessageType.Handshake:
      writeRaw(writer, HANDSHAKE_MAGIC);
      writeVarUint(writer, message.minVersion);
      writeVarUint(writer, message.maxVersion);
      writeString(writer, message.accessToken);
      return;
    case MessageType.Bind:
      writeVarUint(writer, message.sessionId);
      writeString(writer, message.path);
      if (message.clientIdentity === null) {
        writeU8(writer, 0);
      } else {
        writeU8(writer, 1);
        writeVarUint(writer, message.clientIdentity.id);
        writeVarUint(writer, message.clientIdentity.salt);
      }
      writeVarUint(writer, message.downloadCursor);
      writeVarUint(writer, message.uploadCursor);
      if (isSalted(message.downloadCursorSalt)) {
        writeVersionSalt(writer, message.downloadCursorSalt);
      }
      return;
    case MessageType.Upload: {
      writeVarUint(writer, message.sessionId);
      const changesets = message.changesets;
      block.begin(writer);
      writeVarUint(block.out, changesets.length);
      for (let index = 0; index < changesets.length; index++) {
        writeUploadChangeset(block, changesets[index]!);
      }
      block.end();
      return;
    }
    case MessageType.UploadTooLarge: {
      writeVarUint(writer, message.sessionId);
      writeVarUint(writer, message.clientVersion);
      writeVarUint(writer, message.changesetBytes);
      const objects = message.objects;
      writeVarUint(writer, objects.length);
      for (let index = 0; index < objects.length; index++) {
        writeString(writer, objects[index]!.type);
        writeString(writer, objects[index]!.id);
      }
      return;
    }
    case MessageType.Mark:
    case MessageType.MarkReply:
      writeVarUint(writer, message.sessionId);
      writeVarUint(writer, message.requestId);
      return;
    case MessageType.Unbind:
    case MessageType.Unbound:
      writeVarUint(writer, message.sessionId);
      return;
    case MessageType.Ping:
    case MessageType.Pong:
      writeF64(writer, message.timestamp);
      return;
    case MessageType.Refresh:
      writeString(writer, message.accessToken);
      return;
    case MessageType.Received:
      writeVarUint(writer, message.receivedBytes);
      writeVarUint(writer, message.timeoutMs);
      return;
    case MessageType.HandshakeReply:
      writeVarUint(writer, message.version);
      writeString(writer, message.userId);
      writeVarUint(writer, message.maxMessageBytes);
      return;
    case MessageType.Ident:
      writeVarUint(writer, message.sessionId);
      writeVarUint(writer, message.clientIdentity.id);
      writeVarUint(writer, message.clientIdentity.salt);
      return;
    case MessageType.Reject: {
      writeVarUint(writer, message.sessionId);
      writeVarUint(writer, message.clientVersion);
      writeVarUint(writer, message.code);
      writeString(writer, message.message);
      writeDownloadBlock(writer, block, message.revert);
      return;
    }
    case MessageType.Error:
      if (message.sessionId === null) {
        writeU8(writer, 0);
      } else {
        writeU8(writer, 1);
        writeVarUint(writer, message.sessionId);
      }
      writeVarUint(writer, message.code);
      writeU8(writer, message.tryAgain ? 1 : 0);
      writeString(writer, message.message);
      return;
    default:
      throw new ProtocolError(
        "unencodable_value",
        `Cannot encode message: unknown type ${
          String((message as { type: unknown }).type)
        }`,
      );
  }
}

/**
 * Whether a version salt goes on the wire: any value but absent and 0 (a
 * value out of range is then refused by {@linkcode writeVersionSalt}).
 */
export function isSalted(salt: number | undefined): boolean {
  return salt !== undefined && salt !== 0;
}

/**
 * Writes a DOWNLOAD's tag and header, everything before its changeset
 * block (PROTOCOL.md §4.11): the salted form when the message has a salt.
 * The server's shared fan-out writes the same header before a block it
 * encoded once for every session.
 */
export function writeDownloadHeader(
  writer: Writer,
  message: DownloadMessage,
): void {
  const salted = isSalted(message.serverVersionSalt);
  writeU8(writer, salted ? SALTED_DOWNLOAD_TAG : MessageType.Download);
  writeVarUint(writer, message.sessionId);
  writeVarUint(writer, message.serverVersion);
  if (salted) writeVersionSalt(writer, message.serverVersionSalt);
  writeVarUint(writer, message.lastIntegratedClientVersion);
  writeVarUint(writer, message.downloadableBytes);
  writeVarUint(writer, message.changesetBytes);
}

/**
 * Writes a version salt (PROTOCOL.md §4.11): a varuint in
 * [0, {@linkcode MAX_VERSION_SALT}], absent written as 0.
 */
export function writeVersionSalt(
  writer: Writer,
  salt: number | undefined,
): void {
  const value = salt ?? 0;
  if (!(Number.isInteger(value) && value >= 0 && value <= MAX_VERSION_SALT)) {
    throw new ProtocolError(
      "unencodable_value",
      `Cannot encode version salt: ${value} is not an integer in [0, 2^32 - 1]`,
    );
  }
  writeVarUint(writer, value);
}

/** Writes a changeset block of download changesets (PROTOCOL.md §5). */
function writeDownloadBlock(
  writer: Writer,
  block: BlockWriter,
  changesets: readonly DownloadChangeset[],
): void {
  block.begin(writer);
  writeVarUint(block.out, changesets.length);
  for (let index = 0; index < changesets.length; index++) {
    writeDownloadChangeset(block, changesets[index]!);
  }
  block.end();
}

/**
 * Encodes one upload changeset on its own, as a changeset block holding
 * just it (PROTOCOL.md §5.5): the form a client keeps in its local store and
 * counts for upload progress.
 *
 * @param changeset The changeset.
 * @returns Its bytes, owned by the caller.
 * @throws {ProtocolError} `unencodable_value` as for `encodeMessage`.
 *
 * @example Storing a pending upload
 * ```ts
 * import { decodeUploadChangeset, encodeUploadChangeset } from "@tether/sync/protocol";
 * import assert from "node:assert/strict";
 *
 * const changeset = {
 *   clientVersion: 4,
 *   baseServerVersion: 17,
 *   stamp: { time: Date.UTC(2026, 0, 1), counter: 0, node: 42 },
 *   instructions: [
 *     { op: "update" as const, type: "Task", id: "t1", fields: { done: true }, stamp: null },
 *   ],
 * };
 * const bytes = encodeUploadChangeset(changeset);
 * assert.deepEqual(decodeUploadChangeset(bytes), changeset);
 * ```
 */
export function encodeUploadChangeset(
  changeset: UploadChangeset,
): Uint8Array<ArrayBuffer> {
  return encodeStandalone(changeset, writeUploadChangeset);
}

/**
 * Encodes one download changeset on its own, as a changeset block holding
 * just it (PROTOCOL.md §5.5): the form the server keeps in its history.
 *
 * @param changeset The changeset.
 * @returns Its bytes, owned by the caller.
 * @throws {ProtocolError} `unencodable_value` as for `encodeMessage`.
 *
 * @example Storing a changeset in the history
 * ```ts
 * import { decodeDownloadChangeset, encodeDownloadChangeset } from "@tether/sync/protocol";
 * import assert from "node:assert/strict";
 *
 * const changeset = {
 *   serverVersion: 18,
 *   stamp: { time: Date.UTC(2026, 0, 1), counter: 0, node: 42 },
 *   instructions: [
 *     { op: "delete" as const, type: "Task", id: "t1", fields: null, stamp: null },
 *   ],
 * };
 * assert.deepEqual(decodeDownloadChangeset(encodeDownloadChangeset(changeset)), changeset);
 * ```
 */
export function encodeDownloadChangeset(
  changeset: DownloadChangeset,
): Uint8Array<ArrayBuffer> {
  return encodeStandalone(changeset, writeDownloadChangeset);
}

/**
 * {@linkcode encodeUploadChangeset} without the copy: a view into a writer
 * that the next encoding call reuses, for a caller that only measures and
 * checks the bytes at once (a local write, before it commits). Not part of
 * the protocol module's exports.
 */
export function encodeUploadChangesetView(
  changeset: UploadChangeset,
): Uint8Array<ArrayBuffer> {
  return encodeStandalone(changeset, writeUploadChangeset, false);
}

function encodeStandalone<T>(
  changeset: T,
  write: (block: BlockWriter, changeset: T) => void,
  copy = true,
): Uint8Array<ArrayBuffer> {
  const reentrant = encoding;
  const frame = reentrant ? new Writer(1024) : sharedWriter;
  const block = reentrant ? new BlockWriter() : sharedBlock;
  encoding = true;
  try {
    frame.reset();
    block.begin(frame);
    write(block, changeset);
    block.end();
    return copy ? frame.finish() : frame.bytes.subarray(0, frame.pos);
  } finally {
    block.release();
    encoding = reentrant;
  }
}
