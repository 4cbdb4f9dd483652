/**
 * Clients that leave at the worst moment, or say things in the wrong order:
 * whatever they do, the connection's state is freed (stats back to zero,
 * realm hubs and their watches gone) and other clients are not affected.
 */
import assert from "node:assert/strict";
import { errorCodeNumber } from "../../src/protocol/error_codes.ts";
import {
  type ClientMessage,
  MessageType,
} from "../../src/protocol/messages.ts";
import type { LogRecord } from "../../server.ts";
import { put, upload } from "../_helpers/changesets.ts";
import { ProtocolClient } from "../_helpers/protocol_client.ts";
import { startTestServer, type TestServer } from "../_helpers/test_server.ts";
import { TestKv } from "../_helpers/test_kv.ts";
import { RawWebSocket } from "../_helpers/raw_websocket.ts";

async function connect(
  test: TestServer,
  accessToken: string,
): Promise<ProtocolClient> {
  const client = await ProtocolClient.connect(test.url);
  await client.handshake(accessToken);
  return client;
}

/** Waits until `count` connections have logged connection_closed. */
async function waitForClosedConnections(
  test: TestServer,
  count: number,
): Promise<void> {
  const signal = AbortSignal.timeout(3000);
  const closed = (record: LogRecord) => record.event === "connection_closed";
  for (let step = 0; step < count; step++) {
    const seen = test.logs.filter(closed).length;
    if (seen >= count) return;
    await test.waitForLog(
      (record) => closed(record) && test.logs.filter(closed).length >= count,
      signal,
    );
  }
}

Deno.test("a permissions() callback that never settles holds neither its connection, nor other sessions, nor shutdown", async () => {
  const asked = Promise.withResolvers<void>();
  const test = await startTestServer({
    shutdownTimeoutMs: 3000,
    permissions: (userId, path) => {
      if (path === `/${userId}/stuck`) {
        asked.resolve();
        return new Promise(() => {});
      }
      return "readwrite";
    },
  });
  try {
    const login = await test.login();
    const client = await connect(test, login.accessToken);
    client.send({
      type: MessageType.Bind,
      sessionId: 1,
      path: "/~/stuck",
      clientIdentity: null,
      downloadCursor: 0,
      uploadCursor: 0,
    });
    await asked.promise;
    // Another session on the same socket is not held up.
    await client.bind(2, "/~/fine");
    await client.expect(MessageType.Download);
    client.send({
      type: MessageType.Upload,
      sessionId: 2,
      changesets: [upload(1, [put("T", "a", {})])],
    });
    assert.equal(
      (await client.expect(MessageType.Download)).lastIntegratedClientVersion,
      1,
    );
    // The client leaves while its first BIND still waits for permissions:
    // the connection is gone and no longer counts against maxConnections.
    await client.close();
    await waitForClosedConnections(test, 1);
    assert.equal(test.server.stats().connections, 0);
    assert.equal(test.server.stats().sessions, 0);
    assert.equal(test.server.stats().realms, 0);

    // Shutdown with such a BIND pending finishes without the deadline.
    const second = await connect(test, login.accessToken);
    second.send({
      type: MessageType.Bind,
      sessionId: 1,
      path: "/~/stuck",
      clientIdentity: null,
      downloadCursor: 0,
      uploadCursor: 0,
    });
    second.send({ type: MessageType.Ping, timestamp: 1 });
    await second.expect(MessageType.Pong);
    await test.server.shutdown();
    assert.equal((await second.closed).code, 1001);
    assert.deepEqual(
      test.logs.filter((record) => record.event === "shutdown_forced"),
      [],
    );
  } finally {
    await test.server.shutdown();
  }
});

/** Reads a realm's stored history: version → [identity, clientVersion]. */
async function storedHistory(
  kv: Deno.Kv,
  realm: string,
): Promise<Map<number, [number, number]>> {
  const versions = new Map<number, [number, number]>();
  for await (
    const entry of kv.list<{ identity: number; clientVersion: number }>({
      prefix: ["tether", "realm", realm, "history"],
    })
  ) {
    versions.set(entry.key.at(-1) as number, [
      entry.value.identity,
      entry.value.clientVersion,
    ]);
  }
  return versions;
}

