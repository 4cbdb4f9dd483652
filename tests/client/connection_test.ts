// Connection tests: dialing, handshake, keepalive, RECEIVED acknowledgements and reconnects, over fake sockets and a fake clock.
import assert from "node:assert/strict";
import { DEFAULT_RECONNECT } from "../../src/client/backoff.ts";
import { refreshDueAt } from "../../src/client/connection_types.ts";
import { DEFAULT_KEEPALIVE } from "../../src/client/keepalive.ts";
import { SyncError } from "../../src/client/sync_error.ts";
import { errorCodeNumber } from "../../src/protocol/error_codes.ts";
import { encodeMessage } from "../../src/protocol/encode.ts";
import { MessageType } from "../../src/protocol/messages.ts";
import {
  MIN_PROTOCOL_VERSION,
  PROTOCOL_VERSION,
} from "../../src/protocol/version.ts";
import {
  advanceAlive,
  advanceToRetry,
  connect,
  flush,
  openBinding,
  setup,
} from "../_helpers/connection_harness.ts";

/** A DOWNLOAD of one changeset putting note n1 with `text`. */
function noteDownload(sessionId: number, text: string) {
  return {
    type: MessageType.Download,
    sessionId,
    serverVersion: 1,
    lastIntegratedClientVersion: 0,
    downloadableBytes: 0,
    changesetBytes: 0,
    changesets: [{
      serverVersion: 1,
      stamp: { time: 1, counter: 0, node: 2 },
      instructions: [{
        op: "put" as const,
        type: "Note",
        id: "n1",
        fields: { text },
        stamp: null,
      }],
    }],
  };
}

Deno.test("Connection dials on the first attach, sends HANDSHAKE with the token, and opens a channel", async () => {
  const test = setup();
  const client = test.client();
  test.connection.attach(client);
  assert.equal(test.connection.phase, "connecting");
  await flush();
  const socket = test.sockets.last;
  assert.equal(socket.url, "ws://test/sync");
  socket.open();
  assert.deepEqual(socket.sent, [{
    type: MessageType.Handshake,
    minVersion: MIN_PROTOCOL_VERSION,
    maxVersion: PROTOCOL_VERSION,
    accessToken: "token-1",
  }]);
  socket.acceptHandshake(4096);
  assert.deepEqual(client.events, ["connecting", "opened 1"]);
  assert.equal(client.channel!.maxMessageBytes, 4096);
  assert.equal(test.connection.phase, "connected");
  await test.connection.close();
  assert.equal(test.clock.pending, 0);
});

Deno.test("Connection multiplexes sessions on one socket and routes messages by session id", async () => {
  const test = setup();
  const [a, b, c] = [test.client(), test.client(), test.client()];
  test.connection.attach(a);
  test.connection.attach(b);
  await flush();
  const socket = test.sockets.last;
  socket.open();
  socket.acceptHandshake();
  // Attached while the socket is up: still connecting → opened.
  test.connection.attach(c);
  assert.equal(test.sockets.all.length, 1);
  assert.deepEqual(a.events, ["connecting", "opened 1"]);
  assert.deepEqual(b.events, ["connecting", "opened 2"]);
  assert.deepEqual(c.events, ["connecting", "opened 3"]);
  socket.receive({ type: MessageType.MarkReply, sessionId: 2, requestId: 7 });
  socket.receive({ type: MessageType.MarkReply, sessionId: 99, requestId: 1 });
  assert.equal(a.messages.length, 0);
  assert.deepEqual(b.messages, [{
    type: MessageType.MarkReply,
    sessionId: 2,
    requestId: 7,
  }]);
  await test.connection.close();
});

Deno.test("Connection one session's error or detach never takes the socket from the others", async () => {
  const test = setup();
  const [a, b] = [test.client(), test.client()];
  const attachment = test.connection.attach(a);
  test.connection.attach(b);
  await flush();
  const socket = test.sockets.last;
  socket.open();
  socket.acceptHandshake();
  socket.receive({
    type: MessageType.Error,
    sessionId: 1,
    code: errorCodeNumber("permission_denied"),
    tryAgain: false,
    message: "no",
  });
  assert.equal(a.messages.length, 1);
  attachment.detach({ unbind: false });
  assert.equal(socket.readyState, 1);
  assert.equal(test.connection.phase, "connected");
  socket.receive({ type: MessageType.MarkReply, sessionId: 2, requestId: 1 });
  assert.equal(b.messages.length, 1);
  assert.deepEqual(b.events, ["connecting", "opened 2"]);
  await test.connection.close();
});

