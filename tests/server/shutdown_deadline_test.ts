/**
 * Shutdown against clients that do not cooperate, over raw TCP: it finishes
 * without waiting for its deadline, closes every connection, and nothing it
 * abandons fails later outside the logger.
 */
import assert from "node:assert/strict";
import { errorCodeNumber } from "../../src/protocol/error_codes.ts";
import { MessageType } from "../../src/protocol/messages.ts";
import { abortable } from "../../src/util/abort.ts";
import { ProtocolClient } from "../_helpers/protocol_client.ts";
import { startTestServer, type TestServer } from "../_helpers/test_server.ts";
import { reportBacklog } from "../_helpers/backlog.ts";
import { RawWebSocket } from "../_helpers/raw_websocket.ts";

// Long enough that the silent clients' close grace (half of it, at most a
// second) ends well before it.
const SHUTDOWN_TIMEOUT_MS = 800;

async function openTcp(test: TestServer): Promise<Deno.TcpConn> {
  const url = new URL(test.url);
  return await Deno.connect({
    hostname: url.hostname,
    port: Number(url.port),
  });
}

async function write(connection: Deno.Conn, text: string): Promise<void> {
  const bytes = new TextEncoder().encode(text);
  let written = 0;
  while (written < bytes.length) {
    written += await connection.write(bytes.subarray(written));
  }
}

/** Reads until the server closes the connection; returns what it sent. */
async function readToEnd(
  connection: Deno.Conn,
  signal: AbortSignal,
): Promise<string> {
  const chunks: Uint8Array[] = [];
  const buffer = new Uint8Array(64 * 1024);
  const onAbort = () => connection.close();
  signal.addEventListener("abort", onAbort, { once: true });
  try {
    for (let reads = 0; reads < 10_000; reads++) {
      let read: number | null;
      try {
        read = await connection.read(buffer);
      } catch (error) {
        signal.throwIfAborted();
        if (error instanceof Deno.errors.ConnectionReset) break;
        throw error;
      }
      if (read === null) break;
      chunks.push(buffer.slice(0, read));
    }
  } finally {
    signal.removeEventListener("abort", onAbort);
  }
  return new TextDecoder().decode(
    new Uint8Array(chunks.flatMap((chunk) => [...chunk])),
  );
}

/** Shuts down, bounded; asserts the deadline was not needed. */
async function shutdownWithinDeadline(test: TestServer): Promise<void> {
  await abortable(
    test.server.shutdown(),
    AbortSignal.timeout(SHUTDOWN_TIMEOUT_MS + 3000),
  );
  assert.deepEqual(
    test.logs.filter((record) => record.event === "shutdown_forced"),
    [],
    "shutdown had to give up on something",
  );
}

Deno.test("shutdown closes raw TCP clients that stop anywhere: mid-upgrade, upgraded and silent, not reading, beyond maxConnections", async () => {
  const test = await startTestServer({
    shutdownTimeoutMs: SHUTDOWN_TIMEOUT_MS,
    limits: { maxConnections: 3 },
  });
  const connections: Deno.Conn[] = [];
  const raw: RawWebSocket[] = [];
  try {
    const login = await test.login();
    const url = new URL(test.url);
    // Headers that never end.
    const halfUpgrade = await openTcp(test);
    connections.push(halfUpgrade);
    await write(
      halfUpgrade,
      `GET /sync HTTP/1.1\r\nHost: ${url.host}\r\nUpgrade: websocket\r\n`,
    );
    // An idle keep-alive connection after one request.
    const idle = await openTcp(test);
    connections.push(idle);
    await write(idle, `GET /health HTTP/1.1\r\nHost: ${url.host}\r\n\r\n`);
    // Upgraded, then silent (never sends HANDSHAKE).
    raw.push(await RawWebSocket.connect(test.url));
    // Upgraded and authenticated, never reads again.
    const deaf = await RawWebSocket.connect(test.url);
    raw.push(deaf);
    await deaf.send({
      type: MessageType.Handshake,
      minVersion: 1,
      maxVersion: 1,
      accessToken: login.accessToken,
    });
    await deaf.send({
      type: MessageType.Bind,
      sessionId: 1,
      path: "/~/a",
      clientIdentity: null,
      downloadCursor: 0,
      uploadCursor: 0,
    });
    // A well-behaved client, then more than maxConnections.
    const polite = await ProtocolClient.connect(test.url);
    await polite.handshake(login.accessToken);
    const refused = [];
    for (let index = 0; index < 3; index++) {
      refused.push(await RawWebSocket.connect(test.url));
    }
    raw.push(...refused);
    await test.waitForLog((record) =>
      record.event === "error_sent" && record.code === "too_many_connections"
    );

    await shutdownWithinDeadline(test);
    assert.equal((await polite.closed).code, 1001);
    const signal = AbortSignal.timeout(5000);
    for (const connection of connections) await readToEnd(connection, signal);
    for (const socket of raw) {
      // Drains whatever was sent, then the close.
      await assert.rejects(async () => {
        for (let step = 0; step < 100; step++) await socket.next(signal);
      }, /closed/);
    }
    assert.deepEqual(test.server.stats().connections, 0);
  } finally {
    for (const connection of connections) {
      try {
        connection.close();
      } catch {
        // Closed by the test already.
      }
    }
    for (const socket of raw) socket.close();
    await test.server.shutdown();
  }
});

