// This module is browser compatible.

import type { DownloadChangeset, UploadChangeset } from "../model/changeset.ts";

/**
 * Message tags, the first byte of every frame (PROTOCOL.md §2, §4). Client
 * to server messages use 0x01–0x3f, server to client 0x41–0x7f; the top bit
 * of the tag byte marks a compressed body and is not part of the tag.
 *
 * @example Telling a message's kind
 * ```ts
 * import { decodeMessage, encodeMessage, MessageType } from "@tether/sync/protocol";
 * import assert from "node:assert/strict";
 *
 * const frame = encodeMessage({ type: MessageType.Ping, timestamp: 1 });
 * assert.equal(frame[0], MessageType.Ping);
 * assert.equal(decodeMessage(frame).type, MessageType.Ping);
 * ```
 */
export const MessageType = {
  /** Client → server: first message, protocol range and access token. */
  Handshake: 0x01,
  /** Client → server: start a session on a realm path. */
  Bind: 0x02,
  /** Client → server: local changesets for a bound session. */
  Upload: 0x03,
  /** Client → server: ask to be told when the download has caught up. */
  Mark: 0x04,
  /** Client → server: end a session. */
  Unbind: 0x05,
  /** Client → server: keepalive. */
  Ping: 0x06,
  /** Client → server: replace the connection's access token in-band. */
  Refresh: 0x07,
  /** Client → server: how many bytes of server frames have arrived. */
  Received: 0x08,
  /**
   * Client → server (version 3): a changeset too large for the server's
   * frame limit, named by the objects it touched, for the server to refuse.
   */
  UploadTooLarge: 0x09,
  /** Server → client: the negotiated protocol version. */
  HandshakeReply: 0x41,
  /** Server → client: a newly issued client identity for a session. */
  Ident: 0x42,
  /** Server → client: history (or snapshot) for a session, plus acks. */
  Download: 0x43,
  /** Server → client: everything held when the MARK arrived was sent. */
  MarkReply: 0x44,
  /** Server → client: the session is unbound (reply to UNBIND). */
  Unbound: 0x45,
  /** Server → client: keepalive answer, echoing the timestamp. */
  Pong: 0x46,
  /** Server → client: a connection- or session-scoped error. */
  Error: 0x47,
  /** Server → client: one uploaded changeset refused, with what to revert to. */
  Reject: 0x48,
} as const;

/** One of {@linkcode MessageType}'s values. */
export type MessageType = typeof MessageType[keyof typeof MessageType];

/**
 * The identity the server issues to one client of one realm, used to
 * deduplicate re-uploads. The salt stops another client from claiming it.
 *
 * @example An identity kept with a local realm
 * ```ts
 * import type { ClientIdentity } from "@tether/sync/protocol";
 *
 * const identity: ClientIdentity = { id: 7, salt: 123_456_789 };
 * ```
 */
export interface ClientIdentity {
  /** Positive integer, unique within the realm. */
  id: number;
  /** Random positive integer below 2^53 chosen by the server. */
  salt: number;
}

/**
 * Client → server: must be the first message on a connection.
 *
 * @example Opening a connection
 * ```ts
 * import { type HandshakeMessage, MessageType } from "@tether/sync/protocol";
 *
 * const hello: HandshakeMessage = {
 *   type: MessageType.Handshake,
 *   minVersion: 1,
 *   maxVersion: 1,
 *   accessToken: "eyJhbGciOiJIUzI1NiJ9.e30.signature",
 * };
 * ```
 */
export interface HandshakeMessage {
  /** Always `MessageType.Handshake`. */
  type: typeof MessageType.Handshake;
  /** Lowest protocol version the client speaks. */
  minVersion: number;
  /** Highest protocol version the client speaks. */
  maxVersion: number;
  /** The access token from `POST /login` (may be empty for none). */
  accessToken: string;
}

/**
 * Client → server: starts session `sessionId` on realm `path`.
 *
 * @example Binding a session without an identity yet
 * ```ts
 * import { type BindMessage, MessageType } from "@tether/sync/protocol";
 *
 * const bind: BindMessage = {
 *   type: MessageType.Bind,
 *   sessionId: 1,
 *   path: "/~/todos",
 *   clientIdentity: null,
 *   downloadCursor: 0,
 *   uploadCursor: 0,
 * };
 * ```
 */
