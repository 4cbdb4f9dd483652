/**
 * `App.open({ storage })` through the public API: saved users restored
 * (also offline), the anonymous user reused, logOut forgetting it, a
 * refused refresh token logging out for good, realms defaulting to the
 * app's store, `pendingWrites()` after a restart.
 */
import assert from "node:assert/strict";
import { App, type AppOpenOptions, Credentials, SyncError } from "../../mod.ts";
import { startTestServer } from "../_helpers/test_server.ts";
import { bounded } from "../_helpers/waits.ts";
import { durableAppOptions, withTempDir } from "./_helpers.ts";

function options(baseUrl: string, kvPath: string): AppOpenOptions {
  return durableAppOptions(baseUrl, kvPath);
}

function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  return withTempDir("tether-app-open-", fn);
}

Deno.test("App.open restores the saved user offline, reopens its realm from the app's store with its pending writes, and they upload once when the server is back", async () => {
  await withDir(async (dir) => {
    const serverKv = `${dir}/server.kv`;
    const kvPath = `${dir}/app.kv`;
    const first = await startTestServer({ kv: serverKv });
    const port = first.server.addr.port;
    let id: string;
    try {
      await using app = await App.open(options(first.url, kvPath));
      assert.equal(app.isDurable, true);
      assert.equal(app.currentUser, undefined);
      const user = await app.logIn(Credentials.anonymous());
      id = user.id;
      await using realm = await user.openRealm({ path: "/~/todos" });
      await realm.write((tx) => tx.put("Task", "a", { title: "online" }));
      await realm.syncSession.waitForUpload({ signal: bounded() });
      assert.deepEqual(realm.pendingWrites(), []);
    } finally {
      await first[Symbol.asyncDispose]();
    }
    // The server is down: everything comes from the store.
    {
      await using app = await App.open(options(first.url, kvPath));
      const user = app.currentUser;
      assert.equal(user?.id, id);
      assert.deepEqual(app.allUsers.map((u) => u.id), [id]);
      await using realm = await user!.openRealm({ path: "/~/todos" });
      assert.deepEqual(realm.get("Task", "a"), { title: "online" });
      const one = await realm.write((tx) => {
        tx.put("Task", "b", { title: "offline", tx: 1 });
        tx.put("Task", "c", { title: "offline", tx: 1 });
      });
      const two = await realm.write((tx) =>
        tx.put("Task", "d", { title: "offline", tx: 2 })
      );
      assert.deepEqual(
        realm.pendingWrites().map((r) => r.clientVersion),
        [one.clientVersion, two.clientVersion],
      );
    }
    {
      await using app = await App.open(options(first.url, kvPath));
      await using realm = await app.currentUser!.openRealm({
        path: "/~/todos",
      });
      const pending = realm.pendingWrites();
      assert.deepEqual(pending.map((r) => r.clientVersion), [2, 3]);
      assert.equal(realm.syncSession.stats().pendingUploadChangesets, 2);
      assert.deepEqual(realm.objects("Task").map((o) => o.id).sort(), [
        "a",
        "b",
        "c",
        "d",
      ]);
      await using second = await startTestServer({ kv: serverKv, port });
      await Promise.all(
        pending.map((receipt) => receipt.waitForUpload({ signal: bounded() })),
      );
      assert.deepEqual(realm.pendingWrites(), []);
      assert.equal(realm.syncSession.stats().pendingUploadChangesets, 0);
      // Each changeset integrated once (the online one went to `first`).
      assert.equal(second.server.stats().changesetsIntegrated, 2);
      await realm.close();
      await using again = await app.currentUser!.openRealm({
        path: "/~/todos",
        waitForDownload: true,
        signal: bounded(),
      });
      assert.deepEqual(again.pendingWrites(), []);
      assert.equal(second.server.stats().changesetsIntegrated, 2);
    }
  });
});

Deno.test("App.open: an anonymous login reuses the saved anonymous user; logOut forgets it, and deleteLocalData deletes its realms", async () => {
  await withDir(async (dir) => {
    const kvPath = `${dir}/app.kv`;
    await using server = await startTestServer();
    let id: string;
    {
      await using app = await App.open(options(server.url, kvPath));
      const user = await app.logIn(Credentials.anonymous());
      id = user.id;
      assert.equal(await app.logIn(Credentials.anonymous()), user);
      await using realm = await user.openRealm({ path: "/~/notes" });
      await realm.write((tx) => tx.put("Note", "n", { text: "kept" }));
    }
    {
      await using app = await App.open(options(server.url, kvPath));
      const user = await app.logIn(Credentials.anonymous());
      assert.equal(user.id, id);
      assert.equal(app.currentUser, user);
      await user.logOut();
      assert.equal(user.isLoggedIn, false);
      assert.equal(app.currentUser, undefined);
      assert.deepEqual(app.allUsers, []);
    }
    let second: string;
    {
      await using app = await App.open(options(server.url, kvPath));
      assert.equal(app.currentUser, undefined);
      // A new anonymous user; the first one's realm stayed in the store.
      const user = await app.logIn(Credentials.anonymous());
      second = user.id;
      assert.notEqual(second, id);
      await using realm = await user.openRealm({ path: "/~/notes" });
      await realm.write((tx) => tx.put("Note", "m", { text: "mine" }));
      await realm.close();
      await user.logOut({ deleteLocalData: true });
    }
    // Inspect the file directly: the first user's realm is still there,
    // the second one's is gone, and no user is saved.
    const kv = await Deno.openKv(kvPath);
    try {
      const keys = async (prefix: Deno.KvKey) =>
        (await Array.fromAsync(kv.list({ prefix }))).length;
      assert.ok(await keys(["tether", "v1", "realm", id]) > 0);
      assert.equal(await keys(["tether", "v1", "realm", second]), 0);
      assert.equal(await keys(["tether", "v1", "users"]), 0);
    } finally {
      kv.close();
    }
  });
});

