/**
 * End-to-end sync benchmark (`deno task bench:sync`): Tether through its
 * public API beside Yjs + y-websocket and a raw Deno WebSocket ceiling,
 * each server in a child process of its own (`bench/_sync_server.ts`).
 *
 * Options: `--quick` (tiny sizes, a smoke run), `--out <path>` (where the
 * JSON goes; default a temp file), `--only <rows>` (a comma-separated list
 * of `bootstrap`, `bootstrap-large`, `updates-1`, `updates-100`,
 * `propagation`, `fanout`, `progress`, `live-queries`, `memory`: run those
 * rows alone),
 * `--profile <dir>` (a V8 CPU profile of this process for each Tether part
 * of the rows run, via `node:inspector`, written there as `.cpuprofile`),
 * `--memory-runs <n>` (the memory row's samples; default 5),
 * `--live-query-reps <n>` (the live-queries row's pairs; default 5),
 * `--heap-snapshots <dir>` (an extra memory run, left out of the median, in
 * which Tether's server writes a V8 heap snapshot at both readings, for
 * `bench/heap_diff.ts`). docs/PERFORMANCE.md, "End to end (bench:sync)",
 * says what each row measures and what limits it.
 */
import * as Y from "npm:yjs@13.6.33";
import { WebsocketProvider } from "npm:y-websocket@3.1.0";
import {
  App,
  Credentials,
  type LiveQueryOptions,
  type Realm,
  type User,
} from "../mod.ts";
import type { ServerMeasure } from "./_sync_server.ts";
import { linesOf } from "../tests/_helpers/lines.ts";
import process from "node:process";
import { Session as InspectorSession } from "node:inspector";
import { ValueWaiter, watchField, within } from "./_value_waiter.ts";

// y-websocket adds a process "exit" listener per provider (to say goodbye
// to its peers); this bench holds hundreds of providers at once.
process.setMaxListeners(0);

// ---------------------------------------------------------------- sizes

const quick = Deno.args.includes("--quick");
const outIndex = Deno.args.indexOf("--out");
const outPath = outIndex >= 0
  ? Deno.args[outIndex + 1]
  : await Deno.makeTempFile({ prefix: "sync_bench_", suffix: ".json" });
if (outPath === undefined) throw new TypeError("--out needs a path");
const ROW_NAMES = [
  "bootstrap",
  "bootstrap-large",
  "updates-1",
  "updates-100",
  "propagation",
  "fanout",
  "progress",
  "live-queries",
  "memory",
] as const;
const onlyIndex = Deno.args.indexOf("--only");
const only = onlyIndex >= 0
  ? new Set(Deno.args[onlyIndex + 1]?.split(",") ?? [])
  : undefined;
for (const name of only ?? []) {
  if (!(ROW_NAMES as readonly string[]).includes(name)) {
    throw new TypeError(
      `--only: unknown row ${JSON.stringify(name)} (${ROW_NAMES.join(", ")})`,
    );
  }
}
if (only?.size === 0) throw new TypeError("--only needs a list of rows");
/** Whether the row `name` runs. */
const runs = (name: typeof ROW_NAMES[number]) =>
  only === undefined || only.has(name);
const profileIndex = Deno.args.indexOf("--profile");
const profileDir = profileIndex >= 0 ? Deno.args[profileIndex + 1] : undefined;
if (profileIndex >= 0 && profileDir === undefined) {
  throw new TypeError("--profile needs a directory");
}
/** The value after `flag`, if the flag is given. */
function option(flag: string): string | undefined {
  const index = Deno.args.indexOf(flag);
  if (index < 0) return undefined;
  const value = Deno.args[index + 1];
  if (value === undefined) throw new TypeError(`${flag} needs a value`);
  return value;
}
const memoryRunsOption = option("--memory-runs");
const memoryRuns = memoryRunsOption === undefined
  ? undefined
  : Number(memoryRunsOption);
if (
  memoryRuns !== undefined && (!Number.isInteger(memoryRuns) || memoryRuns < 1)
) {
  throw new TypeError(`--memory-runs takes a positive integer`);
}
const snapshotDir = option("--heap-snapshots");
const liveQueryRepsOption = option("--live-query-reps");
const liveQueryReps = liveQueryRepsOption === undefined
  ? undefined
  : Number(liveQueryRepsOption);
if (
  liveQueryReps !== undefined &&
  (!Number.isInteger(liveQueryReps) || liveQueryReps < 1)
) {
  throw new TypeError(`--live-query-reps takes a positive integer`);
}

/** Sizes and repetitions; `--quick` only proves every row runs. */
const SIZES = quick
  ? {
    bootstrapSmall: 200,
    bootstrapLarge: 1_000,
    bootstrapSmallReps: 1,
    bootstrapLargeReps: 1,
    updates: 200,
    singleUpdateReps: 1,
    batchedUpdateReps: 1,
    propagationWarmup: 5,
    propagation: 20,
    fanOutClients: 3,
    fanOutWarmup: 2,
    fanOutRounds: 5,
    progressReps: 1,
    liveQueryReps: liveQueryReps ?? 1,
    idleUsers: 2,
    idleRealms: 3,
    memoryRuns: memoryRuns ?? 1,
  }
  : {
    bootstrapSmall: 10_000,
    bootstrapLarge: 100_000,
    bootstrapSmallReps: 3,
    // One repetition each of the two slowest rows keeps the whole run near
    // five minutes on a loaded 2-core machine; run again to see the spread.
    bootstrapLargeReps: 1,
    updates: 20_000,
    singleUpdateReps: 1,
    batchedUpdateReps: 3,
    propagationWarmup: 200,
    propagation: 2_000,
    fanOutClients: 50,
    fanOutWarmup: 20,
    fanOutRounds: 200,
    progressReps: 2,
    // Pairs (none, ten) after one pair of warm-up, all on one seeded realm.
    liveQueryReps: liveQueryReps ?? 5,
    idleUsers: 10,
    idleRealms: 40,
    // The heap after a full GC still varies from run to run (code compiled
    // while the sessions bind, for one): the row is a median.
    memoryRuns: memoryRuns ?? 5,
  };
/** Objects per `write()` (Tether) or transaction (Yjs) when seeding. */
const SEED_CHUNK = 10_000;
/** Objects the update rows write to, round robin. */
const UPDATE_OBJECTS = 100;
/** The deadline of every single wait in this bench. */
const WAIT_MS = 180_000;

/** `within`, bounded by this bench's `WAIT_MS`. */
function withinWait<T>(promise: Promise<T>, what: string): Promise<T> {
  return within(promise, what, WAIT_MS);
}

// ---------------------------------------------------------------- data

/** A canonical UUID per index (Tether sends these as 16 bytes). */
function idOf(index: number): string {
  return `00000000-0000-4000-8000-${index.toString(16).padStart(12, "0")}`;
}

