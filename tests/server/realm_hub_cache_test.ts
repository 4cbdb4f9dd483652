// A realm hub's answers from memory: shared by the sessions of a fan-out,
// never stale after a commit.
import assert from "node:assert/strict";
import { allocateIdentity } from "../../src/server/storage/identities.ts";
import { put, upload } from "../_helpers/changesets.ts";
import { testHub } from "./_test_hub.ts";

Deno.test("RealmHub.readCached answers the same question with one frozen array until a commit or another question", async () => {
  const kv = await Deno.openKv(":memory:");
  try {
    const { hub, retry } = testHub(kv);
    const identity = await allocateIdentity(kv, "/r", retry);
    const write = (clientVersion: number) =>
      hub.integrate(
        identity,
        [upload(clientVersion, [put("Task", `t${clientVersion}`, {})])],
        retry.signal,
      );
    await write(1);
    const first = hub.readCached(1, 64 * 1024);
    assert.deepEqual(first.map((item) => item.version), [1]);
    assert.ok(Object.isFrozen(first));
    assert.equal(hub.readCached(1, 64 * 1024), first);
    // Another question, another answer.
    assert.notEqual(hub.readCached(1, 32 * 1024), first);
    await write(2);
    // The same question after a commit sees the new version.
    assert.deepEqual(
      hub.readCached(1, 64 * 1024).map((item) => item.version),
      [1, 2],
    );
    // A budget one item fits: still at least that item, and only it.
    assert.deepEqual(hub.readCached(1, 1).map((item) => item.version), [1]);
    await hub.close();
  } finally {
    kv.close();
  }
});
