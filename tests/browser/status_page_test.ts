/**
 * The server's /status page in headless Chromium, with two Deno clients
 * connected: what it shows, and that it refreshes itself.
 */
import assert from "node:assert/strict";
import { App, Credentials } from "../../mod.ts";
import { openBrowserPage } from "../_helpers/browser.ts";
import { startTestServer } from "../_helpers/test_server.ts";
import { bounded } from "../_helpers/waits.ts";

Deno.test("GET /status in Chromium: connections, sessions per realm with state and pending bytes, refreshing itself", async () => {
  await using server = await startTestServer({
    permissions: () => "readwrite",
  });
  await using appA = new App({ baseUrl: server.url, lingerMs: 0 });
  await using appB = new App({ baseUrl: server.url, lingerMs: 0 });
  const userA = await appA.logIn(Credentials.anonymous());
  const userB = await appB.logIn(Credentials.anonymous());
  await using board = await userA.openRealm({
    path: "/shared/board",
    waitForDownload: true,
    signal: bounded(),
  });
  await using boardToo = await userB.openRealm({
    path: "/shared/board",
    waitForDownload: true,
    signal: bounded(),
  });
  await using notes = await userB.openRealm({
    path: "/~/notes",
    waitForDownload: true,
    signal: bounded(),
  });
  assert.ok(boardToo.syncSession && notes.syncSession);

  // The harness's blank page (any bundled entry will do), then the status
  // page from the sync server itself: loopback, so no token is needed.
  await using browser = await openBrowserPage({
    entry: new URL("./client_page.ts", import.meta.url),
    title: "status",
    signal: bounded(60_000),
  });
  const page = browser.page;
  const response = await page.goto(`${server.url}/status`, {
    waitUntil: "load",
  });
  assert.equal(response?.status(), 200);
  assert.equal(await page.title(), "Tether status");
  assert.equal(await page.locator("#connections").textContent(), "2");
  assert.equal(await page.locator("#sessions").textContent(), "3");
  assert.equal(await page.locator("#realms").textContent(), "2");
  const realmRows = await page.locator("#realm-table tbody tr")
    .allTextContents();
  assert.equal(realmRows.length, 2);
  assert.ok(realmRows.some((row) => row.startsWith("/shared/board2")));
  assert.ok(realmRows.some((row) => row.startsWith(`/${userB.id}/notes1`)));
  const states = await page.locator("#session-table .state").allTextContents();
  assert.deepEqual(states, ["live", "live", "live"]);
  const users = await page.locator("#session-table tbody tr td:nth-child(2)")
    .allTextContents();
  assert.deepEqual(users.toSorted(), [userA.id, userB.id, userB.id].toSorted());

  // A write moves the changeset total; the page's own refresh shows it.
  const receipt = await board.write((tx) =>
    tx.put("Note", "n1", { text: "hi" })
  );
  await receipt.waitForUpload({ signal: bounded() });
  // The function runs in the page (a string, so Deno's types do not apply).
  await page.waitForFunction(
    'document.querySelector(".cards")?.textContent?.includes("1 in all")',
    undefined,
    { timeout: 10_000 },
  );
  const shot = await browser.screenshot("status");
  assert.ok((await Deno.stat(shot)).size > 0);
  assert.deepEqual(browser.pageErrors, []);
});
