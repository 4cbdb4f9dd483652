// Conformance: the life of live-query streams through the public API
// (docs/CLIENT.md "Live queries"; DESIGN "Queries and live queries"): the
// stream as a JavaScript object (break, return(), a second iterator,
// readers), closing handles, logOut and App.close with streams open, many
// watchers on one realm with some aborted in a burst, watchers made inside
// a write, a loop body or a bootstrap, slow readers, option checks, and
// watchObject on objects that never exist or come back.

import assert from "node:assert/strict";
import { isDeepStrictEqual } from "node:util";
import {
  Credentials,
  type Fields,
  type LiveQueryUpdate,
  type ObjectUpdate,
  type Query,
  type Realm,
  type RealmObject,
  SyncError,
} from "../../mod.ts";
import {
  fastApp,
  proxiedClient,
  recordConnectionStates,
  replacer,
} from "./_helpers.ts";
import { Prng, testSeed } from "../_helpers/prng.ts";
import { startTestServer } from "../_helpers/test_server.ts";
import { bounded, readBounded } from "../_helpers/waits.ts";

type Row = RealmObject<Fields>;
type Update = LiveQueryUpdate<Fields>;

/** Every user may read and write every realm (two clients share one). */
const SHARED = { permissions: () => "readwrite" as const };

/** The next item of `reader`, which must exist. */
async function next<T>(
  reader: ReadableStreamDefaultReader<T>,
  what: string,
): Promise<T> {
  const { done, value } = await readBounded(reader);
  assert.ok(!done, `ended before ${what}`);
  return value;
}

/** Asserts that `reader` has ended (no item left). */
async function assertEnded<T>(
  reader: ReadableStreamDefaultReader<T>,
  what: string,
): Promise<void> {
  const result = await readBounded(reader);
  assert.ok(
    result.done,
    `${what}: an item where the stream should have ended: ${
      JSON.stringify(result.value, replacer)
    }`,
  );
}

/**
 * Patches `previous` with `item`'s change set as a UI would (deletions from
 * the highest, insertions from the lowest, modifications in place) and
 * asserts that this gives `item.objects`, that the item changed something,
 * and that its indexes ascend within bounds.
 */
function assertPatches(
  previous: readonly Row[],
  item: Update,
  label: string,
): void {
  const { objects, changes } = item;
  const check = (list: readonly number[], length: number, what: string) =>
    list.forEach((index, i) => {
      assert.ok(
        Number.isInteger(index) && index >= 0 && index < length,
        `${label}: ${what} ${index} out of [0, ${length})`,
      );
      if (i > 0) assert.ok(list[i - 1]! < index, `${label}: ${what} order`);
    });
  check(changes.deletions, previous.length, "deletion");
  check(changes.insertions, objects.length, "insertion");
  check(changes.modifications, objects.length, "modification");
  assert.ok(
    !isDeepStrictEqual(objects, previous),
    `${label}: an item that changes nothing`,
  );
  const rows = [...previous];
  for (let i = changes.deletions.length - 1; i >= 0; i--) {
    rows.splice(changes.deletions[i]!, 1);
  }
  for (const index of changes.insertions) {
    rows.splice(index, 0, objects[index]!);
  }
  for (const index of changes.modifications) {
    assert.equal(rows[index]?.id, objects[index]!.id, `${label}: modified id`);
    rows[index] = objects[index]!;
  }
  assert.deepEqual(
    rows,
    objects,
    `${label}: ${JSON.stringify(changes)} does not patch the previous result`,
  );
}

/** Asserts a first item: the result, every index inserted. */
function assertFirst(item: Update, expected: readonly Row[], label: string) {
  assert.deepEqual(item.objects, expected, `${label}: first item's result`);
  assert.deepEqual(item.changes, {
    insertions: expected.map((_, i) => i),
    deletions: [],
    modifications: [],
  }, `${label}: first item's changes`);
}

/** `states` without consecutive repeats. */
function distinct<T>(states: readonly T[]): T[] {
  const out: T[] = [];
  for (const state of states) {
    if (out.length === 0 || !isDeepStrictEqual(out.at(-1), state)) {
      out.push(state);
    }
  }
  return out;
}

