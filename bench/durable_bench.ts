/**
 * Durable storage costs (docs/CLIENT.md "Storage"): 10,000 single-object
 * write transactions to a realm on Deno KV beside the same on memory, and
 * reopening a realm of 100,000 objects from Deno KV. Each bench runs its
 * whole workload once per iteration; `group` pairs a KV figure with its
 * memory baseline.
 *
 * @module
 */

import { LocalRealm } from "../src/client/local_realm.ts";
import { KvRealmStorage } from "../src/client/storage/kv.ts";
import { MemoryStorage } from "../src/client/storage/memory.ts";
import type { RealmStorage } from "../src/client/storage/storage.ts";
import { download } from "./_tasks.ts";

const WRITES = 10_000;
const OBJECTS = 100_000;
const dir = await Deno.makeTempDir({ prefix: "tether-durable-bench-" });
const now = () => Date.now();
let realms = 0;

async function writeMany(storage: RealmStorage): Promise<void> {
  const realm = await LocalRealm.open(storage, now);
  try {
    const writes: Promise<unknown>[] = [];
    // Queued the way an app that does not await each write queues them;
    // each write() still resolves only once its commit is durable.
    for (let index = 0; index < WRITES; index++) {
      writes.push(
        realm.write((tx) =>
          tx.put("Task", `t${index}`, { title: `Task ${index}`, done: false })
        ),
      );
    }
    await Promise.all(writes);
  } finally {
    await realm.close();
  }
}

Deno.bench({
  name: "memory",
  group: "durable/10k-writes",
  baseline: true,
  n: 3,
  warmup: 1,
  async fn() {
    await writeMany(new MemoryStorage());
  },
});

Deno.bench({
  name: "kv",
  group: "durable/10k-writes",
  n: 3,
  warmup: 1,
  async fn() {
    const storage = await KvRealmStorage.open(`${dir}/writes.kv`, {
      userId: "u",
      path: `/u/r${realms++}`,
    });
    await writeMany(storage);
  },
});

const reopenPath = `${dir}/reopen.kv`;
const location = { userId: "u", path: "/u/big" };
{
  // A synced realm: its objects came from the server in DOWNLOADs of 1,000
  // (as a bootstrap would bring them), nothing is pending.
  const storage = await KvRealmStorage.open(reopenPath, location);
  const realm = await LocalRealm.open(storage, now);
  const BATCH = 1_000;
  for (let first = 0; first < OBJECTS; first += BATCH) {
    const version = first / BATCH + 1;
    const instructions = [];
    for (let index = first; index < first + BATCH; index++) {
      instructions.push({
        op: "put" as const,
        type: "Task",
        id: `t${index}`,
        fields: { title: `Task ${index}`, done: false },
        stamp: null,
      });
    }
    await realm.integrate(download(version, 1_000 + version, instructions));
  }
  await realm.close();
}

Deno.bench({
  name: "kv reopen of 100,000 objects",
  group: "durable/reopen",
  n: 3,
  warmup: 1,
  async fn() {
    const storage = await KvRealmStorage.open(reopenPath, location);
    const realm = await LocalRealm.open(storage, now);
    if (realm.size !== OBJECTS) throw new Error(`reopened ${realm.size}`);
    await realm.close();
  },
});

globalThis.addEventListener("unload", () => {
  Deno.removeSync(dir, { recursive: true });
});
