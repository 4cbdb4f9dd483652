// Conformance: the session rules on connections (docs/CLIENT.md) — retries and their
// visibility, maxAttempts, app.reconnect(), keepalive, tokens after a
// reconnect — over a TCP proxy that fails like a network.

import assert from "node:assert/strict";
import { Credentials, type LogRecord, SyncError } from "../../mod.ts";
import { TcpProxy } from "../_helpers/tcp_proxy.ts";
import {
  fastApp,
  openClient,
  openDownloaded,
  proxiedClient,
  recordConnectionStates,
} from "./_helpers.ts";
import { bounded, condition, Recorder } from "../_helpers/waits.ts";
import { startTestServer } from "../_helpers/test_server.ts";
import { signUserJwt } from "../_helpers/user_jwt.ts";

Deno.test("SyncSession retry schedule is visible: the disconnect carries the error and retry { attempt, nextAttemptAt, lastError }; session.retry holds the same", async () => {
  await using client = await proxiedClient({
    app: { reconnect: { minDelayMs: 5, maxDelayMs: 20 } },
  });
  const { proxy, session } = client;
  await using states = recordConnectionStates(session);
  proxy.mode = "refuse";
  proxy.dropAll();

  const lost = await states.until((s) => s.current === "disconnected");
  assert.equal(lost.previous, "connected");
  assert.ok(lost.error instanceof SyncError, "the cause travels with it");
  assert.equal(lost.error.isFatal, false);
  assert.equal(lost.error.willRetry, true);
  assert.ok(lost.retry !== undefined, "a retry is scheduled");
  assert.equal(lost.retry.attempt, 1);
  assert.equal(typeof lost.retry.nextAttemptAt, "number");
  assert.ok(Math.abs(lost.retry.nextAttemptAt - Date.now()) < 60_000);
  assert.ok(lost.retry.lastError instanceof SyncError);

  // Failed attempts count up, each visible on its own transition.
  const third = await states.until((s) =>
    s.current === "disconnected" && (s.retry?.attempt ?? 0) >= 3
  );
  assert.equal(third.retry!.attempt, 3);
  assert.ok(third.error instanceof SyncError);
  const attempts = states.items
    .filter((s) => s.current === "disconnected")
    .map((s) => s.retry?.attempt);
  assert.deepEqual(attempts.slice(0, 3), [1, 2, 3]);
  // Each transition is reported once, in order, and the getter agrees.
  for (let i = 1; i < states.items.length; i++) {
    assert.equal(states.items[i]!.previous, states.items[i - 1]!.current);
    assert.notEqual(states.items[i]!.previous, states.items[i]!.current);
  }

  proxy.mode = "forward";
  await states.until((s) => s.current === "connected", {
    from: states.items.indexOf(third),
  });
  assert.equal(session.connectionState, "connected");
  assert.equal(session.retry, undefined);
  assert.equal(session.state, "active");
  assert.equal(session.error, undefined);
  assert.ok(session.stats().reconnects >= 1);
});

Deno.test("SyncSession.retry is set while a reconnect is scheduled and equals the transition's retry", async () => {
  await using client = await proxiedClient({
    // A long delay, so the retry stays scheduled while the test looks at it.
    app: {
      reconnect: { minDelayMs: 60_000, maxDelayMs: 60_000 },
      random: () => 0.5,
    },
  });
  const { proxy, app, realm, session } = client;
  await using states = recordConnectionStates(session);
  proxy.dropAll();
  const lost = await states.until((s) => s.current === "disconnected");
  assert.ok(lost.retry !== undefined);
  assert.deepEqual(session.retry, lost.retry);
  assert.equal(session.retry!.attempt, 1);
  assert.equal(session.retry!.lastError, lost.error);
  // Full jitter with random 0.5 within [0, 60 s): about 30 s from now.
  const wait = session.retry!.nextAttemptAt - Date.now();
  assert.ok(wait > 20_000 && wait <= 30_000, `wait ${wait}`);

  // app.reconnect() cancels the delay and dials at once.
  app.reconnect();
  await states.until((s) => s.current === "connected");
  assert.equal(session.retry, undefined);
  await realm.write((tx) => tx.put("T", "x", {}));
  await session.waitForUpload({ signal: bounded() });
});