Deno.test("Realm.watch() and watchObject() as JavaScript objects: ReadableStreams like changes(); break, iterator.return(), reader.cancel() and stream.cancel() detach them and the realm goes on; a second [Symbol.asyncIterator]() throws TypeError (locked) and a stream iterated again after a break ends at once, as changes() does; a released reader's successor and values({ preventCancel }) go on where the last read stopped", async () => {
  await using server = await startTestServer();
  await using app = fastApp(server.url);
  const user = await app.logIn(Credentials.anonymous());
  await using realm = await user.openRealm({ path: "/~/objects" });
  await realm.write((tx) => tx.put("T", "a", { n: 1 }));
  const byN: Query = { sort: [["n", "asc"]] };

  const streams = {
    watch: () => realm.watch("T", { ...byN, signal: bounded() }),
    watchObject: () => realm.watchObject("T", "a", { signal: bounded() }),
    changes: () => realm.changes({ signal: bounded() }),
  };
  for (const [name, make] of Object.entries(streams)) {
    const stream: ReadableStream<unknown> = make();
    assert.ok(stream instanceof ReadableStream, `${name}: a ReadableStream`);

    // break with items still queued: the stream is cancelled, and a
    // second loop over it ends at once.
    await realm.write((tx) => tx.update("T", "a", { n: 2 }));
    await realm.write((tx) => tx.update("T", "a", { n: 3 }));
    let seen = 0;
    for await (const _ of stream) {
      seen++;
      break;
    }
    assert.equal(seen, 1, name);
    assert.equal(stream.locked, false, `${name}: break releases the lock`);
    for await (const item of stream) {
      assert.fail(`${name}: an item after break: ${JSON.stringify(item)}`);
    }

    // A second iterator while the first holds the stream: TypeError.
    const held: ReadableStream<unknown> = make();
    const iterator = held[Symbol.asyncIterator]();
    assert.throws(() => held[Symbol.asyncIterator](), TypeError, name);
    assert.throws(() => held.getReader(), TypeError, name);
    // return() without a pending next(): done, and the stream cancelled.
    if (name !== "changes") {
      assert.equal((await iterator.next()).done, false, name);
    }
    assert.deepEqual(await iterator.return!(), {
      done: true,
      value: undefined,
    });
    assert.deepEqual(await iterator.next(), { done: true, value: undefined });
    for await (const _ of held) assert.fail(`${name}: an item after return`);

    // reader.cancel() with items queued, and cancel() never read.
    const cancelled = make().getReader();
    await realm.write((tx) => tx.update("T", "a", { n: 4 }));
    await reader_cancel(cancelled);
    await make().cancel();
    // cancel() while a read waits: the read ends.
    const waiting: ReadableStreamDefaultReader<unknown> = make().getReader();
    if (name !== "changes") await next(waiting, `${name}: first`);
    const read = waiting.read();
    await waiting.cancel();
    assert.deepEqual(await read, { done: true, value: undefined }, name);
  }

  // Aborted before the first read: the first item is dropped too.
  const early = new AbortController();
  const unread = realm.watch("T", { signal: early.signal }).getReader();
  const unreadObject = realm.watchObject("T", "a", { signal: early.signal })
    .getReader();
  early.abort();
  await assertEnded(unread, "aborted before the first read");
  await assertEnded(unreadObject, "aborted before the first read");

  // return() behind a pending next() waits for it (the ReadableStream
  // rule); aborting the signal ends both at once.
  const stop = new AbortController();
  const waiting = realm.watch("T", { signal: stop.signal })[
    Symbol.asyncIterator
  ]();
  assert.equal((await waiting.next()).done, false);
  const pending = waiting.next();
  const returned = waiting.return!();
  stop.abort();
  assert.deepEqual(await pending, { done: true, value: undefined });
  assert.deepEqual(await returned, { done: true, value: undefined });

  // A released reader's successor, and a loop that keeps the stream open
  // (preventCancel), go on where the last read stopped.
  const kept = realm.watch("T", { ...byN, signal: bounded() });
  const first = kept.getReader();
  let current = (await next(first, "the first item")).objects;
  first.releaseLock();
  await realm.write((tx) => tx.put("T", "b", { n: 0 }));
  for await (const item of kept.values({ preventCancel: true })) {
    assertPatches(current, item, "values({ preventCancel })");
    current = item.objects;
    break;
  }
  await realm.write((tx) => tx.delete("T", "a"));
  const second = kept.getReader();
  const item = await next(second, "the delete");
  assertPatches(current, item, "a second reader");
  assert.deepEqual(item.objects, realm.objects("T", byN));
  await second.cancel();

  // After every detach, the realm and new streams work as before.
  await realm.write((tx) => tx.put("T", "c", { n: 5 }));
  const fresh = realm.watch("T", { ...byN, signal: bounded() }).getReader();
  assertFirst(
    await next(fresh, "a fresh first item"),
    realm.objects("T", byN),
    "fresh",
  );
  const before = realm.objects("T", byN);
  await realm.write((tx) => tx.update("T", "c", { n: -1 }));
  const moved = await next(fresh, "a move");
  assertPatches(before, moved, "fresh");
  assert.deepEqual(moved.objects, realm.objects("T", byN));
  await fresh.cancel();
});

/** Cancels `reader`, then checks that it reads as ended. */
async function reader_cancel(
  reader: ReadableStreamDefaultReader<unknown>,
): Promise<void> {
  await reader.cancel();
  assert.deepEqual(await reader.read(), { done: true, value: undefined });
}

Deno.test("Realm.close() with live streams open on two handles of one path: the closed handle's watch(), watchObject() and changes() give the items queued before the close, then end (no error; a pending read ends too) and never see a later write; the other handle's streams go on; user.logOut() and App.close() end theirs the same way", async () => {
  await using server = await startTestServer();
  await using app = fastApp(server.url);
  const user = await app.logIn(Credentials.anonymous());
  const path = "/~/close";
  const a = await user.openRealm({ path });
  const b = await user.openRealm({ path });
  const byN: Query = { sort: [["n", "asc"]] };
  await a.write((tx) => tx.put("T", "x", { n: 0 }));

  const onA = {
    watch: a.watch("T", byN).getReader(),
    object: a.watchObject("T", "x").getReader(),
    changes: a.changes().getReader(),
    // Waits for an item that never comes: the close ends the read.
    idle: a.watch("Other").getReader(),
  };
  const onB = {
    watch: b.watch("T", { ...byN, signal: bounded(20_000) }).getReader(),
    object: b.watchObject("T", "x", { signal: bounded(20_000) }).getReader(),
  };
  let aCurrent = (await next(onA.watch, "A's first")).objects;
  let bCurrent = (await next(onB.watch, "B's first")).objects;
  await next(onA.object, "A's object first");
  await next(onB.object, "B's object first");
  await next(onA.idle, "the idle first");
  const idleRead = readBounded(onA.idle);

  // Three transactions nobody on A reads before the close.
  const states: Row[][] = [];
  for (let n = 1; n <= 3; n++) {
    await a.write((tx) => tx.update("T", "x", { n }));
    states.push(a.objects("T", byN));
  }
  await a.close();
  assert.equal(a.isClosed, true);
  assert.equal(b.isClosed, false);
  assert.throws(() => a.watch("T"), TypeError);
  assert.throws(() => a.watchObject("T", "x"), TypeError);
  assert.throws(() => a.changes(), TypeError);
  assert.deepEqual(await idleRead, { done: true, value: undefined });
  // A write through the other handle after the close.
  await b.write((tx) => tx.update("T", "x", { n: 4 }));

  for (const [n, state] of states.entries()) {
    const item = await next(onA.watch, `A's item ${n + 1}`);
    assertPatches(aCurrent, item, `A item ${n + 1}`);
    assert.deepEqual(item.objects, state);
    aCurrent = item.objects;
    assert.equal((await next(onA.object, "A's object")).fields?.n, n + 1);
    const change = await next(onA.changes, "A's change");
    assert.deepEqual(change.changes[0]?.fields, { n: n + 1 });
  }
  await assertEnded(onA.watch, "A's watch after the close");
  await assertEnded(onA.object, "A's watchObject after the close");
  await assertEnded(onA.changes, "A's changes() after the close");

  // B saw all four, and goes on.
  for (let n = 1; n <= 4; n++) {
    const item = await next(onB.watch, `B's item ${n}`);
    assertPatches(bCurrent, item, `B item ${n}`);
    bCurrent = item.objects;
    assert.equal(item.objects[0]!.fields.n, n);
    assert.equal((await next(onB.object, "B's object")).fields?.n, n);
  }
  await b.write((tx) => tx.put("T", "y", { n: 9 }));
  const more = await next(onB.watch, "B after A closed");
  assertPatches(bCurrent, more, "B item 5");
  assert.deepEqual(more.objects, b.objects("T", byN));

  // A third handle on the path starts from the current result.
  const c = await user.openRealm({ path });
  const onC = c.watch("T", { ...byN, signal: bounded() }).getReader();
  assertFirst(await next(onC, "C's first"), b.objects("T", byN), "C");

  // logOut closes every handle: items queued first, then the end.
  await b.write((tx) => tx.delete("T", "x"));
  await user.logOut();
  assert.equal(b.isClosed, true);
  assert.equal(c.isClosed, true);
  assert.throws(() => b.watch("T"), TypeError);
  const deleted = await next(onB.watch, "B's delete");
  assertPatches(more.objects, deleted, "B's delete");
  assert.equal((await next(onB.object, "B's object delete")).fields, undefined);
  await assertEnded(onB.watch, "B's watch after logOut");
  await assertEnded(onB.object, "B's watchObject after logOut");
  assert.deepEqual(
    (await next(onC, "C's delete")).objects.map((o) => o.id),
    ["y"],
  );
  await assertEnded(onC, "C's watch after logOut");

  // App.close(): another user's realm, a read waiting, then the end.
  const other = await app.logIn(Credentials.anonymous());
  const d = await other.openRealm({ path });
  const onD = d.watch("T").getReader();
  const onDObject = d.watchObject("T", "x").getReader();
  await next(onD, "D's first");
  await next(onDObject, "D's object first");
  const waiting = readBounded(onD);
  await d.write((tx) => tx.put("T", "x", { n: 1 }));
  await app.close();
  assert.equal((await waiting).value?.objects.length, 1);
  assert.equal((await next(onDObject, "D's object")).fields?.n, 1);
  await assertEnded(onD, "D's watch after App.close()");
  await assertEnded(onDObject, "D's watchObject after App.close()");
});

