// Queries, indexes and live queries over durable storage and across
// lifecycles (docs/CLIENT.md "Writing and reading", "Storage", "Querying",
// "Client reset", "Rejected writes") through the public API: a Deno KV realm
// reopened with other indexes, SIGKILLed amid local writes and downloads,
// bootstrapped in commits of several parts, reset by its server in every
// mode, reverted by a refusal, opened twice, logged out and deleted, failed
// by its login or by its storage, and values of every kind through the
// store (a lone surrogate refused before it is stored).
import assert from "node:assert/strict";
import {
  App,
  type AppOpenOptions,
  type ClientResetMode,
  Credentials,
  type Fields,
  type LiveQueryUpdate,
  type Realm,
  type RealmConfig,
  type RealmStorage,
  type StorageBatch,
  type StoredRealm,
  SyncError,
  type Transaction,
  type Value,
} from "../../mod.ts";
import {
  durableAppOptions,
  fastApp,
  rejection,
  withTempDir,
} from "./_helpers.ts";
import { linesOf } from "../_helpers/lines.ts";
import { Prng, testSeed } from "../_helpers/prng.ts";
import { TcpProxy } from "../_helpers/tcp_proxy.ts";
import { startTestServer, type TestServer } from "../_helpers/test_server.ts";
import { epochSeconds, signUserJwt } from "../_helpers/user_jwt.ts";
import { bounded, Recorder } from "../_helpers/waits.ts";
import {
  BIG_OBJECTS,
  CHILD_INDEXES,
  CHILD_PATH,
  ITEM_IDS,
  itemFields,
} from "./_query_storage_child.ts";
import {
  copyOf,
  kindOf,
  modelIds,
  type ModelQuery,
  OPS,
  SAMPLES,
  show,
} from "./_query_model.ts";

const SECRET = "query-storage-conformance-secret";
const childPath =
  new URL("./_query_storage_child.ts", import.meta.url).pathname;
/** Waits that span a reconnect, a server restart or a reset under load. */
const LONG_MS = 20_000;

function options(
  baseUrl: string,
  kvPath: string,
  extra: Partial<AppOpenOptions> = {},
): AppOpenOptions {
  return durableAppOptions(baseUrl, kvPath, { logger: () => {}, ...extra });
}

function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  return withTempDir("tether-query-storage-", fn);
}

/** Runs `fn` with a seeded generator; the seed is printed on failure. */
async function seeded(fn: (prng: Prng) => Promise<void>): Promise<void> {
  const seed = testSeed();
  try {
    await fn(new Prng(seed));
  } catch (error) {
    console.error(`seed ${seed} (TETHER_SEED=${seed} replays it)`);
    throw error;
  }
}

function jwtFor(sub: string): Promise<string> {
  return signUserJwt(SECRET, { sub, exp: epochSeconds(3_600_000) });
}

/** Takes the proxy's server away: new connections refused, open ones cut. */
function offline(proxy: TcpProxy): void {
  proxy.mode = "refuse";
  proxy.dropAll();
}

function ids(objects: readonly { id: string }[]): string[] {
  return objects.map((o) => o.id);
}

/** The same filter, under `$or`: the docs say it uses no index. */
function unindexed(where: Record<string, unknown>): Record<string, unknown> {
  return { $or: [where] };
}

/**
 * Checks `realm` answers `query` as the model over `model` (ids, fields,
 * count), and alike through an index and without one.
 */
function checkQuery(
  realm: Realm,
  type: string,
  model: ReadonlyMap<string, Fields>,
  query: ModelQuery,
  label: string,
): void {
  const text = `${label}: ${show(query)}`;
  const want = modelIds(model, query);
  const got = realm.objects(type, query as never);
  assert.deepEqual(ids(got), want, text);
  for (const object of got) {
    assert.deepEqual(object.fields, model.get(object.id), text);
  }
  const whole = modelIds(model, { where: query.where ?? {} }).length;
  assert.equal(realm.count(type, { where: query.where } as never), whole, text);
  if (query.where !== undefined) {
    const plain = { ...query, where: unindexed(query.where) };
    assert.deepEqual(ids(realm.objects(type, plain as never)), want, text);
    assert.equal(
      realm.count(type, { where: plain.where } as never),
      whole,
      text,
    );
  }
}

/** The realm's objects of `type` as a model. */
function stored(realm: Realm, type: string): Map<string, Fields> {
  return new Map(realm.objects(type).map((o) => [o.id, o.fields]));
}

/** The first item of a live query, then the stream is cancelled. */
async function firstItem(
  realm: Realm,
  type: string,
  query: ModelQuery,
): Promise<{ id: string; fields: Fields }[]> {
  const reader = realm.watch(type, { ...query, signal: bounded() } as never)
    .getReader();
  try {
    const first = await reader.read();
    assert.ok(!first.done, "the live query ended at once");
    assert.deepEqual(
      first.value.changes,
      {
        insertions: first.value.objects.map((_, i) => i),
        deletions: [],
        modifications: [],
      },
    );
    return [...first.value.objects];
  } finally {
    await reader.cancel();
  }
}

/**
 * Waits until a live query's latest item holds `want`, and checks that its
 * items' change sets patch each result into the next.
 */
async function untilPatched(
  watched: Recorder<LiveQueryUpdate<Fields>>,
  want: string[],
): Promise<void> {
  await watched.until((item) =>
    JSON.stringify(ids(item.objects)) === JSON.stringify(want)
  );
  let list = ids(watched.items[0]!.objects);
  for (const { objects, changes } of watched.items.slice(1)) {
    for (const index of [...changes.deletions].reverse()) {
      list.splice(index, 1);
    }
    for (const index of changes.insertions) {
      list.splice(index, 0, objects[index]!.id);
    }
    assert.deepEqual(list, ids(objects));
    list = ids(objects);
  }
  assert.deepEqual(ids(watched.items.at(-1)!.objects), want);
}

// ---------------------------------------------------------------------------
// Random data and queries over every value kind.

const FIELDS = ["a", "b", "c"];

function randomValue(prng: Prng): Value {
  return prng.int(3) === 0
    ? prng.pick([0, 1, 2, "a", "b", true, null] as Value[])
    : copyOf(prng.pick(SAMPLES));
}

function randomFields(prng: Prng): Fields {
  const fields: Fields = {};
  for (const name of FIELDS) {
    if (prng.int(4) !== 0) fields[name] = randomValue(prng);
  }
  return fields;
}

function randomCondition(prng: Prng): unknown {
  const operand = randomValue(prng);
  if (prng.int(3) === 0 && kindOf(operand) < 7) return operand;
  const condition: Record<string, unknown> = {};
  const op = prng.pick([...OPS, "in"]);
  condition[op] = op === "in"
    ? Array.from({ length: 1 + prng.int(3) }, () => randomValue(prng))
    : operand;
  return condition;
}

function randomQuery(prng: Prng, size: number): ModelQuery {
  const query: ModelQuery = {};
  const where: Record<string, unknown> = {};
  for (let e = 0, n = prng.int(3); e < n; e++) {
    where[prng.pick([...FIELDS, "d"])] = randomCondition(prng);
  }
  if (prng.int(5) === 0) {
    where.$or = [{ [prng.pick(FIELDS)]: randomCondition(prng) }, {
      [prng.pick(FIELDS)]: randomCondition(prng),
    }];
  }
  if (prng.int(6) !== 0) query.where = where;
  if (prng.int(3) !== 0) {
    query.sort = Array.from({ length: 1 + prng.int(2) }, () => [
      prng.pick([...FIELDS, "d"]),
      prng.pick(["asc", "desc"] as const),
    ]);
  }
  if (prng.int(3) === 0) query.limit = prng.int(size + 3);
  if (prng.int(3) === 0) query.offset = prng.int(size + 3);
  return query;
}

/**
 * Random puts, updates and deletes of type `T` in `transactions` writes,
 * mirrored in `model`; every value ever written goes into `written`.
 */