Deno.test('App reconnect.maxAttempts: after that many failed attempts in a row the session goes to "error" with its own code; waits reject', async () => {
  await using client = await proxiedClient({
    app: { reconnect: { minDelayMs: 1, maxDelayMs: 5, maxAttempts: 3 } },
  });
  const { proxy, realm, session } = client;
  await realm.write((tx) => tx.put("T", "x", {}));
  await session.waitForUpload({ signal: bounded() });
  await using states = recordConnectionStates(session);
  proxy.mode = "refuse";
  proxy.dropAll();
  await realm.write((tx) => tx.put("T", "y", {}));
  const upload = session.waitForUpload({ signal: bounded() });
  const error = await upload.then(
    () => assert.fail("resolved"),
    (e) => e,
  );
  assert.equal(session.state, "error");
  assert.ok(session.error instanceof SyncError);
  assert.equal(error, session.error);
  assert.equal(session.error.isFatal, true);
  assert.equal(session.error.willRetry, false);
  assert.notEqual(session.error.code, "connection_lost");
  assert.equal(session.error.code, "reconnect_gave_up");
  assert.equal(session.retry, undefined);
  await states.finished();
  assert.equal(states.outcome?.kind, "error");
  // The local data is kept.
  assert.deepEqual(realm.get("T", "y"), {});
  // Exactly maxAttempts failed dials were made after the loss.
  const dials = states.items.filter((s) => s.current === "connecting");
  assert.equal(dials.length, 3, "three failed attempts, then no more");
  const last = states.items.at(-1)!;
  assert.equal(last.current, "disconnected");
  assert.equal(last.error, session.error);
  assert.equal(last.retry, undefined);
});

Deno.test("App.reconnect() replaces a socket that went silent (a read in progress), at once", async () => {
  await using client = await proxiedClient({
    // Long keepalive: only reconnect() can save this connection in time.
    app: { keepalive: { pingIntervalMs: 60_000, readTimeoutMs: 120_000 } },
    path: "/~/a",
  });
  const { proxy, app, user, realm: a } = client;
  await using b = await openDownloaded(user, "/~/b");
  await using aStates = recordConnectionStates(a.syncSession);
  await using bStates = recordConnectionStates(b.syncSession);
  const before = proxy.accepted;
  proxy.silence();
  await a.write((tx) => tx.put("T", "x", {}));
  const upload = a.syncSession.waitForUpload({ signal: bounded() });
  app.reconnect();
  await upload;
  // Both sessions of the shared socket reconnected.
  await aStates.until((s) => s.current === "connected");
  await bStates.until((s) => s.current === "connected");
  await b.syncSession.waitForDownload({ signal: bounded() });
  assert.equal(proxy.accepted, before + 1, "one new socket");
  assert.equal(a.syncSession.connectionState, "connected");
  assert.equal(b.syncSession.connectionState, "connected");
  // The abandoned socket's close handshake can never finish through the
  // silent link; end it like a network finally would.
  proxy.dropSilent();
});

Deno.test("App.reconnect() leaves a paused session paused", async () => {
  await using server = await startTestServer();
  await using client = await openClient(fastApp(server.url), "/~/a");
  const { app, user, realm } = client;
  await using other = await openDownloaded(user, "/~/b");
  realm.syncSession.pause();
  await realm.write((tx) => tx.put("T", "x", {}));
  await using states = recordConnectionStates(realm.syncSession);
  await using otherStates = recordConnectionStates(other.syncSession);
  app.reconnect();
  await otherStates.until((s) => s.current === "connected");
  await other.syncSession.waitForDownload({ signal: bounded() });
  assert.deepEqual(states.items, []);
  assert.equal(realm.syncSession.state, "inactive");
  assert.equal(realm.syncSession.connectionState, "disconnected");
  assert.equal(realm.syncSession.stats().pendingUploadChangesets, 1);
  realm.syncSession.resume();
  await realm.syncSession.waitForUpload({ signal: bounded() });
});

Deno.test("Keepalive: a connection with no data within the read timeout is treated as dead and reconnected", async () => {
  await using client = await proxiedClient({
    app: { keepalive: { pingIntervalMs: 50, readTimeoutMs: 300 } },
  });
  const { proxy, realm, session } = client;
  await using states = recordConnectionStates(session);
  proxy.silence();
  const lost = await states.until((s) => s.current === "disconnected");
  assert.ok(lost.error instanceof SyncError);
  assert.equal(lost.error.code, "read_timeout");
  assert.equal(lost.error.isFatal, false);
  await states.until((s) => s.current === "connected");
  await realm.write((tx) => tx.put("T", "x", {}));
  await session.waitForUpload({ signal: bounded() });
  assert.equal(session.state, "active");
  proxy.dropSilent();
});

Deno.test("Keepalive: a healthy idle connection never flaps (pings answer the read timeout)", async () => {
  await using client = await proxiedClient({
    app: { keepalive: { pingIntervalMs: 20, readTimeoutMs: 100 } },
  });
  const { proxy, realm } = client;
  await using states = recordConnectionStates(realm.syncSession);
  // Wait for 20 server→client chunks (PONGs): several read timeouts' worth.
  let chunks = 0;
  let unsubscribe = () => {};
  await condition(
    (poke) => {
      unsubscribe = proxy.onChunk((direction) => {
        if (direction === "toClient") chunks++;
        poke();
      });
      return unsubscribe;
    },
    () => chunks >= 20,
  );
  assert.deepEqual(states.items, []);
  assert.equal(realm.syncSession.connectionState, "connected");
  assert.equal(typeof realm.syncSession.stats().rttMs, "number");
});

