/**
 * Conformance: DESIGN "Operating a server → Embedding and limits" and
 * docs/SERVER.md "Mounting it in your own HTTP server" and "Memory" —
 * `createSyncHandler({ prefix })` inside an app's own `Deno.serve`, its
 * shutdown handing clients to another server without loss, and
 * `limits.maxQueuedBytesPerConnection` refusing a fast writer with a
 * retryable code while nothing is lost.
 */

import assert from "node:assert/strict";
import {
  type ConnectionStateChange,
  Credentials,
  type Realm,
  type RealmChange,
  SyncError,
} from "../../mod.ts";
import {
  type ChangesetToValidate,
  createSyncHandler,
  serveSync,
  type SyncHandlerOptions,
  type SyncRequestHandler,
} from "../../server.ts";
import { Hono } from "npm:hono@4.13.19";
import { fastApp, openDownloaded } from "./_helpers.ts";
import { TcpProxy } from "../_helpers/tcp_proxy.ts";
import { bounded, Recorder } from "../_helpers/waits.ts";

const BASE: SyncHandlerOptions = {
  kv: ":memory:",
  auth: { allowAnonymous: true },
  permissions: () => "readwrite",
  logger: () => {},
};

/** An app's own Deno.serve that hands `/api/sync` and below to `sync`. */
function mount(sync: SyncRequestHandler): Deno.HttpServer<Deno.NetAddr> {
  return Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen() {} },
    (request, info) => {
      const { pathname } = new URL(request.url);
      if (pathname === "/api/sync" || pathname.startsWith("/api/sync/")) {
        return sync.fetch(request, info);
      }
      if (pathname === "/api/other") return Response.json({ app: "other" });
      return new Response("the app's own page");
    },
  );
}

async function answer(
  response: Response | Promise<Response>,
): Promise<{ status: number; body: unknown }> {
  const settled = await response;
  const text = await settled.text();
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {
    // Not JSON: the text itself.
  }
  return { status: settled.status, body };
}

Deno.test("createSyncHandler({ prefix }) in an app's own Deno.serve: the app's routes untouched, 404/405/426 JSON only under the prefix", async () => {
  await using sync = await createSyncHandler({ ...BASE, prefix: "/api/sync" });
  await using http = mount(sync);
  const origin = `http://127.0.0.1:${http.addr.port}`;
  assert.deepEqual(await answer(fetch(`${origin}/`)), {
    status: 200,
    body: "the app's own page",
  });
  assert.deepEqual(await answer(fetch(`${origin}/api/other`)), {
    status: 200,
    body: { app: "other" },
  });
  assert.deepEqual(await answer(fetch(`${origin}/api/sync/health`)), {
    status: 200,
    body: { status: "ok" },
  });
  for (const path of ["/api/sync", "/api/sync/", "/api/sync/nothing"]) {
    const { status, body } = await answer(fetch(`${origin}${path}`));
    assert.equal(status, 404, path);
    assert.equal((body as { error: { code: string } }).error.code, "not_found");
  }
  const post = await answer(fetch(`${origin}/api/sync/health`, {
    method: "POST",
  }));
  assert.equal(post.status, 405);
  const plain = await answer(fetch(`${origin}/api/sync/sync`));
  assert.equal(plain.status, 426);
  // /metrics needs the remote address without an adminToken: Deno.serve's
  // info passed along is loopback, none at all is refused.
  assert.equal((await answer(fetch(`${origin}/api/sync/metrics`))).status, 200);
  const blind = await answer(
    sync.fetch(new Request("http://a/api/sync/metrics")),
  );
  assert.equal(blind.status, 403);
  // Handed a path outside its prefix, the handler claims nothing there.
  for (const path of ["/health", "/api/syncx/health", "/api/health"]) {
    const outside = await answer(sync.fetch(new Request(`http://a${path}`)));
    assert.equal(outside.status, 404, path);
  }
});

