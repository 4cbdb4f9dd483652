/**
 * The client bundled for browsers, in headless Chromium, against a real
 * server and a Deno client: login, writes both ways, download progress,
 * and connection states across a server restart.
 */
import assert from "node:assert/strict";
import type { Fields } from "../../src/model/value.ts";
import type { Realm } from "../../src/client/realm.ts";
import { anonymousClient } from "../_helpers/e2e.ts";
import { openBrowserPage, type PageApi, pageApi } from "../_helpers/browser.ts";
import { startTestServer } from "../_helpers/test_server.ts";
import type { ClientPage } from "./client_page.ts";

const PATH = "/shared/notes";
const SEEDS = 2_000;
// Every user may read and write every realm: the page and the Deno client
// log in anonymously, as two users, and share one realm.
const shared = {
  permissions: () => "readwrite" as const,
  downloadBatchBytes: 16 * 1024,
};

/** Waits until `realm` holds `type`/`id` (bounded by `signal`). */
async function waitForObject(
  realm: Realm,
  type: string,
  id: string,
  signal: AbortSignal,
): Promise<Fields> {
  // The stream first, then the check: a change between the two is not lost.
  const changes = realm.changes({ signal });
  try {
    for (;;) {
      const fields = realm.get(type, id);
      if (fields !== undefined) return fields;
      const reader = changes.getReader();
      try {
        const { done } = await reader.read();
        if (done) throw signal.reason ?? new Error("The realm closed");
      } finally {
        reader.releaseLock();
      }
    }
  } finally {
    await changes.cancel();
  }
}

Deno.test("Browser client in Chromium syncs both ways with a Deno client, reports download progress to 1 and reconnects after a server restart", async () => {
  await using stack = new AsyncDisposableStack();
  const dataDir = await Deno.makeTempDir({ prefix: "tether-browser-kv-" });
  stack.defer(() => Deno.remove(dataDir, { recursive: true }));
  const kv = `${dataDir}/sync.kv`;

  // Deferred before the clients, so it shuts down after they have closed.
  let server = await startTestServer({ kv, ...shared });
  stack.defer(() => server.server.shutdown());
  const port = server.server.addr.port;

  const deno = await anonymousClient(server.url);
  stack.defer(() => deno.app.close());
  const denoRealm = await deno.user.openRealm({
    path: PATH,
    waitForDownload: true,
  });
  stack.defer(() => denoRealm.close());
  // Twenty changesets of about 6 KB for DOWNLOADs of at most 16 KiB: the
  // page's bootstrap takes several messages, so progress has steps.
  for (let batch = 0; batch < SEEDS / 100; batch++) {
    await denoRealm.write((tx) => {
      for (let index = batch * 100; index < (batch + 1) * 100; index++) {
        tx.put("Seed", `s${index}`, {
          index,
          text: `seed number ${index} `.repeat(3),
        });
      }
    });
  }
  await denoRealm.syncSession.waitForUpload({
    signal: AbortSignal.timeout(10_000),
  });

  const browser = await openBrowserPage({
    entry: new URL("./client_page.ts", import.meta.url),
    title: "Tether client in Chromium",
    signal: AbortSignal.timeout(60_000),
  });
  stack.use(browser);
  const page = pageApi<ClientPage>(browser.page, "clientPage");
  stack.defer(() => page.close());

  // Login and bootstrap. The page registers for the download as soon as
  // openRealm resolves, before its new connection can deliver anything, so
  // the first report (at the first of several DOWNLOADs) is below 1;
  // progress only grows, and ends at 1 with every object the server had.
  const userId = await page.start(server.url, PATH);
  assert.notEqual(userId, deno.user.id);
  const estimates = await page.downloadProgress(15_000);
  assert.ok(estimates[0]! < 1, `progress: ${estimates.join(", ")}`);
  assert.equal(estimates.at(-1), 1);
  for (let index = 1; index < estimates.length; index++) {
    assert.ok(
      estimates[index]! >= estimates[index - 1]!,
      `progress went back: ${estimates.join(", ")}`,
    );
  }
  assert.equal(await page.count("Seed"), SEEDS);

  await writesBothWays(page, denoRealm);

  // Server restart: the page sees the server go away, writes offline, and
  // is connected again once a server runs on the same port and KV file.
  const beforeStop = (await page.transitions()).length;
  await server.server.shutdown();
  const lost = await page.waitForTransition("disconnected", beforeStop, 10_000);
  const transitions = await page.transitions();
  assert.equal(transitions[lost]!.previous, "connected");
  assert.equal(transitions[lost]!.errorCode, "server_shutting_down");

  await page.put("Note", "n3", { text: "Written offline", from: "browser" });
  assert.equal(await page.pendingUploads(), 1);

  server = await startTestServer({ kv, port, ...shared });
  const back = await page.waitForTransition("connected", lost, 15_000);
  // Each transition once, in order: retries between, connected at the end.
  const cycle = (await page.transitions()).slice(lost, back + 1);
  for (let index = 1; index < cycle.length; index++) {
    assert.equal(cycle[index]!.previous, cycle[index - 1]!.current);
  }
  assert.equal(cycle.at(-1)!.previous, "connecting");
  assert.equal(await page.reconnects(), 1);
  await page.waitForUpload(10_000);
  assert.equal(await page.pendingUploads(), 0);
  assert.deepEqual(
    await waitForObject(denoRealm, "Note", "n3", AbortSignal.timeout(10_000)),
    { text: "Written offline", from: "browser" },
  );
  // The new server stored n3 alone: n1, acknowledged before the restart,
  // was not uploaded again.
  assert.equal(server.server.stats().changesetsIntegrated, 1);

  const shot = await browser.screenshot("client");
  assert.ok((await Deno.stat(shot)).size > 0);
  assert.deepEqual(browser.pageErrors, []);
});

/** A write in the page reaches the Deno client, and one the other way. */
async function writesBothWays(
  page: PageApi<ClientPage>,
  denoRealm: Realm,
): Promise<void> {
  await page.put("Note", "n1", {
    text: "Hello from Chromium",
    from: "browser",
  });
  await page.waitForUpload(10_000);
  assert.deepEqual(
    await waitForObject(denoRealm, "Note", "n1", AbortSignal.timeout(10_000)),
    { text: "Hello from Chromium", from: "browser" },
  );

  await denoRealm.write((tx) =>
    tx.put("Note", "n2", { text: "Hello from Deno", from: "deno" })
  );
  assert.deepEqual(await page.waitForObject("Note", "n2", 10_000), {
    text: "Hello from Deno",
    from: "deno",
  });
}
