// Live queries kept by one scan per transaction: objects changed several
// times in one DOWNLOAD, batches into an empty type, routes (`eq` and `in`)
// and bounds over every value kind, checked against the query recomputed
// from scratch.
import assert from "node:assert/strict";
import { LocalRealm } from "../../src/client/local_realm.ts";
import { MemoryStorage } from "../../src/client/storage/memory.ts";
import type {
  DownloadChangeset,
  Instruction,
} from "../../src/model/changeset.ts";
import { runQuery } from "../../src/model/query.ts";
import type { Fields, Value } from "../../src/model/value.ts";
import {
  download,
  put,
  remove,
  serverChangeset,
} from "../_helpers/changesets.ts";
import {
  checkWatched,
  watchAll,
  writeRandomly,
} from "../_helpers/live_query.ts";
import { Prng, testSeed } from "../_helpers/prng.ts";

/** Values of every kind the order and the routes tell apart. */
const VALUES: (Value | undefined)[] = [
  undefined,
  null,
  -0,
  0,
  NaN,
  1,
  2,
  2.5,
  1n,
  // Integers at and past the ends of the routes' small-integer array.
  -1,
  1_023,
  1_024,
  2 ** 32,
  "",
  "a",
  "b",
  true,
  false,
];

const QUERIES: unknown[] = [
  { sort: [["p", "asc"]], limit: 3 },
  { sort: [["t", "desc"]], offset: 1, limit: 4 },
  { where: { t: "a" }, sort: [["p", "desc"]], limit: 2 },
  { where: { p: -0 }, sort: [["q", "asc"]] },
  { where: { p: null } },
  { where: { p: NaN }, limit: 5 },
  { where: { z: 1n } },
  { where: { z: true }, sort: [["p", "asc"], ["q", "desc"]], limit: 3 },
  { where: { p: { gte: 1 } }, sort: [["q", "asc"]], limit: 2 },
  { where: { t: { in: ["a", "b"] } }, sort: [["p", "asc"]] },
  { where: { $or: [{ t: "b" }, { p: 0 }] }, sort: [["p", "desc"]], limit: 3 },
  { where: { z: "a" }, sort: [["t", "asc"]], limit: 1 },
  { sort: [["q", "desc"]] },
  {},
  // `in` routes (a table entry per value) over zeros, NaN, null, bigints.
  { where: { p: { in: [-0, NaN, null] } }, sort: [["q", "asc"]], limit: 3 },
  { where: { q: { in: [0, 1n, "a", 0] } } },
  { where: { z: { in: [true, 2.5] }, t: { ne: "b" } }, sort: [["t", "desc"]] },
  // Specialised range and inequality tests in cut and routed results.
  { where: { p: { gt: 0.5 } }, sort: [["p", "desc"]], limit: 2 },
  { where: { q: { lt: 2 } }, sort: [["q", "asc"]], limit: 3 },
  { where: { t: { gte: "a" }, z: { ne: 1n } }, sort: [["t", "asc"]] },
  { where: { p: { lte: 1n } }, sort: [["p", "asc"]], limit: 1 },
  // Routes with more tests, on other fields and on the route's own field
  // (some the route answers, some it does not), and `in` routes with null
  // (a missing field is routed as null, yet `in: [null]` does not match it).
  { where: { t: "a", p: { gt: 0.5 } }, sort: [["q", "asc"]], limit: 2 },
  {
    where: { z: { in: [1, "a"] }, t: { in: ["a", "b"] } },
    sort: [["p", "asc"]],
  },
  { where: { p: { in: [1, null] }, q: { ne: 2 } }, sort: [["t", "asc"]] },
  { where: { q: { in: [null, "b"] } }, limit: 3, sort: [["z", "asc"]] },
  {
    where: { $and: [{ t: "b" }, { z: { lt: "b" } }] },
    sort: [["p", "desc"]],
    limit: 3,
  },
  { where: { t: "a", $and: [{ t: { in: ["a", "b"] } }, { q: { gte: 1n } }] } },
  { where: { z: { in: [true, 1] }, p: { lt: 2, ne: 1 } }, limit: 2 },
  { where: { t: "a", $and: [{ t: { eq: "b" } }] } },
  { where: { z: { in: [1, "a"] }, $and: [{ z: { in: [1, true] } }] } },
  // Routes through the boolean slots and the small-integer array, beside
  // the values the maps take (-0, 1n, integers past the array, null).
  { where: { z: false }, sort: [["p", "desc"]], limit: 2 },
  { where: { q: 1_023 }, sort: [["t", "asc"]] },
  { where: { p: 0, q: { ne: 1 } } },
  { where: { q: 1_024 }, limit: 1, sort: [["p", "asc"]] },
  {
    where: { p: { in: [0, 2, 1_024, -1, 2 ** 32, false, 1n] } },
    sort: [["q", "desc"]],
    limit: 3,
  },
  { where: { t: { in: [true, false, 2, null] } }, sort: [["p", "asc"]] },
  { where: { z: { in: [-0, 1_023, "a"] } }, sort: [["z", "desc"]], limit: 2 },
];