/** A field set of the many-watchers workload. */
function manyFields(prng: Prng): Fields {
  const fields: Fields = {};
  if (prng.int(8) > 0) fields.g = prng.int(10);
  if (prng.int(8) > 0) fields.p = prng.int(20);
  fields.s = prng.pick(["a", "b", "c", "d", "e"]);
  return fields;
}

/** The k-th of the many watchers' queries (eight shapes, k varies them). */
function manyQuery(k: number): Query {
  const g = k % 10;
  switch (k % 8) {
    case 0:
      return { where: { g }, sort: [["p", "asc"]] };
    case 1:
      return {
        where: { p: { gte: k % 20 } },
        sort: [["p", "desc"], ["s", "asc"]],
        limit: 5,
      };
    case 2:
      return { sort: [["s", "asc"]], offset: k % 7, limit: 4 };
    case 3:
      return { where: { $or: [{ g }, { s: "b" }] } };
    case 4:
      return {
        where: { g: { in: [g, (g + 3) % 10] } },
        sort: [["s", "desc"]],
        limit: 3,
      };
    case 5:
      return {};
    case 6:
      return {
        where: { $not: { g } },
        sort: [["p", "asc"]],
        offset: 2,
        limit: 6,
      };
    default:
      // Matches nothing the workload writes: never an item after the first.
      return { where: { s: "z" } };
  }
}

Deno.test("Realm.watch() with 200 live queries on one realm and a burst of 40 unawaited transactions; half share one signal aborted inside the 20th transaction's callback: each of the others, read as items come or only after the burst (a slow reader), gets exactly one item per transaction that changed its result, each patching the item before it into realm.objects() with the same query at that moment; the aborted ones get a prefix of that ending before the 20th, then end", async () => {
  const seed = testSeed();
  try {
    await manyWatchers(new Prng(seed));
  } catch (error) {
    console.error(`live_query_lifecycle: TETHER_SEED=${seed}`);
    throw error;
  }
});

