// Live queries whose result is cut after their window (a limit plus a
// margin, refilled when it runs short), big batches merged at once, and
// routed queries that learn what a commit concerns from their results.
import assert from "node:assert/strict";
import { LocalRealm } from "../../src/client/local_realm.ts";
import {
  type LiveQueryUpdate,
  materialize,
} from "../../src/client/query_engine.ts";
import type { RealmObject } from "../../src/client/realm.ts";
import { MemoryStorage } from "../../src/client/storage/memory.ts";
import type { Instruction } from "../../src/model/changeset.ts";
import { compileQuery, runQuery } from "../../src/model/query.ts";
import type { Fields } from "../../src/model/value.ts";
import { download, serverChangeset } from "../_helpers/changesets.ts";
import { checkWatched, watchAll } from "../_helpers/live_query.ts";
import { Prng, testSeed } from "../_helpers/prng.ts";

const ids = (objects: readonly RealmObject<unknown>[]) =>
  objects.map((o) => o.id);

Deno.test("Windowed live query: deletions and modifications that empty the kept prefix refill it; entries past the cut stay silent", async () => {
  const realm = await LocalRealm.open(new MemoryStorage(), () => 1_000);
  realm.queries.windowMargin = 1;
  await realm.write((tx) => {
    for (let i = 0; i < 20; i++) tx.put("T", `o${i}`, { p: i });
  });
  const items: LiveQueryUpdate[] = [];
  const { first, remove } = realm.queries.watch(
    "T",
    compileQuery({ sort: [["p", "asc"]], limit: 3 }),
    (snapshot) => items.push(materialize(snapshot)),
  );
  assert.deepEqual(ids(materialize(first).objects), ["o0", "o1", "o2"]);
  // Kept: o0..o3 (window of 3 plus a margin of 1). Two leave: short.
  await realm.write((tx) => {
    tx.delete("T", "o0");
    tx.delete("T", "o1");
  });
  assert.equal(realm.queries.refills, 1, "the cut result was refilled");
  let item = items.shift()!;
  assert.deepEqual(ids(item.objects), ["o2", "o3", "o4"]);
  assert.deepEqual(item.changes, {
    insertions: [1, 2],
    deletions: [0, 1],
    modifications: [],
  });
  // Kept again: o2..o5. o2 moves past the cut; o3..o5 still cover it.
  await realm.write((tx) => tx.update("T", "o2", { p: 100 }));
  assert.equal(realm.queries.refills, 1, "three kept cover a window of 3");
  item = items.shift()!;
  assert.deepEqual(ids(item.objects), ["o3", "o4", "o5"]);
  assert.deepEqual(item.changes, {
    insertions: [2],
    deletions: [0],
    modifications: [],
  });
  // An object from past the cut moves to the front.
  await realm.write((tx) => tx.update("T", "o19", { p: -1 }));
  item = items.shift()!;
  assert.deepEqual(ids(item.objects), ["o19", "o3", "o4"]);
  assert.deepEqual(item.changes, {
    insertions: [0],
    deletions: [2],
    modifications: [],
  });
  // Past the cut, and staying there: nobody woken, nothing refilled.
  await realm.write((tx) => tx.update("T", "o10", { p: 50 }));
  assert.equal(items.length, 0);
  // The one just past the window modified in place: not in the window.
  await realm.write((tx) => tx.update("T", "o5", { q: 1 }));
  assert.equal(items.length, 0);
  await realm.write((tx) => tx.update("T", "o4", { q: 1 }));
  assert.deepEqual(items.shift()!.changes, {
    insertions: [],
    deletions: [],
    modifications: [2],
  });
  // Everything leaves: the refill finds an empty result.
  await realm.write((tx) => {
    for (let i = 0; i < 20; i++) tx.delete("T", `o${i}`);
  });
  item = items.shift()!;
  assert.deepEqual(item.objects, []);
  assert.deepEqual(item.changes.deletions, [0, 1, 2]);
  remove();
  assert.equal(realm.queries.watchers, 0);
  await realm.close();
});

