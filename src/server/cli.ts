import { createConsoleLogger, type LogFormat, type LogLevel } from "./log.ts";
import { serveSync } from "./serve_sync.ts";
import { KvLockedError } from "./storage/kv_lock.ts";
import { PACKAGE_VERSION } from "./version.ts";

/**
 * The `serve` command: argument parsing, then {@linkcode serveSync} until
 * SIGINT or SIGTERM.
 */

/**
 * What `serve` was asked to do, option by option.
 *
 * @example
 * ```ts
 * import { parseCommandLine } from "@tether/sync/cli";
 * import assert from "node:assert/strict";
 *
 * const parsed = parseCommandLine(["serve", "--jwt-secret", "s"]);
 * assert.ok(parsed.command === "serve");
 * assert.equal(parsed.arguments.data, "./data");
 * assert.equal(parsed.arguments.logLevel, "info");
 * ```
 */
export interface ServeArguments {
  /** `--port`: the port to listen on (0 = any free port). */
  port: number;
  /** `--hostname`: the interface to listen on. */
  hostname: string;
  /** `--data`: the directory holding the KV file (`<data>/sync.kv`). */
  data: string;
  /** `--jwt-secret` or `TETHER_JWT_SECRET`: the HS256 secret, if any. */
  jwtSecret: string | undefined;
  /** `--allow-anonymous`: whether anonymous login is on. */
  allowAnonymous: boolean;
  /**
   * `--admin-token` or `TETHER_ADMIN_TOKEN`: the operator's Bearer token
   * for `/metrics`, `/status` and the admin routes, if any.
   */
  adminToken: string | undefined;
  /** `--log-level`: the least important level printed (default `info`). */
  logLevel: LogLevel;
  /** `--log-format`: `pretty` lines or `json` lines (default `pretty`). */
  logFormat: LogFormat;
}

/**
 * The parsed command line: serve with these arguments, or print help.
 *
 * @example
 * ```ts
 * import { type CliCommand, parseCommandLine } from "@tether/sync/cli";
 * import assert from "node:assert/strict";
 *
 * const help: CliCommand = parseCommandLine(["serve", "-h"]);
 * assert.deepEqual(help, { command: "help" });
 * assert.deepEqual(parseCommandLine(["--version"]), { command: "version" });
 * ```
 */
export type CliCommand =
  | { command: "serve"; arguments: ServeArguments }
  | { command: "help" }
  | { command: "version" };

/**
 * Thrown by {@linkcode parseCommandLine} for a command line that cannot be
 * run; the message says why.
 *
 * @example Catching a bad option
 * ```ts
 * import { parseCommandLine, UsageError } from "@tether/sync/cli";
 * import assert from "node:assert/strict";
 *
 * assert.throws(
 *   () => parseCommandLine(["serve", "--allow-anonymous", "--colour"]),
 *   new UsageError('Unknown option "--colour"'),
 * );
 * ```
 */
