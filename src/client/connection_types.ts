// This module is browser compatible.

/**
 * The contracts around a client connection: what it needs (options, a
 * token source), what it tells the sessions attached to it, and the
 * channel a bound session sends on (docs/CLIENT.md "Connection, retries
 * and keepalive").
 */

import type { UploadWindow } from "./upload_window.ts";
import type { ClientMessage, ServerMessage } from "../protocol/messages.ts";
import type { Clock } from "../util/clock.ts";
import type { ResolvedReconnectOptions } from "./backoff.ts";
import type { ResolvedKeepaliveOptions } from "./keepalive.ts";
import type { Logger } from "./log.ts";
import type { SyncError } from "./sync_error.ts";

/** An access token and what the client knows of its lifetime. */
export interface AccessToken {
  /** The token sent in HANDSHAKE and REFRESH. */
  token: string;
  /** When the server says it expires (epoch ms), if it said. */
  expiresAt: number | undefined;
  /** When the client received it (epoch ms, the app's clock). */
  obtainedAt: number;
}

/** The most lead a refresh needs: a login round trip on a slow link. */
const REFRESH_LEAD_CAP_MS = 60_000;

/**
 * When a token is due for refresh (epoch ms), or undefined when it never
 * expires: the lead before expiry is the larger of a fifth of its life and
 * of half its life up to a minute. A 15-minute token is refreshed at 80 %
 * of its life; a short one at half, so the login round trip that renews it
 * has time even on a slow link or a busy machine.
 */
export function refreshDueAt(token: AccessToken): number | undefined {
  if (token.expiresAt === undefined) return undefined;
  const lifetime = Math.max(0, token.expiresAt - token.obtainedAt);
  const lead = Math.max(
    lifetime / 5,
    Math.min(REFRESH_LEAD_CAP_MS, lifetime / 2),
  );
  return token.expiresAt - lead;
}

/** Where a connection gets its tokens (the user). */
export interface TokenSource {
  /**
   * A token to send now. With `fresh`, never the one sent last (it was
   * rejected or is about to expire). Rejects with a `SyncError`:
   * `login_failed` (fatal) when the server refuses, `connection_lost` when
   * it could not be reached.
   */
  accessToken(fresh: boolean, signal: AbortSignal): Promise<AccessToken>;
  /** Milliseconds the server asked to wait (Retry-After) before `error`. */
  retryAfterMs?(error: unknown): number | undefined;
}

/**
 * A scheduled reconnect: which retry it is, when it is due, and the error
 * that made it necessary.
 *
 * @example Showing the schedule
 * ```ts
 * import type { RetryInfo } from "@tether/sync";
 *
 * function describe(retry: RetryInfo | undefined): string {
 *   if (retry === undefined) return "no retry scheduled";
 *   const seconds = Math.ceil((retry.nextAttemptAt - Date.now()) / 1000);
 *   return `retry ${retry.attempt} in ${seconds}s (${retry.lastError.code})`;
 * }
 * console.log(describe(undefined));
 * ```
 */
export interface RetryInfo {
  /** 1 for the first retry after a loss, then 2, 3, … */
  attempt: number;
  /** When the next attempt starts, in epoch milliseconds. */
  nextAttemptAt: number;
  /** The error that caused the retry. */
  lastError: SyncError;
}

/** A session's view of the socket while it is bound. */
export interface SessionChannel {
  /** The id this binding uses on the wire. */
  readonly sessionId: number;
  /** The server's frame limit (HANDSHAKE_REPLY). */
  readonly maxMessageBytes: number;
  /** The protocol version the connection negotiated (HANDSHAKE_REPLY). */
  readonly protocolVersion: number;
  /** The socket's upload window, shared by every session on it. */
  readonly uploadWindow: UploadWindow;
  /** Whether messages sent now reach this binding's socket. */
  readonly isOpen: boolean;
  /**
   * Whether frames sent on this socket (by any session) have not all been
   * handed to the network yet: waiting to be compressed, or in the socket's
   * buffer (`bufferedAmount`, where the runtime reports it).
   */
  readonly isSending: boolean;
  /**
   * Sends a message; returns the frame's size in bytes, or 0 when the
   * binding is gone.
   */
  send(message: ClientMessage): number;
  /**
   * Sends an UPLOAD frame encoded by the caller, compressed when that pays
   * (frames of at least `COMPRESSION_THRESHOLD` bytes). Frames leave in call
   * order. Returns false when the binding is gone.
   *
   * @param onSent Told the size that went on the wire.
   */
  sendUpload(
    frame: Uint8Array<ArrayBuffer>,
    onSent: (wireBytes: number) => void,
  ): boolean;
}

/** What a connection tells the sessions attached to it. */
export interface ConnectionClient {
  /** A connection attempt started (or the socket is up and a bind follows). */
  connectionConnecting(): void;
  /** The socket is up: bind on this channel. */
  connectionOpened(channel: SessionChannel): void;
  /**
   * A message for this session arrived; `wireBytes` is what its frame took
   * on the wire (compressed, when it came compressed).
   */
  connectionMessage(message: ServerMessage, wireBytes: number): void;
  /**
   * The socket is gone. `error` is why (undefined for a requested stop);
   * `retry` is the scheduled reconnect, if any.
   */
  connectionLost(
    error: SyncError | undefined,
    retry: RetryInfo | undefined,
  ): void;
  /** The connection failed fatally; the client is detached. */
  connectionFailed(error: SyncError): void;
}

/** A client's attachment; `detach()` ends it. */
export interface Attachment {
  /**
   * Leaves the connection. With `unbind` (the default) an UNBIND is sent
   * when bound; without, the server has already ended the session.
   */
  detach(options?: { unbind?: boolean }): void;
}

/** Options of a `Connection` (connection.ts). */
export interface ConnectionOptions {
  /** The WebSocket URL (`ws://host/sync`). */
  url: string;
  /** The WebSocket constructor. */
  WebSocket: typeof WebSocket;
  /** Time and timers. */
  clock: Clock;
  /** Randomness for backoff jitter. */
  random: () => number;
  /** Backoff policy. */
  reconnect: ResolvedReconnectOptions;
  /** Keepalive policy. */
  keepalive: ResolvedKeepaliveOptions;
  /** Limit for one attempt: token, socket open and HANDSHAKE_REPLY. */
  connectTimeoutMs: number;
  /** How long an unused socket stays open. */
  lingerMs: number;
  /** Where tokens come from. */
  tokens: TokenSource;
  /** Lifecycle records. */
  logger?: Logger | undefined;
}
