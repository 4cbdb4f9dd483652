/**
 * The bootstrap row of bench/live_query_bench.ts measured in CPU time
 * (`process.cpuUsage()`, less disturbed than wall time on a shared
 * machine): 100,000 objects in 100 DOWNLOADs of 1,000 into an empty
 * realm, with none, 10 live queries, 2 indexes, and both, and the same
 * with a more UI-like set of 10 live queries (windowed lists of 50); runs
 * interleaved, the minimum and median of each printed. `--base <dir>` also loads the
 * `src/` of another checkout (e.g. `git worktree add /tmp/base <commit>`)
 * and interleaves its runs with this one's, so before and after come from
 * one process.
 *
 * With `--v8-flags=--expose-gc` a full collection runs before each
 * measured run, so no run pays for collecting the realm of the one before;
 * add `--single-threaded-gc` to keep V8's concurrent collector threads out
 * of the CPU time (with them, minimum and median differ by half). The wall
 * time of each run is printed beside its CPU time: the CPU time also counts
 * V8's compiler threads, which the full collection sets to work again in
 * every run (it drops optimized code that embedded the previous realm's
 * objects and hidden classes).
 *
 * ```sh
 * deno run -A --v8-flags=--expose-gc,--single-threaded-gc \
 *   bench/live_query_bootstrap.ts [--reps 7] [--base /tmp/base]
 * ```
 *
 * @module
 */
import process from "node:process";
import type { LiveSnapshot } from "../src/client/query_engine.ts";
import {
  implementations,
  loadRealm,
  median,
  option,
  type RealmImplementation,
  taskBootstrap,
} from "./_tasks.ts";

interface Implementation extends RealmImplementation {
  materialize(snapshot: LiveSnapshot): { objects: unknown[] };
}

async function load(root: URL): Promise<Implementation> {
  const engine = await import(new URL("src/client/query_engine.ts", root).href);
  return { ...await loadRealm(root), materialize: engine.materialize };
}

const bootstrap = taskBootstrap();

/** The ten live queries of bench/live_query_bench.ts's bootstrap group. */
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

/**
 * A more UI-like set of ten: windowed lists of 50 (the whole type in two
 * orders, each half of a two-way filter, six bucket lists).
 */
const UI = [
  { sort: [["n", "asc"]], limit: 50 },
  { sort: [["title", "desc"]], limit: 50 },
  { where: { even: true }, sort: [["n", "desc"]], limit: 50 },
  { where: { even: false }, sort: [["n", "asc"]], limit: 50 },
  ...[10, 11, 12, 13, 14, 15].map((bucket) => ({
    where: { bucket },
    sort: [["n", "asc"]],
    limit: 50,
  })),
];

let sink = 0;

async function run(
  impl: Implementation,
  options: { liveQueries: readonly unknown[]; indexes: boolean },
): Promise<void> {
  const realm = await impl.open();
  if (options.indexes) realm.queries.ensureIndexes({ Task: ["bucket", "n"] });
  const removes: (() => void)[] = [];
  const read = (snapshot: LiveSnapshot) => {
    sink += impl.materialize(snapshot).objects.length;
  };
  {
    for (const query of options.liveQueries) {
      const { first, remove } = realm.queries.watch(
        "Task",
        impl.compileQuery(query),
        read,
      );
      read(first);
      removes.push(remove);
    }
  }
  for (const message of bootstrap) await realm.integrate(message);
  for (const remove of removes) remove();
  await realm.close();
}

const reps = Number(option("--reps") ?? 5);
const impls = await implementations(load);
const CONFIGS = [
  ["none", { liveQueries: [], indexes: false }],
  ["10 live queries", { liveQueries: TEN, indexes: false }],
  ["2 indexes", { liveQueries: [], indexes: true }],
  ["2 indexes + 10 live queries", { liveQueries: TEN, indexes: true }],
  ["10 UI live queries", { liveQueries: UI, indexes: false }],
  ["2 indexes + 10 UI live queries", { liveQueries: UI, indexes: true }],
] as const;
const times = new Map<string, number[]>();
const walls = new Map<string, number[]>();
/** V8's `gc()` when exposed (`--v8-flags=--expose-gc`). */
const collect = (globalThis as { gc?: () => void }).gc;
// Warm-up: one run of each, not counted.
for (const [, impl] of impls) for (const [, o] of CONFIGS) await run(impl, o);
for (let rep = 0; rep < reps; rep++) {
  for (const [name, options] of CONFIGS) {
    for (const [label, impl] of impls) {
      collect?.();
      const before = process.cpuUsage();
      const start = performance.now();
      await run(impl, options);
      const wall = performance.now() - start;
      const used = process.cpuUsage(before);
      const key = `${label}: ${name}`;
      times.set(key, [
        ...times.get(key) ?? [],
        (used.user + used.system) / 1_000,
      ]);
      walls.set(key, [...walls.get(key) ?? [], wall]);
    }
  }
}
console.log(
  "| run | CPU min | CPU median | median vs none | wall median | wall vs none |",
);
console.log(
  "| --- | ------- | ---------- | -------------- | ----------- | ------------ |",
);
for (const [label] of impls) {
  const none = median(times.get(`${label}: none`)!);
  const noneWall = median(walls.get(`${label}: none`)!);
  for (const [name] of CONFIGS) {
    const values = times.get(`${label}: ${name}`)!;
    const wall = median(walls.get(`${label}: ${name}`)!);
    console.log(
      `| ${label}: ${name} | ${Math.min(...values).toFixed(0)} ms | ${
        median(values).toFixed(0)
      } ms | ${(median(values) / none).toFixed(2)}× | ${wall.toFixed(0)} ms | ${
        (wall / noneWall).toFixed(2)
      }× |`,
    );
  }
}
if (sink < 0) console.log(sink);
