/**
 * The convergence soak from the command line (`deno task soak`): runs
 * seeded schedules of writes and faults (`_engine.ts`: network faults,
 * server SIGKILLs, restores of an older copy of the server's store, writes
 * the server refuses) one after another,
 * prints a line per schedule (with its problems and steps — kills, copies,
 * restores, quiescence — when it failed) and a summary, and exits 1 if any
 * failed.
 *
 * Options: `--schedules N` (default 100), `--writes W` (default 1000),
 * `--seed S` (default: random; schedule i uses seed S + i, so
 * `--seed <a failed schedule's seed> --schedules 1` runs it again),
 * `--fault-percent P` (default 3: the chance, in percent, that a fault
 * starts after a write).
 * Later options win, so `deno task soak --schedules 5` overrides the task's.
 */
import { FAULT_KINDS, type FaultKind, runSchedule } from "./_engine.ts";

/** The last value of `--<name>`, a whole number, or `fallback`. */
function option(name: string, fallback: number): number {
  const index = Deno.args.lastIndexOf(`--${name}`);
  if (index < 0) return fallback;
  const value = Number(Deno.args[index + 1]);
  if (!Number.isInteger(value) || value < 0) {
    console.error(
      `--${name} needs a whole number, not ${Deno.args[index + 1]}`,
    );
    Deno.exit(2);
  }
  return value;
}

const schedules = option("schedules", 100);
const writes = option("writes", 1000);
const seed = option("seed", (Math.random() * 2 ** 31) >>> 0);
const faultPercent = option("fault-percent", 3);
console.log(
  `soak: ${schedules} schedules × ${writes} writes, seed ${seed}, faults after ${faultPercent}% of writes`,
);

const totals = {
  writes: 0,
  changesets: 0,
  kills: 0,
  restores: 0,
  resets: 0,
  rejected: 0,
  lost: 0,
  duplicated: 0,
  unsettled: 0,
  unequal: 0,
  failed: [] as number[],
  faults: Object.fromEntries(FAULT_KINDS.map((kind) => [kind, 0])) as Record<
    FaultKind,
    number
  >,
};
const started = performance.now();
for (let index = 0; index < schedules; index++) {
  // The schedule's steps, printed when it fails (see below).
  const steps: string[] = [];
  const scheduleStarted = performance.now();
  const result = await runSchedule({
    log: (line) =>
      steps.push(
        `${Math.round(performance.now() - scheduleStarted)} ms${line}`,
      ),
    seed: seed + index,
    writes,
    faultChance: faultPercent / 100,
  });
  totals.writes += result.writes;
  totals.changesets += result.changesets;
  totals.kills += result.kills;
  totals.restores += result.restores;
  totals.resets += result.resets;
  totals.rejected += result.rejected;
  totals.lost += result.lost;
  totals.duplicated += result.duplicated;
  totals.unsettled += result.unsettled;
  if (!result.replicasEqual) totals.unequal++;
  for (const kind of FAULT_KINDS) totals.faults[kind] += result.faults[kind];
  const faults = FAULT_KINDS.filter((kind) => result.faults[kind] > 0)
    .map((kind) => `${kind} ${result.faults[kind]}`).join(", ");
  const ok = result.problems.length === 0;
  if (!ok) totals.failed.push(result.seed);
  console.log(
    `${ok ? "ok  " : "FAIL"} ${
      index + 1
    }/${schedules} seed ${result.seed}: ${result.writes} writes, ${result.kills} kills, ${result.restores} restores (${result.resets} resets), ${result.rejected} rejected, faults: ${
      faults || "none"
    }; lost ${result.lost}, duplicated ${result.duplicated}, unsettled ${result.unsettled}, replicas ${
      result.replicasEqual ? "equal" : "DIFFER"
    } (${(result.durationMs / 1000).toFixed(1)} s)`,
  );
  for (const problem of result.problems) console.log(`     ${problem}`);
  if (!ok) {
    console.log("     steps:");
    for (const step of steps) console.log(`     ${step}`);
  }
}
const faultList = FAULT_KINDS.map((kind) => `${kind} ${totals.faults[kind]}`)
  .join(", ");
const faultCount = Object.values(totals.faults).reduce((a, b) => a + b, 0);
console.log(
  [
    `summary: ${schedules} schedules, ${totals.writes} writes (${totals.changesets} changesets), seed ${seed}, ${
      ((performance.now() - started) / 60_000).toFixed(1)
    } min`,
    `  kills ${totals.kills}, restores ${totals.restores} (client resets ${totals.resets}), rejected writes ${totals.rejected}; faults ${faultCount}: ${faultList}`,
    `  lost ${totals.lost}, duplicated ${totals.duplicated}, unsettled ${totals.unsettled}, replicas ${
      totals.unequal === 0
        ? "equal in every schedule"
        : `differ in ${totals.unequal}`
    }`,
    totals.failed.length === 0
      ? "  every schedule passed"
      : `  FAILED seeds: ${totals.failed.join(" ")}`,
  ].join("\n"),
);
if (totals.failed.length > 0) Deno.exit(1);
