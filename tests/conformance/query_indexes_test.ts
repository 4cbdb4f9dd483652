// Indexes through the public API (docs/CLIENT.md "Indexes"): a realm opened
// with `openRealm({ indexes })` answers every query as one without, and as
// the model of `_query_model.ts`, through local, remote and bootstrap
// commits, deletions and a second open of the same path.
import assert from "node:assert/strict";
import { Credentials, type Fields, type Realm, type Value } from "../../mod.ts";
import { fastApp, openClient } from "./_helpers.ts";
import {
  copyOf,
  kindOf,
  modelIds,
  type ModelQuery,
  OPS,
  SAMPLES,
  show,
} from "./_query_model.ts";
import { Prng, testSeed } from "../_helpers/prng.ts";
import { startTestServer } from "../_helpers/test_server.ts";
import { bounded } from "../_helpers/waits.ts";

Deno.test("Realm.objects() and count() never return a deleted object, with or without an index; a re-created object appears once with its new fields", async () => {
  await using server = await startTestServer();
  await using client = await openClient(fastApp(server.url), "/~/plain");
  await using indexed = await client.user.openRealm({
    path: "/~/indexed",
    indexes: { T: ["v"] },
  });
  const model = new Map<string, Fields>();
  const realms = [client.realm, indexed];
  const write = async (
    fn: (tx: Parameters<Parameters<Realm["write"]>[0]>[0]) => void,
  ) => {
    for (const realm of realms) await realm.write(fn);
  };
  const check = (label: string) => {
    for (
      const where of [
        undefined,
        { v: 1 },
        { v: null },
        { v: { ne: 1 } },
        { v: { in: [1, 2, "x"] } },
        { v: { gte: 0 } },
        { v: { lt: "z" } },
      ]
    ) {
      const query: ModelQuery = where === undefined ? {} : { where };
      const want = modelIds(model, query);
      for (const realm of realms) {
        assert.deepEqual(
          realm.objects("T", query as never).map((o) => o.id),
          want,
          `${label}: ${show(where)}`,
        );
        assert.equal(realm.count("T", query as never), want.length);
      }
    }
  };
  await write((tx) => {
    for (let i = 0; i < 6; i++) tx.put("T", `o${i}`, { v: i % 3 });
    tx.put("T", "s", { v: "x" });
  });
  for (let i = 0; i < 6; i++) model.set(`o${i}`, { v: i % 3 });
  model.set("s", { v: "x" });
  check("created");
  await write((tx) => {
    tx.delete("T", "o1");
    tx.delete("T", "s");
    tx.delete("T", "never-existed");
  });
  model.delete("o1");
  model.delete("s");
  check("deleted");
  // In one transaction: deleted then re-created (put), and updated then
  // deleted.
  await write((tx) => {
    tx.delete("T", "o4");
    tx.put("T", "o4", { v: "x" });
    tx.update("T", "o2", { v: 1 });
    tx.delete("T", "o2");
  });
  model.set("o4", { v: "x" });
  model.delete("o2");
  check("delete then put, update then delete");
  await write((tx) => {
    tx.put("T", "o1", { w: 1 });
    tx.put("T", "s", { v: 1 });
  });
  model.set("o1", { w: 1 });
  model.set("s", { v: 1 });
  check("re-created");
  assert.deepEqual(indexed.objects("T", { where: { v: 1 } }), [
    { id: "s", fields: { v: 1 } },
  ]);
});

/** Random values: every sample, and small numbers and strings that repeat. */
function randomValue(prng: Prng): Value {
  return prng.int(3) === 0
    ? prng.pick([0, 1, 2, "a", "b", true, null] as Value[])
    : copyOf(prng.pick(SAMPLES));
}

const FIELDS = ["a", "b", "c"];

function randomFields(prng: Prng): Fields {
  const fields: Fields = {};
  for (const name of FIELDS) {
    if (prng.int(4) !== 0) fields[name] = randomValue(prng);
  }
  return fields;
}

function randomWhere(prng: Prng, depth: number): Record<string, unknown> {
  const where: Record<string, unknown> = {};
  const entries = prng.int(depth === 0 ? 4 : 3);
  for (let e = 0; e < entries; e++) {
    const roll = prng.int(10);
    if (roll < 2 && depth < 2) {
      const combinator = prng.pick(["$and", "$or", "$not"]);
      where[combinator] = combinator === "$not"
        ? randomWhere(prng, depth + 1)
        : Array.from(
          { length: prng.int(4) },
          () => randomWhere(prng, depth + 1),
        );
      continue;
    }
    // "d" is never set: a missing field everywhere.
    const name = prng.pick([...FIELDS, "d"]);
    const operand = randomValue(prng);
    if (roll < 4 && kindOf(operand) < 7) {
      where[name] = operand;
      continue;
    }
    const condition: Record<string, unknown> = {};
    for (let k = 0, n = 1 + prng.int(2); k < n; k++) {
      const op = prng.pick([...OPS, "in"]);
      condition[op] = op === "in"
        ? Array.from({ length: prng.int(4) }, () => randomValue(prng))
        : randomValue(prng);
    }
    where[name] = condition;
  }
  return where;
}