/** Eight fields of mixed kinds, as an application's objects have. */
function fieldsOf(index: number): Record<string, string | number | boolean> {
  return {
    title: `Item number ${index} of the list`,
    note: index % 4 === 0
      ? `Größe ${index} – naïve café`
      : `plain note ${index}`,
    n: index,
    price: index * 0.25 + 0.1,
    done: index % 3 === 0,
    tag: `tag-${index % 17}`,
    score: (index * 7919) % 1000,
    ratio: (index % 100) / 7,
  };
}

// ---------------------------------------------------------------- profile

let inspector: InspectorSession | undefined;
function post(method: string, params?: object): Promise<unknown> {
  return new Promise((resolve, reject) =>
    inspector!.post(
      method,
      params ?? {},
      (error: Error | null, result: unknown) =>
        error ? reject(error) : resolve(result),
    )
  );
}

/**
 * Runs `fn`; with `--profile`, under the V8 CPU profiler of this process,
 * the profile written to `<dir>/<name>.cpuprofile`.
 */
async function profiled<T>(name: string, fn: () => Promise<T>): Promise<T> {
  if (profileDir === undefined) return await fn();
  if (inspector === undefined) {
    inspector = new InspectorSession();
    inspector.connect();
    await post("Profiler.enable");
    await post("Profiler.setSamplingInterval", { interval: 100 });
  }
  await post("Profiler.start");
  try {
    return await fn();
  } finally {
    const { profile } = await post("Profiler.stop") as { profile: unknown };
    await Deno.mkdir(profileDir, { recursive: true });
    await Deno.writeTextFile(
      `${profileDir}/${name}.cpuprofile`,
      JSON.stringify(profile),
    );
  }
}

// ---------------------------------------------------------------- stats

function percentile(values: number[], q: number): number {
  if (values.length === 0) throw new Error("No samples");
  const sorted = values.toSorted((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)]!;
}
const median = (values: number[]) => percentile(values, 0.5);

// ---------------------------------------------------------------- wire

/** WebSocket payload counts of one client, as its socket saw them. */
interface Wire {
  sent: number;
  sentBytes: number;
  received: number;
  receivedBytes: number;
}
const newWire = (): Wire => ({
  sent: 0,
  sentBytes: 0,
  received: 0,
  receivedBytes: 0,
});
const encoder = new TextEncoder();
function byteSize(data: unknown): number {
  if (typeof data === "string") return encoder.encode(data).byteLength;
  if (data instanceof Blob) return data.size;
  return (data as ArrayBuffer | ArrayBufferView).byteLength;
}

/** A WebSocket class that counts payload messages and bytes into `wire`. */
function countingWebSocket(wire: Wire): typeof WebSocket {
  return class CountingWebSocket extends WebSocket {
    constructor(
      url: string | URL,
      protocols?: ConstructorParameters<typeof WebSocket>[1],
    ) {
      super(url, protocols);
      this.addEventListener("message", (event) => {
        wire.received++;
        wire.receivedBytes += byteSize(event.data);
      });
    }
    override send(
      data: string | ArrayBufferLike | Blob | ArrayBufferView,
    ): void {
      wire.sent++;
      wire.sentBytes += byteSize(data);
      super.send(data);
    }
  };
}

// ---------------------------------------------------------------- servers

/** A server child process. */
interface ServerProcess {
  kind: string;
  url: string;
  /** Heap after full GCs, and the counters. */
  measure(): Promise<ServerMeasure>;
  /** The counters (and heap) without a GC first: cheap enough to poll. */
  counts(): Promise<ServerMeasure>;
  /** `measure()`, then a V8 heap snapshot written to `file`. */
  snapshot(file: string): Promise<ServerMeasure>;
  /** Asks it to quit and waits; the exit code. */
  stop(): Promise<number>;
}

const exits: { name: string; code: number }[] = [];

async function startServer(
  kind: "tether" | "yjs" | "raw",
  label: string = kind,
) {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--unstable-kv",
      "--v8-flags=--expose-gc",
      new URL("./_sync_server.ts", import.meta.url).pathname,
      kind,
    ],
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const input = child.stdin.getWriter();
  const output = linesOf(child.stdout);
  const nextLine = async () => {
    const { done, value } = await output.next();
    if (done) throw new Error(`The ${kind} server's output ended`);
    return value;
  };
  let url: string;
  try {
    url = (JSON.parse(await nextLine()) as { url: string }).url;
  } catch (error) {
    child.kill();
    await child.status;
    throw error;
  }
  const server: ServerProcess = {
    kind,
    url,
    measure: async () => {
      await input.write(encoder.encode("measure\n"));
      return JSON.parse(await nextLine()) as ServerMeasure;
    },
    counts: async () => {
      await input.write(encoder.encode("counts\n"));
      return JSON.parse(await nextLine()) as ServerMeasure;
    },
    snapshot: async (file) => {
      await input.write(encoder.encode(`snapshot ${file}\n`));
      return JSON.parse(await nextLine()) as ServerMeasure;
    },
    stop: async () => {
      await input.write(encoder.encode("quit\n")).catch(() => {});
      await input.close().catch(() => {});
      // Drain what is left so the pipe closes.
      for await (const _ of { [Symbol.asyncIterator]: () => output }) {
        // nothing
      }
      const status = await child.status;
      exits.push({ name: `${label} server`, code: status.code });
      return status.code;
    },
  };
  return server;
}

// ---------------------------------------------------------------- waiting

/** Feeds field `n` of object `id` into a waiter after every Yjs update. */
function watchYjs(doc: Y.Doc, id: string): ValueWaiter {
  const waiter = new ValueWaiter();
  const objects = doc.getMap<Y.Map<unknown>>("objects");
  doc.on("update", () => {
    const n = objects.get(id)?.get("n");
    if (typeof n === "number") waiter.saw(n);
  });
  return waiter;
}

// ---------------------------------------------------------------- clients

interface TetherClient {
  app: App;
  user: User;
  wire: Wire;
}

async function tetherClient(url: string): Promise<TetherClient> {
  const wire = newWire();
  const app = new App({
    baseUrl: url,
    WebSocket: countingWebSocket(wire),
    logger: () => {},
  });
  const user = await app.logIn(Credentials.anonymous());
  return { app, user, wire };
}

interface YjsClient {
  doc: Y.Doc;
  provider: WebsocketProvider;
  wire: Wire;
  objects: Y.Map<Y.Map<unknown>>;
  close(): void;
}

/** A Yjs doc synced through y-websocket; resolves once synced. */
async function yjsClient(url: string, room: string): Promise<YjsClient> {
  const wire = newWire();
  const doc = new Y.Doc();
  const provider = new WebsocketProvider(url, room, doc, {
    WebSocketPolyfill: countingWebSocket(wire),
    // Otherwise docs of one room in this process would sync through a
    // BroadcastChannel instead of the server.
    disableBc: true,
  });
  await yjsSynced(provider);
  return {
    doc,
    provider,
    wire,
    objects: doc.getMap<Y.Map<unknown>>("objects"),
    close: () => {
      provider.destroy();
      doc.destroy();
    },
  };
}