const QUERIES: unknown[] = [
  { sort: [["p", "asc"]], limit: 3 },
  { sort: [["p", "desc"], ["t", "asc"]], offset: 2, limit: 4 },
  { where: { d: true }, sort: [["t", "asc"]], limit: 5 },
  { where: { p: { gte: 2 } }, limit: 2 },
  { where: { t: "a" }, sort: [["p", "asc"]], limit: 3 },
  { where: { d: false }, sort: [["p", "asc"]], offset: 1, limit: 1 },
  { where: { p: 3 }, sort: [["t", "desc"]] },
  { where: { p: null }, limit: 6 },
  { sort: [["t", "asc"]], limit: 0, offset: 2 },
  {},
];

function randomFields(prng: Prng): Fields {
  const fields: Fields = {};
  if (prng.int(6) > 0) fields.p = prng.int(7) === 0 ? "x" : prng.int(6);
  if (prng.int(4) > 0) fields.d = prng.int(2) === 0;
  if (prng.int(4) > 0) fields.t = prng.pick(["a", "b", "c", "d", "e"]);
  return fields;
}

Deno.test("Windowed live query, delete-heavy: a cut result's margin starts near its window and doubles per refill, so a bootstrap keeps few objects past the window and deletions from the front still refill about once per 512", async () => {
  const realm = await LocalRealm.open(new MemoryStorage(), () => 1_000);
  // The default: up to 512 past the window.
  assert.equal(realm.queries.windowMargin, 512);
  const total = 2_500;
  const batch: Instruction[] = [];
  for (let i = 0; i < total; i++) {
    batch.push({
      op: "put",
      type: "T",
      id: `o${i}`,
      fields: { p: i },
      stamp: null,
    });
  }
  const [watched] = watchAll(realm.queries, "T", [
    { sort: [["p", "asc"]], limit: 10 },
  ]);
  // A bootstrap in batches of 500: the kept prefix stays near the window
  // (10 plus a margin of 32), not 10 plus 512.
  let serverVersion = 0;
  for (let start = 0; start < total; start += 500) {
    serverVersion++;
    await realm.integrate(download(serverVersion, [
      serverChangeset(serverVersion, 2_000, batch.slice(start, start + 500)),
    ]));
    const fresh = runQuery(watched!.compiled, realm.objects("T"));
    checkWatched(watched!, fresh.slice(0, 10), `batch ${serverVersion}`);
  }
  const examinedAfterBootstrap = realm.queries.examined;
  assert.equal(realm.queries.refills, 0);
  // Delete the window's first object, one transaction at a time.
  const deletions = 2_000;
  for (let i = 0; i < deletions; i++) {
    serverVersion++;
    await realm.integrate(download(serverVersion, [
      serverChangeset(serverVersion, 3_000 + i, [
        { op: "delete", type: "T", id: `o${i}`, fields: null, stamp: null },
      ]),
    ]));
    if (i % 97 === 0 || i === deletions - 1) {
      const fresh = runQuery(watched!.compiled, realm.objects("T"));
      checkWatched(watched!, fresh.slice(0, 10), `deletion ${i}`);
    } else {
      // Checked every 97th: in between, one item per deletion.
      assert.equal(watched!.items.length, 1, `deletion ${i}: one item`);
      watched!.current = watched!.items.shift()!.objects;
    }
  }
  // Margins 32, 64, 128, 256, then 512: refills after 33, 98, 227, 484,
  // 997 and 1,510 deletions. A margin stuck at 32 would refill 60 times;
  // a flat 512 three times.
  assert.equal(realm.queries.refills, 6);
  // Each refill selects from the type (a scan here: no index).
  assert.ok(
    realm.queries.examined - examinedAfterBootstrap < 8 * total + 2 * deletions,
    "refills are scans, a few of them",
  );
  watched!.remove();
  await realm.close();
});

