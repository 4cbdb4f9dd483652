// Conformance: the session rules (docs/CLIENT.md) — open, pause/resume, waits,
// aborts, fatal errors, multiplexing — through the public entry points only.

import assert from "node:assert/strict";
import {
  Credentials,
  type Progress,
  SyncError,
  type SyncSession,
} from "../../mod.ts";
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

/**
 * Settles (true) or not yet (false), after letting pending work run. Used
 * only to show that something is still waiting — never to wait for an event:
 * a correct implementation keeps these promises pending, so the check cannot
 * fail by timing.
 */
async function isSettled(promise: Promise<unknown>): Promise<boolean> {
  let settled = false;
  promise.then(() => settled = true, () => settled = true);
  // Two macrotask turns: enough for anything already resolved to propagate.
  await new Promise((r) => setTimeout(r, 0));
  await new Promise((r) => setTimeout(r, 0));
  return settled;
}

async function errorOf(promise: Promise<unknown>): Promise<unknown> {
  return await promise.then(
    () => assert.fail("expected a rejection"),
    (error) => error,
  );
}

Deno.test("User.openRealm() without waitForDownload opens a forbidden path; the session reports the server's error and keeps local data", async () => {
  await using server = await startTestServer();
  await using app = fastApp(server.url);
  const user = await app.logIn(Credentials.anonymous());
  await using realm = await user.openRealm({ path: "/somebody-else/todos" });
  const session = realm.syncSession;
  await using states = new Recorder(
    session.connectionStateChanges({ signal: bounded() }),
  );
  await realm.write((tx) => tx.put("Task", "t1", { title: "mine" }));
  await states.finished();
  assert.equal(session.state, "error");
  assert.ok(session.error instanceof SyncError);
  assert.equal(session.error.code, "permission_denied");
  assert.equal(session.error.isFatal, true);
  assert.equal(session.error.willRetry, false);
  assert.equal(session.connectionState, "disconnected");
  assert.equal(session.retry, undefined);
  // The stream errored with the session's error.
  assert.equal(states.outcome?.kind, "error");
  // Local data is kept, readable and writable.
  assert.deepEqual(realm.get("Task", "t1"), { title: "mine" });
  await realm.write((tx) => tx.put("Task", "t2", { title: "still" }));
  assert.equal(realm.objects("Task").length, 2);
});

Deno.test("User.openRealm() with waitForDownload on a forbidden path rejects with the server's SyncError", async () => {
  await using server = await startTestServer();
  await using app = fastApp(server.url);
  const user = await app.logIn(Credentials.anonymous());
  const error = await errorOf(user.openRealm({
    path: "/somebody-else/todos",
    waitForDownload: true,
    signal: bounded(),
  }));
  assert.ok(error instanceof SyncError, String(error));
  assert.equal(error.code, "permission_denied");
  assert.equal(error.isFatal, true);
});

Deno.test("User.openRealm() offline without waitForDownload opens the local copy; writes commit; waits wait", async () => {
  await using server = await startTestServer();
  await using proxy = new TcpProxy(server.addr);
  await using app = fastApp(proxy.url);
  const user = await app.logIn(Credentials.anonymous());
  proxy.mode = "refuse";
  await using realm = await user.openRealm({ path: "/~/todos" });
  const session = realm.syncSession;
  assert.equal(session.state, "active");
  const receipt = await realm.write((tx) => tx.put("Task", "t", { n: 1 }));
  assert.deepEqual(realm.get("Task", "t"), { n: 1 });
  const upload = session.waitForUpload({ signal: bounded() });
  const download = session.waitForDownload({ signal: bounded() });
  const own = receipt.waitForUpload({ signal: bounded() });
  assert.equal(await isSettled(Promise.race([upload, download, own])), false);
  assert.notEqual(session.connectionState, "connected");
  proxy.mode = "forward";
  await Promise.all([upload, download, own]);
  assert.equal(session.connectionState, "connected");
});

Deno.test("User.openRealm() with an already-aborted signal rejects with the signal's reason", async () => {
  await using server = await startTestServer();
  await using app = fastApp(server.url);
  const user = await app.logIn(Credentials.anonymous());
  const reason = { why: "already" };
  const error = await errorOf(user.openRealm({
    path: "/~/todos",
    waitForDownload: true,
    signal: AbortSignal.abort(reason),
  }));
  assert.equal(error, reason);
});

