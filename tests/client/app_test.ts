// App and User: option checks, the URLs an App derives, logins, openRealm
// validation, and the signal a login gives its fetch.
import assert from "node:assert/strict";
import { App } from "../../src/client/app.ts";
import { Credentials } from "../../src/client/credentials.ts";
import { FakeSockets } from "../_helpers/fake_socket.ts";
import { scriptedApp } from "../_helpers/scripted_app.ts";
import { countAbortListeners } from "../_helpers/abort_listeners.ts";

/** A successful login answer, with tokens good for a minute. */
function loginReply(): Response {
  return Response.json({
    userId: "u",
    accessToken: "a",
    accessTokenExpiresAt: Date.now() + 60_000,
    refreshToken: "r",
  });
}

Deno.test("App rejects a base URL that is not http(s) and nonsense durations", () => {
  assert.throws(() => new App({ baseUrl: "not a url" }), TypeError);
  assert.throws(() => new App({ baseUrl: "ftp://host" }), TypeError);
  assert.throws(
    () => new App({ baseUrl: "http://h", connectTimeoutMs: -1 }),
    RangeError,
  );
  assert.throws(
    () => new App({ baseUrl: "http://h", lingerMs: NaN }),
    RangeError,
  );
  assert.throws(
    () => new App({ baseUrl: "http://h", reconnect: { multiplier: 0 } }),
    RangeError,
  );
  assert.throws(
    () => new App({ baseUrl: "http://h", keepalive: { readTimeoutMs: 0 } }),
    RangeError,
  );
  assert.throws(() => new App(null as never), TypeError);
});

Deno.test("App derives /login and ws(s)://…/sync from the base URL, keeping a path prefix", async () => {
  for (
    const [base, login, sync] of [
      ["http://sync.test", "http://sync.test/login", "ws://sync.test/sync"],
      [
        "https://host:8443/tether/",
        "https://host:8443/tether/login",
        "wss://host:8443/tether/sync",
      ],
    ]
  ) {
    const sockets = new FakeSockets();
    const urls: string[] = [];
    const seen = new App({
      baseUrl: base!,
      fetch: ((url: string) => {
        urls.push(url);
        return Promise.resolve(loginReply());
      }) as never,
      WebSocket: sockets.WebSocket,
    });
    const user = await seen.logIn(Credentials.anonymous());
    assert.deepEqual(urls, [login]);
    const realm = await user.openRealm({ path: "/~/x" });
    await new Promise((resolve) => setTimeout(resolve, 0));
    assert.equal(sockets.last.url, sync);
    await realm.close();
    await seen.close();
  }
});

Deno.test("App.logIn() makes the user current; JWT logins of one user share a User, anonymous ones never do", async () => {
  const { app, script, clock } = scriptedApp();
  try {
    const anonymous1 = await app.logIn(Credentials.anonymous());
    const anonymous2 = await app.logIn(Credentials.anonymous());
    assert.notEqual(anonymous1, anonymous2);
    assert.equal(app.currentUser, anonymous2);
    script.login = () =>
      Response.json({
        userId: "alice",
        accessToken: "a",
        accessTokenExpiresAt: clock.now() + 60_000,
        refreshToken: "r",
      });
    const alice = await app.logIn(Credentials.jwt("token-1"));
    assert.equal(await app.logIn(Credentials.jwt("token-2")), alice);
    assert.deepEqual(app.allUsers.map((user) => user.id), [
      "u1",
      "u2",
      "alice",
    ]);
  } finally {
    await app.close();
  }
});

Deno.test("User.openRealm() validates its config", async () => {
  const { app } = scriptedApp();
  try {
    const user = await app.logIn(Credentials.anonymous());
    for (
      const config of [
        { path: "relative" },
        { path: "/" },
        { path: "/a//b" },
        { path: "/a", storage: "disk" },
        { path: "/a", waitForDownload: "yes" },
        { path: "/a", onProgress: 5 },
        { path: "/a", signal: {} },
      ]
    ) {
      await assert.rejects(
        user.openRealm(config as never),
        TypeError,
        JSON.stringify(config),
      );
    }
    await assert.rejects(
      user.openRealm({ path: "/a", storage: { kvPath: "" } }),
      {
        name: "TypeError",
        message: "Cannot open realm: storage.kvPath must be a non-empty string",
      },
    );
    assert.deepEqual(user.allSessions, []);
  } finally {
    await app.close();
  }
});

Deno.test("App.logIn() lets go of the signal it gave the fetch once the login ends: a listener the fetch left on it is no longer reachable", async () => {
  const caller = new AbortController();
  const callerListeners = countAbortListeners(caller.signal);
  const given: AbortSignal[] = [];
  let reached = 0;
  const app = new App({
    baseUrl: "http://sync.test",
    // A fetch that never removes its abort listener.
    fetch: ((_url: string, init: RequestInit) => {
      given.push(init.signal!);
      init.signal!.addEventListener("abort", () => reached++);
      return Promise.resolve(loginReply());
    }) as never,
    WebSocket: new FakeSockets().WebSocket,
  });
  try {
    await app.logIn(Credentials.anonymous(), { signal: caller.signal });
    await app.logIn(Credentials.anonymous());
    assert.equal(given.length, 2);
    assert.equal(callerListeners(), 0);
    caller.abort(new Error("the caller gave up later"));
  } finally {
    // Closing aborts the app's lifetime, which neither login follows now.
    await app.close();
  }
  assert.equal(reached, 0);
  assert.ok(given.every((signal) => !signal.aborted));
});