export interface BindMessage {
  /** Always `MessageType.Bind`. */
  type: typeof MessageType.Bind;
  /** Chosen by the client, unique among its live sessions on this socket. */
  sessionId: number;
  /**
   * The realm path as the user wrote it; the server replaces a `~` segment
   * with the authenticated user's id.
   */
  path: string;
  /** The identity issued earlier for this realm, or null to get one. */
  clientIdentity: ClientIdentity | null;
  /** The last server version the client has integrated (0 = none). */
  downloadCursor: number;
  /**
   * The salt the server gave `downloadCursor` (the DOWNLOAD's
   * `serverVersionSalt`), so the server can tell its version from another
   * history's version of the same number (PROTOCOL.md §4.2): written after
   * `uploadCursor` when not 0. Protocol version 2 only; absent or 0 when
   * unknown, which the server does not check (decoded as absent).
   */
  downloadCursorSalt?: number;
  /** The last client version the client knows was acknowledged (0 = none). */
  uploadCursor: number;
}

/**
 * Client → server: local changesets, in client-version order.
 *
 * @example Uploading a delete
 * ```ts
 * import { MessageType, type UploadMessage } from "@tether/sync/protocol";
 *
 * const upload: UploadMessage = {
 *   type: MessageType.Upload,
 *   sessionId: 1,
 *   changesets: [{
 *     clientVersion: 3,
 *     baseServerVersion: 10,
 *     stamp: { time: 1_767_225_600_000, counter: 0, node: 42 },
 *     instructions: [
 *       { op: "delete", type: "Task", id: "t1", fields: null, stamp: null },
 *     ],
 *   }],
 * };
 * ```
 */
export interface UploadMessage {
  /** Always `MessageType.Upload`. */
  type: typeof MessageType.Upload;
  /** The bound session the changesets belong to. */
  sessionId: number;
  /** The changesets, in increasing client version. */
  changesets: UploadChangeset[];
}

/**
 * Client → server, protocol version 3 (PROTOCOL.md §4.17): a changeset that
 * does not fit in a frame under the server's `maxMessageBytes`, sent in its
 * place so the server refuses it with REJECT `message_too_large` (and the
 * server's state of the objects it touched) instead of the session ending.
 *
 * @example Naming a changeset too large to upload
 * ```ts
 * import { MessageType, type UploadTooLargeMessage } from "@tether/sync/protocol";
 *
 * const stub: UploadTooLargeMessage = {
 *   type: MessageType.UploadTooLarge,
 *   sessionId: 1,
 *   clientVersion: 4,
 *   changesetBytes: 20_000_000,
 *   objects: [{ type: "Photo", id: "p1" }],
 * };
 * ```
 */
export interface UploadTooLargeMessage {
  /** Always `MessageType.UploadTooLarge`. */
  type: typeof MessageType.UploadTooLarge;
  /** The bound session the changeset belongs to. */
  sessionId: number;
  /** The changeset's client version, in order with the session's uploads. */
  clientVersion: number;
  /** The changeset's encoded size, in bytes, for the refusal's message. */
  changesetBytes: number;
  /** Every object the changeset touched, each once. */
  objects: ObjectKey[];
}

/**
 * One object of a realm, by type and id.
 *
 * @example
 * ```ts
 * import type { ObjectKey } from "@tether/sync/protocol";
 *
 * const ref: ObjectKey = { type: "Task", id: "t1" };
 * ```
 */
export interface ObjectKey {
  /** The object's type name. */
  type: string;
  /** The object's id. */
  id: string;
}

/**
 * Client → server: answered by MARK_REPLY once caught up.
 *
 * @example Asking to be told when caught up
 * ```ts
 * import { type MarkMessage, MessageType } from "@tether/sync/protocol";
 *
 * const mark: MarkMessage = { type: MessageType.Mark, sessionId: 1, requestId: 5 };
 * ```
 */
export interface MarkMessage {
  /** Always `MessageType.Mark`. */
  type: typeof MessageType.Mark;
  /** The bound session to report on. */
  sessionId: number;
  /** Chosen by the client; echoed in the reply. */
  requestId: number;
}