Deno.test("User.openRealm() aborted while waiting for the download rejects with the signal's reason", async () => {
  await using server = await startTestServer();
  await using proxy = new TcpProxy(server.addr);
  await using app = fastApp(proxy.url);
  const user = await app.logIn(Credentials.anonymous());
  proxy.mode = "refuse";
  const controller = new AbortController();
  const opening = user.openRealm({
    path: "/~/todos",
    waitForDownload: true,
    signal: controller.signal,
  });
  assert.equal(await isSettled(opening), false);
  const reason = new Error("user gave up");
  controller.abort(reason);
  assert.equal(await errorOf(opening), reason);
  // What the open made is closed again; the path can be opened anew.
  assert.deepEqual(user.allSessions, []);
  proxy.mode = "forward";
  await using realm = await user.openRealm({
    path: "/~/todos",
    waitForDownload: true,
    signal: bounded(),
  });
  assert.equal(realm.syncSession.connectionState, "connected");
});

Deno.test("App.logIn() with an aborted signal rejects with the signal's reason", async () => {
  await using server = await startTestServer();
  await using app = fastApp(server.url);
  const reason = { why: "no" };
  assert.equal(
    await errorOf(
      app.logIn(Credentials.anonymous(), { signal: AbortSignal.abort(reason) }),
    ),
    reason,
  );
});

Deno.test("SyncSession waits reject with the signal's reason (the same object), already aborted or aborted while waiting, and the session stays usable", async (t) => {
  await using server = await startTestServer();
  await using client = await openClient(fastApp(server.url));
  const { realm, session } = client;
  const receipt = await realm.write((tx) => tx.put("Task", "t", { n: 1 }));
  await receipt.waitForUpload({ signal: bounded() });

  const waits: Record<string, (signal: AbortSignal) => Promise<void>> = {
    "waitForUpload": (signal) => session.waitForUpload({ signal }),
    "waitForDownload": (signal) => session.waitForDownload({ signal }),
    "receipt.waitForUpload": (signal) => receipt.waitForUpload({ signal }),
  };
  for (const [name, wait] of Object.entries(waits)) {
    await t.step(`${name}, already aborted`, async () => {
      const reason = { name };
      assert.equal(await errorOf(wait(AbortSignal.abort(reason))), reason);
    });
  }
  await t.step(
    "aborted while waiting (paused, so nothing completes)",
    async () => {
      session.pause();
      const pending = await realm.write((tx) => tx.put("Task", "u", { n: 2 }));
      const names = [
        "waitForUpload",
        "waitForDownload",
        "receipt.waitForUpload",
      ];
      const controllers = names.map(() => new AbortController());
      const promises = [
        session.waitForUpload({ signal: controllers[0]!.signal }),
        session.waitForDownload({ signal: controllers[1]!.signal }),
        pending.waitForUpload({ signal: controllers[2]!.signal }),
      ];
      for (const promise of promises) {
        assert.equal(await isSettled(promise), false);
      }
      for (let i = 0; i < names.length; i++) {
        const reason = new DOMException(names[i]!, "AbortError");
        controllers[i]!.abort(reason);
        assert.equal(await errorOf(promises[i]!), reason);
      }
      session.resume();
      await pending.waitForUpload({ signal: bounded() });
      await session.waitForUpload({ signal: bounded() });
      await session.waitForDownload({ signal: bounded() });
    },
  );
});

Deno.test("SyncSession waits wait (not fail) while paused, and complete after resume()", async () => {
  await using server = await startTestServer();
  await using client = await openClient(fastApp(server.url));
  const { user, realm, session } = client;
  session.pause();
  session.pause(); // idempotent
  assert.equal(session.state, "inactive");
  assert.equal(session.connectionState, "disconnected");
  await realm.write((tx) => tx.put("Task", "t", { n: 1 }));
  const upload = session.waitForUpload({ signal: bounded() });
  const download = session.waitForDownload({ signal: bounded() });
  // A round trip of another realm on the same socket, to give the paused one
  // every chance to (wrongly) finish.
  {
    await using other = await openDownloaded(user, "/~/other");
    await other.write((tx) => tx.put("X", "x", {}));
    await other.syncSession.waitForUpload({ signal: bounded() });
  }
  assert.equal(await isSettled(upload), false);
  assert.equal(await isSettled(download), false);
  assert.equal(session.stats().pendingUploadChangesets, 1);
  session.resume();
  session.resume(); // idempotent
  await upload;
  await download;
  assert.equal(session.state, "active");
});