Deno.test("Connection detach() sends UNBIND, and the last detach closes the socket after lingerMs", async () => {
  const test = setup();
  const a = test.client();
  const socket = await connect(test, a);
  const attachment = test.connection.attach(test.client());
  attachment.detach();
  assert.deepEqual(socket.sentOf(MessageType.Unbind), [{
    type: MessageType.Unbind,
    sessionId: 2,
  }]);
  // a is still there: no linger.
  advanceAlive(test, socket, 10_000);
  assert.equal(socket.readyState, 1);
  const attachmentA = test.connection.attach(test.client());
  attachmentA.detach();
  // Detach the first client too; an attach during the linger keeps the socket.
  test.connection.attach(test.client()).detach();
  assert.equal(socket.readyState, 1);
  await test.connection.close();
  assert.equal(test.clock.pending, 0);
});

Deno.test("Connection linger closes an unused socket, and an attach during the linger keeps it", async () => {
  const test = setup();
  const a = test.client();
  const attachment = test.connection.attach(a);
  await flush();
  const socket = test.sockets.last;
  socket.open();
  socket.acceptHandshake();
  attachment.detach();
  test.clock.advance(1_999);
  assert.equal(socket.readyState, 1);
  const again = test.connection.attach(test.client());
  advanceAlive(test, socket, 10_000);
  assert.equal(socket.readyState, 1);
  again.detach();
  test.clock.advance(2_000);
  assert.equal(socket.readyState, 3);
  assert.equal(socket.closedWith, 1000);
  assert.equal(test.connection.phase, "idle");
  assert.equal(test.clock.pending, 0);
  await test.connection.close();
});

Deno.test("Connection retries a lost connection with full-jitter backoff and shows the schedule", async () => {
  const test = setup();
  const client = test.client();
  const socket = await connect(test, client);
  socket.serverClose(1006);
  // random() = 0.5: half of minDelayMs × 2^0.
  assert.deepEqual(client.events.slice(2), [
    "lost connection_lost retry 1 in 500",
  ]);
  assert.equal(test.connection.phase, "waiting");
  assert.equal(client.retries[0]!.lastError.willRetry, true);
  test.clock.advance(499);
  assert.equal(test.sockets.all.length, 1);
  test.clock.advance(1);
  await flush();
  assert.equal(test.sockets.all.length, 2);
  // Each failed dial doubles the bound: 1000, 2000, 4000 (× 0.5).
  test.sockets.last.serverClose(1006);
  test.clock.advance(1_000);
  await flush();
  test.sockets.last.serverClose(1006);
  assert.deepEqual(client.events.slice(2), [
    "lost connection_lost retry 1 in 500",
    "connecting",
    "lost connection_lost retry 2 in 1500",
    "connecting",
    "lost connection_lost retry 3 in 3500",
  ]);
  await test.connection.close();
  assert.equal(test.clock.pending, 0);
});

Deno.test("Connection reconnect.maxAttempts failed dials in a row end every session with reconnect_gave_up", async () => {
  const test = setup({
    reconnect: { ...DEFAULT_RECONNECT, minDelayMs: 100, maxAttempts: 3 },
  });
  const [a, b] = [test.client(), test.client()];
  test.connection.attach(a);
  test.connection.attach(b);
  await flush();
  for (let attempt = 0; attempt < 3; attempt++) {
    test.sockets.last.serverClose(1006);
    if (attempt < 2) await advanceToRetry(test, a);
  }
  assert.deepEqual(a.events, [
    "connecting",
    "lost connection_lost retry 1 in 50",
    "connecting",
    "lost connection_lost retry 2 in 150",
    "connecting",
    "failed reconnect_gave_up",
  ]);
  assert.equal(a.errors.at(-1)!.isFatal, true);
  assert.equal(
    a.errors.at(-1)!.message,
    "Gave up after 3 failed connection attempts in a row: Connection closed (1006)",
  );
  assert.deepEqual(b.events.at(-1), "failed reconnect_gave_up");
  assert.equal(test.connection.phase, "idle");
  assert.equal(test.clock.pending, 0);
  await test.connection.close();
});

