/**
 * Conformance of the client on IndexedDB in headless Chromium, through the
 * public API bundled for a page: two tabs on one realm (the later refused
 * with `storage_locked`, then it opens once the first tab is gone), a tab
 * closed amid a stream of writes (every resolved write survives, pending
 * ones upload once), queries, indexes and live queries equal to a Deno
 * client's, `logOut({ deleteLocalData: true })` (refused while another tab
 * holds a realm; otherwise the data is gone), a write the server rejects
 * (reverted in the page, in its live query and in IndexedDB), and a
 * database of other code refused untouched with `storage_invalid`.
 */
import assert from "node:assert/strict";
import type { Page } from "npm:playwright-core@1.65.2";
import { App, Credentials, type Realm } from "../../mod.ts";
import {
  type BrowserPage,
  openBrowserPage,
  type PageApi,
  pageApi,
} from "../_helpers/browser.ts";
import { startTestServer, type TestServer } from "../_helpers/test_server.ts";
import type {
  ConfPage,
  Outcome,
  PageError,
  PageQuery,
  PlainObject,
} from "./conformance_page.ts";
import { exoticObjects, exoticReport } from "./exotic_values.ts";

const SEED = Number(Deno.env.get("TETHER_BROWSER_SEED") ?? Date.now() % 1e6);

/** A second tab of the browser's context, on the same origin. */
async function newTab(
  browser: BrowserPage,
  stack: AsyncDisposableStack,
): Promise<{ tab: Page; api: PageApi<ConfPage>; console: string[] }> {
  const tab = await browser.page.context().newPage();
  tab.setDefaultTimeout(10_000);
  stack.defer(async () => {
    if (!tab.isClosed()) await tab.close();
  });
  const lines: string[] = [];
  tab.on("console", (message) => void lines.push(message.text()));
  tab.on("pageerror", (error) => void browser.pageErrors.push(error.message));
  await tab.goto(browser.url, { waitUntil: "load" });
  return { tab, api: pageApi<ConfPage>(tab, "confPage"), console: lines };
}

function ok<T>(outcome: Outcome<T>): T {
  if (!outcome.ok) {
    assert.fail(`Expected success, got ${JSON.stringify(outcome.error)}`);
  }
  return outcome.value;
}

function refused<T>(outcome: Outcome<T>): PageError {
  if (outcome.ok) {
    assert.fail(`Expected a refusal, got ${JSON.stringify(outcome.value)}`);
  }
  return outcome.error;
}

/** A tiny seeded generator (mulberry32), so a failure can be replayed. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const QUERIES: PageQuery[] = [
  {
    where: { done: false, priority: { gte: 2 } },
    sort: [["priority", "desc"], ["title", "asc"]],
  },
  {
    where: { priority: { in: [1, 3] } },
    sort: [["title", "asc"]],
    limit: 5,
    offset: 2,
  },
  {
    where: { $or: [{ done: true }, { tag: { eq: null } }] },
    sort: [["priority", "asc"]],
  },
  {
    where: { tag: { ne: "red" } },
    sort: [["tag", "asc"], ["priority", "desc"]],
  },
  { where: { title: { lt: "task 3" } }, sort: [["title", "desc"]], limit: 7 },
  {
    where: { $not: { done: true } },
    sort: [["done", "desc"], ["priority", "asc"]],
  },
  { where: { priority: { lt: 2 } }, sort: [["tag", "desc"]] },
  { sort: [["priority", "asc"]], offset: 3 },
];

/** A task of the seeded set: some without `tag`, some with `tag: null`. */
function task(random: () => number, i: number): PlainObject {
  const fields: Record<string, string | number | boolean | null> = {
    title: `task ${Math.floor(random() * 60)}`,
    done: random() < 0.4,
    priority: Math.floor(random() * 5),
  };
  const tag = random();
  if (tag < 0.3) fields.tag = "red";
  else if (tag < 0.55) fields.tag = "blue";
  else if (tag < 0.75) fields.tag = null;
  return { id: `t${String(i).padStart(3, "0")}`, fields };
}

