// Live queries on a LocalRealm and through the public Realm API: random
// transactions against the query recomputed, change sets, bad input.
import assert from "node:assert/strict";
import { LocalRealm } from "../../src/client/local_realm.ts";
import {
  type LiveQueryUpdate,
  materialize,
} from "../../src/client/query_engine.ts";
import { realmLocal, realmQueryEngine } from "../../src/client/realm.ts";
import type { RealmObject } from "../../src/client/realm.ts";
import { MemoryStorage } from "../../src/client/storage/memory.ts";
import { SyncError } from "../../src/client/sync_error.ts";
import type { Instruction } from "../../src/model/changeset.ts";
import { compileQuery, runQuery } from "../../src/model/query.ts";
import type { Fields } from "../../src/model/value.ts";
import type { DownloadMessage } from "../../src/protocol/messages.ts";
import { anonymousClient } from "../_helpers/e2e.ts";
import { download, serverChangeset } from "../_helpers/changesets.ts";
import {
  checkWatched,
  watchAll,
  writeRandomly,
} from "../_helpers/live_query.ts";
import { Prng, testSeed } from "../_helpers/prng.ts";
import { startTestServer } from "../_helpers/test_server.ts";

const QUERIES: unknown[] = [
  {},
  { where: { d: true } },
  { where: { p: { gte: 2 } }, sort: [["p", "desc"]] },
  { sort: [["p", "asc"], ["t", "desc"]], limit: 5 },
  {
    where: { $or: [{ d: false }, { p: { lt: 3 } }] },
    sort: [["t", "asc"]],
    offset: 3,
    limit: 4,
  },
  { sort: [["p", "asc"]], offset: 2 },
  {
    where: { p: { in: [1, 3, "x"] } },
    sort: [["d", "asc"], ["p", "desc"]],
    limit: 3,
  },
  { where: { t: { ne: "b" } }, sort: [["t", "desc"]], offset: 1, limit: 1 },
  // Routed by a top-level equality (a missing field routes as null).
  { where: { p: null }, sort: [["t", "asc"]] },
  { where: { $and: [{ p: 3 }], d: { eq: false } }, limit: 2 },
  { where: { t: "a", p: { gte: 1 } }, sort: [["p", "desc"]], offset: 1 },
];

function randomFields(prng: Prng): Fields {
  const fields: Fields = {};
  if (prng.int(5) > 0) fields.p = prng.int(6) === 0 ? "x" : prng.int(5);
  if (prng.int(4) > 0) fields.d = prng.int(2) === 0;
  if (prng.int(4) > 0) fields.t = prng.pick(["a", "b", "c", "d"]);
  return fields;
}

function objectsOf(
  realm: LocalRealm,
  compiled: ReturnType<typeof compileQuery>,
) {
  return runQuery(compiled, realm.objects("T"));
}

Deno.test("Live queries: random local and remote transactions; every item's change set patches the previous result into the fresh query result, and silence means nothing changed", async () => {
  const seed = testSeed();
  const prng = new Prng(seed);
  const realm = await LocalRealm.open(new MemoryStorage(), () => 1_000);
  const engine = realm.queries;
  engine.ensureIndexes({ T: ["p", "d"] });
  const watched = watchAll(engine, "T", QUERIES);
  let serverVersion = 0;
  for (let step = 0; step < 300; step++) {
    const count = prng.int(5) === 0 ? 17 + prng.int(20) : 1 + prng.int(4);
    const ids = prng.shuffle(Array.from({ length: 40 }, (_, i) => `o${i}`))
      .slice(0, count);
    if (prng.int(2) === 0) {
      await writeRandomly(realm, ids, prng, randomFields);
    } else {
      const changesets: DownloadMessage["changesets"] = [];
      let rest = ids;
      while (rest.length > 0) {
        const batch = rest.slice(0, 1 + prng.int(rest.length));
        rest = rest.slice(batch.length);
        serverVersion++;
        changesets.push(serverChangeset(
          serverVersion,
          // Sometimes older than local writes, so some instructions lose.
          prng.int(3) === 0 ? 500 : 2_000 + step,
          batch.map((id): Instruction => {
            const roll = prng.int(4);
            return roll === 0
              ? { op: "delete", type: "T", id, fields: null, stamp: null }
              : {
                op: roll === 1 ? "update" : "put",
                type: "T",
                id,
                fields: randomFields(prng),
                stamp: null,
              };
          }),
        ));
      }
      await realm.integrate(download(serverVersion, changesets));
    }
    for (const entry of watched) {
      const label = `seed ${seed} step ${step} query ${
        JSON.stringify(entry.query)
      }`;
      const fresh = objectsOf(realm, entry.compiled);
      if (checkWatched(entry, fresh, label) === undefined) continue;
      // The index answers as a scan does.
      assert.deepEqual(
        engine.query("T", entry.compiled).map((e) => e.id),
        fresh.map((o) => o.id),
        label,
      );
    }
  }
  for (const entry of watched) entry.remove();
  assert.equal(engine.watchers, 0);
  await realm.close();
});

