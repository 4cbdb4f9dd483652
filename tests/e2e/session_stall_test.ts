// A session never dies silently (LESSONS.md row 21): while the server owes a
// session an answer — an UPLOAD not acknowledged, a MARK not answered — and
// nothing for that session arrives within keepalive.responseTimeoutMs, the
// session reports "disconnected" with session_stalled, unbinds and binds
// again, even though the socket (and its PONGs) stays alive. Real server,
// real sockets; the client's time is a FakeClock, the server is stalled
// through its storage (TestKv) or the client's inbound frames are paced
// (PacedWebSocket).

import assert from "node:assert/strict";
import {
  App,
  type AppOptions,
  type ConnectionStateChange,
  Credentials,
  type LogRecord,
  type Realm,
  type SyncSession,
} from "../../mod.ts";
import type { ServeSyncOptions } from "../../server.ts";
import { MessageType } from "../../src/protocol/messages.ts";
import { recordingWebSocket, type SeenFrame } from "../_helpers/e2e.ts";
import { FakeClock } from "../_helpers/fake_clock.ts";
import { pacedWebSocket } from "../_helpers/paced_websocket.ts";
import { flush } from "../_helpers/scripted_app.ts";
import { TestKv } from "../_helpers/test_kv.ts";
import { startTestServer, type TestServer } from "../_helpers/test_server.ts";

const RESPONSE_TIMEOUT_MS = 10_000;
/** How late the watchdog may notice, counting from a send (its drain poll). */
const DRAIN_POLL_MS = 250;

function bounded(): AbortSignal {
  return AbortSignal.timeout(10_000);
}

/**
 * Options with only the response timeout in play: pings, the read timeout,
 * the connect timeout and the linger time are far beyond anything a test
 * advances the clock by.
 */
function stallOptions(
  baseUrl: string,
  clock: FakeClock,
  logs: LogRecord[],
  extra: Partial<AppOptions> = {},
): AppOptions {
  return {
    baseUrl,
    clock,
    random: () => 0.5,
    reconnect: { minDelayMs: 100, maxDelayMs: 1_000 },
    keepalive: {
      pingIntervalMs: 100 * RESPONSE_TIMEOUT_MS,
      readTimeoutMs: 1_000 * RESPONSE_TIMEOUT_MS,
      responseTimeoutMs: RESPONSE_TIMEOUT_MS,
    },
    connectTimeoutMs: 1_000 * RESPONSE_TIMEOUT_MS,
    lingerMs: 1_000 * RESPONSE_TIMEOUT_MS,
    progressIntervalMs: 0,
    logger: (record) => logs.push(record),
    ...extra,
  };
}

/** Every connection state change of a session, and a wait for the next. */
class StateLog implements AsyncDisposable {
  readonly changes: ConnectionStateChange[] = [];
  #controller = new AbortController();
  #watchers = new Set<() => void>();
  #reading: Promise<void>;

  constructor(session: SyncSession) {
    const stream = session.connectionStateChanges({
      signal: this.#controller.signal,
    });
    this.#reading = (async () => {
      for await (const change of stream) {
        this.changes.push(change);
        for (const watcher of [...this.#watchers]) watcher();
      }
    })();
  }

  /** The transitions as `previous→current code`. */
  get lines(): string[] {
    return this.changes.map((change) =>
      `${change.previous}→${change.current}${
        change.error ? ` ${change.error.code}` : ""
      }`
    );
  }

  /** Resolves with the first change from `from` on matching `predicate`. */
  until(
    predicate: (change: ConnectionStateChange) => boolean,
    from = 0,
  ): Promise<ConnectionStateChange> {
    const signal = bounded();
    return new Promise((resolve, reject) => {
      const check = () => {
        const found = this.changes.slice(from).find(predicate);
        if (found === undefined) return false;
        this.#watchers.delete(watcher);
        signal.removeEventListener("abort", onAbort);
        resolve(found);
        return true;
      };
      const watcher = () => void check();
      const onAbort = () => {
        this.#watchers.delete(watcher);
        reject(signal.reason);
      };
      if (check()) return;
      this.#watchers.add(watcher);
      signal.addEventListener("abort", onAbort, { once: true });
    });
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.#controller.abort();
    await this.#reading;
  }
}

