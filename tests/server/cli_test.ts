import assert from "node:assert/strict";
import { parseCommandLine, UsageError } from "../../src/server/cli.ts";

const CLI = new URL("../../cli.ts", import.meta.url).pathname;

Deno.test("parseCommandLine() applies defaults and reads the secret from the environment", () => {
  assert.deepEqual(parseCommandLine(["serve", "--allow-anonymous"]), {
    command: "serve",
    arguments: {
      port: 8080,
      hostname: "127.0.0.1",
      data: "./data",
      jwtSecret: undefined,
      allowAnonymous: true,
    },
  });
  const parsed = parseCommandLine(
    ["serve", "--port", "0", "--hostname=0.0.0.0", "--data", "/srv/x"],
    (name) => name === "TETHER_JWT_SECRET" ? "from-env" : undefined,
  );
  assert.deepEqual(parsed, {
    command: "serve",
    arguments: {
      port: 0,
      hostname: "0.0.0.0",
      data: "/srv/x",
      jwtSecret: "from-env",
      allowAnonymous: false,
    },
  });
  assert.equal(
    parseCommandLine(["serve", "--jwt-secret", "flag"], () => "env").command,
    "serve",
  );
  assert.deepEqual(parseCommandLine(["serve", "--help"]), { command: "help" });
});

Deno.test("parseCommandLine() refuses what it cannot run", () => {
  const cases: [string[], string][] = [
    [[], "Missing command: serve"],
    [["start"], 'Unknown command "start"'],
    [["serve", "--allow-anonymous", "--verbose"], 'Unknown option "--verbose"'],
    [["serve", "--allow-anonymous", "--port"], "Option --port needs a value"],
    [["serve", "--allow-anonymous", "--port", "80a"], 'Invalid port "80a"'],
    [["serve", "--allow-anonymous", "--port", "70000"], 'Invalid port "70000"'],
    [["serve", "--allow-anonymous=yes"], "--allow-anonymous takes no value"],
    [
      ["serve"],
      "No way to log in: pass --jwt-secret (or set TETHER_JWT_SECRET) and/or --allow-anonymous",
    ],
  ];
  for (const [args, message] of cases) {
    assert.throws(
      () => parseCommandLine(args),
      new UsageError(message),
      args.join(" "),
    );
  }
});

/** Reads a child's stdout as lines until `predicate` matches one. */
async function readUntil(
  lines: AsyncIterator<string>,
  predicate: (line: string) => boolean,
  seen: string[],
): Promise<string> {
  for (let count = 0; count < 100; count++) {
    const { done, value } = await lines.next();
    if (done) {
      throw new Error(`Output ended without a match:\n${seen.join("\n")}`);
    }
    seen.push(value);
    if (predicate(value)) return value;
  }
  throw new Error("No match within 100 lines");
}

async function* linesOf(
  stream: ReadableStream<Uint8Array>,
): AsyncGenerator<string> {
  let pending = "";
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    pending += chunk;
    let newline;
    while ((newline = pending.indexOf("\n")) >= 0) {
      yield pending.slice(0, newline);
      pending = pending.slice(newline + 1);
    }
  }
  if (pending !== "") yield pending;
}

Deno.test("cli serve prints its URL, serves, refuses a second process on the same data, and exits 0 on SIGTERM", async () => {
  const data = await Deno.makeTempDir();
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--unstable-kv",
      CLI,
      "serve",
      "--port",
      "0",
      "--data",
      data,
      "--allow-anonymous",
    ],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stderr = new Response(child.stderr).text();
  const lines = linesOf(child.stdout);
  const seen: string[] = [];
  try {
    const listening = await readUntil(
      lines,
      (line) => line.includes("listening"),
      seen,
    );
    const url = /(http:\/\/127\.0\.0\.1:\d+)/.exec(listening)![1]!;
    const health = await fetch(`${url}/health`);
    assert.equal(health.status, 200);
    await health.body?.cancel();

    const second = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        "--unstable-kv",
        CLI,
        "serve",
        "--port",
        "0",
        "--data",
        data,
        "--allow-anonymous",
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(second.code, 1);
    assert.match(
      new TextDecoder().decode(second.stderr),
      /another server process holds it/,
    );

    child.kill("SIGTERM");
    await readUntil(lines, (line) => line.includes("stopped"), seen);
    const status = await child.status;
    assert.equal(status.code, 0, await stderr);
  } finally {
    try {
      child.kill("SIGKILL");
    } catch {
      // Already exited.
    }
    for await (const line of { [Symbol.asyncIterator]: () => lines }) {
      seen.push(line);
    }
    await child.status;
    await stderr;
    await Deno.remove(data, { recursive: true });
  }
});

Deno.test("cli with a bad command line prints usage and exits 2", async () => {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--unstable-kv", CLI, "serve"],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(output.code, 2);
  const stderr = new TextDecoder().decode(output.stderr);
  assert.match(stderr, /No way to log in/);
  assert.match(stderr, /Usage: tether serve/);
});
