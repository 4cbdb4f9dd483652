// Conformance: live queries through the public API (docs/CLIENT.md "Live
// queries"; DESIGN "Queries and live queries"): realm.watch() change sets
// over seeded random local, remote and concurrent transactions and over a
// bootstrap, silence for transactions that change no result, watchObject(),
// aborts, close, failures, refused writes and client resets.

import assert from "node:assert/strict";
import { isDeepStrictEqual } from "node:util";
import {
  type App,
  type ClientResetMode,
  Credentials,
  type Fields,
  type LiveQueryUpdate,
  type ObjectUpdate,
  type Query,
  type Realm,
  type RealmConfig,
  type RealmObject,
  SyncError,
} from "../../mod.ts";
import { fastApp, recordConnectionStates, replacer } from "./_helpers.ts";
import { Prng, testSeed } from "../_helpers/prng.ts";
import { TcpProxy } from "../_helpers/tcp_proxy.ts";
import { startTestServer, type TestServer } from "../_helpers/test_server.ts";
import { signUserJwt } from "../_helpers/user_jwt.ts";
import { bounded, readBounded } from "../_helpers/waits.ts";

type Row = RealmObject<Fields>;

/** Every user may read and write every realm (two clients share one). */
const SHARED = { permissions: () => "readwrite" as const };

/** Asserts `list` ascends strictly and holds integers in [0, length). */
function assertIndexes(
  list: readonly number[],
  length: number,
  what: string,
): void {
  list.forEach((index, i) => {
    assert.ok(
      Number.isInteger(index) && index >= 0 && index < length,
      `${what}: index ${index} out of [0, ${length})`,
    );
    if (i > 0) assert.ok(list[i - 1]! < index, `${what}: not ascending`);
  });
}

/**
 * Checks one live-query item against the previous result, as a UI that
 * patches a list would: deletions (indexes into the previous result) from
 * the highest, insertions (into the new one) from the lowest, then the
 * modifications in place must turn a copy of `previous` into `objects`,
 * ids and fields. Beyond that, Realm-style: an item changes something; an
 * object kept (neither deleted nor inserted) is a modification exactly when
 * its fields changed; an object whose fields did not change is never
 * deleted and inserted again (it did not move); and objects are frozen.
 */
function assertChangeSet(
  previous: readonly Row[],
  item: LiveQueryUpdate<Fields>,
  label: string,
): void {
  const { objects, changes } = item;
  assert.deepEqual(
    Object.keys(changes).sort(),
    ["deletions", "insertions", "modifications"],
    label,
  );
  assertIndexes(changes.deletions, previous.length, `${label}: deletions`);
  assertIndexes(changes.insertions, objects.length, `${label}: insertions`);
  assertIndexes(
    changes.modifications,
    objects.length,
    `${label}: modifications`,
  );
  assert.ok(
    !isDeepStrictEqual(objects, previous),
    `${label}: an item whose result equals the previous one (nothing changed, so no item was due): ${
      JSON.stringify(changes)
    }`,
  );
  const rows = [...previous];
  for (let i = changes.deletions.length - 1; i >= 0; i--) {
    rows.splice(changes.deletions[i]!, 1);
  }
  for (const index of changes.insertions) {
    assert.ok(index <= rows.length, `${label}: insertion ${index} past end`);
    rows.splice(index, 0, objects[index]!);
  }
  for (const index of changes.modifications) {
    assert.equal(
      rows[index]?.id,
      objects[index]!.id,
      `${label}: modification ${index} names another object`,
    );
    rows[index] = objects[index]!;
  }
  assert.deepEqual(
    rows,
    objects,
    `${label}: the change set ${
      JSON.stringify(changes)
    } does not patch the previous result into the new one`,
  );
  const before = new Map(previous.map((row) => [row.id, row]));
  const deleted = new Set(changes.deletions.map((i) => previous[i]!.id));
  const inserted = new Set(changes.insertions);
  const modified = new Set(changes.modifications);
  objects.forEach((row, index) => {
    assert.ok(
      Object.isFrozen(row) && Object.isFrozen(row.fields),
      `${label}: ${row.id} not frozen`,
    );
    if (!before.has(row.id)) return;
    const changed = !isDeepStrictEqual(before.get(row.id)!.fields, row.fields);
    if (deleted.has(row.id)) {
      assert.ok(
        changed,
        `${label}: ${row.id} did not change, yet it was deleted and inserted again`,
      );
      return;
    }
    assert.ok(!inserted.has(index), `${label}: ${row.id} inserted twice`);
    if (!changed) {
      assert.equal(
        row,
        before.get(row.id),
        `${label}: ${row.id} did not change but is another object (LiveQueryUpdate: shared between items)`,
      );
    }
    assert.equal(
      modified.has(index),
      changed,
      `${label}: ${row.id} ${
        changed ? "changed but is not" : "did not change but is"
      } a modification`,
    );
  });
}

/**
 * A reader of one `realm.watch()` stream that checks every item against
 * the one before it ({@linkcode assertChangeSet}).
 */
class Follower implements AsyncDisposable {
  readonly label: string;
  readonly reader: ReadableStreamDefaultReader<LiveQueryUpdate<Fields>>;
  /** The result as the items read so far leave it. */
  current: readonly Row[] = [];
  /** Items read, the first one included. */
  items = 0;

  constructor(stream: ReadableStream<LiveQueryUpdate<Fields>>, label: string) {
    this.reader = stream.getReader();
    this.label = label;
  }

  /** Reads the first item: the current result, every index inserted. */
  async first(signal: AbortSignal = bounded()): Promise<readonly Row[]> {
    const { done, value } = await readBounded(this.reader, signal);
    assert.ok(!done, `${this.label}: ended before its first item`);
    assert.deepEqual(value.changes, {
      insertions: value.objects.map((_, i) => i),
      deletions: [],
      modifications: [],
    }, `${this.label}: first item`);
    this.items = 1;
    this.current = value.objects;
    return value.objects;
  }