Deno.test("Live query: a modification that keeps the order is a modification; a reorder is a deletion plus an insertion", async () => {
  const realm = await LocalRealm.open(new MemoryStorage(), () => 1_000);
  await realm.write((tx) => {
    tx.put("T", "a", { p: 1 });
    tx.put("T", "b", { p: 2 });
    tx.put("T", "c", { p: 3 });
  });
  const items: LiveQueryUpdate[] = [];
  const { first, remove } = realm.queries.watch(
    "T",
    compileQuery({ sort: [["p", "asc"]] }),
    (snapshot) => items.push(materialize(snapshot)),
  );
  assert.deepEqual(materialize(first).changes, {
    insertions: [0, 1, 2],
    deletions: [],
    modifications: [],
  });
  await realm.write((tx) => tx.update("T", "b", { p: 2.5 }));
  assert.deepEqual(items.shift()!.changes, {
    insertions: [],
    deletions: [],
    modifications: [1],
  });
  await realm.write((tx) => tx.update("T", "a", { p: 9 }));
  const moved = items.shift()!;
  assert.deepEqual(moved.objects.map((o) => o.id), ["b", "c", "a"]);
  assert.deepEqual(moved.changes, {
    insertions: [2],
    deletions: [0],
    modifications: [],
  });
  await realm.write((tx) => tx.update("T", "c", { q: "other field" }));
  assert.deepEqual(items.shift()!.changes, {
    insertions: [],
    deletions: [],
    modifications: [1],
  });
  await realm.write((tx) => tx.put("U", "x", { p: 0 }));
  assert.equal(items.length, 0, "another type wakes nobody");
  remove();
  await realm.close();
});

Deno.test("Live query with a limit: an object leaving the window pulls the next one in", async () => {
  const realm = await LocalRealm.open(new MemoryStorage(), () => 1_000);
  await realm.write((tx) => {
    for (let i = 0; i < 5; i++) tx.put("T", `o${i}`, { p: i });
  });
  const items: LiveQueryUpdate[] = [];
  const { first, remove } = realm.queries.watch(
    "T",
    compileQuery({ sort: [["p", "asc"]], limit: 2 }),
    (snapshot) => items.push(materialize(snapshot)),
  );
  assert.deepEqual(materialize(first).objects.map((o) => o.id), ["o0", "o1"]);
  await realm.write((tx) => tx.delete("T", "o0"));
  assert.deepEqual(items[0]!.objects.map((o) => o.id), ["o1", "o2"]);
  assert.deepEqual(items[0]!.changes, {
    insertions: [1],
    deletions: [0],
    modifications: [],
  });
  await realm.write((tx) => tx.update("T", "o4", { p: 10 }));
  assert.equal(items.length, 1, "a change outside the window wakes nobody");
  remove();
  await realm.close();
});

