/**
 * The convergence soak's engine: one seeded schedule of writes over three
 * clients with network and server faults in between, then quiescence and
 * the checks (replicas equal, nothing acknowledged lost, nothing integrated
 * twice, every receipt settled). `soak.ts` runs many from the command line,
 * `soak_test.ts` a few in CI.
 *
 * Clients use the public entry point only (`mod.ts`); the server is
 * `serveSync` in a child process (`_server.ts`) on a KV file, so it can be
 * SIGKILLed and started again on the same file. Each client reaches it
 * through its own `TcpProxy`, so faults hit one link at a time; a restarted
 * server listens on a new port and the proxies are pointed at it.
 *
 * Randomness comes from one `Prng` per schedule: the steps (which client
 * writes what, which fault starts when and for how long) replay from the
 * seed. How those steps interleave with the network does not, so a failure
 * is reproduced by running its seed again, often more than once.
 *
 * Delays here only shape the schedule (how long a fault lasts, how writes
 * spread over time); nothing synchronises on them and no check depends on
 * them.
 *
 * @module
 */

import {
  App,
  type AppOptions,
  Credentials,
  type LogRecord,
  type Realm,
  SyncError,
  type SyncSession,
  type WriteReceipt,
} from "../../mod.ts";
import { linesOf } from "../_helpers/lines.ts";
import { Prng } from "../_helpers/prng.ts";
import { TcpProxy } from "../_helpers/tcp_proxy.ts";
import { POISON_FIELD } from "./_poison.ts";

/** The one realm every client of a schedule writes. */
const REALM_PATH = "/soak/shared";
/** Each client's keepalive: small, so silent links outlast it quickly. */
const KEEPALIVE = { pingIntervalMs: 250, readTimeoutMs: 1_000 };
const READ_TIMEOUT_MS = KEEPALIVE.readTimeoutMs;
/** Objects every client only updates (never put again, never deleted). */
const TALLIES = 5;
/** Objects every client puts, updates and deletes. */
const SHARED = 8;
/** Where proxies point while the server is down: no one can listen there. */
const NOWHERE = { hostname: "127.0.0.1", port: 0 };
/** Bound of one start, stop or stats request of the server process. */
const PROCESS_WAIT_MS = 30_000;
const CLIENTS = 3;
/** How often and how many times a restore looks for a write past its copy. */
const ACK_POLL_MS = 50;
const ACK_POLLS = 200;

/** The kinds of fault a schedule injects; see {@linkcode FAULTS}. */
export type FaultKind =
  | "cut"
  | "stallShort"
  | "stallLong"
  | "silence"
  | "refuse"
  | "slices"
  | "bandwidth"
  | "pause"
  | "reconnect"
  | "kill"
  | "restore"
  | "rejected";

/** Every fault kind, in the order reports list them. */
export const FAULT_KINDS: readonly FaultKind[] = [
  "cut",
  "stallShort",
  "stallLong",
  "silence",
  "refuse",
  "slices",
  "bandwidth",
  "pause",
  "reconnect",
  "kill",
  "restore",
  "rejected",
];

/** What one schedule does. */
export interface ScheduleOptions {
  /** The schedule's seed: it decides every step. */
  seed: number;
  /** Write transactions spread over the three clients. */
  writes: number;
  /** Mean pause between two writes, in milliseconds (default 8). */
  meanGapMs?: number;
  /** Chance that a fault starts after a write (default 0.03). */
  faultChance?: number;
  /** At least this many server kills (a forced one lands mid-schedule). */
  minKills?: number;
  /**
   * At least this many restores of an older copy (forced ones take their
   * copy mid-schedule and restore it a few read timeouts later).
   */
  minRestores?: number;
  /** At least this many writes the server refuses (forced mid-schedule). */
  minRejected?: number;
  /** Bound of the quiescence: every wait after the writes (default 60 s). */
  quiesceMs?: number;
  /** Where progress notes go (default: nowhere). */
  log?: (line: string) => void;
}

/** What one schedule found. */
export interface ScheduleResult {
  seed: number;
  /** Write transactions made. */
  writes: number;
  /** Of them, the ones that changed something (each one changeset). */
  changesets: number;
  /**
   * Server SIGKILLs of "kill" faults (each followed by a restart on the same
   * KV file). A restore adds two SIGKILLs of its own, counted in `restores`.
   */
  kills: number;
  /** Restarts of the server on an older copy of its KV file. */
  restores: number;
  /** Client resets the three clients performed (`stats().clientResets`). */
  resets: number;
  /** Writes the server refused on their content (poisoned writes). */
  rejected: number;
  /** Faults started, by kind (kills included). */
  faults: Record<FaultKind, number>;
  /** Acknowledged writes whose effect the final state lacks. */
  lost: number;
  /**
   * Uploads stored twice: changesets the server's history holds beyond the
   * clients' distinct ones (schedules without a restore), and stored
   * changesets repeating the client identity and client version of one
   * stored before (every schedule).
   */
  duplicated: number;
  /** Whether the three clients and a freshly bootstrapped fourth agree. */
  replicasEqual: boolean;
  /**
   * Receipts that did not settle as they must: an ordinary write's receipt
   * that never resolved (rejected, or still pending at the bound), and a
   * poisoned write's that did not reject with `write_rejected`.
   */
  unsettled: number;
  /** Every problem found, one line each; empty when the schedule passed. */
  problems: string[];
  durationMs: number;
}

// ----- the server process -----

const SERVER_SCRIPT = new URL("./_server.ts", import.meta.url).pathname;

/** The soak server in a child process (`_server.ts`). */
class ServerProcess {
  /** Where it listens; set once it said so. */
  addr: { hostname: string; port: number } = { hostname: "127.0.0.1", port: 0 };
  /** The realm's history head when this process started. */
  startHead = 0;
  #child: Deno.ChildProcess;
  #input: WritableStreamDefaultWriter<Uint8Array>;
  #lines: string[] = [];
  #wake = () => {};
  #ended = false;
  #reading: Promise<void>;
  #stderr: Promise<string>;

  private constructor(child: Deno.ChildProcess) {
    this.#child = child;
    this.#input = child.stdin.getWriter();
    this.#stderr = new Response(child.stderr).text();
    this.#reading = this.#read(child.stdout);
  }