async function randomWrites(
  realm: Realm,
  prng: Prng,
  model: Map<string, Fields>,
  written: Value[],
  transactions: number,
): Promise<void> {
  const pool = Array.from({ length: 60 }, (_, i) => `o${i}`);
  for (let t = 0; t < transactions; t++) {
    await realm.write((tx) => {
      for (let s = 0, n = 1 + prng.int(8); s < n; s++) {
        const id = prng.pick(pool);
        const roll = prng.int(10);
        if (roll < 5) {
          const fields = randomFields(prng);
          tx.put("T", id, fields);
          model.set(id, fields);
          written.push(...Object.values(fields));
        } else if (roll < 8 && model.has(id)) {
          const fields = randomFields(prng);
          tx.update("T", id, fields);
          model.set(id, { ...model.get(id), ...fields });
          written.push(...Object.values(fields));
        } else {
          tx.delete("T", id);
          model.delete(id);
        }
      }
    });
  }
}

/**
 * Every value ever written, looked up by equality, `in` and a range on
 * every field (indexed or not): an index entry left from an overwritten
 * value or a deleted object would show here.
 */
function checkHistory(
  realm: Realm,
  model: ReadonlyMap<string, Fields>,
  written: readonly Value[],
  label: string,
): void {
  // Each distinct value once (show() tells -0 from 0 and 1 from 1n).
  const distinct = new Map(written.map((value) => [show(value), value]));
  for (const value of distinct.values()) {
    for (const name of FIELDS) {
      for (
        const condition of [{ eq: value }, { in: [value] }, { gte: value }]
      ) {
        checkQuery(
          realm,
          "T",
          model,
          { where: { [name]: copyOf(condition as Value) } },
          label,
        );
      }
    }
  }
}

Deno.test("openRealm({ indexes }) on a durable realm reopened after its app closed, with indexes it did not have, with other indexes and with none: every query, count() and live query gives the model's answer, each index built from what is stored (no entry of a deleted object or an overwritten value), and indexes go on following later writes", async () => {
  await seeded(async (prng) => {
    await withDir(async (dir) => {
      const kvPath = `${dir}/app.kv`;
      await using server = await startTestServer();
      const model = new Map<string, Fields>();
      const written: Value[] = [];
      // First run: no index at all, a history of overwrites and deletes.
      {
        await using app = await App.open(options(server.url, kvPath));
        const user = await app.logIn(Credentials.anonymous());
        await using realm = await user.openRealm({ path: "/~/q" });
        await randomWrites(realm, prng, model, written, 25);
      }
      const specs: (RealmConfig["indexes"] | undefined)[] = [
        { T: ["a", "b"] },
        { T: ["c"], Empty: ["a"] },
        undefined,
        { T: ["a", "b", "c", "d"] },
      ];
      for (const [run, indexes] of specs.entries()) {
        const label = `run ${run + 1}, indexes ${show(indexes)}`;
        await using app = await App.open(options(server.url, kvPath));
        const user = app.currentUser;
        assert.ok(user !== undefined);
        await using realm = await user.openRealm({
          path: "/~/q",
          ...(indexes === undefined ? {} : { indexes }),
        });
        assert.deepEqual(stored(realm, "T"), model, label);
        assert.deepEqual(realm.objects("Empty", { where: { a: null } }), []);
        checkHistory(realm, model, written, `${label}, reopened`);
        for (let q = 0; q < 40; q++) {
          const query = randomQuery(prng, model.size);
          checkQuery(realm, "T", model, query, `${label}, reopened`);
          if (q % 8 === 0) {
            assert.deepEqual(
              ids(await firstItem(realm, "T", query)),
              modelIds(model, query),
              `watch ${label}: ${show(query)}`,
            );
          }
        }
        // Indexes filled at open follow the writes that come after.
        await randomWrites(realm, prng, model, written, 6);
        checkHistory(realm, model, written, `${label}, written after`);
      }
    });
  });
});

/** A child process running `_query_storage_child.ts`, read by line. */
function spawnChild(args: string[]) {
  const proc = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--unstable-kv", "--no-check", childPath, ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stderr = new Response(proc.stderr).text();
  const lines = linesOf(proc.stdout)[Symbol.asyncIterator]();
  return {
    /** The next line (undefined at the end), bounded. */
    async next(): Promise<string | undefined> {
      const signal = bounded(LONG_MS);
      let onAbort!: () => void;
      const aborted = new Promise<never>((_, reject) => {
        onAbort = () => reject(signal.reason);
        signal.addEventListener("abort", onAbort, { once: true });
      });
      try {
        const item = await Promise.race([lines.next(), aborted]);
        return item.done ? undefined : item.value;
      } finally {
        signal.removeEventListener("abort", onAbort);
      }
    },
    /** Kills it, drains its output, returns how it ended. */
    async kill() {
      try {
        proc.kill("SIGKILL");
      } catch {
        // It had ended already.
      }
      for (;;) if ((await lines.next()).done) break;
      return { status: await proc.status, stderr: await stderr };
    },
  };
}

/** Filters on the child's indexed fields and one that is not. */
const ITEM_WHERES: Record<string, unknown>[] = [
  ...[0, 1, 2, 3, null].map((g) => ({ g })),
  { g: { gte: 1 } },
  { g: { lt: 2 } },
  { g: { in: [0, 3] } },
  { g: { ne: 1 } },
  ...[null, true, -0, 0, 1.5, NaN, 7n, "x", new Uint8Array([1]), new Date(5)]
    .map((v) => ({ v: { eq: v } })),
  { v: { eq: [1] } },
  { v: { eq: { k: 1 } } },
  { v: { gt: -1 } },
  { v: { lte: "x" } },
  { v: { in: [NaN, -0, "y"] } },
  { g: 2, v: { ne: null } },
  { by: "server", g: { gte: 0 } },
  { by: "child" },
];

/**
 * Indexed queries, the same filters without an index, and the model over
 * `objects(type)` all agree.
 */
function checkItems(realm: Realm, label: string): Map<string, Fields> {
  const model = stored(realm, "Item");
  for (const where of ITEM_WHERES) {
    for (const sort of [undefined, [["v", "desc"], ["g", "asc"]]]) {
      checkQuery(
        realm,
        "Item",
        model,
        sort === undefined ? { where } : { where, sort } as ModelQuery,
        label,
      );
    }
  }
  return model;
}