function yjsSynced(provider: WebsocketProvider): Promise<void> {
  if (provider.synced) return Promise.resolve();
  const { promise, resolve, reject } = Promise.withResolvers<void>();
  const timer = setTimeout(
    () => reject(new Error("Yjs provider did not sync")),
    WAIT_MS,
  );
  const onSync = (synced: boolean) => {
    if (!synced) return;
    clearTimeout(timer);
    provider.off("sync", onSync);
    resolve();
  };
  provider.on("sync", onSync);
  return promise;
}

/** A raw socket that resolves once open. */
async function rawSocket(url: string): Promise<WebSocket> {
  const socket = new WebSocket(url);
  socket.binaryType = "arraybuffer";
  await new Promise<void>((resolve, reject) => {
    socket.onopen = () => resolve();
    socket.onerror = () => reject(new Error(`Cannot connect to ${url}`));
  });
  return socket;
}

async function closeRaw(socket: WebSocket): Promise<void> {
  if (socket.readyState === WebSocket.CLOSED) return;
  const closed = new Promise((resolve) => socket.onclose = resolve);
  socket.close();
  await closed;
}

/** Polls the server until it has received `bytes` more than `from`. */
async function serverReceived(
  server: ServerProcess,
  from: number,
  bytes: number,
): Promise<void> {
  const deadline = performance.now() + WAIT_MS;
  while ((await server.counts()).bytesIn < from + bytes) {
    if (performance.now() > deadline) {
      throw new Error(`The ${server.kind} server never received the seed`);
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

// ---------------------------------------------------------------- results

/** One figure: Tether's value beside Yjs's and the raw ceiling's. */
interface Row {
  id: string;
  figure: string;
  unit: string;
  tether?: number;
  yjs?: number;
  raw?: number;
}
const rows: Row[] = [];
const notes: Record<string, unknown> = {};
let realmCounter = 0;
const freshPath = (name: string) => `/bench/${name}-${++realmCounter}`;

// ---------------------------------------------------------------- row 1, 5

async function seedTether(url: string, path: string, count: number) {
  const seeder = await tetherClient(url);
  const realm = await seeder.user.openRealm({ path, waitForDownload: true });
  let last;
  for (let start = 0; start < count; start += SEED_CHUNK) {
    last = await realm.write((tx) => {
      for (let i = start; i < Math.min(count, start + SEED_CHUNK); i++) {
        tx.put("Item", idOf(i), fieldsOf(i));
      }
    });
  }
  await last!.waitForUpload({ signal: AbortSignal.timeout(WAIT_MS) });
  await realm.close();
  await seeder.app.close();
}

/**
 * A fresh Tether client opens a seeded realm. `progress`: open without
 * waiting, consume a download progress stream, and wait for the download.
 */
async function bootstrapTether(
  url: string,
  count: number,
  progress?: "with" | "without",
) {
  const path = freshPath("bootstrap");
  await seedTether(url, path, count);
  const client = await tetherClient(url);
  const signal = AbortSignal.timeout(WAIT_MS);
  let reports = 0;
  let consumer: Promise<void> | undefined;
  const start = performance.now();
  let realm: Realm;
  if (progress === undefined) {
    realm = await client.user.openRealm({
      path,
      waitForDownload: true,
      signal,
    });
  } else {
    realm = await client.user.openRealm({ path, signal });
    const session = realm.syncSession;
    if (progress === "with") {
      const stream = session.getProgressStream(
        "download",
        "forCurrentlyOutstandingWork",
        { signal },
      );
      consumer = (async () => {
        for await (const _ of stream) reports++;
      })();
    }
    await session.waitForDownload({ signal });
  }
  const ms = performance.now() - start;
  await consumer;
  const objects = realm.objects("Item").length;
  if (objects !== count) throw new Error(`Downloaded ${objects} of ${count}`);
  const wire = { ...client.wire };
  await realm.close();
  await client.app.close();
  return { ms, wire, reports };
}

async function bootstrapYjs(server: ServerProcess, count: number) {
  const room = freshPath("bootstrap").slice(1);
  const seeder = await yjsClient(server.url, room);
  const before = (await server.counts()).bytesIn;
  const sentBefore = seeder.wire.sentBytes;
  for (let start = 0; start < count; start += SEED_CHUNK) {
    seeder.doc.transact(() => {
      for (let i = start; i < Math.min(count, start + SEED_CHUNK); i++) {
        seeder.objects.set(idOf(i), new Y.Map(Object.entries(fieldsOf(i))));
      }
    });
  }
  await serverReceived(server, before, seeder.wire.sentBytes - sentBefore);
  seeder.close();
  const start = performance.now();
  const fresh = await yjsClient(server.url, room);
  const ms = performance.now() - start;
  if (fresh.objects.size !== count) {
    throw new Error(`Yjs downloaded ${fresh.objects.size} of ${count}`);
  }
  const wire = { ...fresh.wire };
  fresh.close();
  return { ms, wire };
}

/** Time for a fresh raw socket to receive `bytes` in `messages` messages. */
async function bootstrapRaw(url: string, bytes: number, messages: number) {
  const start = performance.now();
  const socket = new WebSocket(
    `${url}/blast?bytes=${bytes}&messages=${messages}`,
  );
  socket.binaryType = "arraybuffer";
  let received = 0;
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("raw blast")), WAIT_MS);
    socket.onmessage = (event) => {
      received += (event.data as ArrayBuffer).byteLength;
      if (received >= bytes) {
        clearTimeout(timer);
        resolve();
      }
    };
  });
  const ms = performance.now() - start;
  await closeRaw(socket);
  return ms;
}

async function rowBootstrap(
  servers: Servers,
  count: number,
  reps: number,
  label: string,
) {
  const tether: number[] = [];
  const yjs: number[] = [];
  const raw: number[] = [];
  let tetherWire: Wire | undefined;
  let yjsWire: Wire | undefined;
  for (let rep = 0; rep < reps; rep++) {
    const t = await bootstrapTether(servers.tether.url, count);
    tether.push(t.ms);
    tetherWire = t.wire;
    raw.push(
      await bootstrapRaw(
        servers.raw.url,
        t.wire.receivedBytes,
        t.wire.received,
      ),
    );
    const y = await bootstrapYjs(servers.yjs, count);
    yjs.push(y.ms);
    yjsWire = y.wire;
  }
  const perSecond = (ms: number) => count / (ms / 1000);
  rows.push({
    id: `bootstrap_${count}_ms`,
    figure: `bootstrap ${label} × 8 fields, open → all downloaded`,
    unit: "ms",
    tether: median(tether),
    yjs: median(yjs),
    raw: median(raw),
  }, {
    id: `bootstrap_${count}_objects_per_s`,
    figure: `bootstrap ${label}: objects/s`,
    unit: "objects/s",
    tether: perSecond(median(tether)),
    yjs: perSecond(median(yjs)),
  }, {
    id: `bootstrap_${count}_bytes`,
    figure: `bootstrap ${label}: payload bytes to the client`,
    unit: "B",
    tether: tetherWire!.receivedBytes,
    yjs: yjsWire!.receivedBytes,
  });
  notes[`bootstrap_${count}`] = {
    tetherMs: tether,
    yjsMs: yjs,
    rawMs: raw,
    tetherWire,
    yjsWire,
  };
}

