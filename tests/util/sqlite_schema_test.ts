/**
 * `sqliteTables()`: the table names on page 1 of real SQLite files (written
 * by `node:sqlite` and by Deno KV), and nothing — never a throw or a read
 * past the page — for bytes that are not one; `sniffSqliteFile()`'s verdict
 * on a file's first page.
 */
import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import {
  DENO_KV_TABLES,
  foreignSqliteReason,
  sniffSqliteFile,
  sqliteTables,
} from "../../src/util/sqlite_schema.ts";
import { Prng, testSeed } from "../_helpers/prng.ts";

async function withFile(
  fn: (path: string) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "tether-sqlite-schema-" });
  try {
    await fn(`${dir}/db`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function sqliteFile(path: string, sql: string): Promise<Uint8Array> {
  const db = new DatabaseSync(path);
  db.exec(sql);
  db.close();
  return Deno.readFile(path);
}

Deno.test("sqliteTables() lists the tables of an SQLite file's schema page, in UTF-8 and UTF-16, skipping indexes and views", async () => {
  await withFile(async (path) => {
    const bytes = await sqliteFile(
      path,
      "CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT);" +
        "CREATE INDEX notes_text ON notes (text);" +
        "CREATE VIEW v AS SELECT * FROM notes;" +
        'CREATE TABLE "wéird name" (x);',
    );
    assert.deepEqual(sqliteTables(bytes), ["notes", "wéird name"]);
  });
  await withFile(async (path) => {
    const bytes = await sqliteFile(
      path,
      "PRAGMA encoding = 'UTF-16le'; CREATE TABLE utf16 (x);",
    );
    assert.deepEqual(sqliteTables(bytes), ["utf16"]);
  });
});

Deno.test("sqliteTables() sees Deno KV's own tables in a Deno KV file", async () => {
  await withFile(async (path) => {
    const kv = await Deno.openKv(path);
    await kv.set(["a"], 1);
    kv.close();
    const tables = sqliteTables(await Deno.readFile(path));
    assert.ok(tables !== undefined);
    assert.ok(tables.includes("kv"), String(tables));
    assert.ok(tables.every((table) => DENO_KV_TABLES.has(table)));
  });
});

Deno.test("sqliteTables() says nothing for a schema larger than page 1, and for bytes that are not SQLite: random, truncated or corrupted at any byte (seeded)", async () => {
  await withFile(async (path) => {
    let sql = "";
    for (let index = 0; index < 200; index++) {
      sql += `CREATE TABLE t${index} (a, b, c);`;
    }
    const bytes = await sqliteFile(path, sql);
    assert.equal(sqliteTables(bytes), undefined);
  });
  const seed = testSeed();
  const random = new Prng(seed);
  await withFile(async (path) => {
    const bytes = await sqliteFile(path, "CREATE TABLE notes (text TEXT);");
    const page = bytes.subarray(0, 4096);
    for (let length = 0; length < page.length; length += 97) {
      assert.equal(sqliteTables(page.subarray(0, length)), undefined);
    }
    // Corrupted schema pages: an answer or undefined, never a throw
    // (a DataView read past the page would throw a RangeError).
    for (let round = 0; round < 500; round++) {
      const copy = page.slice();
      for (let flips = 1 + random.int(4); flips > 0; flips--) {
        copy[100 + random.int(copy.length - 100)] = random.int(256);
      }
      assert.doesNotThrow(() => sqliteTables(copy), `seed ${seed}`);
    }
    const noise = Uint8Array.from({ length: 4096 }, () => random.int(256));
    assert.equal(sqliteTables(noise), undefined);
  });
});

Deno.test("sniffSqliteFile() tells an empty file, bytes that are not SQLite, another application's database and a Deno KV file apart, reading one page at most", async () => {
  const source = (bytes: Uint8Array) => {
    let at = 0;
    return {
      read: (buffer: Uint8Array): Promise<number | null> => {
        if (at >= bytes.length) return Promise.resolve(null);
        // Short reads, as a file may give.
        const count = Math.min(buffer.length, bytes.length - at, 1000);
        buffer.set(bytes.subarray(at, at + count));
        at += count;
        return Promise.resolve(count);
      },
      get consumed() {
        return at;
      },
    };
  };
  assert.deepEqual(await sniffSqliteFile(source(new Uint8Array())), {
    kind: "empty",
  });
  assert.deepEqual(
    await sniffSqliteFile(source(new TextEncoder().encode("hello"))),
    { kind: "not_sqlite" },
  );
  await withFile(async (path) => {
    const bytes = await sqliteFile(
      path,
      "CREATE TABLE notes (text TEXT); INSERT INTO notes VALUES ('mine');",
    );
    const read = source(bytes);
    assert.deepEqual(await sniffSqliteFile(read), {
      kind: "foreign",
      tables: ["notes"],
    });
    assert.ok(read.consumed <= 65_536 && read.consumed < bytes.length);
  });
  await withFile(async (path) => {
    // A schema with no tables: nothing says it is foreign.
    const bytes = await sqliteFile(path, "PRAGMA user_version = 3;");
    assert.deepEqual(await sniffSqliteFile(source(bytes)), { kind: "sqlite" });
  });
  await withFile(async (path) => {
    const kv = await Deno.openKv(path);
    await kv.set(["a"], 1);
    kv.close();
    assert.deepEqual(
      await sniffSqliteFile(source(await Deno.readFile(path))),
      { kind: "sqlite" },
    );
  });
  assert.equal(
    foreignSqliteReason(["a", "b", "c", "d", "e", "f"]),
    'it is an SQLite database of another kind (tables "a", "b", "c", "d", "e", …), not a Deno KV file',
  );
});