Deno.test("Windowed live queries, randomized: cut results, refills, routed queries and merged batches give the same items and change sets as recomputing each query after every transaction", async () => {
  const seed = testSeed();
  const prng = new Prng(seed);
  let refills = 0;
  for (const margin of [0, 1, 3, 512]) {
    const realm = await LocalRealm.open(new MemoryStorage(), () => 1_000);
    realm.queries.windowMargin = margin;
    if (prng.int(2) === 0) realm.queries.ensureIndexes({ T: ["p", "t"] });
    const watched = watchAll(realm.queries, "T", QUERIES);
    const universe = Array.from({ length: 150 }, (_, i) => `o${i}`);
    let serverVersion = 0;
    for (let step = 0; step < 250; step++) {
      // Mostly small transactions; sometimes a bootstrap-sized batch (the
      // merge path), sometimes a mass deletion (refills).
      const roll = prng.int(10);
      const count = roll === 0 ? 40 + prng.int(110) : 1 + prng.int(5);
      const chosen = prng.shuffle([...universe]).slice(0, count);
      const deleting = roll === 1 ? 0.8 : 0.25;
      if (prng.int(2) === 0) {
        await realm.write((tx) => {
          for (const id of chosen) {
            if (prng.next() < deleting) tx.delete("T", id);
            else if (prng.int(2) === 0 && realm.exists("T", id)) {
              tx.update("T", id, randomFields(prng));
            } else tx.put("T", id, randomFields(prng));
          }
        });
      } else {
        serverVersion++;
        await realm.integrate(download(serverVersion, [serverChangeset(
          serverVersion,
          prng.int(4) === 0 ? 500 : 2_000 + step,
          chosen.map((id): Instruction =>
            prng.next() < deleting
              ? { op: "delete", type: "T", id, fields: null, stamp: null }
              : {
                op: prng.int(3) === 0 ? "update" : "put",
                type: "T",
                id,
                fields: randomFields(prng),
                stamp: null,
              }
          ),
        )]));
      }
      for (const entry of watched) {
        const label = `seed ${seed} margin ${margin} step ${step} query ${
          JSON.stringify(entry.query)
        }`;
        checkWatched(
          entry,
          runQuery(entry.compiled, realm.objects("T")),
          label,
        );
      }
    }
    refills += realm.queries.refills;
    for (const entry of watched) entry.remove();
    assert.equal(realm.queries.watchers, 0);
    await realm.close();
  }
  assert.ok(refills > 0, `seed ${seed}: the refill path ran`);
});

/** Windowed queries with ties, offsets, descending and multi-key sorts. */
const CUT_QUERIES: unknown[] = [
  { sort: [["p", "asc"]], limit: 5 },
  { sort: [["p", "desc"], ["t", "asc"]], offset: 3, limit: 4 },
  { where: { d: true }, sort: [["t", "desc"], ["p", "asc"]], limit: 6 },
  { where: { p: { gte: 2 } }, sort: [["q", "asc"]], offset: 2, limit: 3 },
  { where: { t: "a" }, sort: [["p", "desc"]], limit: 2 },
  { sort: [["t", "asc"]], offset: 40, limit: 1 },
  { where: { d: false }, limit: 7 },
  { sort: [["q", "desc"], ["p", "desc"]], limit: 1 },
];

/** Fields with few values per field, so sort keys tie often. */
function tyingFields(prng: Prng): Fields {
  const fields: Fields = {};
  if (prng.int(8) > 0) fields.p = prng.int(9) === 0 ? "x" : prng.int(5);
  if (prng.int(4) > 0) fields.d = prng.int(2) === 0;
  if (prng.int(6) > 0) fields.t = prng.pick(["a", "b", "c"]);
  if (prng.int(3) > 0) fields.q = prng.int(4) / 2;
  return fields;
}

