import assert from "node:assert/strict";
import {
  LocalRealm,
  MAX_WRITE_BYTES,
  type RealmChange,
} from "../../src/client/local_realm.ts";
import { MemoryStorage } from "../../src/client/storage/memory.ts";
import { download } from "../_helpers/changesets.ts";
import { decodeUploadChangeset } from "../../src/protocol/decode.ts";
import { encodeUploadChangeset } from "../../src/protocol/encode.ts";

function open(now = () => 1_000): Promise<LocalRealm> {
  return LocalRealm.open(new MemoryStorage(), now);
}

Deno.test("LocalRealm.open() gives a new realm a node id in [1, 2^48) and empty cursors", async () => {
  const realm = await open();
  const meta = realm.meta;
  assert.ok(
    Number.isInteger(meta.nodeId) && meta.nodeId >= 1 && meta.nodeId < 2 ** 48,
  );
  assert.deepEqual({ ...meta, nodeId: 0 }, {
    nodeId: 0,
    clientIdentity: null,
    downloadCursor: 0,
    lastClientVersion: 0,
    acknowledgedClientVersion: 0,
  });
  const other = await open();
  assert.notEqual(other.meta.nodeId, meta.nodeId);
  await realm.close();
  await other.close();
});

Deno.test("LocalRealm.write() commits one changeset per transaction with increasing client versions", async () => {
  const realm = await open();
  const seen: number[] = [];
  realm.listen({
    onLocalCommit: ({ changeset }) => seen.push(changeset.clientVersion),
  });
  const first = await realm.write((tx) => tx.put("T", "a", { n: 1 }));
  const second = await realm.write((tx) => tx.update("T", "a", { n: 2 }));
  const empty = await realm.write(() => {});
  assert.equal(first.clientVersion, 1);
  assert.equal(second.clientVersion, 2);
  assert.deepEqual(empty, { clientVersion: 0, bytes: 0 });
  assert.ok(first.bytes > 0);
  assert.deepEqual(seen, [1, 2]);
  assert.deepEqual(realm.pending.map((p) => p.changeset.clientVersion), [1, 2]);
  assert.deepEqual(realm.get("T", "a"), { n: 2 });
  await realm.close();
});

Deno.test("LocalRealm.write() commits in call order when writes are not awaited", async () => {
  const realm = await open();
  const order: number[] = [];
  const writes = [];
  for (let index = 0; index < 20; index++) {
    writes.push(
      realm.write(async (tx) => {
        // An async callback must not let a later write overtake it.
        if (index % 3 === 0) {
          await new Promise((resolve) =>
            queueMicrotask(() => resolve(undefined))
          );
        }
        tx.put("T", "x", { last: index });
        order.push(index);
      }),
    );
  }
  const receipts = await Promise.all(writes);
  assert.deepEqual(order, [...Array(20).keys()]);
  assert.deepEqual(
    receipts.map((r) => r.clientVersion),
    [...Array(20).keys()].map((i) => i + 1),
  );
  assert.deepEqual(realm.get("T", "x"), { last: 19 });
  await realm.close();
});

Deno.test("LocalRealm.write() commits nothing when the callback throws", async () => {
  const realm = await open();
  await assert.rejects(
    realm.write((tx) => {
      tx.put("T", "a", { n: 1 });
      throw new Error("changed my mind");
    }),
    { message: "changed my mind" },
  );
  assert.equal(realm.get("T", "a"), undefined);
  assert.equal(realm.meta.lastClientVersion, 0);
  const next = await realm.write((tx) => tx.put("T", "b", {}));
  assert.equal(next.clientVersion, 1);
  await realm.close();
});

Deno.test("LocalRealm.write() rejects a changeset over the write cap or a protocol limit with RangeError", async () => {
  const realm = await open();
  const big = "x".repeat(600_000);
  await assert.rejects(
    realm.write((tx) => {
      for (let index = 0; index < 30; index++) {
        tx.put("T", `o${index}`, { big });
      }
    }),
    (error: Error) =>
      error instanceof RangeError &&
      error.message.includes(`more than the limit of ${MAX_WRITE_BYTES}`),
  );
  await assert.rejects(
    realm.write((tx) => tx.put("T", "a", { s: "y".repeat(1024 * 1024 + 1) })),
    RangeError,
  );
  assert.equal(realm.meta.lastClientVersion, 0);
  assert.equal(realm.size, 0);
  await realm.close();
});

