import assert from "node:assert/strict";
import type { AppOptions } from "../../src/client/app.ts";
import type { Realm } from "../../src/client/realm.ts";
import { SyncError } from "../../src/client/sync_error.ts";
import type { ConnectionStateChange } from "../../src/client/sync_session.ts";
import type { SyncSession } from "../../src/client/sync_session.ts";
import { MessageType } from "../../src/protocol/messages.ts";
import { anonymousClient, recordingWebSocket } from "../_helpers/e2e.ts";
import { abortable } from "../../src/util/abort.ts";
import { FakeClock } from "../_helpers/fake_clock.ts";
import { TcpProxy } from "../_helpers/tcp_proxy.ts";
import { startTestServer } from "../_helpers/test_server.ts";

/** Resolves with the first state change matching `predicate`. */
async function nextChange(
  session: SyncSession,
  predicate: (change: ConnectionStateChange) => boolean,
  signal = AbortSignal.timeout(10_000),
): Promise<ConnectionStateChange> {
  for await (const change of session.connectionStateChanges({ signal })) {
    if (predicate(change)) return change;
  }
  throw signal.reason ?? new Error("The session's state stream ended");
}

async function withDataDir<T>(fn: (kv: string) => Promise<T>): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix: "tether-reconnect-" });
  try {
    return await fn(`${dir}/sync.kv`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("Connection after a server restart (same port, same KV) every session binds again with its cursor: no full re-download", async () => {
  await withDataDir(async (kv) => {
    const first = await startTestServer({ kv });
    const port = first.server.addr.port;
    const recording = recordingWebSocket();
    const client = await anonymousClient(first.url, {
      WebSocket: recording.WebSocket,
    });
    try {
      const one = await client.user.openRealm({
        path: "/~/one",
        waitForDownload: true,
      });
      const two = await client.user.openRealm({
        path: "/~/two",
        waitForDownload: true,
      });
      await one.write((tx) => {
        for (let index = 0; index < 500; index++) {
          tx.put("T", `${index}`, { index });
        }
      });
      await one.syncSession.waitForUpload({
        signal: AbortSignal.timeout(5_000),
      });
      // The cursor moves past the client's own changeset in a DOWNLOAD that
      // may follow the acknowledgement.
      await one.syncSession.waitForDownload({
        signal: AbortSignal.timeout(5_000),
      });
      const lost = nextChange(
        one.syncSession,
        (change) => change.current === "disconnected",
      );
      await first.server.shutdown();
      const change = await lost;
      assert.equal(change.error?.code, "server_shutting_down");
      assert.equal(change.error?.willRetry, true);
      assert.ok(change.retry !== undefined && change.retry.attempt >= 1);
      const socketsBefore = recording.sockets.length;
      const framesBefore = recording.frames.length;
      await using second = await startTestServer({ kv, port });
      await one.syncSession.waitForDownload({
        signal: AbortSignal.timeout(10_000),
      });
      await two.syncSession.waitForDownload({
        signal: AbortSignal.timeout(10_000),
      });
      assert.ok(recording.sockets.length > socketsBefore);
      // Both sessions bound again on the new socket, with their cursors.
      const after = recording.frames.slice(framesBefore);
      const binds = after.filter((frame) =>
        frame.direction === "out" && frame.message.type === MessageType.Bind
      )
        .map((frame) =>
          frame.message as {
            path: string;
            clientIdentity: unknown;
            downloadCursor: number;
          }
        );
      assert.deepEqual(binds.map((bind) => bind.path).sort(), [
        "/~/one",
        "/~/two",
      ]);
      assert.ok(binds.every((bind) => bind.clientIdentity !== null));
      assert.ok(
        binds.find((bind) => bind.path === "/~/one")!.downloadCursor >= 1,
      );
      // Nothing already held was downloaded again.
      const downloaded = after.filter((frame) =>
        frame.direction === "in" &&
        frame.message.type === MessageType.Download &&
        frame.message.changesets.length > 0
      );
      assert.deepEqual(downloaded, []);
      assert.equal(one.objects("T").length, 500);
      assert.equal(one.syncSession.stats().reconnects, 1);
      await one.write((tx) => tx.put("T", "after", {}));
      await one.syncSession.waitForUpload({
        signal: AbortSignal.timeout(5_000),
      });
      void second;
      await one.close();
      await two.close();
    } finally {
      await client.app.close();
    }
  });
});

Deno.test("App.reconnect() beats a long configured backoff", async () => {
  await withDataDir(async (kv) => {
    const first = await startTestServer({ kv });
    const port = first.server.addr.port;
    const client = await anonymousClient(first.url, {
      reconnect: { minDelayMs: 600_000, maxDelayMs: 600_000 },
      random: () => 0.9,
    });
    try {
      const realm = await client.user.openRealm({
        path: "/~/r",
        waitForDownload: true,
      });
      const lost = nextChange(
        realm.syncSession,
        (change) => change.retry !== undefined,
      );
      await first.server.shutdown();
      const change = await lost;
      // 0.9 × 10 minutes: far beyond this test's bound.
      assert.ok(change.retry!.nextAttemptAt >= Date.now() + 500_000);
      await using second = await startTestServer({ kv, port });
      const connected = nextChange(
        realm.syncSession,
        (c) => c.current === "connected",
        AbortSignal.timeout(5_000),
      );
      client.app.reconnect();
      await connected;
      assert.equal(realm.syncSession.retry, undefined);
      void second;
      await realm.close();
    } finally {
      await client.app.close();
    }
  });
});

Deno.test("Connection detects a silent socket by the read timeout and reconnects on its own", async () => {
  await using server = await startTestServer();
  await using proxy = new TcpProxy({
    hostname: "127.0.0.1",
    port: server.server.addr.port,
  });
  const client = await anonymousClient(proxy.url, {
    keepalive: { pingIntervalMs: 50, readTimeoutMs: 300 },
  });
  try {
    const realm = await client.user.openRealm({
      path: "/~/silent",
      waitForDownload: true,
    });
    const lost = nextChange(
      realm.syncSession,
      (change) => change.current === "disconnected",
    );
    const accepted = proxy.accepted;
    proxy.silence();
    const change = await lost;
    assert.equal(change.error?.code, "read_timeout");
    assert.equal(
      change.error?.message,
      "No data from the server within 300 ms",
    );
    assert.equal(change.retry?.attempt, 1);
    await realm.syncSession.waitForDownload({
      signal: AbortSignal.timeout(5_000),
    });
    assert.equal(realm.syncSession.connectionState, "connected");
    assert.equal(proxy.accepted, accepted + 1);
    await realm.close();
  } finally {
    await client.app.close();
  }
});

Deno.test("App.reconnect() replaces a silent-but-open socket at once (no read timeout needed)", async () => {
  await using server = await startTestServer();
  await using proxy = new TcpProxy({
    hostname: "127.0.0.1",
    port: server.server.addr.port,
  });
  const client = await anonymousClient(proxy.url, {
    keepalive: { pingIntervalMs: 60_000, readTimeoutMs: 600_000 },
  });
  try {
    const realm = await client.user.openRealm({
      path: "/~/s",
      waitForDownload: true,
    });
    proxy.silence();
    await realm.write((tx) => tx.put("T", "x", {}));
    const changes: string[] = [];
    const controller = new AbortController();
    const reading = (async () => {
      for await (
        const change of realm.syncSession.connectionStateChanges({
          signal: controller.signal,
        })
      ) {
        changes.push(
          `${change.previous}→${change.current}${
            change.error ? " " + change.error.code : ""
          }`,
        );
      }
    })();
    client.app.reconnect();
    await realm.syncSession.waitForUpload({
      signal: AbortSignal.timeout(5_000),
    });
    controller.abort();
    await reading;
    assert.deepEqual(changes, ["connected→connecting", "connecting→connected"]);
    await realm.close();
  } finally {
    await client.app.close();
  }
});

Deno.test("Connection a healthy idle connection never flaps: many pings answered, no state change", async () => {
  await using server = await startTestServer();
  const recording = recordingWebSocket();
  const client = await anonymousClient(server.url, {
    WebSocket: recording.WebSocket,
    keepalive: { pingIntervalMs: 20, readTimeoutMs: 100 },
  });
  try {
    const realm = await client.user.openRealm({
      path: "/~/idle",
      waitForDownload: true,
    });
    const changes: ConnectionStateChange[] = [];
    const controller = new AbortController();
    const reading = (async () => {
      for await (
        const change of realm.syncSession.connectionStateChanges({
          signal: controller.signal,
        })
      ) {
        changes.push(change);
      }
    })();
    // Wait for the event meant: 30 PONGs (about 6 read timeouts' worth).
    await recording.waitFor(
      (f) => f.direction === "in" && f.message.type === MessageType.Pong,
      30,
      AbortSignal.timeout(10_000),
    );
    controller.abort();
    await reading;
    assert.deepEqual(changes, []);
    assert.equal(recording.sockets.length, 1);
    assert.ok(realm.syncSession.stats().rttMs !== undefined);
    await realm.close();
  } finally {
    await client.app.close();
  }
});

Deno.test("Connection reconnect.maxAttempts failed attempts in a row put the session in error with reconnect_gave_up", async () => {
  const server = await startTestServer();
  const client = await anonymousClient(server.url, {
    reconnect: { minDelayMs: 5, maxDelayMs: 20, maxAttempts: 3 },
  });
  try {
    const realm = await client.user.openRealm({
      path: "/~/g",
      waitForDownload: true,
    });
    const retries: number[] = [];
    let final: ConnectionStateChange | undefined;
    // Watching from before the shutdown: the first retry can start (its
    // delay is drawn from [0, 5) ms) before shutdown() has returned.
    const watching = (async () => {
      try {
        for await (
          const change of realm.syncSession.connectionStateChanges({
            signal: AbortSignal.timeout(10_000),
          })
        ) {
          if (change.retry) retries.push(change.retry.attempt);
          final = change;
        }
      } catch (error) {
        assert.ok(
          error instanceof SyncError && error.code === "reconnect_gave_up",
        );
      }
    })();
    await server.server.shutdown();
    const waiting = assert.rejects(
      realm.syncSession.waitForDownload({
        signal: AbortSignal.timeout(10_000),
      }),
      (error) =>
        error instanceof SyncError && error.code === "reconnect_gave_up",
    );
    await watching;
    await waiting;
    // The first retry follows the lost connection; then three failed dials.
    assert.deepEqual(retries, [1, 2, 3]);
    assert.equal(final?.current, "disconnected");
    assert.equal(final?.error?.code, "reconnect_gave_up");
    assert.equal(final?.retry, undefined);
    assert.equal(realm.syncSession.state, "error");
    assert.equal(realm.syncSession.error?.isFatal, true);
    await realm.close();
  } finally {
    await client.app.close();
  }
});

Deno.test("App an `online` event (browsers) retries a waiting connection at once", async () => {
  await withDataDir(async (kv) => {
    const first = await startTestServer({ kv });
    const port = first.server.addr.port;
    const client = await anonymousClient(first.url, {
      reconnect: { minDelayMs: 600_000, maxDelayMs: 600_000 },
      random: () => 0.9,
    });
    try {
      const realm = await client.user.openRealm({
        path: "/~/online",
        waitForDownload: true,
      });
      const lost = nextChange(
        realm.syncSession,
        (change) => change.retry !== undefined,
      );
      await first.server.shutdown();
      await lost;
      await using second = await startTestServer({ kv, port });
      const connected = nextChange(
        realm.syncSession,
        (change) => change.current === "connected",
        AbortSignal.timeout(5_000),
      );
      globalThis.dispatchEvent(new Event("online"));
      await connected;
      void second;
      await realm.close();
    } finally {
      await client.app.close();
    }
  });
});

Deno.test("SyncSession connectionState and the change stream always agree", async () => {
  await withDataDir(async (kv) => {
    const first = await startTestServer({ kv });
    const port = first.server.addr.port;
    const client = await anonymousClient(first.url);
    try {
      const realm = await client.user.openRealm({ path: "/~/agree" });
      const session = realm.syncSession;
      const seen: string[] = [];
      const controller = new AbortController();
      const reading = (async () => {
        for await (
          const change of session.connectionStateChanges({
            signal: controller.signal,
          })
        ) {
          // Read as each change is delivered: the getter says the same or
          // has already moved on to a later state that is also reported.
          seen.push(change.current);
        }
      })();
      await session.waitForDownload({ signal: AbortSignal.timeout(5_000) });
      session.pause();
      session.resume();
      await session.waitForDownload({ signal: AbortSignal.timeout(5_000) });
      await first.server.shutdown();
      await using second = await startTestServer({ kv, port });
      await session.waitForDownload({ signal: AbortSignal.timeout(10_000) });
      controller.abort();
      await reading;
      void second;
      // Every transition once, in order, ending where the getter is.
      assert.equal(seen.at(-1), session.connectionState);
      for (let index = 1; index < seen.length; index++) {
        assert.notEqual(seen[index], seen[index - 1]);
      }
      assert.deepEqual(seen.slice(0, 4), [
        "connected",
        "disconnected",
        "connecting",
        "connected",
      ]);
      await realm.close();
    } finally {
      await client.app.close();
    }
  });
});

// ----- session-level retries (a session-scoped ERROR with tryAgain) -----

/**
 * Reads a session's state changes one at a time, each read bounded, so a
 * test can assert the exact sequence. Dispose to end the stream.
 */
function stateChanges(session: SyncSession): {
  next(signal?: AbortSignal): Promise<ConnectionStateChange>;
  [Symbol.dispose](): void;
} {
  const controller = new AbortController();
  const reader = session.connectionStateChanges({ signal: controller.signal })
    .getReader();
  return {
    next(signal = AbortSignal.timeout(5_000)) {
      return new Promise((resolve, reject) => {
        const onAbort = () => reject(signal.reason);
        if (signal.aborted) return onAbort();
        signal.addEventListener("abort", onAbort, { once: true });
        reader.read().then((result) => {
          signal.removeEventListener("abort", onAbort);
          if (result.done) reject(new Error("The state stream ended"));
          else resolve(result.value);
        }, (error) => {
          signal.removeEventListener("abort", onAbort);
          reject(error);
        });
      });
    },
    [Symbol.dispose]() {
      controller.abort();
    },
  };
}

/** A change as a line: `previous→current code retry#attempt+delay`. */
function describeChange(
  change: ConnectionStateChange,
  now: number,
): string {
  let line = `${change.previous}→${change.current}`;
  if (change.error) line += ` ${change.error.code}`;
  if (change.retry) {
    line += ` retry#${change.retry.attempt}+${
      change.retry.nextAttemptAt - now
    }`;
  }
  return line;
}

/**
 * An in-memory KV that can fail uploads on the test's word. While `broken`,
 * storing an upload is held until `failUpload()` fails it: the read it may
 * start with (the realm head with the uploader's identity) or, when the
 * server checks what it committed last instead of reading, the commit that
 * stores a history entry. So the server answers that UPLOAD with a
 * session-scoped `session_failed` (try again) exactly when the test says:
 * after the bind was answered, never racing it.
 */
async function breakableKv(): Promise<
  {
    kv: Deno.Kv;
    broken: boolean;
    failUpload(): Promise<void>;
  } & AsyncDisposable
> {
  const inner = await Deno.openKv(":memory:");
  let held: Array<(error: Error) => void> = [];
  let arrived = Promise.withResolvers<void>();
  const readsIdentity = (keys: Deno.KvKey[]) =>
    keys.some((key) => key.includes("identity"));
  const state = {
    broken: false,
    kv: undefined as unknown as Deno.Kv,
    /** Waits (bounded) for an upload's read to be held, then fails it. */
    async failUpload(): Promise<void> {
      await abortable(arrived.promise, AbortSignal.timeout(5_000));
      arrived = Promise.withResolvers<void>();
      const failing = held;
      held = [];
      for (const fail of failing) fail(new Error("disk on fire"));
    },
    [Symbol.asyncDispose]: () => {
      for (const fail of held) fail(new Error("closing"));
      held = [];
      return Promise.resolve(inner.close());
    },
  };
  const hold = () =>
    new Promise<never>((_, reject) => {
      held.push(reject);
      arrived.resolve();
    });
  const storesHistory = (operation: Deno.AtomicOperation) => {
    let history = false;
    const wrapper: Deno.AtomicOperation = new Proxy(operation, {
      get(inner, name) {
        const member = Reflect.get(inner, name);
        if (typeof member !== "function") return member;
        if (name === "commit") {
          return () => state.broken && history ? hold() : member.call(inner);
        }
        return (...args: unknown[]) => {
          if (name === "set" && (args[0] as Deno.KvKey).includes("history")) {
            history = true;
          }
          const result = member.apply(inner, args);
          return result === inner ? wrapper : result;
        };
      },
    });
    return wrapper;
  };
  state.kv = new Proxy(inner, {
    get(target, property) {
      const value = Reflect.get(target, property);
      if (property === "atomic") {
        return () => storesHistory(target.atomic());
      }
      if (property === "getMany" && typeof value === "function") {
        return (keys: Deno.KvKey[], options?: object) => {
          if (!state.broken || !readsIdentity(keys)) {
            return value.call(target, keys, options);
          }
          return hold();
        };
      }
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  return state;
}

/** Options that leave every timer to the test's fake clock. */
function clockedOptions(clock: FakeClock) {
  return {
    clock,
    // Half of each bound: the delays are 1/2, 1, 2, 4 × minDelayMs.
    random: () => 0.5,
    // The socket outlives every detach in these tests: no linger close, no
    // keepalive verdict while the fake clock moves.
    lingerMs: 3_600_000,
    keepalive: { pingIntervalMs: 3_600_000, readTimeoutMs: 7_200_000 },
  };
}

/**
 * A server on a {@linkcode breakableKv} and an anonymous client on a fake
 * clock, with `path` open and downloaded. Disposing closes the app, then the
 * server, then the KV: each still has the next one to talk to while closing.
 */
async function breakableSetup(
  path: string,
  reconnect: NonNullable<AppOptions["reconnect"]>,
): Promise<
  & {
    store: Awaited<ReturnType<typeof breakableKv>>;
    clock: FakeClock;
    realm: Realm;
  }
  & AsyncDisposable
> {
  await using stack = new AsyncDisposableStack();
  const store = stack.use(await breakableKv());
  const server = stack.use(await startTestServer({ kv: store.kv }));
  const clock = new FakeClock(Date.now());
  const client = await anonymousClient(server.url, {
    ...clockedOptions(clock),
    reconnect,
  });
  stack.defer(() => client.app.close());
  const realm = await client.user.openRealm({ path, waitForDownload: true });
  const owned = stack.move();
  return {
    store,
    clock,
    realm,
    [Symbol.asyncDispose]: () => owned.disposeAsync(),
  };
}

Deno.test("SyncSession an upload the server keeps failing (session_failed after each bind) backs off: attempts 1, 2, 3, delays doubling; a bind that lasts resetAfterMs starts the count over", async () => {
  await using setup = await breakableSetup(
    "/~/failing-upload",
    { minDelayMs: 1_000, maxDelayMs: 60_000, resetAfterMs: 5_000 },
  );
  const { store, clock, realm } = setup;
  const session = realm.syncSession;
  using changes = stateChanges(session);
  const seen: string[] = [];
  const next = async () => {
    const change = await changes.next();
    seen.push(describeChange(change, clock.now()));
    return change;
  };
  store.broken = true;
  await realm.write((tx) => tx.put("T", "x", {}));
  await store.failUpload();
  // Each bind succeeds ("connected"), then re-sends the write, which the
  // server fails again.
  for (const delay of [500, 1_000, 2_000]) {
    const failed = await next();
    assert.equal(failed.retry?.nextAttemptAt, clock.now() + delay);
    assert.deepEqual(session.retry, failed.retry);
    // Not a millisecond early.
    clock.advance(delay - 1);
    assert.equal(session.connectionState, "disconnected");
    clock.advance(1);
    await next();
    await next();
    await store.failUpload();
  }
  const fourth = await next();
  assert.deepEqual(seen, [
    "connected→disconnected session_failed retry#1+500",
    "disconnected→connecting",
    "connecting→connected",
    "connected→disconnected session_failed retry#2+1000",
    "disconnected→connecting",
    "connecting→connected",
    "connected→disconnected session_failed retry#3+2000",
    "disconnected→connecting",
    "connecting→connected",
    "connected→disconnected session_failed retry#4+4000",
  ]);
  assert.equal(fourth.error?.willRetry, true);
  assert.equal(session.state, "active");
  assert.equal(session.stats().pendingUploadChangesets, 1);
  // The storage heals: the retry uploads the write.
  store.broken = false;
  clock.advance(4_000);
  await session.waitForUpload({ signal: AbortSignal.timeout(5_000) });
  assert.equal((await next()).current, "connecting");
  assert.equal((await next()).current, "connected");
  // Bound for resetAfterMs: the next failure is a first retry again.
  clock.advance(5_000);
  store.broken = true;
  await realm.write((tx) => tx.put("T", "y", {}));
  await store.failUpload();
  const again = await next();
  assert.equal(again.error?.code, "session_failed");
  assert.equal(again.retry?.attempt, 1);
  assert.equal(again.retry?.nextAttemptAt, clock.now() + 500);
  await realm.close();
});

Deno.test("SyncSession a session error that keeps coming back gives up after reconnect.maxAttempts failed binds in a row: reconnect_gave_up, fatal", async () => {
  await using setup = await breakableSetup(
    "/~/gives-up",
    { minDelayMs: 1_000, maxDelayMs: 60_000, maxAttempts: 2 },
  );
  const { store, clock, realm } = setup;
  const session = realm.syncSession;
  using changes = stateChanges(session);
  store.broken = true;
  const receipt = realm.write((tx) => tx.put("T", "x", {}));
  const outcome = session.waitForUpload({
    signal: AbortSignal.timeout(10_000),
  }).then(() => "uploaded", (reason: unknown) => reason);
  await store.failUpload();
  const attempts: number[] = [];
  for (;;) {
    const change = await changes.next();
    if (change.current !== "disconnected") continue;
    if (change.retry === undefined) {
      assert.equal(change.error?.code, "reconnect_gave_up");
      break;
    }
    attempts.push(change.retry.attempt);
    assert.ok(attempts.length <= 2, `retried ${attempts.join(", ")}`);
    clock.advance(change.retry.nextAttemptAt - clock.now());
    await store.failUpload();
  }
  // The first error, then two failed binds, as the connection counts.
  assert.deepEqual(attempts, [1, 2]);
  const error = await outcome;
  assert.ok(error instanceof SyncError);
  assert.equal(error.code, "reconnect_gave_up");
  assert.equal(error.isFatal, true);
  assert.equal(error.willRetry, false);
  assert.equal((error.cause as SyncError).code, "session_failed");
  assert.equal(session.state, "error");
  assert.equal(session.error, error);
  assert.equal(session.retry, undefined);
  await receipt;
  await realm.close();
});

/**
 * A server whose permission check fails (the server answers BIND with
 * `session_failed`, try again) while `failing.value` is true.
 */
function failingPermissions(failing: { value: boolean }) {
  return (userId: string, path: string) => {
    if (failing.value) throw new Error("permission store down");
    return path.startsWith(`/${userId}/`) ? "readwrite" as const : "none";
  };
}

Deno.test("App.reconnect() cancels a session's pending rebind delay and resets its backoff, with no socket left to replace", async () => {
  const failing = { value: true };
  await using server = await startTestServer({
    permissions: failingPermissions(failing),
  });
  const clock = new FakeClock(Date.now());
  const client = await anonymousClient(server.url, {
    ...clockedOptions(clock),
    // The socket closes as soon as the refused session leaves it.
    lingerMs: 0,
    reconnect: { minDelayMs: 60_000, maxDelayMs: 600_000 },
  });
  try {
    const realm = await client.user.openRealm({ path: "/~/refused" });
    const session = realm.syncSession;
    using changes = stateChanges(session);
    const seen: string[] = [];
    const next = async () => {
      const change = await changes.next();
      seen.push(describeChange(change, clock.now()));
      return change;
    };
    // The first dial started as the realm opened.
    assert.equal(session.connectionState, "connecting");
    await next();
    // Two failures: the count is at 2 when reconnect() resets it.
    clock.advance(30_000);
    await next();
    await next();
    clock.advance(0); // the linger close: nothing is attached any more
    client.app.reconnect(); // still failing: binds now, fails, retry 1
    await next();
    await next();
    failing.value = false;
    client.app.reconnect();
    await next();
    await next();
    await session.waitForDownload({ signal: AbortSignal.timeout(5_000) });
    assert.deepEqual(seen, [
      "connecting→disconnected session_failed retry#1+30000",
      "disconnected→connecting",
      "connecting→disconnected session_failed retry#2+60000",
      "disconnected→connecting",
      "connecting→disconnected session_failed retry#1+30000",
      "disconnected→connecting",
      "connecting→connected",
    ]);
    assert.equal(session.retry, undefined);
    assert.equal(session.error, undefined);
    await realm.close();
  } finally {
    await client.app.close();
  }
});

Deno.test("App an `online` event binds a session waiting out a rebind delay at once, while the socket is up for another session", async () => {
  const failing = { value: true };
  await using server = await startTestServer({
    permissions: (userId, path) =>
      path.endsWith("/refused")
        ? failingPermissions(failing)(userId, path)
        : failingPermissions({ value: false })(userId, path),
  });
  const clock = new FakeClock(Date.now());
  const client = await anonymousClient(server.url, {
    ...clockedOptions(clock),
    reconnect: { minDelayMs: 60_000, maxDelayMs: 600_000 },
  });
  try {
    const healthy = await client.user.openRealm({
      path: "/~/healthy",
      waitForDownload: true,
    });
    const realm = await client.user.openRealm({ path: "/~/refused" });
    const session = realm.syncSession;
    using changes = stateChanges(session);
    for (;;) {
      const change = await changes.next();
      if (change.retry !== undefined) break;
    }
    assert.equal(session.retry?.nextAttemptAt, clock.now() + 30_000);
    failing.value = false;
    globalThis.dispatchEvent(new Event("online"));
    assert.equal((await changes.next()).current, "connecting");
    assert.equal((await changes.next()).current, "connected");
    assert.equal(session.retry, undefined);
    // The healthy session kept its socket: an online event only checks it.
    assert.equal(healthy.syncSession.connectionState, "connected");
    assert.equal(healthy.syncSession.stats().reconnects, 0);
    await realm.close();
    await healthy.close();
  } finally {
    await client.app.close();
  }
});

Deno.test("Connection a login answered 503 with Retry-After delays the reconnect by that much (session.retry, the state change)", async () => {
  await using server = await startTestServer();
  // What a busy login endpoint (or a proxy in front of it) answers.
  let overloaded = 0;
  await using busy = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    () =>
      new Response('{"error":{"code":"busy","message":"try later"}}', {
        status: 503,
        headers: { "retry-after": "7" },
      }),
  );
  const busyUrl = `http://127.0.0.1:${busy.addr.port}/login`;
  const clock = new FakeClock(Date.now());
  const client = await anonymousClient(server.url, {
    ...clockedOptions(clock),
    // Without Retry-After the retry would be due at once.
    random: () => 0,
    fetch: (input, init) => {
      if (overloaded > 0) {
        overloaded--;
        return fetch(busyUrl, init);
      }
      return fetch(input, init);
    },
  });
  try {
    // The access token grows stale while no realm is open: the first dial
    // has to refresh it first.
    clock.advance(3_600_000);
    overloaded = 1;
    const realm = await client.user.openRealm({ path: "/~/busy" });
    const session = realm.syncSession;
    using changes = stateChanges(session);
    let change = await changes.next();
    if (change.current === "connecting") change = await changes.next();
    assert.equal(change.current, "disconnected");
    assert.equal(change.error?.code, "connection_lost");
    assert.match(change.error!.message, /503: try later/);
    assert.equal(change.retry?.attempt, 1);
    assert.equal(change.retry?.nextAttemptAt, clock.now() + 7_000);
    assert.deepEqual(session.retry, change.retry);
    assert.equal(overloaded, 0);
    clock.advance(6_999);
    assert.equal(session.connectionState, "disconnected");
    clock.advance(1);
    assert.equal((await changes.next()).current, "connecting");
    assert.equal((await changes.next()).current, "connected");
    await realm.close();
  } finally {
    await client.app.close();
  }
});