Deno.test("An indexed durable realm SIGKILLed amid local writes and downloads reopens with indexed queries equal to unindexed ones and to objects(type); a live query opened after reopening starts from exactly what is stored, and the indexes and the live query follow the realm as it catches up with the server", async () => {
  await seeded(async (prng) => {
    await withDir(async (dir) => {
      const kvPath = `${dir}/app.kv`;
      await using server = await startTestServer({
        permissions: () => "readwrite",
        // A big changeset comes down in one DOWNLOAD, stored in parts.
        downloadBatchBytes: 4 * 1024 * 1024,
      });
      await using proxy = new TcpProxy(server.addr);
      {
        await using app = await App.open(options(proxy.url, kvPath));
        await app.logIn(Credentials.anonymous());
      }
      const remote = server.realm(CHILD_PATH);
      let serverWrites = 0;
      const serverWrite = () =>
        remote.write((tx) => {
          if (++serverWrites % 4 === 0) {
            for (let k = 0; k < BIG_OBJECTS; k++) {
              tx.put("Item", `s${k}`, {
                ...itemFields(prng, "server"),
                pad: `${serverWrites}`.padEnd(300, "."),
              });
            }
            return;
          }
          for (let s = 0, n = 1 + prng.int(3); s < n; s++) {
            const id = prng.pick(ITEM_IDS);
            if (prng.int(4) === 0) tx.delete("Item", id);
            else tx.put("Item", id, itemFields(prng, "server"));
          }
        });
      for (let i = 0; i < 10; i++) await serverWrite();
      const child = spawnChild([kvPath, proxy.url, String(prng.nextUint32())]);
      const killAfter = 5 + prng.int(25);
      let confirmed = 0;
      let ended;
      try {
        assert.equal(await child.next(), "open");
        // The server writes while the child writes: downloads arrive
        // between (and during) the child's commits.
        while (confirmed < killAfter) {
          const written = serverWrite();
          const line = await child.next();
          assert.ok(line !== undefined, "the child ended early");
          if (/^ok \d+$/.test(line)) confirmed++;
          await written;
        }
      } finally {
        ended = await child.kill();
      }
      assert.equal(ended.status.signal, "SIGKILL", ended.stderr);

      // This process reopens the store offline, with another index too.
      offline(proxy);
      await using app = await App.open(options(proxy.url, kvPath));
      const user = app.currentUser;
      assert.ok(user !== undefined);
      await using realm = await user.openRealm({
        path: CHILD_PATH,
        indexes: CHILD_INDEXES,
      });
      await using other = await user.openRealm({
        path: CHILD_PATH,
        indexes: { Item: ["by"] },
      });
      const reopened = checkItems(realm, "reopened");
      assert.ok(reopened.size > 0);
      // A big transaction, local or downloaded, is there whole or not at
      // all.
      for (const prefix of ["b", "s"]) {
        const big = [...reopened].filter(([id]) => id.startsWith(prefix));
        assert.ok(
          big.length === 0 || big.length === BIG_OBJECTS,
          `${prefix}: ${big.length}`,
        );
        assert.ok(new Set(big.map(([, f]) => f.pad)).size <= 1);
      }
      checkItems(other, "reopened, second handle");
      const live: ModelQuery = {
        where: { g: { in: [1, 2] } },
        sort: [["v", "asc"]],
      };
      const first = await firstItem(realm, "Item", live);
      assert.deepEqual(ids(first), modelIds(reopened, live));
      for (const object of first) {
        assert.deepEqual(object.fields, reopened.get(object.id));
      }
      await using watched = new Recorder(
        realm.watch("Item", { ...live, signal: bounded(LONG_MS) } as never),
      );

      // The server comes back: the pending writes go up, the server's come
      // down, and every query agrees with the server's state.
      for (let i = 0; i < 5; i++) await serverWrite();
      proxy.mode = "forward";
      app.reconnect();
      await realm.syncSession.waitForUpload({ signal: bounded(LONG_MS) });
      await realm.syncSession.waitForDownload({ signal: bounded(LONG_MS) });
      const onServer = new Map(
        (await remote.objects("Item")).map((o) => [o.id, o.fields]),
      );
      const caughtUp = checkItems(realm, "caught up");
      assert.deepEqual(caughtUp, onServer);
      checkItems(other, "caught up, second handle");
      await untilPatched(watched, modelIds(caughtUp, live));
    });
  });
});

// ---------------------------------------------------------------------------
// Client reset and rejected writes on a durable, indexed realm.

/** Copies a KV file with its write-ahead log, replacing `to`. */
async function copyStore(from: string, to: string): Promise<void> {
  for (const suffix of ["", "-wal", "-shm"]) {
    await Deno.remove(`${to}${suffix}`).catch(() => {});
    await Deno.copyFile(`${from}${suffix}`, `${to}${suffix}`).catch(
      (error) => {
        if (!(error instanceof Deno.errors.NotFound)) throw error;
      },
    );
  }
}

function startServerOn(kv: string): Promise<TestServer> {
  return startTestServer({
    kv,
    auth: { jwtSecret: SECRET },
    shutdownTimeoutMs: 500,
  });
}

/** A filter on the indexed `tag` and the same without the index. */
function tagged(realm: Realm, tag: string): string[] {
  const got = ids(realm.objects("Task", { where: { tag } }));
  assert.deepEqual(
    ids(realm.objects("Task", { where: unindexed({ tag }) } as never)),
    got,
    `tag ${tag}`,
  );
  assert.equal(realm.count("Task", { where: { tag } }), got.length);
  return got;
}

async function resetStory(mode: ClientResetMode): Promise<void> {
  await withDir(async (dir) => {
    const live = `${dir}/live.kv`;
    let server = await startServerOn(live);
    await server.shutdown();
    // Before any realm: holds the signing key, so the wipe keeps logins.
    await copyStore(live, `${dir}/empty.kv`);
    server = await startServerOn(live);
    await using proxy = new TcpProxy(server.addr);
    try {
      const kvPath = `${dir}/client.kv`;
      // What the hooks' realms answer through the index.
      const hooks: Record<string, string[]>[] = [];
      const seen = (realm: Realm) =>
        Object.fromEntries(
          ["old", "new", "pending"].map((tag) => [tag, tagged(realm, tag)]),
        );
      const open = async (app: App, onAfter?: () => void) => {
        const user = app.currentUser ??
          await app.logIn(Credentials.jwt(await jwtFor("alice")));
        return await user.openRealm({
          path: "/~/todos",
          indexes: { Task: ["tag"] },
          clientReset: {
            mode,
            onBefore: (realm) => void hooks.push(seen(realm)),
            onAfter: (realm) => {
              hooks.push(seen(realm));
              onAfter?.();
            },
          },
        });
      };
      {
        const reset = Promise.withResolvers<void>();
        await using app = await App.open(options(proxy.url, kvPath));
        await using realm = await open(app, reset.resolve);
        await (await realm.write((tx) => {
          for (const id of ["t1", "t2", "t3"]) {
            tx.put("Task", id, { tag: "old" });
          }
        })).waitForUpload({ signal: bounded() });
        assert.deepEqual(tagged(realm, "old"), ["t1", "t2", "t3"]);
        await using oldTag = new Recorder(
          realm.watch("Task", {
            where: { tag: "old" },
            signal: bounded(LONG_MS),
          }),
        );
        await using item = new Recorder(
          realm.watchObject("Task", "t1", { signal: bounded(LONG_MS) }),
        );
        // Offline, a write the server never sees.
        offline(proxy);
        await realm.write((tx) => {
          tx.put("Task", "p1", { tag: "pending" });
          tx.put("Task", "t1", { tag: "pending" });
        });
        assert.deepEqual(tagged(realm, "pending"), ["p1", "t1"]);
        assert.deepEqual(tagged(realm, "old"), ["t2", "t3"]);
        // The server loses the realm; another client writes there anew.
        await server.shutdown();
        await copyStore(`${dir}/empty.kv`, live);
        server = await startServerOn(live);
        await server.realm("/alice/todos").write((tx) => {
          tx.put("Task", "n1", { tag: "new" });
          tx.put("Task", "t2", { tag: "new" });
        });
        proxy.retarget(server.addr);
        proxy.mode = "forward";
        app.reconnect();
        if (mode === "manual") {
          // The session fails; the local data and its indexes stay.
          const error = await rejection(
            realm.syncSession.waitForDownload({ signal: bounded(LONG_MS) }),
          );
          assert.equal(error.code, "client_reset_required");
          assert.equal(await endOf(oldTag), "client_reset_required");
        } else {
          await abortable(reset.promise, bounded(LONG_MS));
        }
        const want = expected[mode];
        for (const [tag, tagIds] of Object.entries(want.tags)) {
          assert.deepEqual(tagged(realm, tag), tagIds, `${mode} ${tag}`);
        }
        // onBefore saw the state before the reset, onAfter the state after.
        assert.deepEqual(
          hooks,
          mode === "manual"
            ? []
            : [{ old: ["t2", "t3"], new: [], pending: ["p1", "t1"] }, {
              ...want.tags,
            }],
        );
        // The live query saw t1 leave (the pending put), then the reset as
        // one remote transaction, and nothing else.
        if (mode !== "manual") {
          await oldTag.until(
            (i) =>
              JSON.stringify(ids(i.objects)) === JSON.stringify(want.tags.old),
            { from: 2 },
          );
        }
        assert.deepEqual(
          oldTag.items.map((i) => [ids(i.objects), i.changes]),
          [
            [["t1", "t2", "t3"], {
              insertions: [0, 1, 2],
              deletions: [],
              modifications: [],
            }],
            [["t2", "t3"], {
              insertions: [],
              deletions: [0],
              modifications: [],
            }],
            ...want.resetItem,
          ],
        );
        // t1 as the pending put left it, or gone (discard).
        if (mode === "discard") {
          await item.until((i) => i.fields === undefined);
          assert.equal(realm.get("Task", "t1"), undefined);
        } else {
          assert.deepEqual(realm.get("Task", "t1"), { tag: "pending" });
        }
        if (mode !== "manual") {
          await realm.syncSession.waitForUpload({ signal: bounded(LONG_MS) });
        }
      }
      // Reopened from the store: the same answers, from the indexes rebuilt.
      offline(proxy);
      await using app = await App.open(options(proxy.url, kvPath));
      await using realm = await open(app);
      const want = expected[mode];
      for (const [tag, tagIds] of Object.entries(want.tags)) {
        assert.deepEqual(tagged(realm, tag), tagIds, `reopened ${mode} ${tag}`);
      }
      assert.deepEqual(
        ids(await firstItem(realm, "Task", { sort: [["tag", "asc"]] })),
        want.sorted,
      );
    } finally {
      await server.shutdown();
    }
  });
}

