// Conformance: DESIGN.md "Rejected writes" (docs/CLIENT.md "Rejected
// writes") — a write the server refuses on its own merits rejects its own
// receipt, is reverted to the server's values, and the session goes on.

import assert from "node:assert/strict";
import {
  Credentials,
  type RealmChange,
  SyncError,
  type Transaction,
} from "../../mod.ts";
import {
  fastApp,
  openDownloaded,
  proxiedClient,
  rejection,
} from "./_helpers.ts";
import { bounded, Recorder } from "../_helpers/waits.ts";
import { startTestServer } from "../_helpers/test_server.ts";
import type { ChangesetToValidate } from "../../server.ts";

Deno.test("WriteReceipt.waitForUpload() rejects with write_rejected (cause write_not_allowed) on a read-only realm; the write is reverted, the session stays active", async () => {
  let writer = "";
  await using server = await startTestServer({
    permissions: (userId, path) =>
      path !== "/board" ? "none" : userId === writer ? "readwrite" : "read",
  });
  await using appA = fastApp(server.url);
  await using appB = fastApp(server.url);
  const userA = await appA.logIn(Credentials.anonymous());
  writer = userA.id;
  const userB = await appB.logIn(Credentials.anonymous());
  await using a = await openDownloaded(userA, "/board");
  await (await a.write((tx) => tx.put("Task", "t1", { title: "A" })))
    .waitForUpload({ signal: bounded() });
  await using b = await openDownloaded(userB, "/board");
  assert.deepEqual(b.get("Task", "t1"), { title: "A" });

  await using changes = new Recorder(b.changes({ signal: bounded() }));
  const receipt = await b.write((tx) => {
    tx.update("Task", "t1", { title: "B" });
    tx.put("Task", "t2", { title: "new" });
  });
  assert.deepEqual(b.get("Task", "t1"), { title: "B" });
  const error = await rejection(receipt.waitForUpload({ signal: bounded() }));
  assert.equal(error.code, "write_rejected");
  assert.equal(error.isFatal, false);
  assert.ok(error.cause instanceof SyncError);
  assert.equal((error.cause as SyncError).code, "write_not_allowed");
  // Reverted: the update gets the server's value back, the new object goes.
  assert.deepEqual(b.get("Task", "t1"), { title: "A" });
  assert.equal(b.get("Task", "t2"), undefined);
  const revert = await changes.until((c) => c.origin === "remote");
  assert.deepEqual(
    sortChanges(revert),
    [
      { type: "Task", id: "t1", op: "update", fields: { title: "A" } },
      { type: "Task", id: "t2", op: "delete" },
    ],
  );
  // The receipt keeps its answer; the session goes on.
  assert.equal(
    (await rejection(receipt.waitForUpload({ signal: bounded() }))).code,
    "write_rejected",
  );
  await b.syncSession.waitForUpload({ signal: bounded() });
  assert.equal(b.syncSession.state, "active");
  assert.equal(b.syncSession.connectionState, "connected");
  assert.equal(b.syncSession.error, undefined);
  // The writer never saw the refused write.
  await (await a.write((tx) => tx.update("Task", "t1", { done: true })))
    .waitForUpload({ signal: bounded() });
  await b.syncSession.waitForDownload({ signal: bounded() });
  assert.deepEqual(b.get("Task", "t1"), { title: "A", done: true });
  assert.equal(a.get("Task", "t2"), undefined);
});

