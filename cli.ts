/**
 * Tether's command line: `serve` runs a sync server until SIGINT or
 * SIGTERM.
 *
 * ```sh
 * deno run -A --unstable-kv jsr:@tether/sync/cli serve --port 8080 --data ./data --allow-anonymous
 * ```
 *
 * @example Parse a command line without running it
 * ```ts
 * import { parseCommandLine } from "@tether/sync/cli";
 * import assert from "node:assert/strict";
 *
 * const parsed = parseCommandLine(["serve", "--port", "0", "--allow-anonymous"]);
 * assert.equal(parsed.command, "serve");
 * ```
 *
 * @module
 */
import { runCli } from "./src/server/cli.ts";

export {
  type CliCommand,
  parseCommandLine,
  runCli,
  type ServeArguments,
  UsageError,
} from "./src/server/cli.ts";

if (import.meta.main) Deno.exitCode = await runCli(Deno.args);