// ---------------------------------------------------------------- row 2

/** A → B over a realm with UPDATE_OBJECTS objects both already hold. */
async function tetherPair(url: string, name: string) {
  const path = freshPath(name);
  const a = await tetherClient(url);
  const b = await tetherClient(url);
  const realmA = await a.user.openRealm({ path, waitForDownload: true });
  const receipt = await realmA.write((tx) => {
    for (let i = 0; i < UPDATE_OBJECTS; i++) {
      tx.put("Item", idOf(i), fieldsOf(i));
    }
  });
  await receipt.waitForUpload({ signal: AbortSignal.timeout(WAIT_MS) });
  const realmB = await b.user.openRealm({ path, waitForDownload: true });
  return {
    a,
    b,
    realmA,
    realmB,
    close: async () => {
      await realmA.close();
      await realmB.close();
      await a.app.close();
      await b.app.close();
    },
  };
}

async function yjsPair(url: string, name: string) {
  const room = freshPath(name).slice(1);
  const a = await yjsClient(url, room);
  const b = await yjsClient(url, room);
  const lastId = idOf(UPDATE_OBJECTS - 1);
  const ready = withinWait(
    watchYjs(b.doc, lastId).expect(UPDATE_OBJECTS - 1),
    "Yjs bootstrap",
  );
  a.doc.transact(() => {
    for (let i = 0; i < UPDATE_OBJECTS; i++) {
      a.objects.set(idOf(i), new Y.Map(Object.entries(fieldsOf(i))));
    }
  });
  await ready;
  return { a, b, close: () => (a.close(), b.close()) };
}

async function throughputTether(url: string, total: number, perWrite: number) {
  const pair = await tetherPair(url, "writes");
  const controller = new AbortController();
  const lastId = idOf((total - 1) % UPDATE_OBJECTS);
  const { waiter, done } = watchField(pair.realmB, lastId, controller.signal);
  const aBefore = { ...pair.a.wire };
  const bBefore = { ...pair.b.wire };
  const { start, end } = await profiled(`updates-${perWrite}`, async () => {
    const start = performance.now();
    for (let write = 0; write < total / perWrite; write++) {
      await pair.realmA.write((tx) => {
        for (let j = 0; j < perWrite; j++) {
          const i = write * perWrite + j;
          tx.update("Item", idOf(i % UPDATE_OBJECTS), { n: i });
        }
      });
    }
    return {
      start,
      end: await withinWait(waiter.expect(total - 1), "last update"),
    };
  });
  const ms = end - start;
  controller.abort();
  await done;
  const up = {
    messages: pair.a.wire.sent - aBefore.sent,
    bytes: pair.a.wire.sentBytes - aBefore.sentBytes,
  };
  const down = pair.b.wire.receivedBytes - bBefore.receivedBytes;
  await pair.close();
  return { ms, up, down };
}

async function throughputYjs(url: string, total: number, perWrite: number) {
  const pair = await yjsPair(url, "writes");
  const waiter = watchYjs(pair.b.doc, idOf((total - 1) % UPDATE_OBJECTS));
  const aBefore = pair.a.wire.sentBytes;
  const bBefore = pair.b.wire.receivedBytes;
  const start = performance.now();
  for (let write = 0; write < total / perWrite; write++) {
    pair.a.doc.transact(() => {
      for (let j = 0; j < perWrite; j++) {
        const i = write * perWrite + j;
        pair.a.objects.get(idOf(i % UPDATE_OBJECTS))!.set("n", i);
      }
    });
  }
  const end = await withinWait(waiter.expect(total - 1), "last update");
  const result = {
    ms: end - start,
    up: pair.a.wire.sentBytes - aBefore,
    down: pair.b.wire.receivedBytes - bBefore,
  };
  pair.close();
  return result;
}

/** A sends `messages` messages of `bytes` in all through a relay to B. */
async function relayRaw(url: string, bytes: number, messages: number) {
  const room = `${url}/room/${++realmCounter}`;
  const a = await rawSocket(room);
  const b = await rawSocket(room);
  let received = 0;
  const all = new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("raw relay")), WAIT_MS);
    b.onmessage = (event) => {
      received += (event.data as ArrayBuffer).byteLength;
      if (received >= bytes) {
        clearTimeout(timer);
        resolve(performance.now());
      }
    };
  });
  const each = Math.floor(bytes / messages);
  const start = performance.now();
  for (let index = 0; index < messages; index++) {
    a.send(
      new Uint8Array(index === messages - 1 ? bytes - each * index : each),
    );
  }
  const ms = (await all) - start;
  await closeRaw(a);
  await closeRaw(b);
  return ms;
}

async function rowThroughput(servers: Servers, perWrite: number) {
  const total = SIZES.updates;
  const tether: number[] = [];
  const yjs: number[] = [];
  const raw: number[] = [];
  let tetherUp = 0;
  let tetherDown = 0;
  let yjsUp = 0;
  let yjsDown = 0;
  const reps = perWrite === 1
    ? SIZES.singleUpdateReps
    : SIZES.batchedUpdateReps;
  for (let rep = 0; rep < reps; rep++) {
    const t = await throughputTether(servers.tether.url, total, perWrite);
    tether.push(t.ms);
    tetherUp = t.up.bytes;
    tetherDown = t.down;
    raw.push(await relayRaw(servers.raw.url, t.up.bytes, t.up.messages));
    const y = await throughputYjs(servers.yjs.url, total, perWrite);
    yjs.push(y.ms);
    yjsUp = y.up;
    yjsDown = y.down;
  }
  const label = perWrite === 1 ? "one per write()" : `${perWrite} per write()`;
  const rate = (ms: number) => total / (ms / 1000);
  rows.push({
    id: `updates_${perWrite}_per_write_per_s`,
    figure: `${
      total.toLocaleString("en-US")
    } single-field updates, ${label}, A → B: updates/s`,
    unit: "updates/s",
    tether: rate(median(tether)),
    yjs: rate(median(yjs)),
    raw: rate(median(raw)),
  }, {
    id: `updates_${perWrite}_per_write_bytes_up`,
    figure: `  bytes per update, A → server`,
    unit: "B",
    tether: tetherUp / total,
    yjs: yjsUp / total,
  }, {
    id: `updates_${perWrite}_per_write_bytes_down`,
    figure: `  bytes per update, server → B`,
    unit: "B",
    tether: tetherDown / total,
    yjs: yjsDown / total,
  });
  notes[`updates_${perWrite}_per_write`] = {
    tetherMs: tether,
    yjsMs: yjs,
    rawMs: raw,
  };
}

// ---------------------------------------------------------------- row 3

