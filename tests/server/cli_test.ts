import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { parseCommandLine, UsageError } from "../../src/server/cli.ts";
import { PACKAGE_VERSION } from "../../src/server/version.ts";
import { linesOf, readUntil } from "../_helpers/lines.ts";

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
      adminToken: undefined,
      logLevel: "info",
      logFormat: "pretty",
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
      adminToken: undefined,
      logLevel: "info",
      logFormat: "pretty",
    },
  });
  assert.equal(
    parseCommandLine(
      ["serve", "--jwt-secret", "flag"],
      (name) => name === "TETHER_JWT_SECRET" ? "env" : undefined,
    ).command,
    "serve",
  );
  assert.deepEqual(parseCommandLine(["serve", "--help"]), { command: "help" });
  // `deno task serve -- --allow-anonymous` passes the `--` on.
  assert.deepEqual(
    parseCommandLine(["serve", "--", "--allow-anonymous"]),
    parseCommandLine(["serve", "--allow-anonymous"]),
  );
});

Deno.test("parseCommandLine() reads --log-level, --log-format, --admin-token (or TETHER_ADMIN_TOKEN) and --version", () => {
  const parsed = parseCommandLine([
    "serve",
    "--allow-anonymous",
    "--log-level=debug",
    "--log-format",
    "json",
    "--admin-token",
    "an-admin-token-of-some-length",
  ]);
  assert.ok(parsed.command === "serve");
  assert.equal(parsed.arguments.logLevel, "debug");
  assert.equal(parsed.arguments.logFormat, "json");
  assert.equal(parsed.arguments.adminToken, "an-admin-token-of-some-length");
  const fromEnv = parseCommandLine(
    ["serve", "--allow-anonymous"],
    (name) =>
      name === "TETHER_ADMIN_TOKEN" ? "token-from-the-environment" : undefined,
  );
  assert.ok(fromEnv.command === "serve");
  assert.equal(fromEnv.arguments.adminToken, "token-from-the-environment");
  const flagWins = parseCommandLine(
    ["serve", "--allow-anonymous", "--admin-token", "token-from-the-flag-0"],
    () => "token-from-the-environment",
  );
  assert.ok(flagWins.command === "serve");
  assert.equal(flagWins.arguments.adminToken, "token-from-the-flag-0");
  assert.deepEqual(parseCommandLine(["--version"]), { command: "version" });
  assert.deepEqual(parseCommandLine(["serve", "--version"]), {
    command: "version",
  });
});

