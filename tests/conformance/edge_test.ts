// Conformance: corners of the session rules (docs/CLIENT.md) — pause while a retry
// is scheduled, waits with nothing to wait for, unreachable login, give-up
// with several sessions, registrations before the first connection.

import assert from "node:assert/strict";
import { Credentials, type Progress, SyncError } from "../../mod.ts";
import { TcpProxy } from "../_helpers/tcp_proxy.ts";
import {
  fastApp,
  openClient,
  openDownloaded,
  proxiedClient,
  recordConnectionStates,
} from "./_helpers.ts";
import { bounded, Recorder } from "../_helpers/waits.ts";
import { startTestServer } from "../_helpers/test_server.ts";

Deno.test("SyncSession.pause() while a reconnect is scheduled: inactive, disconnected, no retry; resume() dials again", async () => {
  await using client = await proxiedClient({
    app: { reconnect: { minDelayMs: 60_000, maxDelayMs: 60_000 } },
  });
  const { proxy, session } = client;
  await using states = recordConnectionStates(session);
  proxy.mode = "refuse";
  proxy.dropAll();
  await states.until((s) => s.retry !== undefined);
  assert.ok(session.retry !== undefined);
  session.pause();
  assert.equal(session.state, "inactive");
  assert.equal(session.connectionState, "disconnected");
  assert.equal(session.retry, undefined, "a paused session has no retry");
  proxy.mode = "forward";
  session.resume();
  await states.until((s) => s.current === "connected");
  assert.equal(session.retry, undefined);
  // The getter and the stream agree.
  assert.equal(states.items.at(-1)!.current, session.connectionState);
});

Deno.test("SyncSession.waitForUpload() with nothing pending resolves at once, also while paused or offline", async () => {
  await using client = await proxiedClient();
  const { proxy, session } = client;
  session.pause();
  await session.waitForUpload({ signal: bounded() });
  session.resume();
  proxy.mode = "refuse";
  proxy.dropAll();
  await session.waitForUpload({ signal: bounded() });
  proxy.mode = "forward";
});

Deno.test("App.logIn() against an unreachable server settles with a SyncError", async () => {
  // A port that was just free: nothing listens there.
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  await using app = fastApp(`http://127.0.0.1:${port}`, {
    reconnect: { minDelayMs: 1, maxDelayMs: 5, maxAttempts: 2 },
  });
  const error = await app.logIn(Credentials.anonymous(), {
    signal: bounded(),
  }).then(
    () => assert.fail("logged in"),
    (e) => e,
  );
  assert.ok(error instanceof SyncError, String(error));
});

Deno.test("App reconnect.maxAttempts ends every session of the shared socket", async () => {
  await using client = await proxiedClient({
    app: { reconnect: { minDelayMs: 1, maxDelayMs: 5, maxAttempts: 2 } },
    path: "/~/a",
  });
  const { proxy, user, realm: a } = client;
  await using b = await openDownloaded(user, "/~/b");
  await using aStates = recordConnectionStates(a.syncSession);
  await using bStates = recordConnectionStates(b.syncSession);
  proxy.mode = "refuse";
  proxy.dropAll();
  await aStates.finished();
  await bStates.finished();
  for (const realm of [a, b]) {
    assert.equal(realm.syncSession.state, "error");
    assert.equal(realm.syncSession.error?.code, "reconnect_gave_up");
  }
});

Deno.test("SyncSession download reportIndefinitely registered before the first connection reports once figures exist, and ends at 1.0", async () => {
  await using server = await startTestServer({
    permissions: () => "readwrite",
  });
  {
    await using seed = await openClient(fastApp(server.url), "/shared/x");
    const seedRealm = seed.realm;
    await seedRealm.write((tx) => tx.put("T", "1", { n: 1 }));
    await seedRealm.syncSession.waitForUpload({ signal: bounded() });
  }
  await using proxy = new TcpProxy(server.addr);
  await using app = fastApp(proxy.url);
  const user = await app.logIn(Credentials.anonymous());
  proxy.mode = "refuse";
  await using realm = await user.openRealm({ path: "/shared/x" });
  const session = realm.syncSession;
  await using stream = new Recorder(
    session.getProgressStream("download", "reportIndefinitely", {
      signal: bounded(),
    }),
  );
  proxy.mode = "forward";
  app.reconnect();
  const done = await stream.until((p) => p.progressEstimate === 1);
  assert.ok(done.transferredBytes > 0, JSON.stringify(stream.items));
  assert.equal(done.transferredBytes, done.transferableBytes);
  for (const p of stream.items) {
    assert.ok(p.progressEstimate >= 0 && p.progressEstimate <= 1);
  }
  assert.deepEqual(realm.get("T", "1"), { n: 1 });
});

