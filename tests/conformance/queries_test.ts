// Queries through the public API as docs/CLIENT.md "Querying" documents
// them: the language and the value order over every kind, windows, bad
// queries and the generic types, on a realm, an indexed realm and
// `server.realm()`, against the model of `_query_model.ts`.
import assert from "node:assert/strict";
import {
  compareValues,
  type Fields,
  type Realm,
  type RealmObject,
  type Value,
} from "../../mod.ts";
import type { ServerRealm } from "../../server.ts";
import { fastApp, openClient } from "./_helpers.ts";
import {
  copyOf,
  kindOf,
  modelIds,
  type ModelQuery,
  OPS,
  order,
  SAMPLES,
  show,
  sign,
} from "./_query_model.ts";
import { Prng } from "../_helpers/prng.ts";
import { startTestServer } from "../_helpers/test_server.ts";
import { bounded } from "../_helpers/waits.ts";

/**
 * The sample objects: sample `i` in field `v` of an object whose id does not
 * follow the value order (ids `s00`… in a fixed shuffle), two objects that
 * lack `v`, and two that tie with other samples (for ties by id).
 */
function sampleObjects(): Map<string, Fields> {
  const objects = new Map<string, Fields>();
  const ids = new Prng(11).shuffle(SAMPLES.map((_, i) => i));
  SAMPLES.forEach((value, i) => {
    objects.set(`s${String(ids[i]).padStart(2, "0")}`, { v: value, i });
  });
  objects.set("m1", { i: -1 });
  objects.set("m0", { i: -2, w: 1 });
  objects.set("t0", { v: 1, i: 100 });
  objects.set("zz", { v: "a", i: 101 });
  return objects;
}

/** Where a query runs: a client realm, or the server's view of a realm. */
interface Target {
  readonly name: string;
  ids(query: ModelQuery): Promise<string[]>;
  count(where?: Record<string, unknown>): Promise<number>;
}

function realmTarget(name: string, realm: Realm): Target {
  return {
    name,
    // (Async only to share the interface: both calls are synchronous.)
    // deno-lint-ignore require-await
    ids: async (query) => realm.objects("T", query as never).map((o) => o.id),
    // deno-lint-ignore require-await
    count: async (where) =>
      realm.count("T", where === undefined ? undefined : { where } as never),
  };
}

function serverTarget(realm: ServerRealm): Target {
  return {
    name: "server.realm()",
    ids: async (query) =>
      (await realm.objects("T", query as never)).map((o) => o.id),
    count: async (where) =>
      (await realm.objects("T", { where } as never)).length,
  };
}

/**
 * The sample objects in a realm without indexes, one with an index on `v`,
 * and `server.realm()` of the path the first syncs: three ways to run one
 * query, each expected to give the model's answer.
 */
async function withTargets(
  objects: ReadonlyMap<string, Fields>,
  test: (targets: Target[]) => Promise<void>,
): Promise<void> {
  await using server = await startTestServer();
  await using client = await openClient(fastApp(server.url), "/~/plain");
  await using indexed = await client.user.openRealm({
    path: "/~/indexed",
    indexes: { T: ["v", "i"] },
  });
  for (const realm of [client.realm, indexed]) {
    await realm.write((tx) => {
      for (const [id, fields] of objects) tx.put("T", id, fields);
    });
  }
  await client.session.waitForUpload({ signal: bounded() });
  await test([
    realmTarget("realm", client.realm),
    realmTarget("indexed realm", indexed),
    serverTarget(server.realm(`/${client.user.id}/plain`)),
  ]);
}

async function assertQuery(
  targets: Target[],
  objects: ReadonlyMap<string, Fields>,
  query: ModelQuery,
  label = show(query),
): Promise<void> {
  const want = modelIds(objects, query);
  for (const target of targets) {
    assert.deepEqual(await target.ids(query), want, `${target.name}: ${label}`);
    if (query.limit === undefined && query.offset === undefined) {
      assert.equal(
        await target.count(query.where),
        want.length,
        `${target.name}: count ${label}`,
      );
    }
  }
}