Deno.test("Indexes: an indexed query examines only the candidates; indexes follow local and remote commits", async () => {
  const realm = await LocalRealm.open(new MemoryStorage(), () => 1_000);
  await realm.write((tx) => {
    for (let i = 0; i < 1_000; i++) {
      tx.put("Task", `t${i}`, {
        done: i % 100 === 0,
        owner: `u${i % 10}`,
        n: i,
      });
    }
  });
  const engine = realm.queries;
  engine.ensureIndexes({ Task: ["done", "owner", "n"] });
  const examine = (query: unknown) => {
    const before = engine.examined;
    const ids = engine.query("Task", compileQuery(query)).map((e) => e.id);
    return { ids, examined: engine.examined - before };
  };
  assert.deepEqual(
    examine({ where: { done: true, owner: "u0" } }).examined,
    10,
  );
  assert.equal(
    examine({ where: { owner: { in: ["u1", "u2"] } } }).examined,
    200,
  );
  const range = examine({ where: { n: { gte: 10, lt: 15 } } });
  assert.deepEqual(range.ids, ["t10", "t11", "t12", "t13", "t14"]);
  assert.equal(range.examined, 5);
  assert.equal(
    examine({ where: { $or: [{ done: true }] } }).examined,
    1_000,
    "no index under $or: a scan",
  );
  assert.equal(
    examine({ where: { title: "x" } }).examined,
    1_000,
    "no index on title: a scan",
  );
  // Local commit.
  await realm.write((tx) => {
    tx.update("Task", "t1", { done: true });
    tx.delete("Task", "t0");
  });
  assert.deepEqual(
    examine({ where: { done: true } }).ids.sort(),
    ["t1", ...Array.from({ length: 9 }, (_, i) => `t${(i + 1) * 100}`)].sort(),
  );
  // Remote commit.
  await realm.integrate(download(1, [{
    serverVersion: 1,
    stamp: { time: 5_000, counter: 0, node: 99 },
    instructions: [
      {
        op: "update",
        type: "Task",
        id: "t1",
        fields: { done: false },
        stamp: null,
      },
      {
        op: "put",
        type: "Task",
        id: "new",
        fields: { done: true, n: 12.5 },
        stamp: null,
      },
    ],
  }]));
  const done = examine({ where: { done: true } });
  assert.equal(done.ids.length, 10);
  assert.ok(done.ids.includes("new") && !done.ids.includes("t1"));
  assert.equal(done.examined, 10);
  assert.deepEqual(examine({ where: { n: { gt: 12, lte: 13 } } }).ids, [
    "new",
    "t13",
  ]);
  assert.deepEqual(examine({ where: { n: null } }).ids, [], "every task has n");
  await realm.close();
});

// Through the public API, over a real server.

Deno.test("realm.watch(): first item, local changes, a transaction outside the result wakes nobody, abort leaves nothing registered", async () => {
  await using server = await startTestServer();
  const client = await anonymousClient(server.url);
  try {
    await using realm = await client.user.openRealm({ path: "/~/todos" });
    type Task = { title: string; done: boolean };
    await realm.write((tx) =>
      tx.put("Task", "t1", { title: "b", done: false })
    );
    const controller = new AbortController();
    const stream = realm.watch<Task>("Task", {
      where: { done: false },
      sort: [["title", "asc"]],
      signal: controller.signal,
    });
    const reader = stream.getReader();
    const first = await reader.read();
    assert.deepEqual(first.value, {
      objects: [{ id: "t1", fields: { title: "b", done: false } }],
      changes: { insertions: [0], deletions: [], modifications: [] },
    });
    await realm.write((tx) => tx.put("Task", "t2", { title: "z", done: true }));
    await realm.write((tx) => tx.put("Other", "x", { done: false }));
    await realm.write((tx) =>
      tx.put("Task", "t3", { title: "a", done: false })
    );
    const second = await reader.read();
    assert.deepEqual(second.value!.objects.map((o) => o.id), ["t3", "t1"]);
    assert.deepEqual(second.value!.changes, {
      insertions: [0],
      deletions: [],
      modifications: [],
    });
    await realm.write((tx) => tx.update("Task", "t1", { done: true }));
    const third = await reader.read();
    assert.deepEqual(third.value!.changes, {
      insertions: [],
      deletions: [1],
      modifications: [],
    });
    assert.equal(realmQueryEngine(realm).watchers, 1);
    controller.abort();
    assert.deepEqual(await reader.read(), { done: true, value: undefined });
    assert.equal(realmQueryEngine(realm).watchers, 0);
    // An already-aborted signal: an empty stream, nothing registered.
    const none = realm.watch("Task", { signal: AbortSignal.abort() });
    assert.deepEqual(await none.getReader().read(), {
      done: true,
      value: undefined,
    });
    assert.equal(realmQueryEngine(realm).watchers, 0);
  } finally {
    await client.app.close();
  }
});