  /** Reads and checks the next item; undefined when the stream ended. */
  async next(
    signal: AbortSignal = bounded(),
  ): Promise<LiveQueryUpdate<Fields> | undefined> {
    const { done, value } = await readBounded(this.reader, signal);
    if (done) return undefined;
    this.items++;
    assertChangeSet(this.current, value, `${this.label} item ${this.items}`);
    this.current = value.objects;
    return value;
  }

  /** Reads and checks the next item, which must exist. */
  async expect(what: string): Promise<LiveQueryUpdate<Fields>> {
    const item = await this.next();
    assert.ok(item !== undefined, `${this.label}: ended before ${what}`);
    return item;
  }

  /** Cancels the stream (an errored one has nothing to cancel). */
  [Symbol.asyncDispose](): Promise<void> {
    return this.reader.cancel().catch(() => {});
  }
}

/** An app logged in anonymously with one realm open and downloaded. */
async function openShared(
  stack: AsyncDisposableStack,
  server: TestServer,
  path: string,
  config: Partial<RealmConfig> = {},
): Promise<{ app: App; realm: Realm }> {
  const app = stack.use(fastApp(server.url));
  const user = await app.logIn(Credentials.anonymous());
  const realm = stack.use(
    await user.openRealm({
      path,
      waitForDownload: true,
      signal: bounded(),
      ...config,
    }),
  );
  return { app, realm };
}

/** Every upload of `writer` acknowledged and downloaded by `readers`. */
async function settle(writers: Realm[], readers: Realm[]): Promise<void> {
  await Promise.all(
    writers.map((r) => r.syncSession.waitForUpload({ signal: bounded() })),
  );
  await Promise.all(
    readers.map((r) => r.syncSession.waitForDownload({ signal: bounded() })),
  );
}

// The random workload: objects of type T with a number-ish `p` (sometimes
// missing, null, a string, -0, NaN or a bigint: other kinds sort apart), a
// boolean `d`, a string `t` and a field `n` no query looks at.

const IDS = Array.from({ length: 24 }, (_, i) => `o${i < 10 ? "0" : ""}${i}`);

const QUERIES: Query[] = [
  {},
  { where: { d: true }, sort: [["p", "asc"]] },
  { where: { p: { gte: 2 } }, sort: [["p", "desc"], ["t", "asc"]], limit: 5 },
  { sort: [["t", "asc"]], offset: 3, limit: 4 },
  { where: { $or: [{ d: false }, { t: { in: ["a", "b"] } }] } },
  {
    where: { p: { lt: 3 }, d: { ne: true } },
    sort: [["t", "desc"], ["p", "asc"]],
    offset: 1,
    limit: 3,
  },
  { where: { $not: { p: null } }, sort: [["n", "desc"]], limit: 6 },
  { sort: [["p", "asc"]], offset: 2 },
  { sort: [["p", "desc"]], offset: 20, limit: 2 },
  { where: { d: false }, limit: 0 },
];

function randomP(prng: Prng): Fields[string] {
  switch (prng.int(12)) {
    case 0:
      return "x";
    case 1:
      return null;
    case 2:
      return -0;
    case 3:
      return NaN;
    case 4:
      return 2n;
    default:
      return prng.int(5);
  }
}

function randomFields(prng: Prng): Fields {
  const fields: Fields = {};
  if (prng.int(6) > 0) fields.p = randomP(prng);
  if (prng.int(4) > 0) fields.d = prng.int(2) === 0;
  if (prng.int(5) > 0) fields.t = prng.pick(["a", "b", "c", "d"]);
  if (prng.int(3) === 0) fields.n = prng.int(3);
  return fields;
}

/**
 * One random transaction on `realm`: one to four objects (sometimes eight
 * to fifteen, some twice), each put, updated, deleted, or written with the
 * values it already holds; sometimes only an object of another type.
 */
function randomWrite(realm: Realm, prng: Prng): Promise<unknown> {
  return realm.write((tx) => {
    if (prng.int(10) === 0) {
      tx.put("U", prng.pick(IDS), randomFields(prng));
      return;
    }
    const count = prng.int(6) === 0 ? 8 + prng.int(8) : 1 + prng.int(4);
    // What this transaction has done so far, to update only live objects.
    const live = new Map<string, Fields | undefined>();
    const now = (id: string) =>
      live.has(id) ? live.get(id) : realm.get("T", id);
    for (let i = 0; i < count; i++) {
      const id = prng.pick(IDS);
      const fields = now(id);
      const roll = prng.int(10);
      if (roll < 2) {
        tx.delete("T", id);
        live.set(id, undefined);
      } else if (roll < 5 && fields !== undefined) {
        const change = randomFields(prng);
        tx.update("T", id, change);
        live.set(id, { ...fields, ...change });
      } else if (roll === 5 && fields !== undefined) {
        // The values it holds: changes nothing visible.
        tx.put("T", id, { ...fields });
      } else if (roll === 6 && fields !== undefined) {
        const names = Object.keys(fields);
        if (names.length > 0) {
          const name = prng.pick(names);
          tx.update("T", id, { [name]: fields[name]! });
        }
      } else {
        const put = randomFields(prng);
        tx.put("T", id, put);
        live.set(id, put);
      }
    }
  });
}

/**
 * The results each query went through on the writer, consecutive repeats
 * dropped: what a reader of the other client may see, in order, skipping
 * some when one DOWNLOAD brings several of the writer's transactions.
 */
class ResultHistory {
  readonly states: Row[][];
  constructor(first: Row[]) {
    this.states = [first];
  }
  record(result: Row[]): void {
    if (!isDeepStrictEqual(result, this.states.at(-1))) {
      this.states.push(result);
    }
  }
}

/**
 * Reads `follower` to its end (its realm handle was closed: the items not
 * yet read come first) and checks that its items were results of the
 * writer's transactions, in order, ending with the last one.
 */
async function drainAgainst(
  follower: Follower,
  history: ResultHistory,
): Promise<void> {
  const { states } = history;
  assert.deepEqual(follower.current, states[0], `${follower.label}: start`);
  let at = 0;
  for (let round = 0; round <= states.length; round++) {
    const item = await follower.next();
    if (item === undefined) break;
    let match = at + 1;
    while (
      match < states.length && !isDeepStrictEqual(item.objects, states[match])
    ) {
      match++;
    }
    assert.ok(
      match < states.length,
      `${follower.label} item ${follower.items}: not a result the writer's transactions went through after the previous item: ${
        JSON.stringify(item.objects, replacer)
      }`,
    );
    at = match;
  }
  assert.deepEqual(
    follower.current,
    states.at(-1),
    `${follower.label}: the last item is the writer's last result`,
  );
}