Deno.test("createSyncHandler() prefix: a trailing slash and URL escaping are normalised; root is the default; no leading slash, dot segments and other non-paths are a TypeError naming prefix", async () => {
  const served: [string | undefined, string][] = [
    ["/api/sync/", "/api/sync/health"],
    ["/api/sync", "/api/sync/health"],
    ["/ápi/sync", "/ápi/sync/health"],
    ["/ápi/sync", "/%C3%A1pi/sync/health"],
    ["/a%20b", "/a b/health"],
    [undefined, "/health"],
    ["/", "/health"],
    ["", "/health"],
  ];
  for (const [prefix, path] of served) {
    await using sync = await createSyncHandler(
      prefix === undefined ? BASE : { ...BASE, prefix },
    );
    const { status, body } = await answer(
      sync.fetch(new Request(`http://app${path}`)),
    );
    assert.deepEqual({ status, body }, {
      status: 200,
      body: { status: "ok" },
    }, `prefix ${JSON.stringify(prefix)} path ${path}`);
  }
  for (
    const prefix of [
      "api/sync",
      "/api/../sync",
      "/api/./sync",
      "/api//sync",
      "/api sync",
      "/api?x",
      "/api#x",
      "\\api",
      5,
      null,
    ]
  ) {
    await assert.rejects(
      createSyncHandler({ ...BASE, prefix: prefix as string }),
      (error: unknown) => {
        assert.ok(error instanceof TypeError, String(error));
        assert.match(error.message, /prefix/);
        return true;
      },
      JSON.stringify(prefix),
    );
  }
});

Deno.test("App with a baseUrl under the prefix (trailing slash too) logs in, syncs both ways with the server's own realm API, and the handler works detached as Deno.serve(sync.fetch)", async () => {
  await using sync = await createSyncHandler({ ...BASE, prefix: "/api/sync" });
  const { fetch: detached } = sync;
  await using http = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen() {} },
    detached,
  );
  const origin = `http://127.0.0.1:${http.addr.port}`;
  await using app = fastApp(`${origin}/api/sync/`);
  const user = await app.logIn(Credentials.anonymous());
  await using realm = await openDownloaded(user, "/shared/board");
  const receipt = await realm.write((tx) =>
    tx.put("Note", "n1", { text: "from the client" })
  );
  await receipt.waitForUpload({ signal: bounded() });
  assert.deepEqual(await sync.realm("/shared/board").get("Note", "n1"), {
    text: "from the client",
  });
  await sync.realm("/shared/board").write((tx) =>
    tx.put("Note", "n2", { text: "from the backend" })
  );
  await realm.syncSession.waitForDownload({ signal: bounded() });
  assert.deepEqual(realm.get("Note", "n2"), { text: "from the backend" });
  assert.equal(sync.stats().sessions, 1);
});

Deno.test("createSyncHandler() mounted in a Hono app (docs/SERVER.md's wiring): WebSocket upgrade included, two real clients sync, Hono's other routes untouched", async () => {
  await using sync = await createSyncHandler({ ...BASE, prefix: "/api/sync" });
  const hono = new Hono();
  hono.all(
    "/api/sync/*",
    (c) => sync.fetch(c.req.raw, c.env as Deno.ServeHandlerInfo),
  );
  hono.get("/", (c) => c.text("the rest of the app"));
  await using http = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen() {} },
    hono.fetch,
  );
  const origin = `http://127.0.0.1:${http.addr.port}`;
  assert.deepEqual(await answer(fetch(`${origin}/`)), {
    status: 200,
    body: "the rest of the app",
  });
  // The remote address reaches the handler: loopback may read /metrics.
  const metrics = await fetch(`${origin}/api/sync/metrics`);
  assert.equal(metrics.status, 200);
  await metrics.body?.cancel();
  await using writerApp = fastApp(`${origin}/api/sync`);
  await using readerApp = fastApp(`${origin}/api/sync`);
  const writer = await writerApp.logIn(Credentials.anonymous());
  const reader = await readerApp.logIn(Credentials.anonymous());
  await using mine = await openDownloaded(writer, "/shared/board");
  await using theirs = await openDownloaded(reader, "/shared/board");
  const receipt = await mine.write((tx) =>
    tx.put("Note", "n1", { text: "through Hono" })
  );
  await receipt.waitForUpload({ signal: bounded() });
  await theirs.syncSession.waitForDownload({ signal: bounded() });
  assert.deepEqual(theirs.get("Note", "n1"), { text: "through Hono" });
  assert.equal(sync.stats().connections, 2);
});

