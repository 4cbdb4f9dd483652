// Conformance: the server API and CLI (docs/SERVER.md) and the HTTP
// surface, through the public entry points only.

import assert from "node:assert/strict";
import { App, Credentials, SyncError } from "../../mod.ts";
import { serveSync } from "../../server.ts";
import { fastApp, openClient, openDownloaded } from "./_helpers.ts";
import { bounded } from "../_helpers/waits.ts";
import { startTestServer } from "../_helpers/test_server.ts";
import { signUserJwt } from "../_helpers/user_jwt.ts";

Deno.test("serveSync() on port 0 resolves listening; server.url answers GET /health with 200", async () => {
  await using server = await startTestServer();
  assert.match(server.url, /^http:\/\/127\.0\.0\.1:\d+$/);
  assert.notEqual(new URL(server.url).port, "0");
  const response = await fetch(`${server.url}/health`, { signal: bounded() });
  assert.equal(response.status, 200);
  await response.body?.cancel();
});

Deno.test("serveSync() HTTP surface: GET /sync without upgrade is 4xx, unknown paths are 404", async () => {
  await using server = await startTestServer();
  const sync = await fetch(`${server.url}/sync`, { signal: bounded() });
  assert.ok(
    sync.status >= 400 && sync.status < 500,
    `GET /sync without upgrade answered ${sync.status}`,
  );
  await sync.body?.cancel();
  for (const path of ["/", "/nope", "/health/x", "/login/x", "/sync/x"]) {
    const response = await fetch(`${server.url}${path}`, { signal: bounded() });
    assert.equal(response.status, 404, `GET ${path}`);
    await response.body?.cancel();
  }
});

Deno.test("serveSync() POST /login turns anonymous credentials into an access token", async () => {
  await using server = await startTestServer();
  const response = await fetch(`${server.url}/login`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ provider: "anonymous" }),
    signal: bounded(),
  });
  assert.equal(response.status, 200);
  const body = await response.json();
  assert.equal(typeof body.accessToken, "string");
  assert.ok(body.accessToken.length > 0);
});

Deno.test("serveSync() refuses anonymous login with 401/403 and a JSON error when allowAnonymous is off", async () => {
  await using server = await startTestServer({
    auth: { jwtSecret: "conformance-secret" },
  });
  const response = await fetch(`${server.url}/login`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ provider: "anonymous" }),
    signal: bounded(),
  });
  assert.ok(
    response.status === 401 || response.status === 403,
    `status ${response.status}`,
  );
  const body = await response.json();
  assert.equal(typeof body, "object");
  assert.ok(body.error !== undefined, JSON.stringify(body));
});

Deno.test("App.logIn() turns a login refusal into a SyncError", async (t) => {
  const secret = "conformance-secret";
  await using server = await startTestServer({ auth: { jwtSecret: secret } });
  await using app = fastApp(server.url);

  await t.step("anonymous login disabled", async () => {
    const error = await app.logIn(Credentials.anonymous()).then(
      () => assert.fail("logIn resolved"),
      (e) => e,
    );
    assert.ok(error instanceof SyncError, String(error));
    assert.equal(typeof error.code, "string");
    assert.match(error.code, /^[a-z_]+$/);
    assert.equal(typeof error.message, "string");
    assert.equal(typeof error.isFatal, "boolean");
    assert.equal(typeof error.willRetry, "boolean");
  });

  await t.step("JWT signed with another secret", async () => {
    const token = await signUserJwt("not-the-secret", {
      sub: "alice",
      exp: Math.floor(Date.now() / 1000) + 3600,
    });
    const error = await app.logIn(Credentials.jwt(token)).then(
      () => assert.fail("logIn resolved"),
      (e) => e,
    );
    assert.ok(error instanceof SyncError, String(error));
  });

  await t.step("expired JWT", async () => {
    const token = await signUserJwt(secret, {
      sub: "alice",
      exp: Math.floor(Date.now() / 1000) - 3600,
    });
    const error = await app.logIn(Credentials.jwt(token)).then(
      () => assert.fail("logIn resolved"),
      (e) => e,
    );
    assert.ok(error instanceof SyncError, String(error));
  });

  await t.step("a valid JWT logs in as its sub", async () => {
    const token = await signUserJwt(secret, {
      sub: "alice",
      exp: Math.floor(Date.now() / 1000) + 3600,
    });
    const user = await app.logIn(Credentials.jwt(token));
    assert.equal(user.id, "alice");
  });
});

Deno.test("serveSync() with no way to log in is a TypeError", async (t) => {
  await t.step("auth: {}", async () => {
    await assert.rejects(
      serveSync({ port: 0, kv: ":memory:", auth: {}, logger: () => {} }),
      TypeError,
    );
  });
  await t.step("allowAnonymous: false and no secret", async () => {
    await assert.rejects(
      serveSync({
        port: 0,
        kv: ":memory:",
        auth: { allowAnonymous: false },
        logger: () => {},
      }),
      TypeError,
    );
  });
});

Deno.test("serveSync() accepts an open Deno.Kv", async () => {
  using kv = await Deno.openKv(":memory:");
  {
    await using server = await startTestServer({ kv });
    await using client = await openClient(fastApp(server.url));
    const { realm } = client;
    await realm.write((tx) => tx.put("Task", "t1", { title: "x" }));
    await realm.syncSession.waitForUpload({ signal: bounded() });
  }
  // The server's history is in the store that was passed in.
  let entries = 0;
  for await (const _ of kv.list({ prefix: [] })) entries++;
  assert.ok(entries > 0);
});