Deno.test("SyncSession.pause() of one session never touches another on the same socket; resume() reports connecting → connected", async () => {
  await using server = await startTestServer();
  await using proxy = new TcpProxy(server.addr);
  await using app = fastApp(proxy.url);
  const user = await app.logIn(Credentials.anonymous());
  // Counted after the login, which has a connection of its own.
  const beforeOpen = proxy.accepted;
  await using a = await openDownloaded(user, "/~/a");
  await using b = await openDownloaded(user, "/~/b");
  await using c = await openDownloaded(user, "/~/c");
  // All sessions share one WebSocket.
  assert.equal(server.stats().connections, 1);
  const accepted = proxy.accepted;
  assert.equal(accepted - beforeOpen, 1, "one socket for three sessions");

  await using aStates = recordConnectionStates(a.syncSession);
  await using bStates = recordConnectionStates(b.syncSession);
  const integrated = server.stats().changesetsIntegrated;
  a.syncSession.pause();
  assert.equal(a.syncSession.state, "inactive");
  assert.equal(a.syncSession.connectionState, "disconnected");
  await aStates.until((s) => s.current === "disconnected");
  assert.equal(aStates.items[0]!.previous, "connected");
  assert.equal(aStates.items[0]!.error, undefined, "a pause is not an error");
  await a.write((tx) => tx.put("T", "a1", { n: 1 }));
  await a.write((tx) => tx.put("T", "a2", { n: 2 }));

  // b is untouched: still connected, and syncs.
  assert.equal(b.syncSession.state, "active");
  assert.equal(b.syncSession.connectionState, "connected");
  await b.write((tx) => tx.put("T", "b1", { n: 1 }));
  await b.syncSession.waitForUpload({ signal: bounded() });
  await c.syncSession.waitForDownload({ signal: bounded() });
  assert.equal(server.stats().changesetsIntegrated, integrated + 1);
  assert.equal(a.syncSession.stats().pendingUploadChangesets, 2);
  assert.deepEqual(bStates.items, []);

  a.syncSession.resume();
  await a.syncSession.waitForUpload({ signal: bounded() });
  await aStates.until((s) => s.current === "connected");
  assert.deepEqual(
    aStates.items.map((s) => `${s.previous}→${s.current}`),
    [
      "connected→disconnected",
      "disconnected→connecting",
      "connecting→connected",
    ],
  );
  assert.equal(server.stats().changesetsIntegrated, integrated + 3);
  assert.deepEqual(bStates.items, []);
  assert.equal(proxy.accepted, accepted, "no new socket");
});

Deno.test("SyncSession: one session's fatal error or close never takes the shared socket from the others", async () => {
  await using client = await proxiedClient({ path: "/~/good" });
  const { proxy, user, realm: good } = client;
  await using goodStates = recordConnectionStates(good.syncSession);
  const accepted = proxy.accepted;
  const forbidden = await errorOf(user.openRealm({
    path: "/not-mine/x",
    waitForDownload: true,
    signal: bounded(),
  }));
  assert.ok(forbidden instanceof SyncError);
  {
    await using closing = await openDownloaded(user, "/~/closing");
    await closing.write((tx) => tx.put("T", "x", {}));
    await closing.syncSession.waitForUpload({ signal: bounded() });
  }
  await good.write((tx) => tx.put("T", "g", {}));
  await good.syncSession.waitForUpload({ signal: bounded() });
  await good.syncSession.waitForDownload({ signal: bounded() });
  assert.deepEqual(goodStates.items, []);
  assert.equal(good.syncSession.connectionState, "connected");
  assert.equal(proxy.accepted, accepted);
});