Deno.test("realm.watch() and watchObject(): break unregisters; closing the realm ends the streams", async () => {
  await using server = await startTestServer();
  const client = await anonymousClient(server.url);
  try {
    const realm = await client.user.openRealm({ path: "/~/todos" });
    const engine = realmQueryEngine(realm);
    for await (const _ of realm.watch("Task")) break;
    for await (const _ of realm.watchObject("Task", "t1")) break;
    assert.equal(engine.watchers, 0);
    const live = realm.watch("Task").getReader();
    const object = realm.watchObject("Task", "t1").getReader();
    await live.read();
    await object.read();
    assert.equal(engine.watchers, 2);
    await realm.close();
    assert.deepEqual(await live.read(), { done: true, value: undefined });
    assert.deepEqual(await object.read(), { done: true, value: undefined });
    assert.equal(engine.watchers, 0);
    assert.throws(() => realm.watch("Task"), TypeError);
    assert.throws(() => realm.objects("Task", {}), TypeError);
  } finally {
    await client.app.close();
  }
});

Deno.test("realm.watch(), watchObject() and changes(): closing one of two handles unregisters its streams at once, also with items left unread; the reader still gets them, then the end", async () => {
  await using server = await startTestServer();
  const client = await anonymousClient(server.url);
  try {
    const closing = await client.user.openRealm({ path: "/~/todos" });
    await using staying = await client.user.openRealm({ path: "/~/todos" });
    const engine = realmQueryEngine(staying);
    const local = realmLocal(staying);
    const live = closing.watch("Task").getReader();
    const object = closing.watchObject("Task", "t1").getReader();
    const changes = closing.changes().getReader();
    await closing.write((tx) => tx.put("Task", "t1", { n: 1 }));
    assert.equal(engine.watchers, 2);
    assert.equal(local.changeListeners, 1);
    await closing.close();
    // Nobody has read: the engine, which the other handle keeps, no
    // longer patches them on every commit, nor does a commit copy its
    // changes for the closed handle's changes().
    assert.equal(engine.watchers, 0);
    assert.equal(local.changeListeners, 0);
    await staying.write((tx) => tx.put("Task", "t2", { n: 2 }));
    assert.equal((await live.read()).value?.objects.length, 0);
    assert.deepEqual(
      (await live.read()).value?.objects.map((o) => o.id),
      ["t1"],
    );
    assert.deepEqual(await live.read(), { done: true, value: undefined });
    assert.equal((await object.read()).value?.fields, undefined);
    assert.deepEqual((await object.read()).value?.fields, { n: 1 });
    assert.deepEqual(await object.read(), { done: true, value: undefined });
    assert.deepEqual((await changes.read()).value?.changes.length, 1);
    assert.deepEqual(await changes.read(), { done: true, value: undefined });
  } finally {
    await client.app.close();
  }
});

Deno.test("realm.watch() errors with the session's error when the session fails, after the items already queued", async () => {
  await using server = await startTestServer();
  const owner = await anonymousClient(server.url);
  const other = await anonymousClient(server.url);
  try {
    await using forbidden = await other.user.openRealm({
      path: `/${owner.user.id}/secret`,
    });
    // Opened first: the failure reaches it before the one read below.
    const unread = forbidden.watch("T").getReader();
    const items: unknown[] = [];
    const failure = await (async () => {
      try {
        for await (
          const item of forbidden.watch("T", {
            signal: AbortSignal.timeout(5_000),
          })
        ) {
          items.push(item);
        }
      } catch (error) {
        return error;
      }
    })();
    assert.ok(
      failure instanceof SyncError && failure.code === "permission_denied",
      String(failure),
    );
    assert.equal(items.length, 1, "the current result came first");
    assert.equal(realmQueryEngine(forbidden).watchers, 0);
    // A stream nobody reads is unregistered by the failure all the same
    // (local commits go on), and keeps its item and the error.
    await forbidden.write((tx) => tx.put("T", "y", { n: 0 }));
    assert.equal(realmQueryEngine(forbidden).watchers, 0);
    assert.deepEqual((await unread.read()).value?.objects, []);
    await assert.rejects(unread.read(), (error) => error === failure);
    // The local data stays readable.
    await forbidden.write((tx) => tx.put("T", "x", { n: 1 }));
    assert.equal(forbidden.count("T", { where: { n: 1 } }), 1);
  } finally {
    await owner.app.close();
    await other.app.close();
  }
});

