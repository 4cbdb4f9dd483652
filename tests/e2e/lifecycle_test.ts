import assert from "node:assert/strict";
import { Credentials } from "../../src/client/credentials.ts";
import { SyncError } from "../../src/client/sync_error.ts";
import { anonymousClient, collect } from "../_helpers/e2e.ts";
import { startTestServer } from "../_helpers/test_server.ts";

const closed = (error: unknown) =>
  error instanceof SyncError && error.code === "session_closed";

Deno.test("App.close() ends everything: waits reject with session_closed, streams end, the socket closes, nothing dials again; twice is safe", async () => {
  await using server = await startTestServer();
  const client = await anonymousClient(server.url, { lingerMs: 60_000 });
  const realms = await Promise.all(
    ["/~/a", "/~/b"].map((path) =>
      client.user.openRealm({ path, waitForDownload: true })
    ),
  );
  const [a, b] = realms as [typeof realms[0], typeof realms[0]];
  b.syncSession.pause();
  await b.write((tx) => tx.put("T", "pending", {}));
  const waits = [
    assert.rejects(b.syncSession.waitForUpload(), closed),
    assert.rejects(b.syncSession.waitForDownload(), closed),
  ];
  // Streams without a signal: they must end on close.
  const streams = [
    collect(a.syncSession.getProgressStream("download", "reportIndefinitely")),
    collect(a.syncSession.connectionStateChanges()),
    collect(a.changes()),
  ];
  await client.app.close();
  await client.app.close();
  await Promise.all(waits);
  const [progress, states, changes] = await Promise.all(streams);
  assert.equal(progress!.length, 1);
  assert.deepEqual(states, [{
    previous: "connected",
    current: "disconnected",
  }]);
  assert.deepEqual(changes, []);
  for (const realm of realms) {
    assert.equal(realm.isClosed, true);
    assert.equal(realm.syncSession.state, "inactive");
    assert.equal(realm.syncSession.connectionState, "disconnected");
    await assert.rejects(realm.write(() => {}), TypeError);
  }
  await server.waitForLog((record) => record.event === "connection_closed");
  assert.equal(server.server.stats().connections, 0);
  client.app.reconnect();
  await assert.rejects(client.app.logIn(Credentials.anonymous()), TypeError);
  assert.equal(server.server.stats().connections, 0);
});

Deno.test("User.logOut() closes the user's realms and socket; currentUser moves on", async () => {
  await using server = await startTestServer();
  const client = await anonymousClient(server.url);
  try {
    const first = client.user;
    const second = await client.app.logIn(Credentials.anonymous());
    assert.equal(client.app.currentUser, second);
    const realm = await second.openRealm({
      path: "/~/x",
      waitForDownload: true,
    });
    const pending = assert.rejects(realm.syncSession.waitForDownload(), closed);
    await second.logOut();
    await second.logOut();
    await pending;
    assert.equal(second.isLoggedIn, false);
    assert.equal(realm.isClosed, true);
    assert.deepEqual(second.allSessions, []);
    assert.equal(client.app.currentUser, first);
    assert.deepEqual(client.app.allUsers, [first]);
    await assert.rejects(second.openRealm({ path: "/~/y" }), TypeError);
  } finally {
    await client.app.close();
  }
});

Deno.test("Connection an unused socket closes lingerMs after its last session closed; a new session dials again", async () => {
  await using server = await startTestServer();
  const client = await anonymousClient(server.url, { lingerMs: 50 });
  try {
    const realm = await client.user.openRealm({
      path: "/~/linger",
      waitForDownload: true,
    });
    assert.equal(server.server.stats().connections, 1);
    await realm.close();
    await server.waitForLog((record) => record.event === "connection_closed");
    const again = await client.user.openRealm({
      path: "/~/linger",
      waitForDownload: true,
    });
    assert.equal(server.server.stats().connections, 1);
    await again.close();
  } finally {
    await client.app.close();
  }
});

Deno.test("Realm opening one path twice gives two handles on one session; the realm closes with its last handle", async () => {
  await using server = await startTestServer();
  const client = await anonymousClient(server.url);
  try {
    const one = await client.user.openRealm({ path: "/~/twice" });
    const two = await client.user.openRealm({
      path: `/${client.user.id}/twice`,
      waitForDownload: true,
    });
    assert.equal(one.syncSession, two.syncSession);
    assert.equal(client.user.sessionFor("/~/twice"), one.syncSession);
    await one.write((tx) => tx.put("T", "x", { n: 1 }));
    assert.deepEqual(two.get("T", "x"), { n: 1 });
    await one.close();
    assert.equal(one.isClosed, true);
    assert.throws(() => one.get("T", "x"), TypeError);
    assert.equal(two.syncSession.state, "active");
    await two.syncSession.waitForUpload({ signal: AbortSignal.timeout(5_000) });
    await two.close();
    assert.equal(two.syncSession.state, "inactive");
    assert.equal(client.user.sessionFor("/~/twice"), undefined);
  } finally {
    await client.app.close();
  }
});

Deno.test("Realm and SyncSession streams opened with an already-aborted signal are empty and register nothing", async () => {
  await using server = await startTestServer();
  const client = await anonymousClient(server.url);
  try {
    await using realm = await client.user.openRealm({
      path: "/~/aborted",
      waitForDownload: true,
    });
    const signal = AbortSignal.abort(new Error("already"));
    assert.deepEqual(await collect(realm.changes({ signal })), []);
    assert.deepEqual(
      await collect(realm.syncSession.connectionStateChanges({ signal })),
      [],
    );
    assert.deepEqual(
      await collect(
        realm.syncSession.getProgressStream("upload", "reportIndefinitely", {
          signal,
        }),
      ),
      [],
    );
    // Still fully usable.
    await realm.write((tx) => tx.put("T", "x", {}));
    await realm.syncSession.waitForUpload({
      signal: AbortSignal.timeout(5_000),
    });
  } finally {
    await client.app.close();
  }
});
