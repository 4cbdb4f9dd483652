import assert from "node:assert/strict";
import { ChangesCompactedError } from "../../server.ts";
import { compactedRealm, fastApp, openClient } from "./_helpers.ts";
import { startTestServer } from "../_helpers/test_server.ts";
import { bounded } from "../_helpers/waits.ts";
import { countAbortListeners } from "../_helpers/abort_listeners.ts";
import { take } from "./_helpers.ts";

Deno.test("server.realm(): get, objects in the client's query language, write synced to a client", async () => {
  await using server = await startTestServer();
  await using client = await openClient(fastApp(server.url));
  const path = `/${client.user.id}/todos`;
  const todos = server.realm(path);
  assert.equal(todos.path, path);

  await client.realm.write((tx) => {
    tx.put("Task", "a", { title: "From a client", done: false, rank: 2 });
  });
  await client.session.waitForUpload({ signal: bounded() });

  const { version } = await todos.write((tx) => {
    tx.put("Task", "b", { title: "From the backend", done: false, rank: 1 });
    tx.put("Task", "c", { title: "Done", done: true, rank: 3 });
    tx.put("Note", "n", { text: "other type" });
  });
  assert.equal(version, 2);
  await client.session.waitForDownload({ signal: bounded() });
  assert.deepEqual(client.realm.get("Task", "b"), {
    title: "From the backend",
    done: false,
    rank: 1,
  });

  assert.deepEqual(await todos.get("Task", "a"), {
    title: "From a client",
    done: false,
    rank: 2,
  });
  assert.equal(await todos.get("Task", "missing"), undefined);
  const open = await todos.objects("Task", {
    where: { done: false },
    sort: [["rank", "asc"]],
  });
  assert.deepEqual(open.map(({ id }) => id), ["b", "a"]);
  const paged = await todos.objects("Task", {
    sort: [["rank", "desc"]],
    offset: 1,
    limit: 1,
  });
  assert.deepEqual(paged.map(({ id }) => id), ["a"]);
  assert.deepEqual(
    (await todos.objects("Task", { where: { rank: { eq: 3 } } })).map((o) =>
      o.id
    ),
    ["c"],
  );

  // The client's query language: ranges, combinators, bad parts named.
  assert.deepEqual(
    (await todos.objects("Task", {
      where: {
        $or: [{ rank: { gte: 3 } }, { title: { in: ["From a client"] } }],
      },
      sort: [["rank", "desc"]],
    })).map(({ id }) => id),
    ["c", "a"],
  );
  await assert.rejects(
    todos.objects("Task", { where: { rank: { between: 1 } } } as never),
    (error: unknown) =>
      error instanceof TypeError && /where\.rank\.between/.test(error.message),
  );

  await todos.write((tx) => tx.update("Task", "a", { done: true }));
  await todos.write((tx) => tx.delete("Task", "c"));
  assert.deepEqual(
    (await todos.objects("Task")).map(({ id }) => id).sort(),
    ["a", "b"],
  );
  assert.equal((await todos.get("Task", "a"))?.done, true);
});

Deno.test("server.realm().write() refuses what a realm cannot store and updates of missing objects", async () => {
  await using server = await startTestServer();
  const realm = server.realm("/backend/data");
  await assert.rejects(
    realm.write((tx) =>
      tx.put("Task", "x", { bad: (() => 1) as unknown as string })
    ),
    (error: unknown) =>
      error instanceof TypeError && /field "bad"/.test(error.message),
  );
  await assert.rejects(
    realm.write((tx) => tx.update("Task", "nobody", { done: true })),
    (error: unknown) =>
      error instanceof TypeError && /does not exist/.test(error.message),
  );
  assert.throws(() => server.realm("no-slash"), TypeError);
  assert.throws(() => server.realm("/~/todos"), TypeError);
  // Nothing was written.
  assert.deepEqual(await realm.objects("Task"), []);
});

