import assert from "node:assert/strict";

const demo = new URL("../../examples/demo.ts", import.meta.url);

async function runDemo(args: string[]) {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", demo.pathname, ...args],
    cwd: new URL("../..", import.meta.url).pathname,
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(60_000),
  }).output();
  return {
    code: output.code,
    stdout: new TextDecoder().decode(output.stdout),
    stderr: new TextDecoder().decode(output.stderr),
  };
}

Deno.test("examples/demo.ts runs to completion, shows every step, and removes its data", async () => {
  const { code, stdout, stderr } = await runDemo(["--objects", "3000"]);
  assert.equal(code, 0, stderr);
  for (
    const expected of [
      "Tether demo: 3,000 objects, one server, two clients",
      "upload    [██████████████████████████████] 100%",
      "download  [██████████████████████████████] 100%",
      "reader    bootstrapped 3,000 objects",
      "reader    changes received while paused: 0",
      "reader    caught up: 150 changes",
      "(server_shutting_down; retry 1 in",
      "it has the writer's new object",
      "objects   3,001 in the reader, 3,001 in the writer",
      "Temporary data removed. Done.",
    ]
  ) {
    assert.ok(
      stdout.includes(expected),
      `missing ${JSON.stringify(expected)} in:\n${stdout}`,
    );
  }
  const dataDir = /Deno KV in (\S+)\)/.exec(stdout)?.[1];
  assert.ok(dataDir !== undefined);
  await assert.rejects(Deno.stat(dataDir), Deno.errors.NotFound);
});

Deno.test("examples/demo.ts --help lists its options (also after a `--`); a bad option exits 2", async () => {
  const help = await runDemo(["--help"]);
  assert.equal(help.code, 0);
  for (
    const option of ["--objects <n>", "--keep-data", "--verbose", "--help"]
  ) {
    assert.ok(help.stdout.includes(option), option);
  }
  // `deno task demo -- --help` passes the `--` on.
  const separated = await runDemo(["--", "--help"]);
  assert.equal(separated.code, 0, separated.stderr);
  assert.equal(separated.stdout, help.stdout);
  const bad = await runDemo(["--objects", "many"]);
  assert.equal(bad.code, 2);
  assert.ok(
    bad.stderr.includes(
      '--objects wants a whole number from 1 to 1000000, got "many"',
    ),
  );
});