Deno.test("serveSync({ validateChangeset }) refusing one write: that receipt rejects (cause validation_failed), a later write on the same object made before the REJECT survives on top, later writes sync and a second client converges", async () => {
  const seen: string[] = [];
  await using server = await startTestServer({
    permissions: (_userId, path) => path === "/shared" ? "readwrite" : "none",
    validateChangeset: ({ changes }) => {
      seen.push(changes.map((c) => `${c.op} ${c.id}`).join(","));
      return changes.every((c) => c.fields?.title !== "forbidden");
    },
  });
  await using appA = fastApp(server.url);
  await using appB = fastApp(server.url);
  const a = await openDownloaded(
    await appA.logIn(Credentials.anonymous()),
    "/shared",
  );
  const b = await openDownloaded(
    await appB.logIn(Credentials.anonymous()),
    "/shared",
  );
  await (await a.write((tx) =>
    tx.put("Task", "t1", { title: "A", done: false })
  )).waitForUpload({ signal: bounded() });

  // The writer pauses, so the refused write and a later one on the same
  // object are both committed before the REJECT arrives.
  await using changes = new Recorder(a.changes({ signal: bounded() }));
  a.syncSession.pause();
  const refused = await a.write((tx) => {
    tx.update("Task", "t1", { title: "forbidden" });
    tx.put("Task", "t2", { title: "forbidden" });
  });
  const later = await a.write((tx) => tx.update("Task", "t1", { done: true }));
  a.syncSession.resume();
  const error = await rejection(refused.waitForUpload({ signal: bounded() }));
  assert.equal(error.code, "write_rejected");
  assert.equal((error.cause as SyncError).code, "validation_failed");
  await later.waitForUpload({ signal: bounded() });
  assert.deepEqual(a.get("Task", "t1"), { title: "A", done: true });
  assert.equal(a.get("Task", "t2"), undefined);
  const remote = changes.items.filter((c) => c.origin === "remote");
  assert.equal(remote.length, 1, JSON.stringify(changes.items));
  assert.deepEqual(sortChanges(remote[0]!), [
    { type: "Task", id: "t1", op: "update", fields: { title: "A" } },
    { type: "Task", id: "t2", op: "delete" },
  ]);
  assert.equal(a.syncSession.state, "active");
  assert.deepEqual(seen.slice(-2), ["update t1,put t2", "update t1"]);

  // Later writes sync, and the other client converges.
  await (await a.write((tx) => tx.put("Task", "t3", { title: "ok" })))
    .waitForUpload({ signal: bounded() });
  await b.syncSession.waitForDownload({ signal: bounded() });
  assert.deepEqual(b.objects("Task"), a.objects("Task"));
  assert.deepEqual(b.get("Task", "t1"), { title: "A", done: true });
  assert.equal(b.get("Task", "t2"), undefined);
  assert.deepEqual(b.get("Task", "t3"), { title: "ok" });
  await a.close();
  await b.close();
});

Deno.test("serveSync({ validateChangeset }) receives { userId, path, changes }: the uploading user's id, the resolved realm path, and changes exactly as the writer's realm.changes() reported the transaction (put, update and delete, values of every kind)", async () => {
  const seen: ChangesetToValidate[] = [];
  await using server = await startTestServer({
    validateChangeset: (changeset) => {
      seen.push(changeset);
      return true;
    },
  });
  await using app = fastApp(server.url);
  const user = await app.logIn(Credentials.anonymous());
  await using realm = await openDownloaded(user, "/~/notes");
  await (await realm.write((tx) => {
    tx.put("Task", "gone", { title: "x" });
    tx.put("Task", "kept", { title: "x", n: 1 });
  })).waitForUpload({ signal: bounded() });
  await using changes = new Recorder(realm.changes({ signal: bounded() }));
  const receipt = await realm.write((tx) => {
    tx.put("Note", "n1", {
      text: "héllo",
      n: -0.5,
      big: 12345678901234567890n,
      yes: true,
      none: null,
      at: new Date(1_700_000_000_000),
      bytes: new Uint8Array([0, 1, 255]),
      list: [1, "two", [3], { four: 4 }],
      nested: { a: { b: [null, false] } },
    });
    tx.update("Task", "kept", { n: 2 });
    tx.delete("Task", "gone");
  });
  await receipt.waitForUpload({ signal: bounded() });
  const local = await changes.until((c) => c.origin === "local");
  assert.equal(seen.length, 2);
  const asked = seen[1]!;
  assert.deepEqual(Object.keys(asked).sort(), ["changes", "path", "userId"]);
  assert.equal(asked.userId, user.id);
  assert.equal(asked.path, `/${user.id}/notes`);
  const byId = <T extends { id: string }>(list: readonly T[]) =>
    [...list].sort((x, y) => x.id.localeCompare(y.id));
  assert.deepEqual(byId(asked.changes), byId(local.changes));
  assert.deepEqual(byId(asked.changes).map((c) => `${c.op} ${c.id}`), [
    "delete gone",
    "update kept",
    "put n1",
  ]);
});