Deno.test("Connection reconnect() cancels a pending delay, resets the backoff and dials now", async () => {
  const test = setup({
    reconnect: {
      ...DEFAULT_RECONNECT,
      minDelayMs: 60_000,
      maxDelayMs: 600_000,
    },
  });
  const client = test.client();
  const socket = await connect(test, client);
  socket.serverClose(1006);
  await advanceToRetry(test, client);
  test.sockets.last.serverClose(1006);
  assert.equal(client.retries.at(-1)!.attempt, 2);
  assert.equal(test.connection.phase, "waiting");
  test.connection.reconnect();
  assert.equal(test.connection.phase, "connecting");
  await flush();
  assert.equal(test.sockets.all.length, 3);
  // The backoff starts again from the first delay.
  test.sockets.last.serverClose(1006);
  assert.equal(client.retries.at(-1)!.attempt, 1);
  assert.equal(client.retries.at(-1)!.nextAttemptAt - test.clock.now(), 30_000);
  await test.connection.close();
  assert.equal(test.clock.pending, 0);
});

Deno.test("Connection reconnect() replaces an open socket that has gone silent", async () => {
  const test = setup();
  const client = test.client();
  const socket = await connect(test, client);
  test.connection.reconnect();
  assert.equal(socket.readyState, 3);
  await flush();
  const next = test.sockets.last;
  assert.notEqual(next, socket);
  next.open();
  next.acceptHandshake();
  // Straight from connected to connecting: a requested reconnect is no error.
  assert.deepEqual(client.events, [
    "connecting",
    "opened 1",
    "connecting",
    "opened 2",
  ]);
  assert.equal(client.errors.length, 0);
  await test.connection.close();
});

Deno.test("Connection detects a silent socket by the read timeout and reconnects", async () => {
  const test = setup();
  const client = test.client();
  const socket = await connect(test, client);
  test.clock.advance(2_999);
  assert.equal(socket.sentOf(MessageType.Ping).length, 2);
  test.clock.advance(1);
  assert.equal(socket.readyState, 3);
  assert.deepEqual(client.events.at(-1), "lost read_timeout retry 1 in 3500");
  await test.connection.close();
});

Deno.test("Connection measures the round-trip time from PONG", async () => {
  const test = setup();
  const socket = await connect(test, test.client());
  test.clock.advance(1_000);
  const [ping] = socket.sentOf(MessageType.Ping);
  test.clock.advance(42);
  socket.receive({ type: MessageType.Pong, timestamp: ping!.timestamp });
  assert.equal(test.connection.rttMs, 42);
  await test.connection.close();
});

Deno.test("Connection gives up a dial after connectTimeoutMs", async () => {
  const test = setup();
  const client = test.client();
  test.connection.attach(client);
  await flush();
  test.clock.advance(5_000);
  assert.equal(test.sockets.last.readyState, 3);
  assert.deepEqual(client.events, [
    "connecting",
    "lost connect_timeout retry 1 in 5500",
  ]);
  await test.connection.close();
});

Deno.test("Connection on token_expired drops the token and redials at once with a fresh one, without an error", async () => {
  const test = setup();
  const client = test.client();
  const socket = await connect(test, client);
  socket.receive({
    type: MessageType.Error,
    sessionId: null,
    code: errorCodeNumber("token_expired"),
    tryAgain: true,
    message: "expired",
  });
  assert.equal(socket.readyState, 3);
  await flush();
  const next = test.sockets.last;
  next.open();
  assert.equal(next.sentOf(MessageType.Handshake)[0]!.accessToken, "token-2");
  next.acceptHandshake();
  assert.deepEqual(client.events, [
    "connecting",
    "opened 1",
    "connecting",
    "opened 2",
  ]);
  assert.equal(test.tokens.freshRequests, 1);
  // A second expiry right away is not retried at once: backoff, visibly.
  next.receive({
    type: MessageType.Error,
    sessionId: null,
    code: errorCodeNumber("token_expired"),
    tryAgain: true,
    message: "expired again",
  });
  assert.equal(client.events.at(-1), "lost token_expired retry 1 in 500");
  test.clock.advance(500);
  await flush();
  test.sockets.last.open();
  assert.equal(
    test.sockets.last.sentOf(MessageType.Handshake)[0]!.accessToken,
    "token-3",
  );
  await test.connection.close();
});

