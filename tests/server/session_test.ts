import assert from "node:assert/strict";
import {
  type ErrorCodeName,
  errorCodeNumber,
} from "../../src/protocol/error_codes.ts";
import {
  type ClientIdentity,
  type DownloadMessage,
  MessageType,
  type ServerMessage,
  type UploadMessage,
} from "../../src/protocol/messages.ts";
import type { RealmHub } from "../../src/server/realm_hub.ts";
import { Session } from "../../src/server/session.ts";
import type { IntegrateResult } from "../../src/server/storage/history.ts";
import type { UploadChangeset } from "../../src/model/changeset.ts";
import type { ServeSyncOptions } from "../../server.ts";
import { encodeDownloadChangeset } from "../../src/protocol/encode.ts";
import { put, remove, update, upload } from "../_helpers/changesets.ts";
import { ProtocolClient } from "../_helpers/protocol_client.ts";
import { startTestServer, type TestServer } from "../_helpers/test_server.ts";
import { RawWebSocket } from "../_helpers/raw_websocket.ts";
import { PROTOCOL_VERSION } from "../../src/protocol/version.ts";
import { sessionSettings } from "./_session_settings.ts";

/** A changeset's stored size: the unit of DOWNLOAD's byte figures. */
function storedSize(
  changeset: Pick<UploadChangeset, "stamp" | "instructions">,
): number {
  return encodeDownloadChangeset({
    serverVersion: 0,
    stamp: changeset.stamp,
    instructions: changeset.instructions,
  }).byteLength;
}

/**
 * Checks DOWNLOAD's byte figures across consecutive messages of one session
 * with no upload in between: each `downloadableBytes` is the next message's
 * `changesetBytes + downloadableBytes`, so they add up to the first
 * message's `changesetBytes + downloadableBytes`. Returns that total.
 */
function assertExactCount(messages: readonly DownloadMessage[]): number {
  for (let index = 1; index < messages.length; index++) {
    const previous = messages[index - 1]!;
    const message = messages[index]!;
    assert.equal(
      previous.downloadableBytes,
      message.changesetBytes + message.downloadableBytes,
      `message ${index}: ${previous.downloadableBytes} left before, ${message.changesetBytes} taken off, ${message.downloadableBytes} left`,
    );
  }
  const total = messages[0]!.changesetBytes + messages[0]!.downloadableBytes;
  assert.equal(
    messages.reduce((sum, message) => sum + message.changesetBytes, 0),
    total,
  );
  assert.equal(messages.at(-1)!.downloadableBytes, 0);
  return total;
}

function uploadMessage(
  sessionId: number,
  changesets: UploadChangeset[],
): UploadMessage {
  return { type: MessageType.Upload, sessionId, changesets };
}

async function connect(
  test: TestServer,
  accessToken: string,
  protocolVersion = PROTOCOL_VERSION,
) {
  const client = await ProtocolClient.connect(test.url);
  await client.handshake(accessToken, {
    minVersion: protocolVersion,
    maxVersion: protocolVersion,
  });
  return client;
}

/**
 * The next message of `type`, passing over DOWNLOADs (a session's own
 * upload moves its cursor with an empty DOWNLOAD after the acknowledgement).
 */
async function skipDownloads<T extends ServerMessage["type"]>(
  client: ProtocolClient,
  type: T,
): Promise<Extract<ServerMessage, { type: T }>> {
  for (let index = 0; index < 100; index++) {
    const message = await client.next();
    if (message.type === type) {
      return message as Extract<ServerMessage, { type: T }>;
    }
    if (message.type !== MessageType.Download) {
      throw new Error(`Expected ${type}, got ${message.type}`);
    }
  }
  throw new Error(`No message ${type} within 100 DOWNLOADs`);
}

async function expectSessionError(
  client: ProtocolClient,
  sessionId: number,
  code: ErrorCodeName,
): Promise<string> {
  const error = await client.expect(MessageType.Error);
  assert.equal(error.sessionId, sessionId);
  assert.equal(error.code, errorCodeNumber(code), error.message);
  return error.message;
}

/** Proves the connection still works by a PING round trip. */
async function assertAlive(client: ProtocolClient): Promise<void> {
  client.send({ type: MessageType.Ping, timestamp: 99 });
  assert.equal((await client.expect(MessageType.Pong)).timestamp, 99);
}

async function startWithUser(options: Partial<ServeSyncOptions> = {}) {
  const test = await startTestServer(options);
  const login = await test.login();
  return { test, login };
}

Deno.test("BIND without an identity gets IDENT, then a DOWNLOAD saying it is caught up", async () => {
  const { test, login } = await startWithUser();
  await using _ = test;
  await using client = await connect(test, login.accessToken);
  const identity = await client.bind(3, "/~/todos");
  assert.ok(identity !== null && identity.id >= 1 && identity.salt >= 1);
  assert.deepEqual(await client.expect(MessageType.Download), {
    type: MessageType.Download,
    sessionId: 3,
    serverVersion: 0,
    lastIntegratedClientVersion: 0,
    downloadableBytes: 0,
    changesetBytes: 0,
    changesets: [],
  });
  const second = await client.bind(4, "/~/other");
  assert.notDeepEqual(second, identity);
  await client.expect(MessageType.Download);
  const stats = test.server.stats();
  assert.equal(stats.connections, 1);
  assert.equal(stats.sessions, 2);
  assert.equal(stats.realms, 2);
});

