/**
 * The fan-out row of sync_bench.ts measured in the clients' CPU time: one
 * Tether server in a child process, a writer and `--clients` (50) clients
 * in this process reading `realm.changes()`, and per block of `--rounds`
 * single-field writes the process's CPU time per client message
 * (`process.cpuUsage()`, far less disturbed by a loaded machine than wall
 * time) and the last client's p50.
 *
 * `--base <dir>` also loads `mod.ts` of another checkout (e.g. the branch
 * point unpacked with `git archive <commit> | tar -x -C <dir>`): each
 * checkout gets its own writer, clients and realm on the same server, and
 * their blocks alternate (`--pairs` of them, which one goes first
 * alternating too), so before and after come from one process and one
 * machine load (`--base-first` creates the base's clients first).
 * `--profile <file>` writes a V8 CPU profile of this
 * checkout's last block and `--alloc <file>` a V8 sampling heap profile of
 * it (`node:inspector`; what was allocated, by function, whether or not
 * it was collected since).
 *
 * ```sh
 * deno run -A bench/fanout_cpu.ts [--pairs 8] [--rounds 100] [--base /tmp/base]
 * ```
 *
 * @module
 */
import process from "node:process";
import inspector from "node:inspector";
import type { App, Credentials, Realm } from "../mod.ts";
import {
  decodeMessage,
  type DownloadMessage,
  encodeMessage,
  MessageType,
} from "../protocol.ts";
import { type ValueWaiter, watchField, within } from "./_value_waiter.ts";
import { median, option, printPairs } from "./_ab.ts";

/** What this bench uses of a checkout's `mod.ts`. */
interface Checkout {
  label: string;
  App: typeof App;
  Credentials: typeof Credentials;
}

/** One checkout's writer, clients and their watchers on one realm. */
interface Group {
  checkout: Checkout;
  apps: App[];
  writer: Realm;
  readers: Realm[];
  /** Each reader's socket. */
  sockets: CountingWebSocket[];
  watchers: ValueWaiter[];
  done: Promise<void>[];
  next: number;
}

const CLIENTS = Number(option("--clients") ?? 50);
const ROUNDS = Number(option("--rounds") ?? 100);
const PAIRS = Number(option("--pairs") ?? 8);
const WARMUP_ROUNDS = 400;
const SYNTHETIC = Deno.args.includes("--synthetic");
/** HLC time of the synthetic changesets: after every real write's. */
const SYNTHETIC_TIME = Date.now() + 3_600_000;
/** The deadline of every single wait. */
const WAIT_MS = 120_000;

/** `within`, bounded by this bench's `WAIT_MS`. */
function withinWait<T>(promise: Promise<T>, what: string): Promise<T> {
  return within(promise, what, WAIT_MS);
}
const ID = "00000000-0000-4000-8000-000000000000";

/** Frames the clients of this process sent, all checkouts together. */
let framesSent = 0;

/**
 * How long each `message` listener of the clients ran, this block: the
 * client's own synchronous work per frame (decode, apply, commit, the push
 * to `changes()`), without Deno's dispatch around it or the reads of
 * `changes()` after it. A median of thousands is little moved by a
 * preemption now and then, unlike a total.
 */
let handlerTimes = new Float64Array(0);
/** Every socket the clients opened, in order. */
const sockets: CountingWebSocket[] = [];
let handlerCount = 0;

/**
 * Counts what the clients send (a reply per message would cost a syscall
 * each here) and times their `message` listeners.
 */
class CountingWebSocket extends WebSocket {
  /** The client's own `message` listener, for `--synthetic`. */
  listener: ((event: MessageEvent) => void) | undefined;
  /** The last frame received, for `--synthetic`. */
  lastData: unknown;

  constructor(
    url: string | URL,
    protocols?: ConstructorParameters<typeof WebSocket>[1],
  ) {
    super(url, protocols);
    sockets.push(this);
  }

  override send(data: string | ArrayBufferLike | Blob | ArrayBufferView) {
    framesSent++;
    super.send(data);
  }

  override addEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject,
    options?: boolean | AddEventListenerOptions,
  ): void {
    if (type !== "message" || typeof listener !== "function") {
      return super.addEventListener(type, listener, options);
    }
    this.listener = listener as (event: MessageEvent) => void;
    super.addEventListener(type, (event) => {
      this.lastData = (event as MessageEvent).data;
      const start = performance.now();
      listener.call(this, event);
      const took = performance.now() - start;
      if (handlerCount < handlerTimes.length) {
        handlerTimes[handlerCount++] = took * 1000;
      }
    }, options);
  }
}