function randomQuery(prng: Prng, size: number): ModelQuery {
  const query: ModelQuery = {};
  if (prng.int(6) !== 0) query.where = randomWhere(prng, 0);
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

Deno.test("openRealm({ indexes }), randomized: random filters, sorts and windows over every value kind give the model's result on an indexed realm written locally, a plain and an indexed realm following it remotely, and an indexed realm bootstrapped from it", async () => {
  const seed = testSeed();
  const prng = new Prng(seed);
  const replay = `seed ${seed} (replay: TETHER_SEED=${seed})`;
  await using server = await startTestServer({
    permissions: () => "readwrite",
  });
  const path = "/shared/queries";
  await using stack = new AsyncDisposableStack();
  const open = async (indexes?: Record<string, string[]>) => {
    const app = stack.use(fastApp(server.url));
    const user = await app.logIn(Credentials.anonymous());
    return stack.use(
      await user.openRealm({
        path,
        waitForDownload: true,
        signal: bounded(),
        ...(indexes === undefined ? {} : { indexes }),
      }),
    );
  };
  const writer = await open({ T: ["a", "b"] });
  const followers = [await open(), await open({ T: ["a", "b", "c"] })];
  const model = new Map<string, Fields>();
  const check = async (
    realms: [string, Realm][],
    queries: number,
    label: string,
  ) => {
    for (let q = 0; q < queries; q++) {
      const query = randomQuery(prng, model.size);
      const want = modelIds(model, query);
      for (const [name, realm] of realms) {
        const got = realm.objects("T", query as never);
        const text = `${replay}, ${label}, ${name}: ${show(query)}`;
        assert.deepEqual(got.map((o) => o.id), want, text);
        for (const object of got) {
          assert.deepEqual(object.fields, model.get(object.id), text);
        }
        assert.equal(
          realm.count("T", { where: query.where } as never),
          modelIds(model, { where: query.where ?? {} }).length,
          `count ${text}`,
        );
        if (q % 5 !== 0) continue;
        // A live query's first item is the same result.
        const reader = realm.watch(
          "T",
          { ...query, signal: bounded() } as never,
        )
          .getReader();
        try {
          const first = await reader.read();
          assert.deepEqual(
            first.value?.objects.map((o) => o.id),
            want,
            `watch ${text}`,
          );
        } finally {
          await reader.cancel();
        }
      }
    }
  };
  const ids = Array.from({ length: 120 }, (_, i) => `o${i}`);
  for (let round = 0; round < 8; round++) {
    // The first transaction is bootstrap-sized; later ones are small.
    const steps = round === 0 ? 100 : 1 + prng.int(25);
    await writer.write((tx) => {
      for (let s = 0; s < steps; s++) {
        const id = prng.pick(ids);
        const roll = prng.int(10);
        if (roll < 5) {
          const fields = randomFields(prng);
          tx.put("T", id, fields);
          model.set(id, fields);
        } else if (roll < 8 && model.has(id)) {
          const fields = randomFields(prng);
          tx.update("T", id, fields);
          model.set(id, { ...model.get(id), ...fields });
        } else {
          tx.delete("T", id);
          model.delete(id);
        }
      }
    });
    await writer.syncSession.waitForUpload({ signal: bounded() });
    for (const follower of followers) {
      await follower.syncSession.waitForDownload({ signal: bounded() });
    }
    await check(
      [
        ["indexed writer", writer],
        ["plain follower", followers[0]!],
        ["indexed follower", followers[1]!],
      ],
      30,
      `round ${round}`,
    );
  }
  const late = await open({ T: ["b", "c"] });
  await check([["indexed, bootstrapped", late]], 150, "bootstrap");
});

Deno.test("openRealm({ indexes }) of a path already open adds the indexes, filled from the objects present: both handles answer alike before and after later writes", async () => {
  await using server = await startTestServer();
  await using client = await openClient(fastApp(server.url), "/~/p");
  const first = client.realm;
  await first.write((tx) => {
    tx.put("T", "a", { v: 1 });
    tx.put("T", "b", {});
    tx.put("T", "c", { v: 2 });
  });
  await using second = await client.user.openRealm({
    path: "/~/p",
    indexes: { T: ["v"] },
  });
  const ids = (realm: Realm, where: Record<string, unknown>) =>
    realm.objects("T", { where } as never).map((o) => o.id);
  for (const realm of [first, second]) {
    assert.deepEqual(ids(realm, { v: null }), ["b"]);
    assert.deepEqual(ids(realm, { v: { gte: 1 } }), ["a", "c"]);
  }
  await first.write((tx) => {
    tx.delete("T", "a");
    tx.put("T", "d", { v: 1 });
    tx.update("T", "b", { v: 2 });
  });
  for (const realm of [first, second]) {
    assert.deepEqual(ids(realm, { v: 1 }), ["d"]);
    assert.deepEqual(ids(realm, { v: { in: [2, null] } }), ["b", "c"]);
    assert.deepEqual(ids(realm, { v: null }), []);
  }
});

Deno.test("openRealm({ indexes }) refuses a malformed spec with a TypeError naming the part, before opening", async () => {
  await using server = await startTestServer();
  await using client = await openClient(fastApp(server.url));
  const holey: unknown[] = [];
  holey[1] = "v";
  const cases: [unknown, RegExp][] = [
    [["T"], /\bindexes must be an object/],
    [{ T: "v" }, /\bindexes\.T must be an array/],
    [{ T: ["v", 1] }, /\bindexes\.T\[1\] must be a field name/],
    // A hole once slipped through as an index on `undefined`.
    [{ T: holey }, /\bindexes\.T\[0\] must be a field name/],
  ];
  for (const [indexes, part] of cases) {
    await assert.rejects(
      client.user.openRealm({ path: "/~/other", indexes: indexes as never }),
      (error: unknown) => {
        assert.ok(error instanceof TypeError, String(error));
        assert.match(error.message, part);
        return true;
      },
      show(indexes),
    );
  }
});