Deno.test("Connection never sends a rejected token twice; a second bad_token in a row is fatal", async () => {
  const test = setup();
  const client = test.client();
  test.connection.attach(client);
  await flush();
  const tokensSent: string[] = [];
  for (let round = 0; round < 2; round++) {
    const socket = test.sockets.last;
    socket.open();
    tokensSent.push(socket.sentOf(MessageType.Handshake)[0]!.accessToken);
    socket.receive({
      type: MessageType.Error,
      sessionId: null,
      code: errorCodeNumber("bad_token"),
      tryAgain: false,
      message: "bad signature",
    });
    await flush();
  }
  assert.deepEqual(tokensSent, ["token-1", "token-2"]);
  assert.deepEqual(client.events, [
    "connecting",
    "connecting",
    "failed bad_token",
  ]);
  assert.equal(test.connection.phase, "idle");
  await test.connection.close();
});

Deno.test("Connection fails every session on a fatal connection error", async () => {
  const test = setup();
  const [a, b] = [test.client(), test.client()];
  test.connection.attach(a);
  test.connection.attach(b);
  await flush();
  test.sockets.last.open();
  test.sockets.last.receive({
    type: MessageType.Error,
    sessionId: null,
    code: errorCodeNumber("unsupported_protocol_version"),
    tryAgain: false,
    message: "speak version 7",
  });
  assert.deepEqual(a.events, [
    "connecting",
    "failed unsupported_protocol_version",
  ]);
  assert.deepEqual(b.events, [
    "connecting",
    "failed unsupported_protocol_version",
  ]);
  assert.equal(a.errors[0]!.message, "speak version 7");
  await test.connection.close();
  assert.equal(test.clock.pending, 0);
});

Deno.test("Connection treats an undecodable frame as a fatal protocol violation", async () => {
  const test = setup();
  const client = test.client();
  const socket = await connect(test, client);
  socket.dispatchEvent(
    new MessageEvent("message", { data: new Uint8Array([0x7e]).buffer }),
  );
  assert.deepEqual(client.events.at(-1), "failed protocol_violation");
  await test.connection.close();
});

Deno.test("Connection login failure while dialling is fatal; an unreachable login server is retried", async () => {
  const test = setup();
  const client = test.client();
  test.tokens.failWith = new SyncError(
    "connection_lost",
    "Cannot log in: unreachable",
  );
  test.connection.attach(client);
  await flush();
  assert.deepEqual(client.events, [
    "connecting",
    "lost connection_lost retry 1 in 500",
  ]);
  test.tokens.failWith = new SyncError("login_failed", "refresh token refused");
  test.clock.advance(500);
  await flush();
  assert.deepEqual(client.events.slice(2), [
    "connecting",
    "failed login_failed",
  ]);
  assert.equal(test.sockets.all.length, 0);
  await test.connection.close();
});

Deno.test("refreshDueAt: 80% of a long life, half of a short one, never for a token without expiry", () => {
  const due = (lifetime: number) =>
    refreshDueAt({
      token: "t",
      obtainedAt: 1_000,
      expiresAt: 1_000 + lifetime,
    });
  assert.equal(due(15 * 60_000), 1_000 + 12 * 60_000);
  assert.equal(due(10 * 60_000), 1_000 + 8 * 60_000);
  // The lead is at most a minute once a fifth of the life is less.
  assert.equal(due(2 * 60_000), 1_000 + 60_000);
  assert.equal(due(10_000), 1_000 + 5_000);
  assert.equal(due(1_000), 1_000 + 500);
  assert.equal(
    refreshDueAt({ token: "t", obtainedAt: 0, expiresAt: undefined }),
    undefined,
  );
});

