// Conformance: the client API (docs/CLIENT.md) — names, shapes, writes,
// reads and change feeds, through the public entry point only.

import assert from "node:assert/strict";
import {
  App,
  Credentials,
  type RealmChange,
  SyncError,
  SyncSession,
  type Transaction,
} from "../../mod.ts";
import { fastApp, openClient, openDownloaded } from "./_helpers.ts";
import { bounded, Recorder } from "../_helpers/waits.ts";
import { startTestServer } from "../_helpers/test_server.ts";

Deno.test("SyncError carries code, message, isFatal, willRetry and cause, and is an Error", () => {
  const cause = new Error("underlying");
  const error = new SyncError("permission_denied", "no", { cause });
  assert.ok(error instanceof Error);
  assert.equal(error.code, "permission_denied");
  assert.equal(error.message, "no");
  assert.equal(error.isFatal, true);
  assert.equal(error.willRetry, false);
  assert.equal(error.cause, cause);
});

Deno.test("App construction: baseUrl is the only required option; nothing connects before a realm opens", async () => {
  await using server = await startTestServer();
  await using app = new App({ baseUrl: server.url });
  assert.equal(server.stats().connections, 0);
  const user = await app.logIn(Credentials.anonymous());
  assert.equal(typeof user.id, "string");
  assert.ok(user.id.length > 0);
  assert.deepEqual(user.allSessions, []);
  assert.equal(server.stats().connections, 0);
});

Deno.test("User.openRealm() gives a realm whose syncSession is user.sessionFor(path) and in user.allSessions", async () => {
  await using server = await startTestServer();
  await using app = fastApp(server.url);
  const user = await app.logIn(Credentials.anonymous());
  await using realm = await user.openRealm({
    path: "/~/todos",
    storage: "memory",
    waitForDownload: true,
    signal: bounded(),
  });
  const session = realm.syncSession;
  assert.ok(session instanceof SyncSession);
  assert.equal(user.sessionFor("/~/todos"), session);
  assert.ok(user.allSessions.includes(session));
  assert.equal(session.state, "active");
  assert.equal(session.connectionState, "connected");
  assert.equal(session.error, undefined);
  assert.equal(session.retry, undefined);
});

Deno.test("Realm.write() resolves once committed locally; get() and objects() read it; put/update/delete in one transaction", async () => {
  await using server = await startTestServer();
  await using client = await openClient(fastApp(server.url));
  const { realm } = client;
  await realm.write((tx) => tx.put("Task", "other", { title: "Old" }));
  const receipt = await realm.write((tx) => {
    tx.put("Task", "t1", { title: "Buy milk", done: false });
    tx.update("Task", "t1", { done: true });
    tx.delete("Task", "other");
  });
  // Committed locally: readable before any acknowledgement is awaited.
  assert.deepEqual(realm.get("Task", "t1"), { title: "Buy milk", done: true });
  assert.equal(realm.get("Task", "other"), undefined);
  assert.equal(realm.get("Task", "missing"), undefined);
  const objects = realm.objects("Task");
  assert.equal(objects.length, 1);
  assert.deepEqual(objects, [{
    id: "t1",
    fields: { title: "Buy milk", done: true },
  }]);
  assert.deepEqual(realm.objects("Nothing"), []);
  await receipt.waitForUpload({ signal: bounded() });
  assert.equal(realm.syncSession.stats().pendingUploadChangesets, 0);
});

Deno.test("Realm.write() commits in call order when several are started without awaiting", async () => {
  await using server = await startTestServer();
  await using client = await openClient(fastApp(server.url));
  const { realm } = client;
  await using changes = new Recorder(realm.changes({ signal: bounded() }));
  const writes = [
    realm.write((tx) => tx.put("Task", "t", { n: 1 })),
    // An asynchronous transaction function must not let a later write pass it.
    realm.write(async (tx) => {
      await Promise.resolve();
      tx.update("Task", "t", { n: 2 });
    }),
    realm.write((tx) => tx.update("Task", "t", { n: 3 })),
    realm.write((tx) => tx.put("Task", "u", { n: 4 })),
  ];
  const receipts = await Promise.all(writes);
  assert.deepEqual(realm.get("Task", "t"), { n: 3 });
  for (let i = 1; i < receipts.length; i++) {
    assert.ok(
      receipts[i]!.clientVersion > receipts[i - 1]!.clientVersion,
      "client versions follow call order",
    );
  }
  await changes.until((_c) => changes.items.length >= 4);
  assert.deepEqual(
    changes.items.map((c) => c.changes.map((o) => `${o.op}:${o.id}`)),
    [["put:t"], ["update:t"], ["update:t"], ["put:u"]],
  );
  await realm.syncSession.waitForUpload({ signal: bounded() });
});