// ---------------------------------------------------------------------------

Deno.test("compareValues() and Realm.objects() sort: the documented order of kinds and within each kind (NaN, -0 before 0, numbers before bigints, strings by UTF-16 code unit, bytes and arrays by prefix, invalid dates first, objects by sorted entries)", async () => {
  // The samples are written in the documented order; the model agrees.
  for (let i = 0; i + 1 < SAMPLES.length; i++) {
    assert.equal(order(SAMPLES[i]!, SAMPLES[i + 1]!), -1, show(SAMPLES[i]));
  }
  const shuffled = new Prng(3).shuffle(SAMPLES);
  assert.deepEqual(shuffled.sort(compareValues), SAMPLES);
  for (const a of SAMPLES) {
    for (const b of SAMPLES) {
      assert.equal(
        sign(compareValues(a, b)),
        order(a, b),
        `${show(a)} vs ${show(b)}`,
      );
    }
    assert.equal(compareValues(a, copyOf(a)), 0, show(a));
  }
  const objects = sampleObjects();
  await withTargets(objects, async (targets) => {
    for (const target of targets) {
      const asc = await target.ids({ sort: [["v", "asc"]] });
      // Missing first, by id; then the samples in order; a tie by id.
      assert.deepEqual(asc.slice(0, 2), ["m0", "m1"], target.name);
      assert.deepEqual(
        asc.slice(2).filter((id) => id !== "t0" && id !== "zz").map((id) =>
          objects.get(id)!.v
        ),
        SAMPLES,
        target.name,
      );
      assert.ok(asc.indexOf("t0") > asc.indexOf(idOf(objects, 1)), "1: by id");
      assert.ok(asc.indexOf("zz") > asc.indexOf(idOf(objects, "a")), "a");
      // "desc" reverses the values, missing last, and ties stay by id.
      const desc = await target.ids({ sort: [["v", "desc"]] });
      assert.deepEqual(desc.slice(-2), ["m0", "m1"], target.name);
      assert.ok(desc.indexOf("t0") > desc.indexOf(idOf(objects, 1)));
      assert.ok(desc.indexOf("zz") > desc.indexOf(idOf(objects, "a")));
    }
    await assertQuery(targets, objects, { sort: [["v", "asc"]] });
    await assertQuery(targets, objects, { sort: [["v", "desc"]] });
    // Without sort: by id (docs/CLIENT.md), stable.
    await assertQuery(targets, objects, {});
  });
});

function idOf(objects: ReadonlyMap<string, Fields>, value: Value): string {
  for (const [id, fields] of objects) {
    if (id.startsWith("s") && order(fields.v!, value) === 0) return id;
  }
  throw new Error(`no sample ${show(value)}`);
}

Deno.test("Realm.objects() and count() where: eq, ne, gt, gte, lt, lte, in and the shorthand over every value kind follow the value order exactly, range operators bracketed by kind, a missing field matching only eq: null and ne", async () => {
  const objects = sampleObjects();
  await withTargets(objects, async (targets) => {
    for (const operand of SAMPLES) {
      for (const op of OPS) {
        // A fresh equal copy: equality is by value, not identity.
        await assertQuery(targets, objects, {
          where: { v: { [op]: copyOf(operand) } },
        });
      }
      if (kindOf(operand) < 7) {
        await assertQuery(targets, objects, { where: { v: copyOf(operand) } });
      }
    }
    for (
      const list of [
        [],
        [null],
        [-0, 1n, "é", new Date(NaN)],
        [NaN, 0, "1"],
        [[1, "a"], { b: 0 }, new Uint8Array([1, 0])],
        [1, 1, true],
      ] as Value[][]
    ) {
      await assertQuery(targets, objects, { where: { v: { in: list } } });
    }
    // Spot checks the model must also give (so it cannot drift).
    const ids = (query: ModelQuery) => targets[1]!.ids(query);
    assert.deepEqual(await ids({ where: { v: null } }), [
      "m0",
      "m1",
      idOf(objects, null),
    ]);
    assert.deepEqual(await ids({ where: { v: { in: [null] } } }), [
      idOf(objects, null),
    ]);
    assert.deepEqual(await ids({ where: { v: -0 } }), [idOf(objects, -0)]);
    assert.deepEqual(await ids({ where: { v: 1n } }), [idOf(objects, 1n)]);
    assert.deepEqual(await ids({ where: { v: NaN } }), [idOf(objects, NaN)]);
    assert.deepEqual(await ids({ where: { v: { eq: [1] } } }), [
      idOf(objects, [1]),
    ]);
    assert.deepEqual(
      (await ids({ where: { v: { lt: 5 } } })).sort(),
      [NaN, -Infinity, -1.5, -0, 0, 1].map((x) => idOf(objects, x))
        .concat("t0").sort(),
      "{ lt: 5 }: numbers only (NaN is the lowest), never null or 1n",
    );
    assert.deepEqual(
      (await ids({ where: { v: { gte: new Date(NaN) } } })).sort(),
      [NaN, -1, 0, 8.64e15].map((t) => idOf(objects, new Date(t))).sort(),
      "a date range: only dates",
    );
    assert.equal((await ids({ where: { v: { ne: 0 } } })).length, 46);
    assert.equal((await ids({ where: { v: { ne: null } } })).length, 46);
  });
});