/** Settles-flag for a promise, so a test can say it is still pending. */
function track(
  promise: Promise<void>,
): { settled: boolean; done: Promise<void> } {
  const tracked = { settled: false, done: promise };
  tracked.done = promise.finally(() => {
    tracked.settled = true;
  });
  // A failure surfaces where the test awaits `done`, not as unhandled.
  tracked.done.catch(() => {});
  return tracked;
}

/** Matches a realm's head key (any user) in server storage. */
function headOf(realmName: string): (key: Deno.KvKey) => boolean {
  return (key) =>
    key[key.length - 1] === "head" &&
    key.some((part) =>
      typeof part === "string" && part.endsWith(`/${realmName}`)
    );
}

/**
 * Moves the clock to just before the response timeout of a request sent at
 * `sentAt` (the session must still be connected), then past it with room
 * for the drain poll (the session must have reported the stall).
 */
function expireResponseTimeout(
  clock: FakeClock,
  sentAt: number,
  session: SyncSession,
): void {
  clock.advance(sentAt + RESPONSE_TIMEOUT_MS - 1 - clock.now());
  assert.equal(
    session.connectionState,
    "connected",
    "still connected 1 ms before the response timeout",
  );
  clock.advance(DRAIN_POLL_MS + 1);
  assert.equal(session.connectionState, "disconnected");
}

function assertStalled(
  session: SyncSession,
  change: ConnectionStateChange,
): void {
  assert.equal(change.previous, "connected");
  assert.equal(change.error?.code, "session_stalled");
  assert.equal(change.error?.isFatal, false);
  assert.equal(change.error?.willRetry, true);
  assert.equal(change.retry?.attempt, 1);
  assert.equal(session.error?.code, "session_stalled");
  assert.equal(session.state, "active");
}

/** A test server whose storage the test can stall. */
interface StallingServer extends AsyncDisposable {
  readonly storage: TestKv;
  readonly server: TestServer;
}

/**
 * Starts a server on a {@linkcode TestKv} over an in-memory KV. Disposing
 * releases every stall first, because shutdown waits for in-flight commits
 * and a held one would keep it waiting; the KV closes last, once the server
 * no longer uses it.
 */
async function stallingServer(
  options: Partial<ServeSyncOptions> = {},
): Promise<StallingServer> {
  await using stack = new AsyncDisposableStack();
  const inner = await Deno.openKv(":memory:");
  stack.defer(() => inner.close());
  const storage = new TestKv(inner);
  const server = stack.use(
    await startTestServer({ kv: storage.kv, ...options }),
  );
  stack.defer(() => storage.releaseAll());
  const owned = stack.move();
  return {
    storage,
    server,
    [Symbol.asyncDispose]: () => owned.disposeAsync(),
  };
}

/**
 * A session to stall on a {@linkcode stallingServer}, sharing its socket with
 * an "other" session that must never notice, both watched from the start.
 */
interface StalledSession extends StallingServer {
  readonly clock: FakeClock;
  readonly logs: LogRecord[];
  readonly other: Realm;
  readonly realm: Realm;
  readonly states: StateLog;
  readonly otherStates: StateLog;
}

/**
 * Opens "/~/other", then `path`, on one socket of an app with
 * {@linkcode stallOptions} (plus `app`), both downloaded. Disposing stops
 * watching, closes the realms and the app, then the server.
 */
async function stalledSession(options: {
  path: string;
  server?: Partial<ServeSyncOptions>;
  app?: Partial<AppOptions>;
  /**
   * Write once (acknowledged) before watching: past download cursor 0,
   * binding again needs no snapshot (which takes a commit), so a rebind is
   * answered at once even while commits are stalled.
   */
  pastCursorZero?: boolean;
}): Promise<StalledSession> {
  await using stack = new AsyncDisposableStack();
  const { storage, server } = stack.use(await stallingServer(options.server));
  const clock = new FakeClock(Date.now());
  const logs: LogRecord[] = [];
  const app = stack.use(
    new App(stallOptions(server.url, clock, logs, options.app)),
  );
  const user = await app.logIn(Credentials.anonymous());
  const other = stack.use(
    await user.openRealm({
      path: "/~/other",
      waitForDownload: true,
      signal: bounded(),
    }),
  );
  const realm = stack.use(
    await user.openRealm({
      path: options.path,
      waitForDownload: true,
      signal: bounded(),
    }),
  );
  if (options.pastCursorZero) {
    await realm.write((tx) => tx.put("Task", "t0", {}));
    await realm.syncSession.waitForUpload({ signal: bounded() });
    await realm.syncSession.waitForDownload({ signal: bounded() });
  }
  const states = stack.use(new StateLog(realm.syncSession));
  const otherStates = stack.use(new StateLog(other.syncSession));
  const owned = stack.move();
  return {
    storage,
    server,
    clock,
    logs,
    other,
    realm,
    states,
    otherStates,
    [Symbol.asyncDispose]: () => owned.disposeAsync(),
  };
}

