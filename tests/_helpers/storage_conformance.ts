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

/**
 * The contract every RealmStorage keeps, run against each implementation
 * (memory now, Deno KV with the durability work).
 */
export function runStorageTests(
  name: string,
  makeStorage: () => RealmStorage | Promise<RealmStorage>,
): void {
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
        },
        records: [],
        append: [changeset(2)],
      });
      const loaded = await storage.load();
      assert.deepEqual(loaded.meta, {
        ...meta,
        lastClientVersion: 2,
        clientIdentity: { id: 3, salt: 9 },
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