/** What each mode leaves, by tag, and the reset's item of a live query. */
const expected: Record<ClientResetMode, {
  tags: Record<"old" | "new" | "pending", string[]>;
  resetItem: unknown[];
  sorted: string[];
}> = {
  discard: {
    tags: { old: [], new: ["n1", "t2"], pending: [] },
    resetItem: [[[], { insertions: [], deletions: [0, 1], modifications: [] }]],
    sorted: ["n1", "t2"],
  },
  recover: {
    tags: { old: [], new: ["n1", "t2"], pending: ["p1", "t1"] },
    resetItem: [[[], { insertions: [], deletions: [0, 1], modifications: [] }]],
    sorted: ["n1", "t2", "p1", "t1"],
  },
  // t3 is given back to the server; t2 is newer there.
  recoverAll: {
    tags: { old: ["t3"], new: ["n1", "t2"], pending: ["p1", "t1"] },
    resetItem: [[["t3"], {
      insertions: [],
      deletions: [0],
      modifications: [],
    }]],
    sorted: ["n1", "t2", "t3", "p1", "t1"],
  },
  manual: {
    tags: { old: ["t2", "t3"], new: [], pending: ["p1", "t1"] },
    resetItem: [],
    sorted: ["t2", "t3", "p1", "t1"],
  },
};

/** `promise`, or the signal's reason once it aborts. */
function abortable<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(resolve, reject).finally(() =>
      signal.removeEventListener("abort", onAbort)
    );
  });
}

Deno.test('clientReset "discard" on a durable, indexed realm: what the server lost leaves every index and live query in one remote item, a query by the lost value returns nothing, and the realm reopens from the store with the same answers', async () => {
  await resetStory("discard");
});

Deno.test('clientReset "recover" on a durable, indexed realm: the server\'s state plus the pending object, no index entry of what the server lost, and the same answers after reopening', async () => {
  await resetStory("recover");
});

Deno.test('clientReset "recoverAll" on a durable, indexed realm: what the server lost and the client holds comes back into the indexes, what the server holds newer wins, and the same answers after reopening', async () => {
  await resetStory("recoverAll");
});

Deno.test('clientReset "manual" on a durable, indexed realm: live queries error with client_reset_required after their queued items, the local data and its indexes stay, and answer the same after reopening', async () => {
  await resetStory("manual");
});

Deno.test('clientReset "recover" after the server is restored from a backup: objects it holds as the client does wake no live query and no object watcher, one live query sees only the lost object leave, and changes() reports only that', async () => {
  await withDir(async (dir) => {
    const live = `${dir}/live.kv`;
    let server = await startServerOn(live);
    await using proxy = new TcpProxy(server.addr);
    try {
      const kvPath = `${dir}/client.kv`;
      const reset = Promise.withResolvers<void>();
      await using app = await App.open(options(proxy.url, kvPath));
      const user = await app.logIn(Credentials.jwt(await jwtFor("alice")));
      await using realm = await user.openRealm({
        path: "/~/todos",
        indexes: { Task: ["tag"] },
        clientReset: { mode: "recover", onAfter: () => reset.resolve() },
      });
      await (await realm.write((tx) => {
        for (const id of ["t1", "t2", "t3"]) tx.put("Task", id, { tag: "x" });
      })).waitForUpload({ signal: bounded() });
      // The backup, taken while the server is down.
      await server.shutdown();
      await copyStore(live, `${dir}/backup.kv`);
      server = await startServerOn(live);
      proxy.retarget(server.addr);
      proxy.dropAll();
      await (await realm.write((tx) => tx.put("Task", "t4", { tag: "y" })))
        .waitForUpload({ signal: bounded(LONG_MS) });
      const signal = bounded(LONG_MS);
      await using xs = new Recorder(
        realm.watch("Task", { where: { tag: "x" }, signal }),
      );
      await using ys = new Recorder(
        realm.watch("Task", { where: { tag: "y" }, signal }),
      );
      await using t1 = new Recorder(
        realm.watchObject("Task", "t1", { signal }),
      );
      await using changes = new Recorder(realm.changes({ signal }));
      // Restored from the backup: t4, acknowledged, is lost.
      await server.shutdown();
      await copyStore(`${dir}/backup.kv`, live);
      server = await startServerOn(live);
      proxy.retarget(server.addr);
      proxy.dropAll();
      await abortable(reset.promise, bounded(LONG_MS));
      await ys.until((i) => i.objects.length === 0);
      await changes.until(() => true);
      assert.equal(realm.syncSession.stats().clientResets, 1);
      assert.deepEqual(
        ys.items.map((i) => [ids(i.objects), i.changes]),
        [
          [["t4"], { insertions: [0], deletions: [], modifications: [] }],
          [[], { insertions: [], deletions: [0], modifications: [] }],
        ],
      );
      // One more local write: every stream has seen the reset by then.
      await realm.write((tx) => tx.put("Other", "o", {}));
      await changes.until((c) => c.origin === "local");
      assert.deepEqual(
        changes.items.map((c) => [c.origin, c.changes]),
        [
          ["remote", [{ type: "Task", id: "t4", op: "delete" }]],
          ["local", [{
            type: "Other",
            id: "o",
            op: "put",
            fields: {},
          }]],
        ],
      );
      assert.deepEqual(xs.items.map((i) => ids(i.objects)), [[
        "t1",
        "t2",
        "t3",
      ]]);
      assert.deepEqual(t1.items.map((i) => i.fields), [{ tag: "x" }]);
      assert.deepEqual(tagged(realm, "x"), ["t1", "t2", "t3"]);
      assert.deepEqual(tagged(realm, "y"), []);
    } finally {
      await server.shutdown();
    }
  });
});

