/**
 * Group commit over real sockets (docs/ARCHITECTURE.md "Write flow on the
 * server"): uploads queued for one realm, from several connections and
 * several UPLOADs of one session sent without waiting, are committed
 * together and each acknowledged once, after the commit that holds it.
 */
import assert from "node:assert/strict";
import { errorCodeNumber } from "../../src/protocol/error_codes.ts";
import {
  type DownloadMessage,
  MessageType,
} from "../../src/protocol/messages.ts";
import { put, update, upload } from "../_helpers/changesets.ts";
import { ProtocolClient } from "../_helpers/protocol_client.ts";
import { startTestServer, type TestServer } from "../_helpers/test_server.ts";
import { TestKv } from "../_helpers/test_kv.ts";

const PATH = "/shared/notes";

async function connect(url: string, accessToken: string) {
  const client = await ProtocolClient.connect(url);
  await client.handshake(accessToken);
  return client;
}

/** Binds session 1 and reads the DOWNLOAD that says it is caught up. */
async function bindFresh(client: ProtocolClient) {
  await client.bind(1, PATH);
  const first = await client.expect(MessageType.Download);
  assert.equal(first.downloadableBytes, 0);
}

/**
 * Reads DOWNLOADs until one acknowledges `clientVersion`; returns them.
 * Any other message fails.
 */
async function readUntilAck(
  client: ProtocolClient,
  clientVersion: number,
): Promise<DownloadMessage[]> {
  const seen: DownloadMessage[] = [];
  const signal = AbortSignal.timeout(10_000);
  for (let index = 0; index < 10_000; index++) {
    const message = await client.next(signal);
    assert.equal(message.type, MessageType.Download, JSON.stringify(message));
    const download = message as DownloadMessage;
    seen.push(download);
    if (download.lastIntegratedClientVersion >= clientVersion) return seen;
  }
  throw new Error(`No acknowledgement of ${clientVersion}`);
}

Deno.test("several clients each sending UPLOADs without waiting: every write is acknowledged after its commit, stored once, in each client's order", async () => {
  await using test = await startTestServer({
    permissions: () => "readwrite",
    history: { snapshots: false },
  });
  const { accessToken } = await test.login();
  const writers = 4;
  const uploads = 25;
  const clients: ProtocolClient[] = [];
  try {
    for (let index = 0; index < writers; index++) {
      const client = await connect(test.url, accessToken);
      clients.push(client);
      await bindFresh(client);
    }
    // Every client sends all its UPLOADs at once: they queue behind the
    // realm's commit in flight and are committed in groups.
    for (const [writer, client] of clients.entries()) {
      for (let version = 1; version <= uploads; version++) {
        client.send({
          type: MessageType.Upload,
          sessionId: 1,
          changesets: [
            upload(version, [put("Note", `${writer}-${version}`, { version })]),
          ],
        });
      }
    }
    for (const client of clients) {
      const seen = await readUntilAck(client, uploads);
      let ack = 0;
      let cursor = 0;
      for (const download of seen) {
        assert.ok(
          download.lastIntegratedClientVersion >= ack,
          "acknowledgements never go back",
        );
        assert.ok(
          download.serverVersion >= cursor,
          "the cursor never goes back",
        );
        ack = download.lastIntegratedClientVersion;
        cursor = download.serverVersion;
      }
      assert.equal(ack, uploads);
    }
    assert.equal(test.server.stats().changesetsIntegrated, writers * uploads);

    // A new client reads the whole history: each write exactly once, each
    // writer's in its client-version order.
    await using reader = await connect(test.url, accessToken);
    await reader.bind(1, PATH);
    const frames = await reader.downloadUntil(1, writers * uploads, {
      signal: AbortSignal.timeout(10_000),
    });
    const versions: number[] = [];
    const byWriter = new Map<string, number[]>();
    for (const { message } of frames) {
      for (const changeset of (message as DownloadMessage).changesets) {
        versions.push(changeset.serverVersion);
        const instruction = changeset.instructions[0]!;
        const [writer, version] = instruction.id.split("-");
        const list = byWriter.get(writer!) ?? [];
        list.push(Number(version));
        byWriter.set(writer!, list);
      }
    }
    assert.deepEqual(
      versions,
      Array.from({ length: writers * uploads }, (_, index) => index + 1),
    );
    const inOrder = Array.from({ length: uploads }, (_, index) => index + 1);
    assert.equal(byWriter.size, writers);
    for (const list of byWriter.values()) assert.deepEqual(list, inOrder);
  } finally {
    for (const client of clients) await client.close();
  }
});