Deno.test("realm.watchObject(): current state first, then changed fields per transaction; undefined once deleted", async () => {
  await using server = await startTestServer();
  const client = await anonymousClient(server.url);
  try {
    await using realm = await client.user.openRealm({ path: "/~/todos" });
    const controller = new AbortController();
    const reader = realm.watchObject<{ title: string; done?: boolean }>(
      "Task",
      "t1",
      { signal: controller.signal },
    ).getReader();
    assert.deepEqual((await reader.read()).value, {
      id: "t1",
      fields: undefined,
      changedFields: [],
    });
    await realm.write((tx) =>
      tx.put("Task", "t1", { title: "a", done: false })
    );
    assert.deepEqual((await reader.read()).value, {
      id: "t1",
      fields: { title: "a", done: false },
      changedFields: ["done", "title"],
    });
    await realm.write((tx) => tx.put("Task", "t2", { title: "other" }));
    await realm.write((tx) => tx.update("Task", "t1", { title: "a" }));
    await realm.write((tx) => tx.put("Task", "t1", { title: "b" }));
    assert.deepEqual((await reader.read()).value, {
      id: "t1",
      fields: { title: "b" },
      changedFields: ["done", "title"],
    });
    await realm.write((tx) => tx.delete("Task", "t1"));
    assert.deepEqual((await reader.read()).value, {
      id: "t1",
      fields: undefined,
      changedFields: ["title"],
    });
    controller.abort();
    assert.equal((await reader.read()).done, true);
    await realm.write((tx) => tx.put("Task", "t9", { title: "x" }));
    const again = realm.watchObject("Task", "t9", {
      signal: AbortSignal.timeout(5_000),
    }).getReader();
    assert.deepEqual((await again.read()).value, {
      id: "t9",
      fields: { title: "x" },
      changedFields: ["title"],
    });
    await again.cancel();
  } finally {
    await client.app.close();
  }
});

Deno.test("realm.objects(type, query), count() and openRealm({ indexes }) through the public API; bad input throws TypeError", async () => {
  await using server = await startTestServer();
  const client = await anonymousClient(server.url);
  try {
    await assert.rejects(
      client.user.openRealm({
        path: "/~/x",
        indexes: { Task: "done" as unknown as string[] },
      }),
      /indexes\.Task must be an array/,
    );
    await using realm = await client.user.openRealm({
      path: "/~/todos",
      indexes: { Task: ["done"] },
    });
    type Task = { title: string; done: boolean; priority: number };
    await realm.write((tx) => {
      tx.put("Task", "t1", { title: "a", done: false, priority: 1 });
      tx.put("Task", "t2", { title: "b", done: false, priority: 3 });
      tx.put("Task", "t3", { title: "c", done: true, priority: 3 });
    });
    const engine = realmQueryEngine(realm);
    const before = engine.examined;
    const open: RealmObject<Task>[] = realm.objects<Task>("Task", {
      where: { done: false },
      sort: [["priority", "desc"]],
    });
    assert.deepEqual(open.map((t) => t.fields.title), ["b", "a"]);
    assert.equal(engine.examined - before, 2, "the done index was used");
    open[0]!.fields.title = "mutated copy";
    assert.equal(realm.get("Task", "t2")!.title, "b");
    assert.equal(realm.count("Task", { where: { priority: 3 } }), 2);
    assert.equal(realm.count("Task"), 3);
    assert.deepEqual(realm.objects("Task").map((o) => o.id), [
      "t1",
      "t2",
      "t3",
    ]);
    assert.throws(
      () =>
        realm.objects("Task", { where: { priority: { between: 1 } } } as never),
      /where\.priority\.between/,
    );
    assert.throws(
      () => realm.count("Task", { sort: [] } as never),
      /sort is not an option/,
    );
    assert.throws(() => realm.watch("Task", { limit: -1 }), /limit/);
    assert.throws(
      () => realm.watch("Task", { signal: "no" as never }),
      /signal must be an AbortSignal/,
    );
    assert.throws(
      () => realm.watchObject("Task", 5 as never),
      /id must be a string/,
    );
    assert.equal(engine.watchers, 0);
  } finally {
    await client.app.close();
  }
});

Deno.test("realm.objects<T>(type) without a query is typed and keeps its order", async () => {
  await using server = await startTestServer();
  const client = await anonymousClient(server.url);
  try {
    await using realm = await client.user.openRealm({ path: "/~/todos" });
    await realm.write((tx) => {
      tx.put("Task", "b", { title: "first" });
      tx.put("Task", "a", { title: "second" });
    });
    const all: RealmObject<{ title: string }>[] = realm.objects<
      { title: string }
    >("Task");
    assert.deepEqual(all.map((o) => o.fields.title), ["first", "second"]);
  } finally {
    await client.app.close();
  }
});
