/**
 * One WebSocket connection from open to close (`docs/ARCHITECTURE.md`
 * "Session flow on one connection"), with its failures turned into ERRORs of
 * the right scope: a malformed frame closes this socket only.
 */

import type { StatusSession } from "./status_page.ts";
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
} from "../protocol/messages.ts";
import {
  MIN_PROTOCOL_VERSION,
  negotiateVersion,
  PROTOCOL_VERSION,
} from "../protocol/version.ts";
import { bindSession } from "./bind.ts";
import { DeliveryRate } from "./delivery_rate.ts";
import type { ServerContext } from "./server_context.ts";
import type { Session } from "./session.ts";
import type { SessionTransport } from "./session_init.ts";

import { SessionError } from "./session_error.ts";
import { type SessionRecord, SessionTable } from "./session_table.ts";
import { FrameReader } from "./frame_reader.ts";
import { FrameWriter } from "./frame_writer.ts";
import { drained, PingAnswerer } from "./socket_backlog.ts";
import { closeCodeFor, closeReason } from "./close_codes.ts";
import { TokenDeadline } from "./token_deadline.ts";
import { heldUploadBytes, HeldUploads } from "./held_uploads.ts";
import { systemClock } from "../util/clock.ts";

// An UPLOAD whose commit is still in flight, and what its settling needs.
interface UploadTicket {
  settled: Promise<void>;
  session: Session;
  received: number;
}

type ConnectionState = "handshake" | "authenticating" | "open" | "closed";