Deno.test("Connection refreshes a short token in-band half-way through its life", async () => {
  const test = setup();
  // A short token: half its life is left for the refresh.
  test.tokens.expiresInMs = 10_000;
  const socket = await connect(test, test.client());
  // Keep the socket alive with PONGs while time passes.
  advanceAlive(test, socket, 4_500);
  assert.equal(socket.sentOf(MessageType.Refresh).length, 0);
  test.clock.advance(500);
  await flush();
  assert.deepEqual(socket.sentOf(MessageType.Refresh), [{
    type: MessageType.Refresh,
    accessToken: "token-2",
  }]);
  await test.connection.close();
  assert.equal(test.clock.pending, 0);
});

Deno.test("Connection backoff resets once a connection stayed up resetAfterMs", async () => {
  const test = setup({
    reconnect: {
      ...DEFAULT_RECONNECT,
      minDelayMs: 1_000,
      maxDelayMs: 60_000,
      resetAfterMs: 5_000,
    },
  });
  const client = test.client();
  let socket = await connect(test, client);
  // Short-lived connections: the backoff keeps growing.
  for (let round = 0; round < 3; round++) {
    socket.serverClose(1006);
    await advanceToRetry(test, client);
    socket = test.sockets.last;
    socket.open();
    socket.acceptHandshake();
  }
  assert.deepEqual(client.retries.map((retry) => retry.attempt), [1, 2, 3]);
  // This one stays up long enough (pings answered).
  advanceAlive(test, socket, 5_000);
  socket.serverClose(1006);
  assert.equal(client.retries.at(-1)!.attempt, 1);
  await test.connection.close();
});

Deno.test("Connection networkOnline() retries a waiting connection at once", async () => {
  const test = setup({
    reconnect: { ...DEFAULT_RECONNECT, minDelayMs: 60_000, maxDelayMs: 60_000 },
  });
  const client = test.client();
  const socket = await connect(test, client);
  socket.serverClose(1006);
  test.connection.networkOnline();
  await flush();
  assert.equal(test.sockets.all.length, 2);
  await test.connection.close();
});

Deno.test("Connection close() stops every timer, closes the socket, and refuses new attaches; twice is safe", async () => {
  const test = setup();
  const socket = await connect(test, test.client());
  await test.connection.close();
  await test.connection.close();
  assert.equal(socket.readyState, 3);
  assert.equal(test.clock.pending, 0);
  assert.throws(() => test.connection.attach(test.client()), TypeError);
  test.connection.reconnect();
  assert.equal(test.sockets.all.length, 1);
});

Deno.test("Connection sends frames queued behind a compressing upload intact and in call order", async () => {
  // Small frames are encoded into one writer the whole process shares; one
  // that has to wait behind a frame being deflated must not be overwritten
  // by the next message encoded meanwhile.
  const test = setup();
  const client = test.client();
  const socket = await connect(test, client);
  const channel = client.channel!;
  const upload = encodeMessage({
    type: MessageType.Upload,
    sessionId: channel.sessionId,
    changesets: [{
      clientVersion: 1,
      baseServerVersion: 0,
      stamp: { time: 1, counter: 0, node: 1 },
      instructions: [{
        op: "put",
        type: "Note",
        id: "n1",
        fields: { text: "compressible ".repeat(2_000) },
        stamp: null,
      }],
    }],
  });
  assert.ok(channel.sendUpload(upload, () => {}));
  for (let requestId = 1; requestId <= 3; requestId++) {
    channel.send({
      type: MessageType.Mark,
      sessionId: channel.sessionId,
      requestId,
    });
  }
  await flush();
  await socket.settled();
  // HANDSHAKE, then the RECEIVED that follows HANDSHAKE_REPLY.
  assert.equal(socket.sent[1]!.type, MessageType.Received);
  assert.deepEqual(
    socket.sent.slice(2).map((message) =>
      message.type === MessageType.Mark
        ? `mark ${message.requestId}`
        : `type ${message.type}`
    ),
    [`type ${MessageType.Upload}`, "mark 1", "mark 2", "mark 3"],
  );
  assert.ok(
    socket.sentBytes[2]! < upload.byteLength,
    "the upload was deflated",
  );
  await test.connection.close();
});

Deno.test("Connection on protocol 2 sends no RECEIVED before its first BIND", async () => {
  const test = setup();
  const client = test.client();
  const socket = await openBinding(test, client);
  socket.acceptHandshake(16 * 1024 * 1024, "u1", 2);
  // A RECEIVED here would hold the BIND behind Nagle until the server's
  // delayed ACK (PROTOCOL.md §4.8).
  assert.deepEqual(
    socket.sent.slice(1).map((message) => message.type),
    [MessageType.Bind],
  );
  await test.connection.close();
});