async function startServer(): Promise<{ url: string; stop(): Promise<void> }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--unstable-kv",
      "--v8-flags=--expose-gc",
      new URL("./_sync_server.ts", import.meta.url).pathname,
      "tether",
    ],
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (!text.includes("\n")) {
    const { done, value } = await lines.read();
    if (done) throw new Error("The server's output ended");
    text += value;
  }
  const { url } = JSON.parse(text.slice(0, text.indexOf("\n")));
  const input = child.stdin.getWriter();
  return {
    url,
    stop: async () => {
      await input.write(new TextEncoder().encode("quit\n")).catch(() => {});
      await input.close().catch(() => {});
      while (!(await lines.read()).done) {
        // Drain so the pipe closes.
      }
      await child.status;
    },
  };
}

async function load(label: string, root: URL): Promise<Checkout> {
  const mod = await import(new URL("mod.ts", root).href);
  return { label, App: mod.App, Credentials: mod.Credentials };
}

async function group(
  checkout: Checkout,
  url: string,
  signal: AbortSignal,
): Promise<Group> {
  const path = `/bench/fanout-cpu-${checkout.label}-${crypto.randomUUID()}`;
  const apps: App[] = [];
  const open = async () => {
    const app = new checkout.App({
      baseUrl: url,
      logger: () => {},
      WebSocket: CountingWebSocket,
    });
    apps.push(app);
    const user = await app.logIn(checkout.Credentials.anonymous());
    return user.openRealm({ path, waitForDownload: true });
  };
  const writer = await open();
  const receipt = await writer.write((tx) => tx.put("Item", ID, { n: 0 }));
  await receipt.waitForUpload({ signal: AbortSignal.timeout(WAIT_MS) });
  const readers: Realm[] = [];
  const readerSockets: CountingWebSocket[] = [];
  const watchers: ValueWaiter[] = [];
  const done: Promise<void>[] = [];
  for (let k = 0; k < CLIENTS; k++) {
    const opened = sockets.length;
    const realm = await open();
    if (sockets.length !== opened + 1) {
      throw new Error("Expected one socket per client");
    }
    readerSockets.push(sockets[opened]!);
    const watch = watchField(realm, ID, signal);
    readers.push(realm);
    watchers.push(watch.waiter);
    done.push(watch.done);
  }
  return {
    checkout,
    apps,
    writer,
    readers,
    sockets: readerSockets,
    watchers,
    done,
    next: 1,
  };
}

/** `rounds` writes, each waited for at every client; the last client's µs. */
async function rounds(g: Group, count: number): Promise<number[]> {
  const last: number[] = [];
  for (let r = 0; r < count; r++) {
    const i = g.next++;
    const seen = withinWait(
      Promise.all(g.watchers.map((watcher) => watcher.expect(i))),
      `value ${i}`,
    );
    const start = performance.now();
    await g.writer.write((tx) => tx.update("Item", ID, { n: i }));
    const times = await seen;
    last.push((Math.max(...times) - start) * 1000);
  }
  return last;
}

/**
 * `--synthetic`: `count` rounds without the server or the sockets. Each
 * round encodes the DOWNLOAD the server would send (the next server
 * version, one changeset updating field `n`) and hands every reader's own
 * `message` listener a fresh copy, as Deno's WebSocket does, then waits
 * for every reader's `changes()` to show it. What is left is the client's
 * receive path and the reads of `changes()`, without Deno's socket and
 * event work or the server's share of the machine.
 */
async function syntheticRounds(g: Group, count: number): Promise<number[]> {
  const last: number[] = [];
  const states = g.sockets.map((socket) => {
    if (!(socket.lastData instanceof ArrayBuffer)) {
      throw new Error("No DOWNLOAD seen on a reader's socket");
    }
    const message = decodeMessage(new Uint8Array(socket.lastData));
    if (message.type !== MessageType.Download) {
      throw new Error(`The last frame was message ${message.type}`);
    }
    return message;
  });
  for (let r = 0; r < count; r++) {
    const i = g.next++;
    const seen = withinWait(
      Promise.all(g.watchers.map((watcher) => watcher.expect(i))),
      `value ${i}`,
    );
    const start = performance.now();
    const frames = new Map<number, Uint8Array>();
    for (let k = 0; k < g.sockets.length; k++) {
      const state = states[k]!;
      const serverVersion = state.serverVersion + 1 + r;
      const key = state.sessionId * 2 ** 32 + serverVersion;
      let frame = frames.get(key);
      if (frame === undefined) {
        const message: DownloadMessage = {
          type: MessageType.Download,
          sessionId: state.sessionId,
          serverVersion,
          ...(state.serverVersionSalt === undefined
            ? {}
            : { serverVersionSalt: state.serverVersionSalt }),
          lastIntegratedClientVersion: state.lastIntegratedClientVersion,
          downloadableBytes: 0,
          changesetBytes: 40,
          changesets: [{
            serverVersion,
            stamp: { time: SYNTHETIC_TIME + i, counter: 0, node: 7 },
            instructions: [{
              op: "update",
              type: "Item",
              id: ID,
              fields: { n: i },
              stamp: null,
            }],
          }],
        };
        frame = encodeMessage(message).slice();
        frames.set(key, frame);
      }
      const socket = g.sockets[k]!;
      const data = frame.slice().buffer;
      const start = performance.now();
      socket.listener!.call(socket, { data } as MessageEvent);
      const took = performance.now() - start;
      if (handlerCount < handlerTimes.length) {
        handlerTimes[handlerCount++] = took * 1000;
      }
    }
    const times = await seen;
    last.push((Math.max(...times) - start) * 1000);
  }
  // The next synthetic block goes on from where this one stopped.
  for (const state of states) state.serverVersion += count;
  g.sockets.forEach((socket, k) => {
    socket.lastData = encodeMessage(states[k]!).slice().buffer;
  });
  return last;
}