Deno.test("Windowed live queries, randomized: batches that bring more objects than a windowed result keeps (into empty and cut results, with ties, offsets, descending and multi-key sorts, and deletions and changes of kept objects beside them) give the items and change sets of recomputing each query", async () => {
  const seed = testSeed();
  const prng = new Prng(seed);
  let cuts = 0;
  for (const margin of [512, 2]) {
    const realm = await LocalRealm.open(new MemoryStorage(), () => 1_000);
    realm.queries.windowMargin = margin;
    if (prng.int(2) === 0) realm.queries.ensureIndexes({ T: ["p", "t"] });
    const watched = watchAll(realm.queries, "T", CUT_QUERIES);
    let next = 0;
    let serverVersion = 0;
    for (let step = 0; step < 45; step++) {
      const live = [...realm.objects("T")].map((o) => o.id);
      // First a batch into the empty type; then, for a while, only
      // deletions from the windows (a result cut without its bound, or
      // left uncut though objects were left out, would come up short);
      // then mostly batches of new objects (up to ten times what a result
      // keeps) beside changes to existing ones.
      const pruning = step > 0 && step <= 15;
      const fresh = pruning || (step > 0 && prng.int(4) === 0)
        ? 0
        : 40 + prng.int(400);
      const instructions: Instruction[] = [];
      for (let i = 0; i < fresh; i++) {
        instructions.push({
          op: "put",
          type: "T",
          id: `o${next++}`,
          fields: tyingFields(prng),
          stamp: null,
        });
      }
      const chosen = new Set<string>();
      if (pruning) {
        for (const entry of watched) {
          const count = 1 + prng.int(3);
          for (const object of entry.current.slice(0, count)) {
            chosen.add(object.id);
          }
        }
      } else if (step > 0) {
        // Kept members are the likeliest to be chosen.
        for (const entry of watched) {
          const object = entry.current[prng.int(entry.current.length)];
          if (object !== undefined && prng.int(2) === 0) chosen.add(object.id);
        }
        for (const id of prng.shuffle(live).slice(0, prng.int(60))) {
          chosen.add(id);
        }
      }
      const deleting = pruning ? 1 : prng.int(5) === 0 ? 0.9 : 0.3;
      for (const id of chosen) {
        instructions.push(
          prng.next() < deleting
            ? { op: "delete", type: "T", id, fields: null, stamp: null }
            : {
              op: prng.int(3) === 0 ? "update" : "put",
              type: "T",
              id,
              fields: tyingFields(prng),
              stamp: null,
            },
        );
      }
      // Sometimes one object twice in a transaction.
      if (instructions.length > 0 && prng.int(3) === 0) {
        const { id } = prng.pick(instructions);
        instructions.push({
          op: "put",
          type: "T",
          id,
          fields: tyingFields(prng),
          stamp: null,
        });
      }
      const order = prng.shuffle(instructions);
      if (prng.int(3) === 0) {
        await realm.write((tx) => {
          for (const instruction of order) {
            if (instruction.op === "delete") {
              tx.delete("T", instruction.id);
            } else if (
              instruction.op === "update" && realm.exists("T", instruction.id)
            ) {
              tx.update("T", instruction.id, instruction.fields!);
            } else tx.put("T", instruction.id, instruction.fields!);
          }
        });
      } else {
        serverVersion++;
        await realm.integrate(download(serverVersion, [
          serverChangeset(serverVersion, 2_000 + step, order),
        ]));
      }
      for (const entry of watched) {
        checkWatched(
          entry,
          runQuery(entry.compiled, realm.objects("T")),
          `seed ${seed} margin ${margin} step ${step} query ${
            JSON.stringify(entry.query)
          }`,
        );
      }
    }
    cuts += realm.queries.batchesCut;
    for (const entry of watched) entry.remove();
    assert.equal(realm.queries.watchers, 0);
    await realm.close();
  }
  assert.ok(cuts > 0, `seed ${seed}: batches were cut before their entries`);
});