Deno.test("A session whose UPLOAD the server never acknowledges reports session_stalled within responseTimeoutMs, binds again, and the upload is stored once after the stall", async () => {
  const recording = recordingWebSocket();
  await using setup = await stalledSession({
    path: "/~/stalled",
    app: { WebSocket: recording.WebSocket },
    pastCursorZero: true,
  });
  const { storage, server, clock, logs, other, realm, states, otherStates } =
    setup;
  const session = realm.syncSession;
  const stored = server.server.stats().changesetsIntegrated;

  const stall = storage.stall("commit");
  const sentAt = clock.now();
  await realm.write((tx) => tx.put("Task", "t1", { title: "stalled" }));
  const uploaded = track(session.waitForUpload({ signal: bounded() }));
  await stall.reached;
  const bind = recording.frames.find((frame) =>
    frame.direction === "out" && frame.message.type === MessageType.Bind &&
    frame.message.path === "/~/stalled"
  )!.message as { sessionId: number };

  expireResponseTimeout(clock, sentAt, session);
  const stalled = await states.until((c) => c.current === "disconnected");
  assertStalled(session, stalled);
  assert.match(stalled.error!.message, /acknowledgement of client version 2/);
  assert.equal(uploaded.settled, false);
  // The binding was given up on the wire: an UNBIND for it went out.
  assert.ok(
    recording.frames.some((frame) =>
      frame.direction === "out" &&
      frame.message.type === MessageType.Unbind &&
      frame.message.sessionId === bind.sessionId
    ),
  );
  // One log line for the stall, not one per tick.
  const stallLines = logs.filter((record) =>
    record.level !== "debug" && record.error?.code === "session_stalled"
  );
  assert.equal(stallLines.length, 1);

  // Bind again after the session backoff, on the same socket.
  clock.advance(session.retry!.nextAttemptAt - clock.now());
  await states.until((c) => c.current === "connected");
  assert.equal(recording.sockets.length, 1);
  assert.equal(uploaded.settled, false, "the commit is still held");

  stall.release();
  await uploaded.done;
  assert.equal(session.stats().pendingUploadChangesets, 0);
  // The old binding's commit and the re-upload: stored exactly once.
  await server.waitForLog((record) => record.event === "session_unbound");
  assert.equal(server.server.stats().changesetsIntegrated, stored + 1);
  assert.deepEqual(states.lines, [
    "connected→disconnected session_stalled",
    "disconnected→connecting",
    "connecting→connected",
  ]);
  // The other session on the socket never noticed.
  assert.deepEqual(otherStates.lines, []);
  assert.equal(other.syncSession.connectionState, "connected");
});

Deno.test("A session whose MARK the server never answers (waitForDownload) reports session_stalled, binds again and the wait resolves once the server answers", async () => {
  await using setup = await stalledSession({ path: "/~/marked" });
  const { storage, clock, other, realm, states, otherStates } = setup;
  const session = realm.syncSession;

  // The server reads the realm's head to answer a MARK; it hangs.
  const stall = storage.stall("get", headOf("marked"));
  const sentAt = clock.now();
  const downloaded = track(session.waitForDownload({ signal: bounded() }));
  await stall.reached;

  expireResponseTimeout(clock, sentAt, session);
  const stalled = await states.until((c) => c.current === "disconnected");
  assertStalled(session, stalled);
  assert.match(stalled.error!.message, /MARK reply/);
  assert.equal(downloaded.settled, false);

  // The new BIND hangs on the same read: connecting, not connected.
  clock.advance(session.retry!.nextAttemptAt - clock.now());
  await states.until((c) => c.current === "connecting");
  assert.equal(session.connectionState, "connecting");
  // Other sessions keep working meanwhile.
  await other.write((tx) => tx.put("Task", "o1", {}));
  await other.syncSession.waitForUpload({ signal: bounded() });

  stall.release();
  await downloaded.done;
  assert.equal(session.connectionState, "connected");
  assert.deepEqual(states.lines, [
    "connected→disconnected session_stalled",
    "disconnected→connecting",
    "connecting→connected",
  ]);
  assert.deepEqual(otherStates.lines, []);
});

