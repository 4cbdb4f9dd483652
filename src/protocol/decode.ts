// This module is browser compatible.

import type { DownloadChangeset, UploadChangeset } from "../model/changeset.ts";
import { DEFAULT_LIMITS, type Limits } from "./limits.ts";
import { type Message, MessageType } from "./messages.ts";
import { ProtocolError } from "./protocol_error.ts";
import {
  readDownloadChangeset,
  readUploadChangeset,
  StringTableReader,
} from "./changesets.ts";
import {
  readCount,
  Reader,
  readF64,
  readString,
  readU8,
  readVarUint,
} from "./reader.ts";
import { HANDSHAKE_MAGIC } from "./encode.ts";

/** Marks a compressed body in the tag byte (PROTOCOL.md §3.2). */
export const COMPRESSED_FLAG = 0x80;

const sharedStrings = new StringTableReader();

/**
 * Decodes one uncompressed frame into a message.
 *
 * @param bytes The frame.
 * @param limits Bounds to enforce; missing ones take {@linkcode DEFAULT_LIMITS}.
 * @returns The message.
 * @throws {ProtocolError} For truncated, oversized, malformed or unknown
 *   input, or bytes left over after the message.
 */
export function decodeMessage(
  bytes: Uint8Array,
  limits: Partial<Limits> = DEFAULT_LIMITS,
): Message {
  const resolved = limits === DEFAULT_LIMITS
    ? DEFAULT_LIMITS
    : { ...DEFAULT_LIMITS, ...limits };
  if (bytes.length > resolved.maxMessageBytes) {
    throw new ProtocolError(
      "length_over_limit",
      `Cannot decode message: length ${bytes.length} exceeds limit ${resolved.maxMessageBytes}`,
      0,
    );
  }
  const reader = new Reader(bytes, resolved);
  const message = readMessage(reader);
  if (reader.pos !== reader.end) {
    throw new ProtocolError(
      "trailing_bytes",
      `Cannot decode message: ${
        reader.end - reader.pos
      } bytes left over at offset ${reader.pos}`,
      reader.pos,
    );
  }
  return message;
}

function readSessionId(reader: Reader): number {
  return readVarUint(reader);
}