function cpuMicros(): number {
  const { user, system } = process.cpuUsage();
  return user + system;
}

const server = await startServer();
const controller = new AbortController();
const session = new inspector.Session();
const profileFile = option("--profile");
const allocFile = option("--alloc");
const base = option("--base");
try {
  const checkouts = [await load("this", new URL("../", import.meta.url))];
  if (base !== undefined) {
    checkouts.push(
      await load("base", new URL(`file://${base.replace(/\/?$/, "/")}`)),
    );
  }
  const groups: Group[] = [];
  // The clients created first read a few percent higher in CPU time, the
  // same tree on both sides (docs/PERFORMANCE.md): `--base-first` swaps
  // the order, so runs of both orders can cancel that out.
  const creation = Deno.args.includes("--base-first")
    ? checkouts.toReversed()
    : checkouts;
  for (const checkout of creation) {
    groups.push(await group(checkout, server.url, controller.signal));
  }
  for (const g of groups) await rounds(g, WARMUP_ROUNDS);
  if (SYNTHETIC) {
    for (const g of groups) await syntheticRounds(g, WARMUP_ROUNDS);
  }
  if (profileFile !== undefined || allocFile !== undefined) session.connect();
  if (profileFile !== undefined) {
    session.post("Profiler.enable");
    session.post("Profiler.setSamplingInterval", { interval: 50 });
  }
  const cpu = new Map<string, number[]>();
  const p50 = new Map<string, number[]>();
  const handlers = new Map<string, number[]>();
  const pairs: string[] = [];
  for (let pair = 0; pair < PAIRS; pair++) {
    const order = pair % 2 === 0 ? groups : groups.toReversed();
    const row: string[] = [];
    for (const g of order) {
      const label = g.checkout.label;
      const profiling = profileFile !== undefined && label === "this";
      if (profiling) session.post("Profiler.start");
      const sampling = allocFile !== undefined && label === "this" &&
        pair === PAIRS - 1;
      if (sampling) {
        session.post("HeapProfiler.startSampling", {
          samplingInterval: 256,
          includeObjectsCollectedByMajorGC: true,
          includeObjectsCollectedByMinorGC: true,
        });
      }
      const framesBefore = framesSent;
      handlerTimes = new Float64Array(ROUNDS * (CLIENTS + 1) * 2);
      handlerCount = 0;
      const before = cpuMicros();
      const last = SYNTHETIC
        ? await syntheticRounds(g, ROUNDS)
        : await rounds(g, ROUNDS);
      const used = (cpuMicros() - before) / (ROUNDS * CLIENTS);
      const sent = (framesSent - framesBefore) / ROUNDS;
      const handler = median([...handlerTimes.subarray(0, handlerCount)]);
      if (profiling) {
        session.post("Profiler.stop", (error, result) => {
          if (error === null && pair === PAIRS - 1) {
            Deno.writeTextFileSync(
              profileFile!,
              JSON.stringify(result.profile),
            );
          }
        });
      }
      if (sampling) {
        session.post("HeapProfiler.stopSampling", (error, result) => {
          if (error === null) {
            Deno.writeTextFileSync(allocFile!, JSON.stringify(result.profile));
          }
        });
      }
      cpu.set(label, [...cpu.get(label) ?? [], used]);
      handlers.set(label, [...handlers.get(label) ?? [], handler]);
      p50.set(label, [...p50.get(label) ?? [], median(last)]);
      row.push(
        `${label} ${used.toFixed(2)} µs/msg, handler ${
          handler.toFixed(2)
        } µs, p50 ${median(last).toFixed(0)} µs, ${
          sent.toFixed(2)
        } frames sent/round`,
      );
    }
    pairs.push(row.join(" | "));
    console.log(`pair ${pair + 1}: ${row.join(" | ")}`);
  }
  const figures = [
    ["CPU per client message (µs)", cpu],
    ["message listener, median (µs)", handlers],
    ["last client, p50 (µs)", p50],
  ] as const;
  printPairs(figures, 2);
  controller.abort();
  for (const g of groups) {
    await Promise.all(g.done);
    await g.writer.close();
    for (const realm of g.readers) await realm.close();
    for (const app of g.apps) await app.close();
  }
} finally {
  controller.abort();
  if (profileFile !== undefined || allocFile !== undefined) {
    session.disconnect();
  }
  await server.stop();
}