Deno.test("UPLOAD is acknowledged at once and fanned out to another connection", async () => {
  const { test, login } = await startWithUser();
  await using _ = test;
  await using writer = await connect(test, login.accessToken);
  await using reader = await connect(test, login.accessToken);
  await writer.bind(1, "/~/todos");
  await writer.expect(MessageType.Download);
  await reader.bind(9, "/~/todos");
  await reader.expect(MessageType.Download);

  const changeset = upload(1, [
    put("Task", "a", { title: "Buy milk", done: false }),
  ]);
  writer.send(uploadMessage(1, [changeset]));
  const ack = await writer.expect(MessageType.Download);
  assert.equal(ack.lastIntegratedClientVersion, 1);
  assert.equal(
    ack.serverVersion,
    1,
    "the ack moves the cursor over the writer's own changeset",
  );
  assert.deepEqual(ack.changesets, []);
  assert.equal(
    ack.downloadableBytes,
    0,
    "the writer's own changeset is never sent back, so it is not still to download",
  );
  assert.equal(ack.changesetBytes, 0, "an acknowledgement takes nothing off");

  const pushed = await reader.expect(MessageType.Download);
  assert.equal(pushed.sessionId, 9);
  assert.equal(pushed.serverVersion, 1);
  assert.equal(pushed.downloadableBytes, 0);
  assert.equal(pushed.changesetBytes, storedSize(changeset));
  assert.deepEqual(pushed.changesets, [{
    serverVersion: 1,
    stamp: changeset.stamp,
    instructions: changeset.instructions,
  }]);

  // The writer's cursor moved with the ack, so no empty DOWNLOAD follows:
  // the next frame it gets is the reply to its MARK.
  writer.send({ type: MessageType.Mark, sessionId: 1, requestId: 7 });
  const reply = await writer.expect(MessageType.MarkReply);
  assert.equal(reply.requestId, 7);
  assert.equal(test.server.stats().changesetsIntegrated, 1);
});

Deno.test("a re-upload of an integrated client version is acknowledged, not stored again", async () => {
  // Plain replay: with a snapshot, the rebinding client (cursor 0) would get
  // the state rather than the history whose own changesets are skipped.
  const { test, login } = await startWithUser({
    history: { snapshots: false },
  });
  await using _ = test;
  await using first = await connect(test, login.accessToken);
  const identity = (await first.bind(1, "/~/todos"))!;
  await first.expect(MessageType.Download);
  const changesets = [
    upload(1, [put("Task", "a", { n: 1 })]),
    upload(2, [update("Task", "a", { n: 2 })]),
  ];
  first.send(uploadMessage(1, changesets));
  assert.equal(
    (await first.expect(MessageType.Download)).lastIntegratedClientVersion,
    2,
  );
  await first.close();

  // Reconnect with the same identity, as a client whose ack was lost.
  await using again = await connect(test, login.accessToken);
  again.send({
    type: MessageType.Bind,
    sessionId: 1,
    path: "/~/todos",
    clientIdentity: identity,
    downloadCursor: 0,
    uploadCursor: 0,
  });
  const bound = await again.expect(MessageType.Download);
  assert.equal(bound.lastIntegratedClientVersion, 2, "BIND reports the ack");
  assert.deepEqual(bound.changesets, [], "own changesets are not sent back");
  assert.equal(bound.serverVersion, 2);
  // Uploaded on an earlier connection, they were still to download for
  // this one: skipping them takes their size off.
  assert.equal(
    bound.changesetBytes,
    storedSize(changesets[0]!) + storedSize(changesets[1]!),
  );
  assert.equal(bound.downloadableBytes, 0);

  again.send(
    uploadMessage(1, [...changesets, upload(3, [remove("Task", "a")])]),
  );
  const ack = await again.expect(MessageType.Download);
  assert.equal(ack.lastIntegratedClientVersion, 3);
  assert.equal(test.server.stats().changesetsIntegrated, 3);
  assert.equal(ack.serverVersion, 3, "only version 3 was added");
  assert.equal(ack.changesetBytes, 0, "this session's own: never counted");
  assert.equal(ack.downloadableBytes, 0);
});