Deno.test("Realm.objects() where: $and, $or and $not nest; an empty $and matches everything, an empty $or nothing; $not of a condition matches the objects that lack the field", async () => {
  const objects = sampleObjects();
  await withTargets(objects, async (targets) => {
    const all = modelIds(objects, {});
    const cases: [Record<string, unknown>, string[] | undefined][] = [
      [{ $and: [] }, all],
      [{ $or: [] }, []],
      [{ $not: {} }, []],
      [{ $not: { $or: [] } }, all],
      [{ $not: { v: { gt: 0 } } }, undefined],
      [{ $not: { v: { ne: null } } }, [idOf(objects, null)]],
      [{ $or: [{ v: 1 }, { v: "a" }] }, undefined],
      [{ v: 1, $or: [{ i: 100 }, { i: -5 }] }, ["t0"]],
      [{ $and: [{ v: { gte: 0 } }, { v: { lt: 1 } }] }, [idOf(objects, 0)]],
      [{ $and: [{ v: { gte: 0 } }], v: { ne: 0 } }, undefined],
      [{
        $or: [
          { $and: [{ v: { gte: "a" } }, { $not: { v: { gte: "b" } } }] },
          { $not: { $or: [{ i: { lt: 100 } }, { i: { gt: 100 } }] } },
        ],
      }, [idOf(objects, "a"), idOf(objects, "ab"), "t0", "zz"].sort()],
    ];
    for (const [where, want] of cases) {
      if (want !== undefined && want.length > 0) {
        assert.deepEqual(modelIds(objects, { where }), want, show(where));
      }
      await assertQuery(targets, objects, { where });
    }
  });
});

Deno.test("Realm.objects() limit and offset: applied after sorting; 0, past the end and without sort; not a non-negative integer → TypeError naming it", async () => {
  const objects = sampleObjects();
  const n = objects.size;
  await withTargets(objects, async (targets) => {
    const sorts: (ModelQuery["sort"])[] = [undefined, [["v", "desc"], [
      "i",
      "asc",
    ]]];
    for (const sort of sorts) {
      for (const offset of [undefined, 0, 1, 5, n - 1, n, n + 3]) {
        for (const limit of [undefined, 0, 1, 7, n, n + 3]) {
          const query: ModelQuery = {};
          if (sort !== undefined) query.sort = sort;
          if (offset !== undefined) query.offset = offset;
          if (limit !== undefined) query.limit = limit;
          await assertQuery(targets, objects, query);
        }
      }
    }
    const [realm, indexed] = targets;
    assert.deepEqual(await realm!.ids({ limit: 0 }), []);
    assert.deepEqual(await indexed!.ids({ offset: n }), []);
    for (const name of ["limit", "offset"]) {
      for (
        const bad of [-1, 1.5, NaN, Infinity, 2 ** 53, "1", null, 1n, [1]]
      ) {
        for (const target of targets) {
          await assert.rejects(
            target.ids({ [name]: bad } as ModelQuery),
            (error: unknown) => {
              assert.ok(error instanceof TypeError, String(error));
              assert.match(
                error.message,
                new RegExp(`\\b${name} must be a non-negative integer`),
              );
              return true;
            },
            `${target.name}: ${name} ${show(bad)}`,
          );
        }
      }
    }
  });
});

