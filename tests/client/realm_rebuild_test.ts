import assert from "node:assert/strict";
import {
  ABSENT_STAMP,
  buildReset,
  rebuildRejected,
  visibleChange,
} from "../../src/client/realm_rebuild.ts";
import { emptyRecord, isLive, visibleFields } from "../../src/model/merge.ts";
import { ObjectStore } from "../../src/model/object_store.ts";
import {
  put,
  remove,
  stampAt,
  update,
  upload,
} from "../_helpers/changesets.ts";

Deno.test("rebuildRejected: the server's revert (a delete at the zero stamp = never held) with the later local changesets on top, each at its own stamp", () => {
  const rejected = upload(2, [
    update("Task", "t1", { title: "B" }),
    put("Task", "t2", { title: "new" }),
  ]);
  const later = upload(3, [update("Task", "t1", { done: true })]);
  const [t1, t2] = rebuildRejected(rejected.instructions, [{
    serverVersion: 4,
    stamp: ABSENT_STAMP,
    instructions: [
      { ...put("Task", "t1", { title: "A" }), stamp: stampAt(10, 9) },
      { ...remove("Task", "t2"), stamp: ABSENT_STAMP },
      // Not touched by the rejected changeset: ignored.
      { ...put("Task", "t9", {}), stamp: stampAt(10, 9) },
    ],
  }], [later]);
  assert.deepEqual(visibleFields(t1!), { title: "A", done: true });
  assert.equal(isLive(t2!), false);
  assert.deepEqual(t2!.deleteStamp, ABSENT_STAMP);
});

Deno.test("visibleChange: put for an object that appears or lost a field, update for changed fields only, delete, or nothing", () => {
  const before = emptyRecord("Task", "t1");
  const store = new ObjectStore();
  store.apply(stampAt(1), [put("Task", "t1", { a: 1, b: 2 })]);
  const old = store.record("Task", "t1")!;
  const copy = { ...old, fields: new Map(old.fields) };
  assert.equal(visibleChange(old, copy), null);
  copy.fields.set("b", { value: 3, stamp: stampAt(2) });
  assert.deepEqual(visibleChange(old, copy), {
    type: "Task",
    id: "t1",
    op: "update",
    fields: { b: 3 },
  });
  copy.fields.delete("a");
  assert.equal(visibleChange(old, copy)?.op, "put");
  assert.equal(visibleChange(before, old)?.op, "put");
  assert.deepEqual(
    visibleChange(old, {
      ...emptyRecord("Task", "t1"),
      deleteStamp: stampAt(5),
    }),
    { type: "Task", id: "t1", op: "delete" },
  );
  assert.equal(visibleChange(undefined, emptyRecord("Task", "t1")), null);
});

Deno.test("buildReset recoverAll: pending changesets re-applied with their stamps, and what the server lacks or holds older synthesized one changeset per original stamp", () => {
  // Local: t1 put at 10 (the server has it), t1.n updated at 20 (the server
  // lost it), t2 put at 30 (lost), t3 deleted at 40 (the server still has
  // it alive at 10), and a pending write at 50.
  const local = new ObjectStore();
  local.apply(stampAt(10), [
    put("Task", "t1", { n: 1 }),
    put("Task", "t3", { n: 3 }),
  ]);
  local.apply(stampAt(20), [update("Task", "t1", { n: 2 })]);
  local.apply(stampAt(30), [put("Task", "t2", { n: 2 })]);
  local.apply(stampAt(40), [remove("Task", "t3")]);
  const pending = upload(7, [update("Task", "t1", { m: 5 })], { time: 50 });
  local.apply(pending.stamp, pending.instructions);

  const staged = new ObjectStore();
  staged.apply(stampAt(10), [
    put("Task", "t1", { n: 1 }),
    put("Task", "t3", { n: 3 }),
  ]);
  const { store, synthesized } = buildReset(
    staged,
    [...local.records()],
    [pending],
    true,
    8,
    12,
  );
  assert.deepEqual(
    synthesized.map((c) => [c.clientVersion, c.stamp.time, c.instructions]),
    [
      [8, 20, [update("Task", "t1", { n: 2 })]],
      [9, 30, [put("Task", "t2", { n: 2 })]],
      [10, 40, [remove("Task", "t3")]],
    ],
  );
  assert.ok(synthesized.every((c) => c.baseServerVersion === 12));
  assert.deepEqual(store.get("Task", "t1"), { n: 2, m: 5 });
  assert.deepEqual(store.get("Task", "t2"), { n: 2 });
  assert.equal(store.get("Task", "t3"), undefined);

  // recover alone: only the pending write.
  const again = new ObjectStore();
  again.apply(stampAt(10), [put("Task", "t1", { n: 1 })]);
  const recovered = buildReset(
    again,
    [...local.records()],
    [pending],
    false,
    8,
    12,
  );
  assert.deepEqual(recovered.synthesized, []);
  assert.deepEqual(recovered.store.get("Task", "t1"), { n: 1, m: 5 });
  assert.equal(recovered.store.get("Task", "t2"), undefined);
});