async function propagationTether(url: string) {
  const pair = await tetherPair(url, "propagation");
  const controller = new AbortController();
  const id = idOf(0);
  const { waiter, done } = watchField(pair.realmB, id, controller.signal);
  const samples: number[] = [];
  const aBefore = { ...pair.a.wire };
  const rounds = SIZES.propagationWarmup + SIZES.propagation;
  await profiled("propagation", async () => {
    for (let i = UPDATE_OBJECTS; i < UPDATE_OBJECTS + rounds; i++) {
      const seen = withinWait(waiter.expect(i), `value ${i}`);
      const start = performance.now();
      await pair.realmA.write((tx) => tx.update("Item", id, { n: i }));
      const at = await seen;
      if (i >= UPDATE_OBJECTS + SIZES.propagationWarmup) {
        samples.push((at - start) * 1000);
      }
    }
  });
  controller.abort();
  await done;
  const messageBytes = Math.round(
    (pair.a.wire.sentBytes - aBefore.sentBytes) /
      Math.max(1, pair.a.wire.sent - aBefore.sent),
  );
  await pair.close();
  return { samples, messageBytes };
}

async function propagationYjs(url: string) {
  const pair = await yjsPair(url, "propagation");
  const id = idOf(0);
  const waiter = watchYjs(pair.b.doc, id);
  const objectA = pair.a.objects.get(id)!;
  const samples: number[] = [];
  const rounds = SIZES.propagationWarmup + SIZES.propagation;
  for (let i = UPDATE_OBJECTS; i < UPDATE_OBJECTS + rounds; i++) {
    const seen = withinWait(waiter.expect(i), `value ${i}`);
    const start = performance.now();
    objectA.set("n", i);
    const at = await seen;
    if (i >= UPDATE_OBJECTS + SIZES.propagationWarmup) {
      samples.push((at - start) * 1000);
    }
  }
  pair.close();
  return samples;
}

/** One message of `bytes` at a time, A → relay → B, or echoed back to A. */
async function propagationRaw(url: string, bytes: number, echo: boolean) {
  const room = `${url}/room/${++realmCounter}`;
  const a = await rawSocket(echo ? `${url}/echo` : room);
  const b = echo ? a : await rawSocket(room);
  let resolve: ((at: number) => void) | undefined;
  b.onmessage = () => resolve?.(performance.now());
  const payload = new Uint8Array(bytes);
  const samples: number[] = [];
  const rounds = SIZES.propagationWarmup + SIZES.propagation;
  for (let i = 0; i < rounds; i++) {
    const { promise, resolve: done, reject } = Promise.withResolvers<number>();
    const timer = setTimeout(() => reject(new Error("raw echo")), WAIT_MS);
    resolve = (at) => {
      clearTimeout(timer);
      done(at);
    };
    const start = performance.now();
    a.send(payload);
    const at = await promise;
    if (i >= SIZES.propagationWarmup) samples.push((at - start) * 1000);
  }
  await closeRaw(a);
  if (b !== a) await closeRaw(b);
  return samples;
}

async function rowPropagation(servers: Servers) {
  const t = await propagationTether(servers.tether.url);
  const y = await propagationYjs(servers.yjs.url);
  const relay = await propagationRaw(servers.raw.url, t.messageBytes, false);
  const echo = await propagationRaw(servers.raw.url, t.messageBytes, true);
  for (const [q, name] of [[0.5, "p50"], [0.99, "p99"]] as const) {
    rows.push({
      id: `propagation_${name}_us`,
      figure: `propagation A → server → B, ${name} (${
        SIZES.propagation.toLocaleString("en-US")
      } sequential)`,
      unit: "µs",
      tether: percentile(t.samples, q),
      yjs: percentile(y, q),
      raw: percentile(relay, q),
    });
  }
  notes.propagation = {
    samples: SIZES.propagation,
    rawMessageBytes: t.messageBytes,
    rawEchoRttP50Us: percentile(echo, 0.5),
    rawEchoRttP99Us: percentile(echo, 0.99),
  };
  return { echoP50: percentile(echo, 0.5), echoP99: percentile(echo, 0.99) };
}

// ---------------------------------------------------------------- row 4

/** Runs the rounds: `write(i)` then waits for every waiter to see `i`. */
async function fanOutRounds(
  waiters: ValueWaiter[],
  write: (i: number) => Promise<void> | void,
) {
  const last: number[] = [];
  const each: number[] = [];
  const rounds = SIZES.fanOutWarmup + SIZES.fanOutRounds;
  for (let i = UPDATE_OBJECTS; i < UPDATE_OBJECTS + rounds; i++) {
    // Armed before the clock starts: what is measured is the write and its
    // delivery, not the bench's own bookkeeping (the same for every column).
    const seen = withinWait(
      Promise.all(waiters.map((waiter) => waiter.expect(i))),
      `value ${i} at ${waiters.length} clients`,
    );
    const start = performance.now();
    await write(i);
    const times = (await seen).map((at) => (at - start) * 1000);
    if (i >= UPDATE_OBJECTS + SIZES.fanOutWarmup) {
      last.push(Math.max(...times));
      each.push(...times);
    }
  }
  return { last, each };
}

async function fanOutTether(url: string) {
  const pair = await tetherPair(url, "fanout");
  const path = pair.realmA.path;
  const id = idOf(0);
  const controller = new AbortController();
  const clients: { client: TetherClient; realm: Realm }[] = [];
  const watches: { waiter: ValueWaiter; done: Promise<void> }[] = [];
  for (let k = 0; k < SIZES.fanOutClients; k++) {
    const client = await tetherClient(url);
    const realm = await client.user.openRealm({ path, waitForDownload: true });
    clients.push({ client, realm });
    watches.push(watchField(realm, id, controller.signal));
  }
  const aBefore = { ...pair.a.wire };
  const result = await profiled("fanout", () =>
    fanOutRounds(
      watches.map((watch) => watch.waiter),
      async (i) => {
        await pair.realmA.write((tx) => tx.update("Item", id, { n: i }));
      },
    ));
  const messageBytes = Math.round(
    (pair.a.wire.sentBytes - aBefore.sentBytes) /
      Math.max(1, pair.a.wire.sent - aBefore.sent),
  );
  controller.abort();
  for (const watch of watches) await watch.done;
  for (const { client, realm } of clients) {
    await realm.close();
    await client.app.close();
  }
  await pair.close();
  return { ...result, messageBytes };
}

async function fanOutYjs(url: string) {
  const pair = await yjsPair(url, "fanout");
  const room = pair.a.provider.roomname;
  const id = idOf(0);
  const clients: YjsClient[] = [];
  for (let k = 0; k < SIZES.fanOutClients; k++) {
    clients.push(await yjsClient(url, room));
  }
  const objectA = pair.a.objects.get(id)!;
  const result = await fanOutRounds(
    clients.map((client) => watchYjs(client.doc, id)),
    (i) => {
      objectA.set("n", i);
    },
  );
  for (const client of clients) client.close();
  pair.close();
  return result;
}

