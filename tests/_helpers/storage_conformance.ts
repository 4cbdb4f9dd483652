import assert from "node:assert/strict";
import type { RealmStorage } from "../../src/client/storage/storage.ts";
import type { UploadChangeset } from "../../src/model/changeset.ts";
import { emptyRecord } from "../../src/model/merge.ts";

function changeset(clientVersion: number): UploadChangeset {
  return {
    clientVersion,
    baseServerVersion: 0,
    stamp: { time: 1_000 + clientVersion, counter: 0, node: 7 },
    instructions: [{
      op: "put",
      type: "T",
      id: `o${clientVersion}`,
      fields: { n: clientVersion },
      stamp: null,
    }],
  };
}

const meta = {
  nodeId: 7,
  clientIdentity: null,
  downloadCursor: 0,
  lastClientVersion: 0,
  acknowledgedClientVersion: 0,
};

/** A place a durable storage can be closed and opened again. */
export interface DurableFixture extends AsyncDisposable {
  /** Opens the storage of the fixture's realm (again). */
  open(): Promise<RealmStorage>;
}

function bigString(bytes: number, seed: number): string {
  // Varied text, so no compression along the way could hide a size limit.
  let text = "";
  let state = seed;
  while (text.length < bytes) {
    state = (state * 1103515245 + 12345) % 2147483648;
    text += state.toString(36);
  }
  return text.slice(0, bytes);
}

function recordWith(type: string, id: string, text: string) {
  const record = emptyRecord(type, id);
  const stamp = { time: 10, counter: 0, node: 7 };
  record.putStamp = stamp;
  record.fields.set("text", { value: text, stamp });
  return record;
}

/**
 * The contract every RealmStorage keeps, run against each implementation.
 * With `durable`, also what a durable one keeps across close and reopen.
 */
export function runStorageTests(
  name: string,
  makeStorage: () => RealmStorage | Promise<RealmStorage>,
  durable?: () => Promise<DurableFixture>,
): void {
  if (durable !== undefined) runDurableStorageTests(name, durable);
  Deno.test(`${name}: a new storage loads empty`, async () => {
    const storage = await makeStorage();
    try {
      assert.deepEqual(await storage.load(), {
        meta: null,
        records: [],
        pending: [],
      });
    } finally {
      await storage.close();
    }
  });

  Deno.test(`${name}: commit() keeps meta, records and pending changesets in order`, async () => {
    const storage = await makeStorage();
    try {
      const record = emptyRecord("T", "o1");
      record.putStamp = { time: 1, counter: 0, node: 7 };
      await storage.commit({
        meta: { ...meta, lastClientVersion: 1 },
        records: [record],
        append: [changeset(1)],
      });
      await storage.commit({
        meta: {
          ...meta,
          lastClientVersion: 2,
          clientIdentity: { id: 3, salt: 9 },
          downloadCursor: 4,
          downloadCursorSalt: 77,
        },
        records: [],
        append: [changeset(2)],
      });
      const loaded = await storage.load();
      assert.deepEqual(loaded.meta, {
        ...meta,
        lastClientVersion: 2,
        clientIdentity: { id: 3, salt: 9 },
        downloadCursor: 4,
        downloadCursorSalt: 77,
      });
      assert.deepEqual(loaded.records.map((r) => [r.type, r.id]), [[
        "T",
        "o1",
      ]]);
      assert.deepEqual(loaded.pending.map((c) => c.clientVersion), [1, 2]);
    } finally {
      await storage.close();
    }
  });

  Deno.test(`${name}: raising acknowledgedClientVersion drops acknowledged changesets`, async () => {
    const storage = await makeStorage();
    try {
      await storage.commit({
        meta: { ...meta, lastClientVersion: 3 },
        records: [],
        append: [changeset(1), changeset(2), changeset(3)],
      });
      await storage.commit({
        meta: { ...meta, lastClientVersion: 3, acknowledgedClientVersion: 2 },
        records: [],
        append: [],
      });
      assert.deepEqual(
        (await storage.load()).pending.map((c) => c.clientVersion),
        [3],
      );
    } finally {
      await storage.close();
    }
  });

  Deno.test(`${name}: a record written twice is kept once, in its latest state`, async () => {
    const storage = await makeStorage();
    try {
      const record = emptyRecord("T", "x");
      await storage.commit({ meta, records: [record], append: [] });
      const newer = emptyRecord("T", "x");
      newer.deleteStamp = { time: 5, counter: 0, node: 1 };
      await storage.commit({ meta, records: [newer], append: [] });
      const { records } = await storage.load();
      assert.equal(records.length, 1);
      assert.deepEqual(records[0]!.deleteStamp, {
        time: 5,
        counter: 0,
        node: 1,
      });
    } finally {
      await storage.close();
    }
  });

  Deno.test(`${name}: calls after close() reject with TypeError`, async () => {
    const storage = await makeStorage();
    await storage.close();
    await assert.rejects(storage.load(), TypeError);
    await assert.rejects(
      storage.commit({ meta, records: [], append: [] }),
      TypeError,
    );
  });
}