Deno.test("A rejected write on a durable, indexed realm: the revert leaves no index entry of the refused values (a query by them returns nothing, with or without an index), live queries and watchObject report the write and its revert, and the realm reopens with the same answers and nothing pending", async () => {
  await withDir(async (dir) => {
    const kvPath = `${dir}/app.kv`;
    await using server = await startTestServer({
      validateChangeset: ({ changes }) =>
        changes.every((c) => c.fields?.tag !== "bad"),
    });
    const indexes = { Task: ["tag", "n"] };
    const check = (realm: Realm, label: string) => {
      assert.deepEqual(tagged(realm, "bad"), [], label);
      assert.deepEqual(tagged(realm, "ok"), ["t1", "t2"], label);
      const byN = (where: Record<string, unknown>) =>
        ids(realm.objects("Task", { where } as never));
      assert.deepEqual(byN({ n: 10 }), [], label);
      assert.deepEqual(byN({ n: { gte: 3 } }), [], label);
      assert.deepEqual(byN({ n: { in: [1, 3] } }), ["t1"], label);
      assert.deepEqual(byN(unindexed({ n: { gte: 3 } })), [], label);
      assert.deepEqual(realm.get("Task", "t1"), { tag: "ok", n: 1 }, label);
      assert.equal(realm.get("Task", "t3"), undefined, label);
    };
    {
      await using app = await App.open(options(server.url, kvPath));
      const user = await app.logIn(Credentials.anonymous());
      await using realm = await user.openRealm({ path: "/~/r", indexes });
      await (await realm.write((tx) => {
        tx.put("Task", "t1", { tag: "ok", n: 1 });
        tx.put("Task", "t2", { tag: "ok", n: 2 });
      })).waitForUpload({ signal: bounded() });
      const signal = bounded(LONG_MS);
      await using bad = new Recorder(
        realm.watch("Task", { where: { tag: "bad" }, signal }),
      );
      await using ok = new Recorder(
        realm.watch("Task", {
          where: { tag: "ok" },
          sort: [["n", "asc"]],
          signal,
        }),
      );
      await using t1 = new Recorder(
        realm.watchObject("Task", "t1", { signal }),
      );
      const receipt = await realm.write((tx) => {
        tx.update("Task", "t1", { tag: "bad", n: 10 });
        tx.put("Task", "t3", { tag: "bad", n: 3 });
        tx.delete("Task", "t2");
      });
      const error = await rejection(
        receipt.waitForUpload({ signal: bounded() }),
      );
      assert.equal(error.code, "write_rejected");
      assert.equal((error.cause as SyncError).code, "validation_failed");
      check(realm, "reverted");
      await bad.until((i) => i.objects.length === 0, { from: 2 });
      assert.deepEqual(
        bad.items.map((i) => [ids(i.objects), i.changes]),
        [
          [[], { insertions: [], deletions: [], modifications: [] }],
          [["t1", "t3"], {
            insertions: [0, 1],
            deletions: [],
            modifications: [],
          }],
          [[], { insertions: [], deletions: [0, 1], modifications: [] }],
        ],
      );
      await ok.until((i) => i.objects.length === 2, { from: 1 });
      assert.deepEqual(
        ok.items.map((i) => [ids(i.objects), i.changes]),
        [
          [["t1", "t2"], {
            insertions: [0, 1],
            deletions: [],
            modifications: [],
          }],
          [[], { insertions: [], deletions: [0, 1], modifications: [] }],
          [["t1", "t2"], {
            insertions: [0, 1],
            deletions: [],
            modifications: [],
          }],
        ],
      );
      await t1.until((i) => i.fields?.tag === "ok", { from: 1 });
      assert.deepEqual(
        t1.items.map((i) => [i.fields, i.changedFields]),
        [
          [{ tag: "ok", n: 1 }, ["n", "tag"]],
          [{ tag: "bad", n: 10 }, ["n", "tag"]],
          [{ tag: "ok", n: 1 }, ["n", "tag"]],
        ],
      );
      await realm.syncSession.waitForUpload({ signal: bounded() });
    }
    await using app = await App.open(options(server.url, kvPath));
    await using realm = await app.currentUser!.openRealm({
      path: "/~/r",
      indexes,
    });
    assert.deepEqual(realm.pendingWrites(), []);
    await check(realm, "reopened");
    assert.deepEqual(
      ids(await firstItem(realm, "Task", { where: { tag: "bad" } })),
      [],
    );
  });
});

Deno.test("Two handles of one durable path opened with different indexes answer alike, before and after later writes and after one closes, and after the app reopens; User.logOut() keeps the data and its answers; logOut({ deleteLocalData: true }) ends the user's live queries, and the realm reopened offline answers every query, count and live query as an empty realm", async () => {
  await seeded(async (prng) => {
    await withDir(async (dir) => {
      const kvPath = `${dir}/app.kv`;
      await using server = await startTestServer({
        auth: { jwtSecret: SECRET },
      });
      await using proxy = new TcpProxy(server.addr);
      const model = new Map<string, Fields>();
      const written: Value[] = [];
      const logIn = async (app: App) => {
        proxy.mode = "forward";
        const user = await app.logIn(Credentials.jwt(await jwtFor("carol")));
        // Then offline: what the realm holds comes from the store alone.
        offline(proxy);
        return user;
      };
      const checkRandom = (realms: Realm[], label: string) => {
        for (let q = 0; q < 25; q++) {
          const query = randomQuery(prng, model.size);
          for (const realm of realms) {
            checkQuery(realm, "T", model, query, label);
          }
        }
      };
      {
        await using app = await App.open(options(proxy.url, kvPath));
        const user = await logIn(app);
        const first = await user.openRealm({
          path: "/~/two",
          indexes: { T: ["a"] },
        });
        await using second = await user.openRealm({
          path: "/~/two",
          indexes: { T: ["b"] },
        });
        try {
          await randomWrites(first, prng, model, written, 10);
          checkRandom([first, second], "two handles");
          checkHistory(second, model, written, "two handles");
        } finally {
          await first.close();
        }
        await randomWrites(second, prng, model, written, 5);
        checkRandom([second], "the first closed");
        checkHistory(second, model, written, "the first closed");
      }
      await using app = await App.open(options(proxy.url, kvPath));
      let user = app.currentUser!;
      {
        await using realm = await user.openRealm({
          path: "/~/two",
          indexes: { T: ["a", "b"] },
        });
        checkHistory(realm, model, written, "reopened");
      }
      await user.logOut();
      user = await logIn(app);
      {
        await using realm = await user.openRealm({
          path: "/~/two",
          indexes: { T: ["c"] },
        });
        checkHistory(realm, model, written, "logged out and in");
        await using watched = new Recorder(
          realm.watch("T", { signal: bounded(LONG_MS) }),
        );
        await watched.until(() => true);
        await user.logOut({ deleteLocalData: true });
        await watched.finished();
        assert.deepEqual(watched.outcome, { kind: "end" });
      }
      user = await logIn(app);
      await using realm = await user.openRealm({
        path: "/~/two",
        indexes: { T: ["a", "b", "c"] },
      });
      const empty = new Map<string, Fields>();
      assert.deepEqual(realm.objects("T"), []);
      checkHistory(realm, empty, written, "deleted");
      assert.deepEqual(await firstItem(realm, "T", {}), []);
      assert.deepEqual(
        await firstItem(realm, "T", { where: { a: { ne: null } } }),
        [],
      );
    });
  });
});

Deno.test("Values of every kind round-trip through a durable store: after the app reopens, fields are equal (-0, NaN, bigints, dates, bytes, nested arrays and objects), equality finds each value with or without an index, and sorts in both directions give the order they gave before", async () => {
  await seeded(async (prng) => {
    await withDir(async (dir) => {
      const kvPath = `${dir}/app.kv`;
      await using server = await startTestServer();
      const values = prng.shuffle(SAMPLES.map((v, i) => [i, v] as const));
      const model = new Map<string, Fields>();
      const queries: ModelQuery[] = [
        { sort: [["v", "asc"]] },
        { sort: [["v", "desc"]] },
        { sort: [["n", "asc"], ["v", "desc"]] },
        { sort: [["n", "desc"]] },
        { where: { v: { ne: null } }, sort: [["v", "asc"]], limit: 10 },
        ...SAMPLES.map((v) => ({ where: { v: { eq: copyOf(v) } } })),
        ...SAMPLES.map((v) => ({ where: { v: { gt: copyOf(v) } } })),
        ...SAMPLES.map((v) => ({
          where: { n: { eq: { deep: [copyOf(v)] } } },
        })),
      ];
      let before: string[][];
      let objectsBefore: unknown;
      {
        await using app = await App.open(options(server.url, kvPath));
        const user = await app.logIn(Credentials.anonymous());
        await using realm = await user.openRealm({ path: "/~/kinds" });
        await realm.write((tx) => {
          for (const [i, v] of values) {
            const fields = { v: copyOf(v), n: { deep: [copyOf(v)] } };
            tx.put("K", `k${i}`, fields);
            model.set(`k${i}`, fields);
          }
        });
        before = queries.map((q) => ids(realm.objects("K", q as never)));
        objectsBefore = realm.objects("K");
        for (const [index, query] of queries.entries()) {
          assert.deepEqual(before[index], modelIds(model, query), show(query));
        }
      }
      for (const indexes of [undefined, { K: ["v", "n"] }]) {
        await using app = await App.open(options(server.url, kvPath));
        await using realm = await app.currentUser!.openRealm({
          path: "/~/kinds",
          ...(indexes === undefined ? {} : { indexes }),
        });
        const label = `reopened with indexes ${show(indexes)}`;
        // In the order first seen, as before the restart.
        assert.deepEqual(realm.objects("K"), objectsBefore, label);
        for (const [index, query] of queries.entries()) {
          checkQuery(realm, "K", model, query, label);
          assert.deepEqual(
            ids(realm.objects("K", query as never)),
            before[index],
            `${label}: ${show(query)}`,
          );
        }
        for (const [i, v] of values) {
          const got = realm.get("K", `k${i}`);
          assert.ok(got !== undefined);
          // deepStrictEqual tells -0 from 0 and holds NaN equal to NaN.
          assert.deepEqual(got, { v, n: { deep: [v] } }, show(v));
          assert.ok(Object.is(got.v, v) || typeof v === "object", show(v));
        }
        assert.deepEqual(
          ids(await firstItem(realm, "K", { sort: [["v", "desc"]] })),
          before[1],
        );
      }
    });
  });
});

