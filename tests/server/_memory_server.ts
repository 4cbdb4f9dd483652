/**
 * A server in a process of its own for `session_memory_test.ts`, so that
 * its heap holds the server's state only. Prints its URL, then answers each
 * `measure` line on stdin with `<heapUsed after full GC> <sessions>`, and
 * shuts down on `quit` (or end of input). Run with `--v8-flags=--expose-gc`.
 */
import { serveSync } from "../../server.ts";

const gc = (globalThis as { gc?: () => void }).gc;
if (gc === undefined) throw new Error("Run with --v8-flags=--expose-gc");

await using server = await serveSync({
  port: 0,
  kv: ":memory:",
  auth: { allowAnonymous: true },
  logger: () => {},
});
console.log(server.url);

const decoder = new TextDecoderStream();
const lines = Deno.stdin.readable.pipeThrough(decoder);
let pending = "";
outer: for await (const chunk of lines) {
  pending += chunk;
  for (let end = pending.indexOf("\n"); end >= 0; end = pending.indexOf("\n")) {
    const command = pending.slice(0, end).trim();
    pending = pending.slice(end + 1);
    if (command === "quit") break outer;
    // Several rounds: one full GC can leave what a finalizer frees.
    for (let round = 0; round < 5; round++) gc();
    console.log(`${Deno.memoryUsage().heapUsed} ${server.stats().sessions}`);
  }
}