Deno.test("serveSync({ validateChangeset }): a hook that throws refuses the changeset (write_rejected, cause validation_failed) and is logged; an async hook's false refuses and its true takes; the session stays active, its waits settle, later writes sync", async () => {
  let calls = 0;
  await using server = await startTestServer({
    validateChangeset: async ({ changes }) => {
      calls++;
      await Promise.resolve();
      const title = changes[0]?.fields?.title;
      if (title === "throw") throw new Error("the hook broke on purpose");
      return title !== "no";
    },
  });
  await using app = fastApp(server.url);
  const user = await app.logIn(Credentials.anonymous());
  await using realm = await openDownloaded(user, "/~/todos");
  await using changes = new Recorder(realm.changes({ signal: bounded() }));
  const thrown = await realm.write((tx) =>
    tx.put("Task", "t1", { title: "throw" })
  );
  const refused = await realm.write((tx) =>
    tx.put("Task", "t2", { title: "no" })
  );
  const taken = await realm.write((tx) =>
    tx.put("Task", "t3", { title: "yes" })
  );
  for (const receipt of [thrown, refused]) {
    const error = await rejection(receipt.waitForUpload({ signal: bounded() }));
    assert.equal(error.code, "write_rejected");
    assert.equal(error.isFatal, false);
    assert.ok(error.cause instanceof SyncError);
    assert.equal((error.cause as SyncError).code, "validation_failed");
    assert.notEqual((error.cause as SyncError).message, "");
  }
  await taken.waitForUpload({ signal: bounded() });
  await realm.syncSession.waitForUpload({ signal: bounded() });
  assert.deepEqual(realm.pendingWrites(), []);
  assert.equal(realm.syncSession.stats().pendingUploadChangesets, 0);
  assert.equal(calls, 3);
  assert.deepEqual(realm.objects("Task").map((o) => o.id), ["t3"]);
  assert.equal(realm.syncSession.state, "active");
  assert.equal(realm.syncSession.connectionState, "connected");
  const log = await server.waitForLog((r) =>
    r.event === "validation_failed" && r.level === "warn"
  );
  assert.ok(
    String(log.error).includes("the hook broke on purpose"),
    log.message,
  );
  assert.equal(
    server.logs.filter((r) => r.event === "validation_failed").length,
    1,
  );
  // Each refusal is reverted as a remote transaction of its own.
  const reverts = changes.items.filter((c) => c.origin === "remote");
  assert.deepEqual(reverts.map(sortChanges), [
    [{ type: "Task", id: "t1", op: "delete" }],
    [{ type: "Task", id: "t2", op: "delete" }],
  ]);
  await (await realm.write((tx) => tx.put("Task", "t4", { title: "ok" })))
    .waitForUpload({ signal: bounded() });
  assert.deepEqual(await server.realm(`/${user.id}/todos`).get("Task", "t4"), {
    title: "ok",
  });
});

Deno.test("serveSync({ validateChangeset }) that is not a function throws a TypeError naming it", async () => {
  for (const validateChangeset of ["yes", true, {}]) {
    await assert.rejects(
      startTestServer({ validateChangeset: validateChangeset as never }),
      (error) =>
        error instanceof TypeError &&
        error.message.includes("validateChangeset"),
    );
  }
});

Deno.test("Realm.write() and ServerRealm.write(): a type name or object id over the server's 512 bytes of UTF-8 is a RangeError naming it, before anything is committed, so it never reaches the server and the session goes on; 512 bytes sync", async () => {
  await using server = await startTestServer();
  await using app = fastApp(server.url);
  const user = await app.logIn(Credentials.anonymous());
  await using realm = await openDownloaded(user, "/~/todos");
  const tooLong: [string, string, string][] = [
    ["Task", "x".repeat(513), "id"],
    ["Task", "é".repeat(257), "id"],
    ["T".repeat(513), "t1", "type"],
  ];
  for (const [type, id, named] of tooLong) {
    for (
      const op of [
        (tx: Transaction) => tx.put(type, id, {}),
        (tx: Transaction) => tx.delete(type, id),
      ]
    ) {
      await assert.rejects(
        realm.write(op),
        (error) => error instanceof RangeError && error.message.includes(named),
      );
    }
    await assert.rejects(
      server.realm(`/${user.id}/todos`).write((tx) => tx.put(type, id, {})),
      (error) => error instanceof RangeError && error.message.includes(named),
    );
  }
  assert.deepEqual(realm.pendingWrites(), []);
  const longest = "é".repeat(256);
  await (await realm.write((tx) => tx.put("Task", longest, { n: 1 })))
    .waitForUpload({ signal: bounded() });
  assert.deepEqual(
    await server.realm(`/${user.id}/todos`).get("Task", longest),
    { n: 1 },
  );
  assert.equal(realm.syncSession.state, "active");
});