function denoResults(realm: Realm, queries: PageQuery[]) {
  return queries.map((query) => ({
    objects: realm.objects("Task", query).map(({ id, fields }) => ({
      id,
      fields: { ...fields },
    })),
    count: realm.count(
      "Task",
      query.where === undefined ? {} : { where: query.where },
    ),
  }));
}

Deno.test("Browser conformance on IndexedDB: tabs, a tab closed amid writes, queries and live queries, logOut with deleteLocalData, a rejected write, a foreign database", async (t) => {
  console.log(`seed ${SEED} (TETHER_BROWSER_SEED=${SEED} replays it)`);
  await using stack = new AsyncDisposableStack();
  const server: TestServer = await startTestServer({
    permissions: () => "readwrite" as const,
    // Refuses any "Guarded" object whose text is "forbidden".
    validateChangeset: ({ changes }) =>
      !changes.some((change) =>
        change.type === "Guarded" && change.fields?.text === "forbidden"
      ),
  });
  stack.defer(() => server.server.shutdown());

  const browser = await openBrowserPage({
    entry: new URL("./conformance_page.ts", import.meta.url),
    title: "Tether conformance on IndexedDB",
    signal: AbortSignal.timeout(60_000),
  });
  stack.use(browser);
  const main = pageApi<ConfPage>(browser.page, "confPage");

  await t.step(
    "two tabs on one realm: the later is refused with storage_locked, then opens it once the first tab is closed, with everything",
    async () => {
      const db = "conf-tabs";
      const first = await newTab(browser, stack);
      const second = await newTab(browser, stack);
      // Two tabs creating one new database at once both get a store.
      const race = await Promise.all([
        first.api.openApp(server.url, "conf-race").then(async (outcome) => {
          await first.api.close();
          return outcome;
        }),
        second.api.openApp(server.url, "conf-race").then(async (outcome) => {
          await second.api.close();
          return outcome;
        }),
      ]);
      assert.deepEqual(race.map(ok), [
        { currentUser: null, allUsers: [] },
        { currentUser: null, allUsers: [] },
      ]);
      const opened = ok(await first.api.openApp(server.url, db));
      assert.equal(opened.currentUser, null);
      const loginResponse = first.tab.waitForResponse((response) =>
        response.url().endsWith("/login") &&
        response.request().method() === "POST"
      );
      const userId = await first.api.logIn();
      // The saved login is id, refresh token, kind and order: never the
      // access token.
      const login = await (await loginResponse).json() as {
        accessToken: string;
        refreshToken: string;
      };
      const header = await first.api.snapshot(db, ["header"]);
      const saved = header.entries.filter(({ key }) =>
        Array.isArray(key) && key[0] === "users"
      );
      assert.equal(saved.length, 1);
      assert.deepEqual(saved[0]!.key, ["users", userId]);
      const record = saved[0]!.value as Record<string, unknown>;
      assert.deepEqual(Object.keys(record).sort(), [
        "id",
        "order",
        "provider",
        "refreshToken",
      ]);
      assert.equal(record.refreshToken, login.refreshToken);
      assert.equal(record.provider, "anonymous");
      assert.ok(!JSON.stringify(header).includes(login.accessToken));
      // realm.path is the path as given; the server knows it resolved.
      assert.equal(
        ok(await first.api.openRealm("/~/shared")).path,
        "/~/shared",
      );
      const path = `/${userId}/shared`;
      await first.api.write([{ id: "a", fields: { n: 1 } }], "Note");

      // Saved users are shared between tabs.
      const restored = ok(await second.api.openApp(server.url, db));
      assert.equal(restored.currentUser, userId);
      assert.deepEqual(restored.allUsers, [userId]);
      const error = refused(await second.api.openRealm("/~/shared"));
      assert.equal(error.name, "SyncError");
      assert.equal(error.code, "storage_locked");
      assert.match(error.message, /another tab or worker holds it/);
      assert.ok(error.message.includes(`"/${userId}/shared"`), error.message);
      // A refusal again, not a stale claim, and another realm of the same
      // user opens in the second tab.
      assert.equal(
        refused(await second.api.openRealm("/~/shared")).code,
        "storage_locked",
      );
      ok(await second.api.openRealm("/~/other"));
      await second.api.write([{ id: "o", fields: { n: 2 } }], "Note");
      await second.api.closeRealm();

      // The first tab keeps writing, then goes away without closing anything.
      await first.api.write(
        [{ id: "b", fields: { n: 3 } }, { id: "c", fields: { n: 4 } }],
        "Note",
      );
      await first.api.write([{ id: "a", fields: { n: 5 } }], "Note");
      await first.tab.close();

      // At once: the closed tab's realm lock goes a moment after the tab.
      ok(await second.api.openRealm("/~/shared"));
      assert.deepEqual(await second.api.objects("Note"), [
        { id: "a", fields: { n: 5 } },
        { id: "b", fields: { n: 3 } },
        { id: "c", fields: { n: 4 } },
      ]);
      assert.deepEqual(await second.api.waitForPending(10_000), []);
      const onServer = await server.realm(path).objects("Note");
      assert.deepEqual(
        onServer.map(({ id, fields }) => ({ id, fields })).sort((x, y) =>
          x.id < y.id ? -1 : 1
        ),
        [
          { id: "a", fields: { n: 5 } },
          { id: "b", fields: { n: 3 } },
          { id: "c", fields: { n: 4 } },
        ],
      );
      await second.api.close();
      await second.tab.close();
    },
  );

  await t.step(
    "tabs whose apps opened before any login, logging in anonymously, one after the other or at once, get the one saved user",
    async () => {
      const a = await newTab(browser, stack);
      const b = await newTab(browser, stack);
      ok(await a.api.openApp(server.url, "conf-anon"));
      ok(await b.api.openApp(server.url, "conf-anon"));
      const id = await a.api.logIn();
      assert.equal(await b.api.logIn(), id);
      await a.api.close();
      await b.api.close();
      ok(await a.api.openApp(server.url, "conf-anon-at-once"));
      ok(await b.api.openApp(server.url, "conf-anon-at-once"));
      const [first, second] = await Promise.all([a.api.logIn(), b.api.logIn()]);
      assert.equal(first, second);
      await a.api.close();
      await b.api.close();
      await a.tab.close();
      await b.tab.close();
    },
  );

  await t.step(
    "a tab closed amid a stream of writes: every resolved write is there in a new tab, and the pending ones upload exactly once",
    async () => {
      const db = "conf-stream";
      const COUNT = 3_000;
      const writer = await newTab(browser, stack);
      ok(await writer.api.openApp(server.url, db));
      const userId = await writer.api.logIn();
      ok(await writer.api.openRealm("/~/stream"));
      const path = `/${userId}/stream`;
      const before = server.server.stats().changesetsIntegrated;
      await writer.api.startWrites("Item", "w", COUNT);
      const signal = AbortSignal.timeout(15_000);
      while (
        writer.console.filter((line) => line.startsWith("resolved ")).length <
          25
      ) {
        signal.throwIfAborted();
        await writer.tab.waitForTimeout(20);
      }
      await writer.tab.close();
      const resolved = writer.console
        .filter((line) => line.startsWith("resolved "))
        .map((line) => line.slice("resolved ".length));

      const reader = await newTab(browser, stack);
      const restored = ok(await reader.api.openApp(server.url, db));
      assert.equal(restored.currentUser, userId);
      ok(await reader.api.openRealm("/~/stream"));
      const present = (await reader.api.objects("Item")).map((o) => o.id);
      for (const id of resolved) {
        assert.ok(present.includes(id), `resolved write ${id} is missing`);
      }
      // Transactions commit in order: what survived is a prefix of the stream.
      const expected = Array.from({ length: present.length }, (_, i) => `w${i}`)
        .sort();
      assert.deepEqual(present, expected);
      console.log(
        `${resolved.length} writes seen resolved, ${present.length} of ${COUNT} survived the tab`,
      );
      assert.deepEqual(await reader.api.waitForPending(20_000), []);
      const onServer = await server.realm(path).objects("Item");
      assert.deepEqual(onServer.map((o) => o.id).sort(), expected);
      assert.equal(
        server.server.stats().changesetsIntegrated - before,
        present.length,
      );
      await reader.api.close();
      await reader.tab.close();
    },
  );

  await t.step(
    "queries, indexes and live queries on IndexedDB equal a Deno client's, across a remote write and a reload with other indexes",
    async () => {
      const db = "conf-query";
      const PATH = "/shared/tasks";
      const random = prng(SEED);
      const tasks = Array.from({ length: 80 }, (_, i) => task(random, i));

      ok(await main.openApp(server.url, db));
      await main.logIn();
      ok(await main.openRealm(PATH, { Task: ["done", "priority"] }));
      await main.write(tasks.slice(0, 40), "Task");
      await main.write(tasks.slice(40), "Task");
      const watched: PageQuery = {
        where: { done: false, priority: { gte: 2 } },
        sort: [["priority", "desc"], ["title", "asc"]],
        limit: 12,
      };
      await main.startWatch("Task", watched);
      assert.deepEqual(await main.waitForPending(10_000), []);

      await using deno = new App({ baseUrl: server.url, lingerMs: 0 });
      const denoUser = await deno.logIn(Credentials.anonymous());
      await using denoRealm = await denoUser.openRealm({
        path: PATH,
        waitForDownload: true,
        signal: AbortSignal.timeout(10_000),
      });
      assert.equal(denoRealm.objects("Task").length, tasks.length);
      assert.deepEqual(
        await main.query("Task", QUERIES),
        denoResults(denoRealm, QUERIES),
      );

      // A remote write from the Deno client: some leave the watched result,
      // some enter, one changes in place, one is deleted.
      const edits = Array.from({ length: 10 }, () => task(random, 0))
        .map((t, i) => ({
          id: `t${String(i * 7).padStart(3, "0")}`,
          fields: t.fields,
        }));
      await denoRealm.write((tx) => {
        for (const { id, fields } of edits) tx.put("Task", id, fields);
        tx.put("Task", "t999", { title: "task 0", done: false, priority: 4 });
        tx.delete("Task", "t001");
      });
      await denoRealm.syncSession.waitForUpload({
        signal: AbortSignal.timeout(10_000),
      });
      const wantIds = denoRealm.objects("Task", watched).map((o) => o.id);
      const status = await main.waitWatch(wantIds, 10_000);
      assert.deepEqual(status.badPatches, []);
      assert.equal(status.staleItems, 0);
      assert.deepEqual(
        status.objects,
        denoRealm.objects("Task", watched).map(({ id, fields }) => ({
          id,
          fields: { ...fields },
        })),
      );
      assert.deepEqual(
        await main.query("Task", QUERIES),
        denoResults(denoRealm, QUERIES),
      );

      // Reload: the realm reopens from IndexedDB with indexes it never had.
      await browser.page.reload({ waitUntil: "load" });
      ok(await main.openApp(server.url, db));
      ok(await main.openRealm(PATH, { Task: ["title", "tag"] }));
      assert.deepEqual(
        await main.query("Task", QUERIES),
        denoResults(denoRealm, QUERIES),
      );
      await main.close();
    },
  );

  await t.step(
    "values of every kind survive IndexedDB and sort, compare and match as on a Deno client, also indexed after a reload",
    async () => {
      const db = "conf-values";
      const PATH = "/shared/values";
      const tab = await newTab(browser, stack);
      ok(await tab.api.openApp(server.url, db));
      await tab.api.logIn();
      ok(await tab.api.openRealm(PATH));
      await tab.api.writeExotic("Val");
      assert.deepEqual(await tab.api.waitForPending(10_000), []);

      await using deno = new App({ baseUrl: server.url, lingerMs: 0 });
      const denoUser = await deno.logIn(Credentials.anonymous());
      await using denoRealm = await denoUser.openRealm({
        path: PATH,
        waitForDownload: true,
        signal: AbortSignal.timeout(10_000),
      });
      const want = exoticReport(denoRealm, "Val");
      assert.equal(want[0]!.length, exoticObjects().length);
      assert.deepEqual(await tab.api.exoticReport("Val"), want);

      // From IndexedDB alone (no server to reach), with an index on `v`.
      const closed = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      const dead = `http://127.0.0.1:${closed.addr.port}`;
      closed.close();
      await tab.api.close();
      await tab.tab.reload({ waitUntil: "load" });
      ok(await tab.api.openApp(dead, db));
      ok(await tab.api.openRealm(PATH, { Val: ["v", "k"] }));
      assert.deepEqual(await tab.api.exoticReport("Val"), want);
      await tab.api.close();
      await tab.tab.close();
    },
  );

  await t.step(
    "logOut({ deleteLocalData: true }) is refused with storage_locked while another tab holds a realm, and deletes the data otherwise",
    async () => {
      const db = "conf-logout";
      const holder = await newTab(browser, stack);
      ok(await holder.api.openApp(server.url, db));
      const userId = await holder.api.logIn();
      ok(await holder.api.openRealm("/~/notes"));
      await holder.api.write([{ id: "n1", fields: { text: "kept" } }], "Note");
      assert.deepEqual(await holder.api.waitForPending(10_000), []);

      const other = await newTab(browser, stack);
      assert.equal(
        ok(await other.api.openApp(server.url, db)).currentUser,
        userId,
      );
      const error = refused(await other.api.logOut(true));
      assert.equal(error.name, "SyncError");
      assert.equal(error.code, "storage_locked");
      // The user is logged out all the same; the data stays.
      assert.equal(await other.api.currentUser(), null);
      const kept = await other.api.rawKeys(db, userId);
      assert.deepEqual(
        { meta: kept.meta, records: kept.records, savedUser: kept.savedUser },
        { meta: 1, records: 1, savedUser: false },
      );
      await other.api.close();
      await other.tab.close();

      // Closed in the holder, the realm can go.
      await holder.api.closeRealm();
      ok(await holder.api.logOut(true));
      assert.deepEqual(await holder.api.rawKeys(db, userId), {
        meta: 0,
        records: 0,
        pending: 0,
        savedUser: false,
      });
      await holder.api.close();
      await holder.tab.reload({ waitUntil: "load" });
      const reopened = ok(await holder.api.openApp(server.url, db));
      assert.deepEqual(reopened, { currentUser: null, allUsers: [] });
      const next = await holder.api.logIn();
      assert.notEqual(next, userId);
      ok(await holder.api.openRealm("/~/notes"));
      assert.deepEqual(await holder.api.objects("Note"), []);
      await holder.api.close();
      await holder.tab.close();
    },
  );

  await t.step(
    "a rejected write: the receipt rejects with write_rejected (cause validation_failed), the page's copy and live query revert, later writes sync, and IndexedDB holds the reverted state when reopened offline",
    async () => {
      const db = "conf-reject";
      const tab = await newTab(browser, stack);
      ok(await tab.api.openApp(server.url, db));
      const userId = await tab.api.logIn();
      ok(await tab.api.openRealm("/~/guarded"));
      const path = `/${userId}/guarded`;
      const first = await tab.api.write(
        [{ id: "g1", fields: { text: "ok" } }],
        "Guarded",
      );
      ok(await tab.api.waitForUpload(first, 10_000));
      await tab.api.startWatch("Guarded", { sort: [["text", "asc"]] });
      const bad = await tab.api.write([
        { id: "g1", fields: { text: "forbidden" } },
        { id: "g2", fields: { text: "forbidden" } },
      ], "Guarded");
      const later = await tab.api.write(
        [{ id: "g3", fields: { text: "later" } }],
        "Guarded",
      );
      const rejection = refused(await tab.api.waitForUpload(bad, 10_000));
      assert.equal(rejection.name, "SyncError");
      assert.equal(rejection.code, "write_rejected");
      assert.equal(rejection.causeCode, "validation_failed");
      ok(await tab.api.waitForUpload(later, 10_000));
      const reverted = [
        { id: "g3", fields: { text: "later" } },
        { id: "g1", fields: { text: "ok" } },
      ];
      const status = await tab.api.waitWatch(["g3", "g1"], 10_000);
      assert.deepEqual(status.objects, reverted);
      assert.deepEqual(status.badPatches, []);
      assert.equal(status.staleItems, 0);
      assert.equal(await tab.api.sessionState(), "active");
      assert.deepEqual(await tab.api.pending(), []);
      const onServer = await server.realm(path).objects("Guarded");
      assert.deepEqual(
        onServer.map(({ id, fields }) => ({ id, fields })).sort((a, b) =>
          a.id < b.id ? -1 : 1
        ),
        [reverted[1], reverted[0]],
      );
      await tab.api.close();

      // Reopened with no server to reach: what IndexedDB holds is the
      // reverted state, with nothing pending.
      const closed = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      const dead = `http://127.0.0.1:${closed.addr.port}`;
      closed.close();
      await tab.tab.reload({ waitUntil: "load" });
      assert.equal(ok(await tab.api.openApp(dead, db)).currentUser, userId);
      ok(await tab.api.openRealm("/~/guarded"));
      assert.deepEqual(await tab.api.objects("Guarded"), [
        reverted[1],
        reverted[0],
      ]);
      assert.deepEqual(await tab.api.pending(), []);
      await tab.api.close();
      await tab.tab.close();
    },
  );

  await t.step(
    "a database of other code is refused with storage_invalid naming it, and left untouched",
    async () => {
      const db = "conf-foreign";
      const tab = await newTab(browser, stack);
      await tab.api.createForeign(db);
      const before = await tab.api.snapshot(db);
      assert.deepEqual(before.stores, ["people", "settings"]);
      const error = refused(await tab.api.openApp(server.url, db));
      assert.equal(error.name, "SyncError");
      assert.equal(error.code, "storage_invalid");
      assert.ok(error.message.includes(`IndexedDB "${db}"`), error.message);
      assert.deepEqual(await tab.api.snapshot(db), before);

      // The same database as one realm's storage, from a durable app.
      ok(await tab.api.openApp(server.url, "conf-foreign-app"));
      await tab.api.logIn();
      const perRealm = refused(await tab.api.openRealm("/~/x", undefined, db));
      assert.equal(perRealm.code, "storage_invalid");
      assert.ok(
        perRealm.message.includes(`IndexedDB "${db}"`),
        perRealm.message,
      );
      assert.deepEqual(await tab.api.snapshot(db), before);
      await tab.api.close();

      // Tether's store names, but another application's header.
      const lookalike = "conf-lookalike";
      await tab.api.createForeign(
        lookalike,
        ["header", "meta", "pending", "records"],
        { magic: "someone-else", format: 1 },
      );
      const copy = await tab.api.snapshot(lookalike);
      const header = refused(await tab.api.openApp(server.url, lookalike));
      assert.equal(header.code, "storage_invalid");
      assert.ok(
        header.message.includes(`IndexedDB "${lookalike}"`),
        header.message,
      );
      assert.deepEqual(await tab.api.snapshot(lookalike), copy);
      await tab.tab.close();
    },
  );

  assert.deepEqual(browser.pageErrors, []);
});