Deno.test("Realm.changes() delivers one item per committed transaction, local and remote: { origin, changes: [{ type, id, op, fields? }] }", async () => {
  await using server = await startTestServer({
    permissions: () => "readwrite",
  });
  await using writerApp = fastApp(server.url);
  await using readerApp = fastApp(server.url);
  const writer = await writerApp.logIn(Credentials.anonymous());
  const reader = await readerApp.logIn(Credentials.anonymous());
  await using a = await openDownloaded(writer, "/shared/todos");
  await using b = await openDownloaded(reader, "/shared/todos");
  await using local = new Recorder(a.changes({ signal: bounded() }));
  await using remote = new Recorder(b.changes({ signal: bounded() }));

  await a.write((tx) => {
    tx.put("Task", "t1", { title: "Buy milk", done: false });
    tx.put("Task", "t2", { title: "Walk dog", done: false });
  });
  await a.write((tx) => tx.update("Task", "t1", { done: true }));
  await a.write((tx) => tx.delete("Task", "t2"));

  await remote.until(() => remote.items.length >= 3);
  const sortChanges = (c: RealmChange) => ({
    origin: c.origin,
    changes: [...c.changes].sort((x, y) => x.id.localeCompare(y.id)),
  });
  const expected = (origin: "local" | "remote"): RealmChange[] => [
    {
      origin,
      changes: [
        {
          type: "Task",
          id: "t1",
          op: "put",
          fields: { title: "Buy milk", done: false },
        },
        {
          type: "Task",
          id: "t2",
          op: "put",
          fields: { title: "Walk dog", done: false },
        },
      ],
    },
    {
      origin,
      changes: [{
        type: "Task",
        id: "t1",
        op: "update",
        fields: { done: true },
      }],
    },
    { origin, changes: [{ type: "Task", id: "t2", op: "delete" }] },
  ];
  assert.equal(local.items.length, 3);
  assert.deepEqual(local.items.map(sortChanges), expected("local"));
  assert.equal(remote.items.length, 3);
  assert.deepEqual(remote.items.map(sortChanges), expected("remote"));
  assert.deepEqual(b.get("Task", "t1"), { title: "Buy milk", done: true });
  assert.equal(b.get("Task", "t2"), undefined);
});

Deno.test("SyncSession.stats() has bytesSent, bytesReceived, rttMs, reconnects, pendingUploadBytes, pendingUploadChangesets, clientResets", async () => {
  await using server = await startTestServer();
  await using client = await openClient(fastApp(server.url));
  const { realm, session } = client;
  const keys = Object.keys(session.stats()).sort();
  assert.deepEqual(keys, [
    "bytesReceived",
    "bytesSent",
    "clientResets",
    "pendingUploadBytes",
    "pendingUploadChangesets",
    "reconnects",
    "rttMs",
  ]);
  session.pause();
  await realm.write((tx) => tx.put("Task", "a", { n: 1 }));
  await realm.write((tx) => tx.put("Task", "b", { n: 2 }));
  const paused = session.stats();
  assert.equal(paused.pendingUploadChangesets, 2);
  assert.ok(paused.pendingUploadBytes > 0);
  session.resume();
  await session.waitForUpload({ signal: bounded() });
  const stats = session.stats();
  assert.equal(stats.pendingUploadChangesets, 0);
  assert.equal(stats.pendingUploadBytes, 0);
  assert.ok(stats.bytesSent > 0);
  assert.ok(stats.bytesReceived > 0);
  assert.equal(stats.reconnects, 0);
  assert.ok(stats.rttMs === undefined || typeof stats.rttMs === "number");
});

Deno.test("User.openRealm() onProgress reports the initial download and ends at 1.0", async () => {
  await using server = await startTestServer({
    permissions: () => "readwrite",
  });
  await using writerApp = fastApp(server.url);
  const writer = await writerApp.logIn(Credentials.anonymous());
  {
    await using a = await openDownloaded(writer, "/shared/big");
    await a.write((tx) => {
      for (let i = 0; i < 200; i++) tx.put("Item", `i${i}`, { n: i });
    });
    await a.syncSession.waitForUpload({ signal: bounded() });
  }
  await using readerApp = fastApp(server.url);
  const reader = await readerApp.logIn(Credentials.anonymous());
  const seen: number[] = [];
  await using b = await reader.openRealm({
    path: "/shared/big",
    waitForDownload: true,
    onProgress: (p) => {
      assert.equal(typeof p.transferredBytes, "number");
      assert.equal(typeof p.transferableBytes, "number");
      assert.equal(typeof p.isTransferComplete, "boolean");
      seen.push(p.progressEstimate);
    },
    signal: bounded(),
  });
  assert.equal(b.objects("Item").length, 200);
  assert.ok(seen.length > 0, "onProgress was called");
  assert.equal(seen.at(-1), 1);
  for (const estimate of seen) assert.ok(estimate >= 0 && estimate <= 1);
});

