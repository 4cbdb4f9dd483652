/**
 * The server side of `sync_bench.ts`, one kind per child process: `tether`
 * (`serveSync` with in-memory KV), `yjs` (y-websocket's own server code on
 * `ws`) or `raw` (a trivial Deno WebSocket server: echo, relay, blast, idle).
 *
 * Run as `deno run -A --v8-flags=--expose-gc bench/_sync_server.ts <kind>`.
 * Prints one JSON line `{"url": …}`, then answers each `measure` line on
 * stdin with a JSON line of `{heapUsed, spaces, sessions, bytesIn, bytesOut}`
 * (heap after the event loop settled and full GCs, WebSocket payload bytes
 * since start), each `counts` line the same without settling or GCs, each
 * `snapshot <file>` line like `measure` after writing a V8 heap snapshot to
 * the file, and shuts down on `quit` or end of input. A process of its own,
 * so that its heap holds the server's state only and its CPU is not shared
 * with the clients' loop.
 */
import v8 from "node:v8";
import { serveSync } from "../server.ts";
import { linesOf } from "../tests/_helpers/lines.ts";
import { BENCH_SERVER_OPTIONS } from "./_tether_options.ts";

/** What `measure` answers. */
export interface ServerMeasure {
  /** `Deno.memoryUsage().heapUsed` after five full GCs. */
  heapUsed: number;
  /** Bytes used per V8 heap space (code and bytecode: `code_*`, `trusted_*`). */
  spaces: Record<string, number>;
  /** Bound sessions (Tether) or open sockets (Yjs, raw). */
  sessions: number;
  /** WebSocket payload bytes received since the server started. */
  bytesIn: number;
  /** WebSocket payload bytes sent since the server started. */
  bytesOut: number;
}

/** What this file uses of a `ws` socket (the package ships no types). */
interface WsSocket {
  send(data: Uint8Array, ...rest: unknown[]): void;
  on(event: string, listener: (data: ArrayBuffer | Uint8Array) => void): void;
  terminate(): void;
}

/** A running server of one kind. */
interface Running {
  url: string;
  counts(): Omit<ServerMeasure, "heapUsed" | "spaces">;
  close(): Promise<void>;
}

const gc = (globalThis as { gc?: () => void }).gc;
if (gc === undefined) throw new Error("Run with --v8-flags=--expose-gc");

async function startTether(): Promise<Running> {
  const server = await serveSync(BENCH_SERVER_OPTIONS);
  return {
    url: server.url,
    counts: () => {
      const stats = server.stats();
      return {
        sessions: stats.sessions,
        bytesIn: stats.bytesIn,
        bytesOut: stats.bytesOut,
      };
    },
    close: () => server.shutdown(),
  };
}

async function startYjs(): Promise<Running> {
  // Loaded only in this kind's process, so the others stay free of them.
  const http = await import("node:http");
  const { WebSocketServer } = await import("npm:ws@8.18.3");
  const { setupWSConnection } = await import(
    "npm:@y/websocket-server@0.1.1/utils"
  );
  let sessions = 0;
  let bytesIn = 0;
  let bytesOut = 0;
  const httpServer = http.createServer((_request, response) => {
    response.writeHead(404).end();
  });
  const wss = new WebSocketServer({ noServer: true });
  httpServer.on("upgrade", (request, socket, head) => {
    wss.handleUpgrade(request, socket, head, (ws: WsSocket) => {
      sessions++;
      // Count what y-websocket's server sends and receives, unchanged.
      const send = ws.send.bind(ws);
      ws.send = (data, ...rest) => {
        bytesOut += data.byteLength;
        send(data, ...rest);
      };
      ws.on("message", (data) => {
        bytesIn += data.byteLength;
      });
      ws.on("close", () => sessions--);
      setupWSConnection(ws, request, { gc: true });
    });
  });
  await new Promise<void>((resolve) =>
    httpServer.listen(0, "127.0.0.1", resolve)
  );
  const address = httpServer.address();
  if (address === null || typeof address === "string") {
    throw new Error("The Yjs server has no port");
  }
  return {
    url: `ws://127.0.0.1:${address.port}`,
    counts: () => ({ sessions, bytesIn, bytesOut }),
    close: async () => {
      for (const client of wss.clients as Set<WsSocket>) client.terminate();
      wss.close();
      await new Promise<void>((resolve) => httpServer.close(() => resolve()));
    },
  };
}