Deno.test("Reconnect: every multiplexed session binds again after the server forgot the token (expired): no error, data flows", async () => {
  let now = Date.now();
  await using client = await proxiedClient({
    server: {
      auth: { allowAnonymous: true, accessTokenTtlMs: 60_000 },
      now: () => now,
    },
    path: "/~/a",
  });
  const { proxy, user, realm: a } = client;
  await using b = await openDownloaded(user, "/~/b");
  await using aStates = recordConnectionStates(a.syncSession);
  await using bStates = recordConnectionStates(b.syncSession);
  // The server's clock jumps two hours: the client's access token is expired.
  now += 2 * 60 * 60_000;
  proxy.dropAll();
  await aStates.until((s) => s.current === "disconnected");
  await a.write((tx) => tx.put("T", "a", {}));
  await b.write((tx) => tx.put("T", "b", {}));
  await a.syncSession.waitForUpload({ signal: bounded() });
  await b.syncSession.waitForUpload({ signal: bounded() });
  await aStates.until((s) => s.current === "connected");
  await bStates.until((s) => s.current === "connected");
  for (const realm of [a, b]) {
    assert.equal(realm.syncSession.state, "active");
    assert.equal(realm.syncSession.error, undefined);
  }
});

Deno.test("Reconnect: a server restart is never terminal; the session resumes and catches up", async () => {
  using kv = await Deno.openKv(":memory:");
  const first = await startTestServer({ kv, permissions: () => "readwrite" });
  const port = first.addr.port;
  await using proxy = new TcpProxy(first.addr);
  await using client = await openClient(fastApp(proxy.url), "/shared/doc");
  const { realm } = client;
  await realm.write((tx) => tx.put("T", "before", {}));
  await realm.syncSession.waitForUpload({ signal: bounded() });
  await using states = recordConnectionStates(realm.syncSession);
  await first.shutdown();
  await states.until((s) => s.current === "disconnected");
  await realm.write((tx) => tx.put("T", "offline", {}));
  await using second = await startTestServer({
    kv,
    port,
    permissions: () => "readwrite",
  });
  await realm.syncSession.waitForUpload({ signal: bounded() });
  assert.equal(realm.syncSession.state, "active");
  assert.equal(second.stats().changesetsIntegrated, 1);
});

Deno.test("Keepalive: a slow download longer than the read timeout is never cut (bounded DOWNLOAD batches keep the link alive)", async () => {
  await using server = await startTestServer({
    permissions: () => "readwrite",
    downloadBatchBytes: 2048,
    history: { snapshots: false },
  });
  {
    await using seed = await openClient(fastApp(server.url), "/shared/big");
    const seedRealm = seed.realm;
    for (let round = 0; round < 10; round++) {
      await seedRealm.write((tx) => {
        for (let i = 0; i < 10; i++) {
          tx.put("T", `t${round}-${i}`, { text: "z".repeat(300) });
        }
      });
    }
    await seedRealm.syncSession.waitForUpload({ signal: bounded() });
  }
  await using proxy = new TcpProxy(server.addr);
  await using app = fastApp(proxy.url, {
    keepalive: { pingIntervalMs: 100, readTimeoutMs: 250 },
  });
  const user = await app.logIn(Credentials.anonymous());
  // About 30 KB at 2 KB per 50 ms: over half a second, twice the read timeout.
  proxy.throttle = { bytes: 2048, everyMs: 50 };
  await using realm = await user.openRealm({ path: "/shared/big" });
  await using states = recordConnectionStates(realm.syncSession);
  await realm.syncSession.waitForDownload({ signal: bounded() });
  assert.equal(realm.objects("T").length, 100);
  assert.ok(
    !states.items.some((s) => s.current === "disconnected"),
    JSON.stringify(states.items),
  );
  proxy.throttle = undefined;
});

Deno.test("Reconnect: an upload whose acknowledgement was lost is sent again and integrated once", async () => {
  await using server = await startTestServer({
    permissions: () => "readwrite",
  });
  await using proxy = new TcpProxy(server.addr);
  await using writer = await openClient(fastApp(proxy.url), "/shared/d");
  await using reader = await openClient(fastApp(server.url), "/shared/d");
  await using remote = new Recorder(
    reader.realm.changes({ signal: bounded() }),
  );
  // The upload reaches the server; its acknowledgement never comes back.
  proxy.deafen();
  await writer.realm.write((tx) => tx.put("T", "once", { n: 1 }));
  await remote.until((c) => c.changes.some((o) => o.id === "once"));
  assert.equal(server.stats().changesetsIntegrated, 1);
  assert.equal(writer.session.stats().pendingUploadChangesets, 1);
  writer.app.reconnect();
  await writer.session.waitForUpload({ signal: bounded() });
  proxy.dropSilent();
  await reader.session.waitForDownload({ signal: bounded() });
  assert.equal(server.stats().changesetsIntegrated, 1);
  assert.equal(remote.items.length, 1);
  assert.deepEqual(writer.realm.objects("T"), reader.realm.objects("T"));
});