  async #read(stdout: ReadableStream<Uint8Array>): Promise<void> {
    for await (const line of linesOf(stdout)) {
      this.#lines.push(line);
      this.#wake();
    }
    this.#ended = true;
    this.#wake();
  }

  /** Starts the server on `kvPath` and waits until it listens. */
  static async start(kvPath: string): Promise<ServerProcess> {
    const server = new ServerProcess(
      new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          "--unstable-kv",
          SERVER_SCRIPT,
          kvPath,
          REALM_PATH,
        ],
        stdin: "piped",
        stdout: "piped",
        stderr: "piped",
      }).spawn(),
    );
    try {
      const [, url, head] = (await server.#nextLine("listening ")).split(" ");
      const { hostname, port } = new URL(url!);
      server.addr = { hostname, port: Number(port) };
      server.startHead = Number(head);
    } catch (error) {
      await server.kill();
      throw new Error(`${error}; stderr: ${await server.#stderr}`);
    }
    return server;
  }

  /** Waits for the next stdout line starting with `prefix`, bounded. */
  async #nextLine(prefix: string): Promise<string> {
    using bound = deadline(PROCESS_WAIT_MS);
    for (;;) {
      const index = this.#lines.findIndex((line) => line.startsWith(prefix));
      if (index >= 0) return this.#lines.splice(0, index + 1).at(-1)!;
      if (this.#ended) {
        throw new Error(`server output ended before "${prefix}…"`);
      }
      if (bound.signal.aborted) {
        throw new Error(`no "${prefix}…" from the server`);
      }
      await new Promise<void>((resolve) => {
        this.#wake = resolve;
        bound.signal.addEventListener("abort", () => resolve(), {
          once: true,
        });
      });
    }
  }

  /** The server's `changesetsIntegrated` and the realm's head version. */
  async stats(): Promise<{ integrated: number; head: number }> {
    await this.#input.write(new TextEncoder().encode("stats\n"));
    const [, integrated, head] = (await this.#nextLine("stats ")).split(" ");
    return { integrated: Number(integrated), head: Number(head) };
  }

  /**
   * What the realm's stored history holds (`_server.ts` `auditHistory`):
   * changesets stored, the first stored version, uploads stored again and
   * poisoned changesets stored.
   */
  async history(): Promise<
    { stored: number; first: number; repeated: number; poisoned: number }
  > {
    await this.#input.write(new TextEncoder().encode("history\n"));
    const [, stored, first, repeated, poisoned] =
      (await this.#nextLine("history ")).split(" ").map(Number);
    return {
      stored: stored!,
      first: first!,
      repeated: repeated!,
      poisoned: poisoned!,
    };
  }

  /** SIGKILLs the process and waits until it is gone. */
  async kill(): Promise<void> {
    try {
      this.#child.kill("SIGKILL");
    } catch {
      // Already exited.
    }
    await this.#finish();
  }

  /** Stops the server cleanly; throws when it does not say "stopped". */
  async stop(): Promise<void> {
    try {
      await this.#input.write(new TextEncoder().encode("quit\n"));
      await this.#nextLine("stopped");
    } finally {
      await this.kill();
    }
  }

  async #finish(): Promise<void> {
    await this.#input.close().catch(() => {});
    await this.#child.status;
    await this.#reading;
    await this.#stderr;
  }

  /** What the process wrote on stderr (once it has exited). */
  stderr(): Promise<string> {
    return this.#stderr;
  }
}

/**
 * The operations on the server process (kills, copies, restores), run one
 * after another in the order they are queued. A failed one fails those
 * queued after it (they do not run), and {@linkcode idle} rejects with it.
 */
export class ServerQueue {
  #last: Promise<void> = Promise.resolve();

  /** Queues `operation` after every one queued before. */
  run<T>(operation: () => Promise<T>): Promise<T> {
    const next = this.#last.then(operation);
    this.#last = next.then(() => {});
    // Handled here; `queued` and `idle` hand the failure on.
    this.#last.catch(() => {});
    return next;
  }

  /** Settles once the operations queued so far are over. */
  queued(): Promise<void> {
    return this.#last;
  }