Deno.test("serveSync({ validateChangeset }) refusing a delete: the object comes back with the server's fields (a remote put), and a put over an object the server holds gets the server's whole object back", async () => {
  await using server = await startTestServer({
    validateChangeset: ({ changes }) =>
      changes.every((c) => c.op !== "delete" && c.fields?.title !== "no"),
  });
  await using app = fastApp(server.url);
  const user = await app.logIn(Credentials.anonymous());
  await using realm = await openDownloaded(user, "/~/todos");
  await (await realm.write((tx) => {
    tx.put("Task", "t1", { title: "one", done: false });
    tx.put("Task", "t2", { title: "two" });
  })).waitForUpload({ signal: bounded() });
  await using changes = new Recorder(realm.changes({ signal: bounded() }));
  const deleted = await realm.write((tx) => tx.delete("Task", "t1"));
  const replaced = await realm.write((tx) =>
    tx.put("Task", "t2", { title: "no", extra: 1 })
  );
  assert.equal(realm.get("Task", "t1"), undefined);
  for (const receipt of [deleted, replaced]) {
    const error = await rejection(receipt.waitForUpload({ signal: bounded() }));
    assert.equal(error.code, "write_rejected");
    assert.equal((error.cause as SyncError).code, "validation_failed");
  }
  assert.deepEqual(realm.get("Task", "t1"), { title: "one", done: false });
  assert.deepEqual(realm.get("Task", "t2"), { title: "two" });
  const remote = changes.items.filter((c) => c.origin === "remote");
  assert.deepEqual(remote.map(sortChanges), [
    [{
      type: "Task",
      id: "t1",
      op: "put",
      fields: { title: "one", done: false },
    }],
    [{ type: "Task", id: "t2", op: "put", fields: { title: "two" } }],
  ]);
  assert.equal(realm.syncSession.state, "active");
});

Deno.test("a permission lowered to read makes later writes write_rejected (cause write_not_allowed) and the session stays active; read revoked too is fatal: the session fails with permission_denied and a pending receipt rejects with it", async () => {
  let permission: "readwrite" | "read" | "none" = "readwrite";
  await using server = await startTestServer({
    permissions: () => permission,
  });
  await using app = fastApp(server.url);
  await using realm = await openDownloaded(
    await app.logIn(Credentials.anonymous()),
    "/shared",
  );
  await (await realm.write((tx) => tx.put("Task", "t1", { v: 1 })))
    .waitForUpload({ signal: bounded() });

  // The server reads permissions when a session binds.
  permission = "read";
  await app.reconnect();
  await realm.syncSession.waitForDownload({ signal: bounded() });
  const refused = await realm.write((tx) => tx.update("Task", "t1", { v: 2 }));
  const error = await rejection(refused.waitForUpload({ signal: bounded() }));
  assert.equal(error.code, "write_rejected");
  assert.equal((error.cause as SyncError).code, "write_not_allowed");
  assert.deepEqual(realm.get("Task", "t1"), { v: 1 });
  assert.equal(realm.syncSession.state, "active");

  realm.syncSession.pause();
  const pending = await realm.write((tx) => tx.update("Task", "t1", { v: 3 }));
  permission = "none";
  realm.syncSession.resume();
  const fatal = await rejection(pending.waitForUpload({ signal: bounded() }));
  assert.equal(fatal.code, "permission_denied");
  assert.equal(fatal.isFatal, true);
  assert.equal(realm.syncSession.state, "error");
  assert.equal(realm.syncSession.error?.code, "permission_denied");
});

