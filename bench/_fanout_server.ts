/**
 * The server of `fanout_server_cpu.ts`: `serveSync` on `kv: ":memory:"`
 * from a given checkout, in a process of its own, reporting its own CPU
 * time and profiling itself on request.
 *
 * Run as `deno run -A bench/_fanout_server.ts <checkout root>`. Prints one
 * JSON line `{"url": …}`, then answers each line on stdin: `cpu` with
 * `{"cpu": µs}` (the process's user + system time, every thread of it:
 * `process.cpuUsage()`), `profile-start` and `profile-stop <file>` (a V8
 * CPU profile of the main thread, `node:inspector`) with `{}`; shuts down
 * on `quit` or end of input.
 *
 * @module
 */
import process from "node:process";
import inspector from "node:inspector";
import { linesOf } from "../tests/_helpers/lines.ts";

const root = Deno.args[0];
if (root === undefined) throw new TypeError("Usage: _fanout_server.ts <root>");
const mod = await import(
  new URL("server.ts", `file://${root.replace(/\/?$/, "/")}`).href
);
const server = await mod.serveSync({
  hostname: "127.0.0.1",
  port: 0,
  kv: ":memory:",
  auth: { allowAnonymous: true },
  // Every bench client shares realms under /bench/.
  permissions: () => "readwrite",
  logger: () => {},
});
console.log(JSON.stringify({ url: server.url }));

const session = new inspector.Session();
let connected = false;
for await (const line of linesOf(Deno.stdin.readable)) {
  const [command, argument] = line.trim().split(" ");
  if (command === "quit") break;
  if (command === "cpu") {
    const { user, system } = process.cpuUsage();
    console.log(JSON.stringify({ cpu: user + system }));
  } else if (command === "profile-start") {
    if (!connected) {
      session.connect();
      connected = true;
      session.post("Profiler.enable");
      session.post("Profiler.setSamplingInterval", { interval: 50 });
    }
    session.post("Profiler.start");
    console.log("{}");
  } else if (command === "profile-stop" && argument !== undefined) {
    await new Promise<void>((resolve, reject) =>
      session.post("Profiler.stop", (error, result) => {
        if (error !== null) reject(error);
        else {
          Deno.writeTextFileSync(argument, JSON.stringify(result.profile));
          resolve();
        }
      })
    );
    console.log("{}");
  } else {
    throw new TypeError(`Unknown command ${JSON.stringify(line)}`);
  }
}
if (connected) session.disconnect();
await server.shutdown();