Deno.test("Realm.objects(type) without a query keeps the order first seen across a reopen, also after many commits have had the store rewritten, and every query still answers as the model", async () => {
  await seeded(async (prng) => {
    await withDir(async (dir) => {
      const kvPath = `${dir}/app.kv`;
      await using server = await startTestServer();
      const model = new Map<string, Fields>();
      const order = prng.shuffle(
        Array.from({ length: 300 }, (_, i) => `o${String(i).padStart(3, "0")}`),
      );
      let firstSeen: string[];
      {
        await using app = await App.open(options(server.url, kvPath));
        const user = await app.logIn(Credentials.anonymous());
        await using realm = await user.openRealm({
          path: "/~/order",
          indexes: { T: ["a"] },
        });
        // One commit per object, then updates: the store's log grows past
        // what a reopen reads as is.
        for (const id of order) {
          const fields = { a: prng.int(5), b: id };
          await realm.write((tx) => tx.put("T", id, fields));
          model.set(id, fields);
        }
        for (let i = 0; i < 100; i++) {
          const id = prng.pick(order);
          const a = prng.int(5);
          await realm.write((tx) => tx.update("T", id, { a }));
          model.set(id, { ...model.get(id)!, a });
        }
        firstSeen = ids(realm.objects("T"));
        assert.deepEqual(firstSeen, order);
      }
      await using app = await App.open(options(server.url, kvPath));
      await using realm = await app.currentUser!.openRealm({
        path: "/~/order",
        indexes: { T: ["a"] },
      });
      assert.deepEqual(ids(realm.objects("T")), firstSeen);
      for (let a = 0; a < 5; a++) {
        checkQuery(realm, "T", model, { where: { a } }, "reopened");
        checkQuery(realm, "T", model, {
          where: { a: { gte: a } },
          sort: [["a", "desc"]],
          limit: 20,
        }, "reopened");
      }
    });
  });
});

Deno.test("A durable, indexed realm bootstrapped with thousands of objects in a DOWNLOAD bigger than one Deno KV commit, live queries registered before: each live query ends on its query's result, and after reopening every query answers as the server's state", async () => {
  await withDir(async (dir) => {
    const kvPath = `${dir}/app.kv`;
    await using server = await startTestServer({
      permissions: () => "readwrite",
      downloadBatchBytes: 4 * 1024 * 1024,
    });
    const path = "/shared/big";
    const remote = server.realm(path);
    for (let chunk = 0; chunk < 6; chunk++) {
      await remote.write((tx) => {
        for (let k = 0; k < 500; k++) {
          const n = chunk * 500 + k;
          tx.put("Item", `c${chunk}-${k}`, {
            g: n % 7,
            ...(n % 11 === 0 ? {} : { v: n % 13 === 0 ? null : `${n % 50}` }),
            pad: `${n}`.padEnd(300, "."),
          });
        }
      });
    }
    await remote.write((tx) => {
      for (let k = 0; k < 100; k++) tx.delete("Item", `c0-${k}`);
      for (let k = 0; k < 100; k++) tx.update("Item", `c1-${k}`, { g: 3 });
    });
    const queries: ModelQuery[] = [
      { where: { g: 3 }, sort: [["v", "asc"]] },
      { where: { v: { gte: "4" } }, sort: [["g", "desc"]], limit: 25 },
      { where: { v: null, g: { in: [1, 2] } } },
    ];
    const check = async (realm: Realm, label: string) => {
      const onServer = new Map(
        (await remote.objects("Item")).map((o) => [o.id, o.fields]),
      );
      assert.equal(onServer.size, 2_900);
      assert.deepEqual(stored(realm, "Item"), onServer, label);
      for (const query of queries) {
        checkQuery(realm, "Item", onServer, query, label);
      }
      for (const where of ITEM_WHERES.slice(0, 9)) {
        checkQuery(realm, "Item", onServer, { where }, label);
      }
      return onServer;
    };
    {
      await using app = await App.open(options(server.url, kvPath));
      const user = await app.logIn(Credentials.anonymous());
      await using realm = await user.openRealm({
        path,
        indexes: { Item: ["g", "v"] },
      });
      await using stack = new AsyncDisposableStack();
      const watched = queries.map((query) =>
        stack.use(
          new Recorder(
            realm.watch(
              "Item",
              { ...query, signal: bounded(LONG_MS) } as never,
            ),
          ),
        )
      );
      await realm.syncSession.waitForDownload({ signal: bounded(LONG_MS) });
      const onServer = await check(realm, "bootstrapped");
      for (const [index, query] of queries.entries()) {
        await untilPatched(watched[index]!, modelIds(onServer, query));
      }
    }
    await using app = await App.open(options(server.url, kvPath));
    await using realm = await app.currentUser!.openRealm({
      path,
      indexes: { Item: ["v"] },
    });
    await await check(realm, "reopened");
  });
});

Deno.test("Field names that are Object.prototype's own (__proto__, toString, constructor, hasOwnProperty, valueOf) are plain fields through a durable store: equality, ne, ranges, in, sorting and count with and without an index, before and after reopening", async () => {
  await withDir(async (dir) => {
    const kvPath = `${dir}/app.kv`;
    await using server = await startTestServer();
    const names = [
      "__proto__",
      "toString",
      "constructor",
      "hasOwnProperty",
      "valueOf",
    ];
    const all = (value: Value): Fields =>
      Object.fromEntries(names.map((name) => [name, value]));
    for (const reopened of [false, true]) {
      await using app = await App.open(options(server.url, kvPath));
      const user = app.currentUser ??
        await app.logIn(Credentials.anonymous());
      for (const indexes of [undefined, { T: names }]) {
        await using realm = await user.openRealm({
          path: indexes === undefined ? "/~/plain" : "/~/indexed",
          ...(indexes === undefined ? {} : { indexes }),
        });
        if (!reopened) {
          await realm.write((tx) => {
            tx.put("T", "with", all(5));
            tx.put("T", "nulls", all(null));
            tx.put("T", "without", { x: 1 });
          });
        }
        const model = new Map<string, Fields>([
          ["with", all(5)],
          ["nulls", all(null)],
          ["without", { x: 1 }],
        ]);
        const label = `${reopened ? "reopened" : "written"}, ${show(indexes)}`;
        assert.deepEqual(realm.get("T", "with"), all(5), label);
        for (const name of names) {
          for (
            const condition of [
              5,
              null,
              { eq: 5 },
              { ne: 5 },
              { gte: 0 },
              { in: [5, null] },
            ]
          ) {
            // A computed key: `{ __proto__: … }` would set the prototype.
            const where = Object.fromEntries([[name, condition]]);
            checkQuery(realm, "T", model, { where }, label);
          }
          for (const direction of ["asc", "desc"] as const) {
            checkQuery(realm, "T", model, {
              sort: [[name, direction]],
            }, label);
          }
        }
      }
    }
  });
});

