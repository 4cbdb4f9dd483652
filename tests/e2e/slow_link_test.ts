import assert from "node:assert/strict";
import { TcpProxy } from "../_helpers/tcp_proxy.ts";
import { anonymousClient } from "../_helpers/e2e.ts";
import { startTestServer } from "../_helpers/test_server.ts";

const PATH = "/shared/slow-link";
const TRANSACTIONS = 8;
const PER_TRANSACTION = 30;

// LESSONS row 13. The WebSocket API hands over whole messages only, so a
// DOWNLOAD that takes longer than the read timeout to arrive gets the
// connection cut in the middle of it, and the same batch comes again after
// the reconnect: a livelock. Here one full 64 KiB DOWNLOAD takes 1.6 s on a
// 40 KB/s link against a 1 s read timeout; the client's RECEIVED lets the
// server send batches the link delivers in time.
Deno.test("a client with a 1 s read timeout bootstraps ~120 KB over a 40 KB/s link without one disconnect", async () => {
  await using test = await startTestServer({
    compression: false,
    permissions: () => "readwrite",
  });
  {
    const { app, user } = await anonymousClient(test.url);
    try {
      const realm = await user.openRealm({ path: PATH });
      for (let round = 0; round < TRANSACTIONS; round++) {
        await realm.write((tx) => {
          for (let index = 0; index < PER_TRANSACTION; index++) {
            tx.put("Item", `i${round}-${index}`, {
              text: `${round} ${index} `.padEnd(500, "x"),
            });
          }
        });
      }
      await realm.syncSession.waitForUpload({
        signal: AbortSignal.timeout(10_000),
      });
    } finally {
      await app.close();
    }
  }

  await using proxy = new TcpProxy(test.server.addr);
  proxy.throttle = { bytes: 2048, everyMs: 50 };
  const { app, user } = await anonymousClient(proxy.url, {
    keepalive: { pingIntervalMs: 250, readTimeoutMs: 1_000 },
    reconnect: { minDelayMs: 10, maxDelayMs: 50 },
  });
  const watching = new AbortController();
  try {
    const realm = await user.openRealm({ path: PATH });
    const states: string[] = [];
    const watched = (async () => {
      const stream = realm.syncSession.connectionStateChanges({
        signal: watching.signal,
      });
      for await (const change of stream) {
        states.push(
          change.error === undefined
            ? change.current
            : `${change.current} (${change.error.code})`,
        );
      }
    })();
    await realm.syncSession.waitForDownload({
      signal: AbortSignal.timeout(20_000),
    });
    assert.equal(
      realm.objects("Item").length,
      TRANSACTIONS * PER_TRANSACTION,
    );
    watching.abort();
    await watched;
    assert.ok(
      states.every((state) => !state.startsWith("disconnected")),
      `states: ${states}`,
    );
    assert.equal(realm.syncSession.stats().reconnects, 0);
    // The link was really slower than one full batch per read timeout.
    assert.ok(
      realm.syncSession.stats().bytesReceived > 100_000,
      `${realm.syncSession.stats().bytesReceived} bytes`,
    );
  } finally {
    watching.abort();
    await app.close();
  }
});
