// Conformance: docs/CLIENT.md "Uploads" — a client that writes as fast as
// it can keeps its uploads in flight within the server's per-connection
// bound (docs/SERVER.md "Memory"), so it is never refused with queue_full.

import assert from "node:assert/strict";
import { Credentials } from "../../mod.ts";
import { fastApp, openDownloaded, recordConnectionStates } from "./_helpers.ts";
import { bounded } from "../_helpers/waits.ts";
import { startTestServer } from "../_helpers/test_server.ts";

Deno.test("SyncSession uploads of a writer as fast as it can stay within the server's maxQueuedBytesPerConnection: no queue_full, no reconnect, every write acknowledged", async () => {
  // Holds 1.5 MiB of UPLOAD frames (each counted at four times its size).
  await using server = await startTestServer({
    limits: { maxQueuedBytesPerConnection: 6 * 1024 * 1024 },
  });
  await using app = fastApp(server.url);
  await using realm = await openDownloaded(
    await app.logIn(Credentials.anonymous()),
    "/~/bulk",
  );
  await using states = recordConnectionStates(realm.syncSession);
  const writes = [];
  // 12 MiB of incompressible bytes, 48 KiB per write, none awaited.
  for (let i = 0; i < 256; i++) {
    const bytes = crypto.getRandomValues(new Uint8Array(48 * 1024));
    writes.push(realm.write((tx) => tx.put("Blob", `b${i}`, { bytes })));
  }
  const receipts = await Promise.all(writes);
  await realm.syncSession.waitForUpload({ signal: bounded(30_000) });
  await Promise.all(
    receipts.map((r) => r.waitForUpload({ signal: bounded() })),
  );
  assert.equal(realm.syncSession.stats().reconnects, 0);
  assert.equal(realm.syncSession.stats().pendingUploadChangesets, 0);
  assert.deepEqual(
    states.items.filter((change) => change.error !== undefined),
    [],
  );
  assert.equal(
    server.logs.some((record) => JSON.stringify(record).includes("queue_full")),
    false,
  );
});

Deno.test("Sessions of many realms on one connection, each writing as fast as it can, share the connection's upload window: no queue_full, no reconnect, every write stored once", async () => {
  // The same bound: one session's window fits in it, sixteen do not.
  await using server = await startTestServer({
    limits: { maxQueuedBytesPerConnection: 6 * 1024 * 1024 },
    permissions: () => "readwrite",
  });
  await using app = fastApp(server.url);
  const user = await app.logIn(Credentials.anonymous());
  await using stack = new AsyncDisposableStack();
  const realms = [];
  for (let index = 0; index < 16; index++) {
    realms.push(
      stack.use(await openDownloaded(user, `/bulk/${index}`)),
    );
  }
  const writes = [];
  // 16 × 1.5 MiB of incompressible bytes, 48 KiB per write, none awaited.
  for (let i = 0; i < 32; i++) {
    for (const realm of realms) {
      const bytes = crypto.getRandomValues(new Uint8Array(48 * 1024));
      writes.push(realm.write((tx) => tx.put("Blob", `b${i}`, { bytes })));
    }
  }
  const receipts = await Promise.all(writes);
  await Promise.all(
    receipts.map((r) => r.waitForUpload({ signal: bounded(30_000) })),
  );
  for (const realm of realms) {
    assert.equal(realm.syncSession.stats().reconnects, 0, realm.path);
    assert.equal(realm.syncSession.stats().pendingUploadChangesets, 0);
  }
  assert.equal(
    server.logs.some((record) => JSON.stringify(record).includes("queue_full")),
    false,
  );
  assert.equal(server.stats().changesetsIntegrated, 16 * 32);
  for (const index of [0, 15]) {
    const stored = await server.realm(`/bulk/${index}`).objects("Blob");
    assert.equal(stored.length, 32);
  }
});