Deno.test("clients that leave mid-handshake, mid-BIND, mid-upload or mid-bootstrap leave no connection, session, realm or watch behind, and lose no acknowledged changeset", async () => {
  await using inner = await Deno.openKv(":memory:");
  const gated = new TestKv(inner);
  await using test = await startTestServer({
    kv: gated.kv,
    downloadBatchBytes: 1024,
  });
  try {
    const login = await test.login();
    const realm = `/${login.userId}/r`;
    // Some history, enough for a bootstrap of several batches.
    const seed = await connect(test, login.accessToken);
    const seedIdentity = (await seed.bind(1, "/~/r"))!;
    await seed.expect(MessageType.Download);
    seed.send({
      type: MessageType.Upload,
      sessionId: 1,
      changesets: Array.from(
        { length: 20 },
        (_, index) =>
          upload(index + 1, [put("T", `t${index}`, { text: "x".repeat(200) })]),
      ),
    });
    for (let step = 0; step < 50; step++) {
      const message = await seed.expect(MessageType.Download);
      if (message.lastIntegratedClientVersion === 20) break;
    }
    await seed.close();
    let closedSoFar = 1;

    // 1. HANDSHAKE, then gone before the reply could be read.
    {
      const client = await ProtocolClient.connect(test.url);
      client.send({
        type: MessageType.Handshake,
        minVersion: 1,
        maxVersion: 1,
        accessToken: login.accessToken,
      });
      await client.close();
      closedSoFar++;
    }

    // 2. BIND without an identity; gone while the identity is committed.
    {
      const hold = gated.hold("commit");
      const client = await connect(test, login.accessToken);
      client.send({
        type: MessageType.Bind,
        sessionId: 1,
        path: "/~/r",
        clientIdentity: null,
        downloadCursor: 0,
        uploadCursor: 0,
      });
      await hold.reached;
      await client.close();
      hold.release();
      closedSoFar++;
    }

    // 3. UPLOAD; gone while its commit is in flight. The commit may land:
    // the client re-uploads after reconnecting.
    let identity;
    {
      const client = await connect(test, login.accessToken);
      identity = (await client.bind(1, "/~/r"))!;
      const hold = gated.hold("commit");
      client.send({
        type: MessageType.Upload,
        sessionId: 1,
        changesets: [upload(1, [put("T", "late", { by: "leaver" })])],
      });
      await hold.reached;
      await client.close();
      hold.release();
      closedSoFar++;
    }

    // 4. A fresh BIND (cursor 0) starts a bootstrap; gone while the
    // server is reading storage for it.
    {
      const hold = gated.hold("list");
      const client = await connect(test, login.accessToken);
      client.send({
        type: MessageType.Bind,
        sessionId: 1,
        path: "/~/r",
        clientIdentity: seedIdentity,
        downloadCursor: 0,
        uploadCursor: 20,
      });
      await hold.reached;
      await client.close();
      hold.release();
      closedSoFar++;
    }

    await waitForClosedConnections(test, closedSoFar);
    assert.deepEqual(
      {
        connections: test.server.stats().connections,
        sessions: test.server.stats().sessions,
        realms: test.server.stats().realms,
        watches: gated.openWatches,
      },
      { connections: 0, sessions: 0, realms: 0, watches: 0 },
    );

    // The leaver reconnects and uploads again: acknowledged, stored once.
    const back = await connect(test, login.accessToken);
    back.send({
      type: MessageType.Bind,
      sessionId: 7,
      path: "/~/r",
      clientIdentity: identity,
      downloadCursor: 0,
      uploadCursor: 0,
    });
    back.send({
      type: MessageType.Upload,
      sessionId: 7,
      changesets: [upload(1, [put("T", "late", { by: "leaver" })])],
    });
    back.send({ type: MessageType.Mark, sessionId: 7, requestId: 1 });
    const received = new Map<string, unknown>();
    let acknowledged = 0;
    for (let step = 0; step < 200; step++) {
      const message = await back.next();
      if (message.type === MessageType.MarkReply) break;
      assert.equal(message.type, MessageType.Download);
      acknowledged = Math.max(
        acknowledged,
        message.lastIntegratedClientVersion,
      );
      for (const changeset of message.changesets) {
        for (const instruction of changeset.instructions) {
          received.set(instruction.id, instruction.fields);
        }
      }
    }
    assert.equal(acknowledged, 1);
    assert.equal(
      received.size,
      20,
      "every seeded object, from snapshot or history",
    );
    await back.close();

    const history = await storedHistory(inner, realm);
    assert.equal(history.size, 21);
    const pairs = [...history.values()].map(([id, version]) =>
      `${id}:${version}`
    );
    assert.equal(
      new Set(pairs).size,
      21,
      "each (identity, client version) once",
    );
    assert.deepEqual(
      [...history.keys()].sort((a, b) => a - b),
      Array.from({ length: 21 }, (_, index) => index + 1),
    );
  } finally {
    gated.releaseAll();
  }
});

