/**
 * UNBIND while the session is still busy with an earlier message — an
 * UPLOAD whose commit storage has not finished, as a client's stall
 * watchdog gives up on it (CLIENT.md "session_stalled"): the session ends at
 * once, and the commit, when it finishes, is stored once and answered to
 * nobody. Real server, real sockets; storage is held with TestKv.
 */
import assert from "node:assert/strict";
import {
  type ClientIdentity,
  MessageType,
  type ServerMessage,
} from "../../src/protocol/messages.ts";
import { headKey } from "../../src/server/storage/keys.ts";
import type { ServeSyncOptions } from "../../server.ts";
import { put, upload } from "../_helpers/changesets.ts";
import { ProtocolClient } from "../_helpers/protocol_client.ts";
import { TestKv } from "../_helpers/test_kv.ts";
import { startTestServer, type TestServer } from "../_helpers/test_server.ts";

const PATH = "/~/r";

function bounded(): AbortSignal {
  return AbortSignal.timeout(10_000);
}

/**
 * A server over a TestKv and one connection whose identity has stored
 * client version 1 in {@linkcode PATH} (so binding again with download
 * cursor 1 is answered without a snapshot, which would take a commit).
 */
async function start(options: Partial<ServeSyncOptions> = {}) {
  const inner = await Deno.openKv(":memory:");
  const storage = new TestKv(inner);
  let test: TestServer | undefined;
  let client: ProtocolClient | undefined;
  const dispose = async () => {
    storage.releaseAll();
    try {
      await client?.[Symbol.asyncDispose]();
      await test?.[Symbol.asyncDispose]();
    } finally {
      inner.close();
    }
  };
  try {
    test = await startTestServer({ ...options, kv: storage.kv });
    const login = await test.login();
    client = await ProtocolClient.connect(test.url);
    await client.handshake(login.accessToken);
    const identity = await client.bind(1, PATH);
    assert.ok(identity !== null);
    await client.expect(MessageType.Download, bounded());
    client.send({
      type: MessageType.Upload,
      sessionId: 1,
      changesets: [upload(1, [put("Task", "t1", {})])],
    });
    await readUntil(client, 1, (seen) => acknowledged(seen, 1, 1));
    client.send({ type: MessageType.Unbind, sessionId: 1 });
    assert.equal(
      (await client.expect(MessageType.Unbound, bounded())).sessionId,
      1,
    );
    return {
      inner,
      storage,
      test,
      client,
      identity,
      headVersion: () => headVersion(inner, login.userId),
      [Symbol.asyncDispose]: dispose,
    };
  } catch (error) {
    await dispose();
    throw error;
  }
}

/** Whether DOWNLOADs seen acknowledge `clientVersion` and reach `serverVersion`. */
function acknowledged(
  seen: readonly ServerMessage[],
  clientVersion: number,
  serverVersion: number,
): boolean {
  return seen.some((message) =>
    message.type === MessageType.Download &&
    message.lastIntegratedClientVersion >= clientVersion
  ) && seen.some((message) =>
    message.type === MessageType.Download &&
    message.serverVersion >= serverVersion
  );
}

/**
 * Reads messages until `done` says so; every one must be a DOWNLOAD for
 * `sessionId` (nothing for any other session may come meanwhile).
 */
async function readUntil(
  client: ProtocolClient,
  sessionId: number,
  done: (seen: readonly ServerMessage[]) => boolean,
): Promise<ServerMessage[]> {
  const signal = bounded();
  const seen: ServerMessage[] = [];
  for (let step = 0; step < 20 && !done(seen); step++) {
    const message = await client.next(signal);
    assert.equal(message.type, MessageType.Download, JSON.stringify(message));
    assert.equal(message.sessionId, sessionId);
    seen.push(message);
  }
  assert.ok(done(seen), `not done after ${seen.length} messages`);
  return seen;
}

/** Binds `sessionId` as `identity`, caught up to version 1. */
async function bindAgain(
  client: ProtocolClient,
  sessionId: number,
  identity: ClientIdentity,
): Promise<void> {
  await client.bind(sessionId, PATH, {
    identity,
    downloadCursor: 1,
    uploadCursor: 1,
  });
  const first = await client.expect(MessageType.Download, bounded());
  assert.equal(first.sessionId, sessionId);
}

/** Sends UPLOAD of client version 2 (the same changeset every time). */
function uploadSecond(client: ProtocolClient, sessionId: number): void {
  client.send({
    type: MessageType.Upload,
    sessionId,
    changesets: [upload(2, [put("Task", "t2", { title: "held" })])],
  });
}

/**
 * Sends UNBIND and then PING: UNBOUND must come before PONG, which the
 * server answers without waiting for anything.
 */