Deno.test("DOWNLOAD changesetBytes over a replay: another client's changesets and this identity's earlier ones (skipped) are taken off exactly what downloadableBytes counted", async () => {
  // Small batches and plain replay, so the history takes many DOWNLOADs,
  // some carrying only skipped versions.
  const { test, login } = await startWithUser({
    downloadBatchBytes: 2048,
    history: { snapshots: false },
  });
  await using _ = test;
  await using mine = await connect(test, login.accessToken);
  const identity = (await mine.bind(1, "/~/mixed"))!;
  await mine.expect(MessageType.Download);
  await using other = await connect(test, login.accessToken);
  await other.bind(2, "/~/mixed");
  await other.expect(MessageType.Download);
  const own: UploadChangeset[] = [];
  const theirs: UploadChangeset[] = [];
  // Runs of each, so whole batches are skipped and others are mixed.
  for (let run = 0; run < 4; run++) {
    const ownRun = Array.from(
      { length: 6 },
      (_, index) =>
        upload(own.length + index + 1, [
          put("Note", `mine-${own.length + index}`, { text: "m".repeat(400) }),
        ]),
    );
    own.push(...ownRun);
    mine.send(uploadMessage(1, ownRun));
    await mine.downloadUntil(1, own.length + theirs.length);
    const theirRun = Array.from(
      { length: 3 + run },
      (_, index) =>
        upload(theirs.length + index + 1, [
          put("Note", `theirs-${theirs.length + index}`, {
            text: "t".repeat(150 * (index + 1)),
          }),
        ]),
    );
    theirs.push(...theirRun);
    other.send(uploadMessage(2, theirRun));
    await other.downloadUntil(2, own.length + theirs.length);
  }
  await mine.close();
  const head = own.length + theirs.length;

  // The same identity again, from scratch: its own versions are skipped.
  await using again = await connect(test, login.accessToken);
  await again.bind(1, "/~/mixed", { identity });
  const frames = await again.downloadUntil(1, head);
  const messages = frames.map((frame) => frame.message as DownloadMessage);
  assert.ok(messages.length > 5, `${messages.length} DOWNLOADs`);
  assert.ok(
    messages.some((message) =>
      message.changesets.length === 0 && message.changesetBytes > 0
    ),
    "some DOWNLOAD moved past own versions only",
  );
  const everything = [...own, ...theirs].reduce(
    (sum, changeset) => sum + storedSize(changeset),
    0,
  );
  assert.equal(assertExactCount(messages), everything);
  assert.equal(
    messages.reduce((sum, message) => sum + message.changesets.length, 0),
    theirs.length,
  );
});

Deno.test("protocol 1: BIND with an unknown identity or a wrong salt gets bad_client_identity; the socket stays", async () => {
  const { test, login } = await startWithUser();
  await using _ = test;
  await using client = await connect(test, login.accessToken, 1);
  const identity = (await client.bind(1, "/~/todos"))!;
  await client.expect(MessageType.Download);
  const wrong: ClientIdentity[] = [
    { id: identity.id, salt: identity.salt + 1 },
    { id: identity.id + 100, salt: identity.salt },
  ];
  for (const [index, clientIdentity] of wrong.entries()) {
    client.send({
      type: MessageType.Bind,
      sessionId: 10 + index,
      path: "/~/todos",
      clientIdentity,
      downloadCursor: 0,
      uploadCursor: 0,
    });
    await expectSessionError(client, 10 + index, "bad_client_identity");
  }
  await assertAlive(client);
  assert.equal(test.server.stats().sessions, 1);
});

Deno.test("protocol 1: BIND with a download cursor ahead of the history gets bad_client_identity", async () => {
  const { test, login } = await startWithUser();
  await using _ = test;
  await using client = await connect(test, login.accessToken, 1);
  const identity = (await client.bind(1, "/~/todos"))!;
  await client.expect(MessageType.Download);
  client.send({
    type: MessageType.Bind,
    sessionId: 2,
    path: "/~/todos",
    clientIdentity: identity,
    downloadCursor: 5,
    uploadCursor: 0,
  });
  const message = await expectSessionError(client, 2, "bad_client_identity");
  assert.match(message, /download cursor 5 is ahead/);
});

Deno.test("BIND to another user's path gets permission_denied; the socket stays", async () => {
  const { test, login } = await startWithUser();
  await using _ = test;
  await using client = await connect(test, login.accessToken);
  client.send({
    type: MessageType.Bind,
    sessionId: 1,
    path: "/someone-else/todos",
    clientIdentity: null,
    downloadCursor: 0,
    uploadCursor: 0,
  });
  const message = await expectSessionError(client, 1, "permission_denied");
  assert.equal(
    message,
    `Cannot bind: user "${login.userId}" may not access "/someone-else/todos"`,
  );
  await assertAlive(client);
  // The id is free again.
  await client.bind(1, "/~/todos");
  await client.expect(MessageType.Download);
});

Deno.test("BIND with an invalid path gets invalid_path", async () => {
  const { test, login } = await startWithUser();
  await using _ = test;
  await using client = await connect(test, login.accessToken);
  for (
    const [index, path] of ["todos", "/~/a/../b", "/~/a b", "/~/"].entries()
  ) {
    client.send({
      type: MessageType.Bind,
      sessionId: index,
      path,
      clientIdentity: null,
      downloadCursor: 0,
      uploadCursor: 0,
    });
    await expectSessionError(client, index, "invalid_path");
  }
  await assertAlive(client);
});

