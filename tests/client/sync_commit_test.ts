/**
 * The synchronous paths for storages that commit without I/O
 * (`RealmStorage.commitNow`): `LocalRealm.integrateNow` integrates a
 * DOWNLOAD before it returns only when nothing is ahead of it, a lone local
 * write commits at once, and a failed synchronous commit fails like an
 * asynchronous one. Durable storages (no `commitNow`) keep the queue; a
 * session hands a DOWNLOAD to that path only when no message of its own is
 * still being handled.
 */
import assert from "node:assert/strict";
import { LocalRealm, type RealmChange } from "../../src/client/local_realm.ts";
import { MemoryStorage } from "../../src/client/storage/memory.ts";
import type {
  RealmStorage,
  StorageBatch,
  StoredRealm,
} from "../../src/client/storage/storage.ts";
import {
  type DownloadMessage,
  MessageType,
  type ServerMessage,
} from "../../src/protocol/messages.ts";
import {
  answerMarks,
  flush,
  openBoundRealm,
  remoteChangeset,
  scriptedApp,
} from "../_helpers/scripted_app.ts";
import { download as sessionDownload, put } from "../_helpers/changesets.ts";

/** A salted DOWNLOAD of one remote put of `n` on `T/remote` (replica 9). */
function download(
  serverVersion: number,
  n: number,
  ack = 0,
): DownloadMessage {
  return {
    ...sessionDownload(serverVersion, [{
      serverVersion,
      stamp: { time: 5_000 + serverVersion, counter: 0, node: 9 },
      instructions: [put("T", "remote", { n })],
    }], ack),
    serverVersionSalt: 0x5eed,
    changesetBytes: 10,
  };
}

/** A MemoryStorage that counts commits and can be told to fail them. */
class CountingStorage extends MemoryStorage {
  batches: StorageBatch[] = [];
  fail: Error | null = null;
  override commitNow(batch: StorageBatch): void {
    if (this.fail !== null) throw this.fail;
    this.batches.push(batch);
    super.commitNow(batch);
  }
}

/**
 * A realm on a {@linkcode CountingStorage}, with the client versions of its
 * local commits as they are heard.
 */
async function openHearingLocalCommits() {
  const storage = new CountingStorage();
  const realm = await LocalRealm.open(storage, () => 1_000);
  const heard: number[] = [];
  realm.listen({
    onLocalCommit: (pending) => heard.push(pending.changeset.clientVersion),
  });
  return { storage, realm, heard };
}

