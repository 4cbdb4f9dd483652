/**
 * The todo example (examples/todo/page.ts) in headless Chromium: two pages
 * of one browser (two contexts, so two IndexedDB stores and two anonymous
 * users) share the list; one goes offline behind a TcpProxy, toggles a todo
 * and filters, and catches up when the link comes back.
 */
import assert from "node:assert/strict";
import type { Page } from "npm:playwright-core@1.65.2";
import { openBrowserPage, pageApi } from "../_helpers/browser.ts";
import { TcpProxy } from "../_helpers/tcp_proxy.ts";
import { startTestServer } from "../_helpers/test_server.ts";
import { ownPathsOnly } from "../../src/server/permissions.ts";
import type { TodoPage } from "../../examples/todo/page.ts";

/** Types a todo into the page's form and submits it. */
async function add(page: Page, title: string): Promise<void> {
  await page.locator("#title").fill(title);
  await page.locator("#title").press("Enter");
}

/** The list item of the todo titled `title`. */
function item(page: Page, title: string, done?: boolean) {
  const state = done === undefined ? "" : done ? ".done" : ":not(.done)";
  return page.locator(`#list li${state}[data-title="${title}"]`);
}

Deno.test("Todo example: two pages share the list live; one toggles offline behind a cut link and catches up on reconnect", async () => {
  await using stack = new AsyncDisposableStack();
  const server = await startTestServer({
    // The rule serve.ts uses.
    permissions: (userId, path) =>
      path === "/shared/todos" ? "readwrite" : ownPathsOnly(userId, path),
  });
  stack.defer(() => server.server.shutdown());
  const proxy = new TcpProxy({
    hostname: "127.0.0.1",
    port: server.server.addr.port,
  });
  stack.use(proxy);

  // Page A reaches the server through the proxy, page B directly.
  const browser = await openBrowserPage({
    entry: new URL("../../examples/todo/page.ts", import.meta.url),
    title: "Tether todos",
    query: { server: proxy.url },
    signal: AbortSignal.timeout(60_000),
  });
  stack.use(browser);
  const a = browser.page;
  const context = await browser.browser.newContext({
    viewport: { width: 900, height: 700 },
  });
  stack.defer(() => context.close());
  const b = await context.newPage();
  b.setDefaultTimeout(10_000);
  const bErrors: string[] = [];
  b.on("pageerror", (error) => bErrors.push(`${error.name}: ${error.message}`));
  const bUrl = new URL(browser.url);
  bUrl.searchParams.set("server", server.url);
  await b.goto(bUrl.href, { waitUntil: "load" });

  const apiA = pageApi<TodoPage>(a, "todoPage");
  const apiB = pageApi<TodoPage>(b, "todoPage");
  stack.defer(() => apiA.close());
  stack.defer(() => apiB.close());
  const userA = await apiA.ready(15_000);
  const userB = await apiB.ready(15_000);
  assert.notEqual(userA, userB);

  // Live both ways.
  await add(a, "Buy milk");
  await item(b, "Buy milk", false).waitFor();
  await add(b, "Call mum");
  await item(a, "Call mum", false).waitFor();
  await a.locator("#state.connected").waitFor();
  assert.deepEqual(await apiA.shown(), [
    { title: "Buy milk", done: false },
    { title: "Call mum", done: false },
  ]);

  // A goes offline: the link refuses new connections and drops the open one.
  proxy.mode = "refuse";
  proxy.dropAll();
  await a.locator("#state:not(.connected)").waitFor();
  await item(a, "Buy milk").locator("input").check();
  await item(a, "Buy milk", true).waitFor();
  assert.equal(await apiA.pendingUploads(), 1);
  await a.locator("#filter-done").click();
  await item(a, "Call mum").waitFor({ state: "detached" });
  assert.deepEqual(await apiA.shown(), [{ title: "Buy milk", done: true }]);
  await add(b, "Pay rent");
  await item(b, "Pay rent").waitFor();
  // A's toggle cannot have reached B: A has no connection.
  assert.deepEqual(await apiB.shown(), [
    { title: "Buy milk", done: false },
    { title: "Call mum", done: false },
    { title: "Pay rent", done: false },
  ]);

  // Back online: A uploads its toggle and downloads B's todo.
  proxy.mode = "forward";
  await a.locator("#state.connected").waitFor({ timeout: 15_000 });
  await item(b, "Buy milk", true).waitFor();
  await a.locator("#filter-open").click();
  await item(a, "Pay rent", false).waitFor();
  assert.deepEqual(await apiA.shown(), [
    { title: "Call mum", done: false },
    { title: "Pay rent", done: false },
  ]);

  // A delete in B leaves A's open list.
  await item(b, "Call mum").locator("button").click();
  await item(a, "Call mum").waitFor({ state: "detached" });
  await a.locator("#filter-all").click();
  await item(a, "Buy milk", true).waitFor();
  assert.deepEqual(await apiA.shown(), [
    { title: "Buy milk", done: true },
    { title: "Pay rent", done: false },
  ]);
  assert.equal(await a.locator("#counts").textContent(), "1 open · 1 done");
  assert.equal(await apiA.pendingUploads(), 0);

  const shot = await browser.screenshot("todo");
  assert.ok((await Deno.stat(shot)).size > 0);
  assert.deepEqual(browser.pageErrors, []);
  assert.deepEqual(bErrors, []);
});
