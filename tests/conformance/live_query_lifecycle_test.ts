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
} from "../../mod.ts";
import { fastApp } from "./_helpers.ts";
import { Prng, testSeed } from "../_helpers/prng.ts";
import { startTestServer } from "../_helpers/test_server.ts";
import { bounded } from "../_helpers/waits.ts";

type Row = RealmObject<Fields>;
type Update = LiveQueryUpdate<Fields>;

/** Every user may read and write every realm (two clients share one). */
const SHARED = { permissions: () => "readwrite" as const };

/** Reads one item of `reader`, rejecting when `signal` aborts first. */
function readBounded<T>(
  reader: ReadableStreamDefaultReader<T>,
  signal: AbortSignal = bounded(),
): Promise<ReadableStreamReadResult<T>> {
  return new Promise((resolve, reject) => {
    const onAbort = () => reject(new Error("timed out waiting for an item"));
    if (signal.aborted) return onAbort();
    signal.addEventListener("abort", onAbort, { once: true });
    reader.read().then((result) => {
      signal.removeEventListener("abort", onAbort);
      resolve(result);
    }, (error) => {
      signal.removeEventListener("abort", onAbort);
      reject(error);
    });
  });
}

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

/** JSON for a failure message: bigints, NaN, infinities and -0 shown. */
function replacer(_key: string, value: unknown): unknown {
  if (typeof value === "bigint") return `${value}n`;
  if (typeof value === "number" && !Number.isFinite(value)) {
    return String(value);
  }
  if (Object.is(value, -0)) return "-0";
  return value;
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
  }

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
