import assert from "node:assert/strict";
import type { RealmChange } from "../../src/client/local_realm.ts";
import { systemClock } from "../../src/util/clock.ts";
import { anonymousClient, collect } from "../_helpers/e2e.ts";
import { Prng, testSeed } from "../_helpers/prng.ts";
import { startTestServer } from "../_helpers/test_server.ts";

const shared = { permissions: () => "readwrite" as const };

Deno.test("Realm writes reach another client, and arrive there on realm.changes() as one remote item per transaction", async () => {
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
    });
    const controller = new AbortController();
    const changes = collect(realmB.changes({ signal: controller.signal }));
    const receipt = await realmA.write((tx) => {
      tx.put("Task", "1", { title: "Buy milk", done: false });
      tx.put("Task", "2", { title: "Call mum", done: false });
    });
    await receipt.waitForUpload({ signal: AbortSignal.timeout(5_000) });
    await realmB.syncSession.waitForDownload({
      signal: AbortSignal.timeout(5_000),
    });
    assert.deepEqual(realmB.get("Task", "1"), {
      title: "Buy milk",
      done: false,
    });
    await realmA.write((tx) => tx.update("Task", "1", { done: true }));
    await realmA.syncSession.waitForUpload({
      signal: AbortSignal.timeout(5_000),
    });
    await realmB.syncSession.waitForDownload({
      signal: AbortSignal.timeout(5_000),
    });
    controller.abort();
    const items: RealmChange[] = await changes;
    assert.deepEqual(items, [
      {
        origin: "remote",
        changes: [
          {
            type: "Task",
            id: "1",
            op: "put",
            fields: { title: "Buy milk", done: false },
          },
          {
            type: "Task",
            id: "2",
            op: "put",
            fields: { title: "Call mum", done: false },
          },
        ],
      },
      {
        origin: "remote",
        changes: [{
          type: "Task",
          id: "1",
          op: "update",
          fields: { done: true },
        }],
      },
    ]);
  } finally {
    await a.app.close();
    await b.app.close();
  }
});

Deno.test("Two clients converge under concurrent writes to the same fields (seeded)", async () => {
  const seed = testSeed();
  const random = new Prng(seed);
  await using server = await startTestServer(shared);
  const clients = [
    await anonymousClient(server.url),
    await anonymousClient(server.url),
  ];
  try {
    const realms = await Promise.all(
      clients.map((client) =>
        client.user.openRealm({ path: "/shared/race", waitForDownload: true })
      ),
    );
    const ids = ["a", "b", "c", "d"];
    for (let round = 0; round < 5; round++) {
      // Offline together, each writes conflicting values to the same fields,
      // then both come back at once.
      for (const realm of realms) realm.syncSession.pause();
      const writes: Promise<unknown>[] = [];
      for (let step = 0; step < 30; step++) {
        const index = random.int(2);
        const realm = realms[index]!;
        const id = random.pick(ids);
        const kind = random.int(10);
        writes.push(realm.write((tx) => {
          if (kind === 0) tx.delete("Doc", id);
          else if (kind < 4 || realm.get("Doc", id) === undefined) {
            tx.put("Doc", id, { title: `put ${index}.${step}`, n: step });
          } else {tx.update("Doc", id, {
              title: `update ${index}.${step}`,
              [`f${step % 3}`]: index,
            });}
        }));
      }
      await Promise.all(writes);
      for (const realm of realms) realm.syncSession.resume();
      for (const realm of realms) {
        await realm.syncSession.waitForUpload({
          signal: AbortSignal.timeout(5_000),
        });
      }
      for (const realm of realms) {
        await realm.syncSession.waitForDownload({
          signal: AbortSignal.timeout(5_000),
        });
      }
      const byId = (realm: typeof realms[number]) =>
        realm.objects("Doc").sort((x, y) => x.id < y.id ? -1 : 1);
      assert.deepEqual(
        byId(realms[0]!),
        byId(realms[1]!),
        `seed ${seed}, round ${round}`,
      );
    }
    for (const realm of realms) await realm.close();
  } finally {
    for (const client of clients) await client.app.close();
  }
});

Deno.test("Realm concurrent updates of one field: the later hybrid-logical-clock stamp wins on both sides", async () => {
  await using server = await startTestServer(shared);
  const a = await anonymousClient(server.url);
  // B's clock runs a second ahead, so its write is the later one.
  const b = await anonymousClient(server.url, {
    clock: { ...systemClock, now: () => Date.now() + 1_000 },
  });
  try {
    await using realmA = await a.user.openRealm({
      path: "/shared/lww",
      waitForDownload: true,
    });
    await using realmB = await b.user.openRealm({
      path: "/shared/lww",
      waitForDownload: true,
    });
    await realmA.write((tx) => tx.put("T", "x", { v: "base", other: 0 }));
    await realmA.syncSession.waitForUpload({
      signal: AbortSignal.timeout(5_000),
    });
    await realmB.syncSession.waitForDownload({
      signal: AbortSignal.timeout(5_000),
    });
    realmA.syncSession.pause();
    realmB.syncSession.pause();
    await realmA.write((tx) => tx.update("T", "x", { v: "from A" }));
    await realmB.write((tx) => tx.update("T", "x", { v: "from B", other: 2 }));
    realmA.syncSession.resume();
    realmB.syncSession.resume();
    for (const realm of [realmA, realmB]) {
      await realm.syncSession.waitForUpload({
        signal: AbortSignal.timeout(5_000),
      });
    }
    for (const realm of [realmA, realmB]) {
      await realm.syncSession.waitForDownload({
        signal: AbortSignal.timeout(5_000),
      });
    }
    assert.deepEqual(realmA.get("T", "x"), { v: "from B", other: 2 });
    assert.deepEqual(realmB.get("T", "x"), { v: "from B", other: 2 });
  } finally {
    await a.app.close();
    await b.app.close();
  }
});