async function manyWatchers(prng: Prng): Promise<void> {
  await using server = await startTestServer();
  await using app = fastApp(server.url);
  const user = await app.logIn(Credentials.anonymous());
  const realm = await user.openRealm({
    path: "/~/many",
    // Refills of windowed results select through these.
    indexes: { T: ["g", "p"] },
  });
  const ids = Array.from({ length: 80 }, (_, i) => `o${i}`);
  await realm.write((tx) => {
    for (const id of ids.slice(0, 50)) tx.put("T", id, manyFields(prng));
  });
  const COUNT = 200;
  const queries = Array.from({ length: COUNT }, (_, k) => manyQuery(k));
  const shared = new AbortController();
  // Every query's result before each transaction, then after the last.
  const states: Row[][][] = queries.map((q) => [realm.objects("T", q)]);
  const aborted = (k: number) => k % 2 === 0;
  const eager = (k: number) => k % 4 < 2;
  const readers = queries.map((query, k) =>
    realm.watch("T", {
      ...query,
      ...(aborted(k) ? { signal: shared.signal } : {}),
    }).getReader()
  );
  // Received results per watcher, each item checked against the one before.
  const received: Row[][][] = queries.map(() => []);
  const take = (k: number, item: Update) => {
    const got = received[k]!;
    if (got.length === 0) assertFirst(item, states[k]![0]!, `watcher ${k}`);
    else assertPatches(got.at(-1)!, item, `watcher ${k} item ${got.length}`);
    got.push(item.objects);
  };
  // Eager readers follow as items come, until their stream ends.
  const loops = readers.map(async (reader, k) => {
    if (!eager(k)) return;
    for (;;) {
      const { done, value } = await readBounded(reader, bounded(30_000));
      if (done) return;
      take(k, value);
    }
  });
  // Slow readers read their first item only.
  for (const [k, reader] of readers.entries()) {
    if (!eager(k)) take(k, await next(reader, `watcher ${k}'s first`));
  }

  const BURST = 40;
  const ABORT_AT = 20;
  const writes: Promise<unknown>[] = [];
  for (let t = 0; t < BURST; t++) {
    writes.push(realm.write((tx) => {
      // Every earlier transaction is applied when this callback runs.
      queries.forEach((q, k) => {
        if (t > 0) states[k]!.push(realm.objects("T", q));
      });
      if (t === ABORT_AT) shared.abort(new Error("enough"));
      if (prng.int(8) === 0) {
        tx.put("U", prng.pick(ids), manyFields(prng));
        return;
      }
      const count = 1 + prng.int(prng.int(5) === 0 ? 12 : 3);
      const live = new Map<string, boolean>();
      for (let i = 0; i < count; i++) {
        const id = prng.pick(ids);
        const exists = live.get(id) ?? realm.get("T", id) !== undefined;
        const roll = prng.int(10);
        if (roll < 2) {
          tx.delete("T", id);
          live.set(id, false);
        } else if (roll < 6 && exists) {
          tx.update("T", id, manyFields(prng));
        } else if (roll === 6 && exists) {
          // The values it holds (changes nothing visible) unless an
          // earlier write of this transaction changed it.
          const fields = realm.get("T", id);
          if (fields !== undefined) tx.update("T", id, fields);
        } else {
          tx.put("T", id, manyFields(prng));
          live.set(id, true);
        }
      }
    }));
  }
  await Promise.all(writes);
  queries.forEach((q, k) => states[k]!.push(realm.objects("T", q)));
  // The slow readers read only now, all they were sent.
  for (const [k, reader] of readers.entries()) {
    if (eager(k)) continue;
    if (aborted(k)) {
      await assertEnded(reader, `slow watcher ${k}, aborted`);
      continue;
    }
    const expected = distinct(states[k]!).length;
    while (received[k]!.length < expected) {
      take(k, await next(reader, `slow watcher ${k}'s item`));
    }
  }
  // Closing the handle ends the rest after their unread items.
  await realm.close();
  await Promise.all(loops);
  for (const [k, reader] of readers.entries()) {
    if (!eager(k)) await assertEnded(reader, `slow watcher ${k}`);
  }

  for (let k = 0; k < COUNT; k++) {
    const label = `watcher ${k} (${JSON.stringify(queries[k])})`;
    if (!aborted(k)) {
      assert.deepEqual(
        received[k],
        distinct(states[k]!),
        `${label}: one item per transaction that changed the result`,
      );
      continue;
    }
    // states[k][t] is the result before transaction t: the aborted ones
    // saw at most the results up to the one before transaction ABORT_AT.
    const upToAbort = distinct(states[k]!.slice(0, ABORT_AT + 1));
    assert.ok(
      received[k]!.length <= upToAbort.length,
      `${label}: ${
        received[k]!.length
      } items, more than the ${upToAbort.length} before the abort`,
    );
    assert.deepEqual(
      received[k],
      upToAbort.slice(0, received[k]!.length),
      `${label}: a prefix of its results before the abort`,
    );
  }
  // Some results changed more than once, and some never did.
  const lengths = received.filter((_, k) => !aborted(k)).map((r) => r.length);
  assert.ok(lengths.some((n) => n > 3), `changing results: ${lengths}`);
  assert.ok(lengths.some((n) => n === 1), `still results: ${lengths}`);
}

Deno.test("Realm.watch() and watchObject() made inside a realm.write() callback (also an async one) start from the result before that transaction, whose item comes next; a watch() made inside another watch()'s loop body starts from the result that loop is at, and both follow later transactions", async () => {
  await using server = await startTestServer();
  await using app = fastApp(server.url);
  const user = await app.logIn(Credentials.anonymous());
  await using realm = await user.openRealm({ path: "/~/inside" });
  const byN: Query = { where: { n: { gte: 0 } }, sort: [["n", "asc"]] };
  await realm.write((tx) => tx.put("T", "a", { n: 1 }));

  let inner: ReadableStreamDefaultReader<Update> | undefined;
  let innerObject: ReadableStreamDefaultReader<ObjectUpdate> | undefined;
  const before = realm.objects("T", byN);
  await realm.write((tx) => {
    tx.put("T", "b", { n: 0 });
    inner = realm.watch("T", { ...byN, signal: bounded() }).getReader();
    innerObject = realm.watchObject("T", "b", { signal: bounded() })
      .getReader();
    tx.update("T", "a", { n: 2 });
  });
  assertFirst(await next(inner!, "the first item"), before, "in write");
  assert.deepEqual(await next(innerObject!, "the object's first"), {
    id: "b",
    fields: undefined,
    changedFields: [],
  });
  const item = await next(inner!, "the transaction's item");
  assertPatches(before, item, "in write");
  assert.deepEqual(item.objects, realm.objects("T", byN));
  assert.deepEqual(await next(innerObject!, "b created"), {
    id: "b",
    fields: { n: 0 },
    changedFields: ["n"],
  });
  await inner!.cancel();
  await innerObject!.cancel();

  // An async callback that makes the watcher after an await.
  let later: ReadableStreamDefaultReader<Update> | undefined;
  const beforeAsync = realm.objects("T", byN);
  await realm.write(async (tx) => {
    tx.delete("T", "a");
    await Promise.resolve();
    later = realm.watch("T", { ...byN, signal: bounded() }).getReader();
  });
  assertFirst(await next(later!, "the first item"), beforeAsync, "async");
  const deleted = await next(later!, "the delete");
  assertPatches(beforeAsync, deleted, "async");
  assert.deepEqual(deleted.objects, realm.objects("T", byN));
  await later!.cancel();

  // From inside a loop body: the outer loop writes, then opens a second
  // watch, which starts where the outer one is.
  const stop = new AbortController();
  let innerLoop: ReadableStreamDefaultReader<Update> | undefined;
  let innerCurrent: readonly Row[] = [];
  let outerCurrent: readonly Row[] = [];
  let round = 0;
  for await (
    const update of realm.watch("T", { ...byN, signal: stop.signal })
  ) {
    if (round > 0) assertPatches(outerCurrent, update, `outer ${round}`);
    outerCurrent = update.objects;
    assert.deepEqual(update.objects, realm.objects("T", byN), `outer ${round}`);
    round++;
    if (round === 1) {
      await realm.write((tx) => tx.put("T", "c", { n: 5 }));
    } else if (round === 2) {
      innerLoop = realm.watch("T", { ...byN, signal: bounded() }).getReader();
      const first = await next(innerLoop, "the inner first");
      assertFirst(first, update.objects, "inner");
      innerCurrent = first.objects;
      await realm.write((tx) => tx.update("T", "b", { n: 9 }));
    } else {
      const again = await next(innerLoop!, "the inner second");
      assertPatches(innerCurrent, again, "inner");
      assert.deepEqual(again.objects, update.objects);
      stop.abort();
    }
  }
  assert.equal(round, 3);
  await innerLoop!.cancel();
});