async function fanOutRaw(url: string, bytes: number) {
  const room = `${url}/room/${++realmCounter}`;
  const a = await rawSocket(room);
  const sockets: WebSocket[] = [];
  const waiters: ValueWaiter[] = [];
  for (let k = 0; k < SIZES.fanOutClients; k++) {
    const socket = await rawSocket(room);
    const waiter = new ValueWaiter();
    socket.onmessage = (event) =>
      waiter.saw(new DataView(event.data as ArrayBuffer).getUint32(0));
    sockets.push(socket);
    waiters.push(waiter);
  }
  const payload = new Uint8Array(Math.max(4, bytes));
  const result = await fanOutRounds(waiters, (i) => {
    new DataView(payload.buffer).setUint32(0, i);
    a.send(payload);
  });
  for (const socket of [a, ...sockets]) await closeRaw(socket);
  return result;
}

async function rowFanOut(servers: Servers) {
  const t = await fanOutTether(servers.tether.url);
  const y = await fanOutYjs(servers.yjs.url);
  const r = await fanOutRaw(servers.raw.url, t.messageBytes);
  const clients = SIZES.fanOutClients;
  for (const which of ["last", "each"] as const) {
    for (const [q, name] of [[0.5, "p50"], [0.99, "p99"]] as const) {
      rows.push({
        id: `fanout_${which}_${name}_us`,
        figure: `one write → ${clients} clients, ${
          which === "last" ? "until the last has it" : "until each has it"
        }, ${name}`,
        unit: "µs",
        tether: percentile(t[which], q),
        yjs: percentile(y[which], q),
        raw: percentile(r[which], q),
      });
    }
  }
  notes.fanOut = {
    clients,
    rounds: SIZES.fanOutRounds,
    rawMessageBytes: t.messageBytes,
  };
}

// ---------------------------------------------------------------- row 5

async function rowProgress(servers: Servers) {
  const count = SIZES.bootstrapSmall;
  const without: number[] = [];
  const withStream: number[] = [];
  const reports: number[] = [];
  // Alternated, so that drift on a shared machine hits both alike.
  for (let rep = 0; rep < SIZES.progressReps; rep++) {
    without.push(
      (await bootstrapTether(servers.tether.url, count, "without")).ms,
    );
    const t = await bootstrapTether(servers.tether.url, count, "with");
    withStream.push(t.ms);
    reports.push(t.reports);
  }
  const label = count.toLocaleString("en-US");
  rows.push({
    id: "progress_without_ms",
    figure: `bootstrap ${label}, no progress consumer`,
    unit: "ms",
    tether: median(without),
  }, {
    id: "progress_with_ms",
    figure: `bootstrap ${label}, getProgressStream consumer`,
    unit: "ms",
    tether: median(withStream),
  }, {
    id: "progress_overhead_percent",
    figure: `  progress-stream overhead`,
    unit: "%",
    tether: (median(withStream) / median(without) - 1) * 100,
  });
  notes.progress = { withoutMs: without, withMs: withStream, reports };
}

// ---------------------------------------------------------------- row 5b

/**
 * The ten live queries of bench/live_query_bootstrap.ts on this bench's
 * fields: `score` takes 1,000 values of about 100 objects each, as
 * `bucket` does there, and `done` a third of the objects as `even` half.
 */
function tenLiveQueries(count: number): LiveQueryOptions[] {
  return [
    { sort: [["n", "asc"]], limit: 100 },
    { where: { done: true }, sort: [["n", "desc"]], limit: 50 },
    { where: { n: { gte: count / 2 } }, sort: [["title", "asc"]], limit: 20 },
    { where: { score: { in: [1, 2, 3] } } },
    {
      where: { $or: [{ score: 4 }, { n: { lt: 10 } }] },
      sort: [["n", "asc"]],
    },
    ...[5, 6, 7, 8, 9].map((score): LiveQueryOptions => ({
      where: { score },
      sort: [["n", "desc"], ["title", "asc"]],
    })),
  ];
}

/**
 * A fresh client opens `path` (seeded) with `queries` watched from before
 * the first DOWNLOAD, each read by a consumer that touches every item's
 * `objects`; the time until the realm is downloaded and every consumer has
 * read what it was sent.
 */
async function bootstrapWatched(
  url: string,
  path: string,
  count: number,
  queries: readonly LiveQueryOptions[],
): Promise<{ ms: number; cpuMs: number }> {
  const client = await tetherClient(url);
  const signal = AbortSignal.timeout(WAIT_MS);
  const stop = new AbortController();
  const cpu = process.cpuUsage();
  const start = performance.now();
  const realm = await client.user.openRealm({ path, signal });
  const lastRead: number[] = [];
  const lengths: number[] = [];
  // Registered in this turn, before any DOWNLOAD can be applied.
  const consumers = queries.map(async (query, i) => {
    const stream = realm.watch("Item", { ...query, signal: stop.signal });
    for await (const { objects } of stream) {
      lengths[i] = objects.length;
      lastRead[i] = performance.now();
    }
  });
  await realm.syncSession.waitForDownload({ signal });
  const downloaded = performance.now();
  // Items already queued are read in microtasks; a timer's turn is after.
  await new Promise((resolve) => setTimeout(resolve, 0));
  const ms = Math.max(downloaded, ...lastRead) - start;
  // This process is the client alone (the server is a child process); the
  // timer's turn above adds no work of its own.
  const { user, system } = process.cpuUsage(cpu);
  stop.abort();
  await Promise.all(consumers);
  const objects = realm.objects("Item").length;
  if (objects !== count) throw new Error(`Downloaded ${objects} of ${count}`);
  queries.forEach((query, i) => {
    const expected = realm.objects("Item", query).length;
    if (lengths[i] !== expected) {
      throw new Error(`Live query ${i} read ${lengths[i]}, not ${expected}`);
    }
  });
  await realm.close();
  await client.app.close();
  return { ms, cpuMs: (user + system) / 1000 };
}

/**
 * Issue 11's bootstrap figure end to end: 100,000 objects downloaded from
 * the server process with no live query and with ten, alternated on one
 * seeded realm (each run a fresh client), after a warm-up pair.
 */
async function rowLiveQueries(servers: Servers) {
  const count = SIZES.bootstrapLarge;
  const path = freshPath("live-queries");
  await seedTether(servers.tether.url, path, count);
  const ten = tenLiveQueries(count);
  const none = { ms: [] as number[], cpuMs: [] as number[] };
  const watched = { ms: [] as number[], cpuMs: [] as number[] };
  for (let rep = 0; rep <= SIZES.liveQueryReps; rep++) {
    const a = await bootstrapWatched(servers.tether.url, path, count, []);
    const b = await bootstrapWatched(servers.tether.url, path, count, ten);
    if (rep === 0) continue;
    none.ms.push(a.ms);
    none.cpuMs.push(a.cpuMs);
    watched.ms.push(b.ms);
    watched.cpuMs.push(b.cpuMs);
  }
  const label = count.toLocaleString("en-US");
  // The median of each pair's ratio: the server's background work after
  // seeding (its snapshot) slows the first pairs, both runs of a pair alike.
  const extra = (of: "ms" | "cpuMs") =>
    (median(watched[of].map((value, i) => value / none[of][i]!)) - 1) * 100;
  rows.push({
    id: "live_queries_none_ms",
    figure: `bootstrap ${label}, no live query`,
    unit: "ms",
    tether: median(none.ms),
  }, {
    id: "live_queries_ten_ms",
    figure: `bootstrap ${label}, 10 live queries read`,
    unit: "ms",
    tether: median(watched.ms),
  }, {
    id: "live_queries_extra_percent",
    figure: `  live-query overhead, wall time`,
    unit: "%",
    tether: extra("ms"),
  }, {
    id: "live_queries_cpu_extra_percent",
    figure: `  live-query overhead, client CPU time`,
    unit: "%",
    tether: extra("cpuMs"),
  });
  notes.liveQueries = { none, ten: watched };
}

