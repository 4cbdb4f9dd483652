import assert from "node:assert/strict";
import { App, Credentials } from "../../mod.ts";
import { createSyncHandler } from "../../server.ts";
import { openDownloaded } from "./_helpers.ts";
import { bounded } from "../_helpers/waits.ts";

Deno.test("createSyncHandler() mounted under /api/sync/ in an app's own Deno.serve: two real clients sync through it", async () => {
  await using sync = await createSyncHandler({
    kv: ":memory:",
    auth: { allowAnonymous: true },
    permissions: () => "readwrite",
    prefix: "/api/sync",
    logger: () => {},
  });
  const seen: string[] = [];
  await using http = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen() {} },
    (request, info) => {
      const { pathname } = new URL(request.url);
      seen.push(pathname);
      if (pathname.startsWith("/api/sync/")) return sync.fetch(request, info);
      return new Response("the app's own page");
    },
  );
  const origin = `http://127.0.0.1:${http.addr.port}`;
  const baseUrl = `${origin}/api/sync`;

  assert.equal(await (await fetch(`${origin}/`)).text(), "the app's own page");
  const health = await fetch(`${baseUrl}/health`);
  assert.deepEqual(await health.json(), { status: "ok" });
  const unknown = await fetch(`${baseUrl}/nothing-here`);
  assert.equal(unknown.status, 404);
  assert.equal((await unknown.json()).error.code, "not_found");
  const metrics = await fetch(`${baseUrl}/metrics`);
  assert.equal(metrics.status, 200);
  assert.match(await metrics.text(), /# TYPE tether_connections gauge/);

  {
    await using writerApp = new App({ baseUrl, lingerMs: 0 });
    await using readerApp = new App({ baseUrl, lingerMs: 0 });
    const writer = await writerApp.logIn(Credentials.anonymous());
    const reader = await readerApp.logIn(Credentials.anonymous());
    await using mine = await openDownloaded(writer, "/shared/board");
    await using theirs = await openDownloaded(reader, "/shared/board");
    const receipt = await mine.write((tx) =>
      tx.put("Note", "n1", { text: "hello" })
    );
    await receipt.waitForUpload({ signal: bounded() });
    await theirs.syncSession.waitForDownload({ signal: bounded() });
    assert.deepEqual(theirs.get("Note", "n1"), { text: "hello" });
    assert.equal(sync.stats().connections, 2);
    // And the server-side API of the same handler sees it.
    assert.deepEqual(await sync.realm("/shared/board").get("Note", "n1"), {
      text: "hello",
    });
  }
  assert.ok(seen.includes("/api/sync/login"));
  assert.ok(seen.includes("/api/sync/sync"));
});

Deno.test("createSyncHandler(): shutdown() refuses new requests with 503 and is safe to call twice", async () => {
  const sync = await createSyncHandler({
    kv: ":memory:",
    auth: { allowAnonymous: true },
    prefix: "/api/sync/",
    logger: () => {},
  });
  const response = await sync.fetch(new Request("http://app/api/sync/health"));
  assert.equal(response.status, 200);
  await response.body?.cancel();
  const outside = await sync.fetch(new Request("http://app/elsewhere/health"));
  assert.equal(outside.status, 404);
  await outside.body?.cancel();
  await sync.shutdown();
  await sync.shutdown();
  const after = await sync.fetch(
    new Request("http://app/api/sync/login", { method: "POST", body: "{}" }),
  );
  assert.equal(after.status, 503);
  await after.body?.cancel();
});

Deno.test("createSyncHandler() refuses a prefix that is not a path", async () => {
  for (const prefix of ["api", "/a b", "/a?b", "//x"]) {
    await assert.rejects(
      createSyncHandler({
        kv: ":memory:",
        auth: { allowAnonymous: true },
        prefix,
        logger: () => {},
      }),
      TypeError,
    );
  }
});
