/**
 * A server in a process of its own for `session_memory_test.ts`, so that
 * its heap holds the server's state only. Prints its URL, then answers each
 * `measure` line on stdin with `<heapUsed after full GC> <sessions>`, and
 * shuts down on `quit` (or end of input). Run with `--v8-flags=--expose-gc`.
 */
import { serveSync } from "../../server.ts";
import { linesOf } from "../_helpers/lines.ts";

const gc = (globalThis as { gc?: () => void }).gc;
if (gc === undefined) throw new Error("Run with --v8-flags=--expose-gc");

await using server = await serveSync({
  port: 0,
  kv: ":memory:",
  auth: { allowAnonymous: true },
  logger: () => {},
});
console.log(server.url);

for await (const command of linesOf(Deno.stdin.readable)) {
  if (command.trim() === "quit") break;
  // Several rounds: one full GC can leave what a finalizer frees.
  for (let round = 0; round < 5; round++) gc();
  console.log(`${Deno.memoryUsage().heapUsed} ${server.stats().sessions}`);
}