/**
 * After a local write: each query whose result changed has the new result
 * as its next item (queued before the write resolved); one whose result
 * did not change has none, which its next item, read later, shows.
 */
async function checkLocalStep(
  realm: Realm,
  type: string,
  queries: readonly Query[],
  followers: readonly Follower[],
  step: string,
): Promise<void> {
  for (let q = 0; q < queries.length; q++) {
    const fresh = realm.objects(type, queries[q]!);
    if (isDeepStrictEqual(fresh, followers[q]!.current)) continue;
    const item = await followers[q]!.expect(step);
    assert.deepEqual(
      item.objects,
      fresh,
      `${followers[q]!.label} ${step}: the item is the new result`,
    );
  }
}

Deno.test("Realm.watch() over seeded random local, remote, then concurrent transactions: every item's change set patches the previous result into realm.objects() with the same query, modifications are exactly the kept objects that changed, and a transaction that changes no result produces no item", async () => {
  const seed = testSeed();
  const prng = new Prng(seed);
  try {
    await using server = await startTestServer(SHARED);
    await using stack = new AsyncDisposableStack();
    const path = "/shared/random";
    const { app: appA, realm: a1 } = await openShared(stack, server, path, {
      indexes: { T: ["p", "d"] },
    });
    const { realm: b } = await openShared(stack, server, path);
    const follow = (realm: Realm, phase: string) =>
      QUERIES.map((query, q) =>
        stack.use(
          new Follower(
            realm.watch("T", { ...query, signal: bounded(30_000) }),
            `seed ${seed} ${phase} query ${q} ${JSON.stringify(query)}`,
          ),
        )
      );

    // Local transactions: after each write, every query whose result
    // changed has its item queued already; one that did not has none (its
    // next item, read later, must be a later result).
    const local = follow(a1, "local");
    for (const follower of local) await follower.first();
    for (let step = 0; step < 80; step++) {
      await randomWrite(a1, prng);
      await checkLocalStep(a1, "T", QUERIES, local, `step ${step}`);
    }

    // Remote transactions: B writes without waiting for its uploads, so
    // several may reach A in one DOWNLOAD (one item). A second handle on
    // A's realm stays open for the next phase; closing the first ends its
    // streams after the items not yet read.
    const a2 = stack.use(
      await appA.currentUser!.openRealm({ path, signal: bounded() }),
    );
    await settle([a1], [b]);
    const histories = QUERIES.map((query, q) => {
      const start = b.objects("T", query);
      assert.deepEqual(start, local[q]!.current, "B holds what A holds");
      return new ResultHistory(start);
    });
    for (let step = 0; step < 60; step++) {
      await randomWrite(b, prng);
      QUERIES.forEach((query, q) =>
        histories[q]!.record(b.objects("T", query))
      );
    }
    await settle([b], [a1]);
    await a1.close();
    for (let q = 0; q < QUERIES.length; q++) {
      await drainAgainst(local[q]!, histories[q]!);
      assert.deepEqual(local[q]!.current, a2.objects("T", QUERIES[q]!));
    }

    // Both write at once; items interleave local commits and downloads.
    const both = follow(a2, "concurrent");
    for (const follower of both) await follower.first();
    const writes: Promise<unknown>[] = [];
    for (let step = 0; step < 40; step++) {
      const writer = prng.int(2) === 0 ? a2 : b;
      const write = randomWrite(writer, prng);
      if (prng.int(3) === 0) await write;
      else writes.push(write);
    }
    await Promise.all(writes);
    await settle([a2, b], [a2, b]);
    const final = QUERIES.map((query) => a2.objects("T", query));
    QUERIES.forEach((query, q) =>
      assert.deepEqual(b.objects("T", query), final[q], "converged")
    );
    await a2.close();
    for (let q = 0; q < QUERIES.length; q++) {
      for (let round = 0; round < 1_000; round++) {
        if (await both[q]!.next() === undefined) break;
      }
      assert.deepEqual(
        both[q]!.current,
        final[q],
        `${
          both[q]!.label
        }: the last item is realm.objects() with the same query`,
      );
    }
  } catch (error) {
    if (error instanceof Error) {
      error.message =
        `seed ${seed} (TETHER_SEED=${seed} replays it): ${error.message}`;
    }
    throw error;
  }
});