Deno.test("Realm.watch() during a bootstrap of 60 DOWNLOADs: a watch made at open, one made from its loop body once part of the data is in, and a slow one read only after the download each get items that patch the item before them, and end at the server's objects", async () => {
  await using server = await startTestServer({
    ...SHARED,
    downloadBatchBytes: 1024,
  });
  const path = "/shared/bootstrap-lifecycle";
  const serverRealm = server.realm(path);
  const total = 1_200;
  for (let start = 0; start < total; start += 20) {
    await serverRealm.write((tx) => {
      for (let n = start; n < start + 20; n++) {
        tx.put("T", `i${String(n).padStart(4, "0")}`, { n, g: n % 3 });
      }
    });
  }
  await using app = fastApp(server.url);
  const user = await app.logIn(Credentials.anonymous());
  await using realm = await user.openRealm({ path });
  const query: Query = { where: { g: { ne: 1 } }, sort: [["n", "desc"]] };
  const windowed: Query = { sort: [["n", "asc"]], offset: 10, limit: 25 };
  const slow = realm.watch("T", { ...windowed, signal: bounded(20_000) })
    .getReader();
  const slowFirst = await next(slow, "the slow first");

  const stop = new AbortController();
  let current: readonly Row[] = [];
  let items = 0;
  let second: Promise<{ items: number; countAtStart: number }> | undefined;
  const download = realm.syncSession.waitForDownload({
    signal: bounded(20_000),
  });
  // The loop ends once the download is in and it has read the last item
  // (an abort would drop an item not yet read).
  let downloaded = false;
  const complete = () =>
    downloaded && isDeepStrictEqual(current, realm.objects("T", query));
  const ended = download.then(() => {
    downloaded = true;
    if (complete()) stop.abort();
  });
  for await (
    const update of realm.watch("T", { ...query, signal: stop.signal })
  ) {
    if (items > 0) assertPatches(current, update, `at open, item ${items}`);
    current = update.objects;
    items++;
    if (second === undefined && current.length > 0) {
      second = followToEnd(realm, query, download);
      // Awaited below; a failure meanwhile must not go unhandled.
      second.catch(() => {});
    }
    if (complete()) break;
  }
  await ended;
  const expected = realm.objects("T", query);
  assert.equal(expected.length, 800);
  assert.deepEqual(current, expected, "the watch made at open ends complete");
  const inner = await second!;
  assert.ok(
    inner.countAtStart < total,
    `made while ${inner.countAtStart} of ${total} objects were in`,
  );
  assert.ok(items > 2 && inner.items > 1, `items: ${items}, ${inner.items}`);

  // The slow reader: every item queued, each a patch of the one before.
  let slowCurrent = slowFirst.objects;
  const final = realm.objects("T", windowed);
  while (!isDeepStrictEqual(slowCurrent, final)) {
    const update = await next(slow, "a slow item");
    assertPatches(slowCurrent, update, "slow");
    slowCurrent = update.objects;
  }
  await slow.cancel();
});

/**
 * Follows `query` on `realm` from now until `download` resolves, checking
 * each item; returns how many there were and how many objects of the type
 * the realm held at the start.
 */
async function followToEnd(
  realm: Realm,
  query: Query,
  download: Promise<void>,
): Promise<{ items: number; countAtStart: number }> {
  const countAtStart = realm.count("T");
  // The first item is the result now (later DOWNLOADs may come before it
  // is read).
  const now = realm.objects("T", query);
  const reader = realm.watch("T", { ...query, signal: bounded(20_000) })
    .getReader();
  let current = (await next(reader, "the inner first")).objects;
  assert.deepEqual(current, now);
  let items = 1;
  await download;
  const final = realm.objects("T", query);
  while (!isDeepStrictEqual(current, final)) {
    const update = await next(reader, "an inner item");
    assertPatches(current, update, `inner item ${items}`);
    current = update.objects;
    items++;
  }
  await reader.cancel();
  return { items, countAtStart };
}

