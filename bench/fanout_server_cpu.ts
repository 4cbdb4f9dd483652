/**
 * The fan-out row of sync_bench.ts measured in the server's CPU time: a
 * Tether server in a child process (`_fanout_server.ts`), a writer and
 * `--clients` (50) clients in this process, and per block of `--rounds`
 * single-field writes (each waited for at every client) the server
 * process's CPU time per round and per client (`process.cpuUsage()` read
 * inside the server before and after the block: far less disturbed by a
 * loaded machine than wall time), its user time alone (the kernel's share,
 * TCP over loopback, is the noisier) and its main thread's. A round's CPU holds the UPLOAD, the
 * commit, the writer's acknowledgement and the 50 DOWNLOADs.
 *
 * `--base <dir>` also starts a server from another checkout (e.g. the
 * branch point unpacked with `git archive <commit> | tar -x -C <dir>`),
 * with its own writer and clients (this checkout's client code for both);
 * the two servers' blocks alternate (`--pairs` of them, which one goes
 * first alternating too), so before and after come from one run and one
 * machine load (`--base-first` starts the base's server first). `--raw`
 * adds a third server, a relay without a protocol (plain sockets, 8-byte
 * messages): the floor of Deno's WebSocket. `--profile <file>` writes a V8 CPU profile of this
 * checkout's server over its last block (`<file>.base`: the base's).
 *
 * ```sh
 * deno run -A bench/fanout_server_cpu.ts [--pairs 8] [--rounds 200] [--base /tmp/base]
 * ```
 *
 * @module
 */
import { App, Credentials, type Realm } from "../mod.ts";
import { ValueWaiter, watchField, within } from "./_value_waiter.ts";
import { linesOf } from "../tests/_helpers/lines.ts";
import { median, option, printPairs } from "./_ab.ts";

const CLIENTS = Number(option("--clients") ?? 50);
const ROUNDS = Number(option("--rounds") ?? 200);
const PAIRS = Number(option("--pairs") ?? 8);
const WARMUP_ROUNDS = Number(option("--warmup") ?? 400);
/** The deadline of every single wait. */
const WAIT_MS = 120_000;
const ID = "00000000-0000-4000-8000-000000000000";

/** A server child process of one checkout. */
interface Server {
  label: string;
  url: string;
  /** Sends one command line and returns the JSON line it answers. */
  ask(command: string): Promise<Record<string, number>>;
  stop(): Promise<void>;
}

/** One server's writer, clients and their watchers on one realm. */
interface Group {
  server: Server;
  /** Writes value `i` and resolves once the writer's call returned. */
  write(i: number): Promise<unknown>;
  watchers: ValueWaiter[];
  close(): Promise<void>;
  next: number;
}

async function startServer(label: string, root: string): Promise<Server> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      new URL("./_fanout_server.ts", import.meta.url).pathname,
      root,
    ],
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const lines = linesOf(child.stdout)[Symbol.asyncIterator]();
  const input = child.stdin.getWriter();
  const encoder = new TextEncoder();
  const next = async (): Promise<Record<string, number>> => {
    const line = await within(lines.next(), `${label}'s answer`, WAIT_MS);
    if (line.done) throw new Error(`${label}'s output ended`);
    return JSON.parse(line.value);
  };
  const { url } = await next() as unknown as { url: string };
  return {
    label,
    url,
    ask: async (command) => {
      await input.write(encoder.encode(`${command}\n`));
      return next();
    },
    stop: async () => {
      await input.write(encoder.encode("quit\n")).catch(() => {});
      await input.close().catch(() => {});
      while (!(await lines.next()).done) {
        // Drain so the pipe closes.
      }
      await child.status;
    },
  };
}

async function group(server: Server, signal: AbortSignal): Promise<Group> {
  const path = `/bench/fanout-server-${server.label}`;
  const apps: App[] = [];
  const open = async () => {
    const app = new App({ baseUrl: server.url, logger: () => {} });
    apps.push(app);
    const user = await app.logIn(Credentials.anonymous());
    return user.openRealm({ path, waitForDownload: true });
  };
  const writer = await open();
  const receipt = await writer.write((tx) => tx.put("Item", ID, { n: 0 }));
  await receipt.waitForUpload({ signal: AbortSignal.timeout(WAIT_MS) });
  const readers: Realm[] = [];
  const watchers: ValueWaiter[] = [];
  const done: Promise<void>[] = [];
  for (let k = 0; k < CLIENTS; k++) {
    const realm = await open();
    const watch = watchField(realm, ID, signal);
    readers.push(realm);
    watchers.push(watch.waiter);
    done.push(watch.done);
  }
  return {
    server,
    write: (i) => writer.write((tx) => tx.update("Item", ID, { n: i })),
    watchers,
    close: async () => {
      await Promise.all(done);
      await writer.close();
      for (const realm of readers) await realm.close();
      for (const app of apps) await app.close();
    },
    next: 1,
  };
}

