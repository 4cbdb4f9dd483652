/**
 * The app stores of `App.open` (saved users) on Deno KV and on IndexedDB
 * (`fake-indexeddb`): save, replace, load in login order, remove, and
 * removal with the user's local realms while other users' stay.
 */
import assert from "node:assert/strict";
import { IDBFactory, IDBKeyRange } from "npm:fake-indexeddb@6.2.8";
import {
  type AppStorageOption,
  type AppStore,
  openAppStore,
} from "../../../src/client/storage/app_store.ts";
import type { IndexedDbApi } from "../../../src/client/storage/indexed_db.ts";
import { openStorage } from "../../../src/client/storage/open.ts";
import { IndexedDbRealmStorage } from "../../../src/client/storage/indexed_db.ts";
import type { RealmStorage } from "../../../src/client/storage/storage.ts";
import { SyncError } from "../../../src/client/sync_error.ts";

const meta = {
  nodeId: 7,
  clientIdentity: null,
  downloadCursor: 0,
  lastClientVersion: 0,
  acknowledgedClientVersion: 0,
};

interface Backend {
  name: string;
  run(
    fn: (
      open: () => Promise<AppStore>,
      realm: (userId: string, path: string) => Promise<RealmStorage>,
    ) => Promise<void>,
  ): Promise<void>;
}

const backends: Backend[] = [
  {
    name: "Deno KV",
    async run(fn) {
      const dir = await Deno.makeTempDir({ prefix: "tether-app-store-" });
      const storage: AppStorageOption = { kvPath: `${dir}/app.kv` };
      try {
        await fn(
          () => openAppStore(storage),
          (userId, path) => openStorage(storage, { userId, path }),
        );
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    },
  },
  {
    name: "IndexedDB",
    async run(fn) {
      const api: IndexedDbApi = { indexedDB: new IDBFactory(), IDBKeyRange };
      await fn(
        () => openAppStore({ indexedDb: "app" }, api),
        (userId, path) =>
          IndexedDbRealmStorage.open("app", { userId, path }, api),
      );
    },
  },
];

for (const backend of backends) {
  Deno.test(`App store on ${backend.name}: saved users load in login order, a save replaces, a removal forgets`, async () => {
    await backend.run(async (open) => {
      {
        const store = await open();
        assert.deepEqual(await store.loadUsers(), []);
        await store.saveUser({
          id: "b",
          refreshToken: "rb",
          provider: "jwt",
          order: 2,
        });
        await store.saveUser({
          id: "a",
          refreshToken: "ra",
          provider: "anonymous",
          order: 1,
        });
        await store.saveUser({
          id: "b",
          refreshToken: "rb2",
          provider: "jwt",
          order: 3,
        });
        await store.close();
      }
      const store = await open();
      try {
        assert.equal(store.durable, true);
        assert.deepEqual(await store.loadUsers(), [
          { id: "a", refreshToken: "ra", provider: "anonymous", order: 1 },
          { id: "b", refreshToken: "rb2", provider: "jwt", order: 3 },
        ]);
        await store.removeUser("a", false);
        assert.deepEqual((await store.loadUsers()).map((u) => u.id), ["b"]);
      } finally {
        await store.close();
      }
    });
  });

  Deno.test(`App store on ${backend.name}: removing a user with deleteLocalData deletes its realms and keeps the others'`, async () => {
    await backend.run(async (open, realm) => {
      for (
        const [userId, path] of [["u1", "/u1/a"], ["u1", "/u1/b"], [
          "u2",
          "/u2/a",
        ]] as const
      ) {
        const storage = await realm(userId, path);
        await storage.commit({
          meta: { ...meta, downloadCursor: 1 },
          records: [],
          append: [],
        });
        await storage.close();
      }
      const store = await open();
      try {
        await store.saveUser({
          id: "u1",
          refreshToken: "r",
          provider: "anonymous",
          order: 1,
        });
        await store.removeUser("u1", true);
        assert.deepEqual(await store.loadUsers(), []);
      } finally {
        await store.close();
      }
      for (
        const [userId, path, kept] of [["u1", "/u1/a", false], [
          "u1",
          "/u1/b",
          false,
        ], ["u2", "/u2/a", true]] as const
      ) {
        const storage = await realm(userId, path);
        try {
          const loaded = await storage.load();
          assert.equal(loaded.meta !== null, kept, `${path} kept: ${kept}`);
        } finally {
          await storage.close();
        }
      }
    });
  });

  Deno.test(`App store on ${backend.name}: removing a user with deleteLocalData while one of its realms is open deletes none of them (storage_locked) but forgets the login`, async () => {
    await backend.run(async (open, realm) => {
      for (const path of ["/u1/a", "/u1/b"]) {
        const storage = await realm("u1", path);
        await storage.commit({
          meta: { ...meta, downloadCursor: 1 },
          records: [],
          append: [],
        });
        await storage.close();
      }
      const held = await realm("u1", "/u1/b");
      const store = await open();
      try {
        await store.saveUser({
          id: "u1",
          refreshToken: "r",
          provider: "anonymous",
          order: 1,
        });
        await assert.rejects(
          store.removeUser("u1", true),
          (error) =>
            error instanceof SyncError && error.code === "storage_locked" &&
            error.message.includes('"/u1/b"'),
        );
        assert.deepEqual(await store.loadUsers(), []);
        // The held realm was not deleted under its writer, nor the other.
        assert.notEqual((await held.load()).meta, null);
      } finally {
        await held.close();
        await store.close();
      }
      const other = await realm("u1", "/u1/a");
      try {
        assert.notEqual((await other.load()).meta, null);
      } finally {
        await other.close();
      }
      // Released: the claim taken for the deletion is given back too.
      const again = await realm("u1", "/u1/b");
      await again.close();
    });
  });
}
