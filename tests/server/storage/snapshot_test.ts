import assert from "node:assert/strict";
import type { UploadChangeset } from "../../../src/model/changeset.ts";
import { ObjectStore } from "../../../src/model/object_store.ts";
import {
  integrateChangesets,
  readVersionMeta,
} from "../../../src/server/storage/history.ts";
import { allocateIdentity } from "../../../src/server/storage/identities.ts";
import {
  blobKey,
  historyKey,
  saltsKey,
  snapshotKey,
  snapshotLeaseKey,
} from "../../../src/server/storage/keys.ts";
import {
  type AdvanceOptions,
  advanceSnapshot,
  listSnapshotObjects,
  LOCAL_PIECES,
  readCompactedThrough,
  readSnapshotInfo,
  type SnapshotInfo,
} from "../../../src/server/storage/snapshot.ts";
import { put, remove, update, upload } from "../../_helpers/changesets.ts";

const retry = () => ({ signal: AbortSignal.timeout(10_000) });

function options(overrides: Partial<AdvanceOptions> = {}): AdvanceOptions {
  return {
    retainVersions: 1000,
    leaseMs: 30_000,
    now: Date.now,
    retry: retry(),
    ...overrides,
  };
}

/** A realm with puts, updates, a delete, a resurrection and a large value. */
function history(): UploadChangeset[] {
  const big = new Uint8Array(150_000).map((_, index) => index % 253);
  return [
    upload(1, [put("T", "a", { n: 1, s: "x" }), put("T", "b", { n: 1 })]),
    upload(2, [update("T", "a", { n: 2 })]),
    upload(3, [remove("T", "b"), put("File", "f", { data: big })]),
    upload(4, [put("T", "c", { n: 4 })]),
    upload(5, [update("T", "c", { s: "y" }), update("T", "a", { s: "z" })]),
    upload(6, [put("T", "b", { n: 6 })]),
    upload(7, [remove("T", "c")]),
  ];
}

async function seed(kv: Deno.Kv, changesets = history()): Promise<ObjectStore> {
  const identity = await allocateIdentity(kv, "/r", retry());
  await integrateChangesets(kv, "/r", identity, changesets, retry());
  const expected = new ObjectStore();
  for (const changeset of changesets) {
    expected.apply(changeset.stamp, changeset.instructions);
  }
  return expected;
}

async function snapshotStore(kv: Deno.Kv): Promise<ObjectStore> {
  const store = new ObjectStore();
  for await (const object of listSnapshotObjects(kv, "/r", retry())) {
    store.apply({ time: 0, counter: 0, node: 0 }, object.instructions);
  }
  return store;
}

function assertSameState(actual: ObjectStore, expected: ObjectStore): void {
  const describe = (store: ObjectStore) =>
    [...store.records()].map((record) => ({
      type: record.type,
      id: record.id,
      putStamp: record.putStamp,
      deleteStamp: record.deleteStamp,
      fields: Object.fromEntries(record.fields),
    })).sort((a, b) => (a.type + a.id).localeCompare(b.type + b.id));
  assert.deepEqual(describe(actual), describe(expected));
}

Deno.test("advanceSnapshot() materialises records equal to replaying the history, tombstones included", async () => {
  await using kv = await Deno.openKv(":memory:");
  const expected = await seed(kv);
  const result = await advanceSnapshot(kv, "/r", options());
  assert.equal(result.advanced, true);
  assert.equal(result.snapshot.version, 7);
  assert.equal(result.snapshot.objects, 4);
  assertSameState(await snapshotStore(kv), expected);
  assert.equal((await snapshotStore(kv)).get("T", "c"), undefined);
});

