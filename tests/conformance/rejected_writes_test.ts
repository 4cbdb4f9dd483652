// Conformance: DESIGN.md "Rejected writes" (docs/CLIENT.md "Rejected
// writes") — a write the server refuses on its own merits rejects its own
// receipt, is reverted to the server's values, and the session goes on.

import assert from "node:assert/strict";
import { Credentials, type RealmChange, SyncError } from "../../mod.ts";
import { fastApp, openDownloaded } from "./_helpers.ts";
import { bounded, Recorder } from "../_helpers/waits.ts";
import { startTestServer } from "../_helpers/test_server.ts";

async function rejection(promise: Promise<unknown>): Promise<SyncError> {
  const error = await promise.then(
    () => assert.fail("the receipt resolved"),
    (error: unknown) => error,
  );
  assert.ok(error instanceof SyncError, String(error));
  return error;
}

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

function sortChanges(change: RealmChange): RealmChange["changes"] {
  return [...change.changes].sort((x, y) => x.id.localeCompare(y.id));
}
