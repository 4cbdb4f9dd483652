/**
 * The Deno KV realm storage: the storage contract, all-or-nothing batches
 * larger than one atomic operation (a crash simulated between staging and
 * publishing, and between publishing and replaying), refusal of foreign,
 * newer and undecodable stores, and one owner process per store file.
 */
import assert from "node:assert/strict";
import { KvRealmStorage } from "../../../src/client/storage/kv.ts";
import type { KvLike } from "../../../src/client/storage/kv_store.ts";
import type { StorageBatch } from "../../../src/client/storage/storage.ts";
import { SyncError } from "../../../src/client/sync_error.ts";
import { emptyRecord } from "../../../src/model/merge.ts";
import { runStorageTests } from "../../_helpers/storage_conformance.ts";

const realm = { userId: "u1", path: "/u1/r" };

async function tempStore(): Promise<{ dir: string; kvPath: string }> {
  const dir = await Deno.makeTempDir({ prefix: "tether_kv_" });
  return { dir, kvPath: `${dir}/app.kv` };
}

const opened: string[] = [];
runStorageTests(
  "KvRealmStorage",
  async () => {
    const { dir, kvPath } = await tempStore();
    opened.push(dir);
    return await KvRealmStorage.open(kvPath, realm);
  },
  async () => {
    const { dir, kvPath } = await tempStore();
    return {
      open: () => KvRealmStorage.open(kvPath, realm),
      async [Symbol.asyncDispose]() {
        await Deno.remove(dir, { recursive: true });
      },
    };
  },
);

Deno.test("KvRealmStorage: temp stores of the contract tests are removed", async () => {
  for (const dir of opened.splice(0)) {
    await Deno.remove(dir, { recursive: true });
  }
});

const meta = {
  nodeId: 7,
  clientIdentity: null,
  downloadCursor: 0,
  lastClientVersion: 0,
  acknowledgedClientVersion: 0,
};

function bigBatch(cursor: number): StorageBatch {
  // 3,000 records of 1,000 bytes: more mutations and bytes than one atomic
  // operation allows (1,000 mutations, 800 KiB).
  const records = [];
  for (let i = 0; i < 3_000; i++) {
    const record = emptyRecord("T", `o${i}`);
    const stamp = { time: cursor, counter: 0, node: 7 };
    record.putStamp = stamp;
    record.fields.set("v", { value: `${cursor}:${"z".repeat(1_000)}`, stamp });
    records.push(record);
  }
  return { meta: { ...meta, downloadCursor: cursor }, records, append: [] };
}

/** A Deno.Kv whose commit fails once `failWhen` says so. */
function faultyKv(
  inner: Deno.Kv,
  failWhen: (keys: Deno.KvKey[], commit: number) => boolean,
): KvLike {
  let commits = 0;
  return {
    get: (key) => inner.get(key as Deno.KvKey),
    list: (selector, options) =>
      inner.list(selector as Deno.KvListSelector, options),
    close: () => inner.close(),
    atomic() {
      const operation = inner.atomic();
      const keys: Deno.KvKey[] = [];
      const wrapper = {
        check(...checks: { key: Deno.KvKey; versionstamp: string | null }[]) {
          operation.check(...checks);
          return wrapper;
        },
        set(key: Deno.KvKey, value: unknown) {
          keys.push(key);
          operation.set(key, value);
          return wrapper;
        },
        delete(key: Deno.KvKey) {
          keys.push(key);
          operation.delete(key);
          return wrapper;
        },
        commit() {
          commits++;
          if (failWhen(keys, commits)) {
            return Promise.reject(new Error("simulated crash"));
          }
          return operation.commit();
        },
      };
      return wrapper as ReturnType<KvLike["atomic"]>;
    },
  };
}

function hasMeta(keys: Deno.KvKey[]): boolean {
  return keys.some((key) => key.at(-1) === "meta");
}