Deno.test("Connection sends a large frame's RECEIVED in the task the frame arrived in and handles the frame in a later one, in order", async () => {
  // Deno writes the RECEIVED only once that task has ended: handled in the
  // same task, a large frame would hold its acknowledgement back.
  const test = setup();
  const client = test.client();
  const socket = await openBinding(test, client);
  socket.acceptHandshake();
  const sessionId = client.channel!.sessionId;
  const download = (text: string) => noteDownload(sessionId, text);
  const before = socket.sentOf(MessageType.Received).length;
  socket.receive(download("x".repeat(100_000)));
  socket.receive(download("small"));
  assert.equal(socket.sentOf(MessageType.Received).length, before + 1);
  assert.equal(client.messages.length, 0, "handled in the arrival task");
  // A task later (bounded: a MessageChannel message takes a few turns).
  for (let turn = 0; turn < 200 && client.messages.length < 2; turn++) {
    await flush();
  }
  assert.deepEqual(
    client.messages.map((message) =>
      (message as ReturnType<typeof download>).changesets[0]!.instructions[0]!
        .fields.text.length
    ),
    [100_000, 5],
  );
  // A frame below the size is handled at once, as before.
  socket.receive(download("y".repeat(10_000)));
  assert.equal(socket.sentOf(MessageType.Received).length, before + 2);
  assert.equal(client.messages.length, 3);
  await test.connection.close();
});

Deno.test("Connection acknowledges with RECEIVED right after HANDSHAKE_REPLY and then every 8 KiB of server frames on a large frame, counting per socket", async () => {
  const test = setup({
    keepalive: {
      ...DEFAULT_KEEPALIVE,
      pingIntervalMs: 60_000,
      readTimeoutMs: 90_000,
      responseTimeoutMs: 45_000,
    },
  });
  const client = test.client();
  const socket = await openBinding(test, client);
  const replyBytes = socket.acceptHandshake();
  // Before any BIND, with the shorter of the two timeouts.
  assert.deepEqual(
    socket.sent.slice(1).map((message) => message.type),
    [MessageType.Received, MessageType.Bind],
  );
  assert.deepEqual(socket.sentOf(MessageType.Received), [{
    type: MessageType.Received,
    receivedBytes: replyBytes,
    timeoutMs: 45_000,
  }]);
  const sessionId = client.channel!.sessionId;
  const download = (text: string) => noteDownload(sessionId, text);
  // Live updates of a few hundred bytes: nothing extra on the wire.
  let total = replyBytes;
  for (let index = 0; index < 10; index++) {
    total += socket.receive(download("x".repeat(300)));
  }
  assert.equal(socket.sentOf(MessageType.Received).length, 1);
  // Past 8 KiB in small frames: still nothing, since a RECEIVED the server
  // does not answer would hold the client's next frame behind Nagle.
  for (let index = 0; index < 20; index++) {
    total += socket.receive(download("x".repeat(300)));
  }
  assert.ok(total - replyBytes >= 8192);
  assert.equal(socket.sentOf(MessageType.Received).length, 1);
  // The next large frame acknowledges everything so far, on arrival.
  total += socket.receive(download("y".repeat(6_000)));
  assert.deepEqual(socket.sentOf(MessageType.Received).at(-1), {
    type: MessageType.Received,
    receivedBytes: total,
    timeoutMs: 45_000,
  });
  total += socket.receive(download("z".repeat(9_000)));
  assert.equal(socket.sentOf(MessageType.Received).length, 3);
  assert.equal(
    socket.sentOf(MessageType.Received).at(-1)!.receivedBytes,
    total,
  );
  // A new socket counts from zero.
  socket.serverClose(1006);
  await advanceToRetry(test, client);
  const next = test.sockets.last;
  assert.notEqual(next, socket);
  next.open();
  const nextReply = next.acceptHandshake();
  assert.equal(next.sentOf(MessageType.Received)[0]!.receivedBytes, nextReply);
  await test.connection.close();
});