  /**
   * Settles once no operation is queued or running, including those queued
   * while it waits (a restore that a fault's end queues while an earlier
   * operation runs): what the checks need before they read the server.
   * Bounded by the operations a schedule queues, each awaited once.
   */
  async idle(): Promise<void> {
    let seen: Promise<void>;
    do {
      seen = this.#last;
      await seen;
    } while (seen !== this.#last);
  }
}

// ----- clients -----

/** One of the three writing clients, behind its own proxy. */
interface SoakClient {
  readonly index: number;
  readonly app: App;
  readonly proxy: TcpProxy;
  realm: Realm;
  /** Ids of its live own objects, as planned (in write order). */
  readonly own: Set<string>;
  nextOwn: number;
}

/**
 * A client's options; `log` hears of its client resets (when one starts
 * and what it recovered), which a failure's steps need.
 */
function appOptions(
  baseUrl: string,
  log?: (line: string) => void,
): AppOptions {
  return {
    baseUrl,
    ...(log === undefined ? {} : {
      logger: (record: LogRecord) => {
        if (record.event === "session_client_reset") log(record.message);
      },
    }),
    reconnect: { minDelayMs: 10, maxDelayMs: 100 },
    keepalive: KEEPALIVE,
    lingerMs: 0,
    progressIntervalMs: 0,
  };
}

/**
 * Opens the shared realm. The soak's clients reset with `recoverAll`: after
 * a restore they give the server back everything their copies hold that it
 * lost, which is what keeps "nothing acknowledged is lost" an invariant
 * across restores (see {@linkcode checkModel}).
 */
async function openClientRealm(app: App, signal: AbortSignal): Promise<Realm> {
  const user = await app.logIn(Credentials.anonymous(), { signal });
  return await user.openRealm({
    path: REALM_PATH,
    waitForDownload: true,
    signal,
    clientReset: { mode: "recoverAll" },
  });
}

// ----- faults -----

/** What a fault can reach. */
export interface FaultContext {
  readonly random: Prng;
  /** The client the fault hits (network and session faults). */
  readonly client: SoakClient;
  /** SIGKILLs the server and starts it again on the same KV file. */
  killServer(downMs: number): Promise<void>;
  /**
   * Queues the copy of the server's KV file (with its `-wal` and `-shm`
   * files) as a crash would leave it: SIGKILLs the server, copies, starts
   * it again on the live file. `taken` settles once the copy is taken;
   * `restore` queues, at once, the restore of that older copy (SIGKILL,
   * start on the copy), which runs after the copy like every server
   * operation after the ones queued before it.
   */
  backupServer(downMs: number): {
    taken: Promise<void>;
    restore(): Promise<void>;
  };
  /** Makes the next write (of any client) one the server refuses. */
  poisonNextWrite(): void;
}

/** A fault in progress: `heal` ends it (idempotent). */
export interface ActiveFault {
  heal(): void | Promise<void>;
}

/**
 * One kind of fault. `scope` says what it occupies while it lasts — one
 * client's link, one client's session, the server process, the server's
 * store (a copy waiting to be restored), or nothing but the next write — so
 * two faults never fight over the same knob; `start` begins it and returns
 * how to heal it, and how long to let it last (0: it is over at once).
 * Operations on the server process (kills, copies, restores) run one after
 * another, never overlapping.
 */
export interface FaultDefinition {
  readonly kind: FaultKind;
  /** Relative chance of being drawn. */
  readonly weight: number;
  readonly scope: "link" | "session" | "server" | "store" | "write";
  start(context: FaultContext): { fault: ActiveFault; forMs: number };
}

/** A random duration in [min, max) × the client's read timeout. */
function timeouts(random: Prng, min: number, max: number): number {
  return Math.round(READ_TIMEOUT_MS * (min + random.next() * (max - min)));
}

/**
 * Every fault a schedule draws from.
 *
 * - "restore" takes a crash-consistent copy of the server's store at one
 *   moment, lets the schedule write on for 1–4 read timeouts (other faults,
 *   kills included, go on meanwhile), then SIGKILLs the server and starts it
 *   on that older copy: every client whose cursors are ahead of it must
 *   detect it and reset (`recoverAll`), and the checks stay the same — see
 *   {@linkcode checkModel} for why they still hold.
 * - "rejected" makes the next write one the server refuses on its content
 *   (it sets {@linkcode POISON_FIELD}; `_server.ts` refuses it through
 *   `validateChangeset`). Its receipt must reject with `write_rejected`
 *   whose cause has the code `validation_failed`, its effect must be found
 *   nowhere (not in any replica, not in the server's history), and the
 *   session must stay active: later writes settle as usual.
 */
export const FAULTS: readonly FaultDefinition[] = [
  {
    kind: "cut",
    weight: 3,
    scope: "link",
    start({ client }) {
      client.proxy.dropAll();
      return { fault: { heal() {} }, forMs: 0 };
    },
  },
  {
    // Stalls shorter than the read timeout: the client must not give up.
    kind: "stallShort",
    weight: 2,
    scope: "link",
    start({ client, random }) {
      client.proxy.stall();
      return {
        fault: { heal: () => client.proxy.release() },
        forMs: timeouts(random, 0.2, 0.6),
      };
    },
  },
  {
    // Stalls past the read timeout: the client gives up and reconnects on a
    // new link; the old one delivers what it held when released, late.
    kind: "stallLong",
    weight: 2,
    scope: "link",
    start({ client, random }) {
      client.proxy.stall();
      return {
        fault: { heal: () => client.proxy.release() },
        forMs: timeouts(random, 1.5, 2.5),
      };
    },
  },
  {
    // A half-dead link: bytes are lost both ways, nothing closes.
    kind: "silence",
    weight: 2,
    scope: "link",
    start({ client, random }) {
      client.proxy.silence();
      return {
        fault: { heal: () => client.proxy.dropSilent() },
        forMs: timeouts(random, 0.5, 2),
      };
    },
  },
  {
    kind: "refuse",
    weight: 2,
    scope: "link",
    start({ client, random }) {
      client.proxy.mode = "refuse";
      client.proxy.dropAll();
      return {
        fault: { heal: () => void (client.proxy.mode = "forward") },
        forMs: timeouts(random, 0.1, 0.8),
      };
    },
  },
  {
    kind: "slices",
    weight: 2,
    scope: "link",
    start({ client, random }) {
      client.proxy.slices = 1 + random.int(16);
      return {
        fault: { heal: () => void (client.proxy.slices = undefined) },
        forMs: timeouts(random, 0.2, 1.5),
      };
    },
  },
  {
    kind: "bandwidth",
    weight: 2,
    scope: "link",
    start({ client, random }) {
      // 25–200 KB/s both ways.
      client.proxy.throttle = {
        bytes: 512 * (1 + random.int(8)),
        everyMs: 20,
        both: true,
      };
      return {
        fault: { heal: () => void (client.proxy.throttle = undefined) },
        forMs: timeouts(random, 0.3, 2),
      };
    },
  },
  {
    kind: "pause",
    weight: 3,
    scope: "session",
    start({ client, random }) {
      client.realm.syncSession.pause();
      return {
        fault: { heal: () => client.realm.syncSession.resume() },
        forMs: timeouts(random, 0.05, 1.5),
      };
    },
  },
  {
    kind: "reconnect",
    weight: 2,
    scope: "session",
    start({ client }) {
      client.app.reconnect();
      return { fault: { heal() {} }, forMs: 0 };
    },
  },
  {
    kind: "kill",
    weight: 1,
    scope: "server",
    start({ killServer, random }) {
      const done = killServer(timeouts(random, 0, 0.5));
      return { fault: { heal: () => done }, forMs: 0 };
    },
  },
  {
    kind: "restore",
    weight: 1,
    scope: "store",
    start({ backupServer, random }) {
      const backup = backupServer(timeouts(random, 0, 0.5));
      let restored: Promise<void> | undefined;
      return {
        // Healing restores the copy: once, when the fault's time is up (or
        // at quiescence). The restore is queued when healing, even while
        // the copy still waits its turn: queued only once the copy is
        // taken, it could start after quiescence stopped waiting for the
        // server's operations, and the checks would then read a server
        // the clients have not yet reset against.
        fault: { heal: () => restored ??= backup.restore() },
        forMs: timeouts(random, 1, 4),
      };
    },
  },
  {
    kind: "rejected",
    weight: 2,
    scope: "write",
    start({ poisonNextWrite }) {
      poisonNextWrite();
      return { fault: { heal() {} }, forMs: 0 };
    },
  },
];

// ----- the model of what the final state must hold -----

/** One write's effect on one object, as issued. */
interface Effect {
  write: number;
  client: number;
  op: "put" | "update" | "delete";
  /** The contended field's value, when it set one. */
  c?: number;
}

/** Builds each write's instructions and remembers what they were. */
class Model {
  /** Own objects: exactly what the owner's last writes make of them. */
  readonly own = new Map<string, Record<string, unknown> | null>();
  /** Effects on tallies and shared objects, by `type/id`. */
  readonly effects = new Map<string, Effect[]>();
  /** Every write that set a field `w<i>` on an object, by `type/id`. */
  readonly unique = new Map<string, Set<number>>();