Deno.test("Tokens: the access token is refreshed in-band before it expires, without dropping the socket", async () => {
  await using server = await startTestServer({
    auth: { allowAnonymous: true, accessTokenTtlMs: 1_000 },
  });
  const refreshes: LogRecord[] = [];
  let poke = () => {};
  const app = fastApp(server.url, {
    logger: (record) => {
      if (record.event.includes("refresh")) refreshes.push(record);
      poke();
    },
  });
  await using client = await openClient(app, "/~/a");
  const { user, realm: a } = client;
  await using b = await openDownloaded(user, "/~/b");
  await using aStates = recordConnectionStates(a.syncSession);
  await using bStates = recordConnectionStates(b.syncSession);
  // Three token lifetimes on one socket.
  await condition(
    (wake) => {
      poke = wake;
      return () => poke = () => {};
    },
    () => refreshes.length >= 3,
  );
  await a.write((tx) => tx.put("T", "x", {}));
  await a.syncSession.waitForUpload({ signal: bounded() });
  await b.syncSession.waitForDownload({ signal: bounded() });
  assert.deepEqual(aStates.items, []);
  assert.deepEqual(bStates.items, []);
  assert.equal(server.stats().connections, 1);
  assert.ok(refreshes.every((r) => r.level !== "warn" && r.level !== "error"));
});

/** Drops the server's token signing key (SERVER.md "Storage"): every token
 * it issued stops verifying, while the realms' data stays. */
async function forgetSigningKey(kv: Deno.Kv): Promise<void> {
  await kv.delete(["tether", "server", "signing_key"]);
}

Deno.test("Tokens: after the server's signing key changed (no token verifies), a JWT user logs in again by itself and syncs on", async () => {
  const secret = "conformance-secret";
  using kv = await Deno.openKv(":memory:");
  const first = await startTestServer({ kv, auth: { jwtSecret: secret } });
  const port = first.addr.port;
  await using proxy = new TcpProxy(first.addr);
  await using app = fastApp(proxy.url);
  const jwt = await signUserJwt(secret, {
    sub: "alice",
    exp: Math.floor(Date.now() / 1000) + 3600,
  });
  const user = await app.logIn(Credentials.jwt(jwt));
  await using realm = await openDownloaded(user, "/~/todos");
  await using states = recordConnectionStates(realm.syncSession);
  await first.shutdown();
  await states.until((s) => s.current === "disconnected");
  await realm.write((tx) => tx.put("T", "offline", { n: 1 }));
  // The server comes back with a new signing key.
  await forgetSigningKey(kv);
  await using second = await startTestServer({
    kv,
    port,
    auth: { jwtSecret: secret },
  });
  await realm.syncSession.waitForUpload({ signal: bounded() });
  assert.equal(realm.syncSession.state, "active");
  assert.equal(realm.syncSession.error, undefined);
  assert.equal(second.stats().changesetsIntegrated, 1);
});

Deno.test('Tokens: an anonymous user whose tokens no longer verify ends in "error" (it cannot log in again as itself), without a loop', async () => {
  using kv = await Deno.openKv(":memory:");
  const first = await startTestServer({ kv });
  const port = first.addr.port;
  await using proxy = new TcpProxy(first.addr);
  await using client = await openClient(fastApp(proxy.url));
  const { realm } = client;
  await using states = recordConnectionStates(realm.syncSession);
  await first.shutdown();
  await states.until((s) => s.current === "disconnected");
  await realm.write((tx) => tx.put("T", "kept", { n: 1 }));
  await forgetSigningKey(kv);
  await using _second = await startTestServer({ kv, port });
  await states.finished();
  assert.equal(states.outcome?.kind, "error");
  assert.equal(realm.syncSession.state, "error");
  assert.ok(realm.syncSession.error instanceof SyncError);
  assert.equal(realm.syncSession.error.isFatal, true);
  assert.equal(realm.syncSession.error.code, "login_failed");
  assert.deepEqual(realm.get("T", "kept"), { n: 1 });
  // Bounded: a handful of dials, not a loop.
  assert.ok(
    states.items.filter((s) => s.current === "connecting").length <= 5,
    JSON.stringify(states.items),
  );
});