Deno.test("Realm.watch(): a transaction that changes nothing in a result produces no item (another type, objects outside the filter or past the window, values it already held; locally and from another client, also when one DOWNLOAD changes and restores an object)", async () => {
  await using server = await startTestServer(SHARED);
  await using stack = new AsyncDisposableStack();
  const path = "/shared/silence";
  const { realm: a } = await openShared(stack, server, path);
  const { realm: b } = await openShared(stack, server, path);
  await a.write((tx) => {
    tx.put("Task", "t1", { done: false, p: 1, title: "a" });
    tx.put("Task", "t2", { done: false, p: 2, title: "b" });
    tx.put("Task", "t3", { done: false, p: 3, title: "c" });
    tx.put("Task", "t4", { done: false, p: 4, title: "d" });
    tx.put("Task", "t5", { done: true, p: 0, title: "e" });
  });
  await settle([a], [b]);
  await using follower = new Follower(
    a.watch("Task", {
      where: { done: false },
      sort: [["p", "asc"]],
      limit: 3,
      signal: bounded(),
    }),
    "silence",
  );
  assert.deepEqual((await follower.first()).map((o) => o.id), [
    "t1",
    "t2",
    "t3",
  ]);
  let sentinel = 0;
  /** A relevant write: t2's title changes, nothing else. */
  const relevant = async (realm: Realm, what: string) => {
    sentinel++;
    await realm.write((tx) =>
      tx.update("Task", "t2", { title: `b${sentinel}` })
    );
    if (realm !== a) await settle([realm], [a]);
    const item = await follower.expect(what);
    assert.deepEqual(
      item.changes,
      { insertions: [], deletions: [], modifications: [1] },
      `${what}: the next item is the relevant write's`,
    );
    assert.equal(item.objects[1]!.fields.title, `b${sentinel}`);
  };

  // Local writes that leave the result alone.
  await a.write((tx) => tx.put("Other", "t1", { done: false, p: -1 }));
  await a.write((tx) => tx.update("Task", "t5", { title: "e2", p: 1 }));
  await a.write((tx) => tx.update("Task", "t4", { p: 9, title: "d2" }));
  await a.write((tx) => tx.put("Task", "t6", { done: false, p: 10 }));
  await a.write((tx) => tx.update("Task", "t1", { p: 1, done: false }));
  await a.write((tx) =>
    tx.put("Task", "t3", { done: false, p: 3, title: "c" })
  );
  await a.write((tx) => tx.delete("Task", "gone"));
  await relevant(a, "after local writes outside the result");

  // The same from another client.
  await settle([a], [b]);
  await b.write((tx) => tx.put("Other", "t2", { done: false }));
  await b.write((tx) => tx.update("Task", "t5", { p: -5 }));
  await b.write((tx) => tx.update("Task", "t6", { p: 11 }));
  await b.write((tx) => tx.update("Task", "t1", { p: 1 }));
  await relevant(b, "after remote writes outside the result");

  // B, paused, writes two objects of another type, changes t1 and changes
  // it back, and makes t7 enter the window and leave it again. Resumed, it
  // sends the first two writes in an UPLOAD each and the four others
  // together once one is acknowledged (docs/CLIENT.md "Uploads"), and the
  // server forwards those four together: one DOWNLOAD, one local
  // transaction on A, whose net effect on the result is nothing.
  b.syncSession.pause();
  await b.write((tx) => tx.put("Other", "f1", {}));
  await b.write((tx) => tx.put("Other", "f2", {}));
  await b.write((tx) => tx.update("Task", "t1", { p: 7 }));
  await b.write((tx) => tx.update("Task", "t1", { p: 1 }));
  await b.write((tx) => tx.put("Task", "t7", { done: false, p: 0 }));
  await b.write((tx) => tx.update("Task", "t7", { done: true }));
  b.syncSession.resume();
  await relevant(b, "after a DOWNLOAD that changed t1 and changed it back");
});

Deno.test("Realm.watch() during a bootstrap (from the history, and from a snapshot of overwritten objects): a fresh client opening a realm of 4,000 objects gets items whose change sets patch each result into the next, each a sorted, filtered window of the server's objects, the last equal to realm.objects() with the same query; then seeded local transactions that empty the windows' fronts", async () => {
  await bootstrapCase("history");
  await bootstrapCase("snapshot");
});

/**
 * A realm of 4,000 objects on the server, then a fresh client: from the
 * history (four changesets of 1,000 puts), or from the snapshot (the
 * objects put 100 at a time, then updated and some deleted, with the
 * snapshot advanced to the head and no history kept below it).
 */