Deno.test("protocol 1: permissions() sees the resolved path; read-only realms refuse uploads with write_not_allowed", async () => {
  const seen: [string, string][] = [];
  const { test, login } = await startWithUser({
    permissions: (userId, path) => {
      seen.push([userId, path]);
      return path.endsWith("/shared") ? "read" : "readwrite";
    },
  });
  await using _ = test;
  await using client = await connect(test, login.accessToken, 1);
  await client.bind(1, "/~/shared");
  await client.expect(MessageType.Download);
  assert.deepEqual(seen, [[login.userId, `/${login.userId}/shared`]]);
  client.send(uploadMessage(1, [upload(1, [put("T", "a", {})])]));
  const message = await expectSessionError(client, 1, "write_not_allowed");
  assert.equal(
    message,
    `Cannot upload: the realm "/${login.userId}/shared" is read-only for this user`,
  );
  assert.equal(test.server.stats().sessions, 0);
  await assertAlive(client);
});

Deno.test("protocol 2: BIND the server cannot continue (unknown identity, wrong salt, download or upload cursor ahead) gets client_reset_required; the socket stays", async () => {
  const { test, login } = await startWithUser();
  await using _ = test;
  await using client = await connect(test, login.accessToken);
  const identity = (await client.bind(1, "/~/todos"))!;
  await client.expect(MessageType.Download);
  client.send(uploadMessage(1, [upload(1, [put("T", "a", { n: 1 })])]));
  assert.equal(
    (await client.expect(MessageType.Download)).lastIntegratedClientVersion,
    1,
  );
  const cases: [ClientIdentity, number, number, RegExp][] = [
    [{ id: identity.id, salt: identity.salt + 1 }, 0, 0, /unknown/],
    [{ id: identity.id + 100, salt: identity.salt }, 0, 0, /unknown/],
    [
      identity,
      5,
      0,
      /download cursor 5 is ahead of the server's history \(1\)/,
    ],
    [identity, 1, 2, /upload cursor 2 is ahead of what the server recorded/],
  ];
  for (
    const [index, [clientIdentity, downloadCursor, uploadCursor, detail]]
      of cases.entries()
  ) {
    client.send({
      type: MessageType.Bind,
      sessionId: 10 + index,
      path: "/~/todos",
      clientIdentity,
      downloadCursor,
      uploadCursor,
    });
    const error = await skipDownloads(client, MessageType.Error);
    assert.equal(error.sessionId, 10 + index);
    assert.equal(error.code, errorCodeNumber("client_reset_required"));
    assert.equal(error.tryAgain, true);
    assert.match(error.message, detail);
  }
  // Cursors the server can continue still bind.
  client.send({
    type: MessageType.Bind,
    sessionId: 20,
    path: "/~/todos",
    clientIdentity: identity,
    downloadCursor: 1,
    uploadCursor: 1,
  });
  await client.expect(MessageType.Download);
  await assertAlive(client);
});

Deno.test("protocol 2: a write to a read-only realm is refused alone with REJECT carrying the server's state; the session goes on", async () => {
  const { test, login } = await startWithUser({
    permissions: (_userId, path) =>
      path.endsWith("/shared") ? "read" : "readwrite",
  });
  await using _ = test;
  // The realm's owner writes t1 through a read-write path alias first.
  await using client = await connect(test, login.accessToken);
  const identity = (await client.bind(1, "/~/shared"))!;
  await client.expect(MessageType.Download);
  client.send(uploadMessage(1, [
    upload(1, [put("T", "a", { title: "mine" })]),
    upload(2, [put("T", "b", {})]),
  ]));
  const first = await client.expect(MessageType.Reject);
  assert.equal(first.sessionId, 1);
  assert.equal(first.clientVersion, 1);
  assert.equal(first.code, errorCodeNumber("write_not_allowed"));
  assert.match(first.message, /read-only/);
  // The server never held T/a: the revert puts it back to absent.
  assert.deepEqual(
    first.revert.flatMap((changeset) =>
      changeset.instructions.map(({ op, type, id }) => ({ op, type, id }))
    ),
    [{ op: "delete", type: "T", id: "a" }],
  );
  const second = await client.expect(MessageType.Reject);
  assert.equal(second.clientVersion, 2);
  // A re-upload of a refused changeset (its REJECT lost on a cut) is
  // refused again, not acknowledged.
  client.send(uploadMessage(1, [upload(2, [put("T", "b", {})])]));
  assert.equal((await client.expect(MessageType.Reject)).clientVersion, 2);
  assert.equal(test.server.stats().sessions, 1);
  assert.equal(test.server.stats().changesetsIntegrated, 0);
  // After a BIND that shows them settled, the refusals are forgotten and
  // the identity carries on from there.
  client.send({ type: MessageType.Unbind, sessionId: 1 });
  await client.expect(MessageType.Unbound);
  client.send({
    type: MessageType.Bind,
    sessionId: 2,
    path: "/~/shared",
    clientIdentity: identity,
    downloadCursor: 0,
    uploadCursor: 2,
  });
  const bound = await client.expect(MessageType.Download);
  assert.equal(bound.lastIntegratedClientVersion, 2);
});

