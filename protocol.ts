// This module is browser compatible.

/**
 * Tether's wire protocol: the binary messages a client and a sync server
 * exchange over one WebSocket, their encoder and decoder, frame compression,
 * the error code table, the decoder's limits and protocol versioning.
 *
 * Applications do not need this entry point: the client (`@tether/sync`)
 * and the server (`@tether/sync/server`) speak the protocol for them. It is
 * for tools, tests, and anyone writing a compatible peer; the byte-level
 * specification is `docs/PROTOCOL.md`.
 *
 * One WebSocket binary message is one frame. Frames are encoded with
 * {@linkcode encodeMessage} and decoded with {@linkcode decodeMessage};
 * large UPLOAD and DOWNLOAD frames may be compressed with
 * {@linkcode compressFrame} and must then go through
 * {@linkcode decompressFrame} before decoding.
 *
 * @example A round trip through the wire format
 * ```ts
 * import {
 *   compressFrame,
 *   decodeMessage,
 *   decompressFrame,
 *   encodeMessage,
 *   MessageType,
 *   type UploadMessage,
 * } from "@tether/sync/protocol";
 * import assert from "node:assert/strict";
 *
 * const upload: UploadMessage = {
 *   type: MessageType.Upload,
 *   sessionId: 1,
 *   changesets: [{
 *     clientVersion: 1,
 *     baseServerVersion: 0,
 *     stamp: { time: Date.UTC(2026, 0, 1), counter: 0, node: 42 },
 *     instructions: [{
 *       op: "put",
 *       type: "Task",
 *       id: "2f1c9a0e-5b7d-4e23-9c41-7d0b8e6f1a35",
 *       fields: { title: "Buy milk", done: false, due: new Date(0) },
 *       stamp: null,
 *     }],
 *   }],
 * };
 * const frame = await compressFrame(encodeMessage(upload));
 * assert.deepEqual(decodeMessage(await decompressFrame(frame)), upload);
 * ```
 *
 * @module
 */

export {
  decodeDownloadChangeset,
  decodeMessage,
  decodeUploadChangeset,
} from "./src/protocol/decode.ts";
export {
  encodeDownloadChangeset,
  encodeMessage,
  encodeUploadChangeset,
} from "./src/protocol/encode.ts";
export { Writer } from "./src/protocol/writer.ts";
export {
  compressFrame,
  COMPRESSION_THRESHOLD,
  type CompressOptions,
  decompressFrame,
  isCompressedFrame,
} from "./src/protocol/compression.ts";
export {
  type BindMessage,
  type ClientIdentity,
  type ClientMessage,
  type DownloadMessage,
  type ErrorMessage,
  type HandshakeMessage,
  type HandshakeReplyMessage,
  type IdentMessage,
  type MarkMessage,
  type MarkReplyMessage,
  MAX_VERSION_SALT,
  type Message,
  MessageType,
  type ObjectKey,
  type PingMessage,
  type PongMessage,
  RECEIVED_INTERVAL_BYTES,
  RECEIVED_TRIGGER_FRAME_BYTES,
  type ReceivedMessage,
  type RefreshMessage,
  type RejectMessage,
  SALTED_DOWNLOAD_TAG,
  type ServerMessage,
  type UnbindMessage,
  type UnboundMessage,
  type UploadMessage,
  type UploadTooLargeMessage,
} from "./src/protocol/messages.ts";
export { DEFAULT_LIMITS, type Limits } from "./src/protocol/limits.ts";
export {
  ERROR_CODES,
  type ErrorCodeInfo,
  type ErrorCodeName,
  errorCodeName,
  errorCodeNumber,
} from "./src/protocol/error_codes.ts";
export {
  MIN_PROTOCOL_VERSION,
  negotiateVersion,
  PROTOCOL_VERSION,
} from "./src/protocol/version.ts";
export {
  ProtocolError,
  type ProtocolErrorCode,
} from "./src/protocol/protocol_error.ts";
export {
  type DownloadChangeset,
  type Instruction,
  InstructionOp,
  type UploadChangeset,
} from "./src/model/changeset.ts";
export type { Hlc } from "./src/model/hlc.ts";
export type { Fields, Value } from "./src/model/value.ts";
