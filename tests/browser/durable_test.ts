/**
 * The durable client in headless Chromium: `App.open({ storage: {
 * indexedDb } })` keeps the user, the realm's objects and its pending
 * writes across a page reload while the server is down, and the writes
 * upload exactly once when the server is back.
 */
import assert from "node:assert/strict";
import { openBrowserPage, pageApi } from "../_helpers/browser.ts";
import { startTestServer } from "../_helpers/test_server.ts";
import type { DurablePage } from "./durable_page.ts";

const DATABASE = "tether-durable-test";
const PATH = "/~/notes";

Deno.test("Browser client on IndexedDB: after a reload with the server down, the saved user, the objects and the pending writes are there, and they upload once the server is back", async () => {
  await using stack = new AsyncDisposableStack();
  const dataDir = await Deno.makeTempDir({ prefix: "tether-browser-kv-" });
  stack.defer(() => Deno.remove(dataDir, { recursive: true }));
  const kv = `${dataDir}/sync.kv`;

  let server = await startTestServer({ kv });
  stack.defer(() => server.server.shutdown());
  const port = server.server.addr.port;

  const browser = await openBrowserPage({
    entry: new URL("./durable_page.ts", import.meta.url),
    title: "Tether on IndexedDB",
    signal: AbortSignal.timeout(60_000),
  });
  stack.use(browser);
  const page = pageApi<DurablePage>(browser.page, "durablePage");

  // First load, online: a new anonymous user, one acknowledged write.
  const first = await page.open(server.url, DATABASE, PATH);
  assert.equal(first.restored, false);
  await page.put("n1", "written online");
  const synced = await page.waitForPending(10_000);
  assert.deepEqual(synced.pending, []);
  assert.equal(server.server.stats().changesetsIntegrated, 1);

  // The server goes away; two writes wait in IndexedDB.
  await server.server.shutdown();
  await page.put("n2", "written offline");
  const offline = await page.put("n3", "also offline");
  assert.deepEqual(offline.pending, [2, 3]);

  // Reload while the server is down: everything comes from IndexedDB.
  await browser.page.reload({ waitUntil: "load" });
  const reloaded = await page.open(server.url, DATABASE, PATH);
  assert.equal(reloaded.restored, true);
  assert.equal(reloaded.userId, first.userId);
  assert.deepEqual(reloaded.notes, [
    { id: "n1", text: "written online" },
    { id: "n2", text: "written offline" },
    { id: "n3", text: "also offline" },
  ]);
  assert.deepEqual(reloaded.pending, [2, 3]);
  assert.notEqual(reloaded.connection, "connected");
  const offlineShot = await browser.screenshot("durable-reloaded-offline");
  assert.ok((await Deno.stat(offlineShot)).size > 0);

  // A second tab of the same origin on the same realm is refused: one
  // writer per store.
  const tab = await browser.page.context().newPage();
  stack.defer(() => tab.close());
  await tab.goto(browser.url, { waitUntil: "load" });
  await assert.rejects(
    pageApi<DurablePage>(tab, "durablePage").open(server.url, DATABASE, PATH),
    /another tab or worker holds it/,
  );

  // The server is back (same port, same data): both writes upload, once.
  server = await startTestServer({ kv, port });
  const uploaded = await page.waitForPending(15_000);
  assert.deepEqual(uploaded.pending, []);
  assert.equal(server.server.stats().changesetsIntegrated, 2);
  const shot = await browser.screenshot("durable-uploaded");
  assert.ok((await Deno.stat(shot)).size > 0);
  await page.close();
  assert.deepEqual(browser.pageErrors, []);
});