/**
 * Client → server: ends a session; answered by UNBOUND.
 *
 * @example Ending a session
 * ```ts
 * import { MessageType, type UnbindMessage } from "@tether/sync/protocol";
 *
 * const unbind: UnbindMessage = { type: MessageType.Unbind, sessionId: 1 };
 * ```
 */
export interface UnbindMessage {
  /** Always `MessageType.Unbind`. */
  type: typeof MessageType.Unbind;
  /** The session to end. */
  sessionId: number;
}

/**
 * Client → server: keepalive; answered by PONG.
 *
 * @example A keepalive
 * ```ts
 * import { MessageType, type PingMessage } from "@tether/sync/protocol";
 *
 * const ping: PingMessage = { type: MessageType.Ping, timestamp: performance.now() };
 * ```
 */
export interface PingMessage {
  /** Always `MessageType.Ping`. */
  type: typeof MessageType.Ping;
  /** Any float64 (the client's clock, in milliseconds); echoed. */
  timestamp: number;
}

/**
 * Client → server: a fresh access token for the same user.
 *
 * @example Replacing the token in-band
 * ```ts
 * import { MessageType, type RefreshMessage } from "@tether/sync/protocol";
 *
 * const refresh: RefreshMessage = {
 *   type: MessageType.Refresh,
 *   accessToken: "eyJhbGciOiJIUzI1NiJ9.e30.signature",
 * };
 * ```
 */
export interface RefreshMessage {
  /** Always `MessageType.Refresh`. */
  type: typeof MessageType.Refresh;
  /** The new access token, from `POST /login` with the refresh token. */
  accessToken: string;
}

/**
 * How many bytes of server frames a client lets arrive between two RECEIVED
 * messages (PROTOCOL.md §4.8): it sends one once at least this many have
 * arrived since its last, so a bulk download is acknowledged every few
 * frames while live updates of a few hundred bytes cost no extra traffic.
 *
 * @example When a client acknowledges
 * ```ts
 * import { RECEIVED_INTERVAL_BYTES } from "@tether/sync/protocol";
 * import assert from "node:assert/strict";
 *
 * const unacknowledged = 9000;
 * assert.equal(unacknowledged >= RECEIVED_INTERVAL_BYTES, true);
 * ```
 */
export const RECEIVED_INTERVAL_BYTES = 8192;

/**
 * The smallest server frame that makes a client send a RECEIVED that is due
 * (PROTOCOL.md §4.8). Smaller frames are counted, and the next frame of at
 * least this size acknowledges them too: a small frame is live traffic, which
 * needs no pacing, and a RECEIVED the server does not answer would make the
 * client's next frame wait for the server's delayed TCP ACK (Nagle's
 * algorithm, on a client socket without `TCP_NODELAY`): about 40 ms.
 *
 * @example Which frames send a due RECEIVED
 * ```ts
 * import {
 *   RECEIVED_INTERVAL_BYTES,
 *   RECEIVED_TRIGGER_FRAME_BYTES,
 * } from "@tether/sync/protocol";
 * import assert from "node:assert/strict";
 *
 * const due = (unacknowledged: number, frame: number) =>
 *   unacknowledged >= RECEIVED_INTERVAL_BYTES &&
 *   frame >= RECEIVED_TRIGGER_FRAME_BYTES;
 * assert.equal(due(9000, 300), false);
 * assert.equal(due(9000, 16_384), true);
 * ```
 */
export const RECEIVED_TRIGGER_FRAME_BYTES = 2048;

/**
 * The tag of a DOWNLOAD that carries a version salt (PROTOCOL.md §4.11):
 * `serverVersionSalt` follows `serverVersion`. Protocol version 2 only; it
 * decodes as a {@linkcode DownloadMessage} (`type` `MessageType.Download`)
 * with its salt, and `encodeMessage` writes it for a DOWNLOAD whose salt is
 * not 0.
 *
 * @example Telling the two DOWNLOAD forms apart by their first byte
 * ```ts
 * import { type DownloadMessage, encodeMessage, MessageType, SALTED_DOWNLOAD_TAG } from "@tether/sync/protocol";
 * import assert from "node:assert/strict";
 *
 * const download: DownloadMessage = {
 *   type: MessageType.Download,
 *   sessionId: 1,
 *   serverVersion: 4,
 *   lastIntegratedClientVersion: 0,
 *   downloadableBytes: 0,
 *   changesetBytes: 0,
 *   changesets: [],
 * };
 * assert.equal(encodeMessage(download)[0], MessageType.Download);
 * assert.equal(
 *   encodeMessage({ ...download, serverVersionSalt: 9 })[0],
 *   SALTED_DOWNLOAD_TAG,
 * );
 * ```
 */