Deno.test("LocalRealm.write() takes values nested as deep as a DOWNLOAD may carry, and refuses deeper ones with TypeError", async () => {
  // A small write is not decoded back (protocol/write_check.ts): the
  // encoder's depth check must refuse what the decoder would.
  const nest = (levels: number): unknown[] => {
    let value: unknown[] = [];
    for (let level = 1; level < levels; level++) value = [value];
    return value;
  };
  const realm = await open();
  await realm.write((tx) => tx.put("T", "deep", { v: nest(32) as never }));
  const changeset = realm.pending[0]!.changeset;
  assert.deepEqual(
    decodeUploadChangeset(encodeUploadChangeset(changeset)),
    changeset,
  );
  await assert.rejects(
    realm.write((tx) => tx.put("T", "deeper", { v: nest(33) as never })),
    TypeError,
  );
  assert.equal(realm.get("T", "deeper"), undefined);
  await realm.close();
});

Deno.test("LocalRealm get() and objects() return copies", async () => {
  const realm = await open();
  await realm.write((tx) => tx.put("T", "a", { when: new Date(1), list: [1] }));
  const copy = realm.get("T", "a")!;
  (copy.when as Date).setTime(50);
  (copy.list as number[]).push(2);
  assert.deepEqual(realm.get("T", "a"), { when: new Date(1), list: [1] });
  const [object] = realm.objects("T");
  (object!.fields.list as number[]).push(3);
  assert.deepEqual(realm.objects("T"), [{
    id: "a",
    fields: { when: new Date(1), list: [1] },
  }]);
  assert.deepEqual(realm.objects("Nothing"), []);
  await realm.close();
});

Deno.test("LocalRealm.integrate() applies remote changesets, moves the cursor, and records the acknowledgement", async () => {
  const realm = await open(() => 10);
  const changes: RealmChange[] = [];
  realm.listen({ onChange: (change) => changes.push(change) });
  await realm.write((tx) => tx.put("T", "mine", { n: 1 }));
  await realm.write((tx) => tx.put("T", "mine2", { n: 1 }));
  const result = await realm.integrate(download(4, [{
    serverVersion: 4,
    stamp: { time: 500, counter: 0, node: 99 },
    instructions: [
      { op: "put", type: "T", id: "theirs", fields: { n: 2 }, stamp: null },
      { op: "update", type: "T", id: "mine", fields: { n: 0 }, stamp: null },
    ],
  }], 1));
  assert.deepEqual(result, { acknowledged: 1 });
  assert.equal(realm.meta.downloadCursor, 4);
  assert.equal(realm.meta.acknowledgedClientVersion, 1);
  assert.deepEqual(realm.pending.map((p) => p.changeset.clientVersion), [2]);
  // The remote update is newer (time 500 > the local clock's 10).
  assert.deepEqual(realm.get("T", "mine"), { n: 0 });
  assert.deepEqual(changes.map((c) => c.origin), ["local", "local", "remote"]);
  assert.deepEqual(changes[2]!.changes, [
    { type: "T", id: "theirs", op: "put", fields: { n: 2 } },
    { type: "T", id: "mine", op: "update", fields: { n: 0 } },
  ]);
  // Local stamps now order after what was observed.
  await realm.write((tx) => tx.update("T", "mine", { n: 3 }));
  assert.deepEqual(realm.get("T", "mine"), { n: 3 });
  assert.ok(realm.pending.at(-1)!.changeset.stamp.time >= 500);
  await realm.close();
});

Deno.test("LocalRealm.integrate() never moves the cursor back and clamps a bogus acknowledgement", async () => {
  const realm = await open();
  await realm.write((tx) => tx.put("T", "a", {}));
  await realm.integrate(download(10, [], 0));
  await realm.integrate(download(3, [], 7));
  assert.equal(realm.meta.downloadCursor, 10);
  assert.equal(realm.meta.acknowledgedClientVersion, 1);
  await realm.close();
});

Deno.test("LocalRealm.setIdentity() keeps the identity; calls after close() reject", async () => {
  const realm = await open();
  await realm.setIdentity({ id: 4, salt: 77 });
  assert.deepEqual(realm.meta.clientIdentity, { id: 4, salt: 77 });
  await realm.close();
  await realm.close();
  await assert.rejects(realm.write((tx) => tx.put("T", "a", {})), TypeError);
  await assert.rejects(realm.setIdentity({ id: 1, salt: 1 }), TypeError);
});