Deno.test("Realm.watch() and watchObject() options: an unknown key, a signal that is not an AbortSignal, a bad limit or offset, a query or options that are not a plain object, and a bad type or id throw a TypeError naming the part, before the signal is looked at; limit 0 and an offset past the end are accepted (an empty window that no write wakes, a window that fills as objects come)", async () => {
  await using server = await startTestServer();
  await using app = fastApp(server.url);
  const user = await app.logIn(Credentials.anonymous());
  const realm = await user.openRealm({ path: "/~/options" });
  const bad = (options: unknown) => options as never;
  const cases: [string, () => unknown, RegExp][] = [
    ["unknown key", () => realm.watch("T", bad({ filter: {} })), /filter/],
    [
      "unknown key with an aborted signal",
      () => realm.watch("T", bad({ lmit: 1, signal: AbortSignal.abort() })),
      /lmit/,
    ],
    ["signal string", () => realm.watch("T", bad({ signal: "x" })), /signal/],
    ["signal null", () => realm.watch("T", bad({ signal: null })), /signal/],
    [
      "signal look-alike",
      () =>
        realm.watch(
          "T",
          bad({ signal: { aborted: false, addEventListener() {} } }),
        ),
      /signal/,
    ],
    ["limit -1", () => realm.watch("T", { limit: -1 }), /limit/],
    ["limit 1.5", () => realm.watch("T", { limit: 1.5 }), /limit/],
    ["limit NaN", () => realm.watch("T", { limit: NaN }), /limit/],
    ["limit Infinity", () => realm.watch("T", { limit: Infinity }), /limit/],
    ["limit string", () => realm.watch("T", bad({ limit: "2" })), /limit/],
    ["offset -1", () => realm.watch("T", { offset: -1 }), /offset/],
    ["offset string", () => realm.watch("T", bad({ offset: "1" })), /offset/],
    ["options null", () => realm.watch("T", bad(null)), /plain object/],
    ["options array", () => realm.watch("T", bad([])), /plain object/],
    ["options function", () => realm.watch("T", bad(() => {})), /plain/],
    ["type", () => realm.watch(bad(1)), /type/],
    [
      "where undefined",
      () => realm.watch("T", bad({ where: { n: undefined } })),
      /where\.n/,
    ],
    [
      "sort direction",
      () => realm.watch("T", bad({ sort: [["n", "up"]] })),
      /sort\[0\]\[1\]/,
    ],
    [
      "watchObject unknown key",
      () => realm.watchObject("T", "a", bad({ where: {} })),
      /where/,
    ],
    [
      "watchObject signal",
      () => realm.watchObject("T", "a", bad({ signal: 1 })),
      /^Invalid options: signal/,
    ],
    [
      "watchObject options array",
      () => realm.watchObject("T", "a", bad([])),
      /plain object/,
    ],
    ["watchObject id", () => realm.watchObject("T", bad(5)), /id/],
    ["watchObject type", () => realm.watchObject(bad(null), "a"), /type/],
  ];
  for (const [what, call, part] of cases) {
    assert.throws(call, (error) => {
      assert.ok(error instanceof TypeError, `${what}: ${error}`);
      assert.match(error.message, part, what);
      return true;
    }, what);
  }

  // limit 0: an empty window, first and last; offset past the end: empty,
  // then filled by later objects.
  const empty = realm.watch("T", { sort: [["n", "asc"]], limit: 0 })
    .getReader();
  const far = realm.watch("T", { sort: [["n", "asc"]], offset: 2 })
    .getReader();
  assertFirst(await next(empty, "limit 0"), [], "limit 0");
  assertFirst(await next(far, "offset 2"), [], "offset 2");
  for (let n = 0; n < 4; n++) {
    await realm.write((tx) => tx.put("T", `o${n}`, { n }));
  }
  let current: readonly Row[] = [];
  for (const expected of [[2], [2, 3]]) {
    const item = await next(far, "a fuller window");
    assertPatches(current, item, "offset 2");
    assert.deepEqual(item.objects.map((o) => o.fields.n), expected);
    current = item.objects;
  }
  await realm.close();
  await assertEnded(empty, "limit 0 (no write changes an empty window)");
  await assertEnded(far, "offset 2");
});

Deno.test("Realm.watchObject() on an object that never exists hears nothing until it is created; deleted and re-created in one transaction it is one item naming the fields that differ (none when the values are the same: no item), in two transactions an item each; the same from another client, and a remote put-then-delete of an object that never existed is silent", async () => {
  await using server = await startTestServer(SHARED);
  const path = "/shared/recreate";
  await using appA = fastApp(server.url);
  await using appB = fastApp(server.url);
  const a = await appA.logIn(Credentials.anonymous()).then((user) =>
    user.openRealm({ path, waitForDownload: true, signal: bounded() })
  );
  const b = await appB.logIn(Credentials.anonymous()).then((user) =>
    user.openRealm({ path, waitForDownload: true, signal: bounded() })
  );
  const ghost = a.watchObject("T", "ghost", { signal: bounded(20_000) })
    .getReader();
  const x = a.watchObject("T", "x", { signal: bounded(20_000) }).getReader();
  const list = a.watch("T", { sort: [["k", "asc"]], signal: bounded(20_000) })
    .getReader();
  assert.deepEqual(await next(ghost, "ghost first"), {
    id: "ghost",
    fields: undefined,
    changedFields: [],
  });
  await next(x, "x first");
  let current = (await next(list, "list first")).objects;
  const expectList = async (what: string) => {
    const item = await next(list, what);
    assertPatches(current, item, what);
    assert.deepEqual(item.objects, a.objects("T", { sort: [["k", "asc"]] }));
    current = item.objects;
    return item;
  };
  const expectX = async (
    fields: Fields | undefined,
    changedFields: string[],
    what: string,
  ) =>
    assert.deepEqual(
      await next(x, what),
      { id: "x", fields, changedFields },
      what,
    );

  // Nothing about the ghost: other ids, another type, deletes of nothing.
  await a.write((tx) => {
    tx.put("T", "x", { k: 1, a: 1, b: 2 });
    tx.put("U", "ghost", { k: 0 });
    tx.delete("T", "ghost");
  });
  await a.write((tx) => {
    tx.put("T", "ghost", { k: 9 });
    tx.delete("T", "ghost");
  });
  await expectX({ k: 1, a: 1, b: 2 }, ["a", "b", "k"], "x created");
  await expectList("x created");

  // Deleted and re-created with the same values in one transaction: no
  // change, no item; with other values: one item naming the differences.
  await a.write((tx) => {
    tx.delete("T", "x");
    tx.put("T", "x", { b: 2, a: 1, k: 1 });
  });
  await a.write((tx) => {
    tx.delete("T", "x");
    tx.put("T", "x", { k: 1, b: 2, c: 3 });
  });
  await expectX({ k: 1, b: 2, c: 3 }, ["a", "c"], "re-created, other values");
  assert.deepEqual(
    (await expectList("re-created")).changes,
    { insertions: [], deletions: [], modifications: [0] },
  );
  // In two transactions: an item each.
  await a.write((tx) => tx.delete("T", "x"));
  await expectX(undefined, ["b", "c", "k"], "deleted");
  await expectList("deleted");
  await a.write((tx) => tx.put("T", "x", { k: 1, b: 2, c: 3 }));
  await expectX({ k: 1, b: 2, c: 3 }, ["b", "c", "k"], "back");
  await expectList("back");

  // From the other client, each transaction downloaded before the next.
  const remote = async (write: Parameters<Realm["write"]>[0]) => {
    await a.syncSession.waitForUpload({ signal: bounded() });
    await b.syncSession.waitForDownload({ signal: bounded() });
    await (await b.write(write)).waitForUpload({ signal: bounded() });
    await a.syncSession.waitForDownload({ signal: bounded() });
  };
  await remote((tx) => {
    tx.delete("T", "x");
    tx.put("T", "x", { k: 1, b: 2, c: 3 });
  });
  await remote((tx) => {
    tx.put("T", "ghost", { k: 5 });
    tx.delete("T", "ghost");
  });
  await remote((tx) => {
    tx.delete("T", "x");
    tx.put("T", "x", { k: 1, d: 4 });
  });
  await expectX({ k: 1, d: 4 }, ["b", "c", "d"], "remote re-creation");
  await expectList("remote re-creation");
  await remote((tx) => tx.delete("T", "x"));
  await expectX(undefined, ["d", "k"], "remote delete");
  await expectList("remote delete");
  // The ghost's first news is its creation.
  await remote((tx) => tx.put("T", "ghost", { k: 7 }));
  assert.deepEqual(await next(ghost, "ghost created"), {
    id: "ghost",
    fields: { k: 7 },
    changedFields: ["k"],
  });
  await expectList("ghost created");
  await a.close();
  await b.close();
  await assertEnded(ghost, "ghost");
  await assertEnded(x, "x");
  await assertEnded(list, "list");
});