export const SALTED_DOWNLOAD_TAG = 0x49;

/**
 * The largest version salt (DOWNLOAD `serverVersionSalt`, BIND
 * `downloadCursorSalt`): salts are in [0, 2^32 − 1] (PROTOCOL.md §4.11).
 *
 * @example Checking a salt before sending it
 * ```ts
 * import { MAX_VERSION_SALT } from "@tether/sync/protocol";
 * import assert from "node:assert/strict";
 *
 * assert.equal(MAX_VERSION_SALT, 2 ** 32 - 1);
 * ```
 */
export const MAX_VERSION_SALT = 0xffff_ffff;

/**
 * Client → server: how many bytes of server frames have arrived on this
 * connection, and how long the client waits for a message. The server
 * paces its DOWNLOAD batches by it (PROTOCOL.md §4.8).
 *
 * @example Acknowledging what arrived
 * ```ts
 * import { MessageType, type ReceivedMessage } from "@tether/sync/protocol";
 *
 * const received: ReceivedMessage = {
 *   type: MessageType.Received,
 *   receivedBytes: 65_536,
 *   timeoutMs: 120_000,
 * };
 * ```
 */
export interface ReceivedMessage {
  /** Always `MessageType.Received`. */
  type: typeof MessageType.Received;
  /**
   * Bytes of every server frame received on this connection so far,
   * HANDSHAKE_REPLY included, as they came on the wire (compressed frames
   * at their compressed size).
   */
  receivedBytes: number;
  /**
   * The longest the client waits for a message before it gives up on the
   * connection or on a session, in milliseconds; 0 when it never gives up.
   */
  timeoutMs: number;
}

/**
 * Server → client: answer to HANDSHAKE.
 *
 * @example Accepting a connection
 * ```ts
 * import { type HandshakeReplyMessage, MessageType } from "@tether/sync/protocol";
 *
 * const reply: HandshakeReplyMessage = {
 *   type: MessageType.HandshakeReply,
 *   version: 1,
 *   userId: "alice",
 *   maxMessageBytes: 16 * 1024 * 1024,
 * };
 * ```
 */
export interface HandshakeReplyMessage {
  /** Always `MessageType.HandshakeReply`. */
  type: typeof MessageType.HandshakeReply;
  /** The protocol version both ends now speak. */
  version: number;
  /** The user id the token was accepted for. */
  userId: string;
  /**
   * The largest frame the server accepts, in bytes; the client splits its
   * uploads to fit.
   */
  maxMessageBytes: number;
}

/**
 * Server → client: a client identity for a session bound without one.
 *
 * @example Issuing an identity
 * ```ts
 * import { type IdentMessage, MessageType } from "@tether/sync/protocol";
 *
 * const ident: IdentMessage = {
 *   type: MessageType.Ident,
 *   sessionId: 1,
 *   clientIdentity: { id: 7, salt: 123_456_789 },
 * };
 * ```
 */
export interface IdentMessage {
  /** Always `MessageType.Ident`. */
  type: typeof MessageType.Ident;
  /** The session that was bound without an identity. */
  sessionId: number;
  /** The identity to keep with the local realm and send in later BINDs. */
  clientIdentity: ClientIdentity;
}

