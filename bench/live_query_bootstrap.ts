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
 * The forced collection also drops each run's optimized code, and the
 * warm-up and earlier rows leave type feedback behind, so neither is what
 * a user's first bootstrap meets. `--fresh <n>` adds a second table: the
 * first bootstrap of a fresh process (one child process per run, `n` per
 * row, rows and checkouts interleaved; module loading excluded, JIT
 * included), with the V8 flags of `--fresh-flags` (default
 * `--single-threaded-gc`; `--fresh-flags ""` for none).
 *
 * ```sh
 * deno run -A --v8-flags=--expose-gc,--single-threaded-gc \
 *   bench/live_query_bootstrap.ts [--reps 7] [--base /tmp/base] [--fresh 7]
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

const CONFIGS = [
  ["none", { liveQueries: [], indexes: false }],
  ["10 live queries", { liveQueries: TEN, indexes: false }],
  ["2 indexes", { liveQueries: [], indexes: true }],
  ["2 indexes + 10 live queries", { liveQueries: TEN, indexes: true }],
  ["10 UI live queries", { liveQueries: UI, indexes: false }],
  ["2 indexes + 10 UI live queries", { liveQueries: UI, indexes: true }],
] as const;

/** One measured bootstrap: CPU and wall time, in ms. */
async function measure(
  impl: Implementation,
  options: (typeof CONFIGS)[number][1],
): Promise<{ cpu: number; wall: number }> {
  const before = process.cpuUsage();
  const start = performance.now();
  await run(impl, options);
  const wall = performance.now() - start;
  const used = process.cpuUsage(before);
  return { cpu: (used.user + used.system) / 1_000, wall };
}

/** Prints a table of the CPU and wall times of each row. */
function table(
  labels: readonly string[],
  times: Map<string, number[]>,
  walls: Map<string, number[]>,
): void {
  console.log(
    "| run | CPU min | CPU median | median vs none | wall median | wall vs none |",
  );
  console.log(
    "| --- | ------- | ---------- | -------------- | ----------- | ------------ |",
  );
  for (const label of labels) {
    const none = median(times.get(`${label}: none`)!);
    const noneWall = median(walls.get(`${label}: none`)!);
    for (const [name] of CONFIGS) {
      const values = times.get(`${label}: ${name}`)!;
      const wall = median(walls.get(`${label}: ${name}`)!);
      console.log(
        `| ${label}: ${name} | ${Math.min(...values).toFixed(0)} ms | ${
          median(values).toFixed(0)
        } ms | ${(median(values) / none).toFixed(2)}× | ${
          wall.toFixed(0)
        } ms | ${(wall / noneWall).toFixed(2)}× |`,
      );
    }
  }
}

function push(map: Map<string, number[]>, key: string, value: number): void {
  map.set(key, [...map.get(key) ?? [], value]);
}

const child = option("--child");
if (child !== undefined) {
  // A child of `--fresh`: one bootstrap of one row, nothing run before it.
  const base = option("--base");
  const root = child === "base"
    ? new URL(`file://${base!.replace(/\/?$/, "/")}`)
    : new URL("../", import.meta.url);
  const impl = await load(root);
  const result = await measure(impl, CONFIGS[Number(option("--row"))]![1]);
  console.log(JSON.stringify(result));
  if (sink < 0) console.log(sink);
  Deno.exit(0);
}

const reps = Number(option("--reps") ?? 5);
const impls = await implementations(load);
const times = new Map<string, number[]>();
const walls = new Map<string, number[]>();
/** V8's `gc()` when exposed (`--v8-flags=--expose-gc`). */
const collect = (globalThis as { gc?: () => void }).gc;
// Warm-up: one run of each, not counted.
for (const [, impl] of impls) for (const [, o] of CONFIGS) await run(impl, o);
// Each rep starts at another row and alternates the checkouts' order: a
// run measured right after a heavy one reads up to ~10 ms slower
// (PERFORMANCE.md "Sixth pass"), so no row or checkout always takes that
// place.
for (let rep = 0; rep < reps; rep++) {
  for (let step = 0; step < CONFIGS.length; step++) {
    const [name, options] = CONFIGS[(rep + step) % CONFIGS.length]!;
    const order = rep % 2 === 0 ? impls : impls.toReversed();
    for (const [label, impl] of order) {
      collect?.();
      const { cpu, wall } = await measure(impl, options);
      push(times, `${label}: ${name}`, cpu);
      push(walls, `${label}: ${name}`, wall);
    }
  }
}
table(impls.map(([label]) => label), times, walls);

const fresh = Number(option("--fresh") ?? 0);
if (fresh > 0) {
  const freshTimes = new Map<string, number[]>();
  const freshWalls = new Map<string, number[]>();
  const base = option("--base");
  const flags = option("--fresh-flags") ?? "--single-threaded-gc";
  for (let rep = 0; rep < fresh; rep++) {
    for (let row = 0; row < CONFIGS.length; row++) {
      for (const [label] of impls) {
        const args = [
          "run",
          "-A",
          ...(flags === "" ? [] : [`--v8-flags=${flags}`]),
          new URL(import.meta.url).pathname,
          "--child",
          label,
          "--row",
          String(row),
          ...(base === undefined ? [] : ["--base", base]),
        ];
        const output = await new Deno.Command(Deno.execPath(), {
          args,
          stdout: "piped",
          stderr: "inherit",
        }).output();
        if (!output.success) throw new Error(`child ${label} ${row} failed`);
        const text = new TextDecoder().decode(output.stdout).trim();
        const { cpu, wall } = JSON.parse(text.split("\n").at(-1)!);
        push(freshTimes, `${label}: ${CONFIGS[row]![0]}`, cpu);
        push(freshWalls, `${label}: ${CONFIGS[row]![0]}`, wall);
      }
    }
  }
  console.log(
    `\nFirst bootstrap in a fresh process (V8 flags: ${
      flags || "none"
    }), ${fresh} per row:`,
  );
  table(impls.map(([label]) => label), freshTimes, freshWalls);
}
if (sink < 0) console.log(sink);