Deno.test("Realm values of every kind round-trip through the server: null, boolean, number, bigint, string, Uint8Array, Date, arrays and plain objects", async () => {
  await using server = await startTestServer({
    permissions: () => "readwrite",
  });
  await using clientA = await openClient(fastApp(server.url), "/shared/values");
  await using clientB = await openClient(fastApp(server.url), "/shared/values");
  const [a, b] = [clientA.realm, clientB.realm];
  const fields = {
    nothing: null,
    yes: true,
    no: false,
    int: 42,
    float: -1.5,
    negativeZero: -0,
    big: 2n ** 63n - 1n,
    text: "héllo 𝄞",
    empty: "",
    bytes: new Uint8Array([0, 1, 255]),
    when: new Date(1_700_000_000_000),
    list: [1, "two", null, [3], { four: 4 }],
    nested: { a: { b: [true, new Date(0)] } },
  };
  await a.write((tx) => tx.put("Value", "v", fields));
  await a.syncSession.waitForUpload({ signal: bounded() });
  await b.syncSession.waitForDownload({ signal: bounded() });
  assert.deepEqual(b.get("Value", "v"), fields);
  assert.ok(Object.is(b.get("Value", "v")!.negativeZero, -0));
});

Deno.test("Realm.write() refuses a string with a lone surrogate (type name, id, field name, value, nested value or key) with a TypeError naming it, before anything is committed; surrogate pairs sync exactly, so every replica holds what was written", async () => {
  await using server = await startTestServer({
    permissions: () => "readwrite",
  });
  await using clientA = await openClient(fastApp(server.url), "/shared/text");
  await using clientB = await openClient(fastApp(server.url), "/shared/text");
  const [a, b] = [clientA.realm, clientB.realm];
  const lone = "a\uD800b";
  const refused: [string, (tx: Transaction) => void, RegExp][] = [
    ["type name", (tx) => tx.put(lone, "x", {}), /type .*lone surrogate/],
    ["id", (tx) => tx.put("T", lone, {}), /id .*lone surrogate/],
    [
      "field name",
      (tx) => tx.put("T", "x", { [lone]: 1 }),
      /field name .*lone surrogate/,
    ],
    ["value", (tx) => tx.put("T", "x", { s: "\uDC00" }), /"s".*lone surrogate/],
    [
      "nested value",
      (tx) => tx.put("T", "x", { list: ["ok", { deep: lone }] }),
      /"list"/,
    ],
    ["nested key", (tx) => tx.put("T", "x", { map: { [lone]: 1 } }), /"map"/],
    ["update", (tx) => tx.update("T", "kept", { s: lone }), /"s"/],
  ];
  await (await a.write((tx) => tx.put("T", "kept", { s: "fine" })))
    .waitForUpload({ signal: bounded() });
  for (const [what, write, message] of refused) {
    await assert.rejects(() => a.write(write), (error: unknown) => {
      assert.ok(error instanceof TypeError, `${what}: ${error}`);
      assert.match(error.message, message, what);
      return true;
    });
  }
  assert.deepEqual(a.objects("T").map((o) => o.id), ["kept"]);
  assert.equal(a.pendingWrites().length, 0);
  // Well-formed surrogate pairs and U+FFFD itself are ordinary text.
  const text = "𝄞 \uFFFD 😀";
  await (await a.write((tx) => tx.put("T", "😀", { [text]: text })))
    .waitForUpload({ signal: bounded() });
  await b.syncSession.waitForDownload({ signal: bounded() });
  assert.deepEqual(b.get("T", "😀"), { [text]: text });
  assert.deepEqual(a.get("T", "😀"), b.get("T", "😀"));
});

Deno.test("Convergence: concurrent offline writes to one object merge per field, last writer wins per field, a delete wins over older writes; both clients end equal", async () => {
  await using server = await startTestServer({
    permissions: () => "readwrite",
  });
  await using clientA = await openClient(fastApp(server.url), "/shared/merge");
  await using clientB = await openClient(fastApp(server.url), "/shared/merge");
  const [a, b] = [clientA.realm, clientB.realm];
  await a.write((tx) => {
    tx.put("T", "x", { title: "start", done: false, n: 0 });
    tx.put("T", "gone", { n: 1 });
  });
  await a.syncSession.waitForUpload({ signal: bounded() });
  await b.syncSession.waitForDownload({ signal: bounded() });

  a.syncSession.pause();
  b.syncSession.pause();
  await a.write((tx) => tx.update("T", "x", { title: "from a" }));
  await b.write((tx) => tx.update("T", "x", { done: true }));
  await a.write((tx) => tx.update("T", "gone", { n: 2 }));
  await b.write((tx) => tx.delete("T", "gone"));
  await b.write((tx) => tx.update("T", "x", { n: 2 })); // later than a's
  a.syncSession.resume();
  b.syncSession.resume();
  for (const realm of [a, b]) {
    await realm.syncSession.waitForUpload({ signal: bounded() });
  }
  for (const realm of [a, b]) {
    await realm.syncSession.waitForDownload({ signal: bounded() });
  }
  assert.deepEqual(a.objects("T"), b.objects("T"));
  assert.deepEqual(a.get("T", "x"), { title: "from a", done: true, n: 2 });
  assert.equal(a.get("T", "gone"), undefined);
});