Deno.test("Realm.watch() and watchObject() when the session gives up reconnecting (reconnect.maxAttempts): the items queued before come first, then the session's error; local writes go on, and a stream opened afterwards gives the current result, then the same error", async () => {
  await using client = await proxiedClient({
    app: { reconnect: { minDelayMs: 1, maxDelayMs: 5, maxAttempts: 2 } },
    path: "/~/gave-up",
  });
  const { proxy, realm, session } = client;
  const byN: Query = { sort: [["n", "asc"]] };
  const live = realm.watch("T", { ...byN, signal: bounded() }).getReader();
  const object = realm.watchObject("T", "x", { signal: bounded() })
    .getReader();
  const changes = realm.changes({ signal: bounded() }).getReader();
  const first = await next(live, "the first item");
  await next(object, "the object's first item");
  // Queued, unread, before the connection is lost for good.
  await realm.write((tx) => tx.put("T", "x", { n: 1 }));
  await using states = recordConnectionStates(session);
  proxy.mode = "refuse";
  proxy.dropAll();
  await states.finished();
  const error = session.error;
  assert.ok(
    error instanceof SyncError && error.code === "reconnect_gave_up",
    String(error),
  );
  const isError = (thrown: unknown) => thrown === error;
  const queued = await next(live, "the write before the failure");
  assertPatches(first.objects, queued, "before the failure");
  assert.deepEqual((await next(object, "x created")).fields, { n: 1 });
  await assert.rejects(readBounded(live), isError);
  await assert.rejects(readBounded(object), isError);

  // The local realm is still writable; changes() goes on (it does not
  // end on a sync error), new live streams report the error after the
  // current result.
  await realm.write((tx) => tx.update("T", "x", { n: 2 }));
  assert.equal((await next(changes, "the first write")).origin, "local");
  assert.deepEqual(
    (await next(changes, "the write after")).changes[0]?.fields,
    { n: 2 },
  );
  const late = realm.watch("T", { ...byN, signal: bounded() }).getReader();
  assertFirst(await next(late, "late first"), realm.objects("T", byN), "late");
  await assert.rejects(readBounded(late), isError);
  const lateObject = realm.watchObject("T", "x", { signal: bounded() })
    .getReader();
  assert.deepEqual((await next(lateObject, "late object")).fields, { n: 2 });
  await assert.rejects(readBounded(lateObject), isError);
  await changes.cancel();
});

Deno.test("Realm.watch() with 100 live queries following another client's burst of 30 transactions, half sharing one signal aborted once the reader has integrated part of the burst: every item patches the one before it into a result the writer went through after it, the others end at the writer's last result, the aborted ones stop where they were", async () => {
  const seed = testSeed();
  try {
    await remoteWatchers(new Prng(seed));
  } catch (error) {
    console.error(`live_query_lifecycle remote: TETHER_SEED=${seed}`);
    throw error;
  }
});

async function remoteWatchers(prng: Prng): Promise<void> {
  await using server = await startTestServer(SHARED);
  const path = "/shared/many-remote";
  await using writerApp = fastApp(server.url);
  await using readerApp = fastApp(server.url);
  const open = (app: typeof writerApp) =>
    app.logIn(Credentials.anonymous()).then((user) =>
      user.openRealm({ path, waitForDownload: true, signal: bounded() })
    );
  const writer = await open(writerApp);
  const reader = await open(readerApp);
  const ids = Array.from({ length: 60 }, (_, i) => `o${i}`);
  await (await writer.write((tx) => {
    for (const id of ids.slice(0, 40)) tx.put("T", id, manyFields(prng));
  })).waitForUpload({ signal: bounded() });
  await reader.syncSession.waitForDownload({ signal: bounded() });

  const COUNT = 100;
  const queries = Array.from({ length: COUNT }, (_, k) => manyQuery(k + 1));
  const states: Row[][][] = queries.map((q) => [writer.objects("T", q)]);
  const shared = new AbortController();
  const aborted = (k: number) => k % 2 === 0;
  const received: Row[][][] = queries.map(() => []);
  // Where each watcher is in its query's history.
  const at: number[] = queries.map(() => 0);
  const loops = queries.map(async (query, k) => {
    const stream = reader.watch("T", {
      ...query,
      ...(aborted(k) ? { signal: shared.signal } : {}),
    }).getReader();
    for (;;) {
      const { done, value } = await readBounded(stream, bounded(30_000));
      if (done) return;
      const got = received[k]!;
      const label = `watcher ${k} item ${got.length}`;
      if (got.length === 0) {
        assertFirst(value, states[k]![0]!, label);
      } else {
        assertPatches(got.at(-1)!, value, label);
        // A later result of the writer's (several of its transactions may
        // come in one DOWNLOAD, which is one item).
        const history = distinct(states[k]!);
        let match = at[k]! + 1;
        while (
          match < history.length &&
          !isDeepStrictEqual(value.objects, history[match])
        ) match++;
        assert.ok(
          match < history.length,
          `${label}: not a later result of the writer's`,
        );
        at[k] = match;
      }
      got.push(value.objects);
    }
  });
  // The abort comes with the reader's fifth remote transaction.
  const abortAfter = (async () => {
    const changes = reader.changes({ signal: bounded(30_000) }).getReader();
    for (let seen = 0; seen < 5;) {
      const { done, value } = await readBounded(changes, bounded(30_000));
      if (done) break;
      if (value.origin === "remote") seen++;
    }
    shared.abort();
    await changes.cancel();
  })();

  const BURST = 30;
  const writes: Promise<unknown>[] = [];
  for (let t = 0; t < BURST; t++) {
    writes.push(writer.write((tx) => {
      if (t > 0) {
        queries.forEach((q, k) => states[k]!.push(writer.objects("T", q)));
      }
      for (let i = 1 + prng.int(4); i > 0; i--) {
        const id = prng.pick(ids);
        if (prng.int(5) === 0) tx.delete("T", id);
        else tx.put("T", id, manyFields(prng));
      }
    }));
  }
  await Promise.all(writes);
  queries.forEach((q, k) => states[k]!.push(writer.objects("T", q)));
  await writer.syncSession.waitForUpload({ signal: bounded(20_000) });
  await reader.syncSession.waitForDownload({ signal: bounded(20_000) });
  await abortAfter;
  // Closing the reader's handle ends the streams after their unread items.
  await reader.close();
  await Promise.all(loops);
  await writer.close();
  for (let k = 0; k < COUNT; k++) {
    if (aborted(k)) continue;
    assert.deepEqual(
      received[k]!.at(-1),
      states[k]!.at(-1),
      `watcher ${k}: ends at the writer's last result`,
    );
  }
}