Deno.test("advanceSnapshot() in a local store's small pieces ends where one large step does: same records, history compacted, every salt kept", async () => {
  // 300 versions over 12 objects, after the mixed history (a large value
  // included): many steps of LOCAL_PIECES.stepVersions, many operations.
  const changesets = history();
  for (let version = 8; version <= 300; version++) {
    changesets.push(
      upload(version, [update("T", "a", { n: version })]),
    );
    changesets[changesets.length - 1]!.instructions.push(
      put("Many", `m${version % 12}`, { v: version }),
    );
  }
  await using small = await Deno.openKv(":memory:");
  await using large = await Deno.openKv(":memory:");
  const expected = await seed(small, changesets);
  await seed(large, changesets);
  const salts = [];
  for (let version = 1; version <= 300; version++) {
    salts.push((await readVersionMeta(small, "/r", version, retry())).salt);
  }
  const inPieces = await advanceSnapshot(
    small,
    "/r",
    options({ pieces: LOCAL_PIECES, retainVersions: 0 }),
  );
  const whole = await advanceSnapshot(
    large,
    "/r",
    options({ retainVersions: 0 }),
  );
  // Salts are random per store: each snapshot carries its own last one.
  const { salt, ...rest } = inPieces.snapshot;
  const { salt: wholeSalt, ...wholeRest } = whole.snapshot;
  assert.deepEqual(rest, wholeRest);
  assert.equal(salt, salts[299]);
  assert.notEqual(wholeSalt, 0);
  assert.equal(inPieces.snapshot.version, 300);
  assert.equal(inPieces.compactedThrough, 300);
  assertSameState(await snapshotStore(small), expected);
  assertSameState(await snapshotStore(large), expected);
  for (let version = 1; version <= 300; version++) {
    assert.equal((await small.get(historyKey("/r", version))).value, null);
    assert.equal(
      (await readVersionMeta(small, "/r", version, retry())).salt,
      salts[version - 1],
    );
  }
  const records = [];
  for await (
    const record of small.list({ prefix: saltsKey("/r", 0).slice(0, -1) })
  ) {
    records.push(record.key.at(-1));
  }
  // Each deleting operation kept its own versions' salts.
  assert.ok(records.length > 1, `salt records: ${records.length}`);
});

Deno.test("advanceSnapshot() advances step by step to a target and then to the head", async () => {
  await using kv = await Deno.openKv(":memory:");
  const changesets = history();
  const expected = await seed(kv, changesets);
  const partial = await advanceSnapshot(
    kv,
    "/r",
    options({ targetVersion: 3 }),
  );
  assert.equal(partial.snapshot.version, 3);
  const early = new ObjectStore();
  for (const changeset of changesets.slice(0, 3)) {
    early.apply(changeset.stamp, changeset.instructions);
  }
  assertSameState(await snapshotStore(kv), early);
  const full = await advanceSnapshot(kv, "/r", options());
  assert.equal(full.snapshot.version, 7);
  assertSameState(await snapshotStore(kv), expected);
});

Deno.test("records ahead of the version record (a crash mid-step) are advanced again without harm", async () => {
  await using kv = await Deno.openKv(":memory:");
  const expected = await seed(kv);
  await advanceSnapshot(kv, "/r", options());
  // As if the process died after writing records, before moving the version.
  await kv.set(
    snapshotKey("/r"),
    {
      version: 2,
      bytes: 0,
      historyBytes: 0,
      objects: 0,
    } satisfies SnapshotInfo,
  );
  const again = await advanceSnapshot(kv, "/r", options());
  assert.equal(again.snapshot.version, 7);
  assertSameState(await snapshotStore(kv), expected);
});

Deno.test("advanceSnapshot() leaves the snapshot alone while another process holds the lease", async () => {
  await using kv = await Deno.openKv(":memory:");
  await seed(kv);
  let now = 1_000_000;
  await kv.set(snapshotLeaseKey("/r"), { owner: "other", expiresAt: now + 10 });
  const blocked = await advanceSnapshot(kv, "/r", options({ now: () => now }));
  assert.equal(blocked.advanced, false);
  assert.equal((await readSnapshotInfo(kv, "/r", retry())).version, 0);
  now += 11;
  const taken = await advanceSnapshot(kv, "/r", options({ now: () => now }));
  assert.equal(taken.advanced, true);
  assert.equal(taken.snapshot.version, 7);
  assert.equal((await kv.get(snapshotLeaseKey("/r"))).value, null, "released");
});

Deno.test("advanceSnapshot() compacts history below the snapshot, keeping retainVersions", async () => {
  await using kv = await Deno.openKv(":memory:");
  const expected = await seed(kv);
  const bigBlob =
    (await kv.get<{ changeset: { blob: string } }>(historyKey("/r", 3)))
      .value!.changeset.blob;
  const result = await advanceSnapshot(
    kv,
    "/r",
    options({ retainVersions: 2 }),
  );
  assert.equal(result.compactedThrough, 5);
  assert.equal(await readCompactedThrough(kv, "/r", retry()), 5);
  const kept: number[] = [];
  for await (const entry of kv.list({ prefix: historyKey("/r") })) {
    kept.push(entry.key.at(-1) as number);
  }
  assert.deepEqual(kept, [6, 7]);
  let blobParts = 0;
  for await (const _ of kv.list({ prefix: blobKey("/r", bigBlob) })) {
    blobParts++;
  }
  assert.equal(blobParts, 0, "the compacted changeset's blob is gone too");
  assertSameState(await snapshotStore(kv), expected);
});
