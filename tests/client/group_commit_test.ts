/**
 * LocalRealm's group commit: writes queued while a storage commit is in
 * flight share the next commit, yet none resolves (nor reaches the
 * session's upload) before its own commit is durable, and a failed commit
 * fails every later write instead of letting memory and storage drift.
 */
import assert from "node:assert/strict";
import { LocalRealm } from "../../src/client/local_realm.ts";
import { MemoryStorage } from "../../src/client/storage/memory.ts";
import type {
  RealmStorage,
  StorageBatch,
  StoredRealm,
} from "../../src/client/storage/storage.ts";

/** A storage whose commits wait for `release()`. */
class GatedStorage implements RealmStorage {
  inner = new MemoryStorage();
  commits: StorageBatch[] = [];
  gate = Promise.withResolvers<void>();
  fail: Error | null = null;
  load(): Promise<StoredRealm> {
    return this.inner.load();
  }
  async commit(batch: StorageBatch): Promise<void> {
    this.commits.push(batch);
    await this.gate.promise;
    if (this.fail !== null) throw this.fail;
    await this.inner.commit(batch);
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

Deno.test("Writes queued behind an in-flight commit share one commit, and resolve only once it is durable", async () => {
  const storage = new GatedStorage();
  storage.gate.resolve(); // The meta record of a new realm.
  const realm = await LocalRealm.open(storage, () => 1_000);
  storage.gate = Promise.withResolvers();
  const heard: number[] = [];
  realm.listen({
    onLocalCommit: (pending) => heard.push(pending.changeset.clientVersion),
  });
  let resolved = 0;
  const writes = [];
  for (let index = 0; index < 50; index++) {
    writes.push(
      realm.write((tx) => tx.put("T", `o${index}`, { index })).then((r) => {
        resolved++;
        return r;
      }),
    );
  }
  // Let every write apply; the first commit is still held.
  for (
    let turn = 0;
    turn < 200 && realm.get("T", "o49") === undefined;
    turn++
  ) {
    await new Promise((resolve) => setTimeout(resolve, 0));
  }
  assert.deepEqual(realm.get("T", "o49"), { index: 49 });
  assert.equal(resolved, 0);
  assert.deepEqual(heard, []);
  storage.gate.resolve();
  const results = await Promise.all(writes);
  assert.deepEqual(
    results.map((r) => r.clientVersion),
    [
      ...Array(50).keys(),
    ].map((i) => i + 1),
  );
  assert.deepEqual(heard, results.map((r) => r.clientVersion));
  // The meta commit, the first write alone, then the other 49 together.
  assert.equal(storage.commits.length, 3);
  assert.equal(storage.commits[2]!.append.length, 49);
  assert.equal(storage.commits[2]!.meta.lastClientVersion, 50);
  const stored = await storage.inner.load();
  assert.equal(stored.pending.length, 50);
  assert.equal(stored.records.length, 50);
  await realm.close();
});

Deno.test("A commit holds the records as they were when its writes applied, not later writes' state", async () => {
  const storage = new GatedStorage();
  storage.gate.resolve();
  const realm = await LocalRealm.open(storage, () => 1_000);
  storage.gate = Promise.withResolvers();
  const first = realm.write((tx) => tx.put("T", "x", { n: 1 }));
  const second = realm.write((tx) => tx.update("T", "x", { n: 2 }));
  for (let turn = 0; turn < 200 && realm.get("T", "x")?.n !== 2; turn++) {
    await new Promise((resolve) => setTimeout(resolve, 0));
  }
  assert.equal(realm.get("T", "x")?.n, 2);
  const firstCommit = storage.commits[1]!;
  assert.equal(firstCommit.records[0]!.fields.get("n")?.value, 1);
  storage.gate.resolve();
  await Promise.all([first, second]);
  await realm.close();
});

Deno.test("After a failed commit every later write rejects with its error, before it is applied", async () => {
  const storage = new GatedStorage();
  storage.gate.resolve();
  const realm = await LocalRealm.open(storage, () => 1_000);
  storage.fail = new Error("disk full");
  await assert.rejects(realm.write((tx) => tx.put("T", "a", {})), /disk full/);
  storage.fail = null;
  await assert.rejects(realm.write((tx) => tx.put("T", "b", {})), /disk full/);
  // Refused before it was applied: memory shows nothing of it.
  assert.equal(realm.get("T", "b"), undefined);
  await realm.close();
});