Deno.test("a login whose body never finishes does not hold shutdown to its deadline", async () => {
  const test = await startTestServer({
    shutdownTimeoutMs: SHUTDOWN_TIMEOUT_MS,
  });
  const connection = await openTcp(test);
  try {
    const url = new URL(test.url);
    await write(
      connection,
      `POST /login HTTP/1.1\r\nHost: ${url.host}\r\nContent-Length: 100\r\n\r\n{"provider"`,
    );
    // By the time another request is answered, the server has read this
    // head (it arrived first) and the handler waits for the body.
    await (await fetch(`${test.url}/health`)).body?.cancel();
    await shutdownWithinDeadline(test);
    const answer = await readToEnd(connection, AbortSignal.timeout(5000));
    assert.match(answer, /^HTTP\/1\.1 503 /);
  } finally {
    connection.close();
    await test.server.shutdown();
  }
});

Deno.test("a client that leaves in the middle of a login body is logged once, as abandoned, and nothing is printed", async () => {
  const printed: unknown[][] = [];
  const consoleError = console.error;
  console.error = (...data: unknown[]) => printed.push(data);
  try {
    await using test = await startTestServer();
    const connection = await openTcp(test);
    const url = new URL(test.url);
    await write(
      connection,
      `POST /login HTTP/1.1\r\nHost: ${url.host}\r\nContent-Length: 100\r\n\r\n{"pro`,
    );
    await (await fetch(`${test.url}/health`)).body?.cancel();
    connection.close();
    const abandoned = await test.waitForLog((record) =>
      record.event === "login_abandoned"
    );
    assert.equal(abandoned.level, "debug");
    assert.deepEqual(
      test.logs.filter((record) =>
        record.level === "error" || record.level === "warn"
      ),
      [],
    );
    assert.deepEqual(printed, []);
  } finally {
    console.error = consoleError;
  }
});

Deno.test("a connection whose socket never drains and whose client never answers the close holds shutdown only until its deadline, then is cut", async () => {
  const test = await startTestServer({ shutdownTimeoutMs: 300 });
  let client: RawWebSocket | undefined;
  try {
    const login = await test.login();
    client = await RawWebSocket.connect(test.url);
    await client.send({
      type: MessageType.Handshake,
      minVersion: 1,
      maxVersion: 1,
      accessToken: login.accessToken,
    });
    const signal = AbortSignal.timeout(5000);
    await client.next(signal);
    {
      using _backlog = reportBacklog(() => true, 1024 * 1024);
      await abortable(test.server.shutdown(), signal);
    }
    assert.equal(
      test.logs.filter((record) => record.event === "shutdown_forced").length,
      1,
    );
    // The ERROR was written all the same; then the connection was cut.
    const { message } = await client.next(signal);
    assert.equal(message.type, MessageType.Error);
    assert.equal(message.code, errorCodeNumber("server_shutting_down"));
    await assert.rejects(() => client!.next(signal), /closed/);
    assert.equal(test.server.stats().connections, 0);
  } finally {
    client?.close();
    await test.server.shutdown();
  }
});