export class UsageError extends Error {
  /**
   * Creates a usage error.
   *
   * @param message What is wrong with the command line.
   */
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/** The environment variable that may hold the JWT secret. */
export const JWT_SECRET_VARIABLE = "TETHER_JWT_SECRET";

/** The environment variable that may hold the admin token. */
export const ADMIN_TOKEN_VARIABLE = "TETHER_ADMIN_TOKEN";

const LOG_LEVELS: readonly LogLevel[] = ["debug", "info", "warn", "error"];
const LOG_FORMATS: readonly LogFormat[] = ["pretty", "json"];

/** Help text for the command line. */
export const USAGE = `Usage: tether serve [options]

Runs a Tether sync server until SIGINT or SIGTERM.

Options:
  --port <n>          Port to listen on; 0 picks a free one (default 8080)
  --hostname <host>   Interface to listen on (default 127.0.0.1;
                      0.0.0.0 for every interface)
  --data <dir>        Directory for the KV store, created if missing
                      (default ./data; the store is <dir>/sync.kv)
  --jwt-secret <s>    Secret for HS256 user JWTs (or set ${JWT_SECRET_VARIABLE})
  --allow-anonymous   Let POST /login create anonymous users
  --admin-token <t>   Bearer token for /metrics, /status and the admin
                      routes, at least 16 characters (or set
                      ${ADMIN_TOKEN_VARIABLE}); without it /metrics and
                      /status answer this machine only
  --log-level <l>     debug, info, warn or error (default info)
  --log-format <f>    pretty (one line per event) or json (one JSON
                      object per line) (default pretty)
  --version           Print the version
  -h, --help          Show this help

At least one of --jwt-secret and --allow-anonymous is required.`;

/**
 * Parses a command line (without the program name). Options take their
 * value as the next argument or after `=`.
 *
 * @param args The arguments, e.g. `Deno.args`.
 * @param env Reads environment variables (`TETHER_JWT_SECRET`,
 *   `TETHER_ADMIN_TOKEN`); by default none are read.
 * @returns What to run.
 * @throws {UsageError} For a missing or unknown command, an unknown option,
 *   a bad value, or no way to log in.
 *
 * @example Options and the environment
 * ```ts
 * import { parseCommandLine } from "@tether/sync/cli";
 * import assert from "node:assert/strict";
 *
 * const parsed = parseCommandLine(
 *   ["serve", "--port=9000", "--data", "/srv/tether"],
 *   (name) => name === "TETHER_JWT_SECRET" ? "s3cret" : undefined,
 * );
 * assert.deepEqual(parsed, {
 *   command: "serve",
 *   arguments: {
 *     port: 9000,
 *     hostname: "127.0.0.1",
 *     data: "/srv/tether",
 *     jwtSecret: "s3cret",
 *     allowAnonymous: false,
 *     adminToken: undefined,
 *     logLevel: "info",
 *     logFormat: "pretty",
 *   },
 * });
 * ```
 */
export function parseCommandLine(
  args: readonly string[],
  env: (name: string) => string | undefined = () => undefined,
): CliCommand {
  if (args.length === 0 || args.includes("-h") || args.includes("--help")) {
    if (args.length === 0) throw new UsageError("Missing command: serve");
    return { command: "help" };
  }
  if (args.includes("--version")) {
    return { command: "version" };
  }
  const [command, ...rest] = args;
  if (command !== "serve") {
    throw new UsageError(`Unknown command ${JSON.stringify(command)}`);
  }
  const parsed: ServeArguments = {
    port: 8080,
    hostname: "127.0.0.1",
    data: "./data",
    jwtSecret: env(JWT_SECRET_VARIABLE) || undefined,
    allowAnonymous: false,
    adminToken: env(ADMIN_TOKEN_VARIABLE) || undefined,
    logLevel: "info",
    logFormat: "pretty",
  };
  for (let index = 0; index < rest.length; index++) {
    const argument = rest[index]!;
    // `deno task serve -- --port 1` passes the `--` on (npm habits); there
    // are no positional arguments it could separate, so it is skipped.
    if (argument === "--") continue;
    const equals = argument.indexOf("=");
    const name = equals >= 0 ? argument.slice(0, equals) : argument;
    const inline = equals >= 0 ? argument.slice(equals + 1) : undefined;
    const value = (): string => {
      const next = inline ?? rest[++index];
      if (next === undefined) {
        throw new UsageError(`Option ${name} needs a value`);
      }
      return next;
    };
    switch (name) {
      case "--port": {
        const text = value();
        const port = Number(text);
        if (!/^\d+$/.test(text) || port > 65535) {
          throw new UsageError(`Invalid port ${JSON.stringify(text)}`);
        }
        parsed.port = port;
        break;
      }
      case "--hostname":
        parsed.hostname = value();
        break;
      case "--data":
        parsed.data = value();
        break;
      case "--jwt-secret":
        parsed.jwtSecret = value();
        break;
      case "--admin-token":
        parsed.adminToken = value();
        break;
      case "--log-level": {
        const level = value();
        if (!(LOG_LEVELS as readonly string[]).includes(level)) {
          throw new UsageError(
            `Invalid log level ${
              JSON.stringify(level)
            }; use debug, info, warn or error`,
          );
        }
        parsed.logLevel = level as LogLevel;
        break;
      }
      case "--log-format": {
        const format = value();
        if (!(LOG_FORMATS as readonly string[]).includes(format)) {
          throw new UsageError(
            `Invalid log format ${JSON.stringify(format)}; use pretty or json`,
          );
        }
        parsed.logFormat = format as LogFormat;
        break;
      }
      case "--allow-anonymous":
        if (inline !== undefined) {
          throw new UsageError("--allow-anonymous takes no value");
        }
        parsed.allowAnonymous = true;
        break;
      default:
        throw new UsageError(`Unknown option ${JSON.stringify(name)}`);
    }
  }
  if (parsed.jwtSecret === undefined && !parsed.allowAnonymous) {
    throw new UsageError(
      `No way to log in: pass --jwt-secret (or set ${JWT_SECRET_VARIABLE}) and/or --allow-anonymous`,
    );
  }
  const token = parsed.adminToken;
  if (token !== undefined && (token.length < 16 || /\s/.test(token))) {
    throw new UsageError(
      `The admin token must be at least 16 characters without white space (--admin-token or ${ADMIN_TOKEN_VARIABLE})`,
    );
  }
  return { command: "serve", arguments: parsed };
}

/**
 * Runs the command line: `serve` prints the URL it listens on, serves until
 * SIGINT or SIGTERM, then shuts down cleanly. Usage errors print the help
 * text to stderr.
 *
 * @param args The arguments, e.g. `Deno.args`.
 * @returns The process exit code: 0 after a clean shutdown (or help, or
 *   the version), 1 when
 *   the server could not start (data held by another process, port taken),
 *   2 for a bad command line.
 * @throws {Error} Only for unexpected failures (e.g. an unreadable data
 *   directory).
 *
 * @example Help is printed and exits 0
 * ```ts
 * import { runCli } from "@tether/sync/cli";
 * import assert from "node:assert/strict";
 *
 * const log = console.log;
 * console.log = () => {};
 * try {
 *   assert.equal(await runCli(["--help"]), 0);
 * } finally {
 *   console.log = log;
 * }
 * ```
 */
export async function runCli(args: readonly string[]): Promise<number> {
  let parsed: CliCommand;
  try {
    parsed = parseCommandLine(args, (name) => Deno.env.get(name));
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    console.error(`${error.message}\n\n${USAGE}`);
    return 2;
  }
  if (parsed.command === "help") {
    console.log(USAGE);
    return 0;
  }
  if (parsed.command === "version") {
    console.log(`tether ${PACKAGE_VERSION}`);
    return 0;
  }
  const {
    port,
    hostname,
    data,
    jwtSecret,
    allowAnonymous,
    adminToken,
    logLevel,
    logFormat,
  } = parsed.arguments;
  const stop = new AbortController();
  const onSignal = () => stop.abort();
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  try {
    const server = await serveSync({
      port,
      hostname,
      kv: `${data.replace(/[\\/]+$/, "")}/sync.kv`,
      auth: {
        ...(jwtSecret === undefined ? {} : { jwtSecret }),
        allowAnonymous,
      },
      ...(adminToken === undefined ? {} : { adminToken }),
      logger: createConsoleLogger({ level: logLevel, format: logFormat }),
      signal: stop.signal,
    });
    await new Promise<void>((resolve) => {
      if (stop.signal.aborted) resolve();
      stop.signal.addEventListener("abort", () => resolve(), { once: true });
    });
    await server.shutdown();
    return 0;
  } catch (error) {
    // The data is held by another process, or is not a Deno KV file (the
    // command line itself was checked above).
    if (error instanceof KvLockedError || error instanceof TypeError) {
      console.error(error.message);
      return 1;
    }
    if (error instanceof Deno.errors.AddrInUse) {
      console.error(
        `Cannot serve: port ${port} on ${hostname} is already in use (another server listens there); pick another with --port, or --port 0 for any free port`,
      );
      return 1;
    }
    throw error;
  } finally {
    Deno.removeSignalListener("SIGINT", onSignal);
    Deno.removeSignalListener("SIGTERM", onSignal);
  }
}