async function unbindAtOnce(
  client: ProtocolClient,
  sessionId: number,
  timestamp: number,
): Promise<void> {
  client.send({ type: MessageType.Unbind, sessionId });
  client.send({ type: MessageType.Ping, timestamp });
  assert.deepEqual(await client.next(bounded()), {
    type: MessageType.Unbound,
    sessionId,
  });
  assert.deepEqual(await client.next(bounded()), {
    type: MessageType.Pong,
    timestamp,
  });
}

/** The realm's stored head version. */
async function headVersion(
  inner: Deno.Kv,
  userId: string,
): Promise<number> {
  const head = await inner.get<{ version: number }>(headKey(`/${userId}/r`));
  return head.value?.version ?? 0;
}

/** Nothing more is on its way: a PING is answered next. */
async function assertNothingMore(
  client: ProtocolClient,
  timestamp: number,
): Promise<void> {
  client.send({ type: MessageType.Ping, timestamp });
  assert.deepEqual(await client.next(bounded()), {
    type: MessageType.Pong,
    timestamp,
  });
}

Deno.test("an UNBIND sent while the session's UPLOAD commit is held is answered with UNBOUND before the commit finishes, and the session stops counting at once", async () => {
  await using server = await start();
  const { client, storage, test, identity } = server;
  // Another identity's session on the realm sees the commit land.
  await client.bind(50, PATH);
  await readUntil(client, 50, (seen) => acknowledged(seen, 0, 1));
  await bindAgain(client, 2, identity);
  assert.equal(test.server.stats().sessions, 2);

  const stall = storage.stall("commit");
  uploadSecond(client, 2);
  await stall.reached;
  await unbindAtOnce(client, 2, 1);
  assert.equal(test.server.stats().sessions, 1);
  assert.equal(stall.held, 1, "the commit is still held");

  stall.release();
  // The commit lands after all; only the other session hears of it.
  await readUntil(client, 50, (seen) => acknowledged(seen, 0, 2));
  await assertNothingMore(client, 2);
  assert.equal(await server.headVersion(), 2);
  assert.equal(test.server.stats().changesetsIntegrated, 2);
});

Deno.test("after the held commit is released it is stored exactly once, nothing is sent for the unbound session id, and the same changeset uploaded again on a new binding is acknowledged without being stored again", async () => {
  await using server = await start();
  const { client, storage, test, identity } = server;
  await bindAgain(client, 2, identity);
  const stall = storage.stall("commit");
  uploadSecond(client, 2);
  await stall.reached;
  await unbindAtOnce(client, 2, 1);

  // The client binds again on the same socket and uploads the same
  // changeset while the first commit is still held.
  await bindAgain(client, 3, identity);
  uploadSecond(client, 3);
  await assertNothingMore(client, 2);
  assert.equal(test.server.stats().sessions, 1);

  stall.release();
  // Only session 3 hears of it: its acknowledgement, and its cursor moving
  // past its own changeset.
  await readUntil(client, 3, (seen) => acknowledged(seen, 2, 2));
  await assertNothingMore(client, 3);
  assert.equal(await server.headVersion(), 2);
  assert.equal(test.server.stats().changesetsIntegrated, 2);
  assert.equal(stall.held, 1, "the re-upload waited for the held commit");
});

Deno.test("with maxSessionsPerConnection 2 and commits held, a client can give up on an upload, unbind and bind again many more times than 2 on one socket without too_many_sessions", async () => {
  await using server = await start({
    limits: { maxSessionsPerConnection: 2 },
  });
  const { client, storage, test, identity } = server;
  // Another session takes one of the two places for the whole test.
  await client.bind(100, "/~/other");
  await client.expect(MessageType.Download, bounded());

  const stall = storage.stall("commit");
  const cycles = 6;
  for (let sessionId = 2; sessionId < 2 + cycles; sessionId++) {
    await bindAgain(client, sessionId, identity);
    assert.equal(test.server.stats().sessions, 2);
    uploadSecond(client, sessionId);
    if (sessionId === 2) await stall.reached;
    await unbindAtOnce(client, sessionId, sessionId);
    assert.equal(test.server.stats().sessions, 1);
  }
  const last = 2 + cycles;
  await bindAgain(client, last, identity);
  uploadSecond(client, last);
  assert.equal(stall.held, 1);

  stall.release();
  await readUntil(client, last, (seen) => acknowledged(seen, 2, 2));
  await assertNothingMore(client, last);
  assert.equal(await server.headVersion(), 2);
  assert.equal(test.server.stats().changesetsIntegrated, 2);
  assert.equal(test.server.stats().sessions, 2);
});