  note(key: string, effect: Effect): void {
    let list = this.effects.get(key);
    if (list === undefined) this.effects.set(key, list = []);
    list.push(effect);
    if (effect.op !== "delete") {
      let set = this.unique.get(key);
      if (set === undefined) this.unique.set(key, set = new Set());
      set.add(effect.write);
    }
  }
}

/** The instructions of one write, chosen before it runs. */
type Plan =
  | { kind: "own"; op: "create" | "put" | "update" | "delete"; id: string }
  | { kind: "tally"; id: string }
  | { kind: "shared"; id: string; draw: number };

/**
 * Chooses the instructions of one write. A poisoned write (one the server
 * refuses) neither creates nor deletes anything: once refused, its objects
 * are back to the server's values, and the owner's later plans (which
 * trust `client.own`) must still find them as they were.
 */
function planOps(random: Prng, client: SoakClient, poison: boolean): Plan[] {
  const plans: Plan[] = [];
  const count = random.next() < 0.2 ? 2 + random.int(2) : 1;
  const used = new Set<string>();
  for (let n = 0; n < count; n++) {
    const roll = random.next();
    let plan: Plan;
    if (roll < 0.4 && poison) {
      const live = [...client.own];
      if (live.length === 0) {
        plan = { kind: "tally", id: `t${random.int(TALLIES)}` };
      } else {
        const id = random.pick(live);
        plan = {
          kind: "own",
          op: random.next() < 0.8 ? "update" : "put",
          id,
        };
      }
    } else if (roll < 0.4) {
      // An object this write already touched is skipped below.
      const live = [...client.own];
      if (live.length === 0 || random.next() < 0.2) {
        plan = {
          kind: "own",
          op: "create",
          id: `c${client.index}-${client.nextOwn++}`,
        };
      } else {
        const id = random.pick(live);
        const op = random.next();
        plan = {
          kind: "own",
          op: op < 0.7 ? "update" : op < 0.85 ? "put" : "delete",
          id,
        };
      }
    } else if (roll < 0.65) {
      plan = { kind: "tally", id: `t${random.int(TALLIES)}` };
    } else {
      plan = {
        kind: "shared",
        id: `s${random.int(SHARED)}`,
        // A draw of 0.75 or more deletes an existing object (`makeWrite`).
        draw: random.next() * (poison ? 0.75 : 1),
      };
    }
    const key = `${plan.kind}/${plan.id}`;
    if (used.has(key)) continue;
    used.add(key);
    plans.push(plan);
    // Keep the owner's view current for the next plan of this write.
    if (plan.kind === "own") {
      if (plan.op === "delete") client.own.delete(plan.id);
      else client.own.add(plan.id);
    }
  }
  return plans;
}

// ----- one schedule -----

/** A receipt and how its wait ended. */
interface Tracked {
  write: number;
  client: number;
  clientVersion: number;
  /** Whether the server must refuse it. */
  poison: boolean;
  outcome: "pending" | "acknowledged" | { error: unknown };
  settled: Promise<void>;
}

/** Runs one schedule; see the file comment. Never throws for a failed check. */
export async function runSchedule(
  options: ScheduleOptions,
): Promise<ScheduleResult> {
  const started = performance.now();
  const random = new Prng(options.seed);
  const log = options.log ?? (() => {});
  const meanGapMs = options.meanGapMs ?? 8;
  const faultChance = options.faultChance ?? 0.03;
  const quiesceMs = options.quiesceMs ?? 60_000;
  const faults = Object.fromEntries(
    FAULT_KINDS.map((kind) => [kind, 0]),
  ) as Record<FaultKind, number>;
  const problems: string[] = [];
  const result: ScheduleResult = {
    seed: options.seed,
    writes: 0,
    changesets: 0,
    kills: 0,
    restores: 0,
    resets: 0,
    rejected: 0,
    faults,
    lost: 0,
    duplicated: 0,
    replicasEqual: false,
    unsettled: 0,
    problems,
    durationMs: 0,
  };

  const directory = await Deno.makeTempDir({ prefix: "tether-soak-" });
  const kvPath = `${directory}/server.kv`;
  const lifetime = new AbortController();
  const clients: SoakClient[] = [];
  const proxies: TcpProxy[] = [];
  const apps: App[] = [];
  /** Timers that end faults; cleared when quiescence heals them all. */
  const timers = new Set<ReturnType<typeof setTimeout>>();
  /** Writes of bursts still committing, awaited before quiescence. */
  const committing = new Set<Promise<void>>();
  const active = new Map<string, { fault: ActiveFault }>();
  const tracked: Tracked[] = [];
  let server: ServerProcess | undefined;
  /**
   * The operations on the server process (kill, copy, restore); quiescence
   * waits until it is idle (so a failure ends the schedule).
   */
  const servers = new ServerQueue();
  const onServer = <T>(operation: () => Promise<T>): Promise<T> =>
    servers.run(operation);
  /** Writes to poison ("rejected" faults drawn, not yet made). */
  let poisonQueued = 0;
  /** Whether the schedule's writes are still being made. */
  let writing = true;
  let copies = 0;
  try {
    server = await ServerProcess.start(kvPath);
    for (let index = 0; index < CLIENTS; index++) {
      const proxy = new TcpProxy(server.addr);
      proxies.push(proxy);
      const app = new App(
        appOptions(proxy.url, (line) => log(`  client ${index}: ${line}`)),
      );
      apps.push(app);
      using bound = deadline(quiesceMs);
      const realm = await openClientRealm(app, bound.signal);
      clients.push({ index, app, proxy, realm, own: new Set(), nextOwn: 0 });
    }

    const model = new Model();
    // The tallies exist everywhere before anyone updates them.
    const setup = await clients[0]!.realm.write((tx) => {
      for (let t = 0; t < TALLIES; t++) tx.put("Tally", `t${t}`, { init: 0 });
    });
    result.changesets++;
    {
      using bound = deadline(quiesceMs);
      await setup.waitForUpload({ signal: bound.signal });
      for (const client of clients) {
        await client.realm.syncSession.waitForDownload({
          signal: bound.signal,
        });
      }
    }

    /** SIGKILLs the server, runs `between`, starts it again on `kvPath`. */
    const restartServer = async (
      downMs: number,
      between: () => Promise<void>,
    ): Promise<void> => {
      const old = server!;
      server = undefined;
      // Down, the server refuses every connection: its port, once free, can
      // be taken by another process's server (another test on a busy
      // machine), which would refuse the clients' tokens as badly signed
      // and log them out for good.
      for (const proxy of proxies) proxy.retarget(NOWHERE);
      await old.kill();
      await between();
      await sleep(downMs);
      server = await ServerProcess.start(kvPath);
      log(`  the server is back at version ${server.startHead}`);
      for (const proxy of proxies) proxy.retarget(server.addr);
    };
    const killServer = (downMs: number) =>
      onServer(async () => {
        result.kills++;
        log(`  kill (down ${downMs} ms)`);
        await restartServer(downMs, async () => {});
      });
    // The copy is taken while the server is down after a SIGKILL: the
    // store as a crash leaves it, which is what a file-system snapshot of
    // a running server holds too.
    const backupServer = (downMs: number) => {
      /** What the copy is, once taken. */
      let copied:
        | { copy: string; copyHead: number; after: number }
        | undefined;
      const taken = onServer(async () => {
        const copy = `${directory}/copy-${++copies}/server.kv`;
        log(`  copy ${copies} of the store (down ${downMs} ms)`);
        await Deno.mkdir(`${directory}/copy-${copies}`);
        // Writes from here on are not in the copy.
        const after = result.writes;
        await restartServer(downMs, () => copyStore(kvPath, copy));
        copied = { copy, copyHead: server!.startHead, after };
      });
      // Queued after the copy, so it runs once the copy is taken (and not
      // at all if taking it failed: a failed operation fails those after).
      const restore = () =>
        onServer(async () => {
          const { copy, copyHead, after } = copied!;
          // A copy holding everything the clients know of makes the
          // restore a mere restart. Wait (bounded) until some write the
          // copy lacks is acknowledged: its writer's upload cursor is
          // then ahead of the copy, so at least that client must reset.
          // (No write may follow the copy when it was taken at the end.)
          for (
            let wait = 0;
            wait < ACK_POLLS && (writing || result.writes > after) &&
            !tracked.some((item) =>
              item.write >= after && item.outcome === "acknowledged"
            );
            wait++
          ) await sleep(ACK_POLL_MS);
          result.restores++;
          log(`  restore of copy ${copy} (version ${copyHead})`);
          await restartServer(downMs, () => copyStore(copy, kvPath));
        });
      return { taken, restore };
    };

    const startFault = (definition: FaultDefinition, client: SoakClient) => {
      const key = definition.scope === "server" || definition.scope === "store"
        ? definition.scope
        : `${definition.scope}/${client.index}`;
      if (active.has(key)) return;
      // A refused write counts once it is made (one drawn last never is).
      if (definition.kind !== "rejected") faults[definition.kind]++;
      const { fault, forMs } = definition.start({
        random,
        client,
        killServer,
        backupServer,
        poisonNextWrite: () => void poisonQueued++,
      });
      if (definition.scope === "server") {
        // Over once the server is back; healing waits for that.
        active.set(key, { fault });
        void servers.queued().finally(() => active.delete(key)).catch(() => {});
        return;
      }
      if (forMs === 0) return;
      const timer = setTimeout(() => {
        timers.delete(timer);
        active.delete(key);
        // A failure shows in `servers`, which quiescence waits for.
        void Promise.resolve(fault.heal()).catch(() => {});
      }, forMs);
      timers.add(timer);
      active.set(key, { fault });
    };

    const totalWeight = FAULTS.reduce((sum, fault) => sum + fault.weight, 0);
    const drawFault = (): FaultDefinition => {
      let roll = random.next() * totalWeight;
      for (const fault of FAULTS) {
        roll -= fault.weight;
        if (roll < 0) return fault;
      }
      return FAULTS.at(-1)!;
    };
    /** `count` write numbers spread over [from, to) of the schedule. */
    const forced = (count: number, from: number, to: number) => {
      const writes = new Set<number>();
      for (let k = 0; k < count; k++) {
        writes.add(
          Math.floor(
            options.writes * (from + (to - from) * (k + random.next()) / count),
          ),
        );
      }
      return writes;
    };
    const forcedKills = forced(options.minKills ?? 0, 0.2, 0.8);
    const forcedRestores = forced(options.minRestores ?? 0, 0.1, 0.5);
    const forcedRejected = forced(options.minRejected ?? 0, 0.1, 0.9);
    const definition = (kind: FaultKind) =>
      FAULTS.find((fault) => fault.kind === kind)!;

    // ----- the writes, with faults in between -----
    for (let write = 0; write < options.writes; write++) {
      const client = clients[random.int(CLIENTS)]!;
      if (forcedRejected.has(write)) poisonQueued++;
      const poison = poisonQueued > 0;
      if (poison) {
        poisonQueued--;
        faults.rejected++;
      }
      const plans = planOps(random, client, poison);
      if (poison) {
        log(
          `  write ${write} by client ${client.index} is poisoned: ${
            plans.map((plan) => `${plan.kind} ${plan.id}`).join(", ")
          }`,
        );
      }
      const burst = random.next() < 0.1;
      const receipt = makeWrite(client, plans, write, model, poison);
      result.writes++;
      const track = (receipt: WriteReceipt) => {
        if (receipt.clientVersion === 0) {
          problems.push(`write ${write} changed nothing`);
          return;
        }
        if (poison) result.rejected++;
        else result.changesets++;
        const item: Tracked = {
          write,
          client: client.index,
          clientVersion: receipt.clientVersion,
          poison,
          outcome: "pending",
          settled: Promise.resolve(),
        };
        item.settled = receipt.waitForUpload({ signal: lifetime.signal }).then(
          () => void (item.outcome = "acknowledged"),
          (error) => void (item.outcome = { error }),
        );
        tracked.push(item);
      };
      if (burst) {
        // Not awaited: the next writes start before this one commits.
        const pending = receipt.then(track);
        committing.add(pending);
      } else {
        track(await receipt);
      }
      if (forcedRestores.has(write) && !active.has("store")) {
        startFault(definition("restore"), client);
        // The writes wait for the copy (queued last), so that most of them
        // follow it.
        await servers.queued();
      } else if (forcedKills.has(write) && !active.has("server")) {
        startFault(definition("kill"), client);
      } else if (random.next() < faultChance) {
        const drawn = drawFault();
        // A copy taken this late would hold nearly every write: restoring
        // it would test little, so late restores are not started.
        if (drawn.kind !== "restore" || write < options.writes * 0.85) {
          startFault(drawn, clients[random.int(CLIENTS)]!);
        }
      }
      if (!burst && random.next() < 0.5) {
        await sleep(Math.round(random.next() * 4 * meanGapMs));
      }
    }
    await Promise.all(committing);
    writing = false;

    // ----- quiescence -----
    log(`  quiescence`);
    for (const timer of timers) clearTimeout(timer);
    timers.clear();
    // A copy still waiting is restored last, once the links are whole
    // again: the restore waits for a write past the copy to be acknowledged.
    const copy = active.get("store");
    active.delete("store");
    for (const [, entry] of active) await entry.fault.heal();
    active.clear();
    for (const client of clients) {
      client.proxy.release();
      client.proxy.dropSilent();
      client.proxy.mode = "forward";
      client.proxy.slices = undefined;
      client.proxy.throttle = undefined;
      client.realm.syncSession.resume();
    }
    await copy?.fault.heal();
    await servers.idle();
    log(`  quiescence: server operations over`);
    using quiescence = deadline(quiesceMs);
    const bound = quiescence.signal;
    const quiet = new Promise<void>((resolve) =>
      bound.addEventListener("abort", () => resolve(), { once: true })
    );
    await Promise.race([
      Promise.all(tracked.map((item) => item.settled)),
      quiet,
    ]);
    lifetime.abort(new Error("quiescence bound passed"));
    await Promise.all(tracked.map((item) => item.settled));
    for (const item of tracked) {
      const wrong = wrongOutcome(item);
      if (wrong === undefined) continue;
      result.unsettled++;
      if (result.unsettled <= 5) {
        problems.push(
          `receipt of ${
            item.poison ? "poisoned " : ""
          }write ${item.write} (client ${item.client}, version ${item.clientVersion}) ${wrong}`,
        );
      }
    }
    if (result.unsettled > 5) {
      problems.push(`… ${result.unsettled} receipts unsettled in all`);
    }
    if (!bound.aborted) {
      try {
        const rounds = await settleSessions(
          clients.map((client) => client.realm.syncSession),
          bound,
        );
        log(`  quiescence: settled in ${rounds} rounds`);
      } catch (error) {
        problems.push(`quiescence did not settle: ${describe(error)}`);
      }
    }

    // ----- the checks -----
    for (const client of clients) {
      const session = client.realm.syncSession;
      result.resets += session.stats().clientResets;
      // A rejected write or a reset must leave the session active.
      if (session.state !== "active") {
        problems.push(`client ${client.index}'s session is ${session.state}`);
      }
    }
    if (result.restores === 0 && result.resets > 0) {
      problems.push(`${result.resets} client resets without a restore`);
    }
    log(`  checks`);
    const fresh = new App(appOptions(`http://127.0.0.1:${server!.addr.port}`));
    apps.push(fresh);
    let reference: Realm | undefined;
    try {
      reference = await openClientRealm(fresh, bound);
    } catch (error) {
      problems.push(`a fresh client could not bootstrap: ${describe(error)}`);
    }
    const realms = clients.map((client) => client.realm);
    if (reference !== undefined) {
      const expected = snapshot(reference);
      result.replicasEqual = true;
      for (const [index, realm] of realms.entries()) {
        const difference = firstDifference(snapshot(realm), expected);
        if (difference === undefined) continue;
        result.replicasEqual = false;
        problems.push(
          `client ${index} differs from a fresh client: ${difference}`,
        );
      }
      result.lost = checkModel(reference, model, problems);
    }
    const stats = await server!.stats();
    const history = await server!.history();
    result.duplicated = history.repeated;
    if (history.repeated > 0) {
      problems.push(
        `the server's history stores ${history.repeated} uploads again (same client identity and version)`,
      );
    }
    if (history.poisoned > 0) {
      problems.push(
        `the server's history stores ${history.poisoned} changesets it had to refuse`,
      );
    }
    // After a restore, the history holds the copy's changesets plus what
    // each client re-uploaded (`recoverAll` uploads what its copy holds
    // that the server lacks, so two clients holding the same write both
    // upload it): its length says nothing then. Without one, it holds
    // exactly the clients' stored writes, once each.
    if (result.restores === 0) {
      result.duplicated += Math.max(0, stats.head - result.changesets);
      if (stats.head !== result.changesets) {
        problems.push(
          `the server's history holds ${stats.head} changesets, the clients made ${result.changesets} it must store`,
        );
      }
    }
    if (stats.integrated !== stats.head - server!.startHead) {
      problems.push(
        `the last server process integrated ${stats.integrated} changesets, its history grew by ${
          stats.head - server!.startHead
        }`,
      );
    }
  } catch (error) {
    problems.push(`schedule failed: ${describe(error)}`);
  } finally {
    lifetime.abort(new Error("schedule over"));
    for (const timer of timers) clearTimeout(timer);
    await Promise.allSettled(committing);
    await Promise.allSettled(tracked.map((item) => item.settled));
    await servers.idle().catch(() => {});
    for (const app of apps) await app.close();
    for (const proxy of proxies) await proxy[Symbol.asyncDispose]();
    if (server !== undefined) {
      try {
        await server.stop();
      } catch (error) {
        problems.push(`the server did not stop cleanly: ${describe(error)}`);
      }
      const stderr = (await server.stderr()).trim();
      if (stderr !== "") {
        problems.push(`server stderr: ${stderr.slice(0, 2000)}`);
      }
    }
    await Deno.remove(directory, { recursive: true });
  }
  result.durationMs = Math.round(performance.now() - started);
  return result;
}

/** What {@linkcode settleSessions} needs of a session. */
export type SettlingSession = Pick<
  SyncSession,
  "waitForUpload" | "waitForDownload" | "stats"
>;

/** Bound of the rounds of {@linkcode settleSessions}. */
const SETTLE_ROUNDS = 5;

/**
 * Waits until the server holds every client's writes and every client
 * holds the server's state: a round waits for each session's uploads, then
 * for each one's download, and rounds repeat until one sees no client
 * reset. A client meets a restored server first during its download wait,
 * after the upload waits are over: it resets then and only then uploads
 * what the server lost (`recoverAll`), which no earlier wait covers. Its
 * download wait ends after its reset (the reply to the MARK after the
 * reset's bind), so a round with no reset leaves none half done. Resolves
 * with the rounds it took; throws when the waits fail (`signal` bounds
 * them) or clients still reset after {@linkcode SETTLE_ROUNDS} rounds.
 */
export async function settleSessions(
  sessions: readonly SettlingSession[],
  signal: AbortSignal,
): Promise<number> {
  const resets = () =>
    sessions.reduce((sum, session) => sum + session.stats().clientResets, 0);
  for (let round = 1; round <= SETTLE_ROUNDS; round++) {
    const before = resets();
    for (const session of sessions) await session.waitForUpload({ signal });
    for (const session of sessions) await session.waitForDownload({ signal });
    if (resets() === before) return round;
  }
  throw new Error(
    `clients still reset after ${SETTLE_ROUNDS} rounds of upload and download waits`,
  );
}

/**
 * Starts one write of `plans` on `client` and records its effects — unless
 * it is poisoned: then every instruction also sets {@linkcode POISON_FIELD},
 * the server refuses it whole, and the model records nothing (its effects
 * must be found nowhere).
 */
function makeWrite(
  client: SoakClient,
  plans: readonly Plan[],
  write: number,
  model: Model,
  poison: boolean,
): Promise<WriteReceipt> {
  const field = `w${write}`;
  const realm = client.realm;
  if (poison) model = new Model();
  const marked = (fields: Record<string, number>) =>
    poison ? { ...fields, [POISON_FIELD]: write } : fields;
  return realm.write((tx) => {
    for (const plan of plans) {
      if (plan.kind === "own") {
        const key = `Own/${plan.id}`;
        const current = model.own.get(key) ?? null;
        if (plan.op === "delete") {
          tx.delete("Own", plan.id);
          model.own.set(key, null);
        } else if (plan.op === "update") {
          const fields = { [field]: write };
          tx.update("Own", plan.id, marked(fields));
          model.own.set(key, { ...current, ...fields });
        } else {
          const fields = { [field]: write, by: client.index };
          tx.put("Own", plan.id, marked(fields));
          model.own.set(key, fields);
        }
      } else if (plan.kind === "tally") {
        tx.update("Tally", plan.id, marked({ [field]: write, c: write }));
        model.note(`Tally/${plan.id}`, {
          write,
          client: client.index,
          op: "update",
          c: write,
        });
      } else {
        // Whether it exists here and now decides between put and update.
        const exists = realm.get("Shared", plan.id) !== undefined;
        const op = !exists
          ? "put"
          : plan.draw < 0.5
          ? "update"
          : plan.draw < 0.75
          ? "put"
          : "delete";
        if (op === "delete") tx.delete("Shared", plan.id);
        else if (op === "update") {
          tx.update("Shared", plan.id, marked({ [field]: write, c: write }));
        } else tx.put("Shared", plan.id, marked({ [field]: write, c: write }));
        model.note(`Shared/${plan.id}`, {
          write,
          client: client.index,
          op,
          ...(op === "delete" ? {} : { c: write }),
        });
      }
    }
  });
}

/**
 * Checks the final state (of a fresh client) against what was written;
 * returns how many writes' effects are missing and adds a line per problem.
 *
 * - Own objects (one writer each, whose stamps only grow): exactly the
 *   owner's writes applied in order.
 * - Tallies (only updated): every `w<i>` ever written to it, and `c` from
 *   some client's last update of it (the newest stamp wins, and each
 *   client's own updates are in stamp order).
 * - Shared objects (put, update, delete by everyone): only values some
 *   write of that object set, and alive only if some write put it.
 *
 * Refused (poisoned) writes are not in the model: a field, value or object
 * only they set is reported as never written.
 *
 * The same checks hold across a restore of an older copy, because every
 * client resets with `recoverAll`. A write acknowledged after the copy was
 * taken is gone from the restored server, but its writer's copy still holds
 * its effect — or the effect of a later write with a newer stamp that
 * replaced it, which last-writer-wins would have kept anyway ("legitimately
 * superseded": the final state is the join of the same stamped writes, so
 * it is what it would have been without the restore). Each client that
 * resets re-uploads, with their original stamps, its unacknowledged writes
 * and every field, put and delete its copy holds newer than the restored
 * server's, so the server ends with the join of everything any client
 * held. What the invariant needs: the writers are still there (the soak's
 * clients never leave; a write acknowledged after the copy whose only
 * holder is gone is lost, docs/RELIABILITY.md), and every client holding
 * something the copy lacks detects the restore and resets — by its cursors,
 * or, for a reader whose cursor only looks continuous because others wrote
 * past it after the restore, by the salt of its cursor's version
 * (docs/SERVER.md "A client the server cannot continue"). Its receipts
 * stay as they were: an acknowledged one stays resolved, a pending one
 * resolves once its recovered upload is stored. "Integrated twice" keeps
 * its meaning — one upload (client identity, client version) stored twice —
 * but several clients re-uploading the same lost write under their new
 * identities is not that: it is stored once per uploader, with the same
 * stamp and values, which changes nothing.
 */
function checkModel(realm: Realm, model: Model, problems: string[]): number {
  const lost = new Set<number>();
  const report = (line: string) => {
    if (problems.length < 40) problems.push(line);
  };
  const actualOwn = new Map(
    realm.objects("Own").map((object) => [`Own/${object.id}`, object.fields]),
  );
  for (const [key, expected] of model.own) {
    const actual = actualOwn.get(key);
    actualOwn.delete(key);
    if (expected === null) {
      if (actual !== undefined) report(`${key} is alive after its delete`);
      continue;
    }
    for (const [name, value] of Object.entries(expected)) {
      if (actual?.[name] === value) continue;
      if (name.startsWith("w")) lost.add(value as number);
      report(
        `${key}.${name}: expected ${value}, found ${
          actual === undefined ? "no object" : actual[name]
        }`,
      );
    }
    for (const name of Object.keys(actual ?? {})) {
      if (!(name in expected)) report(`${key}.${name} should not be there`);
    }
  }
  for (const key of actualOwn.keys()) report(`${key} was never written`);

  for (const object of realm.objects("Tally")) {
    const key = `Tally/${object.id}`;
    const effects = model.effects.get(key) ?? [];
    for (const effect of effects) {
      if (object.fields[`w${effect.write}`] === effect.write) continue;
      lost.add(effect.write);
      report(`${key}.w${effect.write} is missing`);
    }
    const last = new Map<number, number>();
    for (const effect of effects) last.set(effect.client, effect.c!);
    const c = object.fields.c;
    if (
      last.size === 0
        ? c !== undefined
        : ![...last.values()].includes(c as number)
    ) {
      report(
        `${key}.c is ${c}, no client's last update (${[...last.values()]})`,
      );
    }
    for (const name of Object.keys(object.fields)) {
      if (name === "init" || name === "c") continue;
      if (!model.unique.get(key)?.has(Number(name.slice(1)))) {
        report(`${key}.${name} was never written`);
      }
    }
  }
  if (realm.objects("Tally").length !== TALLIES) {
    report(`${realm.objects("Tally").length} tallies, not ${TALLIES}`);
  }

  for (const object of realm.objects("Shared")) {
    const key = `Shared/${object.id}`;
    const effects = model.effects.get(key) ?? [];
    if (!effects.some((effect) => effect.op === "put")) {
      report(`${key} is alive but was never put`);
    }
    const writes = model.unique.get(key) ?? new Set();
    for (const [name, value] of Object.entries(object.fields)) {
      const ok = name === "c"
        ? effects.some((effect) => effect.c === value)
        : writes.has(Number(name.slice(1))) && value === Number(name.slice(1));
      if (!ok) report(`${key}.${name} = ${value} was never written`);
    }
  }
  return lost.size;
}

/** Every object of every type, by `type/id`, fields in name order. */
function snapshot(realm: Realm): Map<string, string> {
  const objects = new Map<string, string>();
  for (const type of ["Own", "Tally", "Shared"]) {
    for (const object of realm.objects(type)) {
      const fields = Object.entries(object.fields).sort(([a], [b]) =>
        a < b ? -1 : a > b ? 1 : 0
      );
      objects.set(`${type}/${object.id}`, JSON.stringify(fields));
    }
  }
  return objects;
}

/** The first object two snapshots disagree on, described; or undefined. */
function firstDifference(
  actual: Map<string, string>,
  expected: Map<string, string>,
): string | undefined {
  for (const [key, value] of expected) {
    if (actual.get(key) !== value) {
      return `${key} is ${actual.get(key) ?? "missing"}, expected ${value}`;
    }
  }
  for (const key of actual.keys()) {
    if (!expected.has(key)) return `${key} should not exist`;
  }
  return undefined;
}

/**
 * What is wrong with how a receipt settled, or undefined: an ordinary
 * write's must resolve; a poisoned write's must reject with `write_rejected`
 * whose cause carries the server's code, `validation_failed`.
 */
function wrongOutcome(item: Tracked): string | undefined {
  const { outcome } = item;
  if (outcome === "pending") return "never settled";
  if (!item.poison) {
    return outcome === "acknowledged"
      ? undefined
      : `rejected: ${describe(outcome.error)}`;
  }
  if (outcome === "acknowledged") return "was acknowledged";
  const { error } = outcome;
  if (
    error instanceof SyncError && error.code === "write_rejected" &&
    error.cause instanceof SyncError && error.cause.code === "validation_failed"
  ) return undefined;
  return `rejected with ${describe(error)} (cause: ${
    error instanceof Error ? describe(error.cause) : "none"
  }), not write_rejected (validation_failed)`;
}

/**
 * Copies a KV file with the `-wal` and `-shm` files Deno KV (SQLite) keeps
 * beside it to `to`, replacing what was there (a file the source lacks is
 * removed from the destination). Only while no process has either open.
 */
async function copyStore(from: string, to: string): Promise<void> {
  for (const suffix of ["", "-wal", "-shm"]) {
    await Deno.remove(`${to}${suffix}`).catch((error) => {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
    });
    await Deno.copyFile(`${from}${suffix}`, `${to}${suffix}`).catch(
      (error) => {
        if (!(error instanceof Deno.errors.NotFound)) throw error;
      },
    );
  }
}

function describe(error: unknown): string {
  if (error instanceof Error) {
    const code = (error as { code?: unknown }).code;
    return `${error.name}${
      code === undefined ? "" : ` ${code}`
    }: ${error.message}`;
  }
  return String(error);
}

/**
 * A bound for waits that is cleared on dispose: a timeout signal with a
 * listener would keep the process alive until it fires.
 */
function deadline(ms: number): AbortController & Disposable {
  const controller = new AbortController();
  const timer = setTimeout(
    () => controller.abort(new Error(`bound of ${ms} ms passed`)),
    ms,
  );
  return Object.assign(controller, {
    [Symbol.dispose]: () => clearTimeout(timer),
  });
}

/** A delay that only shapes the schedule (always short, never cancelled). */
function sleep(ms: number): Promise<void> {
  if (ms <= 0) return Promise.resolve();
  return new Promise((resolve) => setTimeout(resolve, ms));
}