Deno.test('SyncSession fatal error: state "error", pending waits reject with the session\'s error, streams error, new registrations are refused, local data stays', async () => {
  let allowed = true;
  await using client = await proxiedClient({
    server: { permissions: () => allowed ? "readwrite" : "none" },
    path: "/shared/doc",
  });
  const { proxy, app, realm } = client;
  const session: SyncSession = client.session;
  await realm.write((tx) => tx.put("T", "synced", { n: 0 }));
  await session.waitForUpload({ signal: bounded() });

  // Offline, with a local write outstanding.
  proxy.mode = "refuse";
  proxy.dropAll();
  await realm.write((tx) => tx.put("T", "local", { n: 1 }));
  await using states = recordConnectionStates(session);
  // The upload capture holds the write made offline, so it cannot complete.
  await using uploadStream = new Recorder(
    session.getProgressStream("upload", "forCurrentlyOutstandingWork", {
      signal: bounded(),
    }),
  );
  await using downloadStream = new Recorder(
    session.getProgressStream("download", "reportIndefinitely", {
      signal: bounded(),
    }),
  );
  const upload = session.waitForUpload({ signal: bounded() });
  const download = session.waitForDownload({ signal: bounded() });
  assert.equal(await isSettled(Promise.race([upload, download])), false);

  // The server now refuses the path: the rebind fails fatally.
  allowed = false;
  proxy.mode = "forward";
  app.reconnect();
  const uploadError = await errorOf(upload);
  const downloadError = await errorOf(download);
  assert.equal(session.state, "error");
  assert.ok(session.error instanceof SyncError);
  assert.equal(session.error.code, "permission_denied");
  assert.equal(uploadError, session.error);
  assert.equal(downloadError, session.error);

  await states.finished();
  await uploadStream.finished();
  await downloadStream.finished();
  assert.deepEqual(states.outcome, { kind: "error", error: session.error });
  assert.equal(states.items.at(-1)!.current, "disconnected");
  assert.equal(session.connectionState, "disconnected");
  assert.deepEqual(uploadStream.outcome, {
    kind: "error",
    error: session.error,
  });
  assert.deepEqual(downloadStream.outcome, {
    kind: "error",
    error: session.error,
  });

  // Later calls settle at once with the same error.
  assert.equal(
    await errorOf(session.waitForUpload({ signal: bounded() })),
    session.error,
  );
  assert.equal(
    await errorOf(session.waitForDownload({ signal: bounded() })),
    session.error,
  );
  const cb = (_a: number, _b: number, _p: Progress) => {};
  assert.equal(
    session.addProgressNotification("upload", "reportIndefinitely", cb),
    null,
  );
  assert.equal(
    session.addProgressNotification(
      "download",
      "forCurrentlyOutstandingWork",
      cb,
    ),
    null,
  );
  await using late = new Recorder(
    session.getProgressStream("upload", "forCurrentlyOutstandingWork", {
      signal: bounded(),
    }),
  );
  await late.finished();
  assert.deepEqual(late.outcome, { kind: "error", error: session.error });

  // Local data kept.
  assert.deepEqual(realm.get("T", "local"), { n: 1 });
  assert.deepEqual(realm.get("T", "synced"), { n: 0 });
  await realm.write((tx) => tx.put("T", "after", { n: 2 }));
  assert.deepEqual(realm.get("T", "after"), { n: 2 });
  // pause/resume are safe in the error state.
  session.pause();
  session.resume();
  assert.equal(session.state, "error");
});

Deno.test("SyncSession waits reject with a SyncError when the realm closes (never hang)", async () => {
  await using server = await startTestServer();
  await using app = fastApp(server.url);
  const user = await app.logIn(Credentials.anonymous());
  // Not disposed by a fixture: closing the realm is what this test does.
  const realm = await openDownloaded(user, "/~/todos");
  const session = realm.syncSession;
  session.pause();
  await realm.write((tx) => tx.put("T", "x", {}));
  const upload = session.waitForUpload({ signal: bounded() });
  const download = session.waitForDownload({ signal: bounded() });
  await using stream = new Recorder(
    session.getProgressStream("upload", "reportIndefinitely", {
      signal: bounded(),
    }),
  );
  await realm.close();
  await realm.close(); // twice is safe
  const e1 = await errorOf(upload);
  const e2 = await errorOf(download);
  assert.ok(e1 instanceof SyncError, String(e1));
  assert.ok(e2 instanceof SyncError, String(e2));
  await stream.finished();
});

Deno.test("SyncSession.connectionStateChanges() ends when its signal aborts (also when already aborted); Realm.changes() too", async () => {
  await using server = await startTestServer();
  await using client = await openClient(fastApp(server.url));
  const { realm } = client;
  const aborted = AbortSignal.abort(new Error("already"));
  await using s1 = new Recorder(
    realm.syncSession.connectionStateChanges({ signal: aborted }),
  );
  await using c1 = new Recorder(realm.changes({ signal: aborted }));
  await s1.finished();
  await c1.finished();
  assert.deepEqual(s1.outcome, { kind: "end" });
  assert.deepEqual(c1.outcome, { kind: "end" });

  const controller = new AbortController();
  await using s2 = new Recorder(
    realm.syncSession.connectionStateChanges({ signal: controller.signal }),
  );
  await using c2 = new Recorder(realm.changes({ signal: controller.signal }));
  await realm.write((tx) => tx.put("T", "x", {}));
  await c2.until(() => true);
  controller.abort(new Error("stop"));
  await s2.finished();
  await c2.finished();
  assert.deepEqual(s2.outcome, { kind: "end" });
  assert.deepEqual(c2.outcome, { kind: "end" });
});