// ---------------------------------------------------------------- row 6

/** Heap growth per added session or socket, one sample per kind. */
interface MemorySample {
  tether: number;
  yjs: number;
  raw: number;
  /** The same without the spaces of compiled code (see `objectBytes`). */
  objects: { tether: number; yjs: number; raw: number };
  /** Tether's growth per session by V8 heap space. */
  tetherSpaces: Record<string, number>;
}

/**
 * Waits until the server has neither sent nor received a byte for
 * `QUIET_POLLS` polls in a row: every bind is done, and nothing the
 * clients started (an acknowledgement, a MARK) is still on the wire.
 */
async function waitForQuiet(server: ServerProcess): Promise<void> {
  const deadline = performance.now() + WAIT_MS;
  let last = await server.counts();
  let quiet = 0;
  while (quiet < QUIET_POLLS) {
    if (performance.now() > deadline) {
      throw new Error(`The ${server.kind} server never went quiet`);
    }
    await new Promise((resolve) => setTimeout(resolve, QUIET_POLL_MS));
    const now = await server.counts();
    quiet = now.bytesIn === last.bytesIn && now.bytesOut === last.bytesOut
      ? quiet + 1
      : 0;
    last = now;
  }
}
const QUIET_POLLS = 3;
const QUIET_POLL_MS = 100;

/** The heap once the server is quiet, optionally with a heap snapshot. */
async function quietMeasure(
  server: ServerProcess,
  snapshot?: string,
): Promise<ServerMeasure> {
  await waitForQuiet(server);
  return snapshot === undefined
    ? await server.measure()
    : await server.snapshot(snapshot);
}

/**
 * One sample of heap growth per idle session on fresh servers:
 * `idleUsers` connections each bind realm 0 (warm-up), then each binds
 * realms 1 … idleRealms − 1. With `snapshots`, Tether's server writes a
 * heap snapshot at both readings (`before.heapsnapshot`, `after…`).
 */
async function memorySample(
  servers: Servers,
  snapshots?: string,
): Promise<MemorySample> {
  const users = SIZES.idleUsers;
  const realms = SIZES.idleRealms;
  const added = users * (realms - 1);
  const base = freshPath("idle");

  // Tether: one connection per user, one session per realm on it.
  const clients: TetherClient[] = [];
  const opened: Realm[] = [];
  for (let u = 0; u < users; u++) {
    const client = await tetherClient(servers.tether.url);
    clients.push(client);
    opened.push(
      await client.user.openRealm({ path: `${base}-0`, waitForDownload: true }),
    );
  }
  const tetherBefore = await quietMeasure(
    servers.tether,
    snapshots && `${snapshots}/before.heapsnapshot`,
  );
  for (let r = 1; r < realms; r++) {
    for (const client of clients) {
      opened.push(
        await client.user.openRealm({
          path: `${base}-${r}`,
          waitForDownload: true,
        }),
      );
    }
  }
  const tetherAfter = await quietMeasure(
    servers.tether,
    snapshots && `${snapshots}/after.heapsnapshot`,
  );
  if (tetherAfter.sessions - tetherBefore.sessions !== added) {
    throw new Error(`Tether bound ${tetherAfter.sessions} sessions`);
  }
  for (const realm of opened) await realm.close();
  for (const client of clients) await client.app.close();

  // Yjs: a socket per doc and client, as y-websocket has it.
  const docs: YjsClient[] = [];
  for (let u = 0; u < users; u++) {
    docs.push(await yjsClient(servers.yjs.url, `${base.slice(1)}-0`));
  }
  const yjsBefore = await quietMeasure(servers.yjs);
  for (let r = 1; r < realms; r++) {
    for (let u = 0; u < users; u++) {
      docs.push(await yjsClient(servers.yjs.url, `${base.slice(1)}-${r}`));
    }
  }
  const yjsAfter = await quietMeasure(servers.yjs);
  if (yjsAfter.sessions - yjsBefore.sessions !== added) {
    throw new Error(`Yjs has ${yjsAfter.sessions} sockets`);
  }
  for (const doc of docs) doc.close();

  // Raw: idle sockets.
  const sockets: WebSocket[] = [];
  for (let u = 0; u < users; u++) {
    sockets.push(await rawSocket(`${servers.raw.url}/idle`));
  }
  const rawBefore = await quietMeasure(servers.raw);
  for (let k = 0; k < added; k++) {
    sockets.push(await rawSocket(`${servers.raw.url}/idle`));
  }
  const rawAfter = await quietMeasure(servers.raw);
  if (rawAfter.sessions - rawBefore.sessions !== added) {
    throw new Error(`The raw server has ${rawAfter.sessions} sockets`);
  }
  for (const socket of sockets) await closeRaw(socket);

  const per = (before: ServerMeasure, after: ServerMeasure) =>
    (after.heapUsed - before.heapUsed) / added;
  const perObjects = (before: ServerMeasure, after: ServerMeasure) =>
    (objectBytes(after) - objectBytes(before)) / added;
  const tetherSpaces: Record<string, number> = {};
  for (const name of Object.keys(tetherAfter.spaces)) {
    tetherSpaces[name] = Math.round(
      ((tetherAfter.spaces[name] ?? 0) - (tetherBefore.spaces[name] ?? 0)) /
        added,
    );
  }
  return {
    tether: per(tetherBefore, tetherAfter),
    yjs: per(yjsBefore, yjsAfter),
    raw: per(rawBefore, rawAfter),
    objects: {
      tether: perObjects(tetherBefore, tetherAfter),
      yjs: perObjects(yjsBefore, yjsAfter),
      raw: perObjects(rawBefore, rawAfter),
    },
    tetherSpaces,
  };
}

/**
 * The heap without compiled code: V8 compiles and optimises functions as
 * they get hot, and drops bytecode of ones unused for a while, whenever
 * that happens to fall between two readings; the code is the process's,
 * not any session's. Bytecode and code metadata live in the trusted spaces.
 */
function objectBytes(measure: ServerMeasure): number {
  let bytes = measure.heapUsed;
  for (const [space, used] of Object.entries(measure.spaces)) {
    if (space.startsWith("code_") || space.startsWith("trusted_")) {
      bytes -= used;
    }
  }
  return bytes;
}

