/**
 * The soak's sync server, in a process of its own so the soak can SIGKILL it
 * and start it again on the same KV file (`tests/soak/_engine.ts`).
 *
 * Usage: `deno run -A --unstable-kv _server.ts <kv file> <realm path>`.
 * Prints `listening <url> <head>` once it serves (`head` is the realm's
 * history head version at start), then answers each `stats` line on stdin
 * with `stats <changesetsIntegrated> <head>`, and shuts down cleanly on
 * `quit` (or the end of its input), printing `stopped`. Errors the server
 * logs go to stderr.
 */
import { serveSync } from "../../server.ts";
import { linesOf } from "../_helpers/lines.ts";

const [kvPath, realmPath] = Deno.args;
if (kvPath === undefined || realmPath === undefined) {
  throw new TypeError("Usage: _server.ts <kv file> <realm path>");
}

await using server = await serveSync({
  port: 0,
  hostname: "127.0.0.1",
  kv: kvPath,
  auth: { allowAnonymous: true },
  // Every soak client writes the one shared realm.
  permissions: () => "readwrite",
  logger: (record) => {
    if (record.level === "error") console.error(JSON.stringify(record));
  },
});
// A second handle on the same file, for reading the realm's head: the key
// layout is docs/SERVER.md "Storage". The server's lock is a flock, which
// SQLite's own locking (fcntl) does not see, so this handle is harmless.
using kv = await Deno.openKv(kvPath);
const head = async (): Promise<number> => {
  const entry = await kv.get<{ version: number }>([
    "tether",
    "realm",
    realmPath,
    "head",
  ]);
  return entry.value?.version ?? 0;
};
console.log(`listening ${server.url} ${await head()}`);

for await (const command of linesOf(Deno.stdin.readable)) {
  if (command.trim() === "quit") break;
  if (command.trim() === "stats") {
    console.log(`stats ${server.stats().changesetsIntegrated} ${await head()}`);
  }
}
await server.shutdown();
console.log("stopped");