Deno.test("a commit that fails mid-group acknowledges nothing it held: the uploads queued behind the commit in flight fail their sessions, unstored", async () => {
  await using inner = await Deno.openKv(":memory:");
  const testKv = new TestKv(inner);
  let failing = false;
  // Commits fail (not retried: not a transient error) while `failing`.
  const kv = new Proxy(testKv.kv, {
    get(target, property) {
      if (property === "atomic") {
        return () => {
          const operation = target.atomic();
          const wrapper: Deno.AtomicOperation = new Proxy(operation, {
            get(op, name) {
              if (name === "commit") {
                return () =>
                  failing
                    ? Promise.reject(new Error("disk full"))
                    : op.commit();
              }
              const value = Reflect.get(op, name);
              if (typeof value !== "function") return value;
              return (...args: unknown[]) => {
                const result = value.apply(op, args);
                return result === op ? wrapper : result;
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
  await using test = await startTestServer({
    kv,
    permissions: () => "readwrite",
    history: { snapshots: false },
  });
  const { accessToken } = await test.login();
  await using a = await connect(test.url, accessToken);
  await using b = await connect(test.url, accessToken);
  await bindFresh(a);
  await bindFresh(b);

  // A's first upload holds the realm's commit...
  const held = testKv.hold("commit");
  a.send({
    type: MessageType.Upload,
    sessionId: 1,
    changesets: [upload(1, [put("Note", "a1", {})])],
  });
  await held.reached;
  // ...while A's second and B's first queue behind it. A PING answered
  // proves each UPLOAD before it was received and handed on.
  a.send({
    type: MessageType.Upload,
    sessionId: 1,
    changesets: [upload(2, [put("Note", "a2", {})])],
  });
  b.send({
    type: MessageType.Upload,
    sessionId: 1,
    changesets: [upload(1, [put("Note", "b1", {})])],
  });
  for (const client of [a, b]) {
    client.send({ type: MessageType.Ping, timestamp: 5 });
    assert.equal((await client.expect(MessageType.Pong)).timestamp, 5);
  }
  failing = true;
  held.release();

  // A's first commit was durable: acknowledged. The group after it failed:
  // nothing of it is acknowledged, each session fails.
  for (const [client, acknowledged] of [[a, 1], [b, 0]] as const) {
    let ack = 0;
    for (let index = 0;; index++) {
      assert.ok(index < 10, "the session fails within a few messages");
      const message = await client.next();
      if (message.type === MessageType.Download) {
        ack = Math.max(ack, message.lastIntegratedClientVersion);
        continue;
      }
      assert.equal(message.type, MessageType.Error, JSON.stringify(message));
      assert.equal(message.sessionId, 1);
      assert.equal(
        message.code,
        errorCodeNumber("session_failed"),
        message.message,
      );
      break;
    }
    assert.equal(ack, acknowledged);
  }
  failing = false;
  assert.equal(test.server.stats().changesetsIntegrated, 1);

  // What is stored: version 1 only.
  await using reader = await connect(test.url, accessToken);
  await reader.bind(1, PATH);
  const frames = await reader.downloadUntil(1, 1);
  const stored = frames.flatMap(({ message }) =>
    (message as DownloadMessage).changesets.map((changeset) =>
      changeset.instructions[0]!.id
    )
  );
  assert.deepEqual(stored, ["a1"]);
  reader.send({ type: MessageType.Mark, sessionId: 1, requestId: 6 });
  assert.equal((await reader.expect(MessageType.MarkReply)).requestId, 6);
});

Deno.test("a validation hook still sees the session's earlier uploads stored, though its UPLOADs no longer wait for each other's commits", async () => {
  await using inner = await Deno.openKv(":memory:");
  const testKv = new TestKv(inner);
  // The hook reads through the server it belongs to.
  const own: { server?: TestServer } = {};
  // Refuses an update of an object the server does not hold.
  await using test = await startTestServer({
    kv: testKv.kv,
    permissions: () => "readwrite",
    validateChangeset: async ({ path, changes }) => {
      for (const change of changes) {
        if (change.op !== "update") continue;
        const stored = await own.server!.realm(path).get(
          change.type,
          change.id,
        );
        if (stored === undefined) return false;
      }
      return true;
    },
  });
  own.server = test;
  const { accessToken } = await test.login();
  await using client = await connect(test.url, accessToken);
  await bindFresh(client);
  // The first upload's commit is held while the second arrives: its
  // validation must wait for that commit, not read the realm without it.
  const held = testKv.hold("commit");
  client.send({
    type: MessageType.Upload,
    sessionId: 1,
    changesets: [upload(1, [put("Note", "a", { n: 1 })])],
  });
  await held.reached;
  client.send({
    type: MessageType.Upload,
    sessionId: 1,
    changesets: [upload(2, [update("Note", "a", { n: 2 })])],
  });
  // A PING answered: the second UPLOAD was received and handed on first.
  client.send({ type: MessageType.Ping, timestamp: 1 });
  assert.equal((await client.expect(MessageType.Pong)).timestamp, 1);
  held.release();
  // DOWNLOADs only (a REJECT fails the read), up to the ack of version 2.
  await readUntilAck(client, 2);
  assert.equal(test.server.stats().changesetsIntegrated, 2);
  assert.deepEqual(await test.realm(PATH).get("Note", "a"), { n: 2 });
});

Deno.test("a client that leaves while its uploads commit and comes back on the same server before they are durable is acknowledged on its new connection, each changeset stored once", async () => {
  await using inner = await Deno.openKv(":memory:");
  const testKv = new TestKv(inner);
  await using test = await startTestServer({
    kv: testKv.kv,
    permissions: () => "readwrite",
    history: { snapshots: false },
  });
  const { accessToken } = await test.login();
  const notes = (versions: number[]) =>
    versions.map((version) =>
      upload(version, [put("Note", `n${version}`, { version })])
    );
  const first = await connect(test.url, accessToken);
  let held: ReturnType<TestKv["hold"]> | undefined;
  try {
    const identity = await first.bind(1, PATH);
    assert.ok(identity !== null);
    await first.expect(MessageType.Download);
    // The first connection's commit is in flight, its second UPLOAD queued
    // behind it, when the client goes.
    held = testKv.hold("commit");
    first.send({
      type: MessageType.Upload,
      sessionId: 1,
      changesets: notes([1, 2]),
    });
    await held.reached;
    first.send({
      type: MessageType.Upload,
      sessionId: 1,
      changesets: notes([3]),
    });
    first.send({ type: MessageType.Ping, timestamp: 1 });
    assert.equal((await first.expect(MessageType.Pong)).timestamp, 1);
    await first.close();

    // Back on the same server with nothing acknowledged: the server has
    // not recorded any of it yet either, so everything is uploaded again
    // and queues behind the old connection's uploads in the realm's hub.
    await using second = await connect(test.url, accessToken);
    await second.bind(1, PATH, { identity, uploadCursor: 0 });
    const bound = await second.expect(MessageType.Download);
    assert.equal(bound.lastIntegratedClientVersion, 0);
    second.send({
      type: MessageType.Upload,
      sessionId: 1,
      changesets: notes([1, 2, 3]),
    });
    second.send({ type: MessageType.Ping, timestamp: 2 });
    assert.equal((await second.expect(MessageType.Pong)).timestamp, 2);
    held.release();

    // The old session's commits settle with nobody to tell; the new one's
    // upload is acknowledged all the same (stored by the old ones).
    await readUntilAck(second, 3);
    second.send({ type: MessageType.Mark, sessionId: 1, requestId: 7 });
    for (let index = 0;; index++) {
      assert.ok(index < 10, "MARK_REPLY within a few messages");
      const message = await second.next(AbortSignal.timeout(10_000));
      if (message.type === MessageType.MarkReply) break;
      assert.equal(message.type, MessageType.Download, JSON.stringify(message));
    }
    assert.equal(test.server.stats().changesetsIntegrated, 3);
    for (const version of [1, 2, 3]) {
      assert.deepEqual(await test.realm(PATH).get("Note", `n${version}`), {
        version,
      });
    }
  } finally {
    held?.release();
    await first.close();
  }
});