/**
 * Paths: `/echo` sends each message back; `/room/<name>` relays each
 * message to every other socket in the room; `/blast?bytes=B&messages=K`
 * sends K messages of B bytes in all as soon as the socket opens;
 * anything else stays idle.
 */
function startRaw(): Running {
  let sessions = 0;
  let bytesIn = 0;
  let bytesOut = 0;
  const rooms = new Map<string, Set<WebSocket>>();
  const send = (socket: WebSocket, data: ArrayBuffer | Uint8Array) => {
    bytesOut += data.byteLength;
    socket.send(data);
  };
  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    onListen: () => {},
  }, (request) => {
    if (request.headers.get("upgrade") !== "websocket") {
      return new Response(null, { status: 404 });
    }
    const url = new URL(request.url);
    const { socket, response } = Deno.upgradeWebSocket(request);
    socket.binaryType = "arraybuffer";
    let room: Set<WebSocket> | undefined;
    socket.onopen = () => {
      sessions++;
      if (url.pathname.startsWith("/room/")) {
        room = rooms.get(url.pathname);
        if (room === undefined) rooms.set(url.pathname, room = new Set());
        room.add(socket);
      } else if (url.pathname === "/blast") {
        const bytes = Number(url.searchParams.get("bytes"));
        const messages = Math.max(1, Number(url.searchParams.get("messages")));
        const each = Math.floor(bytes / messages);
        for (let index = 0; index < messages; index++) {
          const size = index === messages - 1
            ? bytes - each * (messages - 1)
            : each;
          send(socket, new Uint8Array(size));
        }
      }
    };
    socket.onmessage = (event) => {
      const data = event.data as ArrayBuffer;
      bytesIn += data.byteLength;
      if (url.pathname === "/echo") send(socket, data);
      else if (room !== undefined) {
        for (const other of room) if (other !== socket) send(other, data);
      }
    };
    socket.onclose = () => {
      sessions--;
      room?.delete(socket);
    };
    return response;
  });
  return {
    url: `ws://127.0.0.1:${server.addr.port}`,
    counts: () => ({ sessions, bytesIn, bytesOut }),
    close: () => server.shutdown(),
  };
}

const kind = Deno.args[0];
const running = kind === "tether"
  ? await startTether()
  : kind === "yjs"
  ? await startYjs()
  : kind === "raw"
  ? startRaw()
  : undefined;
if (running === undefined) {
  throw new TypeError(`Unknown server kind ${JSON.stringify(kind)}`);
}
console.log(JSON.stringify({ url: running.url }));

/**
 * Lets the event loop run what is queued (timers due now, promise chains,
 * socket reads and writes, finalizers a GC scheduled) for a few turns, so
 * that the heap is read with no work in flight rather than halfway through
 * some.
 */
async function settle(): Promise<void> {
  for (let turn = 0; turn < 5; turn++) {
    await new Promise((resolve) => setTimeout(resolve, 10));
    gc!();
  }
}

function spaces(): Record<string, number> {
  const used: Record<string, number> = {};
  for (const space of v8.getHeapSpaceStatistics()) {
    if (space.space_used_size > 0) {
      used[space.space_name] = space.space_used_size;
    }
  }
  return used;
}

for await (const line of linesOf(Deno.stdin.readable)) {
  const text = line.trim();
  const space = text.indexOf(" ");
  const command = space < 0 ? text : text.slice(0, space);
  const argument = space < 0 ? undefined : text.slice(space + 1);
  if (command === "quit") break;
  // Several rounds: one full GC can leave what a finalizer frees. `counts`
  // skips them: it is polled, and a full GC of a large heap takes a while.
  if (command === "measure" || command === "snapshot") {
    await settle();
    for (let round = 0; round < 5; round++) gc();
  }
  const measure: ServerMeasure = {
    heapUsed: Deno.memoryUsage().heapUsed,
    spaces: spaces(),
    ...running.counts(),
  };
  // After the reading: the snapshot itself allocates.
  if (command === "snapshot" && argument !== undefined) {
    v8.writeHeapSnapshot(argument);
  }
  console.log(JSON.stringify(measure));
}
await running.close();
// Yjs's server keeps 30 s ping intervals for sockets it has not seen
// close yet; this process has nothing left to do.
Deno.exit(0);
