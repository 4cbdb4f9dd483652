/**
 * The server of `fanout_server_cpu.ts`: `serveSync` on `kv: ":memory:"`
 * from a given checkout, in a process of its own, reporting its own CPU
 * time and profiling itself on request.
 *
 * Run as `deno run -A bench/_fanout_server.ts <checkout root>`. Prints one
 * JSON line `{"url": …}`, then answers each line on stdin: `cpu` with
 * `{"cpu": µs, "user": µs, "main": µs}` (the process's user + system time,
 * every thread of it, from `process.cpuUsage()`, and its user time alone;
 * its main thread's time, from Linux's schedstat), `stats` with Tether's
 * `stats()` (bytes in and out, among others), `profile-start` and `profile-stop <file>` (a V8 CPU profile
 * of the main thread, `node:inspector`) with `{}`; shuts down on `quit` or
 * end of input. As the root, `raw` runs a relay without a protocol instead:
 * the floor of a fan-out on Deno's WebSocket.
 *
 * @module
 */
import process from "node:process";
import inspector from "node:inspector";
import { linesOf } from "../tests/_helpers/lines.ts";
import { BENCH_SERVER_OPTIONS } from "./_tether_options.ts";

/** A running server. */
interface Running {
  url: string;
  /** Tether's `stats()` (`stats` answers it). */
  stats?(): Record<string, number>;
  shutdown(): Promise<void>;
}

/** The Tether server of the checkout at `root`. */
async function tether(root: string): Promise<Running> {
  const mod = await import(
    new URL("server.ts", `file://${root.replace(/\/?$/, "/")}`).href
  );
  return await mod.serveSync(BENCH_SERVER_OPTIONS);
}

/**
 * The floor: a WebSocket relay with no protocol, which sends each message
 * to every other socket (as `_sync_server.ts raw` does for `/room/…`).
 */
function relay(): Running {
  const sockets = new Set<WebSocket>();
  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    onListen: () => {},
  }, (request) => {
    const { socket, response } = Deno.upgradeWebSocket(request);
    socket.binaryType = "arraybuffer";
    socket.onopen = () => sockets.add(socket);
    socket.onmessage = (event) => {
      for (const other of sockets) if (other !== socket) other.send(event.data);
    };
    socket.onclose = () => sockets.delete(socket);
    return response;
  });
  return {
    url: `ws://127.0.0.1:${server.addr.port}`,
    shutdown: () => server.shutdown(),
  };
}

/** CPU time of this process's main thread in µs (Linux schedstat). */
function mainThreadMicros(): number {
  const text = Deno.readTextFileSync(`/proc/self/task/${Deno.pid}/schedstat`);
  return Number(text.split(" ")[0]) / 1000;
}

const root = Deno.args[0];
if (root === undefined) throw new TypeError("Usage: _fanout_server.ts <root>");
const server = root === "raw" ? relay() : await tether(root);
console.log(JSON.stringify({ url: server.url }));

const session = new inspector.Session();
let connected = false;
for await (const line of linesOf(Deno.stdin.readable)) {
  const [command, argument] = line.trim().split(" ");
  if (command === "quit") break;
  if (command === "cpu") {
    const { user, system } = process.cpuUsage();
    console.log(
      JSON.stringify({ cpu: user + system, user, main: mainThreadMicros() }),
    );
  } else if (command === "stats") {
    console.log(JSON.stringify(server.stats?.() ?? {}));
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