async function bootstrapCase(via: "history" | "snapshot"): Promise<void> {
  await using server = await startTestServer(
    via === "history"
      ? SHARED
      : { ...SHARED, history: { snapshotLagVersions: 1, retainVersions: 0 } },
  );
  const path = "/shared/bootstrap";
  const total = 4_000;
  const expected = new Map<string, Fields>();
  const serverRealm = server.realm(path);
  const step = via === "history" ? 1_000 : 100;
  let version = 0;
  for (let start = 0; start < total; start += step) {
    ({ version } = await serverRealm.write((tx) => {
      for (let n = start; n < start + step; n++) {
        const fields = {
          n,
          g: n % 7,
          s: `s${String((n * 7_919) % total).padStart(4, "0")}`,
          pad: "x".repeat(40),
        };
        const id = `i${String(n).padStart(4, "0")}`;
        tx.put("Item", id, fields);
        expected.set(id, fields);
      }
    }));
  }
  if (via === "snapshot") {
    for (let k = 0; k < 10; k++) {
      ({ version } = await serverRealm.write((tx) => {
        for (let n = k; n < total; n += 20) {
          const id = `i${String(n).padStart(4, "0")}`;
          if (!expected.has(id)) continue;
          if (n % 100 === k) {
            tx.delete("Item", id);
            expected.delete(id);
            continue;
          }
          const change = { g: (n + k) % 7, s: `u${k}-${n}` };
          tx.update("Item", id, change);
          expected.set(id, { ...expected.get(id)!, ...change });
        }
      }));
    }
    await server.waitForLog(
      (record) =>
        record.event === "snapshot_advanced" &&
        record.message.startsWith(`Snapshot at version ${version},`),
      bounded(10_000),
    );
  }
  // Queries with what each means, to check every item's rows.
  const byN = (x: Row, y: Row) =>
    (x.fields.n as number) - (y.fields.n as number);
  const cases: {
    query: Query;
    matches: (f: Fields) => boolean;
    order: (x: Row, y: Row) => number;
  }[] = [
    { query: { sort: [["n", "asc"]] }, matches: () => true, order: byN },
    {
      query: { where: { g: 3 }, sort: [["n", "desc"]], limit: 50 },
      matches: (f) => f.g === 3,
      order: (x, y) => byN(y, x),
    },
    {
      query: { where: { n: { gte: 1_000, lt: 1_300 } }, sort: [["s", "asc"]] },
      matches: (f) => (f.n as number) >= 1_000 && (f.n as number) < 1_300,
      order: (x, y) => (x.fields.s as string) < (y.fields.s as string) ? -1 : 1,
    },
    {
      query: {
        where: { $or: [{ g: 0 }, { g: 6 }] },
        sort: [["g", "desc"], ["n", "asc"]],
        offset: 100,
        limit: 30,
      },
      matches: (f) => f.g === 0 || f.g === 6,
      order: (x, y) =>
        (y.fields.g as number) - (x.fields.g as number) || byN(x, y),
    },
    {
      query: { where: { g: { in: [1, 2] } } },
      matches: (f) => f.g === 1 || f.g === 2,
      order: (x, y) => x.id < y.id ? -1 : 1,
    },
  ];

  await using stack = new AsyncDisposableStack();
  const app = stack.use(fastApp(server.url));
  const user = await app.logIn(Credentials.anonymous());
  const realm = stack.use(
    await user.openRealm({ path, indexes: { Item: ["g"] } }),
  );
  // Registered before the session has connected (that takes the socket).
  const followers = cases.map(({ query }, q) =>
    stack.use(
      new Follower(
        realm.watch("Item", { ...query, signal: bounded(30_000) }),
        `${via} bootstrap query ${q} ${JSON.stringify(query)}`,
      ),
    )
  );
  // A local write meanwhile is one more transaction among the batches.
  await realm.write((tx) =>
    tx.put("Item", "local", { n: -1, g: 3, s: "s", pad: "" })
  );
  expected.set("local", { n: -1, g: 3, s: "s", pad: "" });
  await realm.syncSession.waitForDownload({ signal: bounded(30_000) });
  const final = cases.map(({ query }) => realm.objects("Item", query));
  assert.equal(final[0]!.length, expected.size);
  // Closing the realm ends the streams after the items not yet read; a
  // second handle keeps it open for what follows.
  const again = stack.use(await user.openRealm({ path, signal: bounded() }));
  await realm.close();
  for (let q = 0; q < cases.length; q++) {
    const { matches, order } = cases[q]!;
    const follower = followers[q]!;
    const check = (rows: readonly Row[]) => {
      rows.forEach((row, i) => {
        assert.deepEqual(row.fields, expected.get(row.id), follower.label);
        assert.ok(matches(row.fields), `${follower.label}: ${row.id} matches`);
        if (i > 0) {
          assert.ok(order(rows[i - 1]!, row) < 0, `${follower.label}: order`);
        }
      });
    };
    check(await follower.first());
    const sizes = [follower.current.length];
    for (let round = 0; round <= total; round++) {
      const item = await follower.next();
      if (item === undefined) break;
      check(item.objects);
      sizes.push(item.objects.length);
    }
    assert.deepEqual(
      follower.current,
      final[q],
      `${follower.label}: the last item is realm.objects() with the same query`,
    );
    if (q === 0) {
      // Every object is in this result: each batch adds to it.
      assert.ok(sizes.length >= 3, `several batches, got ${sizes}`);
      sizes.forEach((size, i) =>
        assert.ok(i === 0 || size > sizes[i - 1]!, `grows: ${sizes}`)
      );
    }
  }

  // Then local transactions that empty the front of the windows, move
  // objects in and out and across them: a live query with a limit keeps
  // only its window and a margin, and selects again from the realm when
  // too many have left (docs/CLIENT.md "Live queries").
  const seed = testSeed();
  const prng = new Prng(seed);
  const queries = cases.slice(1).map(({ query }) => query);
  const churn = queries.map((query, q) =>
    stack.use(
      new Follower(
        again.watch("Item", { ...query, signal: bounded(30_000) }),
        `seed ${seed} after the ${via} bootstrap, query ${q + 1}`,
      ),
    )
  );
  for (const follower of churn) await follower.first();
  const ids = [...expected.keys()];
  for (let step = 0; step < 30; step++) {
    await again.write((tx) => {
      const targets = churn.flatMap((follower) =>
        follower.current.slice(0, 6).map((row) => row.id)
      );
      for (let i = 0; i < 10; i++) targets.push(prng.pick(ids));
      for (const id of new Set(targets)) {
        const roll = prng.int(10);
        if (roll < 4) tx.delete("Item", id);
        else if (!again.get("Item", id)) continue;
        else if (roll < 7) tx.update("Item", id, { g: prng.int(7) });
        else if (roll < 9) tx.update("Item", id, { n: prng.int(2 * total) });
        else tx.update("Item", id, { s: `s${prng.int(total)}` });
      }
      for (let i = 0; i < 3; i++) {
        const id = `new${step}-${i}`;
        ids.push(id);
        tx.put("Item", id, {
          n: prng.int(2 * total),
          g: prng.int(7),
          s: `s${prng.int(total)}`,
          pad: "",
        });
      }
    });
    try {
      await checkLocalStep(again, "Item", queries, churn, `step ${step}`);
    } catch (error) {
      if (error instanceof Error) {
        error.message =
          `seed ${seed} (TETHER_SEED replays it): ${error.message}`;
      }
      throw error;
    }
  }
}

/** Reads the next item of a watchObject() stream, which must exist. */
async function nextUpdate(
  reader: ReadableStreamDefaultReader<ObjectUpdate<Fields>>,
  what: string,
): Promise<ObjectUpdate<Fields>> {
  const { done, value } = await readBounded(reader, bounded());
  assert.ok(!done, `ended before ${what}`);
  return value;
}

