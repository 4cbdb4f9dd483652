// This module is browser compatible.

import type { DownloadChangeset, UploadChangeset } from "../model/changeset.ts";
import { checkBlockEnd, readBlockSections } from "./block.ts";
import { readDownloadChangeset, readUploadChangeset } from "./changesets.ts";
import { HANDSHAKE_MAGIC } from "./encode.ts";
import { DEFAULT_LIMITS, type Limits } from "./limits.ts";
import {
  MAX_VERSION_SALT,
  type Message,
  MessageType,
  type ObjectKey,
  SALTED_DOWNLOAD_TAG,
} from "./messages.ts";
import { ProtocolError } from "./protocol_error.ts";
import {
  readCount,
  Reader,
  readF64,
  readString,
  readU8,
  readVarUint,
} from "./reader.ts";

/** Marks a compressed body in the tag byte (PROTOCOL.md §2). */
export const COMPRESSED_FLAG = 0x80;

function resolveLimits(limits: Partial<Limits>): Limits {
  return limits === DEFAULT_LIMITS
    ? DEFAULT_LIMITS
    : { ...DEFAULT_LIMITS, ...limits };
}

/**
 * Decodes one uncompressed frame into a message (PROTOCOL.md §4). A
 * compressed frame must go through `decompressFrame` first.
 *
 * Byte-array values are views into `bytes` (its byte section, PROTOCOL.md
 * §5.1) rather than copies: a frame received from a socket is used by
 * nobody else, and an `ArrayBuffer` per value would cost more than the rest
 * of decoding a small message (PERFORMANCE.md). So do not modify `bytes`
 * while the message is in use, and copy a byte array (`value.slice()`)
 * before keeping it for long or structured-cloning it, or it keeps the whole
 * frame alive and a clone copies it. Strings likewise share memory with the
 * other strings of their message. Nothing is shared between messages.
 *
 * A salted DOWNLOAD ({@linkcode SALTED_DOWNLOAD_TAG}) decodes as a
 * DOWNLOAD with `serverVersionSalt`, and a BIND with a salt after its
 * upload cursor with `downloadCursorSalt` (protocol version 2, PROTOCOL.md
 * §4.11); a salt of 0 (unknown) decodes as an absent field.
 *
 * @param bytes The frame.
 * @param limits Bounds to enforce; missing ones take {@linkcode DEFAULT_LIMITS}.
 * @returns The message.
 * @throws {ProtocolError} For truncated, oversized, malformed or unknown
 *   input, a compressed frame, or bytes left over after the message.
 *
 * @example Decoding a frame
 * ```ts
 * import { decodeMessage, MessageType } from "@tether/sync/protocol";
 * import assert from "node:assert/strict";
 *
 * const frame = new Uint8Array([0x04, 0x01, 0x05]);
 * assert.deepEqual(decodeMessage(frame), {
 *   type: MessageType.Mark,
 *   sessionId: 1,
 *   requestId: 5,
 * });
 * ```
 *
 * @example Bad input throws a ProtocolError with a stable code
 * ```ts
 * import { decodeMessage, ProtocolError } from "@tether/sync/protocol";
 * import assert from "node:assert/strict";
 *
 * assert.throws(
 *   () => decodeMessage(new Uint8Array([0x04, 0x01, 0x05, 0x00])),
 *   (error) => error instanceof ProtocolError && error.code === "trailing_bytes",
 * );
 * assert.throws(
 *   () => decodeMessage(new Uint8Array([0x05, 0x80]), { maxMessageBytes: 1 }),
 *   (error) => error instanceof ProtocolError && error.code === "length_over_limit",
 * );
 * ```
 */
export function decodeMessage(
  bytes: Uint8Array,
  limits: Partial<Limits> = DEFAULT_LIMITS,
): Message {
  const resolved = resolveLimits(limits);
  if (bytes.length > resolved.maxMessageBytes) {
    throw new ProtocolError(
      "length_over_limit",
      `Cannot decode message: length ${bytes.length} exceeds limit ${resolved.maxMessageBytes}`,
      0,
    );
  }
  const reader = new Reader(bytes, resolved);
  const message = readMessage(reader);
  expectEnd(reader, "message");
  return message;
}

/** Reads a PROTOCOL.md §3.5 flag: 00 or 01, anything else rejected. */
function readFlag(reader: Reader, message: string, what: string): boolean {
  const start = reader.pos;
  const flag = readU8(reader);
  if (flag > 1) {
    throw new ProtocolError(
      "invalid_field",
      `Cannot decode ${message}: ${what} ${flag} at offset ${start}`,
      start,
    );
  }
  return flag === 1;
}

/** Reads a version salt (PROTOCOL.md §4.11), rejecting one out of range. */
function readVersionSalt(reader: Reader, message: string): number {
  const start = reader.pos;
  const salt = readVarUint(reader);
  if (salt > MAX_VERSION_SALT) {
    throw new ProtocolError(
      "invalid_field",
      `Cannot decode ${message}: version salt ${salt} at offset ${start} exceeds 2^32 - 1`,
      start,
    );
  }
  return salt;
}