Deno.test("PACKAGE_VERSION is deno.json's version", async () => {
  const config = JSON.parse(
    await Deno.readTextFile(new URL("../../deno.json", import.meta.url)),
  );
  assert.equal(PACKAGE_VERSION, config.version);
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
      ["serve", "--allow-anonymous", "--log-level", "verbose"],
      'Invalid log level "verbose"; use debug, info, warn or error',
    ],
    [
      ["serve", "--allow-anonymous", "--log-format=xml"],
      'Invalid log format "xml"; use pretty or json',
    ],
    [
      ["serve", "--allow-anonymous", "--admin-token", "short"],
      "The admin token must be at least 16 characters without white space (--admin-token or TETHER_ADMIN_TOKEN)",
    ],
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

interface RunningCli {
  url: string;
  child: Deno.ChildProcess;
  lines: AsyncGenerator<string>;
  seen: string[];
  stderr: Promise<string>;
}

/** Starts `cli.ts serve` on `data` and waits until it says where it listens. */
/** `cli serve` on `data` and `port`, anonymous logins allowed. */
function serveArgs(data: string, port: string, extra: string[] = []) {
  return [
    "run",
    "-A",
    "--unstable-kv",
    CLI,
    "serve",
    ...extra,
    "--port",
    port,
    "--data",
    data,
    "--allow-anonymous",
  ];
}

async function startCli(
  data: string,
  extra: string[] = [],
): Promise<RunningCli> {
  const child = new Deno.Command(Deno.execPath(), {
    args: serveArgs(data, "0", extra),
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const running: RunningCli = {
    url: "",
    child,
    lines: linesOf(child.stdout),
    seen: [],
    stderr: new Response(child.stderr).text(),
  };
  try {
    const listening = await readUntil(
      running.lines,
      (line) => line.includes("listening"),
      running.seen,
    );
    running.url = /(http:\/\/127\.0\.0\.1:\d+)/.exec(listening)![1]!;
  } catch (error) {
    await stopCli(running);
    throw error;
  }
  return running;
}

/** Runs `cli serve` on `data` to its exit (a start that must fail). */
function runCliOnce(
  data: string,
  port = "0",
): Promise<Deno.CommandOutput> {
  return new Deno.Command(Deno.execPath(), {
    args: serveArgs(data, port),
    stdout: "piped",
    stderr: "piped",
  }).output();
}

/** Sends `signal`; resolves with the exit code once the CLI said "stopped". */
async function signalCli(
  running: RunningCli,
  signal: Deno.Signal,
): Promise<number> {
  running.child.kill(signal);
  await readUntil(
    running.lines,
    (line) => line.includes("stopped"),
    running.seen,
  );
  return (await running.child.status).code;
}

/** Ends the process whatever state it is in, and drains its output. */
async function stopCli(running: RunningCli): Promise<void> {
  try {
    running.child.kill("SIGKILL");
  } catch {
    // Already exited.
  }
  for await (const line of { [Symbol.asyncIterator]: () => running.lines }) {
    running.seen.push(line);
  }
  await running.child.status;
  await running.stderr;
}

Deno.test("cli serve prints its URL, serves, refuses a second process on the same data, and exits 0 on SIGTERM and on SIGINT, releasing the data for the next start", async () => {
  const data = await Deno.makeTempDir();
  try {
    const first = await startCli(data);
    try {
      const health = await fetch(`${first.url}/health`);
      assert.equal(health.status, 200);
      await health.body?.cancel();

      const second = await runCliOnce(data);
      assert.equal(second.code, 1);
      assert.match(
        new TextDecoder().decode(second.stderr),
        /another server process holds it/,
      );

      assert.equal(await signalCli(first, "SIGTERM"), 0, await first.stderr);
    } finally {
      await stopCli(first);
    }

    // The lock went with the process: the same data serves again, and a
    // `--` (what `deno task serve -- …` passes on) is taken in stride.
    const again = await startCli(data, ["--"]);
    try {
      const health = await fetch(`${again.url}/health`);
      assert.equal(health.status, 200);
      await health.body?.cancel();
      assert.equal(await signalCli(again, "SIGINT"), 0, await again.stderr);
    } finally {
      await stopCli(again);
    }
  } finally {
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

Deno.test("cli --version prints the version and exits 0", async () => {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--unstable-kv", CLI, "--version"],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(output.code, 0);
  assert.equal(
    new TextDecoder().decode(output.stdout),
    `tether ${PACKAGE_VERSION}\n`,
  );
});

Deno.test("cli on a port already in use says so and exits 1", async () => {
  using taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const data = await Deno.makeTempDir();
  try {
    const output = await runCliOnce(data, String(taken.addr.port));
    assert.equal(output.code, 1);
    assert.equal(
      new TextDecoder().decode(output.stderr),
      `Cannot serve: port ${taken.addr.port} on 127.0.0.1 is already in use (another server listens there); pick another with --port, or --port 0 for any free port\n`,
    );
  } finally {
    await Deno.remove(data, { recursive: true });
  }
});

Deno.test("cli on data whose sync.kv is another application's SQLite database says so, exits 1 and leaves it untouched", async () => {
  const data = await Deno.makeTempDir();
  try {
    const db = new DatabaseSync(`${data}/sync.kv`);
    db.exec("CREATE TABLE notes (text TEXT)");
    db.close();
    const before = await Deno.readFile(`${data}/sync.kv`);
    const output = await runCliOnce(data);
    assert.equal(output.code, 1);
    assert.equal(
      new TextDecoder().decode(output.stderr),
      `Cannot serve ${
        JSON.stringify(`${data}/sync.kv`)
      }: it is an SQLite database of another kind (tables "notes"), not a Deno KV file; it was left untouched\n`,
    );
    assert.deepEqual(await Deno.readFile(`${data}/sync.kv`), before);
    assert.deepEqual(
      [...Deno.readDirSync(data)].map((entry) => entry.name),
      ["sync.kv"],
    );
  } finally {
    await Deno.remove(data, { recursive: true });
  }
});

Deno.test("cli --log-format json prints one JSON object per line; --log-level leaves out what is below it", async () => {
  const data = await Deno.makeTempDir();
  try {
    for (
      const [level, expectLogin] of [["debug", true], ["info", false]] as const
    ) {
      const running = await startCli(data, [
        "--log-format",
        "json",
        "--log-level",
        level,
      ]);
      try {
        const login = await fetch(`${running.url}/login`, {
          method: "POST",
          body: JSON.stringify({ provider: "anonymous" }),
        });
        assert.equal(login.status, 200);
        await login.body?.cancel();
        assert.equal(await signalCli(running, "SIGTERM"), 0);
      } finally {
        await stopCli(running);
      }
      const records = running.seen.filter((line) => line !== "").map((line) =>
        JSON.parse(line)
      );
      const events = records.map((record) => record.event);
      assert.deepEqual(
        events.filter((event) => event !== "login"),
        ["listening", "shutting_down", "stopped"],
        level,
      );
      assert.equal(events.includes("login"), expectLogin, level);
      const listening = records[0];
      assert.equal(listening.level, "info");
      assert.match(listening.time, /^\d{4}-\d{2}-\d{2}T/);
      assert.match(listening.message, /listening on http:\/\/127\.0\.0\.1:\d+/);
    }
  } finally {
    await Deno.remove(data, { recursive: true });
  }
});