Deno.test("A write larger than the server's limits.maxMessageBytes rejects its own receipt (write_rejected, cause message_too_large), is reverted to the server's values, and the writes before and after it sync; the session stays active", async () => {
  const limit = 64 * 1024;
  await using server = await startTestServer({
    limits: { maxMessageBytes: limit },
    permissions: () => "readwrite",
  });
  await using appA = fastApp(server.url);
  await using appB = fastApp(server.url);
  const userA = await appA.logIn(Credentials.anonymous());
  const userB = await appB.logIn(Credentials.anonymous());
  const path = `/shared-${crypto.randomUUID()}`;
  await using a = await openDownloaded(userA, path);
  await using b = await openDownloaded(userB, path);
  await (await a.write((tx) => tx.put("Doc", "d1", { body: "short" })))
    .waitForUpload({ signal: bounded() });

  await using changes = new Recorder(a.changes({ signal: bounded() }));
  // Paused, so the three go out together once it resumes: the refused one
  // between two that must not be lost or held up.
  a.syncSession.pause();
  const before = await a.write((tx) => tx.put("Task", "t1", { n: 1 }));
  const large = await a.write((tx) => {
    tx.update("Doc", "d1", { body: "x".repeat(2 * limit) });
    tx.put("Doc", "d2", { body: "y".repeat(limit) });
  });
  const after = await a.write((tx) => tx.put("Task", "t3", { n: 3 }));
  assert.equal((a.get("Doc", "d1")?.body as string).length, 2 * limit);
  a.syncSession.resume();
  const error = await rejection(large.waitForUpload({ signal: bounded() }));
  assert.equal(error.code, "write_rejected");
  assert.equal(error.isFatal, false);
  assert.ok(error.cause instanceof SyncError);
  assert.equal((error.cause as SyncError).code, "message_too_large");
  assert.match((error.cause as SyncError).message, new RegExp(`${limit}`));
  await before.waitForUpload({ signal: bounded() });
  await after.waitForUpload({ signal: bounded() });
  assert.deepEqual(a.get("Doc", "d1"), { body: "short" });
  assert.equal(a.get("Doc", "d2"), undefined);
  const revert = await changes.until((c) => c.origin === "remote");
  assert.deepEqual(sortChanges(revert), [
    { type: "Doc", id: "d1", op: "update", fields: { body: "short" } },
    { type: "Doc", id: "d2", op: "delete" },
  ]);
  assert.equal(a.syncSession.state, "active");
  assert.equal(a.syncSession.connectionState, "connected");
  assert.equal(a.syncSession.error, undefined);
  // Later writes go on; the other client never sees the refused one.
  await (await a.write((tx) => tx.update("Doc", "d1", { done: true })))
    .waitForUpload({ signal: bounded() });
  await b.syncSession.waitForDownload({ signal: bounded() });
  assert.deepEqual(b.get("Doc", "d1"), { body: "short", done: true });
  assert.equal(b.get("Doc", "d2"), undefined);
  assert.deepEqual(b.get("Task", "t1"), { n: 1 });
  assert.deepEqual(b.get("Task", "t3"), { n: 3 });
});

Deno.test("A too-large write whose REJECT is lost with the connection is refused again after the reconnect (its receipt rejects with message_too_large, nothing of it stored), and the write after it goes through", async () => {
  const limit = 64 * 1024;
  await using client = await proxiedClient({
    server: {
      limits: { maxMessageBytes: limit },
      permissions: () => "readwrite",
    },
    path: "/large",
  });
  const { realm, proxy, server } = client;
  await (await realm.write((tx) => tx.put("Doc", "d1", { body: "short" })))
    .waitForUpload({ signal: bounded() });
  // What the client sends arrives; the server's answers never do.
  proxy.deafen();
  const refusedLog = server.waitForLog(
    (record) => record.event === "write_rejected",
    bounded(),
  );
  const large = await realm.write((tx) =>
    tx.update("Doc", "d1", { body: "x".repeat(2 * limit) })
  );
  const after = await realm.write((tx) => tx.put("Task", "t2", { n: 2 }));
  await refusedLog;
  proxy.dropAll();
  const error = await rejection(large.waitForUpload({ signal: bounded() }));
  assert.equal(error.code, "write_rejected");
  assert.equal((error.cause as SyncError).code, "message_too_large");
  await after.waitForUpload({ signal: bounded() });
  assert.deepEqual(realm.get("Doc", "d1"), { body: "short" });
  // Refused on both bindings (recorded once), stored on neither.
  assert.equal(
    server.logs.filter((record) => record.event === "write_rejected").length,
    1,
  );
  const stored = server.realm("/large");
  assert.deepEqual(
    (await stored.objects("Doc")).map((o) => o.fields),
    [{ body: "short" }],
  );
  assert.deepEqual(
    (await stored.objects("Task")).map((o) => o.fields),
    [{ n: 2 }],
  );
  assert.equal(realm.syncSession.state, "active");
});

function sortChanges(change: RealmChange): RealmChange["changes"] {
  return [...change.changes].sort((x, y) => x.id.localeCompare(y.id));
}
