/**
 * The server's own work to fan one commit out to `--sessions` (50) sessions,
 * without sockets: a real `RealmHub` on a `MemoryKv`, real `Session`s and
 * `FrameWriter`s, and sockets that only count what they are given. Per
 * block of `--rounds` single-field commits, the process's CPU time per
 * commit with the sessions bound, less the same with none (the commit
 * alone), per session: the share of a fan-out round the server's code
 * spends per session, apart from Deno's WebSocket and the kernel (which
 * `fanout_server_cpu.ts` includes).
 *
 * `--base <dir>` loads the server of another checkout too (e.g. the branch
 * point unpacked with `git archive <commit> | tar -x -C <dir>`); the
 * checkouts' blocks alternate (`--pairs`, which one goes first
 * alternating too) in this one process.
 *
 * ```sh
 * deno run -A bench/fanout_server_micro.ts [--pairs 10] [--rounds 2000] [--base /tmp/base]
 * ```
 *
 * @module
 */
import process from "node:process";
import type { ServerMessage } from "../src/protocol/messages.ts";
import { update, upload } from "../tests/_helpers/changesets.ts";
import { option, printPairs } from "./_ab.ts";
import { sessionSettings } from "../tests/server/_session_settings.ts";

const SESSIONS = Number(option("--sessions") ?? 50);
const ROUNDS = Number(option("--rounds") ?? 2000);
const PAIRS = Number(option("--pairs") ?? 10);
const WARMUP_ROUNDS = 2000;
const ID = "00000000-0000-4000-8000-000000000000";

/** A checkout's realm with a writer identity and `count` bound sessions. */
interface Setup {
  label: string;
  /** Commits value `i`; resolves once the sessions were handed it. */
  commit(i: number): Promise<unknown>;
  /** Frames the sessions' sockets were given. */
  frames(): number;
  close(): Promise<void>;
}

/** A socket that takes frames and counts them. */
class CountingSocket {
  readyState: number = WebSocket.OPEN;
  bufferedAmount = 0;
  frames = 0;
  send(_data: Uint8Array): void {
    this.frames++;
  }
}

async function setup(label: string, root: URL, count: number): Promise<Setup> {
  const src = (path: string) =>
    import(new URL(`src/server/${path}`, root).href);
  const [{ RealmHub }, { Session }, { FrameWriter }, { MemoryKv }, ids] =
    await Promise.all([
      src("realm_hub.ts"),
      src("session.ts"),
      src("frame_writer.ts"),
      src("storage/memory_kv.ts"),
      src("storage/identities.ts"),
    ]);
  const kv = new MemoryKv();
  const lifetime = new AbortController();
  const retry = { signal: lifetime.signal };
  const hub = new RealmHub("/bench", {
    kv,
    watchHeads: false,
    retry,
    log: () => {},
    onIntegrated: () => {},
    snapshots: { enabled: false, noteHead() {} },
  });
  const writer = await ids.allocateIdentity(kv, "/bench", retry);
  await hub.integrate(
    writer,
    [upload(1, [update("Item", ID, { n: 0 })])],
    lifetime.signal,
  );
  const sockets: CountingSocket[] = [];
  const sessions: { start(): void; close?(): void }[] = [];
  for (let k = 0; k < count; k++) {
    const socket = new CountingSocket();
    const output = new FrameWriter(socket as unknown as WebSocket, {
      compression: true,
      isFast: () => true,
      onWritten: () => {},
      track: () => {},
    });
    const identity = await ids.allocateIdentity(kv, "/bench", retry);
    const session = new Session({
      id: 1,
      path: "/bench",
      userId: "u",
      identity,
      permission: "readwrite",
      hub,
      transport: {
        send: (message: ServerMessage) => output.send(message),
        bufferedAmount: () => output.pendingBytes(),
        buffersMoreThan: (limit: number) =>
          output.buffersMoreThan?.(limit) ?? output.pendingBytes() > limit,
        batchBytes: () => 64 * 1024,
        failSession: () => {},
      },
      downloadCursor: 1,
      cursorBytes: hub.head.bytes,
      cursorSalt: 0,
      lastIntegratedClientVersion: 0,
      protocolVersion: 3,
      ...sessionSettings(lifetime.signal),
    });
    session.start();
    sockets.push(socket);
    sessions.push(session);
  }
  // Each session's first DOWNLOAD leaves in a run of its pump.
  for (let turn = 0; turn < 100; turn++) {
    if (sockets.every((socket) => socket.frames > 0)) break;
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
  if (!sockets.every((socket) => socket.frames > 0)) {
    throw new Error(`${label}: a session sent no first DOWNLOAD`);
  }
  let clientVersion = 1;
  return {
    label,
    commit: (i) =>
      hub.integrate(
        writer,
        [upload(++clientVersion, [update("Item", ID, { n: i })])],
        lifetime.signal,
      ),
    frames: () => sockets.reduce((sum, socket) => sum + socket.frames, 0),
    close: async () => {
      lifetime.abort();
      await hub.close();
      kv.close();
    },
  };
}

function cpuMicros(): number {
  const { user, system } = process.cpuUsage();
  return user + system;
}

/** CPU µs per commit over `ROUNDS` commits. */
async function block(s: Setup, next: { i: number }): Promise<number> {
  const before = cpuMicros();
  for (let r = 0; r < ROUNDS; r++) await s.commit(next.i++);
  return (cpuMicros() - before) / ROUNDS;
}

const roots: [string, URL][] = [["this", new URL("../", import.meta.url)]];
const base = option("--base");
if (base !== undefined) {
  roots.push(["base", new URL(`file://${base.replace(/\/?$/, "/")}`)]);
}
const pairsOf: { full: Setup; alone: Setup; next: { i: number } }[] = [];
for (const [label, root] of roots) {
  pairsOf.push({
    full: await setup(label, root, SESSIONS),
    alone: await setup(label, root, 0),
    next: { i: 1 },
  });
}
try {
  for (const p of pairsOf) {
    for (let r = 0; r < WARMUP_ROUNDS; r++) {
      await p.full.commit(p.next.i++);
      await p.alone.commit(p.next.i++);
    }
  }
  const perSession = new Map<string, number[]>();
  for (let pair = 0; pair < PAIRS; pair++) {
    const order = pair % 2 === 0 ? pairsOf : pairsOf.toReversed();
    const row: string[] = [];
    for (const p of order) {
      const framesBefore = p.full.frames();
      const full = await block(p.full, p.next);
      const alone = await block(p.alone, p.next);
      const frames = (p.full.frames() - framesBefore) / ROUNDS;
      if (frames !== SESSIONS) {
        throw new Error(`${p.full.label}: ${frames} frames a commit`);
      }
      const each = (full - alone) / SESSIONS;
      const label = p.full.label;
      perSession.set(label, [...perSession.get(label) ?? [], each]);
      row.push(
        `${label} ${full.toFixed(1)} µs/commit with ${SESSIONS} sessions, ${
          alone.toFixed(1)
        } alone: ${each.toFixed(3)} µs/session`,
      );
    }
    console.log(`pair ${pair + 1}: ${row.join(" | ")}`);
  }
  printPairs([["server CPU per session per commit (µs)", perSession]], 3);
} finally {
  for (const p of pairsOf) {
    await p.full.close();
    await p.alone.close();
  }
}