/** `[<hole>, item]`: a sparse array. */
function holey(item: unknown): unknown[] {
  const list: unknown[] = [];
  list[1] = item;
  return list;
}

/** `{ p: 1 }` inside `levels` combinators. */
function nested(combinator: string, levels: number): Record<string, unknown> {
  let where: Record<string, unknown> = { p: 1 };
  for (let level = 0; level < levels; level++) {
    where = { [combinator]: combinator === "$not" ? where : [where] };
  }
  return where;
}

/** Malformed `where` filters, each with the part its message must name. */
const BAD_WHERE: [unknown, RegExp][] = [
  [{ p: { between: [1, 2] } }, /where\.p\.between\b/],
  [{ p: { $gt: 1 } }, /where\.p\.\$gt\b/],
  [{ p: {} }, /where\.p\b/],
  [{ tags: ["a"] }, /where\.tags\b.*\{ eq/],
  [{ p: () => 1 }, /where\.p\b.*function/],
  [{ p: { gt: () => 1 } }, /where\.p\.gt\b.*function/],
  [{ p: { eq: [1, { x: () => 1 }] } }, /where\.p\.eq\[1\]\.x\b.*function/],
  [{ p: undefined }, /where\.p\b.*undefined/],
  [{ p: { ne: undefined } }, /where\.p\.ne\b.*undefined/],
  [{ p: new Map() }, /where\.p\b.*Map/],
  [{ p: Symbol("s") }, /where\.p\b.*symbol/],
  [{ p: { in: 1 } }, /where\.p\.in\b.*array/],
  [{ p: { in: holey(1) } }, /where\.p\.in\[0\]/],
  [{ p: { in: [1, () => 2] } }, /where\.p\.in\[1\].*function/],
  [{ $nor: [] }, /where\.\$nor\b/],
  [{ $x: 1 }, /where\.\$x is not a combinator.*name starts with \$/],
  [{ $and: { p: 1 } }, /where\.\$and\b.*array/],
  [{ $and: holey({ p: 1 }) }, /where\.\$and\[0\]/],
  [{ $or: [{ p: 1 }, 5] }, /where\.\$or\[1\]/],
  [
    { $or: [{ a: { gt: 1 } }, { b: { nope: 1 } }] },
    /where\.\$or\[1\]\.b\.nope/,
  ],
  [{ $not: [] }, /where\.\$not\b/],
  [
    { $not: { $and: [{ p: { lt: undefined } }] } },
    /where\.\$not\.\$and\[0\]\.p\.lt/,
  ],
  [{ "my field": { x: 1 } }, /where\["my field"\]\.x/],
  // Thousands of levels once overflowed the stack (a RangeError).
  [nested("$or", 10_000), /where(\.\$or\[0\]){101} nests combinators/],
];

/** Malformed queries (beyond `where`), each with the part to name. */
const BAD_QUERIES: [unknown, RegExp][] = [
  ...BAD_WHERE.map(([where, part]): [unknown, RegExp] => [{ where }, part]),
  [{ where: () => true }, /\bwhere must be a plain object.*function/],
  [{ where: [] }, /\bwhere must be a plain object/],
  [{ where: null }, /\bwhere must be a plain object/],
  [{ where: new Date(0) }, /\bwhere must be a plain object.*Date/],
  [{ sort: "title" }, /\bsort must be an array/],
  [{ sort: { title: "asc" } }, /\bsort must be an array/],
  [{ sort: ["title", "asc"] }, /\bsort\[0\]/],
  [{ sort: [["title"]] }, /\bsort\[0\]/],
  [{ sort: [["title", "asc"], ["p", "ASC"]] }, /\bsort\[1\]\[1\].*"ASC"/],
  [{ sort: [[1, "asc"]] }, /\bsort\[0\]\[0\]/],
  [{ sort: holey(["p", "asc"]) }, /\bsort\[0\]/],
  [{ limit: -1 }, /\blimit\b/],
  [{ offset: 0.5 }, /\boffset\b/],
  [{ filter: {} }, /\bfilter is not an option/],
  ["title", /\bquery must be a plain object/],
];

function assertNames(part: RegExp): (error: unknown) => true {
  return (error) => {
    assert.ok(error instanceof TypeError, `not a TypeError: ${error}`);
    assert.match(error.message, part);
    return true;
  };
}

Deno.test("Realm.objects(), count(), watch() and server.realm().objects(): a malformed query is a TypeError whose message names the offending part", async () => {
  await using server = await startTestServer();
  await using client = await openClient(fastApp(server.url));
  const { realm } = client;
  await realm.write((tx) => tx.put("T", "a", { p: 1 }));
  const serverRealm = server.realm(`/${client.user.id}/todos`);
  for (const [query, part] of BAD_QUERIES) {
    const label = `${show(query)} → ${part}`;
    assert.throws(
      () => realm.objects("T", query as never),
      assertNames(part),
      label,
    );
    // Options the call does not take are malformed too.
    assert.throws(
      () => realm.watch("T", query as never),
      assertNames(part),
      `watch ${label}`,
    );
    await assert.rejects(
      serverRealm.objects("T", query as never),
      assertNames(part),
      `server ${label}`,
    );
  }
  for (const [where, part] of BAD_WHERE) {
    assert.throws(
      () => realm.count("T", { where } as never),
      assertNames(part),
      `count ${show(where)}`,
    );
  }
  assert.throws(
    () => realm.count("T", { sort: [["p", "asc"]] } as never),
    assertNames(/\bsort is not an option/),
  );
  assert.throws(
    () => realm.count("T", { limit: 1 } as never),
    assertNames(/\blimit is not an option/),
  );
  assert.throws(
    () => realm.objects("T", { signal: AbortSignal.timeout(1) } as never),
    assertNames(/\bsignal is not an option/),
  );
  assert.throws(
    () => realm.watch("T", { signal: "stop" } as never),
    assertNames(/\bsignal must be an AbortSignal/),
  );
  // Options that are no plain object are refused, not read as no query.
  for (const options of [[], new Date(0), new AbortController()]) {
    assert.throws(
      () => realm.watch("T", options as never),
      assertNames(/\bquery must be a plain object/),
      show(options),
    );
    assert.throws(
      () => realm.watchObject("T", "a", options as never),
      assertNames(/\boptions: must be a plain object/),
      `watchObject ${show(options)}`,
    );
  }
  // Nothing was left registered: the realm still answers and closes clean.
  assert.deepEqual(realm.objects("T", { where: { p: 1 } }), [
    { id: "a", fields: { p: 1 } },
  ]);
});

Deno.test("Realm.objects<T>(): Where<T> and SortSpec<T> check field names and operand types; arrays and objects compare only with { eq }", async () => {
  await using server = await startTestServer();
  await using client = await openClient(fastApp(server.url));
  const { realm } = client;
  type Task = {
    title: string;
    priority: number;
    due: Date;
    tags: string[];
    meta: { owner: string };
    note?: string;
  };
  const task: Task = {
    title: "Buy milk",
    priority: 2,
    due: new Date(5),
    tags: ["home"],
    meta: { owner: "me" },
  };
  await realm.write((tx) => tx.put("Task", "t1", task));
  const ids = (list: RealmObject<Task>[]) => list.map((o) => o.id);
  // What the types accept runs as documented.
  assert.deepEqual(
    ids(realm.objects<Task>("Task", {
      where: {
        title: "Buy milk",
        priority: { gte: 1, in: [2, 3] },
        due: { lt: new Date(6) },
        tags: { eq: ["home"] },
        meta: { eq: { owner: "me" } },
        $or: [{ title: { ne: "x" } }],
      },
      sort: [["priority", "desc"], ["title", "asc"]],
    })),
    ["t1"],
  );
  // A query written `as const` (readonly lists throughout) type-checks.
  const frozen = {
    where: { $or: [{ priority: { in: [2, 3] } }, { title: "x" }] },
    sort: [["priority", "desc"]],
  } as const;
  assert.deepEqual(ids(realm.objects<Task>("Task", frozen)), ["t1"]);
  const typed: Task = realm.objects<Task>("Task")[0]!.fields;
  assert.equal(typed.priority, 2);
  // What they refuse: each line below is a compile error (a test that
  // fails to type-check fails), and behaves at run time as the comment says.
  assert.deepEqual(
    realm.objects<Task>("Task", {
      // @ts-expect-error: a misspelled field (at run time: a missing field)
      where: { titel: "Buy milk" },
    }),
    [],
  );
  assert.deepEqual(
    realm.objects<Task>("Task", {
      // @ts-expect-error: a string where the field is a number
      where: { priority: "2" },
    }),
    [],
  );
  assert.deepEqual(
    realm.objects<Task>("Task", {
      // @ts-expect-error: a range operand of the wrong type (bracketed out)
      where: { priority: { gt: "1" } },
    }),
    [],
  );
  assert.deepEqual(
    realm.objects<Task>("Task", {
      where: { $not: { $or: [{ priority: 2 }] } },
      // @ts-expect-error: sorting by a misspelled field
      sort: [["priorty", "asc"]],
    }),
    [],
  );
  assert.equal(
    // @ts-expect-error: a misspelled field in count()
    realm.count<Task>("Task", { where: { $and: [{ titel: "x" }] } }),
    0,
  );
  assert.throws(
    () =>
      realm.objects<Task>("Task", {
        // @ts-expect-error: an array needs { eq }
        where: { tags: ["home"] },
      }),
    /where\.tags is an array/,
  );
  assert.throws(
    () =>
      realm.objects<Task>("Task", {
        // @ts-expect-error: a plain object is read as operators; needs { eq }
        where: { meta: { owner: "me" } },
      }),
    /where\.meta\.owner is not an operator/,
  );
  assert.throws(
    () =>
      realm.objects<Task>("Task", {
        // @ts-expect-error: "ascending" is not a direction
        sort: [["title", "ascending"]],
      }),
    /sort\[0\]\[1\]/,
  );
  // An optional field's `undefined` is no operand (a realm never stores
  // it): refused by the types, whatever the compiler options, as at run
  // time.
  assert.throws(
    () =>
      realm.objects<Task>("Task", {
        // @ts-expect-error: undefined in a list of operands
        where: { note: { in: ["x", undefined] } },
      }),
    /where\.note\.in\[1\]/,
  );
});

Deno.test("Realm.watch() keeps the filter it was given: changing a Date, Uint8Array or array operand afterwards does not move it", async () => {
  await using server = await startTestServer();
  await using client = await openClient(fastApp(server.url));
  const { realm } = client;
  const at = new Date(5);
  const bytes = new Uint8Array([1]);
  const tags = ["a"];
  const reader = realm.watch("T", {
    where: { at, bytes: { in: [bytes] }, tags: { eq: tags } },
    signal: bounded(),
  }).getReader();
  try {
    const first = await reader.read();
    assert.deepEqual(first.value?.objects, []);
    at.setTime(9);
    bytes[0] = 2;
    tags.push("b");
    await realm.write((tx) => {
      tx.put("T", "old", {
        at: new Date(5),
        bytes: new Uint8Array([1]),
        tags: ["a"],
      });
      tx.put("T", "new", {
        at: new Date(9),
        bytes: new Uint8Array([2]),
        tags: ["a", "b"],
      });
    });
    // (Without the copy, the write above matched nothing, no item came,
    // and the stream ended when its bounded signal aborted.)
    const next = await reader.read();
    assert.equal(next.done, false, "an item for the object the filter named");
    assert.deepEqual(next.value!.objects.map((o) => o.id), ["old"]);
  } finally {
    await reader.cancel();
  }
});