Deno.test("App.close() settles pending waits with a SyncError, releases a scheduled reconnect, and is safe twice", async () => {
  await using server = await startTestServer();
  await using proxy = new TcpProxy(server.addr);
  const app = fastApp(proxy.url, {
    reconnect: { minDelayMs: 60_000, maxDelayMs: 60_000 },
  });
  try {
    const user = await app.logIn(Credentials.anonymous());
    const realm = await openDownloaded(user, "/~/todos");
    const session = realm.syncSession;
    await using states = recordConnectionStates(session);
    proxy.mode = "refuse";
    proxy.dropAll();
    await states.until((s) => s.retry !== undefined);
    await realm.write((tx) => tx.put("T", "x", {}));
    const upload = session.waitForUpload({ signal: bounded() });
    const download = session.waitForDownload({ signal: bounded() });
    const accepted = proxy.accepted;
    await app.close();
    const e1 = await errorOf(upload);
    const e2 = await errorOf(download);
    assert.ok(e1 instanceof SyncError, String(e1));
    assert.ok(e2 instanceof SyncError, String(e2));
    await states.finished();
    assert.equal(realm.isClosed, true);
    assert.equal(proxy.accepted, accepted);
    // The op sanitizer proves the 60 s retry timer is gone.
  } finally {
    await app.close();
    await app.close();
  }
});

Deno.test("SyncSession.waitForDownload() called offline resolves after the reconnect, with everything the server held at the call visible", async () => {
  await using server = await startTestServer({
    permissions: () => "readwrite",
  });
  await using proxy = new TcpProxy(server.addr);
  await using writer = await openClient(fastApp(server.url), "/shared/doc");
  await using reader = await openClient(fastApp(proxy.url), "/shared/doc");
  await using states = recordConnectionStates(reader.session);
  proxy.mode = "refuse";
  proxy.dropAll();
  await states.until((s) => s.current === "disconnected");
  await writer.realm.write((tx) => {
    for (let i = 0; i < 50; i++) tx.put("T", `t${i}`, { i });
  });
  await writer.session.waitForUpload({ signal: bounded() });
  const download = reader.session.waitForDownload({ signal: bounded() });
  assert.equal(await isSettled(download), false);
  proxy.mode = "forward";
  await download;
  assert.equal(reader.realm.objects("T").length, 50);
});

Deno.test("Reconnect: delivery resumes from the last applied position; no remote change is delivered twice", async () => {
  await using server = await startTestServer({
    permissions: () => "readwrite",
  });
  await using proxy = new TcpProxy(server.addr);
  await using writer = await openClient(fastApp(server.url), "/shared/doc");
  await using reader = await openClient(fastApp(proxy.url), "/shared/doc");
  await using changes = new Recorder(
    reader.realm.changes({ signal: bounded() }),
  );
  for (let round = 0; round < 5; round++) {
    await writer.realm.write((tx) => tx.put("T", `r${round}`, { round }));
    await writer.session.waitForUpload({ signal: bounded() });
    await changes.until((c) => c.changes.some((o) => o.id === `r${round}`));
    proxy.dropAll();
  }
  await reader.session.waitForDownload({ signal: bounded() });
  const ids = changes.items.flatMap((c) => c.changes.map((o) => o.id));
  assert.deepEqual(ids, ["r0", "r1", "r2", "r3", "r4"]);
  assert.ok(changes.items.every((c) => c.origin === "remote"));
});

Deno.test("User.openRealm() while the shared socket is up: the new session still reports connecting → connected", async () => {
  await using server = await startTestServer();
  await using client = await openClient(fastApp(server.url), "/~/first");
  const { user, realm: first } = client;
  assert.equal(first.syncSession.connectionState, "connected");
  await using second = await user.openRealm({ path: "/~/second" });
  const session = second.syncSession;
  assert.equal(session.connectionState, "connecting");
  await using states = recordConnectionStates(session);
  const change = await states.until((s) => s.current === "connected");
  assert.equal(change.previous, "connecting");
  assert.equal(server.stats().connections, 1);
});