Deno.test("protocol 2: validateChangeset refuses one changeset with validation_failed, reverts to the server's values, and takes the next", async () => {
  const { test, login } = await startWithUser({
    validateChangeset: ({ changes }) =>
      changes.every((change) => change.fields?.["title"] !== ""),
  });
  await using _ = test;
  await using client = await connect(test, login.accessToken);
  await client.bind(1, "/~/todos");
  await client.expect(MessageType.Download);
  client.send(uploadMessage(1, [upload(1, [put("T", "a", { title: "ok" })])]));
  assert.equal(
    (await client.expect(MessageType.Download)).lastIntegratedClientVersion,
    1,
  );
  client.send(uploadMessage(1, [
    upload(2, [update("T", "a", { title: "" })]),
    upload(3, [update("T", "a", { done: true })]),
  ]));
  const reject = await skipDownloads(client, MessageType.Reject);
  assert.equal(reject.clientVersion, 2);
  assert.equal(reject.code, errorCodeNumber("validation_failed"));
  const reverted = reject.revert.flatMap((changeset) => changeset.instructions);
  assert.ok(
    reverted.some((instruction) =>
      instruction.op !== "delete" && instruction.fields?.["title"] === "ok"
    ),
    "the revert carries the server's title",
  );
  assert.equal(
    (await client.expect(MessageType.Download)).lastIntegratedClientVersion,
    3,
  );
  assert.equal(test.server.stats().changesetsIntegrated, 2);
});

Deno.test("a permissions() that throws fails the session with session_failed (try again)", async () => {
  const { test, login } = await startWithUser({
    permissions: () => {
      throw new Error("database down");
    },
  });
  await using _ = test;
  await using client = await connect(test, login.accessToken);
  client.send({
    type: MessageType.Bind,
    sessionId: 1,
    path: "/~/todos",
    clientIdentity: null,
    downloadCursor: 0,
    uploadCursor: 0,
  });
  const error = await client.expect(MessageType.Error);
  assert.equal(error.code, errorCodeNumber("session_failed"));
  assert.equal(error.tryAgain, true);
  const logged = await test.waitForLog((record) =>
    record.code === "session_failed"
  );
  assert.equal((logged.error as Error).message, "database down");
});

Deno.test("invalid uploads get bad_changeset", async (t) => {
  const { test, login } = await startWithUser();
  await using _ = test;
  await using client = await connect(test, login.accessToken);
  const stamped = upload(1, [put("T", "a", {})]);
  stamped.instructions[0]!.stamp = { time: 1, counter: 0, node: 1 };
  const cases: [string, UploadChangeset[], RegExp][] = [
    ["one object twice", [
      upload(1, [put("T", "a", {}), update("T", "a", { x: 1 })]),
    ], /object "T" "a" appears twice/],
    [
      "client versions not increasing",
      [upload(2, []), upload(2, [])],
      /client version 2 does not follow 2/,
    ],
    ["client version 0", [upload(0, [])], /client version 0 does not follow 0/],
    ["an instruction with its own stamp", [stamped], /own stamp/],
    ["an id longer than 512 bytes", [
      upload(1, [put("T", "é".repeat(300), {})]),
    ], /longer than 512 bytes/],
  ];
  let sessionId = 0;
  for (const [name, changesets, pattern] of cases) {
    await t.step(name, async () => {
      sessionId++;
      await client.bind(sessionId, "/~/todos");
      await client.expect(MessageType.Download);
      client.send(uploadMessage(sessionId, changesets));
      assert.match(
        await expectSessionError(client, sessionId, "bad_changeset"),
        pattern,
      );
    });
  }
  assert.equal(test.server.stats().changesetsIntegrated, 0);
  await assertAlive(client);
});

Deno.test("a BIND beyond maxSessionsPerConnection gets too_many_sessions", async () => {
  const { test, login } = await startWithUser({
    limits: { maxSessionsPerConnection: 2 },
  });
  await using _ = test;
  await using client = await connect(test, login.accessToken);
  await client.bind(1, "/~/a");
  await client.expect(MessageType.Download);
  await client.bind(2, "/~/b");
  await client.expect(MessageType.Download);
  client.send({
    type: MessageType.Bind,
    sessionId: 3,
    path: "/~/c",
    clientIdentity: null,
    downloadCursor: 0,
    uploadCursor: 0,
  });
  assert.equal(
    await expectSessionError(client, 3, "too_many_sessions"),
    "Cannot bind: the connection already has 2 sessions",
  );
  client.send({ type: MessageType.Unbind, sessionId: 2 });
  assert.equal((await client.expect(MessageType.Unbound)).sessionId, 2);
  await client.bind(3, "/~/c");
  await client.expect(MessageType.Download);
});

Deno.test("UNBIND is answered with UNBOUND and frees the realm", async () => {
  const { test, login } = await startWithUser();
  await using _ = test;
  await using client = await connect(test, login.accessToken);
  await client.bind(5, "/~/todos");
  await client.expect(MessageType.Download);
  assert.equal(test.server.stats().realms, 1);
  client.send({ type: MessageType.Unbind, sessionId: 5 });
  assert.deepEqual(await client.expect(MessageType.Unbound), {
    type: MessageType.Unbound,
    sessionId: 5,
  });
  assert.equal(test.server.stats().sessions, 0);
  assert.equal(test.server.stats().realms, 0);
  await client.bind(5, "/~/todos");
  await client.expect(MessageType.Download);
});