/** See the file comment. */
export class Connection {
  /** This connection's number within the server, for logs. */
  readonly id: number;
  #socket: WebSocket;
  #context: ServerContext;
  #state: ConnectionState = "handshake";
  #closing = false;
  #opened = false;
  #userId: string | null = null;
  // The protocol version negotiated at HANDSHAKE (0 before).
  #protocolVersion = 0;
  // Uploads received but not yet stored (see #hold).
  #held: HeldUploads;
  #tokenDeadline: TokenDeadline;
  #handshakeTimer: ReturnType<typeof setTimeout> | undefined;
  #closeTimer: ReturnType<typeof setTimeout> | undefined;
  #sessions: SessionTable;
  #tasks = new Set<Promise<unknown>>();
  #closed = Promise.withResolvers<void>();
  // Aborts when the socket has closed: waits on code outside the server
  // (the permissions callback) give up then instead of holding the
  // connection's state.
  #gone = new AbortController();
  #input: FrameReader;
  #output: FrameWriter;
  #transport: SessionTransport;
  #pings: PingAnswerer;
  #rejection: { code: ErrorCodeName; message: string } | null;
  // Sizes DOWNLOAD batches from the client's RECEIVED (docs/PROTOCOL.md §4.8).
  #delivery: DeliveryRate;
  // At shutdown, stops this connection's sessions' storage reads and waits:
  // one listener on the lifetime per connection, not a linked signal per
  // session (docs/PERFORMANCE.md "Linked signals").
  #onShutdown = () => {
    for (const session of this.#sessions.sessions()) session.abortWork();
  };

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
    context: ServerContext,
    rejection: { code: ErrorCodeName; message: string } | null = null,
  ) {
    this.#socket = socket;
    this.id = id;
    this.#context = context;
    this.#rejection = rejection;
    this.#delivery = new DeliveryRate(context.settings.downloadBatchBytes);
    this.#held = new HeldUploads(context.settings.maxQueuedBytesPerConnection);
    this.#tokenDeadline = new TokenDeadline(
      { ...systemClock, now: context.settings.now },
      () =>
        this.fail(
          "token_expired",
          "The access token expired; refresh it before it expires",
        ),
    );
    this.#sessions = new SessionTable((sessionId, error) =>
      this.#crashed("A session handler crashed", error, sessionId)
    );
    this.#input = new FrameReader({
      maxMessageBytes: context.settings.maxMessageBytes,
      isOpen: () => !this.#closing && !this.#isClosed(),
      onReceived: (bytes) => {
        context.stats.bytesIn += bytes;
        context.metrics.bytesReceived.value += bytes;
      },
      onMessage: (message, frameBytes) => this.#dispatch(message, frameBytes),
      fail: (code, message, error) => this.fail(code, message, error),
      onDecoderCrash: (error) =>
        context.log(
          "error",
          "decode_crashed",
          "The decoder threw a non-protocol error",
          this.#logContext({ error }),
        ),
      onCrash: (error) => this.#crashed("A frame handler crashed", error),
      track: (task) => this.#track(task),
    });
    this.#output = new FrameWriter(socket, {
      compression: context.settings.compression,
      isFast: () => this.#delivery.isFast,
      onWritten: (type, bytes) => {
        context.stats.bytesOut += bytes;
        context.metrics.sent(type, bytes);
        if (type === MessageType.Reject) context.metrics.rejectedWrites.value++;
        this.#delivery.noteSent(bytes, performance.now());
      },
      track: (task) => this.#track(task),
    });
    this.#pings = new PingAnswerer(
      this.#output,
      () => context.settings.sendBufferBytes,
      this.#gone.signal,
      (task) => this.#track(task),
    );
    this.#transport = {
      send: (reply) => this.#output.send(reply),
      bufferedAmount: () => this.#output.pendingBytes(),
      buffersMoreThan: (limit) => this.#output.buffersMoreThan(limit),
      batchBytes: () => this.#delivery.batchBytes,
      failSession: (failed, error) => this.#failSession(failed, error),
    };
    socket.binaryType = "arraybuffer";
    socket.onopen = () => this.#onOpen();
    socket.onmessage = (event) => this.#input.receive(event.data);
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
    await drained(this.#output, 0, this.#gone.signal, () => this.#isClosed());
  }

  /**
   * Ends the connection from the server side: a connection-scoped ERROR,
   * then a close with the code that goes with it.
   */
  fail(code: ErrorCodeName, message: string, error?: unknown): void {
    if (this.#closing || this.#isClosed()) return;
    this.#closing = true;
    this.#countError(code);
    this.#context.log(
      code === "internal_server_error" ? "error" : "info",
      "error_sent",
      message,
      this.#logContext({ code, error }),
    );
    this.#output.send({
      type: MessageType.Error,
      sessionId: null,
      code: errorCodeNumber(code),
      tryAgain: ERROR_CODES[code].tryAgain,
      message,
    });
    // After whatever is still being compressed, so the ERROR goes out.
    this.#output.afterQueued(() => {
      this.#closeSocket(
        closeCodeFor(code),
        message,
      );
      // Deno reports the close only once the client answers it; one that
      // never does must not keep the connection's state, or its place under
      // maxConnections, for good. (Its TCP connection lingers until the
      // client drops it or the server shuts down.)
      if (this.#isClosed()) return;
      this.#closeTimer = setTimeout(
        () => this.#onClose(),
        this.#context.settings.handshakeTimeoutMs,
      );
    });
  }

  #crashed(what: string, error: unknown, session?: number): void {
    this.#context.log(
      "error",
      "internal_error",
      what,
      this.#logContext({
        ...(session === undefined ? {} : { session }),
        error,
      }),
    );
    this.fail("internal_server_error", "The server failed", error);
  }

  #closeSocket(code: number, reason: string): void {
    try {
      this.#socket.close(code, closeReason(reason));
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
    this.#context.lifetime.addEventListener("abort", this.#onShutdown, {
      once: true,
    });
    this.#handshakeTimer = setTimeout(() => {
      this.#handshakeTimer = undefined;
      if (this.#state === "handshake" || this.#state === "authenticating") {
        this.fail(
          "protocol_violation",
          `No HANDSHAKE within ${this.#context.settings.handshakeTimeoutMs} ms`,
        );
      }
    }, this.#context.settings.handshakeTimeoutMs);
  }

  #dispatch(message: Message, frameBytes: number): void {
    // Bytes were counted as they arrived (compressed or not).
    this.#context.metrics.received(message.type, 0);
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
        this.#pings.pong(clientMessage.timestamp);
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
        this.#onBind(clientMessage);
        return;
      case MessageType.UploadTooLarge:
      case MessageType.Upload: {
        // UPLOAD_TOO_LARGE is version 3's (PROTOCOL.md §6).
        if (
          clientMessage.type === MessageType.UploadTooLarge &&
          this.#protocolVersion < 3
        ) break;
        const held = heldUploadBytes(clientMessage, frameBytes);
        if (!this.#hold(held)) return;
        this.#onSessionMessage(clientMessage, held);
        return;
      }
      case MessageType.Mark:
      case MessageType.Unbind:
        this.#onSessionMessage(clientMessage, 0);
        return;
    }
    this.fail(
      "protocol_violation",
      `Cannot handle message type 0x${
        message.type.toString(16)
      }: it is not sent by clients or not allowed now`,
    );
  }

  #track(task: Promise<unknown>): void {
    this.#tasks.add(task);
    // One reaction for both outcomes: a rejection is logged where it began.
    const forget = () => this.#tasks.delete(task);
    task.then(forget, forget);
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
    this.#protocolVersion = version;
    if (version >= 2) this.#delivery.expectAcknowledgements();
    this.#tokenDeadline.arm(check.expiresAt);
    this.#state = "open";
    this.#output.send({
      type: MessageType.HandshakeReply,
      version,
      userId: check.userId,
      maxMessageBytes: this.#context.settings.maxMessageBytes,
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
    this.#tokenDeadline.arm(check.expiresAt);
  }

  #onBind(message: BindMessage): void {
    const { sessionId } = message;
    if (this.#sessions.isHeld(sessionId)) {
      this.fail(
        "protocol_violation",
        `Cannot bind: session ${sessionId} is already bound`,
      );
      return;
    }
    // Counted when asked for, not when bound: BINDs sent back to back are
    // all in progress at once.
    const limit = this.#context.settings.maxSessionsPerConnection;
    if (this.#sessions.held >= limit) {
      this.#failUnbound(
        this.#sessions.get(sessionId),
        sessionId,
        new SessionError(
          "too_many_sessions",
          `Cannot bind: the connection already has ${limit} sessions`,
        ),
      );
      return;
    }
    const record = this.#sessions.bind(sessionId);
    this.#enqueue(record, () => this.#bind(record, message));
  }

  /**
   * Counts `bytes` more held for this connection's uploads, or refuses the
   * connection when that would pass `limits.maxQueuedBytesPerConnection`
   * (Deno's WebSocket cannot stop reading a socket, so refusing is the
   * only brake the server has; the client keeps far less in flight).
   */
  #hold(bytes: number): boolean {
    if (this.#held.hold(bytes)) return true;
    this.fail(
      this.#protocolVersion >= 2 ? "queue_full" : "internal_server_error",
      `Cannot accept more uploads: ${this.#held.bytes} bytes are held for this connection and the limit is ${this.#held.limit}; reconnect and send more slowly`,
    );
    return false;
  }

  #onSessionMessage(
    message: Extract<ClientMessage, { sessionId: number }>,
    heldBytes: number,
  ): void {
    const release = () => this.#held.release(heldBytes);
    const { sessionId } = message;
    const record = this.#sessions.get(sessionId);
    if (record === undefined || !this.#sessions.isBound(sessionId)) {
      if (record?.state === "ended") {
        // The session ended with an ERROR the client had not seen when it
        // sent this; UNBIND still gets its answer.
        if (message.type === MessageType.Unbind) {
          this.#sessions.released(record);
          this.#output.send({ type: MessageType.Unbound, sessionId });
        }
        release();
        return;
      }
      release();
      this.fail(
        "protocol_violation",
        `Cannot handle message: session ${sessionId} is not bound`,
      );
      return;
    }
    if (message.type === MessageType.Unbind) {
      // Not queued behind the session's earlier messages: one may be a
      // commit storage takes ages to finish, and a client that gave up on
      // it must get its slot back now (docs/PROTOCOL.md §4.5).
      if (record.session !== null) {
        release();
        this.#unbind(record, record.session);
        return;
      }
      // Still binding: the session does not exist before BIND is done.
      this.#sessions.unbinding(record);
    }
    this.#enqueue(record, async () => {
      let ticket: UploadTicket | undefined;
      try {
        ticket = await this.#sessionMessage(record, message);
      } finally {
        if (ticket === undefined) release();
      }
      // An upload still committing: the session's next message may be
      // handled meanwhile (the hub queues it behind this one), but its
      // bytes stay held until it is settled.
      if (ticket !== undefined) this.#track(this.#settle(ticket, release));
    });
  }

  async #settle(ticket: UploadTicket, release: () => void): Promise<void> {
    try {
      await ticket.settled;
    } catch (error) {
      const session = ticket.session;
      if (!(error instanceof SessionError)) {
        this.#crashed("A session handler crashed", error, session.id);
        return;
      }
      if (!session.closed) this.#failSession(session, error);
    } finally {
      release();
    }
    if (!ticket.session.closed) {
      this.#context.metrics.uploadAck.observe(
        (performance.now() - ticket.received) / 1000,
      );
    }
  }

  #enqueue(record: SessionRecord, work: () => Promise<void>): void {
    this.#track(this.#sessions.enqueue(record, () => {
      if (this.#isClosed()) return Promise.resolve();
      return work();
    }));
  }

  async #bind(record: SessionRecord, message: BindMessage): Promise<void> {
    const outcome = await bindSession(message, {
      server: this.#context,
      userId: this.#userId!,
      protocolVersion: this.#protocolVersion,
      gone: this.#gone.signal,
      send: (reply) => this.#output.send(reply),
      transport: this.#transport,
    });
    if (outcome === null) return;
    if (!outcome.ok) {
      this.#failUnbound(record, message.sessionId, outcome.error, outcome.path);
      return;
    }
    const { session } = outcome;
    this.#sessions.bound(record, session);
    this.#context.stats.sessions++;
    this.#context.log(
      "debug",
      "session_bound",
      "Session bound",
      this.#logContext({ session: session.id, path: session.path }),
    );
    session.start();
  }

  // Returns the upload still committing, for an UPLOAD.
  async #sessionMessage(
    record: SessionRecord,
    message: Extract<ClientMessage, { sessionId: number }>,
  ): Promise<UploadTicket | undefined> {
    const session = record.session;
    // The bind failed (an ERROR was sent) or the session failed meanwhile.
    if (session === null || session.closed) {
      if (message.type === MessageType.Unbind) {
        this.#sessions.released(record);
        this.#output.send({
          type: MessageType.Unbound,
          sessionId: message.sessionId,
        });
      }
      return undefined;
    }
    try {
      switch (message.type) {
        case MessageType.Upload: {
          const received = performance.now();
          // Returns once the changesets are queued for their commit;
          // `settled` once it is durable and acknowledged.
          const { settled } = await session.upload(message.changesets);
          return { settled, session, received };
        }
        case MessageType.UploadTooLarge: {
          const received = performance.now();
          const { settled } = await session.uploadTooLarge(message);
          return { settled, session, received };
        }
        case MessageType.Mark:
          await session.mark(message.requestId);
          return undefined;
        case MessageType.Unbind:
          this.#unbind(record, session);
          return undefined;
      }
    } catch (error) {
      if (error instanceof SessionError) {
        this.#failSession(session, error);
        return undefined;
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
  #unbind(record: SessionRecord, session: Session): void {
    // The realm stays held until the session's messages in flight are done,
    // so a re-upload on a new binding queues behind the old commit in the
    // same hub instead of racing it. Its uploads still committing count as
    // in flight: a BIND of this id waits for them too (PROTOCOL.md §4.5).
    this.#enqueue(record, () => session.committing);
    const inFlight = record.queue.drained();
    this.#track(this.#endSession(session, inFlight));
    this.#sessions.released(record);
    this.#output.send({ type: MessageType.Unbound, sessionId: session.id });
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
    const record = this.#sessions.get(session.id);
    if (record?.session !== session) return;
    this.#sessions.detach(record);
    this.#context.stats.sessions--;
    await session.close();
    await inFlight;
    // Uploads handed to the hub are still committing in its queue.
    await session.committing;
    this.#context.registry.release(session.hub);
  }

  #failSession(session: Session, error: SessionError): void {
    const record = this.#sessions.get(session.id);
    if (record?.session !== session) return;
    this.#track(this.#endSession(session));
    this.#sessions.ended(record);
    this.#sendSessionError(session.id, error, session.path);
  }

  // A BIND that never became a session: refused at once (no record yet, or
  // one whose id is free) or failed while binding.
  #failUnbound(
    record: SessionRecord | undefined,
    sessionId: number,
    error: SessionError,
    path?: string,
  ): void {
    this.#sessions.ended(record ?? sessionId);
    this.#sendSessionError(sessionId, error, path);
  }

  #sendSessionError(
    sessionId: number,
    error: SessionError,
    path?: string,
  ): void {
    const cause = error.cause;
    this.#countError(error.code);
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
    this.#output.send({
      type: MessageType.Error,
      sessionId,
      code: errorCodeNumber(error.code),
      tryAgain: ERROR_CODES[error.code].tryAgain,
      message: error.message,
    });
  }

  /** One row per bound session, for the status page. */
  statusRows(): StatusSession[] {
    const pendingBytes = this.#output.pendingBytes();
    return this.#sessions.sessions().map((session) => {
      const state = this.#sessions.get(session.id)?.state;
      return {
        realm: session.path,
        connection: this.id,
        session: session.id,
        userId: this.#userId ?? "",
        state: state === "bound" ? session.phase : state ?? "ended",
        pendingBytes,
      };
    });
  }

  #countError(code: ErrorCodeName): void {
    this.#context.metrics.error(code);
    if (code === "client_reset_required") {
      this.#context.metrics.clientResets.value++;
    }
  }

  #onClose(): void {
    if (this.#isClosed()) return;
    this.#state = "closed";
    this.#closing = true;
    this.#gone.abort(new Error("The connection closed"));
    this.#context.lifetime.removeEventListener("abort", this.#onShutdown);
    clearTimeout(this.#closeTimer);
    clearTimeout(this.#handshakeTimer);
    this.#tokenDeadline.stop();
    this.#handshakeTimer = undefined;
    const endings = this.#sessions.sessions().map((session) =>
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
