/** The `storage` option of `openRealm`: what it accepts and what it opens. */
import assert from "node:assert/strict";
import { KvRealmStorage } from "../../../src/client/storage/kv.ts";
import { MemoryStorage } from "../../../src/client/storage/memory.ts";
import {
  checkStorageOption,
  openStorage,
} from "../../../src/client/storage/open.ts";

const location = { userId: "u1", path: "/u1/r" };

Deno.test("checkStorageOption accepts memory, kvPath, indexedDb and a RealmStorage, and names what is wrong otherwise", () => {
  for (
    const ok of [
      undefined,
      "memory",
      { kvPath: "a.kv" },
      { indexedDb: "app" },
      new MemoryStorage(),
    ]
  ) {
    checkStorageOption(ok);
  }
  assert.throws(() => checkStorageOption("disk"), /storage must be/);
  assert.throws(() => checkStorageOption({ kvPath: "" }), /kvPath must be/);
  assert.throws(() => checkStorageOption({ indexedDb: 3 }), /indexedDb must/);
  assert.throws(() => checkStorageOption({ load() {} }), TypeError);
});

Deno.test("openStorage opens each kind; IndexedDB without IndexedDB is a TypeError", async () => {
  const own = new MemoryStorage();
  assert.equal(await openStorage(own, location), own);
  assert.ok(await openStorage("memory", location) instanceof MemoryStorage);
  await assert.rejects(
    openStorage({ indexedDb: "app" }, location),
    (error: unknown) =>
      error instanceof TypeError && /no IndexedDB/.test(error.message),
  );
  const dir = await Deno.makeTempDir();
  try {
    const storage = await openStorage({ kvPath: `${dir}/a.kv` }, location);
    assert.ok(storage instanceof KvRealmStorage);
    await storage.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