/**
 * A signal that counts the abort listeners added to it and not removed:
 * what a stream leaves registered on the caller's signal.
 */
function countingSignal(): { signal: AbortSignal; listeners: () => number } {
  const signal = new AbortController().signal;
  const live = new Set<unknown>();
  const add = signal.addEventListener.bind(signal);
  const remove = signal.removeEventListener.bind(signal);
  Object.assign(signal, {
    addEventListener(type: string, listener: unknown, options?: unknown) {
      if (type === "abort") live.add(listener);
      add(type, listener as EventListener, options as AddEventListenerOptions);
    },
    removeEventListener(type: string, listener: unknown, options?: unknown) {
      if (type === "abort") live.delete(listener);
      remove(type, listener as EventListener, options as EventListenerOptions);
    },
  });
  return { signal, listeners: () => live.size };
}

Deno.test("Realm.watch() and watchObject() leave no listener on the caller's signal once they end by break, a throw in the loop body, cancel(), iterator.return() or a drained close, though the signal lives on; while open, each holds one", async () => {
  await using server = await startTestServer();
  await using app = fastApp(server.url);
  const user = await app.logIn(Credentials.anonymous());
  const { signal, listeners } = countingSignal();
  const realm = await user.openRealm({ path: "/~/listeners" });
  await realm.write((tx) => tx.put("T", "a", { n: 1 }));
  const streams: (() => ReadableStream<unknown>)[] = [
    () => realm.watch("T", { signal }),
    () => realm.watch("T", { where: { n: 1 }, limit: 1, signal }),
    () => realm.watchObject("T", "a", { signal }),
  ];
  for (const [i, make] of streams.entries()) {
    for await (const _ of make()) break;
    assert.equal(listeners(), 0, `stream ${i}: break`);
    await assert.rejects(async () => {
      for await (const _ of make()) throw new RangeError("in the body");
    }, RangeError);
    assert.equal(listeners(), 0, `stream ${i}: a throw in the loop body`);
    const cancelled = make();
    assert.equal(listeners(), 1, `stream ${i}: open`);
    await cancelled.cancel();
    assert.equal(listeners(), 0, `stream ${i}: cancel()`);
    const iterator = make()[Symbol.asyncIterator]();
    await iterator.next();
    await iterator.return!();
    assert.equal(listeners(), 0, `stream ${i}: return()`);
  }
  // Open ones each hold one until the handle closes and they are drained.
  const open = streams.map((make) => make().getReader());
  assert.equal(listeners(), streams.length);
  await realm.write((tx) => tx.update("T", "a", { n: 2 }));
  await realm.close();
  for (const reader of open) {
    while (!(await readBounded(reader)).done);
  }
  assert.equal(listeners(), 0, "closed and drained");
  assert.equal(signal.aborted, false);
});

Deno.test("Realm.watchObject() with a slow reader: after 30 transactions read at once, exactly one item per transaction that changed the object, each its state after that transaction and naming the fields that differ from the item before", async () => {
  const seed = testSeed();
  const prng = new Prng(seed);
  await using server = await startTestServer();
  await using app = fastApp(server.url);
  const user = await app.logIn(Credentials.anonymous());
  await using realm = await user.openRealm({ path: "/~/slow-object" });
  const reader = realm.watchObject("T", "x", { signal: bounded() })
    .getReader();
  // The object's state after each transaction that changed it.
  const states: (Fields | undefined)[] = [undefined];
  for (let t = 0; t < 30; t++) {
    await realm.write((tx) => {
      const roll = prng.int(6);
      const exists = realm.get("T", "x") !== undefined;
      if (roll === 0) tx.delete("T", "x");
      else if (roll === 1) tx.put("T", "y", { t });
      else if (roll === 2 && exists) tx.update("T", "x", { a: prng.int(2) });
      else tx.put("T", "x", { a: prng.int(2), ...(t % 3 ? { b: t } : {}) });
    });
    const now = realm.get("T", "x");
    if (!isDeepStrictEqual(now, states.at(-1))) states.push(now);
  }
  let previous: Fields | undefined = undefined;
  for (const [i, fields] of states.entries()) {
    const item = await next(reader, `item ${i} (seed ${seed})`);
    const names = new Set<string>([
      ...Object.keys(previous ?? {}),
      ...Object.keys(fields ?? {}),
    ]);
    // (A realm stores no undefined: a missing field reads as undefined.)
    const changed: string[] = [...names]
      .filter((name) => !isDeepStrictEqual(previous?.[name], fields?.[name]))
      .sort();
    assert.deepEqual(
      item,
      { id: "x", fields, changedFields: changed },
      `item ${i} (seed ${seed})`,
    );
    previous = fields;
  }
  await realm.write((tx) => tx.put("T", "x", { done: true }));
  assert.deepEqual(
    (await next(reader, "the next write")).fields,
    { done: true },
    "no item between",
  );
  await reader.cancel();
});
