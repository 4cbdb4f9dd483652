/**
 * A realm on Deno KV storage across close, reopen and a server outage, over
 * real sockets: a write made while the server is down survives the reopen
 * and is uploaded exactly once when the server is back.
 */
import assert from "node:assert/strict";
import { KvRealmStorage } from "../../src/client/storage/kv.ts";
import type { RealmMeta } from "../../src/client/storage/storage.ts";
import { anonymousClient } from "../_helpers/e2e.ts";
import { startTestServer } from "../_helpers/test_server.ts";

Deno.test("A KV-backed realm reopened offline has its objects, identity and pending write, and uploads that write once when the server is back", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tether-durable-" });
  const serverKv = `${dir}/server.kv`;
  const kvPath = `${dir}/client.kv`;
  const config = { path: "/~/todos", storage: { kvPath } };
  try {
    const first = await startTestServer({ kv: serverKv });
    const port = first.server.addr.port;
    const client = await anonymousClient(first.url);
    const storedMeta = async (): Promise<RealmMeta | null> => {
      const location = {
        userId: client.user.id,
        path: `/${client.user.id}/todos`,
      };
      const storage = await KvRealmStorage.open(kvPath, location);
      try {
        return (await storage.load()).meta;
      } finally {
        await storage.close();
      }
    };
    try {
      const online = await client.user.openRealm(config);
      await online.write((tx) => tx.put("Task", "a", { title: "online" }));
      await online.syncSession.waitForUpload({
        signal: AbortSignal.timeout(5_000),
      });
      assert.equal(first.server.stats().changesetsIntegrated, 1);
      await online.close();
      await first[Symbol.asyncDispose]();
      const before = await storedMeta();
      assert.notEqual(before?.clientIdentity, null);

      // The server is down: the realm opens from storage and takes a write.
      const offline = await client.user.openRealm(config);
      assert.deepEqual(offline.get("Task", "a"), { title: "online" });
      await offline.write((tx) => tx.put("Task", "b", { title: "offline" }));
      assert.equal(offline.syncSession.stats().pendingUploadChangesets, 1);
      await offline.close();

      const reopened = await client.user.openRealm(config);
      try {
        assert.deepEqual(reopened.get("Task", "a"), { title: "online" });
        assert.deepEqual(reopened.get("Task", "b"), { title: "offline" });
        assert.equal(reopened.syncSession.stats().pendingUploadChangesets, 1);
        await using second = await startTestServer({ kv: serverKv, port });
        await reopened.syncSession.waitForUpload({
          signal: AbortSignal.timeout(10_000),
        });
        assert.equal(second.server.stats().changesetsIntegrated, 1);
        await reopened.close();
        // Acknowledged: a further reopen has nothing to upload, and a
        // download round trip integrates nothing more.
        const last = await client.user.openRealm({
          ...config,
          waitForDownload: true,
          signal: AbortSignal.timeout(10_000),
        });
        assert.equal(last.syncSession.stats().pendingUploadChangesets, 0);
        assert.deepEqual(last.objects("Task").map((o) => o.id).sort(), [
          "a",
          "b",
        ]);
        await last.close();
        assert.equal(second.server.stats().changesetsIntegrated, 1);
        const after = await storedMeta();
        assert.deepEqual(after?.clientIdentity, before?.clientIdentity);
        assert.equal(after?.nodeId, before?.nodeId);
        assert.equal(after?.lastClientVersion, 2);
        assert.equal(after?.acknowledgedClientVersion, 2);
      } finally {
        await reopened.close();
      }
    } finally {
      await client.app.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