Deno.test("A session with nothing outstanding never trips the response timeout, however long it idles; the wait counts from the request", async () => {
  await using stalling = await stallingServer();
  const { storage, server } = stalling;
  const clock = new FakeClock(Date.now());
  const logs: LogRecord[] = [];
  await using app = new App(stallOptions(server.url, clock, logs));
  const user = await app.logIn(Credentials.anonymous());
  await using realm = await user.openRealm({
    path: "/~/idle",
    waitForDownload: true,
    signal: bounded(),
  });
  const session = realm.syncSession;
  await using states = new StateLog(session);
  // Answered requests leave nothing outstanding.
  await realm.write((tx) => tx.put("Task", "t1", {}));
  await session.waitForUpload({ signal: bounded() });
  await session.waitForDownload({ signal: bounded() });

  // Idle time starts once the client is done with the answers.
  await flush();
  for (let i = 0; i < 5; i++) clock.advance(RESPONSE_TIMEOUT_MS);
  assert.equal(session.connectionState, "connected");
  assert.deepEqual(states.lines, []);

  // The watchdog is live: a request after the idle time gets the full
  // timeout from when it was sent, then is reported.
  const stall = storage.stall("get", headOf("idle"));
  const sentAt = clock.now();
  const downloaded = track(session.waitForDownload({ signal: bounded() }));
  await stall.reached;
  expireResponseTimeout(clock, sentAt, session);
  assert.equal(session.error?.code, "session_stalled");
  stall.release();
  clock.advance(session.retry!.nextAttemptAt - clock.now());
  await downloaded.done;
  assert.equal(session.connectionState, "connected");
});

Deno.test("A slow download that keeps progressing (each DOWNLOAD within the response timeout, the whole far longer) is never cut", async () => {
  await using server = await startTestServer({ downloadBatchBytes: 1024 });
  const clock = new FakeClock(Date.now());
  const logs: LogRecord[] = [];
  const paced = pacedWebSocket();
  await using app = new App(
    stallOptions(server.url, clock, logs, { WebSocket: paced.WebSocket }),
  );
  const user = await app.logIn(Credentials.anonymous());
  await using keep = await user.openRealm({
    path: "/~/keep",
    waitForDownload: true,
    signal: bounded(),
  });
  {
    await using source = await user.openRealm({
      path: "/~/big",
      waitForDownload: true,
      signal: bounded(),
    });
    for (let i = 0; i < 40; i++) {
      await source.write((tx) =>
        tx.put("Item", `i${i}`, { text: "x".repeat(300), n: i })
      );
    }
    await source.syncSession.waitForUpload({ signal: bounded() });
  }
  await using keepStates = new StateLog(keep.syncSession);

  // A fresh copy of the realm downloads it again, one message per step.
  paced.hold();
  await using realm = await user.openRealm({ path: "/~/big" });
  const session = realm.syncSession;
  await using states = new StateLog(session);
  const downloaded = track(session.waitForDownload({ signal: bounded() }));
  const startedAt = clock.now();
  let delivered = 0;
  for (let step = 0; step < 1_000 && !downloaded.settled; step++) {
    const next = await Promise.race([
      downloaded.done.then(() => "done" as const),
      paced.next(bounded()).then(() => "frame" as const),
    ]);
    if (next === "done") break;
    paced.releaseOne();
    delivered++;
    // Time passes once the client has dealt with the message (a slow link,
    // not a slow client). Handling is in-memory: one turn of the event loop.
    await flush();
    clock.advance(RESPONSE_TIMEOUT_MS - 1);
  }
  await downloaded.done;
  assert.ok(delivered >= 5, `${delivered} messages`);
  assert.ok(clock.now() - startedAt >= 4 * RESPONSE_TIMEOUT_MS);
  assert.equal(realm.objects("Item").length, 40);
  assert.equal(session.connectionState, "connected");
  assert.ok(
    states.lines.every((line) => !line.includes("disconnected")),
    states.lines.join(", "),
  );

  // The watchdog was live all along: an answer held back is reported.
  const sentAt = clock.now();
  const again = track(session.waitForDownload({ signal: bounded() }));
  await paced.next(bounded());
  expireResponseTimeout(clock, sentAt, session);
  assert.equal(session.error?.code, "session_stalled");
  paced.releaseAll();
  clock.advance(session.retry!.nextAttemptAt - clock.now());
  await again.done;
  // The idle session on the socket never noticed any of it.
  assert.deepEqual(keepStates.lines, []);
});