Deno.test("App.open saves the refresh token, never the access token, and a restored user connects with the refresh token alone", async () => {
  await withDir(async (dir) => {
    const kvPath = `${dir}/app.kv`;
    await using server = await startTestServer();
    {
      await using app = await App.open(options(server.url, kvPath));
      const user = await app.logIn(Credentials.anonymous());
      await using _realm = await user.openRealm({
        path: "/~/a",
        waitForDownload: true,
        signal: bounded(),
      });
    }
    const kv = await Deno.openKv(kvPath);
    try {
      const saved = await Array.fromAsync(
        kv.list({ prefix: ["tether", "v1", "users"] }),
      );
      assert.equal(saved.length, 1);
      const value = saved[0]!.value as Record<string, unknown>;
      assert.deepEqual(Object.keys(value).sort(), [
        "id",
        "order",
        "provider",
        "refreshToken",
      ]);
      assert.equal(value.provider, "anonymous");
    } finally {
      kv.close();
    }
    // The restored user connects with its refresh token alone.
    await using app = await App.open(options(server.url, kvPath));
    await using realm = await app.currentUser!.openRealm({
      path: "/~/a",
      waitForDownload: true,
      signal: bounded(),
    });
    assert.equal(realm.syncSession.state, "active");
  });
});

Deno.test("App.open: a saved user whose refresh token the server refuses is logged out with a SyncError, and stays logged out after reopening", async () => {
  await withDir(async (dir) => {
    const kvPath = `${dir}/app.kv`;
    {
      // A server with another signing key issued the saved refresh token.
      await using old = await startTestServer();
      await using app = await App.open(options(old.url, kvPath));
      await app.logIn(Credentials.anonymous());
    }
    await using server = await startTestServer();
    {
      await using app = await App.open(options(server.url, kvPath));
      const user = app.currentUser!;
      assert.ok(user.isLoggedIn);
      await using realm = await user.openRealm({ path: "/~/todos" });
      const failure = await realm.syncSession.waitForDownload({
        signal: bounded(),
      }).then(() => undefined, (error) => error);
      assert.ok(failure instanceof SyncError, String(failure));
      assert.equal(failure.code, "login_failed");
      assert.equal(user.isLoggedIn, false);
      assert.equal(app.currentUser, undefined);
      assert.deepEqual(app.allUsers, []);
    }
    await using app = await App.open(options(server.url, kvPath));
    assert.equal(app.currentUser, undefined);
  });
});

Deno.test("App.open: several apps on one path in one process share the store; a realm defaults to it, and openRealm({ storage }) overrides", async () => {
  await withDir(async (dir) => {
    const kvPath = `${dir}/app.kv`;
    await using server = await startTestServer();
    await using one = await App.open(options(server.url, kvPath));
    await using two = await App.open(options(server.url, kvPath));
    const user = await one.logIn(Credentials.anonymous());
    await using realm = await user.openRealm({ path: "/~/todos" });
    await realm.write((tx) => tx.put("Task", "t", { title: "durable" }));
    await using scratch = await user.openRealm({
      path: "/~/scratch",
      storage: "memory",
    });
    await scratch.write((tx) => tx.put("Task", "s", { title: "memory" }));
    assert.equal(two.currentUser, undefined);
    await scratch.close();
    await realm.close();
    await one.close();
    await two.close();
    await using three = await App.open(options(server.url, kvPath));
    const restored = three.currentUser!;
    assert.equal(restored.id, user.id);
    await using again = await restored.openRealm({ path: "/~/todos" });
    assert.deepEqual(again.get("Task", "t"), { title: "durable" });
    await using gone = await restored.openRealm({ path: "/~/scratch" });
    assert.equal(gone.get("Task", "s"), undefined);
  });
});

Deno.test("new App() refuses durable storage, and App.open checks its storage option", async () => {
  assert.throws(
    () =>
      new App(
        { baseUrl: "http://127.0.0.1:1", storage: { kvPath: "x" } } as
          & AppOpenOptions
          & { baseUrl: string },
      ),
    /App\.open/,
  );
  await assert.rejects(
    App.open({ baseUrl: "http://127.0.0.1:1", storage: { kvPath: "" } }),
    TypeError,
  );
  await assert.rejects(
    App.open({
      baseUrl: "http://127.0.0.1:1",
      storage: "disk" as unknown as "memory",
    }),
    TypeError,
  );
  await using app = await App.open({ baseUrl: "http://127.0.0.1:1" });
  assert.equal(app.isDurable, false);
});

Deno.test("App.open refuses a file that is not a Tether store, naming the path and leaving it untouched", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/foreign.kv`;
    const kv = await Deno.openKv(path);
    await kv.set(["mine"], 1);
    kv.close();
    const error = await App.open({
      baseUrl: "http://127.0.0.1:1",
      storage: { kvPath: path },
    }).then(() => undefined, (e) => e);
    assert.ok(error instanceof SyncError);
    assert.equal(error.code, "storage_invalid");
    assert.match(error.message, new RegExp(path.replace(/[.]/g, "\\.")));
    const again = await Deno.openKv(path);
    try {
      assert.equal((await again.get(["mine"])).value, 1);
    } finally {
      again.close();
    }
  });
});
