// Runs `bench/sync_bench.ts --quick` (tiny sizes) as a child process to
// prove that every row of the end-to-end benchmark still produces a number
// and that the bench and its three server processes exit cleanly. Nothing
// here looks at how fast anything was.

import assert from "node:assert/strict";

/** Every row the bench must report, with the columns it fills. */
const EXPECTED: Record<string, ("tether" | "yjs" | "raw")[]> = {
  bootstrap_200_ms: ["tether", "yjs", "raw"],
  bootstrap_200_objects_per_s: ["tether", "yjs"],
  bootstrap_200_bytes: ["tether", "yjs"],
  bootstrap_1000_ms: ["tether", "yjs", "raw"],
  bootstrap_1000_objects_per_s: ["tether", "yjs"],
  bootstrap_1000_bytes: ["tether", "yjs"],
  updates_1_per_write_per_s: ["tether", "yjs", "raw"],
  updates_1_per_write_bytes_up: ["tether", "yjs"],
  updates_1_per_write_bytes_down: ["tether", "yjs"],
  updates_100_per_write_per_s: ["tether", "yjs", "raw"],
  updates_100_per_write_bytes_up: ["tether", "yjs"],
  updates_100_per_write_bytes_down: ["tether", "yjs"],
  propagation_p50_us: ["tether", "yjs", "raw"],
  propagation_p99_us: ["tether", "yjs", "raw"],
  fanout_last_p50_us: ["tether", "yjs", "raw"],
  fanout_last_p99_us: ["tether", "yjs", "raw"],
  fanout_each_p50_us: ["tether", "yjs", "raw"],
  fanout_each_p99_us: ["tether", "yjs", "raw"],
  progress_without_ms: ["tether"],
  progress_with_ms: ["tether"],
  progress_overhead_percent: ["tether"],
  live_queries_none_ms: ["tether"],
  live_queries_ten_ms: ["tether"],
  live_queries_extra_percent: ["tether"],
  live_queries_cpu_extra_percent: ["tether"],
  idle_session_heap_bytes: ["tether", "yjs", "raw"],
  idle_session_object_bytes: ["tether", "yjs", "raw"],
  raw_echo_rtt_p50_us: ["raw"],
  raw_echo_rtt_p99_us: ["raw"],
};

interface Report {
  rows: { id: string; tether?: unknown; yjs?: unknown; raw?: unknown }[];
  processes: { name: string; code: number }[];
}

Deno.test("bench:sync --quick fills every row and every process exits cleanly", async () => {
  const out = await Deno.makeTempFile({
    prefix: "sync_bench_smoke_",
    suffix: ".json",
  });
  try {
    const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        new URL("../../bench/sync_bench.ts", import.meta.url).pathname,
        "--quick",
        "--out",
        out,
      ],
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(120_000),
    }).output();
    const decoder = new TextDecoder();
    assert.equal(
      code,
      0,
      `bench exited with ${code}:\n${decoder.decode(stdout)}\n${
        decoder.decode(stderr)
      }`,
    );
    // The table went to stdout.
    assert.match(decoder.decode(stdout), /\| figure +\| +Tether \|/);

    const report: Report = JSON.parse(await Deno.readTextFile(out));
    assert.deepEqual(
      report.rows.map((row) => row.id).toSorted(),
      Object.keys(EXPECTED).toSorted(),
    );
    for (const row of report.rows) {
      const filled = (["tether", "yjs", "raw"] as const).filter((column) =>
        row[column] !== undefined
      );
      assert.deepEqual(filled, EXPECTED[row.id], `columns of ${row.id}`);
      for (const column of filled) {
        const value = row[column];
        assert.ok(
          typeof value === "number" && Number.isFinite(value),
          `${row.id}.${column} is ${value}`,
        );
      }
    }
    assert.deepEqual(
      report.processes.map((process) => process.name).toSorted(),
      [
        "raw (memory 1) server",
        "raw server",
        "tether (memory 1) server",
        "tether server",
        "yjs (memory 1) server",
        "yjs server",
      ],
    );
    for (const process of report.processes) {
      assert.equal(
        process.code,
        0,
        `${process.name} exited with ${process.code}`,
      );
    }
  } finally {
    await Deno.remove(out);
  }
});