/**
 * Heap growth per idle session: the median of `memoryRuns` samples, each
 * on fresh server processes (work left from a run before could otherwise
 * land between two heap readings).
 */
async function rowMemory(snapshots?: string) {
  const samples: MemorySample[] = [];
  // Writing a snapshot allocates in the server (and the first one loads
  // code): a run with snapshots is an extra one, left out of the median.
  const total = SIZES.memoryRuns + (snapshots === undefined ? 0 : 1);
  if (snapshots !== undefined) await Deno.mkdir(snapshots, { recursive: true });
  for (let run = 0; run < total; run++) {
    console.error(`idle-session memory, run ${run + 1}/${total}`);
    const servers = await startServers(` (memory ${run + 1})`);
    try {
      if (run === 0 && snapshots !== undefined) {
        await servers.tether.snapshot(`${snapshots}/warm-up.heapsnapshot`);
        const sample = await memorySample(servers, snapshots);
        notes.memorySnapshotRun = sample;
      } else {
        samples.push(await memorySample(servers));
      }
    } finally {
      for (const server of Object.values(servers)) await server.stop();
    }
  }
  const added = SIZES.idleUsers * (SIZES.idleRealms - 1);
  rows.push({
    id: "idle_session_heap_bytes",
    figure:
      `server heap per idle bound session (${added} sessions, median of ${samples.length})`,
    unit: "B",
    tether: median(samples.map((sample) => sample.tether)),
    yjs: median(samples.map((sample) => sample.yjs)),
    raw: median(samples.map((sample) => sample.raw)),
  }, {
    id: "idle_session_object_bytes",
    figure: `the same, objects only (no compiled code)`,
    unit: "B",
    tether: median(samples.map((sample) => sample.objects.tether)),
    yjs: median(samples.map((sample) => sample.objects.yjs)),
    raw: median(samples.map((sample) => sample.objects.raw)),
  });
  notes.memory = {
    users: SIZES.idleUsers,
    realms: SIZES.idleRealms,
    added,
    samples,
  };
}

// ---------------------------------------------------------------- main

interface Servers {
  tether: ServerProcess;
  yjs: ServerProcess;
  raw: ServerProcess;
}

function format(value: number | undefined, unit: string): string {
  if (value === undefined) return "—";
  const digits = Math.abs(value) >= 100 ? 0 : Math.abs(value) >= 10 ? 1 : 2;
  const text = value.toLocaleString("en-US", {
    maximumFractionDigits: digits,
    minimumFractionDigits: 0,
  });
  return `${text} ${unit}`;
}

function printTable(): void {
  const header = [
    "figure",
    "Tether",
    "Yjs + y-websocket",
    "raw Deno WebSocket",
  ];
  const body = rows.map((row) => [
    row.figure,
    format(row.tether, row.unit),
    format(row.yjs, row.unit),
    format(row.raw, row.unit),
  ]);
  const widths = header.map((title, column) =>
    Math.max(title.length, ...body.map((line) => line[column]!.length))
  );
  const line = (cells: string[]) =>
    `| ${
      cells.map((cell, column) =>
        column === 0
          ? cell.padEnd(widths[column]!)
          : cell.padStart(widths[column]!)
      ).join(" | ")
    } |`;
  console.log(line(header));
  console.log(
    `|${
      widths.map((width, column) =>
        column === 0 ? `${"-".repeat(width + 1)}-` : `${"-".repeat(width + 1)}:`
      ).join("|")
    }|`,
  );
  for (const cells of body) console.log(line(cells));
}

/** One server of each kind; `label` names them in the exit list. */
async function startServers(label: string): Promise<Servers> {
  const started: Partial<Servers> = {};
  try {
    for (const kind of ["tether", "yjs", "raw"] as const) {
      started[kind] = await startServer(kind, `${kind}${label}`);
    }
  } catch (error) {
    for (const server of Object.values(started)) await server.stop();
    throw error;
  }
  return started as Servers;
}

/** Every row but the memory row, on one set of servers; the echo RTT. */
async function otherRows(servers: Servers) {
  const progress = (what: string) =>
    console.error(`[${((performance.now()) / 1000).toFixed(1)} s] ${what}`);
  let echo: { echoP50: number; echoP99: number } | undefined;
  if (runs("bootstrap")) {
    progress("bootstrap (small)");
    await rowBootstrap(
      servers,
      SIZES.bootstrapSmall,
      SIZES.bootstrapSmallReps,
      SIZES.bootstrapSmall.toLocaleString("en-US"),
    );
  }
  if (runs("bootstrap-large")) {
    progress("bootstrap (large)");
    await rowBootstrap(
      servers,
      SIZES.bootstrapLarge,
      SIZES.bootstrapLargeReps,
      SIZES.bootstrapLarge.toLocaleString("en-US"),
    );
  }
  if (runs("updates-1")) {
    progress("updates, one per write");
    await rowThroughput(servers, 1);
  }
  if (runs("updates-100")) {
    progress("updates, 100 per write");
    await rowThroughput(servers, 100);
  }
  if (runs("propagation") || runs("fanout")) {
    progress("propagation");
    echo = await rowPropagation(servers);
  }
  if (runs("fanout")) {
    progress("fan-out");
    await rowFanOut(servers);
  }
  if (runs("progress")) {
    progress("progress-stream overhead");
    await rowProgress(servers);
  }
  if (runs("live-queries")) {
    progress("bootstrap with live queries");
    await rowLiveQueries(servers);
  }
  return echo;
}

const startedAt = new Date();
let echo: { echoP50: number; echoP99: number } | undefined;
if (ROW_NAMES.some((name) => name !== "memory" && runs(name))) {
  const servers = await startServers("");
  try {
    echo = await otherRows(servers);
  } finally {
    for (const server of Object.values(servers)) await server.stop();
  }
}
// Last, on fresh servers of its own for each run: in the ones above, work
// left from the earlier rows (a background snapshot, caches emptying) could
// land between the two heap measurements.
if (runs("memory")) await rowMemory(snapshotDir);

if (echo !== undefined) {
  rows.push({
    id: "raw_echo_rtt_p50_us",
    figure: "raw echo RTT, p50 (propagation's message size)",
    unit: "µs",
    raw: echo.echoP50,
  }, {
    id: "raw_echo_rtt_p99_us",
    figure: "raw echo RTT, p99",
    unit: "µs",
    raw: echo.echoP99,
  });
}
printTable();
const report = {
  startedAt: startedAt.toISOString(),
  finishedAt: new Date().toISOString(),
  quick,
  only: only === undefined ? null : [...only],
  deno: Deno.version,
  cpus: navigator.hardwareConcurrency,
  sizes: SIZES,
  rows,
  notes,
  processes: exits,
};
await Deno.writeTextFile(outPath, JSON.stringify(report, null, 2) + "\n");
console.log(`\nJSON: ${outPath}`);
const failed = exits.filter((exit) => exit.code !== 0);
if (failed.length > 0) {
  throw new Error(`Servers failed: ${JSON.stringify(failed)}`);
}