Deno.test("session protocol violations close the connection", async (t) => {
  const { test, login } = await startWithUser();
  await using _ = test;
  await t.step("BIND of a bound session id", async () => {
    await using client = await connect(test, login.accessToken);
    await client.bind(1, "/~/todos");
    await client.expect(MessageType.Download);
    client.send({
      type: MessageType.Bind,
      sessionId: 1,
      path: "/~/todos",
      clientIdentity: null,
      downloadCursor: 0,
      uploadCursor: 0,
    });
    const error = await client.expect(MessageType.Error);
    assert.equal(error.sessionId, null);
    assert.equal(error.code, errorCodeNumber("protocol_violation"));
    assert.equal((await client.closed).code, 1002);
  });
  await t.step("UPLOAD for a session never bound", async () => {
    await using client = await connect(test, login.accessToken);
    client.send(uploadMessage(4, [upload(1, [])]));
    const error = await client.expect(MessageType.Error);
    assert.equal(
      error.message,
      "Cannot handle message: session 4 is not bound",
    );
    assert.equal((await client.closed).code, 1002);
  });
});

Deno.test("MARK is answered only after the backlog held at MARK time was sent", async () => {
  const { test, login } = await startWithUser({ downloadBatchBytes: 2048 });
  await using _ = test;
  await using writer = await connect(test, login.accessToken);
  await writer.bind(1, "/~/todos");
  await writer.expect(MessageType.Download);
  const changesets = Array.from(
    { length: 40 },
    (_, index) =>
      upload(index + 1, [put("Task", `t${index}`, { text: "x".repeat(200) })]),
  );
  writer.send(uploadMessage(1, changesets));
  assert.equal(
    (await writer.expect(MessageType.Download)).lastIntegratedClientVersion,
    40,
  );

  await using reader = await connect(test, login.accessToken);
  reader.send({
    type: MessageType.Bind,
    sessionId: 2,
    path: "/~/todos",
    clientIdentity: null,
    downloadCursor: 0,
    uploadCursor: 0,
  });
  reader.send({ type: MessageType.Mark, sessionId: 2, requestId: 77 });
  await reader.expect(MessageType.Ident);
  let version = 0;
  let batches = 0;
  for (let step = 0; step < 100; step++) {
    const message = await reader.next();
    if (message.type === MessageType.MarkReply) {
      assert.equal(message.requestId, 77);
      break;
    }
    assert.equal(message.type, MessageType.Download);
    version = message.serverVersion;
    batches++;
  }
  assert.equal(version, 40, "MARK_REPLY came after version 40 was sent");
  assert.ok(batches > 1, "the backlog took several batches");
});

Deno.test("DOWNLOAD batches stay within downloadBatchBytes, with decreasing downloadable bytes that each batch's changesetBytes accounts for exactly", async () => {
  const batchBytes = 4096;
  const { test, login } = await startWithUser({
    downloadBatchBytes: batchBytes,
  });
  await using _ = test;
  await using writer = await connect(test, login.accessToken);
  await writer.bind(1, "/~/todos");
  await writer.expect(MessageType.Download);
  const changesets = Array.from(
    { length: 60 },
    (_, index) =>
      upload(index + 1, [
        put("Task", `t${index}`, {
          text: "y".repeat(index === 30 ? 10_000 : 300),
        }),
      ]),
  );
  writer.send(uploadMessage(1, changesets));
  await writer.expect(MessageType.Download);

  await using reader = await connect(test, login.accessToken);
  await reader.bind(2, "/~/todos");
  const frames = await reader.downloadUntil(2, 60);
  let previous = Infinity;
  let received = 0;
  for (const frame of frames) {
    assert.equal(frame.message.type, MessageType.Download);
    if (frame.message.type !== MessageType.Download) continue;
    const oversized = frame.message.changesets.some((changeset) =>
      changeset.instructions.some((instruction) => instruction.id === "t30")
    );
    if (oversized) {
      assert.equal(
        frame.message.changesets.length,
        1,
        "a large changeset goes alone",
      );
    } else {
      assert.ok(frame.bytes <= batchBytes, `${frame.bytes} > ${batchBytes}`);
    }
    assert.ok(frame.message.downloadableBytes < previous);
    previous = frame.message.downloadableBytes;
    received += frame.message.changesets.length;
  }
  assert.equal(received, 60);
  assert.equal(previous, 0);
  assert.ok(frames.length >= 60 * 300 / batchBytes);
  const messages = frames.map((frame) => frame.message as DownloadMessage);
  assert.equal(
    assertExactCount(messages),
    changesets.reduce((sum, changeset) => sum + storedSize(changeset), 0),
  );
  // Each batch takes off exactly the stored sizes of what it carries.
  for (const message of messages) {
    assert.equal(
      message.changesetBytes,
      message.changesets.reduce(
        (sum, changeset) => sum + storedSize(changeset),
        0,
      ),
    );
  }
});