/** What a durable storage keeps across close and reopen. */
export function runDurableStorageTests(
  name: string,
  fixture: () => Promise<DurableFixture>,
): void {
  Deno.test(`${name}: meta, records and pending changesets survive a reopen`, async () => {
    await using place = await fixture();
    const first = await place.open();
    await first.commit({
      meta: { ...meta, lastClientVersion: 2 },
      records: [recordWith("T", "a", "one"), recordWith("U", "b", "two")],
      append: [changeset(1), changeset(2)],
    });
    await first.commit({
      meta: {
        ...meta,
        lastClientVersion: 2,
        acknowledgedClientVersion: 1,
        downloadCursor: 9,
        downloadCursorSalt: 0xffff_fffe,
        clientIdentity: { id: 4, salt: 2 ** 52 + 1 },
      },
      records: [recordWith("T", "a", "three")],
      append: [],
    });
    await first.close();
    const again = await place.open();
    try {
      const loaded = await again.load();
      assert.deepEqual(loaded.meta, {
        ...meta,
        lastClientVersion: 2,
        acknowledgedClientVersion: 1,
        downloadCursor: 9,
        // The cursor's version salt is kept with it (docs/PROTOCOL.md §4.11).
        downloadCursorSalt: 0xffff_fffe,
        clientIdentity: { id: 4, salt: 2 ** 52 + 1 },
      });
      const byKey = new Map(
        loaded.records.map((r) => [`${r.type}/${r.id}`, r]),
      );
      assert.deepEqual([...byKey.keys()].sort(), ["T/a", "U/b"]);
      assert.deepEqual(byKey.get("T/a"), recordWith("T", "a", "three"));
      assert.deepEqual(loaded.pending, [changeset(2)]);
    } finally {
      await again.close();
    }
  });

  Deno.test(`${name}: a record and a changeset larger than one stored value round-trip, shrink and drop`, async () => {
    await using place = await fixture();
    const big = bigString(200_000, 1);
    const large: UploadChangeset = {
      ...changeset(1),
      instructions: [{
        op: "put",
        type: "T",
        id: "big",
        fields: { text: big },
        stamp: null,
      }],
    };
    const first = await place.open();
    await first.commit({
      meta: { ...meta, lastClientVersion: 1 },
      records: [recordWith("T", "big", big)],
      append: [large],
    });
    await first.close();
    const second = await place.open();
    const loaded = await second.load();
    assert.deepEqual(loaded.records, [recordWith("T", "big", big)]);
    assert.deepEqual(loaded.pending, [large]);
    // Shrinking the record and acknowledging the changeset leaves no parts
    // behind that a later load would trip over.
    await second.commit({
      meta: { ...meta, lastClientVersion: 1, acknowledgedClientVersion: 1 },
      records: [recordWith("T", "big", "small")],
      append: [],
    });
    await second.close();
    const third = await place.open();
    try {
      const after = await third.load();
      assert.deepEqual(after.records, [recordWith("T", "big", "small")]);
      assert.deepEqual(after.pending, []);
    } finally {
      await third.close();
    }
  });

  Deno.test(`${name}: a batch of 5,000 records and 2 MB commits whole and reopens`, async () => {
    await using place = await fixture();
    const records = [];
    for (let i = 0; i < 5_000; i++) {
      records.push(recordWith("T", `r${i}`, bigString(400, i)));
    }
    const storage = await place.open();
    await storage.commit({
      meta: { ...meta, downloadCursor: 1 },
      records,
      append: [],
    });
    await storage.close();
    const again = await place.open();
    try {
      const loaded = await again.load();
      assert.equal(loaded.meta?.downloadCursor, 1);
      assert.equal(loaded.records.length, 5_000);
      const byId = new Map(loaded.records.map((r) => [r.id, r]));
      assert.deepEqual(byId.get("r4999"), records[4999]);
      assert.deepEqual(byId.get("r0"), records[0]);
    } finally {
      await again.close();
    }
  });

  Deno.test(`${name}: type and id of any length and content are kept apart`, async () => {
    await using place = await fixture();
    const long = "x".repeat(5_000);
    const records = [
      recordWith("ab", "c", "1"),
      recordWith("a", "bc", "2"),
      recordWith("T", long, "3"),
      recordWith(long, "y", "4"),
      recordWith("T", "nul\u0000id", "5"),
      recordWith("T", "", "6"),
    ];
    const storage = await place.open();
    await storage.commit({ meta, records, append: [] });
    await storage.close();
    const again = await place.open();
    try {
      const loaded = await again.load();
      const key = (r: { type: string; id: string }) => `${r.type}|${r.id}`;
      assert.deepEqual(
        loaded.records.map(key).sort(),
        records.map(key).sort(),
      );
    } finally {
      await again.close();
    }
  });
}