Deno.test("serveSync() rejects when the KV file is already served", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/sync.kv`;
    await using _first = await startTestServer({ kv: path });
    await assert.rejects(startTestServer({ kv: path }));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("SyncServer.stats() counts connections, sessions, realms, bytes and integrated changesets", async () => {
  await using server = await startTestServer();
  assert.deepEqual(Object.keys(server.stats()).sort(), [
    "bytesIn",
    "bytesOut",
    "changesetsIntegrated",
    "connections",
    "realms",
    "sessions",
  ]);
  assert.deepEqual(server.stats(), {
    connections: 0,
    sessions: 0,
    realms: 0,
    bytesIn: 0,
    bytesOut: 0,
    changesetsIntegrated: 0,
  });
  await using client = await openClient(fastApp(server.url), "/~/a");
  const { user, realm: a } = client;
  await using b = await openDownloaded(user, "/~/b");
  await a.write((tx) => tx.put("T", "1", { n: 1 }));
  await a.write((tx) => tx.put("T", "2", { n: 2 }));
  await b.write((tx) => tx.put("T", "1", { n: 1 }));
  await a.syncSession.waitForUpload({ signal: bounded() });
  await b.syncSession.waitForUpload({ signal: bounded() });
  const stats = server.stats();
  assert.equal(stats.connections, 1);
  assert.equal(stats.sessions, 2);
  assert.equal(stats.realms, 2);
  assert.ok(stats.bytesIn > 0);
  assert.ok(stats.bytesOut > 0);
  assert.equal(stats.changesetsIntegrated, 3);
});

Deno.test("SyncServer.shutdown() stops serving; sessions only disconnect (not an error); a second call is safe", async () => {
  const server = await startTestServer();
  try {
    await using client = await openClient(
      fastApp(server.url, {
        reconnect: { minDelayMs: 60_000, maxDelayMs: 60_000 },
      }),
    );
    const { session } = client;
    const changes = session.connectionStateChanges({ signal: bounded() });
    await server.shutdown();
    const reader = changes.getReader();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        assert.ok(!done, "state stream ended before a disconnect");
        if (value.current === "disconnected") {
          assert.ok(value.error instanceof SyncError);
          assert.equal(value.error.isFatal, false);
          break;
        }
      }
    } finally {
      await reader.cancel();
    }
    assert.equal(session.state, "active");
    await assert.rejects(
      fetch(`${server.url}/health`, { signal: bounded() }).then(async (r) => {
        await r.body?.cancel();
        if (r.status === 200) return r;
        throw new Error(`status ${r.status}`);
      }),
    );
  } finally {
    await server.shutdown();
  }
});

Deno.test("`await using` on server, app and realm releases everything (sanitizers prove it)", async () => {
  let url: string;
  {
    await using server = await startTestServer();
    url = server.url;
    {
      await using app = new App({ baseUrl: server.url });
      const user = await app.logIn(Credentials.anonymous());
      {
        await using realm = await user.openRealm({
          path: "/~/todos",
          waitForDownload: true,
          signal: bounded(),
        });
        await realm.write((tx) => tx.put("Task", "t", { done: false }));
        await realm.syncSession.waitForUpload({ signal: bounded() });
      }
    }
  }
  await assert.rejects(fetch(`${url}/health`, { signal: bounded() }));
});

Deno.test("SyncServer frees per-session and per-realm state once the last session leaves", async () => {
  const pokes = new Set<() => void>();
  await using server = await startTestServer({
    logger: () => {
      for (const poke of pokes) poke();
    },
  });
  {
    await using client = await openClient(fastApp(server.url));
    const { realm } = client;
    await realm.write((tx) => tx.put("T", "x", {}));
    await realm.syncSession.waitForUpload({ signal: bounded() });
    assert.equal(server.stats().realms, 1);
  }
  await new Promise<void>((resolve, reject) => {
    const signal = bounded();
    const check = () => {
      const { connections, sessions, realms } = server.stats();
      if (connections === 0 && sessions === 0 && realms === 0) done();
    };
    const done = () => {
      pokes.delete(check);
      signal.removeEventListener("abort", abort);
      resolve();
    };
    const abort = () => {
      pokes.delete(check);
      reject(new Error(`not freed: ${JSON.stringify(server.stats())}`));
    };
    signal.addEventListener("abort", abort);
    pokes.add(check);
    check();
  });
});

Deno.test("serveSync() listens on 127.0.0.1 by default", async () => {
  await using server = await serveSync({
    port: 0,
    kv: ":memory:",
    auth: { allowAnonymous: true },
    logger: () => {},
  });
  assert.equal(server.addr.hostname, "127.0.0.1");
});

Deno.test('serveSync() permissions receive the resolved path ("~" = the user id) and may be async', async () => {
  const asked: [string, string][] = [];
  await using server = await startTestServer({
    permissions: async (userId, path) => {
      asked.push([userId, path]);
      await Promise.resolve();
      return path === `/${userId}/todos` ? "readwrite" : "none";
    },
  });
  await using client = await openClient(fastApp(server.url));
  const { user, realm } = client;
  assert.deepEqual(asked, [[user.id, `/${user.id}/todos`]]);
  await realm.write((tx) => tx.put("T", "x", {}));
  await realm.syncSession.waitForUpload({ signal: bounded() });
});
