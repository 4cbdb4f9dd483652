import {
  compressFrame,
  COMPRESSION_THRESHOLD,
  decompressFrame,
  isCompressedFrame,
} from "../protocol/compression.ts";
import { decodeMessage } from "../protocol/decode.ts";
import { encodeMessage } from "../protocol/encode.ts";
import {
  ERROR_CODES,
  type ErrorCodeName,
  errorCodeNumber,
} from "../protocol/error_codes.ts";
import {
  type BindMessage,
  type ClientMessage,
  type HandshakeMessage,
  type Message,
  MessageType,
  type ServerMessage,
} from "../protocol/messages.ts";
import { ProtocolError } from "../protocol/protocol_error.ts";
import { Writer } from "../protocol/writer.ts";
import {
  MIN_PROTOCOL_VERSION,
  negotiateVersion,
  PROTOCOL_VERSION,
} from "../protocol/version.ts";
import { DeliveryRate } from "./delivery_rate.ts";
import type { Log } from "./log.ts";
import type { Permission, PermissionsFunction } from "./permissions.ts";
import type { RealmHub } from "./realm_hub.ts";
import type { RealmRegistry } from "./realm_registry.ts";
import { resolveRealmPath } from "./realm_path.ts";
import { Session } from "./session.ts";
import { SessionError } from "./session_error.ts";
import type { StatsCounters } from "./stats.ts";
import { readCumulativeBytes } from "./storage/history.ts";
import { allocateIdentity, readIdentity } from "./storage/identities.ts";
import { delay } from "../util/delay.ts";
import type { RetryOptions } from "./storage/retry.ts";
import type { TokenAuthority } from "./tokens.ts";
import { abortable } from "../util/abort.ts";

/**
 * One WebSocket connection (ARCHITECTURE.md "Session flow"): decodes frames,
 * runs the handshake, dispatches session messages in order per session, and
 * turns failures into ERRORs of the right scope. A malformed frame closes
 * this socket only.
 */

/** WebSocket close codes (ARCHITECTURE.md "Session flow"). */
export const CloseCode = {
  Normal: 1000,
  GoingAway: 1001,
  ProtocolError: 1002,
  Policy: 1008,
  TooBig: 1009,
  InternalError: 1011,
  TryAgainLater: 1013,
} as const;

const CONNECTION_CLOSE_CODES: Partial<Record<ErrorCodeName, number>> = {
  protocol_violation: CloseCode.ProtocolError,
  message_too_large: CloseCode.TooBig,
  unsupported_protocol_version: CloseCode.ProtocolError,
  bad_token: CloseCode.Policy,
  token_expired: CloseCode.Policy,
  too_many_connections: CloseCode.TryAgainLater,
  server_shutting_down: CloseCode.GoingAway,
  internal_server_error: CloseCode.InternalError,
};

/** What a connection needs from its server. */
export interface PeerContext {
  kv: Deno.Kv;
  tokens: TokenAuthority;
  permissions: PermissionsFunction;
  registry: RealmRegistry;
  stats: StatsCounters;
  log: Log;
  /** Retry pacing for reads and identity writes; signal = server lifetime. */
  retry: RetryOptions;
  /** Aborts when the server shuts down. */
  lifetime: AbortSignal;
  /** Aborts when in-flight commits must give up (shutdown deadline). */
  commitSignal: AbortSignal;
  maxMessageBytes: number;
  maxSessionsPerConnection: number;
  downloadBatchBytes: number;
  highWaterBytes: number;
  handshakeTimeoutMs: number;
  /** Whether large DOWNLOAD frames are deflated (PROTOCOL.md §2). */
  compression: boolean;
  now(): number;
}

type PeerState = "handshake" | "authenticating" | "open" | "closed";

// Session ids remembered per connection after a session-scoped error.
const MAX_ENDED_SESSIONS = 1024;