Deno.test("a client that stops reading pauses its download at the send buffer bound; its upload is acknowledged at once; reading again resumes it", async () => {
  const sendBufferBytes = 256 * 1024;
  const batchBytes = 64 * 1024;
  const { test, login } = await startWithUser({
    sendBufferBytes,
    downloadBatchBytes: batchBytes,
    history: { snapshots: false },
    // The writer below sends its 24 MiB in one go to build the history
    // quickly; what one connection may hold is not what this test is about
    // (tests/server/queue_bound_test.ts is).
    limits: { maxQueuedBytesPerConnection: 128 * 1024 * 1024 },
  });
  await using _ = test;
  // 24 MiB of history: far more than the kernel's socket buffers hold.
  const changesets = Array.from(
    { length: 96 },
    (_, index) =>
      upload(index + 1, [
        put("Blob", `b${index}`, {
          data: new Uint8Array(256 * 1024).fill(index),
        }),
      ]),
  );
  await using writer = await connect(test, login.accessToken);
  await writer.bind(1, "/~/blobs");
  await writer.expect(MessageType.Download);
  for (let start = 0; start < changesets.length; start += 16) {
    writer.send(uploadMessage(1, changesets.slice(start, start + 16)));
  }
  for (let step = 0; step < 50; step++) {
    const message = await writer.expect(
      MessageType.Download,
      AbortSignal.timeout(20_000),
    );
    if (message.lastIntegratedClientVersion === 96) break;
  }
  const historyBytes = test.server.stats().bytesIn;

  await using reader = await RawWebSocket.connect(test.url);
  await reader.send({
    type: MessageType.Handshake,
    minVersion: 1,
    maxVersion: 1,
    accessToken: login.accessToken,
  });
  const signal = AbortSignal.timeout(20_000);
  assert.equal(
    (await reader.next(signal)).message.type,
    MessageType.HandshakeReply,
  );
  const outBefore = test.server.stats().bytesOut;
  await reader.send({
    type: MessageType.Bind,
    sessionId: 2,
    path: "/~/blobs",
    clientIdentity: null,
    downloadCursor: 0,
    uploadCursor: 0,
  });
  // Not reading: the socket fills and the pump must stop feeding it.
  const paused = await test.waitForLog(
    (record) => record.event === "backpressure_paused",
    signal,
  );
  const buffered = Number(/holds (\d+) bytes/.exec(paused.message)![1]);
  assert.ok(buffered > sendBufferBytes);
  assert.ok(
    buffered <= sendBufferBytes + batchBytes + 1024,
    `${buffered} bytes buffered`,
  );
  const sent = test.server.stats().bytesOut - outBefore;
  assert.ok(
    sent < historyBytes / 2,
    `${sent} of ${historyBytes} bytes handed to the socket`,
  );

  // An upload while the download is stalled is acknowledged at once: the
  // ack is queued ahead of the rest of the history.
  await reader.send(uploadMessage(2, [upload(1, [put("Note", "n", {})])]));
  for (let step = 0; step < 100; step++) {
    const message = await writer.expect(MessageType.Download, signal);
    if (message.changesets.length === 1) break;
  }

  // Reading again drains the socket; the rest of the history follows.
  let received = 0;
  let version = 0;
  let ackedAt = -1;
  for (let step = 0; step < 10_000 && version < 97; step++) {
    const { message } = await reader.next(signal);
    if (message.type === MessageType.Download) {
      received += message.changesets.length;
      version = message.serverVersion;
      if (ackedAt < 0 && message.lastIntegratedClientVersion === 1) {
        ackedAt = version;
      }
    }
  }
  assert.equal(version, 97);
  assert.equal(received, 96, "everything but its own upload");
  assert.ok(ackedAt >= 0 && ackedAt < 96, `acknowledged at version ${ackedAt}`);
  await test.waitForLog(
    (record) => record.event === "backpressure_resumed",
    signal,
  );
});

Deno.test("stats() counts connections, sessions, realms, bytes both ways and integrated changesets", async () => {
  const { test, login } = await startWithUser();
  await using _ = test;
  await using client = await connect(test, login.accessToken);
  await client.bind(1, "/~/a");
  await client.expect(MessageType.Download);
  await client.bind(2, "/~/a");
  await client.expect(MessageType.Download);
  await client.bind(3, "/~/b");
  await client.expect(MessageType.Download);
  client.send(
    uploadMessage(1, [
      upload(1, [put("T", "x", {})]),
      upload(2, [put("T", "y", {})]),
    ]),
  );
  await client.expect(MessageType.Download); // ack, past its own versions
  // Session 2 receives both; MARK flushes.
  await client.expect(MessageType.Download);
  client.send({ type: MessageType.Mark, sessionId: 1, requestId: 1 });
  await client.expect(MessageType.MarkReply);
  assert.deepEqual(test.server.stats(), {
    connections: 1,
    sessions: 3,
    realms: 2,
    bytesIn: client.bytesSent,
    bytesOut: client.bytesReceived,
    changesetsIntegrated: 2,
  });
  await client.close();
  await test.waitForLog((record) => record.event === "connection_closed");
  const after = test.server.stats();
  assert.equal(after.connections, 0);
  assert.equal(after.sessions, 0);
  assert.equal(after.realms, 0);
});