/** Reads DOWNLOADs (acks, own versions) until UNBOUND for `sessionId`. */
async function expectUnboundAfterDownloads(
  client: ProtocolClient,
  sessionId: number,
): Promise<void> {
  for (let step = 0; step < 10; step++) {
    const message = await client.next();
    if (message.type === MessageType.Unbound) {
      assert.equal(message.sessionId, sessionId);
      return;
    }
    assert.equal(message.type, MessageType.Download);
  }
  assert.fail("No UNBOUND");
}

/** Expects a connection-scoped protocol_violation, then close 1002. */
async function expectViolation(client: ProtocolClient): Promise<string> {
  const error = await client.expect(MessageType.Error);
  assert.equal(error.sessionId, null);
  assert.equal(
    error.code,
    errorCodeNumber("protocol_violation"),
    error.message,
  );
  assert.equal((await client.closed).code, 1002);
  return error.message;
}

Deno.test("session messages out of order get the same answer whether or not the client waits between them, each logged once", async (t) => {
  await using inner = await Deno.openKv(":memory:");
  const gated = new TestKv(inner);
  await using test = await startTestServer({ kv: gated.kv });
  const login = await test.login();
  const errorsLogged = (connection: number) =>
    test.logs.filter((record) =>
      record.event === "error_sent" && record.connection === connection
    );
  let connection = 0;
  const open = async () => {
    const client = await connect(test, login.accessToken);
    connection++;
    return client;
  };
  const bindMessage = (sessionId: number, path: string) => ({
    type: MessageType.Bind,
    sessionId,
    path,
    clientIdentity: null,
    downloadCursor: 0,
    uploadCursor: 0,
  } as const);

  await t.step("MARK before BIND", async () => {
    await using client = await open();
    client.send({ type: MessageType.Mark, sessionId: 1, requestId: 1 });
    assert.equal(
      await expectViolation(client),
      "Cannot handle message: session 1 is not bound",
    );
    assert.equal(errorsLogged(connection).length, 1);
  });

  await t.step("UNBIND of an id never bound", async () => {
    await using client = await open();
    client.send({ type: MessageType.Unbind, sessionId: 9 });
    await expectViolation(client);
    assert.equal(errorsLogged(connection).length, 1);
  });

  await t.step("BIND of an id in use", async () => {
    await using client = await open();
    await client.bind(1, "/~/a");
    await client.expect(MessageType.Download);
    client.send(bindMessage(1, "/~/b"));
    assert.equal(
      await expectViolation(client),
      "Cannot bind: session 1 is already bound",
    );
    assert.equal(errorsLogged(connection).length, 1);
  });

  // "Back to back": the session is still busy (its UPLOAD's commit is held)
  // when the second message arrives. UNBOUND does not wait for that commit
  // (PROTOCOL.md §4.5), so it comes first either way; what the second
  // message gets depends only on the client having sent UNBIND.
  const second: [string, ClientMessage][] = [
    ["UNBIND", { type: MessageType.Unbind, sessionId: 1 }],
    ["UPLOAD", {
      type: MessageType.Upload,
      sessionId: 1,
      changesets: [upload(2, [put("T", "y", {})])],
    }],
    ["MARK", { type: MessageType.Mark, sessionId: 1, requestId: 4 }],
  ];
  for (const [name, message] of second) {
    for (const waits of [true, false]) {
      await t.step(
        `${name} after UNBIND, ${
          waits ? "waiting for UNBOUND" : "back to back"
        }`,
        async () => {
          await using client = await open();
          await client.bind(1, "/~/a");
          await client.expect(MessageType.Download);
          const hold = gated.hold("commit");
          client.send({
            type: MessageType.Upload,
            sessionId: 1,
            changesets: [upload(1, [put("T", "x", {})])],
          });
          await hold.reached;
          client.send({ type: MessageType.Unbind, sessionId: 1 });
          if (waits) await expectUnboundAfterDownloads(client, 1);
          client.send(message);
          if (!waits) await expectUnboundAfterDownloads(client, 1);
          await expectViolation(client);
          hold.release();
          assert.equal(errorsLogged(connection).length, 1);
        },
      );
    }
  }

  await t.step(
    "UPLOAD and MARK sent before a session-scoped error arrived are ignored; UNBIND is answered; the id can be bound again",
    async () => {
      await using client = await open();
      client.send(bindMessage(3, "/someone-else/x"));
      client.send({
        type: MessageType.Upload,
        sessionId: 3,
        changesets: [upload(1, [put("T", "x", {})])],
      });
      client.send({ type: MessageType.Mark, sessionId: 3, requestId: 1 });
      client.send({ type: MessageType.Unbind, sessionId: 3 });
      const error = await client.expect(MessageType.Error);
      assert.equal(error.sessionId, 3);
      assert.equal(error.code, errorCodeNumber("permission_denied"));
      assert.equal((await client.expect(MessageType.Unbound)).sessionId, 3);
      assert.ok(await client.bind(3, "/~/c") !== null);
      assert.equal((await client.expect(MessageType.Download)).sessionId, 3);
      assert.equal(errorsLogged(connection).length, 1);
    },
  );
  gated.releaseAll();
});