Deno.test("server.realm().changes(): a consumer that restarts from its last version misses nothing and sees nothing twice", async () => {
  await using server = await startTestServer();
  await using client = await openClient(fastApp(server.url));
  const path = `/${client.user.id}/todos`;
  const realm = server.realm(path);

  // Writes from a client and from the backend, interleaved.
  for (let round = 0; round < 3; round++) {
    await client.realm.write((tx) => tx.put("Task", `c${round}`, { round }));
    await client.session.waitForUpload({ signal: bounded() });
    await realm.write((tx) => tx.put("Task", `s${round}`, { round }));
  }
  const first = await take(realm.changes({ since: 0, signal: bounded() }), 4);
  assert.deepEqual(first.map(({ version }) => version), [1, 2, 3, 4]);
  assert.deepEqual(first[0]!.changes, [
    { op: "put", type: "Task", id: "c0", fields: { round: 0 } },
  ]);
  assert.deepEqual(first[1]!.changes, [
    { op: "put", type: "Task", id: "s0", fields: { round: 0 } },
  ]);

  // Restart from the last version seen: the rest, then live.
  const controller = new AbortController();
  const feed = realm.changes({
    since: first.at(-1)!.version,
    signal: AbortSignal.any([controller.signal, bounded()]),
  });
  const seen: number[] = [];
  const reading = (async () => {
    for await (const { version, changes } of feed) {
      seen.push(version);
      if (changes.some((change) => change.id === "live")) controller.abort();
    }
  })();
  await client.realm.write((tx) => tx.delete("Task", "c0"));
  await client.session.waitForUpload({ signal: bounded() });
  await realm.write((tx) => tx.put("Task", "live", { round: 9 }));
  // The abort ends the feed without an error.
  await reading;
  assert.deepEqual(seen, [5, 6, 7, 8]);
});

Deno.test("server.realm().changes() from a compacted version errors with ChangesCompactedError", async () => {
  await using server = await startTestServer({
    history: { retainVersions: 0, snapshotLagVersions: 1 },
  });
  const realm = await compactedRealm(server, "/backend/log");
  const reader = realm.changes({ since: 0, signal: bounded() }).getReader();
  await assert.rejects(reader.read(), ChangesCompactedError);
  reader.releaseLock();
  // From the head on, the feed follows.
  const { version } = await realm.write((tx) => tx.put("Task", "z", {}));
  const items = await take(
    realm.changes({ since: version - 1, signal: bounded() }),
    1,
  );
  assert.equal(items[0]!.version, version);
});

Deno.test("server.realm().changes() leaves no listener on the caller's signal unread, or once the feed is cancelled, fails or ends", async () => {
  const server = await startTestServer({
    history: { retainVersions: 0, snapshotLagVersions: 1 },
  });
  try {
    const realm = await compactedRealm(server, "/backend/links");
    const { version } = await realm.write((tx) => tx.put("Task", "z", {}));

    // Never read: nothing is linked until the first read.
    const unread = bounded();
    const unreadListeners = countAbortListeners(unread);
    const idle = realm.changes({ since: version, signal: unread });
    assert.equal(unreadListeners.added, 0);
    await idle.cancel();
    assert.equal(unreadListeners(), 0);

    // Cancelled by its reader after one item.
    const cancelled = bounded();
    const cancelledListeners = countAbortListeners(cancelled);
    const items = await take(
      realm.changes({ since: version - 1, signal: cancelled }),
      1,
    );
    assert.equal(items[0]!.version, version);
    assert.equal(cancelledListeners(), 0);

    // Failed: its first version is compacted away.
    const failed = bounded();
    const failedListeners = countAbortListeners(failed);
    const reader = realm.changes({ since: 0, signal: failed }).getReader();
    await assert.rejects(reader.read(), ChangesCompactedError);
    reader.releaseLock();
    assert.equal(failedListeners(), 0);

    // Ended by the server's shutdown while it waits for a version.
    const ended = bounded();
    const endedListeners = countAbortListeners(ended);
    const waiting = realm.changes({ since: version, signal: ended })
      .getReader();
    const last = waiting.read();
    await server.shutdown();
    assert.deepEqual(await last, { done: true, value: undefined });
    assert.equal(endedListeners(), 0);
  } finally {
    await server.shutdown();
  }
});