/**
 * Server → client: changesets, progress and the upload acknowledgement.
 *
 * @example Sending a changeset and an acknowledgement
 * ```ts
 * import { type DownloadMessage, MessageType } from "@tether/sync/protocol";
 *
 * const download: DownloadMessage = {
 *   type: MessageType.Download,
 *   sessionId: 1,
 *   serverVersion: 11,
 *   serverVersionSalt: 0x5eed_f00d,
 *   lastIntegratedClientVersion: 3,
 *   downloadableBytes: 0,
 *   changesetBytes: 31,
 *   changesets: [{
 *     serverVersion: 11,
 *     stamp: { time: 1_767_225_600_000, counter: 0, node: 7 },
 *     instructions: [
 *       { op: "update", type: "Task", id: "t1", fields: { done: true }, stamp: null },
 *     ],
 *   }],
 * };
 * ```
 */
export interface DownloadMessage {
  /** Always `MessageType.Download`. */
  type: typeof MessageType.Download;
  /** The bound session the changesets are for. */
  sessionId: number;
  /**
   * The server version the client has reached once it integrates this
   * message (its new download cursor).
   */
  serverVersion: number;
  /**
   * The random salt the server chose for `serverVersion` when it committed
   * it, in [0, 2^32 − 1] (0 = unknown, and for version 0): the client keeps
   * it with its download cursor and sends it back in BIND
   * (PROTOCOL.md §4.11). Protocol version 2 only: a DOWNLOAD with a salt
   * other than 0 travels under {@linkcode SALTED_DOWNLOAD_TAG}; one without
   * (absent or 0) is the version 1 form.
   */
  serverVersionSalt?: number;
  /**
   * The last client version of this client the server has integrated: the
   * upload acknowledgement.
   */
  lastIntegratedClientVersion: number;
  /**
   * Bytes the server still has to send this session after this message,
   * counted as the stored size of each changeset (or snapshot record) it
   * will send; 0 once the session has caught up.
   */
  downloadableBytes: number;
  /**
   * Bytes this message takes off the server's "still to download" count, in
   * the unit of `downloadableBytes`: the stored sizes of the history
   * changesets it moves the client past, or, while a snapshot is sent, the
   * stored sizes of the snapshot records it carries; 0 for an
   * acknowledgement only. Changesets this session uploaded are left out (the
   * server never counts them as still to download); those uploaded on an
   * earlier connection count, although they are skipped, not sent. With no
   * upload in between, one DOWNLOAD's `downloadableBytes` equals the next
   * one's `changesetBytes + downloadableBytes`: a client adding these up
   * counts exactly what the server counted.
   */
  changesetBytes: number;
  /** Changesets from other clients (or snapshot chunks), in order. */
  changesets: DownloadChangeset[];
}

/**
 * Server → client: answer to MARK.
 *
 * @example Answering a MARK
 * ```ts
 * import { type MarkReplyMessage, MessageType } from "@tether/sync/protocol";
 *
 * const reply: MarkReplyMessage = { type: MessageType.MarkReply, sessionId: 1, requestId: 5 };
 * ```
 */
export interface MarkReplyMessage {
  /** Always `MessageType.MarkReply`. */
  type: typeof MessageType.MarkReply;
  /** The session the MARK came from. */
  sessionId: number;
  /** The MARK's request id. */
  requestId: number;
}

/**
 * Server → client: answer to UNBIND; the session id may be reused.
 *
 * @example Confirming an UNBIND
 * ```ts
 * import { MessageType, type UnboundMessage } from "@tether/sync/protocol";
 *
 * const unbound: UnboundMessage = { type: MessageType.Unbound, sessionId: 1 };
 * ```
 */
export interface UnboundMessage {
  /** Always `MessageType.Unbound`. */
  type: typeof MessageType.Unbound;
  /** The session that ended. */
  sessionId: number;
}

/**
 * Server → client: answer to PING.
 *
 * @example Answering a PING
 * ```ts
 * import { MessageType, type PongMessage } from "@tether/sync/protocol";
 *
 * const pong: PongMessage = { type: MessageType.Pong, timestamp: 1234.5 };
 * ```
 */
export interface PongMessage {
  /** Always `MessageType.Pong`. */
  type: typeof MessageType.Pong;
  /** The PING's timestamp, unchanged. */
  timestamp: number;
}

/**
 * Server → client: an error, scoped to a session or to the connection.
 *
 * @example Refusing a session
 * ```ts
 * import { ERROR_CODES, type ErrorMessage, MessageType } from "@tether/sync/protocol";
 *
 * const error: ErrorMessage = {
 *   type: MessageType.Error,
 *   sessionId: 1,
 *   code: ERROR_CODES.permission_denied.code,
 *   tryAgain: false,
 *   message: "User alice may not read /bob/todos",
 * };
 * ```
 */