Deno.test("shutdown gives up on work that never finishes after shutdownTimeoutMs", async () => {
  await using kv = await Deno.openKv(":memory:");
  const asked = Promise.withResolvers<void>();
  let stuck = false;
  // A store whose commits stop answering (an endpoint that went silent).
  const silent = new Proxy(kv, {
    get(target, property) {
      if (property === "atomic") {
        return () => {
          const operation = target.atomic();
          const wrapper: Deno.AtomicOperation = new Proxy(operation, {
            get(inner, name) {
              if (name === "commit" && stuck) {
                return () => {
                  asked.resolve();
                  return new Promise(() => {});
                };
              }
              const value = Reflect.get(inner, name);
              if (typeof value !== "function") return value;
              return (...args: unknown[]) => {
                const result = value.apply(inner, args);
                return result === inner ? wrapper : result;
              };
            },
          });
          return wrapper;
        };
      }
      const value = Reflect.get(target, property);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  const { test, login } = await startWithUser({
    kv: silent,
    shutdownTimeoutMs: 50,
  });
  await using client = await connect(test, login.accessToken);
  await client.bind(1, "/~/stuck");
  await client.expect(MessageType.Download);
  stuck = true;
  client.send(uploadMessage(1, [upload(1, [put("T", "a", {})])]));
  await asked.promise;
  await test.server.shutdown();
  assert.ok(test.logs.some((record) => record.event === "shutdown_forced"));
  assert.equal((await client.closed).code, 1001);
});

Deno.test("an acknowledgement never counts the uploader's own changesets as still to download, whether the head was noted before or after it, and moving past them takes nothing off", async (t) => {
  // A scripted hub makes the two interleavings deterministic: in one process
  // the realm head reaches the hub through kv.watch, which may run before or
  // after the upload's own continuation sends the acknowledgement.
  for (const headNotedFirst of [false, true]) {
    await t.step(
      `head noted ${headNotedFirst ? "before" : "after"} the ack`,
      async () => {
        const sent: ServerMessage[] = [];
        const second = Promise.withResolvers<void>();
        let head = { version: 4, bytes: 400 };
        const own = { version: 5, size: 30, cumulativeBytes: 430 };
        // Another client's changeset, committed after the upload.
        const other = { version: 6, size: 20, cumulativeBytes: 450 };
        const otherChangeset = {
          serverVersion: 6,
          stamp: { time: 1, counter: 0, node: 1 },
          instructions: [],
        };
        const hub = {
          get head() {
            return head;
          },
          snapshotsEnabled: false,
          attach() {},
          detach() {
            return true;
          },
          read: (fromVersion: number) =>
            fromVersion === 6
              ? Promise.resolve({
                items: [{
                  ...other,
                  identity: 8,
                  clientVersion: 1,
                  changeset: otherChangeset,
                }],
                gap: false,
              })
              : new Promise<never>(() => {}),
          integrate(
            _identity: ClientIdentity,
            _changesets: unknown,
            _signal: AbortSignal,
            beforeFanOut: (result: IntegrateResult) => void,
          ) {
            const result = {
              lastIntegratedClientVersion: 1,
              head: { version: 5, bytes: 430 },
              integrated: [{ ...own, identity: 7, clientVersion: 1 }],
            } as unknown as IntegrateResult;
            if (headNotedFirst) head = result.head;
            beforeFanOut(result);
            head = result.head;
            return Promise.resolve(result);
          },
        };
        const lifetime = new AbortController();
        const session = new Session({
          id: 1,
          path: "/u/r",
          userId: "u",
          identity: { id: 7, salt: 1 },
          permission: "readwrite",
          hub: hub as unknown as RealmHub,
          transport: {
            send: (message) => {
              sent.push(message);
              if (sent.length === 2) second.resolve();
            },
            bufferedAmount: () => 0,
            buffersMoreThan: () => false,
            batchBytes: () => 64 * 1024,
            failSession: () => {},
          },
          downloadCursor: 4,
          cursorSalt: 44,
          cursorBytes: 400,
          lastIntegratedClientVersion: 0,
          protocolVersion: 2,
          ...sessionSettings(lifetime.signal),
        });
        await session.upload([upload(1, [put("Task", "a", { n: 1 })])]);
        assert.equal(sent.length, 1);
        const ack = sent[0] as DownloadMessage;
        assert.equal(ack.lastIntegratedClientVersion, 1);
        // Version 5 directly follows the cursor and is the client's own: the
        // ack moves the cursor past it without sending it, and as it was
        // never counted, nothing is taken off.
        assert.equal(ack.serverVersion, 5);
        assert.deepEqual(ack.changesets, []);
        assert.equal(ack.downloadableBytes, 0);
        assert.equal(ack.changesetBytes, 0);
        // The pump goes on from there: the next DOWNLOAD holds version 6
        // alone and takes exactly its size off.
        head = { version: 6, bytes: 450 };
        session.start();
        const timeout = AbortSignal.timeout(5_000);
        await Promise.race([
          second.promise,
          new Promise((_, reject) =>
            timeout.addEventListener("abort", () => reject(timeout.reason), {
              once: true,
            })
          ),
        ]);
        const next = sent[1] as DownloadMessage;
        assert.equal(next.serverVersion, 6);
        assert.deepEqual(next.changesets, [otherChangeset]);
        assert.equal(next.changesetBytes, other.size);
        assert.equal(next.downloadableBytes, 0);
        lifetime.abort();
        await session.close();
      },
    );
  }
});
