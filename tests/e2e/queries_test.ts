import assert from "node:assert/strict";
import type { LiveQueryUpdate } from "../../src/client/query_engine.ts";
import type { RealmObject } from "../../src/client/realm.ts";
import { anonymousClient } from "../_helpers/e2e.ts";
import { assertPatches } from "../_helpers/live_query.ts";
import { startTestServer } from "../_helpers/test_server.ts";

const shared = { permissions: () => "readwrite" as const };

type Task = { title: string; done: boolean; priority: number };

Deno.test("A remote transaction reaches the other client's realm.watch() as the right change set", async () => {
  await using server = await startTestServer(shared);
  const a = await anonymousClient(server.url);
  const b = await anonymousClient(server.url);
  try {
    await using realmA = await a.user.openRealm({
      path: "/shared/todos",
      waitForDownload: true,
    });
    await using realmB = await b.user.openRealm({
      path: "/shared/todos",
      waitForDownload: true,
      indexes: { Task: ["done"] },
    });
    await realmA.write((tx) => {
      tx.put("Task", "t1", { title: "Buy milk", done: false, priority: 1 });
      tx.put("Task", "t2", { title: "Call mum", done: false, priority: 2 });
      tx.put("Task", "t3", { title: "Pay rent", done: true, priority: 3 });
    });
    const controller = new AbortController();
    const reader = realmB.watch<Task>("Task", {
      where: { done: false },
      sort: [["priority", "desc"]],
      signal: controller.signal,
    }).getReader();
    const signal = AbortSignal.timeout(10_000);
    const next = async (): Promise<LiveQueryUpdate<Task>> => {
      const { done, value } = await reader.read();
      assert.ok(!done && !signal.aborted);
      return value;
    };
    let current: RealmObject<Task>[] = (await next()).objects;
    // Either B already has A's first write, or it arrives as one item.
    if (current.length === 0) {
      const update = await next();
      assertPatches(current, update, "first remote write");
      current = update.objects;
    }
    assert.deepEqual(current.map((o) => o.id), ["t2", "t1"]);
    // One remote transaction: a move, a departure, an arrival, and a change
    // outside the result.
    await realmA.write((tx) => {
      tx.update("Task", "t1", { priority: 5 });
      tx.update("Task", "t2", { done: true });
      tx.put("Task", "t4", { title: "Water plants", done: false, priority: 0 });
      tx.update("Task", "t3", { title: "Pay rent (done)" });
    });
    const update = await next();
    assertPatches(current, update, "remote transaction");
    assert.deepEqual(update.objects.map((o) => o.id), ["t1", "t4"]);
    // t2 left; t1 changed its sort key but kept its place among the objects
    // that stayed, so it is a modification; t4 arrived.
    assert.deepEqual(update.changes, {
      insertions: [1],
      deletions: [0],
      modifications: [0],
    });
    current = update.objects;
    // A remote change to an object outside the result wakes nobody: the
    // next item is the one after it.
    await realmA.write((tx) => tx.update("Task", "t3", { priority: 9 }));
    await realmA.write((tx) =>
      tx.update("Task", "t4", { title: "Water the plants" })
    );
    const modified = await next();
    assert.deepEqual(modified.changes, {
      insertions: [],
      deletions: [],
      modifications: [1],
    });
    assert.equal(modified.objects[1]!.fields.title, "Water the plants");
    controller.abort();
    assert.equal((await reader.read()).done, true);
  } finally {
    await a.app.close();
    await b.app.close();
  }
});

Deno.test("A bootstrap arrives on realm.watch() as items whose change sets patch into the full result", async () => {
  await using server = await startTestServer(shared);
  const a = await anonymousClient(server.url);
  const b = await anonymousClient(server.url);
  try {
    await using realmA = await a.user.openRealm({ path: "/shared/many" });
    const total = 3_000;
    for (let start = 0; start < total; start += 500) {
      await realmA.write((tx) => {
        for (let i = start; i < start + 500; i++) {
          tx.put("Item", `i${String(i).padStart(5, "0")}`, {
            n: i,
            even: i % 2 === 0,
            text: "x".repeat(200),
          });
        }
      });
    }
    await realmA.syncSession.waitForUpload({
      signal: AbortSignal.timeout(10_000),
    });
    await using realmB = await b.user.openRealm({
      path: "/shared/many",
      indexes: { Item: ["even"] },
    });
    // Registered before the first DOWNLOAD can be integrated (that needs
    // the socket, a later task).
    const controller = new AbortController();
    const stream = realmB.watch<{ n: number; even: boolean }>("Item", {
      where: { even: true },
      sort: [["n", "desc"]],
      limit: 100,
      signal: controller.signal,
    });
    const download = realmB.syncSession.waitForDownload({
      signal: AbortSignal.timeout(10_000),
    });
    let current: RealmObject<{ n: number; even: boolean }>[] | undefined;
    let items = 0;
    const reader = stream.getReader();
    for (let round = 0; round < 1_000; round++) {
      const { done, value } = await reader.read();
      assert.ok(!done);
      items++;
      if (current === undefined) {
        assert.deepEqual(value.objects, [], "nothing downloaded yet");
      } else {
        assertPatches(current, value, `bootstrap item ${items}`);
      }
      current = value.objects;
      if (current.length === 100 && current[0]!.fields.n === total - 2) break;
    }
    await download;
    assert.deepEqual(
      current!.map((o) => o.fields.n),
      Array.from({ length: 100 }, (_, i) => total - 2 - 2 * i),
    );
    assert.ok(items >= 2);
    assert.equal(realmB.count("Item", { where: { even: true } }), total / 2);
    controller.abort();
    assert.equal((await reader.read()).done, true);
  } finally {
    await a.app.close();
    await b.app.close();
  }
});