export interface ErrorMessage {
  /** Always `MessageType.Error`. */
  type: typeof MessageType.Error;
  /** The session the error ends, or null when it ends the connection. */
  sessionId: number | null;
  /** A number from the error code table (`error_codes.ts`). */
  code: number;
  /** Whether retrying later (after a reconnect or refresh) may succeed. */
  tryAgain: boolean;
  /** Human-readable detail. */
  message: string;
}

/**
 * Server → client: the server refused one uploaded changeset on its own
 * merits (the user may only read the realm, a validation hook said no) and
 * the session goes on (PROTOCOL.md §4.16). The changeset counts as settled:
 * later DOWNLOADs acknowledge client versions past it, and a re-upload of
 * it is refused again (its first REJECT may have been lost with a
 * connection), never stored. `revert` holds the server's current state of every object
 * the changeset touched, each instruction with its own stamp, so the client
 * can put those objects back without keeping any history.
 *
 * @example Refusing a write to a read-only realm
 * ```ts
 * import { ERROR_CODES, MessageType, type RejectMessage } from "@tether/sync/protocol";
 *
 * const reject: RejectMessage = {
 *   type: MessageType.Reject,
 *   sessionId: 1,
 *   clientVersion: 4,
 *   code: ERROR_CODES.write_not_allowed.code,
 *   message: "Cannot write to /team/board: read-only",
 *   revert: [{
 *     serverVersion: 12,
 *     stamp: { time: 1_767_225_600_000, counter: 0, node: 0 },
 *     instructions: [
 *       { op: "delete", type: "Task", id: "t1", fields: null, stamp: null },
 *     ],
 *   }],
 * };
 * ```
 */
export interface RejectMessage {
  /** Always `MessageType.Reject`. */
  type: typeof MessageType.Reject;
  /** The bound session the changeset was uploaded on. */
  sessionId: number;
  /** The refused changeset's client version. */
  clientVersion: number;
  /** Why: a number from the error code table (`error_codes.ts`). */
  code: number;
  /** Human-readable detail. */
  message: string;
  /**
   * The server's state of the objects the changeset touched, each
   * instruction with its own stamp, as a snapshot sends it (an object the
   * server never held comes as a delete at the zero stamp).
   */
  revert: DownloadChangeset[];
}

/**
 * Any message a client sends.
 *
 * @example A client message
 * ```ts
 * import { type ClientMessage, MessageType } from "@tether/sync/protocol";
 *
 * const message: ClientMessage = { type: MessageType.Unbind, sessionId: 1 };
 * ```
 */
export type ClientMessage =
  | HandshakeMessage
  | BindMessage
  | UploadMessage
  | UploadTooLargeMessage
  | MarkMessage
  | UnbindMessage
  | PingMessage
  | RefreshMessage
  | ReceivedMessage;

/**
 * Any message a server sends.
 *
 * @example A server message
 * ```ts
 * import { MessageType, type ServerMessage } from "@tether/sync/protocol";
 *
 * const message: ServerMessage = { type: MessageType.Unbound, sessionId: 1 };
 * ```
 */
export type ServerMessage =
  | HandshakeReplyMessage
  | IdentMessage
  | DownloadMessage
  | MarkReplyMessage
  | UnboundMessage
  | PongMessage
  | ErrorMessage
  | RejectMessage;

/**
 * Any protocol message.
 *
 * @example Dispatching on the type
 * ```ts
 * import { decodeMessage, encodeMessage, type Message, MessageType } from "@tether/sync/protocol";
 * import assert from "node:assert/strict";
 *
 * function describe(message: Message): string {
 *   switch (message.type) {
 *     case MessageType.Pong:
 *       return `pong ${message.timestamp}`;
 *     default:
 *       return "other";
 *   }
 * }
 * const frame = encodeMessage({ type: MessageType.Pong, timestamp: 2 });
 * assert.equal(describe(decodeMessage(frame)), "pong 2");
 * ```
 */
export type Message = ClientMessage | ServerMessage;
