// This module is browser compatible.

import type { DownloadChangeset, UploadChangeset } from "../model/changeset.ts";
import { DEFAULT_LIMITS } from "./limits.ts";
import { type Message, MessageType } from "./messages.ts";
import { ProtocolError } from "./protocol_error.ts";
import {
  StringTable,
  writeDownloadChangeset,
  writeUploadChangeset,
} from "./changesets.ts";
import {
  writeF64,
  Writer,
  writeRaw,
  writeString,
  writeU8,
  writeVarUint,
} from "./writer.ts";

/** The four bytes after a HANDSHAKE tag: "TTHR" (PROTOCOL.md §3.1). */
export const HANDSHAKE_MAGIC: Uint8Array<ArrayBuffer> = new Uint8Array([
  0x54,
  0x54,
  0x48,
  0x52,
]);

// Encoding is synchronous, so one writer and one string table can serve every
// call; each call copies its bytes out before returning.
const sharedWriter = new Writer(64 * 1024);
const sharedStrings = new StringTable();

/**
 * Encodes one message as a frame (PROTOCOL.md §3): tag byte, then fields.
 *
 * @param message The message.
 * @param writer A writer to encode into (reset first); the frame is still
 *   returned as a copy.
 * @returns The frame's bytes.
 * @throws {ProtocolError} `unencodable_value` for values outside the data
 *   model or integers outside the wire ranges.
 */
export function encodeMessage(
  message: Message,
  writer: Writer = sharedWriter,
): Uint8Array<ArrayBuffer> {
  writer.reset();
  writeMessage(writer, message);
  return writer.finish();
}

/** Writes one message into `writer` at its current position. */
export function writeMessage(writer: Writer, message: Message): void {
  const maxDepth = DEFAULT_LIMITS.maxDepth;
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
      return;
    case MessageType.Upload: {
      writeVarUint(writer, message.sessionId);
      writeVarUint(writer, message.changesets.length);
      sharedStrings.reset();
      for (const changeset of message.changesets) {
        writeUploadChangeset(writer, changeset, sharedStrings, maxDepth);
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
    case MessageType.Download: {
      writeVarUint(writer, message.sessionId);
      writeVarUint(writer, message.serverVersion);
      writeVarUint(writer, message.lastIntegratedClientVersion);
      writeVarUint(writer, message.downloadableBytes);
      writeVarUint(writer, message.changesets.length);
      sharedStrings.reset();
      for (const changeset of message.changesets) {
        writeDownloadChangeset(writer, changeset, sharedStrings, maxDepth);
      }
      return;
    }
    case MessageType.Error:
      // Session ids are shifted by one so 0 can mean "the connection".
      writeVarUint(
        writer,
        message.sessionId === null ? 0 : message.sessionId + 1,
      );
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
 * Encodes one upload changeset on its own, with its own string table: the
 * unit the client counts for upload progress.
 */
export function encodeUploadChangeset(
  changeset: UploadChangeset,
): Uint8Array<ArrayBuffer> {
  sharedWriter.reset();
  sharedStrings.reset();
  writeUploadChangeset(
    sharedWriter,
    changeset,
    sharedStrings,
    DEFAULT_LIMITS.maxDepth,
  );
  return sharedWriter.finish();
}

/**
 * Encodes one download changeset on its own, with its own string table: the
 * form the server stores in its history.
 */
export function encodeDownloadChangeset(
  changeset: DownloadChangeset,
): Uint8Array<ArrayBuffer> {
  sharedWriter.reset();
  sharedStrings.reset();
  writeDownloadChangeset(
    sharedWriter,
    changeset,
    sharedStrings,
    DEFAULT_LIMITS.maxDepth,
  );
  return sharedWriter.finish();
}