function readMessage(reader: Reader): Message {
  const tag = readU8(reader);
  switch (tag) {
    case MessageType.Handshake: {
      for (const expected of HANDSHAKE_MAGIC) {
        const start = reader.pos;
        if (readU8(reader) !== expected) {
          throw new ProtocolError(
            "bad_magic",
            `Cannot decode handshake: bad magic at offset ${start}`,
            start,
          );
        }
      }
      const minVersion = readVarUint(reader);
      const maxVersion = readVarUint(reader);
      const accessToken = readString(reader);
      return {
        type: MessageType.Handshake,
        minVersion,
        maxVersion,
        accessToken,
      };
    }
    case MessageType.Bind: {
      const sessionId = readSessionId(reader);
      const path = readString(reader);
      const start = reader.pos;
      const hasIdentity = readU8(reader);
      if (hasIdentity > 1) {
        throw new ProtocolError(
          "invalid_field",
          `Cannot decode bind: identity flag ${hasIdentity} at offset ${start}`,
          start,
        );
      }
      const clientIdentity = hasIdentity === 1
        ? { id: readVarUint(reader), salt: readVarUint(reader) }
        : null;
      const downloadCursor = readVarUint(reader);
      const uploadCursor = readVarUint(reader);
      return {
        type: MessageType.Bind,
        sessionId,
        path,
        clientIdentity,
        downloadCursor,
        uploadCursor,
      };
    }
    case MessageType.Upload: {
      const sessionId = readSessionId(reader);
      const count = readCount(
        reader,
        reader.limits.maxChangesets,
        4,
        "changeset count",
      );
      sharedStrings.reset();
      const changesets: UploadChangeset[] = new Array(count);
      for (let index = 0; index < count; index++) {
        changesets[index] = readUploadChangeset(reader, sharedStrings);
      }
      return { type: MessageType.Upload, sessionId, changesets };
    }
    case MessageType.Mark:
      return {
        type: MessageType.Mark,
        sessionId: readSessionId(reader),
        requestId: readVarUint(reader),
      };
    case MessageType.MarkReply:
      return {
        type: MessageType.MarkReply,
        sessionId: readSessionId(reader),
        requestId: readVarUint(reader),
      };
    case MessageType.Unbind:
      return { type: MessageType.Unbind, sessionId: readSessionId(reader) };
    case MessageType.Unbound:
      return { type: MessageType.Unbound, sessionId: readSessionId(reader) };
    case MessageType.Ping:
      return { type: MessageType.Ping, timestamp: readF64(reader) };
    case MessageType.Pong:
      return { type: MessageType.Pong, timestamp: readF64(reader) };
    case MessageType.Refresh:
      return { type: MessageType.Refresh, accessToken: readString(reader) };
    case MessageType.HandshakeReply:
      return {
        type: MessageType.HandshakeReply,
        version: readVarUint(reader),
        userId: readString(reader),
        maxMessageBytes: readVarUint(reader),
      };
    case MessageType.Ident: {
      const sessionId = readSessionId(reader);
      const id = readVarUint(reader);
      const salt = readVarUint(reader);
      return {
        type: MessageType.Ident,
        sessionId,
        clientIdentity: { id, salt },
      };
    }
    case MessageType.Download: {
      const sessionId = readSessionId(reader);
      const serverVersion = readVarUint(reader);
      const lastIntegratedClientVersion = readVarUint(reader);
      const downloadableBytes = readVarUint(reader);
      const count = readCount(
        reader,
        reader.limits.maxChangesets,
        4,
        "changeset count",
      );
      sharedStrings.reset();
      const changesets: DownloadChangeset[] = new Array(count);
      for (let index = 0; index < count; index++) {
        changesets[index] = readDownloadChangeset(reader, sharedStrings);
      }
      return {
        type: MessageType.Download,
        sessionId,
        serverVersion,
        lastIntegratedClientVersion,
        downloadableBytes,
        changesets,
      };
    }
    case MessageType.Error: {
      const scope = readVarUint(reader);
      const code = readVarUint(reader);
      const start = reader.pos;
      const tryAgain = readU8(reader);
      if (tryAgain > 1) {
        throw new ProtocolError(
          "invalid_field",
          `Cannot decode error: try-again flag ${tryAgain} at offset ${start}`,
          start,
        );
      }
      return {
        type: MessageType.Error,
        sessionId: scope === 0 ? null : scope - 1,
        code,
        tryAgain: tryAgain === 1,
        message: readString(reader),
      };
    }
    default:
      throw new ProtocolError(
        "unknown_message",
        `Cannot decode message: unknown type 0x${
          tag.toString(16).padStart(2, "0")
        } at offset 0`,
        0,
      );
  }
}

/** Decodes one stored upload changeset (see `encodeUploadChangeset`). */
export function decodeUploadChangeset(
  bytes: Uint8Array,
  limits: Limits = DEFAULT_LIMITS,
): UploadChangeset {
  const reader = new Reader(bytes, limits);
  sharedStrings.reset();
  const changeset = readUploadChangeset(reader, sharedStrings);
  expectEnd(reader);
  return changeset;
}

/** Decodes one stored download changeset (see `encodeDownloadChangeset`). */
export function decodeDownloadChangeset(
  bytes: Uint8Array,
  limits: Limits = DEFAULT_LIMITS,
): DownloadChangeset {
  const reader = new Reader(bytes, limits);
  sharedStrings.reset();
  const changeset = readDownloadChangeset(reader, sharedStrings);
  expectEnd(reader);
  return changeset;
}

function expectEnd(reader: Reader): void {
  if (reader.pos !== reader.end) {
    throw new ProtocolError(
      "trailing_bytes",
      `Cannot decode changeset: ${
        reader.end - reader.pos
      } bytes left over at offset ${reader.pos}`,
      reader.pos,
    );
  }
}