Deno.test("Realm.watchObject(): the current state first, then one item per transaction that changed the object, naming exactly the fields that changed, appeared or vanished; fields undefined once deleted and defined again when re-created; locally and from another client", async () => {
  await using server = await startTestServer(SHARED);
  await using stack = new AsyncDisposableStack();
  const path = "/shared/object";
  const { realm: a } = await openShared(stack, server, path);
  const { realm: b } = await openShared(stack, server, path);
  const reader = a.watchObject("Task", "x", { signal: bounded(20_000) })
    .getReader();
  stack.defer(() => reader.cancel().catch(() => {}));
  assert.deepEqual(await nextUpdate(reader, "the first item"), {
    id: "x",
    fields: undefined,
    changedFields: [],
  });
  const expect = async (
    fields: Fields | undefined,
    changedFields: string[],
    what: string,
  ) => {
    const update = await nextUpdate(reader, what);
    assert.deepEqual(update, { id: "x", fields, changedFields }, what);
    assert.deepEqual(a.get("Task", "x"), fields, `${what}: as get() reads it`);
  };

  // Local: every write that changes x, with writes that do not between.
  await a.write((tx) => tx.put("Task", "x", { a: 1, b: "s", c: null }));
  await expect({ a: 1, b: "s", c: null }, ["a", "b", "c"], "created");
  await a.write((tx) => tx.put("Task", "y", { a: 2 }));
  await a.write((tx) => tx.put("Other", "x", { a: 2 }));
  await a.write((tx) => tx.update("Task", "x", { a: 1, c: null }));
  await a.write((tx) => tx.put("Task", "x", { c: null, b: "s", a: 1 }));
  await a.write((tx) => tx.update("Task", "x", { a: -0, d: [1] }));
  await expect({ a: -0, b: "s", c: null, d: [1] }, ["a", "d"], "-0 is not 0");
  await a.write((tx) => {
    tx.update("Task", "x", { a: 5 });
    tx.update("Task", "x", { a: -0 });
    tx.update("Task", "x", { b: "t" });
  });
  await expect({ a: -0, b: "t", c: null, d: [1] }, ["b"], "net change");
  await a.write((tx) => tx.put("Task", "x", { a: -0, e: 1n }));
  await expect({ a: -0, e: 1n }, ["b", "c", "d", "e"], "replaced by a put");
  await a.write((tx) => tx.delete("Task", "x"));
  await expect(undefined, ["a", "e"], "deleted");
  await a.write((tx) => tx.delete("Task", "x"));
  await a.write((tx) => tx.update("Task", "y", { a: 3 }));
  await a.write((tx) => tx.put("Task", "x", { z: "back" }));
  await expect({ z: "back" }, ["z"], "re-created");
  // A watcher starting on a live object names every field it has.
  const second = a.watchObject("Task", "y", { signal: bounded() }).getReader();
  stack.defer(() => second.cancel().catch(() => {}));
  assert.deepEqual(await nextUpdate(second, "y's first item"), {
    id: "y",
    fields: { a: 3 },
    changedFields: ["a"],
  });
  // An object without fields exists: created, deleted and re-created, an
  // item each, though no field appears or vanishes.
  const empty = a.watchObject("Task", "e", { signal: bounded() }).getReader();
  stack.defer(() => empty.cancel().catch(() => {}));
  await nextUpdate(empty, "e's first item");
  for (
    const [write, fields] of [
      [(tx) => tx.put("Task", "e", {}), {}],
      [(tx) => tx.delete("Task", "e"), undefined],
      [(tx) => tx.put("Task", "e", {}), {}],
    ] as [Parameters<Realm["write"]>[0], Fields | undefined][]
  ) {
    await a.write(write);
    assert.deepEqual(await nextUpdate(empty, "e"), {
      id: "e",
      fields,
      changedFields: [],
    });
  }
  // Items are copies: changing one changes nothing else.
  const [copy] = await Promise.all([
    nextUpdate(reader, "a copy"),
    a.write((tx) => tx.update("Task", "x", { list: [1, 2] })),
  ]);
  (copy.fields!.list as number[]).push(3);
  assert.deepEqual(a.get("Task", "x"), { z: "back", list: [1, 2] });

  // Remote: each of B's writes acknowledged and downloaded before the next.
  await settle([a], [b]);
  const remote = async (write: Parameters<Realm["write"]>[0]) => {
    await (await b.write(write)).waitForUpload({ signal: bounded() });
    await a.syncSession.waitForDownload({ signal: bounded() });
  };
  await remote((tx) => tx.update("Task", "x", { z: "remote" }));
  await expect({ z: "remote", list: [1, 2] }, ["z"], "remote update");
  await remote((tx) => tx.update("Task", "y", { a: 4 }));
  await remote((tx) => tx.update("Task", "x", { list: [1, 2] }));
  await remote((tx) => tx.delete("Task", "x"));
  await expect(undefined, ["list", "z"], "remote delete");
  await remote((tx) => tx.put("Task", "x", { q: true }));
  await expect({ q: true }, ["q"], "remote re-creation");
  // B, paused, changes q and changes it back, then sets r: one DOWNLOAD
  // (or several) whose only net change is r.
  b.syncSession.pause();
  await b.write((tx) => tx.update("Task", "x", { q: false }));
  await b.write((tx) => tx.update("Task", "x", { q: true }));
  await b.write((tx) => tx.update("Task", "x", { r: 1 }));
  b.syncSession.resume();
  await settle([b], [a]);
  for (let round = 0; round < 3; round++) {
    const update = await nextUpdate(reader, "r");
    assert.ok(update.changedFields.length > 0, "an item names what changed");
    if (update.fields?.r === 1) {
      assert.deepEqual(update.fields, { q: true, r: 1 });
      break;
    }
    assert.ok(round < 2, "at most one item per transaction");
  }
});