// How often a held PONG looks at the socket's buffer again.
const DRAIN_POLL_MS = 10;

// setTimeout takes at most a signed 32-bit delay; longer waits re-arm.
const MAX_TIMER_MS = 2 ** 31 - 1;

// One writer for every frame this process sends. Encoding and
// `WebSocket.send` are synchronous and `send` copies what it is given, so a
// frame sent at once can be a view into the writer (saving a buffer per
// frame, about a third of encoding a small message); a frame that has to wait
// behind compression is copied first, before the next message reuses it.
const sendWriter = new Writer();

/** See the file comment. */
export class Peer {
  /** This connection's number within the server, for logs. */
  readonly id: number;
  #socket: WebSocket;
  #context: PeerContext;
  #state: PeerState = "handshake";
  #closing = false;
  #opened = false;
  #userId: string | null = null;
  #tokenExpiresAt = Infinity;
  #tokenTimer: ReturnType<typeof setTimeout> | undefined;
  #handshakeTimer: ReturnType<typeof setTimeout> | undefined;
  #closeTimer: ReturnType<typeof setTimeout> | undefined;
  // Session ids as the client sees them: bound from its BIND until its
  // UNBIND (or a session-scoped ERROR), so what a message may do depends on
  // what the client sent before it, never on how far the server got.
  #bound = new Set<number>();
  // Ids whose UNBIND is queued: not bound any more, not reusable until
  // UNBOUND is sent.
  #unbinding = new Set<number>();
  #sessions = new Map<number, Session>();
  #ended = new Set<number>();
  #chains = new Map<number, Promise<void>>();
  #tasks = new Set<Promise<unknown>>();
  #closed = Promise.withResolvers<void>();
  // Aborts when the socket has closed: waits on code outside the server
  // (the permissions callback) give up then instead of holding the
  // connection's state.
  #gone = new AbortController();
  // Frames wait here while an earlier one is being inflated (inbound) or
  // deflated (outbound), so both directions keep their order.
  #inbound: Promise<void> | null = null;
  #outbound: Promise<void> | null = null;
  #outboundBytes = 0;
  // The newest PING not answered yet because the socket was backed up.
  #heldPing: number | null = null;
  #rejection: { code: ErrorCodeName; message: string } | null;
  // Sizes DOWNLOAD batches from the client's RECEIVED (PROTOCOL.md §4.8).
  #delivery: DeliveryRate;

  /**
   * @param socket The upgraded socket (not yet open).
   * @param id The connection's number, for logs.
   * @param context The server's shared state.
   * @param rejection When set, the connection is refused with this error as
   *   soon as it opens (e.g. too many connections).
   */
  constructor(
    socket: WebSocket,
    id: number,
    context: PeerContext,
    rejection: { code: ErrorCodeName; message: string } | null = null,
  ) {
    this.#socket = socket;
    this.id = id;
    this.#context = context;
    this.#rejection = rejection;
    this.#delivery = new DeliveryRate(context.downloadBatchBytes);
    socket.binaryType = "arraybuffer";
    socket.onopen = () => this.#onOpen();
    socket.onmessage = (event) => this.#onMessage(event);
    socket.onclose = () => this.#onClose();
    socket.onerror = () => {};
  }

  /** Resolves once the socket has closed and every session has stopped. */
  get closed(): Promise<void> {
    return this.#closed.promise;
  }