/** A storage without `commitNow`, whose commits wait for `release()`. */
class GatedStorage implements RealmStorage {
  inner = new MemoryStorage();
  gate = Promise.withResolvers<void>();
  load(): Promise<StoredRealm> {
    return this.inner.load();
  }
  async commit(batch: StorageBatch): Promise<void> {
    await this.gate.promise;
    await this.inner.commit(batch);
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

Deno.test("LocalRealm.integrateNow() integrates, commits and reports a DOWNLOAD before it returns", async () => {
  const storage = new CountingStorage();
  const realm = await LocalRealm.open(storage, () => 1_000);
  const heard: RealmChange[] = [];
  realm.listen({ onChange: (change) => heard.push(change) });
  const before = storage.batches.length;
  assert.equal(realm.integrateNow(download(4, 1)), 0);
  // Nothing awaited: the object, the cursor, the commit and the change are
  // all there already.
  assert.deepEqual(realm.get("T", "remote"), { n: 1 });
  assert.equal(realm.meta.downloadCursor, 4);
  assert.equal(realm.meta.downloadCursorSalt, 0x5eed);
  assert.equal(storage.batches.length, before + 1);
  assert.deepEqual(storage.batches.at(-1)!.records.map((r) => r.id), [
    "remote",
  ]);
  assert.deepEqual(heard, [{
    origin: "remote",
    changes: [{ type: "T", id: "remote", op: "put", fields: { n: 1 } }],
  }]);
  const stored = await storage.load();
  assert.equal(stored.meta?.downloadCursor, 4);
  await realm.close();
});

Deno.test("LocalRealm.integrateNow() acknowledges uploads like integrate()", async () => {
  const realm = await LocalRealm.open(new MemoryStorage(), () => 1_000);
  await realm.write((tx) => tx.put("T", "a", { n: 1 }));
  await realm.write((tx) => tx.put("T", "b", { n: 2 }));
  await realm.barrier();
  assert.equal(realm.pending.length, 2);
  // An acknowledgement only (no changesets) of the first write.
  const ack: DownloadMessage = { ...download(7, 0, 1), changesets: [] };
  assert.equal(realm.integrateNow(ack), 1);
  assert.deepEqual(realm.pending.map((p) => p.changeset.clientVersion), [2]);
  assert.equal(realm.meta.acknowledgedClientVersion, 1);
  // A bogus acknowledgement is clamped to what was written.
  assert.equal(
    realm.integrateNow({ ...ack, lastIntegratedClientVersion: 9 }),
    2,
  );
  await realm.close();
});

Deno.test("LocalRealm.integrateNow() declines, doing nothing, while a mutation is queued, and integrate() then runs it in order", async () => {
  const realm = await LocalRealm.open(new MemoryStorage(), () => 1_000);
  const heard: string[] = [];
  realm.listen({
    onChange: (change) =>
      heard.push(`${change.origin}:${change.changes[0]!.fields?.n}`),
  });
  const gate = Promise.withResolvers<void>();
  const write = realm.write(async (tx) => {
    await gate.promise;
    tx.put("T", "local", { n: 1 });
  });
  assert.equal(realm.integrateNow(download(3, 2)), undefined);
  assert.equal(realm.get("T", "remote"), undefined);
  assert.equal(realm.meta.downloadCursor, 0);
  const integrated = realm.integrate(download(3, 2));
  gate.resolve();
  await write;
  assert.deepEqual(await integrated, { acknowledged: 0 });
  assert.deepEqual(heard, ["local:1", "remote:2"]);
  // With the queue empty again, it runs at once.
  assert.equal(realm.integrateNow(download(4, 3)), 0);
  assert.deepEqual(heard, ["local:1", "remote:2", "remote:3"]);
  await realm.close();
});

Deno.test("LocalRealm.integrateNow() declines for a storage without commitNow and after close()", async () => {
  const gated = new GatedStorage();
  gated.gate.resolve();
  const realm = await LocalRealm.open(gated, () => 1_000);
  assert.equal(realm.integrateNow(download(2, 1)), undefined);
  assert.equal(realm.get("T", "remote"), undefined);
  assert.deepEqual(await realm.integrate(download(2, 1)), { acknowledged: 0 });
  assert.deepEqual(realm.get("T", "remote"), { n: 1 });
  await realm.close();

  const memory = await LocalRealm.open(new MemoryStorage(), () => 1_000);
  await memory.close();
  assert.equal(memory.integrateNow(download(2, 1)), undefined);
  await assert.rejects(memory.integrate(download(2, 1)), TypeError);
});

Deno.test("LocalRealm.integrateNow() throws what the storage's commitNow threw, and memory stays on the old cursor", async () => {
  const storage = new CountingStorage();
  const realm = await LocalRealm.open(storage, () => 1_000);
  storage.fail = new Error("disk on fire");
  assert.throws(() => realm.integrateNow(download(5, 1)), /disk on fire/);
  assert.equal(realm.meta.downloadCursor, 0);
  storage.fail = null;
  await realm.close();
});

Deno.test("A lone local write on a synchronous storage is committed and heard before write() settles", async () => {
  const { storage, realm, heard } = await openHearingLocalCommits();
  const before = storage.batches.length;
  const written = realm.write((tx) => tx.put("T", "a", { n: 1 }));
  const result = await written;
  assert.equal(result.clientVersion, 1);
  assert.deepEqual(heard, [1]);
  assert.equal(storage.batches.length, before + 1);
  const batch = storage.batches.at(-1)!;
  assert.deepEqual(batch.append.map((c) => c.clientVersion), [1]);
  assert.equal(batch.meta.lastClientVersion, 1);
  // Stored: a reopened realm finds the write pending.
  const stored = await storage.load();
  assert.deepEqual(stored.pending.map((c) => c.clientVersion), [1]);
  await realm.close();
});

Deno.test("A failed synchronous commit of a local write fails it and every later write", async () => {
  const { storage, realm, heard } = await openHearingLocalCommits();
  storage.fail = new Error("disk on fire");
  await assert.rejects(
    realm.write((tx) => tx.put("T", "a", { n: 1 })),
    /disk on fire/,
  );
  storage.fail = null;
  // Memory and storage may disagree now: nothing more commits.
  await assert.rejects(
    realm.write((tx) => tx.put("T", "b", { n: 2 })),
    /disk on fire/,
  );
  assert.deepEqual(heard, []);
  // integrate() and integrateNow() refuse too (the realm is no longer
  // committing anything).
  assert.equal(realm.integrateNow(download(2, 1)), undefined);
  await assert.rejects(realm.integrate(download(2, 1)), /disk on fire/);
  await realm.close();
});

Deno.test("MemoryStorage.commitNow() commits like commit() and throws a TypeError once closed", async () => {
  const storage = new MemoryStorage();
  const meta = {
    nodeId: 7,
    clientIdentity: null,
    downloadCursor: 3,
    lastClientVersion: 0,
    acknowledgedClientVersion: 0,
  };
  storage.commitNow({ meta, records: [], append: [] });
  assert.deepEqual((await storage.load()).meta, meta);
  await storage.close();
  assert.throws(
    () => storage.commitNow({ meta, records: [], append: [] }),
    (error) =>
      error instanceof TypeError && /storage is closed/.test(error.message),
  );
});

Deno.test("A session integrates a DOWNLOAD before the socket's message handler returns when nothing is ahead of it, and behind a message still being handled otherwise, in order", async () => {
  const { app, sockets } = scriptedApp();
  try {
    const { realm, socket, sessionId } = await openBoundRealm(
      app,
      sockets,
      "/~/a",
    );
    await answerMarks(socket);
    const downloadOf = (serverVersion: number): ServerMessage => ({
      type: MessageType.Download,
      sessionId,
      serverVersion,
      lastIntegratedClientVersion: 0,
      downloadableBytes: 0,
      changesetBytes: 10,
      changesets: [remoteChangeset(serverVersion, 1)],
    });
    // Idle: handled within receive(), with nothing awaited.
    socket.receive(downloadOf(1));
    assert.deepEqual(realm.get("R", "r1-0"), {
      index: 0,
      text: "some remote text",
    });
    // A MARK reply is handled asynchronously: a DOWNLOAD right behind it
    // waits its turn rather than overtaking it.
    const mark = socket.sentOf(MessageType.Mark).length;
    const waited = realm.syncSession.waitForDownload({
      signal: AbortSignal.timeout(5_000),
    });
    await flush();
    const request = socket.sentOf(MessageType.Mark)[mark]!;
    socket.receive({
      type: MessageType.MarkReply,
      sessionId,
      requestId: request.requestId,
    });
    socket.receive(downloadOf(2));
    assert.equal(realm.get("R", "r2-0"), undefined);
    await waited;
    await flush();
    assert.deepEqual(realm.get("R", "r2-0"), {
      index: 0,
      text: "some remote text",
    });
    // Idle again: at once.
    socket.receive(downloadOf(3));
    assert.ok(realm.get("R", "r3-0") !== undefined);
    assert.equal(realm.syncSession.state, "active");
  } finally {
    await app.close();
  }
});
