import assert from "node:assert/strict";
import { SyncError } from "../../src/client/sync_error.ts";
import { anonymousClient } from "../_helpers/e2e.ts";
import { startTestServer } from "../_helpers/test_server.ts";

/** A signal that counts the listeners added to it and removed from it. */
function countingSignal(): {
  controller: AbortController;
  signal: AbortSignal;
  live(): number;
} {
  const controller = new AbortController();
  const signal = controller.signal;
  let live = 0;
  const add = signal.addEventListener.bind(signal);
  const remove = signal.removeEventListener.bind(signal);
  signal.addEventListener = ((...args: Parameters<typeof add>) => {
    live++;
    return add(...args);
  }) as typeof signal.addEventListener;
  signal.removeEventListener = ((...args: Parameters<typeof remove>) => {
    live--;
    return remove(...args);
  }) as typeof signal.removeEventListener;
  return { controller, signal, live: () => live };
}

Deno.test("SyncSession waits reject at once with the reason of an already-aborted signal", async () => {
  await using server = await startTestServer();
  const client = await anonymousClient(server.url);
  try {
    await using realm = await client.user.openRealm({ path: "/~/w" });
    const receipt = await realm.write((tx) => tx.put("T", "a", {}));
    const reason = new DOMException("gone", "AbortError");
    const signal = AbortSignal.abort(reason);
    for (
      const wait of [
        realm.syncSession.waitForUpload({ signal }),
        realm.syncSession.waitForDownload({ signal }),
        receipt.waitForUpload({ signal }),
      ]
    ) {
      await assert.rejects(wait, (error) => error === reason);
    }
  } finally {
    await client.app.close();
  }
});

Deno.test("SyncSession waits reject with the signal's reason, unchanged, when aborted while waiting, and the session stays usable", async () => {
  await using server = await startTestServer();
  const client = await anonymousClient(server.url);
  try {
    await using realm = await client.user.openRealm({
      path: "/~/w",
      waitForDownload: true,
    });
    const session = realm.syncSession;
    session.pause();
    const receipt = await realm.write((tx) => tx.put("T", "a", {}));
    const counting = countingSignal();
    const reason = { custom: "reason object" };
    const waits = [
      session.waitForUpload({ signal: counting.signal }),
      session.waitForDownload({ signal: counting.signal }),
      receipt.waitForUpload({ signal: counting.signal }),
    ].map((wait) => assert.rejects(wait, (error) => error === reason));
    await new Promise((resolve) => setTimeout(resolve, 0));
    counting.controller.abort(reason);
    await Promise.all(waits);
    assert.equal(counting.live(), 0);
    session.resume();
    await receipt.waitForUpload({ signal: AbortSignal.timeout(5_000) });
    await session.waitForDownload({ signal: AbortSignal.timeout(5_000) });
  } finally {
    await client.app.close();
  }
});

Deno.test("SyncSession waits ignore an abort after they resolved, and remove their listener (no leak over 10,000 calls)", async () => {
  await using server = await startTestServer();
  const client = await anonymousClient(server.url);
  try {
    await using realm = await client.user.openRealm({
      path: "/~/w",
      waitForDownload: true,
    });
    const session = realm.syncSession;
    const counting = countingSignal();
    const receipt = await realm.write((tx) => tx.put("T", "a", {}));
    await receipt.waitForUpload({ signal: counting.signal });
    for (let index = 0; index < 10_000; index++) {
      await session.waitForUpload({ signal: counting.signal });
      await receipt.waitForUpload({ signal: counting.signal });
    }
    // 10,000 download waits at once share MARK round trips.
    await Promise.all(
      Array.from(
        { length: 10_000 },
        () => session.waitForDownload({ signal: counting.signal }),
      ),
    );
    assert.equal(counting.live(), 0);
    counting.controller.abort(new Error("too late"));
    await session.waitForDownload({ signal: AbortSignal.timeout(5_000) });
  } finally {
    await client.app.close();
  }
});

Deno.test("SyncSession waits keep waiting while offline and resolve after the server comes back", async () => {
  const dataDir = await Deno.makeTempDir({ prefix: "tether-waits-" });
  try {
    const kv = `${dataDir}/sync.kv`;
    const first = await startTestServer({ kv });
    const port = first.server.addr.port;
    const client = await anonymousClient(first.url, {
      reconnect: { minDelayMs: 20, maxDelayMs: 100 },
    });
    try {
      const realm = await client.user.openRealm({
        path: "/~/w",
        waitForDownload: true,
      });
      await first.server.shutdown();
      const receipt = await realm.write((tx) =>
        tx.put("T", "offline", { n: 1 })
      );
      let settled = false;
      const upload = receipt.waitForUpload({
        signal: AbortSignal.timeout(10_000),
      })
        .finally(() => settled = true);
      const download = realm.syncSession.waitForDownload({
        signal: AbortSignal.timeout(10_000),
      });
      // Wait for the client to notice and schedule retries.
      for await (
        const change of realm.syncSession.connectionStateChanges({
          signal: AbortSignal.timeout(5_000),
        })
      ) {
        if (change.current === "disconnected" && change.retry !== undefined) {
          break;
        }
      }
      assert.equal(settled, false);
      await using second = await startTestServer({ kv, port });
      await upload;
      await download;
      await realm.close();
      void second;
    } finally {
      await client.app.close();
    }
  } finally {
    await Deno.remove(dataDir, { recursive: true });
  }
});

Deno.test("SyncSession close() rejects pending waits with session_closed", async () => {
  await using server = await startTestServer();
  const client = await anonymousClient(server.url);
  try {
    const realm = await client.user.openRealm({ path: "/~/w" });
    realm.syncSession.pause();
    await realm.write((tx) => tx.put("T", "a", {}));
    const closed = (error: unknown) =>
      error instanceof SyncError && error.code === "session_closed";
    const waits = [
      realm.syncSession.waitForUpload(),
      realm.syncSession.waitForDownload(),
    ].map((wait) => assert.rejects(wait, closed));
    await new Promise((resolve) => setTimeout(resolve, 0));
    await realm.close();
    await Promise.all(waits);
    await assert.rejects(realm.syncSession.waitForDownload(), closed);
  } finally {
    await client.app.close();
  }
});
