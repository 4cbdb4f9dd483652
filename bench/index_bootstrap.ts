/**
 * What field indexes cost around a bootstrap, in CPU time
 * (`process.cpuUsage()`): the bootstrap of bench/live_query_bootstrap.ts
 * (100,000 `Task` objects in 100 DOWNLOADs of 1,000) with no index and with
 * indexes on `bucket` and `n`, then, separately timed, the first indexed
 * queries after it (an equality on `bucket`, a range on `n`: where a
 * deferred sort of an index's entries is paid), then 100 single-object
 * writes that move an object between values, each followed by both
 * queries (`n` values are unique here, so each write makes a value disappear
 * and another repeat). `--base <dir>` loads another checkout's `src/` and interleaves
 * its runs with this one's, so before and after come from one process.
 *
 * ```sh
 * deno run -A --v8-flags=--expose-gc bench/index_bootstrap.ts \
 *   [--reps 7] [--base /tmp/base]
 * ```
 *
 * @module
 */
import process from "node:process";
import {
  BUCKETS,
  implementations,
  loadRealm,
  median,
  OBJECTS,
  option,
  type RealmImplementation,
  taskBootstrap,
} from "./_tasks.ts";

const WRITES = 100;

const bootstrap = taskBootstrap();

let sink = 0;
const cpu = (before: ReturnType<typeof process.cpuUsage>) => {
  const used = process.cpuUsage(before);
  return (used.user + used.system) / 1_000;
};

/** CPU ms of: the bootstrap, the first two queries, the writes. */
async function run(
  impl: RealmImplementation,
  indexes: boolean,
): Promise<number[]> {
  const realm = await impl.open();
  if (indexes) realm.queries.ensureIndexes({ Task: ["bucket", "n"] });
  const equal = impl.compileQuery({ where: { bucket: 7 } });
  const range = impl.compileQuery({ where: { n: { gte: 500, lt: 600 } } });
  let before = process.cpuUsage();
  for (const message of bootstrap) await realm.integrate(message);
  const times = [cpu(before)];
  if (indexes) {
    before = process.cpuUsage();
    sink += realm.queries.query("Task", equal).length;
    sink += realm.queries.query("Task", range).length;
    times.push(cpu(before));
    before = process.cpuUsage();
    for (let i = 0; i < WRITES; i++) {
      // Another object each time, to another bucket and another `n`: the
      // results keep about 100 objects each.
      const j = (i * 997) % OBJECTS;
      await realm.write((tx) =>
        tx.update("Task", `t${j}`, {
          bucket: (j + 1 + i) % BUCKETS,
          n: (j * 7_919 + 50_000) % OBJECTS,
        })
      );
      sink += realm.queries.query("Task", equal).length;
      sink += realm.queries.query("Task", range).length;
    }
    times.push(cpu(before));
  }
  await realm.close();
  return times;
}

const reps = Number(option("--reps") ?? 5);
const impls = await implementations(loadRealm);
const ROWS = [
  "none: bootstrap",
  "2 indexes: bootstrap",
  "2 indexes: first eq + first range query",
  `2 indexes: ${WRITES} writes, each + both queries`,
];
const times = new Map<string, number[]>();
const record = (key: string, value: number) =>
  times.set(key, [...times.get(key) ?? [], value]);
/** V8's `gc()` when exposed (`--v8-flags=--expose-gc`). */
const collect = (globalThis as { gc?: () => void }).gc;
for (const [, impl] of impls) {
  await run(impl, false);
  await run(impl, true);
}
for (let rep = 0; rep < reps; rep++) {
  for (const indexes of [false, true]) {
    for (const [label, impl] of impls) {
      collect?.();
      const result = await run(impl, indexes);
      if (!indexes) record(`${label}: ${ROWS[0]}`, result[0]!);
      else {
        for (let i = 0; i < 3; i++) {
          record(`${label}: ${ROWS[i + 1]}`, result[i]!);
        }
      }
    }
  }
}
console.log("| run | CPU min | CPU median |");
console.log("| --- | ------- | ---------- |");
for (const [label] of impls) {
  for (const row of ROWS) {
    const values = times.get(`${label}: ${row}`)!;
    console.log(
      `| ${label}: ${row} | ${Math.min(...values).toFixed(1)} ms | ${
        median(values).toFixed(1)
      } ms |`,
    );
  }
}
if (sink < 0) console.log(sink);