Deno.test("createSyncHandler() and serveSync() whose signal aborts while they start reject with signal.reason, serve nothing and release the KV file", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tether-embedding-" });
  try {
    const kv = `${dir}/sync.kv`;
    const starts = [
      (signal: AbortSignal) => createSyncHandler({ ...BASE, kv, signal }),
      (signal: AbortSignal) =>
        serveSync({ ...BASE, kv, port: 0, hostname: "127.0.0.1", signal }),
    ];
    for (const start of starts) {
      const controller = new AbortController();
      const reason = new Error("the app is stopping");
      // Aborted after the call began, before it resolved.
      const starting = start(controller.signal);
      controller.abort(reason);
      await assert.rejects(starting, (error: unknown) => error === reason);
      // Nothing holds the file: the next start takes it.
      await using again = await createSyncHandler({ ...BASE, kv });
      const health = await answer(again.fetch(new Request("http://a/health")));
      assert.equal(health.status, 200);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** Every id `type` puts, in arrival order, from a realm's remote changes. */
function remotePuts(changes: readonly RealmChange[], type: string): string[] {
  const ids: string[] = [];
  for (const transaction of changes) {
    if (transaction.origin !== "remote") continue;
    for (const change of transaction.changes) {
      if (change.type === type && change.op === "put") ids.push(change.id);
    }
  }
  return ids;
}

async function writeNotes(realm: Realm, from: number, to: number) {
  const receipts = [];
  for (let index = from; index < to; index++) {
    receipts.push(
      await realm.write((tx) => tx.put("Note", `n${index}`, { index })),
    );
  }
  return receipts;
}

Deno.test("createSyncHandler() shutdown() and [Symbol.asyncDispose] are one idempotent stop: sessions end with server_shutting_down (retryable), the app's own routes keep serving, and clients go on through another server on the same store without loss", async () => {
  using kv = await Deno.openKv(":memory:");
  await using second = await createSyncHandler({
    ...BASE,
    kv,
    prefix: "/api/sync",
  });
  await using secondHttp = mount(second);
  const first = await createSyncHandler({ ...BASE, kv, prefix: "/api/sync" });
  try {
    await using firstHttp = mount(first);
    const firstOrigin = `http://127.0.0.1:${firstHttp.addr.port}`;
    await using proxy = new TcpProxy(firstHttp.addr);
    await using writerApp = fastApp(`${proxy.url}/api/sync`);
    await using readerApp = fastApp(
      `http://127.0.0.1:${secondHttp.addr.port}/api/sync`,
    );
    const writer = await writerApp.logIn(Credentials.anonymous());
    const reader = await readerApp.logIn(Credentials.anonymous());
    await using mine = await openDownloaded(writer, "/shared/board");
    await using theirs = await openDownloaded(reader, "/shared/board");
    await using seen = new Recorder(theirs.changes({ signal: bounded() }));
    await using states = new Recorder<ConnectionStateChange>(
      mine.syncSession.connectionStateChanges({ signal: bounded() }),
    );
    const before = await writeNotes(mine, 0, 5);
    await Promise.all(
      before.map((r) => r.waitForUpload({ signal: bounded() })),
    );

    // Every way to stop, at once and again: one stop.
    const stops = [
      first.shutdown(),
      first[Symbol.asyncDispose](),
      first.shutdown(),
    ];
    await Promise.all(stops);
    await first.shutdown();
    await first[Symbol.asyncDispose]();
    const left = await states.until((change) =>
      change.previous === "connected" && change.current !== "connected"
    );
    assert.ok(left.error instanceof SyncError, String(left.error));
    assert.equal(left.error.code, "server_shutting_down");
    assert.equal(left.error.isFatal, false);
    assert.equal(left.error.willRetry, true);
    assert.equal(mine.syncSession.state, "active");

    // The handler refuses from now on; the app around it goes on.
    assert.deepEqual(await answer(fetch(`${firstOrigin}/api/sync/health`)), {
      status: 503,
      body: { status: "shutting_down" },
    });
    const login = await fetch(`${firstOrigin}/api/sync/login`, {
      method: "POST",
      body: JSON.stringify({ provider: "anonymous" }),
    });
    assert.equal(login.status, 503);
    await login.body?.cancel();
    assert.deepEqual(await answer(fetch(`${firstOrigin}/`)), {
      status: 200,
      body: "the app's own page",
    });

    // Written while no server takes them, then the link moves to the
    // second server: its token still works there (one store), and every
    // write arrives once.
    const during = await writeNotes(mine, 5, 10);
    proxy.retarget(secondHttp.addr);
    const after = await writeNotes(mine, 10, 12);
    await Promise.all(
      [...during, ...after].map((r) => r.waitForUpload({ signal: bounded() })),
    );
    const expected = Array.from({ length: 12 }, (_, index) => `n${index}`);
    await seen.until(() =>
      remotePuts(seen.items, "Note").length >= expected.length
    );
    await theirs.syncSession.waitForDownload({ signal: bounded() });
    assert.deepEqual(remotePuts(seen.items, "Note").sort(), expected.sort());
    assert.equal(
      first.stats().changesetsIntegrated + second.stats().changesetsIntegrated,
      12,
    );
    for (const id of expected) {
      assert.deepEqual(theirs.get("Note", id), { index: Number(id.slice(1)) });
    }
  } finally {
    await first.shutdown();
  }
});

Deno.test("limits.maxQueuedBytesPerConnection: a writer that sends more than the server holds is refused with queue_full (retryable), keeps its session, and every write reaches another client exactly once", async () => {
  // Uploads wait in the server (held) until the test releases the first
  // validation, so the second frame finds the bound full whatever the timing.
  let release!: () => void;
  const released = new Promise<void>((resolve) => release = resolve);
  let validations = 0;
  await using sync = await createSyncHandler({
    ...BASE,
    limits: { maxQueuedBytesPerConnection: 48 * 1024 },
    validateChangeset: async (_changeset: ChangesetToValidate) => {
      validations++;
      await released;
      return true;
    },
  });
  await using http = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen() {} },
    sync.fetch,
  );
  const baseUrl = `http://127.0.0.1:${http.addr.port}`;
  await using writerApp = fastApp(baseUrl);
  await using readerApp = fastApp(baseUrl);
  const writer = await writerApp.logIn(Credentials.anonymous());
  const reader = await readerApp.logIn(Credentials.anonymous());
  await using mine = await openDownloaded(writer, "/shared/blobs");
  await using theirs = await openDownloaded(reader, "/shared/blobs");
  await using seen = new Recorder(theirs.changes({ signal: bounded(30_000) }));
  await using states = new Recorder<ConnectionStateChange>(
    mine.syncSession.connectionStateChanges({ signal: bounded(30_000) }),
  );
  const count = 64;
  const receipts = [];
  for (let index = 0; index < count; index++) {
    // 32 KiB each, incompressible: two frames of one write each already
    // pass the bound however the server counts a frame (at least its size).
    const bytes = crypto.getRandomValues(new Uint8Array(32 * 1024));
    receipts.push(
      await mine.write((tx) => tx.put("Blob", `b${index}`, { bytes })),
    );
  }
  const refused = await states.until((change) =>
    change.error instanceof SyncError && change.error.code === "queue_full"
  );
  assert.ok(refused.error instanceof SyncError);
  assert.equal(refused.error.isFatal, false);
  assert.equal(refused.error.willRetry, true);
  assert.ok(validations >= 1);
  release();
  await Promise.all(
    receipts.map((r) => r.waitForUpload({ signal: bounded(30_000) })),
  );
  assert.equal(mine.syncSession.state, "active");
  for (const change of states.items) {
    if (change.error === undefined) continue;
    assert.ok(change.error instanceof SyncError);
    assert.equal(change.error.isFatal, false, change.error.code);
  }
  await seen.until(() => remotePuts(seen.items, "Blob").length >= count, {
    signal: bounded(30_000),
  });
  await theirs.syncSession.waitForDownload({ signal: bounded() });
  const ids = remotePuts(seen.items, "Blob");
  assert.equal(ids.length, count);
  assert.equal(new Set(ids).size, count);
  assert.equal(sync.stats().changesetsIntegrated, count);
  for (let index = 0; index < count; index++) {
    const bytes = theirs.get("Blob", `b${index}`)?.bytes;
    assert.ok(bytes instanceof Uint8Array && bytes.length === 32 * 1024);
    assert.deepEqual(bytes, mine.get("Blob", `b${index}`)?.bytes);
  }
});
