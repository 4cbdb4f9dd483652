import assert from "node:assert/strict";
import { App } from "../../src/client/app.ts";
import { Credentials } from "../../src/client/credentials.ts";
import { SyncError } from "../../src/client/sync_error.ts";
import type { ConnectionStateChange } from "../../src/client/sync_session.ts";
import { MessageType } from "../../src/protocol/messages.ts";
import { collect, fastOptions, recordingWebSocket } from "../_helpers/e2e.ts";
import { startTestServer } from "../_helpers/test_server.ts";
import { epochSeconds, signUserJwt } from "../_helpers/user_jwt.ts";

const secret = "test-secret-of-some-length";

/** A fetch that records login bodies and can hold refresh requests. */
function loginRecorder() {
  const bodies: { provider: string }[] = [];
  let hold: Promise<void> | undefined;
  const fetch = (async (input: string | URL | Request, init?: RequestInit) => {
    const body = JSON.parse(String(init?.body ?? "{}"));
    bodies.push(body);
    if (body.provider === "refresh" && hold !== undefined) await hold;
    return await globalThis.fetch(input, init);
  }) as typeof globalThis.fetch;
  return {
    fetch,
    bodies,
    providers: () => bodies.map((body) => body.provider),
    holdRefreshes(until: Promise<void>) {
      hold = until;
    },
  };
}

/** Records a session's state changes until the returned stop() is called. */
function watch(
  session: {
    connectionStateChanges(
      o: { signal: AbortSignal },
    ): ReadableStream<ConnectionStateChange>;
  },
) {
  const changes: ConnectionStateChange[] = [];
  const controller = new AbortController();
  const done = (async () => {
    for await (
      const change of session.connectionStateChanges({
        signal: controller.signal,
      })
    ) {
      changes.push(change);
    }
  })();
  return {
    changes,
    async stop() {
      controller.abort();
      await done;
      return changes;
    },
  };
}

Deno.test("App.logIn() rejects a bad JWT with login_failed and the server's message", async () => {
  await using server = await startTestServer({ auth: { jwtSecret: secret } });
  await using app = new App(fastOptions(server.url));
  const forged = await signUserJwt("another-secret", {
    sub: "mallory",
    exp: epochSeconds(60_000),
  });
  await assert.rejects(
    app.logIn(Credentials.jwt(forged)),
    (error) =>
      error instanceof SyncError && error.code === "login_failed" &&
      error.isFatal &&
      !error.willRetry && error.message.length > 0 &&
      !error.message.startsWith("Cannot log in: the server answered"),
  );
  const expired = await signUserJwt(secret, {
    sub: "alice",
    exp: epochSeconds(-60_000),
  });
  await assert.rejects(
    app.logIn(Credentials.jwt(expired)),
    (error) => error instanceof SyncError && error.code === "login_failed",
  );
  assert.equal(app.currentUser, undefined);
  const good = await signUserJwt(secret, {
    sub: "alice",
    exp: epochSeconds(60_000),
  });
  const user = await app.logIn(Credentials.jwt(good));
  assert.equal(user.id, "alice");
  // Logging in again as the same JWT user gives the same User.
  assert.equal(await app.logIn(Credentials.jwt(good)), user);
});

Deno.test("App.logIn() rejects anonymous login when the server disables it", async () => {
  await using server = await startTestServer({ auth: { jwtSecret: secret } });
  await using app = new App(fastOptions(server.url));
  await assert.rejects(
    app.logIn(Credentials.anonymous()),
    (error) => error instanceof SyncError && error.code === "login_failed",
  );
});

Deno.test("App.logIn() rejects with connection_lost when the server is unreachable, and with the signal's reason when aborted", async () => {
  const server = await startTestServer();
  const url = server.url;
  await server.server.shutdown();
  await using app = new App(fastOptions(url));
  await assert.rejects(
    app.logIn(Credentials.anonymous()),
    (error) => error instanceof SyncError && error.code === "connection_lost",
  );
  const reason = new Error("stop");
  await assert.rejects(
    app.logIn(Credentials.anonymous(), { signal: AbortSignal.abort(reason) }),
    (e) => e === reason,
  );
});

Deno.test("User access token is refreshed in-band before it expires: REFRESH on the open socket, no disconnection", async () => {
  await using server = await startTestServer({
    auth: { allowAnonymous: true, accessTokenTtlMs: 1_000 },
  });
  const logins = loginRecorder();
  const recording = recordingWebSocket();
  await using app = new App({
    ...fastOptions(server.url),
    fetch: logins.fetch,
    WebSocket: recording.WebSocket,
  });
  const user = await app.logIn(Credentials.anonymous());
  await using realm = await user.openRealm({
    path: "/~/r",
    waitForDownload: true,
  });
  const watching = watch(realm.syncSession);
  // Three in-band refreshes (each half-way through a 1 s token).
  await recording.waitFor(
    (f) => f.direction === "out" && f.message.type === MessageType.Refresh,
    3,
    AbortSignal.timeout(10_000),
  );
  await realm.write((tx) => tx.put("T", "after", {}));
  await realm.syncSession.waitForUpload({ signal: AbortSignal.timeout(5_000) });
  assert.deepEqual(await watching.stop(), []);
  assert.equal(recording.sockets.length, 1);
  assert.deepEqual(logins.providers().slice(0, 4), [
    "anonymous",
    "refresh",
    "refresh",
    "refresh",
  ]);
  assert.equal(realm.syncSession.error, undefined);
});