Deno.test("SyncSession upload forCurrentlyOutstandingWork includes a write sent but not yet acknowledged", async () => {
  await using client = await proxiedClient();
  const { proxy, app, realm, session } = client;
  // The link goes silent: the upload leaves but its acknowledgement never comes.
  proxy.silence();
  await realm.write((tx) => tx.put("T", "x", { text: "y".repeat(100) }));
  const events: Progress[] = [];
  await using stream = new Recorder(
    session.getProgressStream("upload", "forCurrentlyOutstandingWork", {
      signal: bounded(),
    }),
  );
  const first = await stream.until(() => true);
  events.push(first);
  assert.ok(first.transferableBytes > 0);
  assert.equal(first.transferredBytes, 0);
  assert.ok(first.progressEstimate < 1);
  app.reconnect();
  await stream.finished();
  assert.deepEqual(stream.outcome, { kind: "end" });
  assert.equal(stream.items.at(-1)!.progressEstimate, 1);
  assert.equal(stream.items.at(-1)!.transferableBytes, first.transferableBytes);
  proxy.dropSilent();
});

Deno.test("SyncSession pause()/resume() toggled in quick succession settles connected, with every transition reported once and in order", async () => {
  await using server = await startTestServer();
  await using client = await openClient(fastApp(server.url));
  const { user, realm, session } = client;
  await using other = await openDownloaded(user, "/~/other");
  await using states = recordConnectionStates(session);
  await using otherStates = recordConnectionStates(other.syncSession);
  // Deterministic pattern of toggles, some synchronous, some after a turn.
  for (let i = 0; i < 12; i++) {
    session.pause();
    await realm.write((tx) => tx.put("T", `x${i}`, { i }));
    if (i % 3 === 0) await Promise.resolve();
    session.resume();
    if (i % 2 === 0) await session.waitForDownload({ signal: bounded() });
  }
  await session.waitForUpload({ signal: bounded() });
  await session.waitForDownload({ signal: bounded() });
  assert.equal(session.connectionState, "connected");
  assert.equal(session.state, "active");
  for (let i = 1; i < states.items.length; i++) {
    assert.equal(states.items[i]!.previous, states.items[i - 1]!.current);
  }
  assert.equal(states.items.at(-1)!.current, "connected");
  assert.deepEqual(otherStates.items, []);
  assert.equal(server.stats().sessions, 2);
  assert.equal(server.stats().changesetsIntegrated, 12);
});

Deno.test("App.reconnect() called repeatedly ends with one socket and every session connected", async () => {
  await using server = await startTestServer();
  await using client = await openClient(fastApp(server.url), "/~/a");
  const { app, user, realm: a } = client;
  await using b = await openDownloaded(user, "/~/b");
  for (let i = 0; i < 5; i++) {
    app.reconnect();
    if (i % 2 === 1) await Promise.resolve();
  }
  await a.write((tx) => tx.put("T", "a", {}));
  await b.write((tx) => tx.put("T", "b", {}));
  await a.syncSession.waitForUpload({ signal: bounded() });
  await b.syncSession.waitForUpload({ signal: bounded() });
  await a.syncSession.waitForDownload({ signal: bounded() });
  await b.syncSession.waitForDownload({ signal: bounded() });
  assert.equal(a.syncSession.connectionState, "connected");
  assert.equal(b.syncSession.connectionState, "connected");
  assert.equal(server.stats().sessions, 2);
  assert.equal(server.stats().changesetsIntegrated, 2);
});

Deno.test("Realm.write() whose function throws commits nothing and does not disturb the writes around it", async () => {
  await using server = await startTestServer();
  await using client = await openClient(fastApp(server.url));
  const { realm } = client;
  const boom = new Error("boom");
  const results = await Promise.allSettled([
    realm.write((tx) => tx.put("T", "a", { n: 1 })),
    realm.write((tx) => {
      tx.put("T", "b", { n: 2 });
      throw boom;
    }),
    realm.write((tx) => tx.update("T", "a", { n: 3 })),
  ]);
  assert.equal(results[0]!.status, "fulfilled");
  assert.deepEqual(results[1], { status: "rejected", reason: boom });
  assert.equal(results[2]!.status, "fulfilled");
  assert.deepEqual(realm.get("T", "a"), { n: 3 });
  assert.equal(realm.get("T", "b"), undefined);
  await realm.syncSession.waitForUpload({ signal: bounded() });
  assert.equal(server.stats().changesetsIntegrated, 2);
});

Deno.test("User.openRealm() after closing a realm opens a fresh, working session on the same path", async () => {
  await using server = await startTestServer();
  await using app = fastApp(server.url);
  const user = await app.logIn(Credentials.anonymous());
  const first = await openDownloaded(user, "/~/todos");
  await first.write((tx) => tx.put("T", "x", { n: 1 }));
  await first.syncSession.waitForUpload({ signal: bounded() });
  await first.close();
  assert.equal(user.allSessions.includes(first.syncSession), false);
  await using second = await openDownloaded(user, "/~/todos");
  assert.equal(user.sessionFor("/~/todos"), second.syncSession);
  assert.deepEqual(second.get("T", "x"), { n: 1 });
  await second.write((tx) => tx.put("T", "y", { n: 2 }));
  await second.syncSession.waitForUpload({ signal: bounded() });
});

Deno.test("User.openRealm() rejected by the server leaves no session behind", async () => {
  await using server = await startTestServer();
  await using app = fastApp(server.url);
  const user = await app.logIn(Credentials.anonymous());
  await assert.rejects(
    user.openRealm({
      path: "/other-user/x",
      waitForDownload: true,
      signal: bounded(),
    }),
    SyncError,
  );
  assert.equal(user.sessionFor("/other-user/x"), undefined);
  assert.deepEqual(user.allSessions, []);
});
