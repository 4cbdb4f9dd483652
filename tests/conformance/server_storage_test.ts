/**
 * Conformance: docs/SERVER.md "Embedding it" (`kv`) and DESIGN "Storage" —
 * the server refuses a `kv` path that is not a Deno KV file (a directory,
 * bytes that are not SQLite, another application's SQLite database) before
 * it creates or opens anything, and leaves it byte-for-byte untouched;
 * new paths, empty files, its own file and `":memory:"` are served.
 */

import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { createSyncHandler, KvLockedError, serveSync } from "../../server.ts";
import { Prng, testSeed } from "../_helpers/prng.ts";
import { withTempDir } from "./_helpers.ts";

const OPTIONS = { port: 0, auth: { allowAnonymous: true }, logger: () => {} };

function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  return withTempDir("tether-server-storage-", fn);
}

/** Every entry under `dir` (recursively, symlinks not followed) and its bytes. */
async function snapshot(dir: string): Promise<Map<string, string>> {
  const entries = new Map<string, string>();
  const walk = async (at: string, name: string): Promise<void> => {
    for await (const entry of Deno.readDir(at)) {
      const path = `${at}/${entry.name}`;
      const key = `${name}${entry.name}`;
      if (entry.isDirectory) {
        entries.set(key, "directory");
        await walk(path, `${key}/`);
      } else if (entry.isSymlink) {
        entries.set(key, `symlink to ${await Deno.readLink(path)}`);
      } else {
        const bytes = await Deno.readFile(path);
        const digest = await crypto.subtle.digest("SHA-256", bytes);
        entries.set(key, new Uint8Array(digest).join(","));
      }
    }
  };
  await walk(dir, "");
  return entries;
}

function foreignSqlite(path: string, tables: number): void {
  const db = new DatabaseSync(path);
  for (let index = 0; index < tables; index++) {
    db.exec(
      `CREATE TABLE notes${index} (id INTEGER PRIMARY KEY, text TEXT); INSERT INTO notes${index} (text) VALUES ('mine');`,
    );
  }
  db.close();
}

/** Serves `kv` with serveSync and createSyncHandler; both must refuse it. */
async function assertRefused(kv: string, shows: RegExp): Promise<void> {
  for (
    const open of [
      () => serveSync({ ...OPTIONS, kv }),
      () => createSyncHandler({ ...OPTIONS, kv, prefix: "/api/sync" }),
    ]
  ) {
    await assert.rejects(open, (error: unknown) => {
      assert.ok(error instanceof TypeError, String(error));
      assert.ok(error.message.includes(JSON.stringify(kv)), error.message);
      assert.match(error.message, shows);
      assert.match(error.message, /left untouched/);
      return true;
    });
  }
}

Deno.test("serveSync() refuses a kv path that is a directory (also through a symlink) with a TypeError naming it, and creates nothing beside it", async () => {
  await withDir(async (dir) => {
    const data = `${dir}/data`;
    await Deno.mkdir(data);
    await Deno.writeTextFile(`${data}/inside.txt`, "mine");
    await Deno.symlink(data, `${dir}/link`);
    const before = await snapshot(dir);
    await assertRefused(data, /is a directory/);
    await assertRefused(`${data}/`, /is a directory/);
    await assertRefused(`${dir}/link`, /is a directory/);
    // No `<path>.lock` beside it, nothing inside it.
    assert.deepEqual(await snapshot(dir), before);
  });
});

Deno.test("serveSync() refuses another application's SQLite database with a TypeError naming it and its tables, and leaves it byte-for-byte untouched (no lock file, no Deno KV tables)", async () => {
  await withDir(async (dir) => {
    const sqlite = `${dir}/notes.sqlite`;
    foreignSqlite(sqlite, 1);
    // Reached through a symlink, and with six tables (the message lists five).
    const many = `${dir}/many.db`;
    foreignSqlite(many, 6);
    await Deno.symlink(sqlite, `${dir}/notes.link`);
    const before = await snapshot(dir);
    await assertRefused(sqlite, /SQLite database of another kind.*"notes0"/);
    await assertRefused(`${dir}/notes.link`, /another kind.*"notes0"/);
    await assertRefused(many, /"notes4", …\), not a Deno KV file/);
    assert.deepEqual(await snapshot(dir), before);
    // Still the application's own database, readable as it was.
    const db = new DatabaseSync(sqlite);
    try {
      assert.deepEqual(
        db.prepare("SELECT name FROM sqlite_schema WHERE type = 'table'").all()
          .map((row) => row.name),
        ["notes0"],
      );
    } finally {
      db.close();
    }
  });
});

Deno.test("serveSync() refuses a file of bytes that are not SQLite (random, or text) and leaves it untouched", async () => {
  const seed = testSeed();
  const random = new Prng(seed);
  await withDir(async (dir) => {
    const noise = `${dir}/noise.kv`;
    await Deno.writeFile(
      noise,
      Uint8Array.from({ length: 8192 }, () => random.int(256)),
    );
    const text = `${dir}/notes.txt`;
    await Deno.writeTextFile(text, "not a database\n");
    const before = await snapshot(dir);
    await assertRefused(noise, /not an SQLite file/);
    await assertRefused(text, /not an SQLite file/);
    assert.deepEqual(await snapshot(dir), before, `seed ${seed}`);
  });
});

Deno.test("serveSync() serves a new path (its directory created), an empty file, and its own KV file again after a restart, data kept", async () => {
  await withDir(async (dir) => {
    const fresh = `${dir}/nested/deeper/sync.kv`;
    const empty = `${dir}/empty.kv`;
    await Deno.writeFile(empty, new Uint8Array());
    for (const kv of [fresh, empty]) {
      {
        await using server = await serveSync({ ...OPTIONS, kv });
        await server.realm("/alice/todos").write((tx) =>
          tx.put("Task", "t1", { title: "kept" })
        );
      }
      await using again = await serveSync({ ...OPTIONS, kv });
      assert.deepEqual(await again.realm("/alice/todos").get("Task", "t1"), {
        title: "kept",
      });
    }
  });
});

Deno.test("createSyncHandler() on a KV file holds it like serveSync: a second server on it is refused with KvLockedError until shutdown() releases it", async () => {
  await withDir(async (dir) => {
    const kv = `${dir}/sync.kv`;
    const first = await createSyncHandler({ ...OPTIONS, kv });
    try {
      await first.realm("/alice/todos").write((tx) =>
        tx.put("Task", "t1", { title: "kept" })
      );
      await assert.rejects(() => serveSync({ ...OPTIONS, kv }), KvLockedError);
      await assert.rejects(
        () => createSyncHandler({ ...OPTIONS, kv }),
        KvLockedError,
      );
    } finally {
      await first.shutdown();
    }
    await using second = await createSyncHandler({ ...OPTIONS, kv });
    assert.deepEqual(await second.realm("/alice/todos").get("Task", "t1"), {
      title: "kept",
    });
  });
});

Deno.test('serveSync() serves kv ":memory:" on purpose (documented: an in-memory store, nothing written to disk)', async () => {
  await withDir(async (dir) => {
    const cwd = Deno.cwd();
    Deno.chdir(dir);
    try {
      {
        await using server = await serveSync({ ...OPTIONS, kv: ":memory:" });
        await server.realm("/alice/todos").write((tx) =>
          tx.put("Task", "t1", { title: "gone after shutdown" })
        );
        const health = await fetch(`${server.url}/health`);
        assert.deepEqual(await health.json(), { status: "ok" });
      }
      assert.deepEqual([...(await snapshot(dir)).keys()], []);
    } finally {
      Deno.chdir(cwd);
    }
  });
});