function randomFields(prng: Prng): Fields {
  const fields: Fields = {};
  for (const name of ["p", "q", "t", "z"]) {
    const value = VALUES[prng.int(VALUES.length)];
    if (value !== undefined) fields[name] = value;
  }
  return fields;
}

Deno.test("Live queries, randomized: repeated objects in one DOWNLOAD, batches into an empty type, routes and bounds over every value kind give the items and change sets of recomputing each query", async () => {
  const seed = testSeed();
  const prng = new Prng(seed);
  let repeats = 0;
  let emptied = 0;
  for (const margin of [0, 1, 4, 512]) {
    const realm = await LocalRealm.open(new MemoryStorage(), () => 1_000);
    realm.queries.windowMargin = margin;
    const universe = Array.from({ length: 120 }, (_, i) => `o${i}`);
    const watched = watchAll(realm.queries, "T", QUERIES);
    const check = (at: string): void => {
      for (const entry of watched) {
        const label = `${at} query ${
          JSON.stringify(entry.query, (_, v) =>
            typeof v === "bigint"
              ? `${v}n`
              : Number.isNaN(v)
              ? "NaN"
              : Object.is(v, -0)
              ? "-0"
              : v)
        }`;
        const fresh = runQuery(entry.compiled, realm.objects("T"));
        const item = checkWatched(entry, fresh, label);
        if (item === undefined) continue;
        const { insertions, deletions, modifications } = item.changes;
        assert.ok(
          insertions.length + deletions.length + modifications.length > 0,
          `${label}: an item only for a change`,
        );
      }
    };
    let serverVersion = 0;
    let time = 2_000;
    for (let step = 0; step < 200; step++) {
      const roll = prng.int(12);
      if (roll === 0) {
        // Everything goes, then a batch arrives into the empty type.
        serverVersion++;
        await realm.integrate(download(serverVersion, [
          serverChangeset(
            serverVersion,
            ++time,
            universe.map((id) => remove("T", id)),
          ),
        ]));
        emptied++;
        check(`seed ${seed} margin ${margin} step ${step} emptied`);
        const count = 30 + prng.int(90);
        serverVersion++;
        await realm.integrate(download(serverVersion, [
          serverChangeset(
            serverVersion,
            ++time,
            prng.shuffle([...universe]).slice(0, count).map((id) =>
              put("T", id, randomFields(prng))
            ),
          ),
        ]));
      } else if (roll < 5) {
        // A local transaction: one instruction per object.
        const chosen = prng.shuffle([...universe]).slice(0, 1 + prng.int(6));
        await writeRandomly(realm, chosen, prng, randomFields);
      } else {
        // A DOWNLOAD of one to three changesets over a few objects, which
        // may touch one object several times (a put made stale by a later
        // update, a delete undone by a put…).
        const few = prng.shuffle([...universe]).slice(0, 2 + prng.int(8));
        const changesets: DownloadChangeset[] = [];
        const seen = new Set<string>();
        const count = 1 + prng.int(3);
        serverVersion++;
        for (let c = 0; c < count; c++) {
          const instructions: Instruction[] = [];
          const size = prng.int(2) === 0 ? 1 + prng.int(4) : 20 + prng.int(60);
          for (let i = 0; i < size; i++) {
            const id = few[prng.int(few.length)]!;
            if (seen.has(id)) repeats++;
            seen.add(id);
            const choice = prng.int(5);
            instructions.push(
              choice === 0
                ? { op: "delete", type: "T", id, fields: null, stamp: null }
                : {
                  op: choice === 1 ? "update" : "put",
                  type: "T",
                  id,
                  fields: randomFields(prng),
                  // Each instruction newer than the one before, so later
                  // ones win within the changeset too.
                  stamp: { time: time + 1, counter: i, node: 99 },
                },
            );
          }
          changesets.push(serverChangeset(serverVersion, ++time, instructions));
        }
        await realm.integrate(download(serverVersion, changesets));
      }
      check(`seed ${seed} margin ${margin} step ${step}`);
    }
    for (const entry of watched) entry.remove();
    assert.equal(realm.queries.watchers, 0);
    await realm.close();
  }
  assert.ok(repeats > 0 && emptied > 0, `seed ${seed}: both paths ran`);
});