/** Plain sockets on the relay: one writer, `CLIENTS` readers. */
async function rawGroup(server: Server): Promise<Group> {
  const open = async () => {
    const socket = new WebSocket(server.url);
    socket.binaryType = "arraybuffer";
    const opened = Promise.withResolvers<void>();
    socket.onopen = () => opened.resolve();
    socket.onerror = () => opened.reject(new Error("A relay socket failed"));
    await within(opened.promise, "a relay socket", WAIT_MS);
    return socket;
  };
  const writer = await open();
  const readers: WebSocket[] = [];
  const watchers: ValueWaiter[] = [];
  for (let k = 0; k < CLIENTS; k++) {
    const socket = await open();
    const watcher = new ValueWaiter();
    socket.onmessage = (event) =>
      watcher.saw(new DataView(event.data as ArrayBuffer).getFloat64(0));
    readers.push(socket);
    watchers.push(watcher);
  }
  const closed = (socket: WebSocket) =>
    new Promise<void>((resolve) => {
      socket.onclose = () => resolve();
      socket.close();
    });
  return {
    server,
    write: (i) => {
      const data = new DataView(new ArrayBuffer(8));
      data.setFloat64(0, i);
      writer.send(data.buffer);
      return Promise.resolve();
    },
    watchers,
    close: async () => {
      await Promise.all([writer, ...readers].map(closed));
    },
    next: 1,
  };
}

/** `count` writes, each waited for at every client; the last client's µs. */
async function rounds(g: Group, count: number): Promise<number[]> {
  const last: number[] = [];
  for (let r = 0; r < count; r++) {
    const i = g.next++;
    const seen = within(
      Promise.all(g.watchers.map((watcher) => watcher.expect(i))),
      `value ${i}`,
      WAIT_MS,
    );
    const start = performance.now();
    await g.write(i);
    const times = await seen;
    last.push((Math.max(...times) - start) * 1000);
  }
  return last;
}

const controller = new AbortController();
const servers: Server[] = [];
const groups: Group[] = [];
const profileFile = option("--profile");
const base = option("--base");
try {
  servers.push(
    await startServer("this", new URL("../", import.meta.url).pathname),
  );
  if (base !== undefined) servers.push(await startServer("base", base));
  // The server started first read about 2% higher with the same tree on
  // both sides: `--base-first` swaps the order, so runs of both orders can
  // cancel that out.
  if (Deno.args.includes("--base-first")) servers.reverse();
  if (Deno.args.includes("--raw")) {
    servers.push(await startServer("raw", "raw"));
  }
  for (const server of servers) {
    groups.push(
      server.label === "raw"
        ? await rawGroup(server)
        : await group(server, controller.signal),
    );
  }
  for (const g of groups) await rounds(g, WARMUP_ROUNDS);
  const cpu = new Map<string, number[]>();
  const main = new Map<string, number[]>();
  const user = new Map<string, number[]>();
  const p50 = new Map<string, number[]>();
  for (let pair = 0; pair < PAIRS; pair++) {
    const order = pair % 2 === 0 ? groups : groups.toReversed();
    const row: string[] = [];
    for (const g of order) {
      const label = g.server.label;
      const profiling = profileFile !== undefined && label !== "raw" &&
        pair === PAIRS - 1;
      const profileTo = label === "this"
        ? profileFile
        : `${profileFile}.${label}`;
      if (profiling) await g.server.ask("profile-start");
      const before = await g.server.ask("cpu");
      const last = await rounds(g, ROUNDS);
      const after = await g.server.ask("cpu");
      const used = (after.cpu! - before.cpu!) / ROUNDS;
      const usedMain = (after.main! - before.main!) / ROUNDS;
      const usedUser = (after.user! - before.user!) / ROUNDS;
      if (profiling) await g.server.ask(`profile-stop ${profileTo}`);
      cpu.set(label, [...cpu.get(label) ?? [], used]);
      main.set(label, [...main.get(label) ?? [], usedMain]);
      user.set(label, [...user.get(label) ?? [], usedUser]);
      p50.set(label, [...p50.get(label) ?? [], median(last)]);
      row.push(
        `${label} ${used.toFixed(0)} µs/round (${
          (used / CLIENTS).toFixed(2)
        } µs/client), user ${usedUser.toFixed(0)}, main thread ${
          usedMain.toFixed(0)
        }, p50 ${median(last).toFixed(0)} µs`,
      );
    }
    console.log(`pair ${pair + 1}: ${row.join(" | ")}`);
  }
  const figures = [
    ["server CPU per round (µs)", cpu],
    ["server user CPU per round (µs)", user],
    ["server main thread per round (µs)", main],
    ["last client, p50 (µs)", p50],
  ] as const;
  printPairs(figures, 1);
} finally {
  controller.abort();
  for (const g of groups) await g.close();
  for (const server of servers) await server.stop();
}