Deno.test("User on token_expired gets a new token and reconnects; the user sees no error, and the expired token is never sent again", async () => {
  await using server = await startTestServer({
    auth: { allowAnonymous: true, accessTokenTtlMs: 800 },
  });
  const logins = loginRecorder();
  const recording = recordingWebSocket();
  await using app = new App({
    ...fastOptions(server.url),
    fetch: logins.fetch,
    WebSocket: recording.WebSocket,
  });
  const user = await app.logIn(Credentials.anonymous());
  await using realm = await user.openRealm({
    path: "/~/r",
    waitForDownload: true,
  });
  // Hold the in-band refresh until the server has expired the token and
  // the client is reconnecting.
  let release!: () => void;
  logins.holdRefreshes(new Promise((resolve) => release = resolve));
  const changes: ConnectionStateChange[] = [];
  for await (
    const change of realm.syncSession.connectionStateChanges({
      signal: AbortSignal.timeout(10_000),
    })
  ) {
    changes.push(change);
    if (change.current === "connecting") break;
  }
  release();
  await realm.syncSession.waitForDownload({
    signal: AbortSignal.timeout(10_000),
  });
  await realm.write((tx) => tx.put("T", "after", {}));
  await realm.syncSession.waitForUpload({
    signal: AbortSignal.timeout(10_000),
  });
  assert.deepEqual(changes.map((c) => [c.previous, c.current, c.error?.code]), [
    ["connected", "connecting", undefined],
  ]);
  assert.equal(realm.syncSession.error, undefined);
  const handshakes = recording.frames.filter((f) =>
    f.direction === "out" && f.message.type === MessageType.Handshake
  )
    .map((f) => (f.message as { accessToken: string }).accessToken);
  assert.equal(handshakes.length, 2);
  assert.notEqual(handshakes[0], handshakes[1]);
});

Deno.test("Credentials.jwt refreshToken callback gives a new JWT when the refresh token and the old JWT are both refused", async () => {
  await using server = await startTestServer({
    auth: {
      jwtSecret: secret,
      accessTokenTtlMs: 5_000,
      refreshTokenTtlMs: 1_000,
    },
  });
  // The JWT expires within 2 s; the first refresh comes half-way through
  // the 5 s token (refreshDueAt), after it.
  const first = await signUserJwt(secret, {
    sub: "bob",
    exp: epochSeconds() + 2,
  });
  let calls = 0;
  const logins = loginRecorder();
  const recording = recordingWebSocket();
  await using app = new App({
    ...fastOptions(server.url),
    fetch: logins.fetch,
    WebSocket: recording.WebSocket,
  });
  const user = await app.logIn(Credentials.jwt(first, {
    refreshToken: async () => {
      calls++;
      return await signUserJwt(secret, {
        sub: "bob",
        exp: epochSeconds(60_000),
      });
    },
  }));
  await using realm = await user.openRealm({
    path: "/~/r",
    waitForDownload: true,
  });
  const watching = watch(realm.syncSession);
  await recording.waitFor(
    (f) => f.direction === "out" && f.message.type === MessageType.Refresh,
    1,
    AbortSignal.timeout(15_000),
  );
  assert.equal(calls, 1);
  assert.deepEqual(logins.providers().slice(0, 4), [
    "jwt",
    "refresh",
    "jwt",
    "jwt",
  ]);
  assert.deepEqual(await watching.stop(), []);
});

Deno.test("User a refresh that can only fail ends in a reported login_failed, not a loop", async () => {
  await using server = await startTestServer({
    auth: {
      allowAnonymous: true,
      accessTokenTtlMs: 500,
      refreshTokenTtlMs: 100,
    },
  });
  const logins = loginRecorder();
  await using app = new App({
    ...fastOptions(server.url),
    fetch: logins.fetch,
  });
  const user = await app.logIn(Credentials.anonymous());
  await using realm = await user.openRealm({
    path: "/~/r",
    waitForDownload: true,
  });
  // The state stream errors with the session's fatal error.
  await assert.rejects(
    collect(
      realm.syncSession.connectionStateChanges({
        signal: AbortSignal.timeout(10_000),
      }),
    ),
    (error) => error instanceof SyncError && error.code === "login_failed",
  );
  assert.equal(realm.syncSession.state, "error");
  assert.equal(realm.syncSession.error?.code, "login_failed");
  assert.deepEqual(logins.providers(), ["anonymous", "refresh"]);
});