Deno.test("A rejected write followed by a later write to the same object on a durable, indexed realm: the later write survives on top of the revert, the indexes hold its value and neither the refused nor the overwritten one, and so does the reopened realm", async () => {
  await withDir(async (dir) => {
    const kvPath = `${dir}/app.kv`;
    await using server = await startTestServer({
      validateChangeset: ({ changes }) =>
        changes.every((c) => c.fields?.tag !== "bad"),
    });
    await using proxy = new TcpProxy(server.addr);
    const indexes = { Task: ["tag", "n"] };
    const check = (realm: Realm, label: string) => {
      const where = (w: Record<string, unknown>) =>
        ids(realm.objects("Task", { where: w } as never));
      for (
        const [w, want] of [
          [{ n: 20 }, ["t1"]],
          [{ n: 10 }, []],
          [{ n: 1 }, []],
          [{ n: { gt: 1 } }, ["t1"]],
          [{ tag: "ok" }, ["t1"]],
          [{ tag: "bad" }, []],
          [{ tag: { in: ["bad", "ok"] }, n: { lte: 20 } }, ["t1"]],
        ] as const
      ) {
        assert.deepEqual(where(w), want, `${label}: ${show(w)}`);
        assert.deepEqual(where(unindexed(w)), want, `${label}: ${show(w)}`);
      }
      assert.deepEqual(realm.get("Task", "t1"), { tag: "ok", n: 20 }, label);
    };
    {
      await using app = await App.open(options(proxy.url, kvPath));
      const user = await app.logIn(Credentials.anonymous());
      await using realm = await user.openRealm({ path: "/~/r", indexes });
      await (await realm.write((tx) =>
        tx.put("Task", "t1", { tag: "ok", n: 1 })
      ))
        .waitForUpload({ signal: bounded() });
      await using watched = new Recorder(
        realm.watch("Task", {
          where: { n: { gte: 10 } },
          signal: bounded(LONG_MS),
        }),
      );
      // Both written before the server sees either.
      offline(proxy);
      const refused = await realm.write((tx) =>
        tx.update("Task", "t1", { tag: "bad", n: 10 })
      );
      const later = await realm.write((tx) =>
        tx.update("Task", "t1", { n: 20 })
      );
      assert.deepEqual(realm.get("Task", "t1"), { tag: "bad", n: 20 });
      proxy.mode = "forward";
      app.reconnect();
      const error = await rejection(
        refused.waitForUpload({ signal: bounded(LONG_MS) }),
      );
      assert.equal(error.code, "write_rejected");
      await later.waitForUpload({ signal: bounded(LONG_MS) });
      check(realm, "settled");
      // t1 matched throughout (n 10, then 20, then 20 over the revert).
      await untilPatched(watched, ["t1"]);
      assert.deepEqual(await server.realm(`/${user.id}/r`).get("Task", "t1"), {
        tag: "ok",
        n: 20,
      });
    }
    offline(proxy);
    await using app = await App.open(options(proxy.url, kvPath));
    await using realm = await app.currentUser!.openRealm({
      path: "/~/r",
      indexes,
    });
    assert.deepEqual(realm.pendingWrites(), []);
    await check(realm, "reopened");
  });
});

Deno.test('One durable store, several users and storages: each user\'s realm at the same path answers its indexed queries with its own objects only, a per-realm { kvPath } store keeps its data and answers, and a per-realm "memory" realm is empty after the app reopens', async () => {
  await withDir(async (dir) => {
    const kvPath = `${dir}/app.kv`;
    const otherPath = `${dir}/other.kv`;
    await using server = await startTestServer({
      auth: { jwtSecret: SECRET },
    });
    await using proxy = new TcpProxy(server.addr);
    const indexes = { Task: ["owner", "n"] };
    const logIn = async (app: App, name: string) => {
      proxy.mode = "forward";
      const user = await app.logIn(Credentials.jwt(await jwtFor(name)));
      offline(proxy);
      return user;
    };
    const owned = (realm: Realm, owner: string) =>
      ids(realm.objects("Task", { where: { owner }, sort: [["n", "asc"]] }));
    const storages: [string, RealmConfig["storage"]][] = [
      ["app", undefined],
      ["kvPath", { kvPath: otherPath }],
      ["memory", "memory"],
    ];
    {
      await using app = await App.open(options(proxy.url, kvPath));
      for (const name of ["alice", "bob"]) {
        const user = await logIn(app, name);
        for (const [label, storage] of storages) {
          await using realm = await user.openRealm({
            path: `/~/${label}`,
            indexes,
            ...(storage === undefined ? {} : { storage }),
          });
          await realm.write((tx) => {
            for (let n = 0; n < 3; n++) {
              tx.put("Task", `${name}-${n}`, { owner: name, n: -n });
            }
          });
          assert.deepEqual(
            owned(realm, name),
            [2, 1, 0].map((n) => `${name}-${n}`),
          );
        }
      }
    }
    await using app = await App.open(options(proxy.url, kvPath));
    assert.deepEqual(app.allUsers.map((u) => u.id), ["alice", "bob"]);
    for (const user of app.allUsers) {
      for (const [label, storage] of storages) {
        await using realm = await user.openRealm({
          path: `/~/${label}`,
          indexes,
          ...(storage === undefined ? {} : { storage }),
        });
        const mine = label === "memory"
          ? []
          : [2, 1, 0].map((n) => `${user.id}-${n}`);
        assert.deepEqual(owned(realm, user.id), mine, `${user.id} ${label}`);
        for (const other of ["alice", "bob"]) {
          if (other !== user.id) {
            assert.deepEqual(owned(realm, other), [], `${user.id} ${label}`);
          }
        }
        assert.equal(
          realm.count("Task", { where: { n: { lte: 0 } } }),
          mine.length,
        );
        assert.deepEqual(
          // n is -0 for the first object (-n of 0): 0 would not match it.
          ids(
            await firstItem(realm, "Task", { where: { n: { in: [-0, -2] } } }),
          ),
          label === "memory" ? [] : [`${user.id}-0`, `${user.id}-2`],
        );
      }
    }
  });
});

/** How a stream of a recorder ended: its error's code, or "end". */
async function endOf(recorder: Recorder<unknown>): Promise<string> {
  await recorder.finished(bounded(LONG_MS));
  const outcome = recorder.outcome!;
  if (outcome.kind === "end") return "end";
  assert.ok(outcome.error instanceof SyncError, String(outcome.error));
  return outcome.error.code;
}

Deno.test("A durable, indexed realm whose saved user the server refuses: its live queries and object watchers error with login_failed after the items already queued, and the realm stays readable (queries, count and indexes answer from the store) until it closes", async () => {
  await withDir(async (dir) => {
    const kvPath = `${dir}/app.kv`;
    // The first server signed the saved refresh token; the second, behind
    // the same address, has another key and refuses it.
    await using old = await startTestServer();
    await using server = await startTestServer();
    await using proxy = new TcpProxy(old.addr);
    const indexes = { Task: ["n"] };
    {
      await using app = await App.open(options(proxy.url, kvPath));
      const user = await app.logIn(Credentials.anonymous());
      await using realm = await user.openRealm({ path: "/~/t", indexes });
      await realm.write((tx) => {
        for (let n = 0; n < 5; n++) tx.put("Task", `t${n}`, { n });
      });
    }
    proxy.retarget(server.addr);
    offline(proxy);
    await using app = await App.open(options(proxy.url, kvPath));
    const user = app.currentUser!;
    await using realm = await user.openRealm({ path: "/~/t", indexes });
    const signal = bounded(LONG_MS);
    await using watched = new Recorder(
      realm.watch("Task", { where: { n: { gte: 2 } }, signal }),
    );
    await using object = new Recorder(
      realm.watchObject("Task", "t3", { signal }),
    );
    await watched.until(() => true);
    // A local write before the failure: its item comes before the error.
    await realm.write((tx) => tx.update("Task", "t1", { n: 7 }));
    proxy.mode = "forward";
    app.reconnect();
    assert.equal(await endOf(watched), "login_failed");
    assert.equal(await endOf(object), "login_failed");
    assert.deepEqual(
      watched.items.map((i) => ids(i.objects)),
      [["t2", "t3", "t4"], ["t1", "t2", "t3", "t4"]],
    );
    assert.deepEqual(object.items.map((i) => i.fields), [{ n: 3 }]);
    assert.equal(realm.syncSession.error?.code, "login_failed");
    const model = stored(realm, "Task");
    assert.equal(model.size, 5);
    for (const where of [{ n: 7 }, { n: { gte: 2 } }, { n: 1 }, { n: null }]) {
      checkQuery(realm, "Task", model, { where, sort: [["n", "desc"]] }, "");
    }
  });
});