async function loadAll(kvPath: string) {
  const storage = await KvRealmStorage.open(kvPath, realm);
  try {
    const loaded = await storage.load();
    return {
      cursor: loaded.meta?.downloadCursor,
      values: new Set(
        loaded.records.map((r) =>
          String(r.fields.get("v")?.value).split(":")[0]
        ),
      ),
      count: loaded.records.length,
    };
  } finally {
    await storage.close();
  }
}

async function keyCount(kvPath: string): Promise<number> {
  const kv = await Deno.openKv(kvPath);
  try {
    let count = 0;
    for await (const _ of kv.list({ prefix: [] })) count++;
    return count;
  } finally {
    kv.close();
  }
}

Deno.test("KvRealmStorage: a batch larger than one atomic operation is all-or-nothing when the process dies before it is published", async () => {
  const { dir, kvPath } = await tempStore();
  try {
    const storage = await KvRealmStorage.open(kvPath, realm);
    await storage.commit(bigBatch(1));
    await storage.close();
    const keysBefore = await keyCount(kvPath);
    // The store header exists now; open the file directly with a fault.
    const inner = await Deno.openKv(kvPath);
    let written = 0;
    const kv = faultyKv(inner, (keys) => {
      if (hasMeta(keys)) return true; // the publishing commit
      written++;
      return false;
    });
    const faulty = await KvRealmStorage.openOn(kv, "test", realm);
    await faulty.load();
    await assert.rejects(faulty.commit(bigBatch(2)), /simulated crash/);
    assert.ok(written >= 2, `unpublished parts in ${written} commits`);
    await faulty.close();
    inner.close();
    const keysAfterCrash = await keyCount(kvPath);
    assert.ok(keysAfterCrash > keysBefore, `${keysAfterCrash} ${keysBefore}`);
    const after = await loadAll(kvPath);
    assert.deepEqual(after, {
      cursor: 1,
      values: new Set(["1"]),
      count: 3_000,
    });
    // The load deleted the unpublished parts.
    assert.equal(await keyCount(kvPath), keysBefore);
    // The next batch lands where the dead one was, and reads back whole.
    const again = await KvRealmStorage.open(kvPath, realm);
    await again.load();
    await again.commit(bigBatch(3));
    await again.close();
    assert.deepEqual(await loadAll(kvPath), {
      cursor: 3,
      values: new Set(["3"]),
      count: 3_000,
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("KvRealmStorage: 300 commits are folded into a snapshot; a snapshot that died before it was published leaves the log readable", async () => {
  const { dir, kvPath } = await tempStore();
  try {
    // Writes the store header.
    await (await KvRealmStorage.open(kvPath, realm)).close();
    const inner = await Deno.openKv(kvPath);
    let failSnapshot = true;
    let snapshots = 0;
    const kv = faultyKv(inner, (keys) => {
      if (!keys.some((key) => key.includes("snap"))) return false;
      if (!hasMeta(keys)) return false;
      snapshots++;
      return failSnapshot;
    });
    const storage = await KvRealmStorage.openOn(kv, "test", realm);
    await storage.load();
    let failed = 0;
    for (let version = 1; version <= 300; version++) {
      const record = emptyRecord("T", `o${version % 50}`);
      const stamp = { time: version, counter: 0, node: 7 };
      record.putStamp = stamp;
      record.fields.set("v", { value: `${version}:x`, stamp });
      const batch = {
        meta: { ...meta, lastClientVersion: version, downloadCursor: version },
        records: [record],
        append: [],
      };
      try {
        await storage.commit(batch);
      } catch (error) {
        // The commit itself was published before the snapshot failed.
        assert.match(String(error), /simulated crash/);
        failed++;
        failSnapshot = false;
      }
    }
    await storage.close();
    inner.close();
    assert.equal(failed, 1);
    assert.ok(snapshots >= 2, `${snapshots} snapshots`);
    const after = await loadAll(kvPath);
    assert.equal(after.cursor, 300);
    assert.equal(after.count, 50);
    // Each object holds its last write.
    const reopened = await KvRealmStorage.open(kvPath, realm);
    try {
      const { records } = await reopened.load();
      const o0 = records.find((r) => r.id === "o0");
      assert.equal(o0?.fields.get("v")?.value, "300:x");
    } finally {
      await reopened.close();
    }
    // The log was folded: far fewer keys than commits.
    assert.ok(await keyCount(kvPath) < 100);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

async function assertRefused(kvPath: string, pattern: RegExp) {
  const error = await assert.rejects(
    KvRealmStorage.open(kvPath, realm),
    (error: unknown) => {
      assert.ok(error instanceof SyncError, String(error));
      assert.equal(error.code, "storage_invalid");
      assert.ok(error.message.includes(JSON.stringify(kvPath)), error.message);
      assert.match(error.message, pattern);
      return true;
    },
  );
  return error;
}

Deno.test("KvRealmStorage: a file of random bytes is refused, naming the path, and left untouched", async () => {
  const { dir, kvPath } = await tempStore();
  try {
    const bytes = crypto.getRandomValues(new Uint8Array(8192));
    await Deno.writeFile(kvPath, bytes);
    await assertRefused(kvPath, /not a Deno KV file|does not decode/);
    assert.deepEqual(await Deno.readFile(kvPath), bytes);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("KvRealmStorage: a KV file with other keys is refused and left untouched", async () => {
  const { dir, kvPath } = await tempStore();
  try {
    const kv = await Deno.openKv(kvPath);
    await kv.set(["users", "alice"], { name: "Alice" });
    kv.close();
    await assertRefused(kvPath, /other data/);
    const again = await Deno.openKv(kvPath);
    try {
      const keys = [];
      for await (const entry of again.list({ prefix: [] })) {
        keys.push(entry.key);
      }
      assert.deepEqual(keys, [["users", "alice"]]);
    } finally {
      again.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("KvRealmStorage: a store written by a newer format, or with a foreign header, is refused", async () => {
  const { dir, kvPath } = await tempStore();
  try {
    const kv = await Deno.openKv(kvPath);
    await kv.set(["tether", "header"], { magic: "tether.store", format: 2 });
    kv.close();
    await assertRefused(kvPath, /newer Tether \(format 2/);
    const foreign = await Deno.openKv(kvPath);
    await foreign.set(["tether", "header"], "something else");
    foreign.close();
    await assertRefused(kvPath, /not a Tether store/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("KvRealmStorage: a value that does not decode is refused at load, naming the path, and kept", async () => {
  const { dir, kvPath } = await tempStore();
  try {
    const storage = await KvRealmStorage.open(kvPath, realm);
    const record = emptyRecord("T", "a");
    record.putStamp = { time: 1, counter: 0, node: 7 };
    await storage.commit({ meta, records: [record], append: [] });
    await storage.close();
    const kv = await Deno.openKv(kvPath);
    // The published log entry of that commit, overwritten with garbage.
    const key = ["tether", "v1", "realm", "u1", "/u1/r", "log", 0];
    assert.ok((await kv.get(key)).value instanceof Uint8Array);
    await kv.set(key, new Uint8Array([1, 2, 3]));
    kv.close();
    const again = await KvRealmStorage.open(kvPath, realm);
    try {
      await assert.rejects(again.load(), (error: unknown) => {
        assert.ok(error instanceof SyncError);
        assert.equal(error.code, "storage_invalid");
        assert.ok(error.message.includes(JSON.stringify(kvPath)));
        return true;
      });
    } finally {
      await again.close();
    }
    const check = await Deno.openKv(kvPath);
    try {
      assert.deepEqual((await check.get(key)).value, new Uint8Array([1, 2, 3]));
    } finally {
      check.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("KvRealmStorage: two realms and two users share one file, each under its own prefix", async () => {
  const { dir, kvPath } = await tempStore();
  try {
    const a = await KvRealmStorage.open(kvPath, { userId: "u1", path: "/p" });
    const b = await KvRealmStorage.open(kvPath, { userId: "u2", path: "/p" });
    await a.commit({
      meta: { ...meta, downloadCursor: 1 },
      records: [],
      append: [],
    });
    await b.commit({
      meta: { ...meta, downloadCursor: 2 },
      records: [],
      append: [],
    });
    // The same realm twice in one process: one writer only.
    await assert.rejects(
      KvRealmStorage.open(kvPath, { userId: "u1", path: "/p" }),
      (error: unknown) =>
        error instanceof SyncError && error.code === "storage_locked",
    );
    assert.equal((await a.load()).meta?.downloadCursor, 1);
    assert.equal((await b.load()).meta?.downloadCursor, 2);
    await a.close();
    await b.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("KvRealmStorage: a realm closing while it is reopened waits for the close instead of refusing", async () => {
  const { dir, kvPath } = await tempStore();
  try {
    const first = await KvRealmStorage.open(kvPath, realm);
    await first.commit({
      meta: { ...meta, downloadCursor: 5 },
      records: [],
      append: [],
    });
    const closing = first.close();
    const second = await KvRealmStorage.open(kvPath, realm);
    await closing;
    assert.equal((await second.load()).meta?.downloadCursor, 5);
    await second.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

const holder = `
import { KvRealmStorage } from ${
  JSON.stringify(
    new URL("../../../src/client/storage/kv.ts", import.meta.url).href,
  )
};
const storage = await KvRealmStorage.open(Deno.args[0], { userId: "u9", path: "/other" });
console.log("held");
// Hold the store until the parent closes stdin.
for await (const _ of Deno.stdin.readable) { /* wait */ }
await storage.close();
`;

Deno.test("KvRealmStorage: a store held by another process is refused, through the same path, a hard link and a symlink", async () => {
  const { dir, kvPath } = await tempStore();
  try {
    const script = `${dir}/holder.ts`;
    await Deno.writeTextFile(script, holder);
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--unstable-kv", script, kvPath],
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    const writer = child.stdin.getWriter();
    try {
      const reader = child.stdout.pipeThrough(new TextDecoderStream())
        .getReader();
      let out = "";
      while (!out.includes("held")) {
        const { value, done } = await reader.read();
        if (done) break;
        out += value;
      }
      reader.releaseLock();
      assert.ok(out.includes("held"), out);
      await Deno.link(kvPath, `${dir}/hard.kv`);
      await Deno.symlink(kvPath, `${dir}/soft.kv`);
      for (const path of [kvPath, `${dir}/hard.kv`, `${dir}/soft.kv`]) {
        await assert.rejects(
          KvRealmStorage.open(path, realm),
          (error: unknown) => {
            assert.ok(error instanceof SyncError, String(error));
            assert.equal(error.code, "storage_locked");
            assert.ok(error.message.includes(JSON.stringify(path)));
            return true;
          },
        );
      }
    } finally {
      await writer.close();
      await child.stdout.cancel().catch(() => {});
      await child.status;
    }
    // Once the holder is gone the store opens.
    const storage = await KvRealmStorage.open(`${dir}/hard.kv`, realm);
    await storage.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("KvRealmStorage: handles on one file through a hard link in one process share it", async () => {
  const { dir, kvPath } = await tempStore();
  try {
    const a = await KvRealmStorage.open(kvPath, { userId: "u1", path: "/a" });
    await Deno.link(kvPath, `${dir}/hard.kv`);
    const b = await KvRealmStorage.open(`${dir}/hard.kv`, {
      userId: "u1",
      path: "/b",
    });
    await a.commit({
      meta: { ...meta, downloadCursor: 3 },
      records: [],
      append: [],
    });
    await b.commit({
      meta: { ...meta, downloadCursor: 4 },
      records: [],
      append: [],
    });
    await a.close();
    await b.close();
    const again = await KvRealmStorage.open(`${dir}/hard.kv`, {
      userId: "u1",
      path: "/a",
    });
    assert.equal((await again.load()).meta?.downloadCursor, 3);
    await again.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