function readMessage(reader: Reader): Message {
  const tag = readU8(reader);
  switch (tag) {
    case MessageType.Handshake: {
      for (let index = 0; index < HANDSHAKE_MAGIC.length; index++) {
        const start = reader.pos;
        if (readU8(reader) !== HANDSHAKE_MAGIC[index]) {
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
      const sessionId = readVarUint(reader);
      const path = readString(reader);
      const hasIdentity = readFlag(reader, "bind", "identity flag");
      const clientIdentity = hasIdentity
        ? { id: readVarUint(reader), salt: readVarUint(reader) }
        : null;
      const downloadCursor = readVarUint(reader);
      const uploadCursor = readVarUint(reader);
      // The salt is the one optional field: present when bytes remain.
      const downloadCursorSalt = reader.pos < reader.end
        ? readVersionSalt(reader, "bind")
        : 0;
      return {
        type: MessageType.Bind,
        sessionId,
        path,
        clientIdentity,
        downloadCursor,
        uploadCursor,
        ...(downloadCursorSalt === 0 ? {} : { downloadCursorSalt }),
      };
    }
    case MessageType.Upload: {
      const sessionId = readVarUint(reader);
      readBlockSections(reader, false);
      // Smallest upload changeset: two versions, a stamp, an empty list.
      const count = readCount(
        reader,
        reader.limits.maxChangesets,
        6,
        "changeset count",
      );
      const changesets: UploadChangeset[] = new Array(count);
      for (let index = 0; index < count; index++) {
        changesets[index] = readUploadChangeset(reader);
      }
      checkBlockEnd(reader);
      return { type: MessageType.Upload, sessionId, changesets };
    }
    case MessageType.UploadTooLarge: {
      const sessionId = readVarUint(reader);
      const clientVersion = readVarUint(reader);
      const changesetBytes = readVarUint(reader);
      // Smallest key: two empty strings, one length byte each.
      const count = readCount(
        reader,
        reader.limits.maxInstructions,
        2,
        "object count",
      );
      const objects: ObjectKey[] = new Array(count);
      for (let index = 0; index < count; index++) {
        const type = readString(reader);
        objects[index] = { type, id: readString(reader) };
      }
      return {
        type: MessageType.UploadTooLarge,
        sessionId,
        clientVersion,
        changesetBytes,
        objects,
      };
    }
    case MessageType.Mark:
      return {
        type: MessageType.Mark,
        sessionId: readVarUint(reader),
        requestId: readVarUint(reader),
      };
    case MessageType.MarkReply:
      return {
        type: MessageType.MarkReply,
        sessionId: readVarUint(reader),
        requestId: readVarUint(reader),
      };
    case MessageType.Unbind:
      return { type: MessageType.Unbind, sessionId: readVarUint(reader) };
    case MessageType.Unbound:
      return { type: MessageType.Unbound, sessionId: readVarUint(reader) };
    case MessageType.Ping:
      return { type: MessageType.Ping, timestamp: readF64(reader) };
    case MessageType.Pong:
      return { type: MessageType.Pong, timestamp: readF64(reader) };
    case MessageType.Refresh:
      return { type: MessageType.Refresh, accessToken: readString(reader) };
    case MessageType.Received: {
      const receivedBytes = readVarUint(reader);
      const timeoutMs = readVarUint(reader);
      return { type: MessageType.Received, receivedBytes, timeoutMs };
    }
    case MessageType.HandshakeReply:
      return {
        type: MessageType.HandshakeReply,
        version: readVarUint(reader),
        userId: readString(reader),
        maxMessageBytes: readVarUint(reader),
      };
    case MessageType.Ident: {
      const sessionId = readVarUint(reader);
      const id = readVarUint(reader);
      const salt = readVarUint(reader);
      return {
        type: MessageType.Ident,
        sessionId,
        clientIdentity: { id, salt },
      };
    }
    case MessageType.Download:
    case SALTED_DOWNLOAD_TAG: {
      const sessionId = readVarUint(reader);
      const serverVersion = readVarUint(reader);
      const serverVersionSalt = tag === SALTED_DOWNLOAD_TAG
        ? readVersionSalt(reader, "download")
        : 0;
      const lastIntegratedClientVersion = readVarUint(reader);
      const downloadableBytes = readVarUint(reader);
      const changesetBytes = readVarUint(reader);
      const changesets = readDownloadBlock(reader);
      // Two literals rather than a spread of an optional part: a DOWNLOAD
      // is decoded per message per client, and the spread allocated twice.
      return serverVersionSalt === 0
        ? {
          type: MessageType.Download,
          sessionId,
          serverVersion,
          lastIntegratedClientVersion,
          downloadableBytes,
          changesetBytes,
          changesets,
        }
        : {
          type: MessageType.Download,
          sessionId,
          serverVersion,
          serverVersionSalt,
          lastIntegratedClientVersion,
          downloadableBytes,
          changesetBytes,
          changesets,
        };
    }
    case MessageType.Reject: {
      const sessionId = readVarUint(reader);
      const clientVersion = readVarUint(reader);
      const code = readVarUint(reader);
      const message = readString(reader);
      const revert = readDownloadBlock(reader);
      return {
        type: MessageType.Reject,
        sessionId,
        clientVersion,
        code,
        message,
        revert,
      };
    }
    case MessageType.Error: {
      const hasSession = readFlag(reader, "error", "session flag");
      const sessionId = hasSession ? readVarUint(reader) : null;
      const code = readVarUint(reader);
      const tryAgain = readFlag(reader, "error", "try-again flag");
      return {
        type: MessageType.Error,
        sessionId,
        code,
        tryAgain,
        message: readString(reader),
      };
    }
    default:
      if ((tag & COMPRESSED_FLAG) !== 0) {
        throw new ProtocolError(
          "unknown_message",
          `Cannot decode message: compressed frame (tag 0x${
            tag.toString(16).padStart(2, "0")
          }); decompress it first`,
          0,
        );
      }
      throw new ProtocolError(
        "unknown_message",
        `Cannot decode message: unknown type 0x${
          tag.toString(16).padStart(2, "0")
        } at offset 0`,
        0,
      );
  }
}

/** Reads a changeset block of download changesets (PROTOCOL.md §5). */
function readDownloadBlock(reader: Reader): DownloadChangeset[] {
  readBlockSections(reader, false);
  // Smallest download changeset: a version, a stamp, an empty list.
  const count = readCount(
    reader,
    reader.limits.maxChangesets,
    5,
    "changeset count",
  );
  const changesets: DownloadChangeset[] = new Array(count);
  for (let index = 0; index < count; index++) {
    changesets[index] = readDownloadChangeset(reader);
  }
  checkBlockEnd(reader);
  return changesets;
}

/**
 * Decodes one upload changeset encoded by `encodeUploadChangeset`. Unlike
 * `decodeMessage`, its byte-array values never alias `bytes`: they are views
 * into one copy of the changeset's byte section.
 *
 * @param bytes The encoded changeset.
 * @param limits Bounds to enforce; missing ones take {@linkcode DEFAULT_LIMITS}.
 * @returns The changeset.
 * @throws {ProtocolError} For malformed input or bytes left over.
 *
 * @example Reading back a stored upload
 * ```ts
 * import { decodeUploadChangeset, encodeUploadChangeset } from "@tether/sync/protocol";
 * import assert from "node:assert/strict";
 *
 * const changeset = {
 *   clientVersion: 1,
 *   baseServerVersion: 0,
 *   stamp: { time: 5, counter: 0, node: 1 },
 *   instructions: [],
 * };
 * assert.deepEqual(decodeUploadChangeset(encodeUploadChangeset(changeset)), changeset);
 * ```
 */
export function decodeUploadChangeset(
  bytes: Uint8Array,
  limits: Partial<Limits> = DEFAULT_LIMITS,
): UploadChangeset {
  const reader = new Reader(bytes, resolveLimits(limits));
  readBlockSections(reader, true);
  const changeset = readUploadChangeset(reader);
  checkBlockEnd(reader);
  expectEnd(reader, "changeset");
  return changeset;
}

/**
 * Decodes one download changeset encoded by `encodeDownloadChangeset`.
 * Unlike `decodeMessage`, its byte-array values never alias `bytes`: they
 * are views into one copy of the changeset's byte section.
 *
 * @param bytes The encoded changeset.
 * @param limits Bounds to enforce; missing ones take {@linkcode DEFAULT_LIMITS}.
 * @returns The changeset.
 * @throws {ProtocolError} For malformed input or bytes left over.
 *
 * @example Reading back a stored history entry
 * ```ts
 * import { decodeDownloadChangeset, encodeDownloadChangeset } from "@tether/sync/protocol";
 * import assert from "node:assert/strict";
 *
 * const changeset = { serverVersion: 3, stamp: { time: 5, counter: 0, node: 1 }, instructions: [] };
 * assert.deepEqual(decodeDownloadChangeset(encodeDownloadChangeset(changeset)), changeset);
 * ```
 */
export function decodeDownloadChangeset(
  bytes: Uint8Array,
  limits: Partial<Limits> = DEFAULT_LIMITS,
): DownloadChangeset {
  const reader = new Reader(bytes, resolveLimits(limits));
  readBlockSections(reader, true);
  const changeset = readDownloadChangeset(reader);
  checkBlockEnd(reader);
  expectEnd(reader, "changeset");
  return changeset;
}

function expectEnd(reader: Reader, what: string): void {
  if (reader.pos !== reader.end) {
    throw new ProtocolError(
      "trailing_bytes",
      `Cannot decode ${what}: ${
        reader.end - reader.pos
      } bytes left over at offset ${reader.pos}`,
      reader.pos,
    );
  }
}