Deno.test("Realm.watch() and watchObject() end when their signal aborts: already aborted, while the reader waits, while it is behind (unread items dropped), and by break; closing a realm handle ends its streams after the items not yet read and leaves another handle's streams running; App.close() ends them; bad options throw TypeError", async () => {
  await using server = await startTestServer();
  await using app = fastApp(server.url);
  const user = await app.logIn(Credentials.anonymous());
  const realm = await user.openRealm({ path: "/~/aborts" });
  await realm.write((tx) => tx.put("T", "a", { n: 1 }));

  // Already aborted: nothing at all.
  const aborted = AbortSignal.abort(new Error("no"));
  for await (const _ of realm.watch("T", { signal: aborted })) {
    assert.fail("an aborted watch() yields nothing");
  }
  for await (const _ of realm.watchObject("T", "a", { signal: aborted })) {
    assert.fail("an aborted watchObject() yields nothing");
  }

  // Aborted while the reader waits for the next item: the loop ends
  // without an error.
  const waiting = new AbortController();
  let seen = 0;
  for await (const _ of realm.watch("T", { signal: waiting.signal })) {
    if (++seen === 1) queueMicrotask(() => waiting.abort(new Error("stop")));
  }
  assert.equal(seen, 1);
  const waitingObject = new AbortController();
  const objectReader = realm.watchObject("T", "a", {
    signal: waitingObject.signal,
  }).getReader();
  await objectReader.read();
  const pending = objectReader.read();
  waitingObject.abort();
  assert.deepEqual(await pending, { done: true, value: undefined });

  // Behind: three items queued, one read, then the abort ends the stream
  // at once; later writes reach nobody.
  const behind = new AbortController();
  const behindReader = realm.watch("T", { signal: behind.signal }).getReader();
  const behindObject = new AbortController();
  const behindObjectReader = realm.watchObject("T", "a", {
    signal: behindObject.signal,
  }).getReader();
  for (let n = 2; n <= 4; n++) {
    await realm.write((tx) => tx.update("T", "a", { n }));
  }
  assert.equal((await behindReader.read()).value?.objects[0]?.fields.n, 1);
  assert.equal((await behindObjectReader.read()).value?.fields?.n, 1);
  behind.abort();
  behindObject.abort();
  await realm.write((tx) => tx.update("T", "a", { n: 5 }));
  assert.deepEqual(await behindReader.read(), { done: true, value: undefined });
  assert.deepEqual(await behindObjectReader.read(), {
    done: true,
    value: undefined,
  });

  // break: the stream is cancelled; the realm goes on.
  for await (const _ of realm.watch("T")) break;
  for await (const _ of realm.watchObject("T", "a")) break;

  // Two handles on one path: closing one ends its streams after their
  // unread items; the other's go on.
  const other = await user.openRealm({ path: "/~/aborts" });
  const closing = new Follower(realm.watch("T"), "closing handle");
  const closingObject = realm.watchObject("T", "a").getReader();
  const staying = new Follower(
    other.watch("T", { signal: bounded() }),
    "other handle",
  );
  await closing.first();
  await closingObject.read();
  await staying.first();
  await realm.write((tx) => tx.update("T", "a", { n: 6 }));
  await realm.close();
  assert.throws(() => realm.watch("T"), TypeError);
  assert.throws(() => realm.watchObject("T", "a"), TypeError);
  assert.equal((await closing.expect("n 6")).objects[0]!.fields.n, 6);
  assert.equal(await closing.next(), undefined, "ended after its item");
  assert.equal((await closingObject.read()).value?.fields?.n, 6);
  assert.deepEqual(await closingObject.read(), {
    done: true,
    value: undefined,
  });
  assert.equal((await staying.expect("n 6")).objects[0]!.fields.n, 6);
  await other.write((tx) => tx.update("T", "a", { n: 7 }));
  assert.equal((await staying.expect("n 7")).objects[0]!.fields.n, 7);

  // From inside the loop: a write's item comes next; closing the handle
  // ends the loop.
  const third = await user.openRealm({ path: "/~/aborts" });
  const inLoop: unknown[] = [];
  for await (const { objects } of third.watch("T", { signal: bounded() })) {
    inLoop.push(objects[0]!.fields.n);
    if (inLoop.length === 1) {
      await third.write((tx) => tx.update("T", "a", { n: 8 }));
    } else await third.close();
  }
  assert.deepEqual(inLoop, [7, 8]);

  // Bad options are refused before anything is registered.
  assert.throws(() => other.watch("T", { limit: -1 }), TypeError);
  assert.throws(
    () => other.watch("T", { signal: "soon" as unknown as AbortSignal }),
    TypeError,
  );
  assert.throws(
    () => other.watch("T", { where: { n: { near: 1 } } as never }),
    /where\.n\.near/,
  );
  assert.throws(
    () => other.watchObject("T", 1 as unknown as string),
    TypeError,
  );

  // Closing the app closes its realms: the streams end.
  const last = other.watchObject("T", "a").getReader();
  await last.read();
  await app.close();
  assert.equal((await staying.expect("n 8")).objects[0]!.fields.n, 8);
  assert.deepEqual(await staying.next(), undefined);
  assert.deepEqual(await last.read(), { done: true, value: undefined });
});

Deno.test("Realm.watch() and watchObject() see a write the server refuses (validateChangeset) as one more transaction that puts the result back", async () => {
  await using server = await startTestServer({
    ...SHARED,
    validateChangeset: ({ changes }) =>
      changes.every((c) => c.fields?.poison === undefined),
  });
  await using stack = new AsyncDisposableStack();
  const { realm: a } = await openShared(stack, server, "/shared/rejected");
  await a.write((tx) => {
    tx.put("Task", "t1", { title: "a", done: false });
    tx.put("Task", "t2", { title: "b", done: false });
  });
  await using follower = new Follower(
    a.watch("Task", {
      where: { done: false },
      sort: [["title", "asc"]],
      signal: bounded(),
    }),
    "rejected",
  );
  const before = await follower.first();
  const object = a.watchObject("Task", "t1", { signal: bounded() })
    .getReader();
  stack.defer(() => object.cancel().catch(() => {}));
  await object.read();

  // Paused, so the refusal comes after a later write to the same object.
  a.syncSession.pause();
  const refused = await a.write((tx) => {
    tx.update("Task", "t1", { done: true, poison: 1 });
    tx.put("Task", "t0", { title: "0", done: false, poison: 1 });
  });
  const later = await a.write((tx) => tx.update("Task", "t2", { title: "c" }));
  a.syncSession.resume();
  await assert.rejects(
    refused.waitForUpload({ signal: bounded() }),
    (error) => error instanceof SyncError && error.code === "write_rejected",
  );
  await later.waitForUpload({ signal: bounded() });
  assert.deepEqual(
    (await follower.expect("the refused write")).objects.map((o) => o.id),
    ["t0", "t2"],
  );
  assert.deepEqual(
    (await follower.expect("the later write")).objects.map((o) => o.fields),
    [{ title: "0", done: false, poison: 1 }, { title: "c", done: false }],
  );
  // The revert: t0 gone, t1 back, t2 keeps the later write.
  const reverted = await follower.expect("the revert");
  assert.deepEqual(
    reverted.objects,
    a.objects("Task", {
      where: { done: false },
      sort: [["title", "asc"]],
    }),
  );
  assert.deepEqual(reverted.objects.map((o) => o.fields), [
    before[0]!.fields,
    { title: "c", done: false },
  ]);
  assert.deepEqual((await nextUpdate(object, "refused")).changedFields, [
    "done",
    "poison",
  ]);
  assert.deepEqual(await nextUpdate(object, "reverted"), {
    id: "t1",
    fields: { title: "a", done: false },
    changedFields: ["done", "poison"],
  });
  // Nothing more: the next item is the next write's.
  await a.write((tx) => tx.update("Task", "t1", { title: "a2" }));
  assert.deepEqual(
    (await follower.expect("after the revert")).changes.modifications,
    [0],
  );
});