  /**
   * Resolves once nothing is being handled any more (commits in flight
   * included) and the socket has written everything it was given, or has
   * closed: after `fail()`, cutting the connection from then on loses
   * nothing, whether or not the client ever answers the close.
   */
  async flushed(): Promise<void> {
    while (this.#tasks.size > 0) await Promise.allSettled([...this.#tasks]);
    while (!this.#isClosed() && this.#pendingOutput() > 0) {
      try {
        await delay(DRAIN_POLL_MS, this.#gone.signal);
      } catch {
        return;
      }
    }
  }

  /**
   * Ends the connection from the server side: a connection-scoped ERROR,
   * then a close with the code that goes with it.
   */
  fail(code: ErrorCodeName, message: string, error?: unknown): void {
    if (this.#closing || this.#isClosed()) return;
    this.#closing = true;
    this.#context.log(
      code === "internal_server_error" ? "error" : "info",
      "error_sent",
      message,
      this.#logContext({ code, error }),
    );
    this.#send({
      type: MessageType.Error,
      sessionId: null,
      code: errorCodeNumber(code),
      tryAgain: ERROR_CODES[code].tryAgain,
      message,
    });
    // After whatever is still being compressed, so the ERROR goes out.
    this.#afterOutbound(() => {
      this.#closeSocket(
        CONNECTION_CLOSE_CODES[code] ?? CloseCode.ProtocolError,
        message,
      );
      // Deno reports the close only once the client answers it; one that
      // never does must not keep the connection's state, or its place under
      // maxConnections, for good. (Its TCP connection lingers until the
      // client drops it or the server shuts down.)
      if (this.#isClosed()) return;
      this.#closeTimer = setTimeout(
        () => this.#onClose(),
        this.#context.handshakeTimeoutMs,
      );
    });
  }

  #closeSocket(code: number, reason: string): void {
    try {
      // A close reason is limited to 123 bytes of UTF-8.
      this.#socket.close(code, truncateUtf8(reason, 123));
    } catch {
      // Already closing.
    }
  }

  #logContext(
    extra: { session?: number; path?: string; code?: string; error?: unknown } =
      {},
  ) {
    return {
      connection: this.id,
      ...(this.#userId === null ? {} : { userId: this.#userId }),
      ...extra,
    };
  }

  // A method, not a field comparison: TypeScript would keep narrowing
  // `#state` across awaits, after which it may well have changed.
  #isClosed(): boolean {
    return this.#state === "closed";
  }

  #onOpen(): void {
    this.#opened = true;
    this.#context.stats.connections++;
    this.#context.log("debug", "connection_opened", "Connection opened", {
      connection: this.id,
    });
    if (this.#rejection !== null) {
      this.fail(this.#rejection.code, this.#rejection.message);
      return;
    }
    if (this.#context.lifetime.aborted) {
      this.fail("server_shutting_down", "The server is shutting down");
      return;
    }
    this.#handshakeTimer = setTimeout(() => {
      this.#handshakeTimer = undefined;
      if (this.#state === "handshake" || this.#state === "authenticating") {
        this.fail(
          "protocol_violation",
          `No HANDSHAKE within ${this.#context.handshakeTimeoutMs} ms`,
        );
      }
    }, this.#context.handshakeTimeoutMs);
  }

  #onMessage(event: MessageEvent): void {
    if (this.#closing || this.#isClosed()) return;
    const data: unknown = event.data;
    if (!(data instanceof ArrayBuffer)) {
      this.fail(
        "protocol_violation",
        "Cannot decode message: text frames are not part of the protocol",
      );
      return;
    }
    this.#context.stats.bytesIn += data.byteLength;
    const limit = this.#context.maxMessageBytes;
    if (data.byteLength > limit) {
      this.fail(
        "message_too_large",
        `Cannot accept message: ${data.byteLength} bytes exceeds the limit of ${limit}`,
      );
      return;
    }
    const frame = new Uint8Array(data);
    if (this.#inbound === null && !isCompressedFrame(frame)) {
      this.#decodeAndDispatch(frame);
      return;
    }
    const previous = this.#inbound ?? Promise.resolve();
    const next = previous.then(() => this.#inflateAndDispatch(frame));
    this.#inbound = next;
    this.#track(next);
    next.finally(() => {
      if (this.#inbound === next) this.#inbound = null;
    });
  }

  async #inflateAndDispatch(frame: Uint8Array): Promise<void> {
    if (this.#closing || this.#isClosed()) return;
    let inflated: Uint8Array;
    try {
      inflated = await decompressFrame(frame, {
        maxMessageBytes: this.#context.maxMessageBytes,
      });
    } catch (error) {
      const tooLarge = error instanceof ProtocolError &&
        error.code === "length_over_limit";
      this.fail(
        tooLarge ? "message_too_large" : "protocol_violation",
        error instanceof Error ? error.message : "Cannot decompress frame",
        error,
      );
      return;
    }
    if (this.#closing || this.#isClosed()) return;
    this.#decodeAndDispatch(inflated);
  }

  #decodeAndDispatch(frame: Uint8Array): void {
    const limit = this.#context.maxMessageBytes;
    let message: Message;
    try {
      message = decodeMessage(frame, { maxMessageBytes: limit });
    } catch (error) {
      if (!(error instanceof ProtocolError)) {
        this.#context.log(
          "error",
          "decode_crashed",
          "The decoder threw a non-protocol error",
          this.#logContext({ error }),
        );
      }
      this.fail(
        "protocol_violation",
        error instanceof Error ? error.message : "Cannot decode message",
        error,
      );
      return;
    }
    this.#dispatch(message);
  }

  #dispatch(message: Message): void {
    if (this.#state !== "open") {
      if (
        this.#state === "handshake" && message.type === MessageType.Handshake
      ) {
        this.#state = "authenticating";
        this.#track(this.#handshake(message));
        return;
      }
      this.fail(
        "protocol_violation",
        this.#state === "handshake"
          ? "Expected HANDSHAKE as the first message"
          : "No message may follow HANDSHAKE before HANDSHAKE_REPLY",
      );
      return;
    }
    const clientMessage = message as ClientMessage;
    switch (clientMessage.type) {
      case MessageType.Ping:
        this.#pong(clientMessage.timestamp);
        return;
      case MessageType.Refresh:
        this.#track(this.#refresh(clientMessage.accessToken));
        return;
      case MessageType.Received:
        if (
          !this.#delivery.noteReceived(
            clientMessage.receivedBytes,
            clientMessage.timeoutMs,
            performance.now(),
          )
        ) {
          this.fail(
            "protocol_violation",
            `Cannot accept RECEIVED: ${clientMessage.receivedBytes} bytes received, but ${this.#delivery.sentBytes} were sent and an earlier RECEIVED said more or as many`,
          );
        }
        return;
      case MessageType.Bind:
        if (
          this.#bound.has(clientMessage.sessionId) ||
          this.#unbinding.has(clientMessage.sessionId)
        ) {
          this.fail(
            "protocol_violation",
            `Cannot bind: session ${clientMessage.sessionId} is already bound`,
          );
          return;
        }
        // Counted when asked for, not when bound: BINDs sent back to back
        // are all in progress at once.
        if (
          this.#bound.size + this.#unbinding.size >=
            this.#context.maxSessionsPerConnection
        ) {
          this.#failUnbound(
            clientMessage.sessionId,
            new SessionError(
              "too_many_sessions",
              `Cannot bind: the connection already has ${this.#context.maxSessionsPerConnection} sessions`,
            ),
          );
          return;
        }
        this.#bound.add(clientMessage.sessionId);
        this.#ended.delete(clientMessage.sessionId);
        this.#enqueue(clientMessage.sessionId, () => this.#bind(clientMessage));
        return;
      case MessageType.Upload:
      case MessageType.Mark:
      case MessageType.Unbind: {
        const sessionId = clientMessage.sessionId;
        if (!this.#bound.has(sessionId)) {
          if (this.#ended.has(sessionId)) {
            // The session ended with an ERROR the client had not seen when
            // it sent this; UNBIND still gets its answer.
            if (clientMessage.type === MessageType.Unbind) {
              this.#ended.delete(sessionId);
              this.#send({ type: MessageType.Unbound, sessionId });
            }
            return;
          }
          this.fail(
            "protocol_violation",
            `Cannot handle message: session ${sessionId} is not bound`,
          );
          return;
        }
        if (clientMessage.type === MessageType.Unbind) {
          this.#bound.delete(sessionId);
          // Not queued behind the session's earlier messages: one may be a
          // commit storage takes ages to finish, and a client that gave up
          // on it must get its slot back now (PROTOCOL.md §4.5).
          const session = this.#sessions.get(sessionId);
          if (session !== undefined) {
            this.#unbind(session);
            return;
          }
          // Still binding: the session does not exist before BIND is done.
          this.#unbinding.add(sessionId);
        }
        this.#enqueue(sessionId, () => this.#sessionMessage(clientMessage));
        return;
      }
      default:
        this.fail(
          "protocol_violation",
          `Cannot handle message type 0x${
            message.type.toString(16)
          }: it is not sent by clients or not allowed now`,
        );
    }
  }

  #pong(timestamp: number): void {
    if (
      this.#heldPing === null &&
      this.#pendingOutput() <= this.#context.highWaterBytes
    ) {
      this.#send({ type: MessageType.Pong, timestamp });
      return;
    }
    // A client that sends PINGs without reading the PONGs must not make the
    // server buffer them without bound: while the socket is backed up only
    // the newest PING is kept, and answered once it drains. The client sees
    // life in the bytes it is behind on meanwhile.
    const waiting = this.#heldPing !== null;
    this.#heldPing = timestamp;
    if (!waiting) this.#track(this.#answerHeldPing());
  }

  async #answerHeldPing(): Promise<void> {
    while (this.#pendingOutput() > this.#context.highWaterBytes) {
      try {
        await delay(DRAIN_POLL_MS, this.#gone.signal);
      } catch {
        return;
      }
    }
    const timestamp = this.#heldPing!;
    this.#heldPing = null;
    this.#send({ type: MessageType.Pong, timestamp });
  }

  #enqueue(sessionId: number, work: () => Promise<void>): void {
    const previous = this.#chains.get(sessionId) ?? Promise.resolve();
    const next = previous.then(() => {
      if (this.#isClosed()) return;
      return work();
    }).catch((error) => {
      this.#context.log(
        "error",
        "internal_error",
        "A session handler crashed",
        this.#logContext({ session: sessionId, error }),
      );
      this.fail("internal_server_error", "The server failed", error);
    });
    this.#chains.set(sessionId, next);
    this.#track(next);
    next.finally(() => {
      if (this.#chains.get(sessionId) === next) this.#chains.delete(sessionId);
    });
  }

  #track(task: Promise<unknown>): void {
    this.#tasks.add(task);
    task.catch(() => {}).finally(() => this.#tasks.delete(task));
  }

  async #handshake(message: HandshakeMessage): Promise<void> {
    const version = negotiateVersion(message.minVersion, message.maxVersion);
    if (version === null) {
      this.fail(
        "unsupported_protocol_version",
        `Cannot connect: the client speaks protocol versions ${message.minVersion}-${message.maxVersion}, the server ${MIN_PROTOCOL_VERSION}-${PROTOCOL_VERSION}`,
      );
      return;
    }
    const check = await this.#context.tokens.verifyAccess(message.accessToken);
    if (this.#closing || this.#isClosed()) return;
    if (!check.ok) {
      this.fail(check.code, `Cannot connect: ${check.message}`);
      return;
    }
    clearTimeout(this.#handshakeTimer);
    this.#handshakeTimer = undefined;
    this.#userId = check.userId;
    this.#armTokenDeadline(check.expiresAt);
    this.#state = "open";
    this.#send({
      type: MessageType.HandshakeReply,
      version,
      userId: check.userId,
      maxMessageBytes: this.#context.maxMessageBytes,
    });
    this.#context.log(
      "debug",
      "handshake",
      "Connection authenticated",
      this.#logContext(),
    );
  }

  async #refresh(token: string): Promise<void> {
    const check = await this.#context.tokens.verifyAccess(token);
    if (this.#closing || this.#isClosed()) return;
    if (!check.ok) {
      this.fail(check.code, `Cannot refresh: ${check.message}`);
      return;
    }
    if (check.userId !== this.#userId) {
      this.fail(
        "bad_token",
        "Cannot refresh: the token is for a different user",
      );
      return;
    }
    this.#armTokenDeadline(check.expiresAt);
  }

  #armTokenDeadline(expiresAt: number): void {
    this.#tokenExpiresAt = expiresAt;
    clearTimeout(this.#tokenTimer);
    this.#tokenTimer = undefined;
    if (!Number.isFinite(expiresAt)) return;
    const remaining = expiresAt - this.#context.now();
    this.#tokenTimer = setTimeout(() => {
      this.#tokenTimer = undefined;
      if (this.#context.now() >= this.#tokenExpiresAt) {
        this.fail(
          "token_expired",
          "The access token expired; refresh it before it expires",
        );
      } else {
        this.#armTokenDeadline(this.#tokenExpiresAt);
      }
    }, Math.max(0, Math.min(remaining, MAX_TIMER_MS)));
  }

  async #bind(message: BindMessage): Promise<void> {
    const { sessionId } = message;
    const userId = this.#userId!;
    const resolved = resolveRealmPath(message.path, userId);
    if (!resolved.ok) {
      this.#failUnbound(
        sessionId,
        new SessionError("invalid_path", `Cannot bind: ${resolved.reason}`),
      );
      return;
    }
    const path = resolved.path;
    let permission: Permission;
    try {
      permission = await abortable(
        Promise.resolve().then(() => this.#context.permissions(userId, path)),
        this.#gone.signal,
      );
    } catch (error) {
      if (this.#isClosed()) return;
      this.#failUnbound(
        sessionId,
        new SessionError(
          "session_failed",
          "Cannot bind: the permission check failed",
          { cause: error },
        ),
        path,
      );
      return;
    }
    if (permission !== "readwrite" && permission !== "read") {
      this.#failUnbound(
        sessionId,
        new SessionError(
          "permission_denied",
          `Cannot bind: user ${JSON.stringify(userId)} may not access ${
            JSON.stringify(path)
          }`,
        ),
        path,
      );
      return;
    }
    if (this.#isClosed()) return;
    const hub = this.#context.registry.acquire(path);
    let session: Session;
    try {
      session = await this.#openSession(message, path, permission, hub);
    } catch (error) {
      this.#context.registry.release(hub);
      this.#failUnbound(
        sessionId,
        error instanceof SessionError ? error : new SessionError(
          "session_failed",
          "Cannot bind: storage failed",
          { cause: error },
        ),
        path,
      );
      return;
    }
    if (this.#isClosed()) {
      this.#context.registry.release(hub);
      return;
    }
    this.#sessions.set(sessionId, session);
    this.#context.stats.sessions++;
    this.#context.log(
      "debug",
      "session_bound",
      "Session bound",
      this.#logContext({ session: sessionId, path }),
    );
    session.start();
  }

  async #openSession(
    message: BindMessage,
    path: string,
    permission: Permission,
    hub: RealmHub,
  ): Promise<Session> {
    const { kv, retry } = this.#context;
    const head = await hub.refreshHead();
    let identity = message.clientIdentity;
    let lastIntegratedClientVersion = 0;
    if (identity === null) {
      identity = await allocateIdentity(kv, path, retry);
    } else {
      const record = await readIdentity(kv, path, identity, retry);
      if (record === null) {
        throw new SessionError(
          "bad_client_identity",
          `Cannot bind: client identity ${identity.id} is unknown in this realm or its salt is wrong`,
        );
      }
      lastIntegratedClientVersion = record.lastClientVersion;
    }
    if (message.downloadCursor > head.version) {
      throw new SessionError(
        "bad_client_identity",
        `Cannot bind: download cursor ${message.downloadCursor} is ahead of the server's history (${head.version}); the local realm belongs to other server data`,
      );
    }
    // Null when that version was compacted away: the session bootstraps.
    const cursorBytes = await readCumulativeBytes(
      kv,
      path,
      message.downloadCursor,
      retry,
    );
    if (message.clientIdentity === null) {
      this.#send({
        type: MessageType.Ident,
        sessionId: message.sessionId,
        clientIdentity: identity,
      });
    }
    return new Session({
      id: message.sessionId,
      path,
      userId: this.#userId!,
      identity,
      permission,
      hub,
      transport: {
        send: (reply) => this.#send(reply),
        bufferedAmount: () => this.#pendingOutput(),
        batchBytes: () => this.#delivery.batchBytes,
        failSession: (failed, error) => this.#failSession(failed, error),
      },
      downloadCursor: message.downloadCursor,
      cursorBytes,
      lastIntegratedClientVersion,
      downloadBatchBytes: this.#context.downloadBatchBytes,
      highWaterBytes: this.#context.highWaterBytes,
      lifetime: this.#context.lifetime,
      commitSignal: this.#context.commitSignal,
      log: this.#context.log,
    });
  }

  async #sessionMessage(message: ClientMessage): Promise<void> {
    if (!("sessionId" in message)) return;
    const session = this.#sessions.get(message.sessionId);
    // The bind failed (an ERROR was sent) or the session failed meanwhile.
    if (session === undefined || session.closed) {
      if (message.type === MessageType.Unbind) {
        this.#ended.delete(message.sessionId);
        this.#unbinding.delete(message.sessionId);
        this.#send({ type: MessageType.Unbound, sessionId: message.sessionId });
      }
      return;
    }
    try {
      switch (message.type) {
        case MessageType.Upload:
          await session.upload(message.changesets);
          return;
        case MessageType.Mark:
          await session.mark(message.requestId);
          return;
        case MessageType.Unbind:
          this.#unbind(session);
          return;
      }
    } catch (error) {
      if (error instanceof SessionError) {
        this.#failSession(session, error);
        return;
      }
      throw error;
    }
  }

  /**
   * Ends a session on the client's UNBIND at once, even while an earlier
   * message of it is still being handled: that one finds the session
   * closed, so nothing more is sent for it (a late acknowledgement is
   * dropped) and a failure of it is not reported.
   */
  #unbind(session: Session): void {
    this.#unbinding.delete(session.id);
    // The realm stays held until the session's messages in flight are done,
    // so a re-upload on a new binding queues behind the old commit in the
    // same hub instead of racing it.
    const inFlight = this.#chains.get(session.id);
    this.#track(this.#endSession(session, inFlight));
    this.#send({ type: MessageType.Unbound, sessionId: session.id });
    this.#context.log(
      "debug",
      "session_unbound",
      "Session unbound",
      this.#logContext({ session: session.id, path: session.path }),
    );
  }

  async #endSession(
    session: Session,
    inFlight?: Promise<void>,
  ): Promise<void> {
    if (this.#sessions.get(session.id) !== session) return;
    this.#sessions.delete(session.id);
    this.#context.stats.sessions--;
    await session.close();
    await inFlight;
    this.#context.registry.release(session.hub);
  }

  #failSession(session: Session, error: SessionError): void {
    if (this.#sessions.get(session.id) !== session) return;
    this.#bound.delete(session.id);
    this.#markEnded(session.id);
    this.#track(this.#endSession(session));
    this.#sendSessionError(session.id, error, session.path);
  }

  #markEnded(sessionId: number): void {
    this.#ended.add(sessionId);
    // Remembered only to ignore messages already in flight; a client that
    // fails session after session must not grow this without bound.
    if (this.#ended.size > MAX_ENDED_SESSIONS) {
      this.#ended.delete(this.#ended.values().next().value!);
    }
  }

  #failUnbound(sessionId: number, error: SessionError, path?: string): void {
    this.#bound.delete(sessionId);
    this.#markEnded(sessionId);
    this.#sendSessionError(sessionId, error, path);
  }

  #sendSessionError(
    sessionId: number,
    error: SessionError,
    path?: string,
  ): void {
    const cause = error.cause;
    this.#context.log(
      error.code === "session_failed" ? "warn" : "info",
      "error_sent",
      error.message,
      this.#logContext({
        session: sessionId,
        code: error.code,
        ...(path === undefined ? {} : { path }),
        ...(cause === undefined ? {} : { error: cause }),
      }),
    );
    this.#send({
      type: MessageType.Error,
      sessionId,
      code: errorCodeNumber(error.code),
      tryAgain: ERROR_CODES[error.code].tryAgain,
      message: error.message,
    });
  }

  #send(message: ServerMessage): void {
    if (this.#socket.readyState !== WebSocket.OPEN) return;
    const view = encodeMessage(message, sendWriter);
    const deflate = this.#context.compression &&
      message.type === MessageType.Download &&
      view.length >= COMPRESSION_THRESHOLD;
    if (this.#outbound === null && !deflate) {
      this.#write(view);
      return;
    }
    const frame = view.slice();
    this.#outboundBytes += frame.length;
    const previous = this.#outbound ?? Promise.resolve();
    const next = previous.then(async () => {
      let out = frame;
      if (deflate) {
        try {
          out = await compressFrame(frame);
        } catch {
          // Sending it as it is is always correct.
        }
      }
      this.#outboundBytes -= frame.length;
      this.#write(out);
    });
    this.#outbound = next;
    this.#track(next);
    next.finally(() => {
      if (this.#outbound === next) this.#outbound = null;
    });
  }

  #afterOutbound(action: () => void): void {
    if (this.#outbound === null) {
      action();
      return;
    }
    this.#outbound.finally(action);
  }

  #write(frame: Uint8Array<ArrayBuffer>): void {
    if (this.#socket.readyState !== WebSocket.OPEN) return;
    try {
      this.#socket.send(frame);
      this.#context.stats.bytesOut += frame.length;
      this.#delivery.noteSent(frame.length);
    } catch {
      // The socket closed under us; onclose cleans up.
    }
  }

  /** Bytes sent but not yet written to the network, compression included. */
  #pendingOutput(): number {
    return this.#socket.bufferedAmount + this.#outboundBytes;
  }

  #onClose(): void {
    if (this.#isClosed()) return;
    this.#state = "closed";
    this.#closing = true;
    this.#gone.abort(new Error("The connection closed"));
    clearTimeout(this.#closeTimer);
    clearTimeout(this.#handshakeTimer);
    clearTimeout(this.#tokenTimer);
    this.#handshakeTimer = undefined;
    this.#tokenTimer = undefined;
    const endings = [...this.#sessions.values()].map((session) =>
      this.#endSession(session)
    );
    (async () => {
      await Promise.allSettled(endings);
      await Promise.allSettled([...this.#tasks]);
      if (this.#opened) this.#context.stats.connections--;
      this.#context.log(
        "debug",
        "connection_closed",
        "Connection closed",
        this.#logContext(),
      );
      this.#closed.resolve();
    })();
  }
}

function truncateUtf8(text: string, maxBytes: number): string {
  const bytes = new TextEncoder().encode(text);
  if (bytes.length <= maxBytes) return text;
  let end = maxBytes;
  // Do not cut a multi-byte character in half.
  while (end > 0 && (bytes[end]! & 0xc0) === 0x80) end--;
  return new TextDecoder().decode(bytes.subarray(0, end));
}