Deno.test("Repeated stalls of one session on one socket leave no sessions behind on the server: each UNBIND is answered while the commit is still held, so BIND never meets maxSessionsPerConnection", async () => {
  const recording = recordingWebSocket();
  await using setup = await stalledSession({
    path: "/~/stalled",
    // Room for the other session, the stalled one and one more: on a server
    // that kept each given-up binding until its commit finished, the second
    // stall's BIND would already be refused.
    server: { limits: { maxSessionsPerConnection: 3 } },
    app: { WebSocket: recording.WebSocket },
    pastCursorZero: true,
  });
  const { storage, server, clock, realm, states, otherStates } = setup;
  const session = realm.syncSession;
  const stored = server.server.stats().changesetsIntegrated;
  assert.equal(server.server.stats().sessions, 2);

  const stall = storage.stall("commit");
  await realm.write((tx) => tx.put("Task", "t1", { title: "stalled" }));
  const uploaded = track(session.waitForUpload({ signal: bounded() }));
  // The stalled realm's current binding: its latest BIND.
  const binding = () =>
    recording.frames.findLast((frame) =>
      frame.direction === "out" && frame.message.type === MessageType.Bind &&
      frame.message.path === "/~/stalled"
    )!.message as { sessionId: number };
  const unbound = (frame: SeenFrame) =>
    frame.direction === "in" && frame.message.type === MessageType.Unbound;
  const cycles = 5;
  for (let cycle = 1; cycle <= cycles; cycle++) {
    const { sessionId } = binding();
    // This binding's UPLOAD of client version 2 has reached the server:
    // the first one's commit is held; a later binding's re-upload follows
    // the MARK that BIND sends, so the MARK_REPLY comes after it left.
    // No time has passed since it was sent.
    if (cycle === 1) {
      await stall.reached;
    } else {
      await recording.waitFor(
        (frame) =>
          frame.direction === "in" &&
          frame.message.type === MessageType.MarkReply &&
          frame.message.sessionId === sessionId,
        1,
        bounded(),
      );
      // The client handles it in memory: one turn of the event loop.
      await flush();
    }
    assert.ok(recording.frames.some((frame) =>
      frame.direction === "out" &&
      frame.message.type === MessageType.Upload &&
      frame.message.sessionId === sessionId &&
      frame.message.changesets.some((changeset) =>
        changeset.clientVersion === 2
      )
    ));
    const from = states.changes.length;
    // Stops at the stall, before the session backoff moves on.
    clock.advance(RESPONSE_TIMEOUT_MS - 1);
    assert.equal(session.connectionState, "connected", `cycle ${cycle}`);
    for (
      let step = 0;
      step <= DRAIN_POLL_MS && session.connectionState === "connected";
      step++
    ) {
      clock.advance(1);
    }
    const stalled = await states.until(
      (c) => c.current === "disconnected",
      from,
    );
    assert.equal(stalled.error?.code, "session_stalled");
    // The server answers the UNBIND although the commit is still held,
    // and the given-up binding no longer counts.
    await recording.waitFor(unbound, cycle, bounded());
    assert.equal(server.server.stats().sessions, 1, `cycle ${cycle}`);

    clock.advance(session.retry!.nextAttemptAt - clock.now());
    await states.until((c) => c.current === "connected", from);
    assert.equal(server.server.stats().sessions, 2, `cycle ${cycle}`);
  }
  assert.equal(uploaded.settled, false, "the commit is still held");
  assert.equal(stall.held, 1, "re-uploads wait behind the held commit");
  assert.equal(recording.sockets.length, 1);

  stall.release();
  await uploaded.done;
  assert.equal(session.stats().pendingUploadChangesets, 0);
  assert.equal(server.server.stats().changesetsIntegrated, stored + 1);
  assert.equal(server.server.stats().sessions, 2);
  const expected = [];
  for (let cycle = 1; cycle <= cycles; cycle++) {
    expected.push(
      "connected→disconnected session_stalled",
      "disconnected→connecting",
      "connecting→connected",
    );
  }
  assert.deepEqual(states.lines, expected);
  assert.deepEqual(otherStates.lines, []);
});
