// This module is browser compatible.

import type { DownloadChangeset, UploadChangeset } from "../model/changeset.ts";

/**
 * Message tags, the first byte of every frame (PROTOCOL.md §3). Client to
 * server messages use 0x01–0x3f, server to client 0x41–0x7f; the top bit of
 * the tag byte marks a compressed body and is not part of the tag.
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
} as const;

/** One of {@linkcode MessageType}'s values. */
export type MessageType = typeof MessageType[keyof typeof MessageType];

/**
 * The identity the server issues to one client of one realm, used to
 * deduplicate re-uploads. The salt stops another client from claiming it.
 */
export interface ClientIdentity {
  /** Positive integer, unique within the realm. */
  id: number;
  /** Random positive integer below 2^53 chosen by the server. */
  salt: number;
}

/** Client → server: must be the first message on a connection. */
export interface HandshakeMessage {
  type: typeof MessageType.Handshake;
  /** Lowest protocol version the client speaks. */
  minVersion: number;
  /** Highest protocol version the client speaks. */
  maxVersion: number;
  /** The access token from `POST /login` (may be empty for none). */
  accessToken: string;
}

/** Client → server: starts session `sessionId` on realm `path`. */
export interface BindMessage {
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
  /** The last client version the client knows was acknowledged (0 = none). */
  uploadCursor: number;
}

/** Client → server: local changesets, in client-version order. */
export interface UploadMessage {
  type: typeof MessageType.Upload;
  sessionId: number;
  changesets: UploadChangeset[];
}

/** Client → server: answered by MARK_REPLY once caught up. */
export interface MarkMessage {
  type: typeof MessageType.Mark;
  sessionId: number;
  /** Chosen by the client; echoed in the reply. */
  requestId: number;
}

/** Client → server: ends a session; answered by UNBOUND. */
export interface UnbindMessage {
  type: typeof MessageType.Unbind;
  sessionId: number;
}

/** Client → server: keepalive; answered by PONG. */
export interface PingMessage {
  type: typeof MessageType.Ping;
  /** Any float64 (the client's clock, in milliseconds); echoed. */
  timestamp: number;
}

/** Client → server: a fresh access token for the same user. */
export interface RefreshMessage {
  type: typeof MessageType.Refresh;
  accessToken: string;
}

/** Server → client: answer to HANDSHAKE. */
export interface HandshakeReplyMessage {
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

/** Server → client: a client identity for a session bound without one. */
export interface IdentMessage {
  type: typeof MessageType.Ident;
  sessionId: number;
  clientIdentity: ClientIdentity;
}

/** Server → client: changesets, progress and the upload acknowledgement. */
export interface DownloadMessage {
  type: typeof MessageType.Download;
  sessionId: number;
  /**
   * The server version the client has reached once it integrates this
   * message (its new download cursor).
   */
  serverVersion: number;
  /**
   * The last client version of this client the server has integrated: the
   * upload acknowledgement.
   */
  lastIntegratedClientVersion: number;
  /** Bytes the server still has to send this session after this message. */
  downloadableBytes: number;
  /** Changesets from other clients (or snapshot chunks), in order. */
  changesets: DownloadChangeset[];
}

/** Server → client: answer to MARK. */
export interface MarkReplyMessage {
  type: typeof MessageType.MarkReply;
  sessionId: number;
  requestId: number;
}

/** Server → client: answer to UNBIND; the session id may be reused. */
export interface UnboundMessage {
  type: typeof MessageType.Unbound;
  sessionId: number;
}

/** Server → client: answer to PING. */
export interface PongMessage {
  type: typeof MessageType.Pong;
  timestamp: number;
}

/** Server → client: an error, scoped to a session or to the connection. */
export interface ErrorMessage {
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

/** Any message a client sends. */
export type ClientMessage =
  | HandshakeMessage
  | BindMessage
  | UploadMessage
  | MarkMessage
  | UnbindMessage
  | PingMessage
  | RefreshMessage;

/** Any message a server sends. */
export type ServerMessage =
  | HandshakeReplyMessage
  | IdentMessage
  | DownloadMessage
  | MarkReplyMessage
  | UnboundMessage
  | PongMessage
  | ErrorMessage;

/** Any protocol message. */
export type Message = ClientMessage | ServerMessage;