Deno.test("Realm.write() refuses a string with a lone surrogate on a durable, indexed realm before anything is stored (TypeError), while U+FFFD and surrogate pairs are stored, indexed and found exactly as written, before and after reopening", async () => {
  await withDir(async (dir) => {
    const kvPath = `${dir}/app.kv`;
    await using server = await startTestServer({
      permissions: () => "readwrite",
    });
    const path = "/shared/utf8";
    // A title cut inside an emoji, as `slice` makes one.
    const cut = "hi \u{1F600}".slice(0, 4);
    const fine = "hi \uFFFD \u{1F600}";
    const check = (realm: Realm, label: string) => {
      assert.deepEqual(realm.objects("T"), [
        { id: "\u{1F600}", fields: { title: fine } },
      ], label);
      assert.equal(realm.count("T", { where: { title: fine } }), 1, label);
      assert.equal(realm.count("T", { where: { title: { gte: "hi" } } }), 1);
    };
    {
      await using app = await App.open(options(server.url, kvPath));
      const user = await app.logIn(Credentials.anonymous());
      await using realm = await user.openRealm({
        path,
        indexes: { T: ["title"] },
      });
      for (
        const write of [
          (tx: Transaction) => tx.put("T", "a", { title: cut }),
          (tx: Transaction) => tx.put("T", cut, { title: "x" }),
          (tx: Transaction) => tx.put("T", "a", { [cut]: 1 }),
        ]
      ) {
        await assert.rejects(() => realm.write(write), TypeError);
      }
      await (await realm.write((tx) =>
        tx.put("T", "\u{1F600}", { title: fine })
      )).waitForUpload({ signal: bounded() });
      check(realm, "written");
      assert.equal(realm.pendingWrites().length, 0);
    }
    await using app = await App.open(options(server.url, kvPath));
    await using realm = await app.currentUser!.openRealm({
      path,
      indexes: { T: ["title"] },
    });
    check(realm, "reopened");
  });
});

Deno.test("openRealm({ indexes }) with a malformed spec on a durable app throws a TypeError naming the part before it opens anything: a per-realm store file is not created, and the app's realm opens afterwards with its data", async () => {
  await withDir(async (dir) => {
    const kvPath = `${dir}/app.kv`;
    await using server = await startTestServer();
    await using app = await App.open(options(server.url, kvPath));
    const user = await app.logIn(Credentials.anonymous());
    {
      await using realm = await user.openRealm({ path: "/~/p" });
      await realm.write((tx) => tx.put("T", "a", { v: 1 }));
    }
    const never = `${dir}/never.kv`;
    for (
      const [indexes, part] of [
        [{ T: "v" }, /\bindexes\.T must be an array/],
        [{ T: ["v", null] }, /\bindexes\.T\[1\] must be a field name/],
      ] as const
    ) {
      for (const storage of [undefined, { kvPath: never }]) {
        await assert.rejects(
          user.openRealm({
            path: "/~/p",
            indexes: indexes as never,
            ...(storage === undefined ? {} : { storage }),
          }),
          (error: unknown) =>
            error instanceof TypeError && part.test(error.message),
        );
      }
    }
    await assert.rejects(Deno.stat(never), Deno.errors.NotFound);
    await using realm = await user.openRealm({
      path: "/~/p",
      indexes: { T: ["v"] },
    });
    assert.deepEqual(realm.objects("T", { where: { v: 1 } }), [
      { id: "a", fields: { v: 1 } },
    ]);
  });
});

/** A storage that keeps nothing and whose commits fail once told to. */
class FailingStorage implements RealmStorage {
  failing = false;
  readonly error = new Error("disk full");
  load(): Promise<StoredRealm> {
    return Promise.resolve({ meta: null, records: [], pending: [] });
  }
  async commit(_batch: StorageBatch): Promise<void> {
    await Promise.resolve();
    if (this.failing) throw this.error;
  }
  close(): Promise<void> {
    return Promise.resolve();
  }
}

Deno.test("openRealm({ storage }) with a RealmStorage whose commit fails: that write rejects with the storage's error, and every later write rejects with it before it changes anything (no object, no index entry, no live query item, no changes() item)", async () => {
  await using server = await startTestServer();
  await using proxy = new TcpProxy(server.addr);
  await using app = fastApp(proxy.url);
  const user = await app.logIn(Credentials.anonymous());
  // Offline: only local writes commit.
  offline(proxy);
  const storage = new FailingStorage();
  await using realm = await user.openRealm({
    path: "/~/failing",
    storage,
    indexes: { T: ["v"] },
  });
  await realm.write((tx) => tx.put("T", "a", { v: 1 }));
  const signal = bounded(LONG_MS);
  const watched = new Recorder(
    realm.watch("T", { where: { v: { gte: 0 } }, signal }),
  );
  const changes = new Recorder(realm.changes({ signal }));
  try {
    await watched.until(() => true);
    storage.failing = true;
    await assert.rejects(
      realm.write((tx) => tx.put("T", "b", { v: 2 })),
      (error) => error === storage.error,
    );
    const before = realm.objects("T");
    for (const id of ["c", "d"]) {
      await assert.rejects(
        realm.write((tx) => tx.put("T", id, { v: 3 })),
        (error) => error === storage.error,
      );
    }
    assert.deepEqual(realm.objects("T"), before);
    assert.deepEqual(realm.objects("T", { where: { v: 3 } }), []);
    assert.equal(realm.count("T", { where: { v: { gte: 3 } } }), 0);
    assert.equal(realm.get("T", "c"), undefined);
    // Closing ends the streams after the items they hold.
    await realm.close();
    await watched.finished();
    await changes.finished();
    for (const item of watched.items) {
      assert.deepEqual(
        ids(item.objects).filter((id) => id === "c" || id === "d"),
        [],
      );
    }
    for (const item of changes.items) {
      assert.deepEqual(
        item.changes.filter((c) => c.id === "c" || c.id === "d"),
        [],
      );
    }
  } finally {
    await watched[Symbol.asyncDispose]();
    await changes[Symbol.asyncDispose]();
  }
});

Deno.test("Writes made offline on a durable, indexed realm and uploaded after a restart: their acknowledgement wakes no live query and no object watcher (it changes nothing visible), and indexed queries answer as before", async () => {
  await withDir(async (dir) => {
    const kvPath = `${dir}/app.kv`;
    await using server = await startTestServer();
    await using proxy = new TcpProxy(server.addr);
    const indexes = { Task: ["n"] };
    {
      await using app = await App.open(options(proxy.url, kvPath));
      const user = await app.logIn(Credentials.anonymous());
      offline(proxy);
      await using realm = await user.openRealm({ path: "/~/p", indexes });
      for (let n = 0; n < 5; n++) {
        await realm.write((tx) => tx.put("Task", `t${n}`, { n }));
      }
      assert.equal(realm.pendingWrites().length, 5);
    }
    await using app = await App.open(options(proxy.url, kvPath));
    await using realm = await app.currentUser!.openRealm({
      path: "/~/p",
      indexes,
    });
    const pending = realm.pendingWrites();
    assert.equal(pending.length, 5);
    const signal = bounded(LONG_MS);
    await using watched = new Recorder(
      realm.watch("Task", { where: { n: { gte: 2 } }, signal }),
    );
    await using object = new Recorder(
      realm.watchObject("Task", "t3", { signal }),
    );
    proxy.mode = "forward";
    app.reconnect();
    await Promise.all(
      pending.map((r) => r.waitForUpload({ signal: bounded(LONG_MS) })),
    );
    await realm.syncSession.waitForDownload({ signal: bounded(LONG_MS) });
    // One local write after: the next item of each stream is that write's.
    await realm.write((tx) => tx.update("Task", "t3", { n: 30 }));
    await watched.until((i) => i.changes.modifications.length > 0);
    await object.until((i) => i.fields?.n === 30);
    assert.deepEqual(
      watched.items.map((i) => [ids(i.objects), i.changes]),
      [
        [["t2", "t3", "t4"], {
          insertions: [0, 1, 2],
          deletions: [],
          modifications: [],
        }],
        [["t2", "t3", "t4"], {
          insertions: [],
          deletions: [],
          modifications: [1],
        }],
      ],
    );
    assert.deepEqual(object.items.map((i) => [i.fields, i.changedFields]), [
      [{ n: 3 }, ["n"]],
      [{ n: 30 }, ["n"]],
    ]);
    assert.deepEqual(ids(realm.objects("Task", { where: { n: 30 } })), ["t3"]);
    assert.deepEqual(ids(realm.objects("Task", { where: { n: 3 } })), []);
  });
});
