/**
 * What a bound session is created with and what it needs from its
 * connection (docs/ARCHITECTURE.md "Session flow on one connection").
 */

import type { ClientIdentity, ServerMessage } from "../protocol/messages.ts";
import type { ChangesetValidator } from "./changeset_validation.ts";
import type { Log } from "./log.ts";
import type { Permission } from "./permissions.ts";
import type { RealmHub } from "./realm_hub.ts";
import type { Session } from "./session.ts";
import type { SessionError } from "./session_error.ts";

/** What a session needs from its connection. */
export interface SessionTransport {
  /** Encodes and sends a message on the socket. */
  send(message: ServerMessage): void;
  /** Bytes queued on the socket but not yet written to the network. */
  bufferedAmount(): number;
  /**
   * Whether `bufferedAmount()` is above `limit`: what the download asks
   * before each DOWNLOAD, answered without reading the socket while a bound
   * kept on it is under the limit.
   */
  buffersMoreThan(limit: number): boolean;
  /**
   * The largest DOWNLOAD to build now, in bytes: at most
   * `downloadBatchBytes`, less while the client's acknowledgements show a
   * slow link (`delivery_rate.ts`).
   */
  batchBytes(): number;
  /** Ends the session with a session-scoped ERROR. */
  failSession(session: Session, error: SessionError): void;
}

/** Everything a session is created with. */
export interface SessionInit {
  id: number;
  /** The resolved realm path. */
  path: string;
  userId: string;
  identity: ClientIdentity;
  permission: Permission;
  hub: RealmHub;
  transport: SessionTransport;
  /** The client's download cursor. */
  downloadCursor: number;
  /** The salt of that version (0 = unknown). */
  cursorSalt: number;
  /**
   * Cumulative history bytes at the download cursor, or null when that
   * version is no longer stored (the session must bootstrap).
   */
  cursorBytes: number | null;
  /** The client version the session's first DOWNLOAD acknowledges. */
  lastIntegratedClientVersion: number;
  /**
   * The identity's last settled (integrated or refused) client version, when
   * above `lastIntegratedClientVersion`: uploads up to it are re-uploads,
   * refused again or acknowledged without being stored (default:
   * `lastIntegratedClientVersion`).
   */
  settledClientVersion?: number;
  /** The protocol version the connection negotiated. */
  protocolVersion: number;
  /** The server's validation hook, if any. */
  validateChangeset: ChangesetValidator | undefined;
  /** The server's frame limit (`limits.maxMessageBytes`). */
  maxMessageBytes: number;
  /** Largest DOWNLOAD to build, in bytes. */
  downloadBatchBytes: number;
  /** Pause reading storage while the socket buffers more than this. */
  highWaterBytes: number;
  /**
   * Called once, with the first DOWNLOAD that leaves nothing more to
   * download (the bootstrap histogram).
   */
  onCaughtUp?: (() => void) | undefined;
  /** Aborts when the server shuts down. */
  lifetime: AbortSignal;
  /** Aborts when in-flight commits must give up (shutdown deadline). */
  commitSignal: AbortSignal;
  log: Log;
}