Deno.test("LocalRealm.open() restores records, pending changesets and the clock from storage", async () => {
  const storage = new MemoryStorage();
  let now = 5_000;
  const first = await LocalRealm.open(storage, () => now);
  await first.write((tx) => tx.put("T", "a", { n: 1 }));
  await first.write((tx) => tx.put("T", "b", { n: 1 }));
  await first.write((tx) => tx.delete("T", "b"));
  await first.integrate(download(1, [], 1));
  // Reopen on the same storage without closing it (a crash).
  now = 1;
  const second = await LocalRealm.open(storage, () => now);
  assert.deepEqual(second.get("T", "a"), { n: 1 });
  assert.equal(second.get("T", "b"), undefined);
  assert.equal(second.meta.nodeId, first.meta.nodeId);
  assert.deepEqual(second.pending.map((p) => p.changeset.clientVersion), [
    2,
    3,
  ]);
  // The clock went backwards; stamps still order after the stored ones.
  await second.write((tx) => tx.update("T", "a", { n: 2 }));
  assert.deepEqual(second.get("T", "a"), { n: 2 });
  await second.close();
});

Deno.test("LocalRealm.integrate() reports each remote changeset of one DOWNLOAD as a transaction of its own, in order, skipping those that changed nothing", async () => {
  const realm = await open(() => 10);
  const changes: RealmChange[] = [];
  const stop = realm.listen({ onChange: (change) => changes.push(change) });
  const stamp = (time: number) => ({ time, counter: 0, node: 99 });
  const update = (id: string, n: number) => ({
    op: "update" as const,
    type: "T",
    id,
    fields: { n },
    stamp: null,
  });
  const put = (id: string, n: number) => ({
    op: "put" as const,
    type: "T",
    id,
    fields: { n },
    stamp: null,
  });
  await realm.integrate(download(3, [
    {
      serverVersion: 1,
      stamp: stamp(500),
      instructions: [put("a", 1), put("b", 1)],
    },
    // Older than the first: loses, so no transaction is reported for it.
    { serverVersion: 2, stamp: stamp(400), instructions: [update("a", 0)] },
    {
      serverVersion: 3,
      stamp: stamp(600),
      instructions: [update("a", 2), update("b", 2)],
    },
  ]));
  assert.deepEqual(changes, [
    {
      origin: "remote",
      changes: [
        { type: "T", id: "a", op: "put", fields: { n: 1 } },
        { type: "T", id: "b", op: "put", fields: { n: 1 } },
      ],
    },
    {
      origin: "remote",
      changes: [
        { type: "T", id: "a", op: "update", fields: { n: 2 } },
        { type: "T", id: "b", op: "update", fields: { n: 2 } },
      ],
    },
  ]);
  // Removing the listener twice is harmless; with no listener left nothing
  // is reported (and nothing copied).
  stop();
  stop();
  await realm.integrate(download(4, [
    { serverVersion: 4, stamp: stamp(700), instructions: [update("a", 3)] },
  ]));
  assert.equal(changes.length, 2);
  assert.deepEqual(realm.get("T", "a"), { n: 3 });
  await realm.close();
});

Deno.test("LocalRealm pendingAfter() starts after a client version, and acknowledgements drop pending changesets from the front", async () => {
  const realm = await open();
  for (let n = 1; n <= 2_100; n++) {
    await realm.write((tx) => tx.put("T", "x", { n }));
  }
  const after = (version: number) =>
    [...realm.pendingAfter(version)].map((p) => p.changeset.clientVersion);
  assert.deepEqual(after(2_097), [2_098, 2_099, 2_100]);
  assert.equal(after(0).length, 2_100);
  assert.deepEqual(after(2_100), []);
  await realm.integrate(download(0, [], 1_500));
  assert.equal(realm.pending.length, 600);
  assert.equal(realm.pending[0]!.changeset.clientVersion, 1_501);
  assert.deepEqual(after(0).slice(0, 2), [1_501, 1_502]);
  assert.deepEqual(after(2_098), [2_099, 2_100]);
  await realm.integrate(download(0, [], 2_099));
  assert.deepEqual(after(0), [2_100]);
  await realm.write((tx) => tx.put("T", "x", { n: 0 }));
  assert.deepEqual(after(2_099), [2_100, 2_101]);
  await realm.integrate(download(0, [], 2_101));
  assert.deepEqual(realm.pending, []);
  await realm.close();
});
