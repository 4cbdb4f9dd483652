/**
 * A micro-measurement of server JavaScript each UPLOAD pays on the way to
 * its commit (docs/PERFORMANCE.md "Propagation, hop by hop"): building the
 * group's atomic operation on the timed KV (`storage/timed_kv.ts`), and the
 * version salt (`storage/history.ts`), both without the commit itself.
 *
 * Run: `deno run -A --unstable-kv bench/upload_path_micro.ts [repo root]`
 * (the root defaults to this repository; pass another worktree to compare).
 */

const root = Deno.args[0] ?? new URL("..", import.meta.url).pathname;
const { timeKv } = await import(`${root}/src/server/storage/timed_kv.ts`);
const { randomVersionSalt } = await import(
  `${root}/src/server/storage/history.ts`
);

const kv = await Deno.openKv(":memory:");
const timed: Deno.Kv = timeKv(kv, () => {});
const head = await kv.get(["head"]);
const value = new Uint8Array(60);
const ROUNDS = 200_000;

function buildOne(): number {
  // The shape of one commitGroup operation: check head and identity, set
  // the history entry, the identity record, the salts and the head.
  const op = timed.atomic()
    .check(head)
    .check({ key: ["identity", 1], versionstamp: null })
    .set(["history", 1], value)
    .set(["identity", 1], { salt: 1, lastClientVersion: 1 })
    .set(["salts", 1], randomVersionSalt())
    .set(["head"], { version: 1, bytes: 60 });
  return typeof op.commit === "function" ? 1 : 0;
}

let sink = 0;
for (let i = 0; i < 20_000; i++) sink += buildOne();
const samples: number[] = [];
for (let run = 0; run < 7; run++) {
  const start = performance.now();
  for (let i = 0; i < ROUNDS; i++) sink += buildOne();
  samples.push((performance.now() - start) * 1000 / ROUNDS);
}
samples.sort((a, b) => a - b);
console.log(
  `µs per upload (atomic op built on the timed KV + salt), median of 7: ${
    samples[3]!.toFixed(3)
  } (min ${samples[0]!.toFixed(3)}) [${sink > 0 ? "ok" : "?"}]`,
);
kv.close();
