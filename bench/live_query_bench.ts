/**
 * The cost of live queries (issue 11, docs/CLIENT.md "Querying"): a
 * single-object transaction, local and remote, on a realm of 100,000
 * objects with 0 (baseline), 1, 100 and 1,000 live queries registered; and a
 * bootstrap of 100,000 objects with and without 10 live queries and field
 * indexes. Writes and downloads go through `LocalRealm`, the path the
 * client's `Realm.write` and sync session use. Every live-query item is
 * read (materialized) as a UI would.
 *
 * ```sh
 * deno bench -A bench/live_query_bench.ts
 * ```
 *
 * @module
 */

import { LocalRealm } from "../src/client/local_realm.ts";
import { type LiveSnapshot, materialize } from "../src/client/query_engine.ts";
import { MemoryStorage } from "../src/client/storage/memory.ts";
import { compileQuery } from "../src/model/query.ts";
import { BUCKETS, download, OBJECTS, taskBootstrap } from "./_tasks.ts";

/** The bootstrap: 100 DOWNLOAD messages of 1,000 objects each. */
const bootstrap = taskBootstrap();

let sink = 0;
const read = (snapshot: LiveSnapshot) => {
  sink += materialize(snapshot).objects.length;
};

/**
 * The i-th live query: the first sorts the whole type (its result holds
 * every object), the others each follow one bucket of 100 objects.
 */
function queryFor(i: number) {
  return i === 0
    ? compileQuery({ sort: [["n", "asc"]], limit: 50 })
    : compileQuery({ where: { bucket: i }, sort: [["n", "desc"]] });
}

// One realm of 100,000 objects for the single-transaction groups.
const realm = await LocalRealm.open(new MemoryStorage(), () => 1_000);
for (const message of bootstrap) await realm.integrate(message);
realm.queries.ensureIndexes({ Task: ["bucket"] });
const registered: (() => void)[] = [];

function setLiveQueries(count: number): void {
  while (registered.length > count) registered.pop()!();
  while (registered.length < count) {
    const { first, remove } = realm.queries.watch(
      "Task",
      queryFor(registered.length),
      read,
    );
    read(first);
    registered.push(remove);
  }
}

let step = 0;
let serverVersion = bootstrap.length;
/** The object a transaction changes: in bucket 1 (watched when ≥ 2 queries). */
function nextTarget(): string {
  step++;
  return `t${BUCKETS * (step % 100) + 1}`;
}

for (const count of [0, 1, 100, 1_000]) {
  Deno.bench({
    name: `local, ${count} live queries`,
    group: "single-object local transaction, 100k objects",
    baseline: count === 0,
    async fn(b) {
      setLiveQueries(count);
      const id = nextTarget();
      const n = (step * 31) % OBJECTS;
      b.start();
      await realm.write((tx) => tx.update("Task", id, { n }));
      b.end();
    },
  });
}

for (const count of [0, 1, 100, 1_000]) {
  Deno.bench({
    name: `remote, ${count} live queries`,
    group: "single-object remote transaction, 100k objects",
    baseline: count === 0,
    async fn(b) {
      setLiveQueries(count);
      const id = nextTarget();
      serverVersion++;
      const message = download(serverVersion, 10_000 + serverVersion, [{
        op: "update",
        type: "Task",
        id,
        fields: { n: (step * 37) % OBJECTS },
        stamp: null,
      }]);
      b.start();
      await realm.integrate(message);
      b.end();
    },
  });
}

/** Ten live queries of a todo UI's kinds. */
const TEN = [
  { sort: [["n", "asc"]], limit: 100 },
  { where: { even: true }, sort: [["n", "desc"]], limit: 50 },
  { where: { n: { gte: 50_000 } }, sort: [["title", "asc"]], limit: 20 },
  { where: { bucket: { in: [1, 2, 3] } } },
  { where: { $or: [{ bucket: 4 }, { n: { lt: 10 } }] }, sort: [["n", "asc"]] },
  ...[5, 6, 7, 8, 9].map((bucket) => ({
    where: { bucket },
    sort: [["n", "desc"], ["title", "asc"]],
  })),
];

async function runBootstrap(
  options: { liveQueries: boolean; indexes: boolean },
): Promise<void> {
  const fresh = await LocalRealm.open(new MemoryStorage(), () => 1_000);
  if (options.indexes) fresh.queries.ensureIndexes({ Task: ["bucket", "n"] });
  const removes: (() => void)[] = [];
  if (options.liveQueries) {
    for (const query of TEN) {
      const { first, remove } = fresh.queries.watch(
        "Task",
        compileQuery(query),
        read,
      );
      read(first);
      removes.push(remove);
    }
  }
  for (const message of bootstrap) await fresh.integrate(message);
  for (const remove of removes) remove();
  await fresh.close();
}

for (
  const [name, options] of [
    ["none", { liveQueries: false, indexes: false }],
    ["10 live queries", { liveQueries: true, indexes: false }],
    ["2 indexes", { liveQueries: false, indexes: true }],
    ["2 indexes + 10 live queries", { liveQueries: true, indexes: true }],
  ] as const
) {
  Deno.bench({
    name: `bootstrap, ${name}`,
    group: "bootstrap of 100k objects (100 DOWNLOADs of 1,000)",
    baseline: name === "none",
    n: 3,
    warmup: 1,
    async fn() {
      // The single-transaction groups' queries are not part of this one.
      setLiveQueries(0);
      await runBootstrap(options);
    },
  });
}

globalThis.addEventListener("unload", () => {
  if (sink < 0) console.log(sink);
});