Deno.test("storage failing while a session reads the history fails that session once, logged once; the connection and its other sessions go on", async () => {
  await using kv = await Deno.openKv(":memory:");
  let broken = false;
  const failing = new Proxy(kv, {
    get(target, property) {
      const value = Reflect.get(target, property);
      if (property === "list" && typeof value === "function") {
        return (...args: unknown[]) => {
          if (broken) throw new Error("disk on fire");
          return value.apply(target, args);
        };
      }
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  // Without snapshots: a bootstrap asks for a snapshot advance in the
  // background, which would meet the failing store at a time of its own.
  await using test = await startTestServer({
    kv: failing,
    history: { snapshots: false },
  });
  const login = await test.login();
  await using client = await connect(test, login.accessToken);
  await client.bind(1, "/~/r");
  await client.expect(MessageType.Download);
  client.send({
    type: MessageType.Upload,
    sessionId: 1,
    changesets: [
      upload(1, [put("T", "a", {})]),
      upload(2, [put("T", "b", {})]),
    ],
  });
  for (let step = 0; step < 5; step++) {
    const message = await client.expect(MessageType.Download);
    if (message.serverVersion === 2) break;
  }
  client.send({ type: MessageType.Unbind, sessionId: 1 });
  await client.expect(MessageType.Unbound);
  await client.bind(2, "/~/other");
  await client.expect(MessageType.Download);

  // A fresh session must read the history from storage (nothing of the
  // realm is cached any more), which now fails.
  broken = true;
  await client.bind(3, "/~/r");
  const error = await client.expect(MessageType.Error);
  assert.equal(error.sessionId, 3);
  assert.equal(error.code, errorCodeNumber("session_failed"));
  assert.equal(error.tryAgain, true);
  broken = false;

  client.send({
    type: MessageType.Upload,
    sessionId: 2,
    changesets: [upload(1, [put("T", "c", {})])],
  });
  assert.equal(
    (await client.expect(MessageType.Download)).lastIntegratedClientVersion,
    1,
  );
  // One ERROR, logged once.
  const reports = test.logs.filter((record) =>
    record.level === "warn" || record.level === "error"
  );
  assert.deepEqual(
    reports.map((record) => [record.event, record.code, record.session]),
    [["error_sent", "session_failed", 3]],
  );
  assert.equal((reports[0]!.error as Error).message, "disk on fire");
});

Deno.test("clients that never answer the server's close stop counting against maxConnections after handshakeTimeoutMs", async () => {
  await using test = await startTestServer({
    handshakeTimeoutMs: 100,
    limits: { maxConnections: 2 },
  });
  const login = await test.login();
  // Silent: no HANDSHAKE, and no answer to the close that follows.
  const silent = [
    await RawWebSocket.connect(test.url),
    await RawWebSocket.connect(test.url),
  ];
  try {
    const signal = AbortSignal.timeout(5000);
    for (const socket of silent) {
      const { message } = await socket.next(signal);
      assert.equal(message.type, MessageType.Error);
      assert.equal(message.code, errorCodeNumber("protocol_violation"));
    }
    await waitForClosedConnections(test, 2);
    assert.equal(test.server.stats().connections, 0);
    await using client = await connect(test, login.accessToken);
    client.send({ type: MessageType.Ping, timestamp: 3 });
    assert.equal((await client.expect(MessageType.Pong)).timestamp, 3);
    assert.equal(
      test.logs.filter((record) => record.event === "error_sent").length,
      2,
      "each silent client's error logged once",
    );
  } finally {
    for (const socket of silent) socket.close();
  }
});
