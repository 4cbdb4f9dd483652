// Version salts in server storage (docs/PROTOCOL.md §4.11): chosen per
// version at commit, read back with the history, kept by compaction, carried
// by the snapshot's version record; and the identity record's `rejected`
// flag, which every identity write keeps.

import assert from "node:assert/strict";
import {
  integrateChangesets,
  readHistory,
  readVersionMeta,
} from "../../../src/server/storage/history.ts";
import {
  allocateIdentity,
  type IdentityRecord,
} from "../../../src/server/storage/identities.ts";
import {
  historyKey,
  identityKey,
  saltsKey,
} from "../../../src/server/storage/keys.ts";
import {
  readRejection,
  recordRejection,
} from "../../../src/server/storage/rejections.ts";
import {
  advanceSnapshot,
  readSnapshotInfo,
} from "../../../src/server/storage/snapshot.ts";
import { put, upload } from "../../_helpers/changesets.ts";

const retry = () => ({ signal: AbortSignal.timeout(10_000) });

Deno.test("every committed version gets its own salt in [1, 2^32 - 1], stored with its entry and read back", async () => {
  await using kv = await Deno.openKv(":memory:");
  const identity = await allocateIdentity(kv, "/r", retry());
  const changesets = Array.from(
    { length: 50 },
    (_, index) => upload(index + 1, [put("T", `t${index}`, {})]),
  );
  const result = await integrateChangesets(
    kv,
    "/r",
    identity,
    changesets,
    retry(),
  );
  const salts = result.integrated.map((item) => item.salt);
  for (const salt of salts) {
    assert.ok(Number.isInteger(salt) && salt >= 1 && salt <= 0xffff_ffff);
  }
  // 50 random 32-bit salts: a repeat would be a broken generator.
  assert.equal(new Set(salts).size, 50);
  const read = await readHistory(kv, "/r", 1, 50, 1 << 20, retry());
  assert.deepEqual(read.items.map((item) => item.salt), salts);
  assert.deepEqual(await readVersionMeta(kv, "/r", 7, retry()), {
    cumulativeBytes: result.integrated[6]!.cumulativeBytes,
    salt: salts[6],
  });
  assert.deepEqual(await readVersionMeta(kv, "/r", 0, retry()), {
    cumulativeBytes: 0,
    salt: 0,
  });
});

Deno.test("compaction keeps the salts of the versions it deletes, and the snapshot record holds its version's salt", async () => {
  await using kv = await Deno.openKv(":memory:");
  const identity = await allocateIdentity(kv, "/r", retry());
  const result = await integrateChangesets(
    kv,
    "/r",
    identity,
    Array.from(
      { length: 30 },
      (_, index) => upload(index + 1, [put("T", `t${index % 4}`, { index })]),
    ),
    retry(),
  );
  const salts = result.integrated.map((item) => item.salt);
  const advanced = await advanceSnapshot(kv, "/r", {
    retainVersions: 5,
    leaseMs: 30_000,
    now: Date.now,
    retry: retry(),
  });
  assert.equal(advanced.compactedThrough, 25);
  assert.equal((await readSnapshotInfo(kv, "/r", retry())).salt, salts[29]);
  assert.equal((await kv.get(historyKey("/r", 25))).value, null);
  for (let version = 1; version <= 30; version++) {
    const meta = await readVersionMeta(kv, "/r", version, retry());
    assert.equal(meta.salt, salts[version - 1], `version ${version}`);
    assert.equal(meta.cumulativeBytes === null, version <= 25);
  }
  // A version never committed has no salt.
  assert.equal((await readVersionMeta(kv, "/r", 31, retry())).salt, 0);
});

Deno.test("an entry stored before salts reads back with salt 0 (unknown), and compaction keeps 0 for it", async () => {
  await using kv = await Deno.openKv(":memory:");
  const identity = await allocateIdentity(kv, "/r", retry());
  await integrateChangesets(kv, "/r", identity, [
    upload(1, [put("T", "a", {})]),
    upload(2, [put("T", "b", {})]),
  ], retry());
  // Rewrite version 1 as an older release stored it.
  const entry = await kv.get<{ salt?: number }>(historyKey("/r", 1));
  const { salt: _, ...legacy } = entry.value!;
  await kv.set(historyKey("/r", 1), legacy);
  assert.equal((await readVersionMeta(kv, "/r", 1, retry())).salt, 0);
  await advanceSnapshot(kv, "/r", {
    retainVersions: 0,
    leaseMs: 30_000,
    now: Date.now,
    retry: retry(),
  });
  assert.equal((await readVersionMeta(kv, "/r", 1, retry())).salt, 0);
  assert.notEqual((await readVersionMeta(kv, "/r", 2, retry())).salt, 0);
  const records = [];
  for await (
    const record of kv.list({ prefix: saltsKey("/r", 0).slice(0, -1) })
  ) {
    records.push(record.key.at(-1));
  }
  assert.deepEqual(records, [1]);
});

Deno.test("a refusal marks the identity record rejected, and later integrations keep the mark", async () => {
  await using kv = await Deno.openKv(":memory:");
  const identity = await allocateIdentity(kv, "/r", retry());
  const record = async () =>
    (await kv.get<IdentityRecord>(identityKey("/r", identity.id))).value!;
  await integrateChangesets(kv, "/r", identity, [upload(1, [])], retry());
  assert.equal((await record()).rejected, undefined);
  assert.equal(
    await recordRejection(kv, "/r", identity, 2, {
      code: "validation_failed",
      message: "no",
    }, retry()),
    true,
  );
  assert.equal((await record()).rejected, true);
  await integrateChangesets(kv, "/r", identity, [upload(3, [])], retry());
  assert.deepEqual(await record(), {
    salt: identity.salt,
    lastClientVersion: 3,
    rejected: true,
  });
  assert.notEqual(await readRejection(kv, "/r", identity.id, 2, retry()), null);
});