/**
 * A JWT user's realm on a server, then a second server with an empty store
 * behind the same address (its data wiped): with the session paused, the
 * realm writes t5, then the session resumes into a client reset.
 */
async function resetStory(
  stack: AsyncDisposableStack,
  mode: ClientResetMode,
) {
  const secret = "live-queries-secret";
  const kv1 = stack.use(await Deno.openKv(":memory:"));
  const first = stack.use(
    await startTestServer({ kv: kv1, auth: { jwtSecret: secret } }),
  );
  const proxy = stack.use(new TcpProxy(first.addr));
  const app = stack.use(fastApp(proxy.url));
  const jwt = await signUserJwt(secret, {
    sub: "alice",
    exp: Math.floor(Date.now() / 1000) + 3600,
  });
  const user = await app.logIn(Credentials.jwt(jwt));
  const realm = stack.use(
    await user.openRealm({
      path: "/~/todos",
      waitForDownload: true,
      signal: bounded(),
      clientReset: { mode },
    }),
  );
  await (await realm.write((tx) => {
    tx.put("Task", "t1", { title: "a" });
    tx.put("Task", "t2", { title: "b" });
  })).waitForUpload({ signal: bounded() });
  const follower = stack.use(
    new Follower(
      realm.watch("Task", { sort: [["title", "asc"]], signal: bounded() }),
      `reset ${mode}`,
    ),
  );
  await follower.first();
  const object = realm.watchObject("Task", "t1", { signal: bounded() })
    .getReader();
  stack.defer(() => object.cancel().catch(() => {}));
  await object.read();
  realm.syncSession.pause();
  await realm.write((tx) => tx.put("Task", "t5", { title: "e" }));
  // The new server holds other objects under the same path.
  const kv2 = stack.use(await Deno.openKv(":memory:"));
  const second = stack.use(
    await startTestServer({ kv: kv2, auth: { jwtSecret: secret } }),
  );
  await second.realm(`/${user.id}/todos`).write((tx) => {
    tx.put("Task", "t3", { title: "c" });
    tx.put("Task", "t4", { title: "d" });
  });
  // Connections from now on reach the new server; any left to the old
  // one are cut.
  proxy.retarget(second.addr);
  proxy.dropAll();
  const states = stack.use(recordConnectionStates(realm.syncSession));
  realm.syncSession.resume();
  return { realm, follower, object, states };
}

Deno.test("Realm.watch() and watchObject() see a client reset (recover, recoverAll, discard) as one transaction, then go on", async () => {
  // What the reset leaves, by mode: the server's t3 and t4 and, but for
  // discard, the unacknowledged t5; recoverAll also keeps t1 and t2, which
  // the server lacked (so t1's watcher hears nothing of the reset).
  const after = {
    recover: ["c", "d", "e"],
    recoverAll: ["a", "b", "c", "d", "e"],
    discard: ["c", "d"],
  };
  for (const mode of ["recover", "recoverAll", "discard"] as const) {
    await using stack = new AsyncDisposableStack();
    const { realm, follower, object, states } = await resetStory(stack, mode);
    await states.until((s) =>
      s.error instanceof SyncError && s.error.code === "client_reset"
    );
    await realm.syncSession.waitForUpload({ signal: bounded() });
    await realm.syncSession.waitForDownload({ signal: bounded() });
    assert.equal(realm.syncSession.stats().clientResets, 1);
    const titles = (item: LiveQueryUpdate<Fields>) =>
      item.objects.map((o) => o.fields.title);
    assert.deepEqual(titles(await follower.expect("t5")), ["a", "b", "e"]);
    assert.deepEqual(
      titles(await follower.expect("the reset")),
      after[mode],
      `${mode}: the reset is one item`,
    );
    if (mode !== "recoverAll") {
      assert.deepEqual(await nextUpdate(object, "the reset"), {
        id: "t1",
        fields: undefined,
        changedFields: ["title"],
      });
    }
    // Nothing more: the next items are the next write's.
    await realm.write((tx) => tx.put("Task", "t1", { title: "a2" }));
    assert.deepEqual(
      titles(await follower.expect("a write after the reset")),
      ["a2", ...after[mode].filter((title) => title !== "a")],
      mode,
    );
    assert.deepEqual(await nextUpdate(object, "the write after"), {
      id: "t1",
      fields: { title: "a2" },
      changedFields: ["title"],
    }, mode);
  }
});

Deno.test("Realm.watch() and watchObject() error with the session's error when the session fails (client reset in manual mode), after the items already queued; a stream opened afterwards gives the current result, then the error", async () => {
  await using stack = new AsyncDisposableStack();
  const { realm, follower, object, states } = await resetStory(
    stack,
    "manual",
  );
  await states.finished();
  const error = realm.syncSession.error;
  assert.ok(
    error instanceof SyncError && error.code === "client_reset_required",
    String(error),
  );
  const isSessionError = (thrown: unknown) =>
    thrown instanceof SyncError && thrown.code === "client_reset_required";
  // t5's item was queued before the failure: it comes first.
  assert.deepEqual(
    (await follower.expect("t5")).objects.map((o) => o.id),
    ["t1", "t2", "t5"],
  );
  await assert.rejects(follower.next(), isSessionError);
  await assert.rejects(object.read(), isSessionError);
  // The local data stays readable, and new streams say what happened.
  const late = realm.watch("Task", { signal: bounded() }).getReader();
  assert.deepEqual(
    (await late.read()).value?.objects.map((o) => o.id),
    ["t1", "t2", "t5"],
  );
  await assert.rejects(late.read(), isSessionError);
  const lateObject = realm.watchObject("Task", "t2", { signal: bounded() })
    .getReader();
  assert.deepEqual((await lateObject.read()).value?.fields, { title: "b" });
  await assert.rejects(lateObject.read(), isSessionError);
});
