/**
 * A server in a process of its own for the memory tests
 * (`session_memory_test.ts`, `memory_bound_test.ts`), so that its heap holds
 * the server's state only. Stores in the KV file given as its first argument
 * (default: an in-memory KV). Prints its URL, then answers each `measure`
 * line on stdin, after five full GCs (`measure <n>`: n), with
 * `<heapUsed> <sessions> <external> <rss> <changesetsIntegrated> <bytesOut>`,
 * and shuts down on `quit` (or end of input). Run with
 * `--v8-flags=--expose-gc`.
 */
import { serveSync } from "../../server.ts";
import { linesOf } from "../_helpers/lines.ts";

const gc = (globalThis as { gc?: () => void }).gc;
if (gc === undefined) throw new Error("Run with --v8-flags=--expose-gc");

await using server = await serveSync({
  port: 0,
  kv: Deno.args[0] ?? ":memory:",
  auth: { allowAnonymous: true },
  logger: () => {},
});
console.log(server.url);

for await (const command of linesOf(Deno.stdin.readable)) {
  if (command.trim() === "quit") break;
  // Several rounds: one full GC can leave what a finalizer frees.
  const rounds = Number(command.trim().split(" ")[1] ?? 5);
  for (let round = 0; round < rounds; round++) gc();
  const memory = Deno.memoryUsage();
  const stats = server.stats();
  console.log(
    [
      memory.heapUsed,
      stats.sessions,
      memory.external,
      memory.rss,
      stats.changesetsIntegrated,
      stats.bytesOut,
    ].join(" "),
  );
}
