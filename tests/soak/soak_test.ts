// The convergence soak, short: a few seeded schedules of writes over three
// clients with every fault kind in reach, including at least one restore of
// an older copy of the server's store (a SIGKILL and a restart on the same
// file to take the copy, a SIGKILL and a restart on the copy later) and two
// writes the server refuses each, then the soak's checks
// (tests/soak/_engine.ts).
// `deno task soak` runs the long version.

import assert from "node:assert/strict";
import { runSchedule } from "./_engine.ts";

// Fixed seeds keep CI deterministic in its steps; TETHER_SEED=<n> runs
// another schedule.
const SEEDS = Deno.env.get("TETHER_SEED") === undefined
  ? [1, 2]
  : [Number(Deno.env.get("TETHER_SEED"))];

for (const seed of SEEDS) {
  Deno.test(`soak: 150 writes over three clients with faults, server SIGKILLs, a restore of an older copy and refused writes converge, lose nothing acknowledged, store nothing refused and integrate nothing twice (seed ${seed})`, async () => {
    // The schedule's steps (kills, copies, restores, quiescence), shown
    // with a failure: which step lost what depends on how they interleaved.
    const steps: string[] = [];
    const started = performance.now();
    const result = await runSchedule({
      seed,
      log: (line) =>
        steps.push(`${Math.round(performance.now() - started)} ms${line}`),
      writes: 150,
      // Taking the copy is a SIGKILL and a restart on the same file already.
      minRestores: 1,
      minRejected: 2,
      // More faults per write than the long run, so a short schedule meets
      // several kinds.
      faultChance: 0.08,
      quiesceMs: 30_000,
    });
    assert.deepEqual(
      result.problems,
      [],
      `seed ${seed}:\n${result.problems.join("\n")}\nsteps:\n${
        steps.join("\n")
      }`,
    );
    assert.ok(result.restores >= 1, `seed ${seed}: no restore`);
    // A restore waits for a write its copy lacks to be acknowledged, so its
    // writer at least must have reset.
    assert.ok(result.resets >= 1, `seed ${seed}: no client reset`);
    assert.ok(result.rejected >= 2, `seed ${seed}: too few refused writes`);
    assert.equal(result.lost, 0);
    assert.equal(result.duplicated, 0);
    assert.equal(result.unsettled, 0);
    assert.equal(result.replicasEqual, true);
  });
}
