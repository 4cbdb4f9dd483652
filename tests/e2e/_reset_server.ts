/**
 * A server in a process of its own for `client_reset_test.ts`, on a KV file
 * the test copies and restores: `deno run -A --unstable-kv _reset_server.ts
 * <kvPath> <port> <jwtSecret>`. Prints `listening <url>`, then serves until
 * killed (the test kills it with SIGKILL, as a crash would).
 */
import { serveSync } from "../../server.ts";

const [kvPath, port, jwtSecret] = Deno.args;
if (kvPath === undefined || port === undefined || jwtSecret === undefined) {
  throw new TypeError("usage: _reset_server.ts <kvPath> <port> <jwtSecret>");
}
const server = await serveSync({
  port: Number(port),
  hostname: "127.0.0.1",
  kv: kvPath,
  auth: { jwtSecret },
  logger: () => {},
});
console.log(`listening ${server.url}`);
// Serves until the test kills the process; a closed stdin ends it too.
for await (const _ of Deno.stdin.readable) {
  // Nothing is read from stdin; the loop ends when the test closes it.
}
await server.shutdown();
