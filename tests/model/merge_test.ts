import assert from "node:assert/strict";
import { ObjectStore } from "../../src/model/object_store.ts";
import { recordToInstructions } from "../../src/model/merge.ts";
import type { Instruction } from "../../src/model/changeset.ts";
import { compareHlc, type Hlc, HlcClock } from "../../src/model/hlc.ts";
import { Prng, testSeed } from "../_helpers/prng.ts";

function put(id: string, fields: Record<string, unknown>): Instruction {
  return { op: "put", type: "T", id, fields: fields as never, stamp: null };
}
function update(id: string, fields: Record<string, unknown>): Instruction {
  return { op: "update", type: "T", id, fields: fields as never, stamp: null };
}
function del(id: string): Instruction {
  return { op: "delete", type: "T", id, fields: null, stamp: null };
}
function at(time: number, node = 1, counter = 0): Hlc {
  return { time, counter, node };
}

Deno.test("ObjectStore.apply() reports a put, an update and a delete", () => {
  const store = new ObjectStore();
  assert.deepEqual(store.apply(at(1), [put("a", { x: 1, y: 2 })]), [
    // `created`: the object did not exist (indexes append it, no lookup).
    { type: "T", id: "a", op: "put", fields: { x: 1, y: 2 }, created: true },
  ]);
  assert.deepEqual(store.apply(at(2), [update("a", { y: 3 })]), [
    { type: "T", id: "a", op: "update", fields: { y: 3 } },
  ]);
  assert.deepEqual(store.get("T", "a"), { x: 1, y: 3 });
  assert.deepEqual(store.apply(at(3), [del("a")]), [
    { type: "T", id: "a", op: "delete" },
  ]);
  assert.equal(store.get("T", "a"), undefined);
  assert.equal(store.size, 0);
});

Deno.test("ObjectStore.apply() keeps the newer field when an older write arrives late", () => {
  const store = new ObjectStore();
  store.apply(at(1), [put("a", { x: 1 })]);
  store.apply(at(5), [update("a", { x: "new" })]);
  assert.deepEqual(store.apply(at(3), [update("a", { x: "old" })]), []);
  assert.deepEqual(store.get("T", "a"), { x: "new" });
});

Deno.test("ObjectStore.apply() breaks equal times by node", () => {
  const left = new ObjectStore();
  const right = new ObjectStore();
  const base = [put("a", { x: 0 })];
  left.apply(at(1), base);
  right.apply(at(1), base);
  left.apply(at(5, 2), [update("a", { x: "node2" })]);
  left.apply(at(5, 9), [update("a", { x: "node9" })]);
  right.apply(at(5, 9), [update("a", { x: "node9" })]);
  right.apply(at(5, 2), [update("a", { x: "node2" })]);
  assert.deepEqual(left.get("T", "a"), { x: "node9" });
  assert.deepEqual(right.get("T", "a"), { x: "node9" });
});

Deno.test("ObjectStore.apply() lets a delete win over older writes but not a newer put", () => {
  const store = new ObjectStore();
  store.apply(at(1), [put("a", { x: 1 })]);
  store.apply(at(10), [del("a")]);
  assert.deepEqual(store.apply(at(5), [update("a", { x: 2 })]), []);
  assert.deepEqual(store.apply(at(11), [update("a", { x: 3 })]), []);
  assert.equal(store.get("T", "a"), undefined);
  assert.deepEqual(store.apply(at(12), [put("a", { y: 1 })]), [
    // Deleted before: it appears again.
    { type: "T", id: "a", op: "put", fields: { y: 1 }, created: true },
  ]);
});

Deno.test("ObjectStore.apply() lets a put replace the object but keep newer fields", () => {
  const store = new ObjectStore();
  store.apply(at(1), [put("a", { x: 1, y: 1 })]);
  store.apply(at(9), [update("a", { z: 9 })]);
  assert.deepEqual(store.apply(at(5), [put("a", { x: 5 })]), [
    // It existed: replaced, not created.
    { type: "T", id: "a", op: "put", fields: { x: 5, z: 9 }, created: false },
  ]);
});

Deno.test("ObjectStore.apply() stores __proto__ as a field, not a prototype", () => {
  const store = new ObjectStore();
  const fields = JSON.parse('{"__proto__": {"polluted": true}}');
  store.apply(at(1), [put("a", fields)]);
  const got = store.get("T", "a")!;
  assert.deepEqual(Object.keys(got), ["__proto__"]);
  assert.equal(Object.getPrototypeOf(got), Object.prototype);
  assert.equal(({} as Record<string, unknown>).polluted, undefined);
});

Deno.test("HlcClock.next() orders after every stamp observed, even with a clock behind", () => {
  let wall = 1000;
  const clock = new HlcClock(7, () => wall);
  const first = clock.next();
  clock.observe({ time: 5000, counter: 3, node: 99 });
  const second = clock.next();
  assert.ok(compareHlc(second, { time: 5000, counter: 3, node: 99 }) > 0);
  assert.ok(compareHlc(second, first) > 0);
  wall = 6000;
  assert.deepEqual(clock.next(), { time: 6000, counter: 0, node: 7 });
});

function randomChangesets(prng: Prng) {
  const nodes = [1, 2, 3];
  const ids = ["a", "b", "c", "d"];
  const changesets: { stamp: Hlc; instructions: Instruction[] }[] = [];
  for (let index = 0; index < 40; index++) {
    const stamp = at(prng.int(20), prng.pick(nodes), prng.int(3));
    const instructions: Instruction[] = [];
    for (const id of prng.shuffle(ids).slice(0, 1 + prng.int(3))) {
      const roll = prng.int(10);
      const fields: Record<string, unknown> = {};
      for (const name of ["x", "y", "z"]) {
        if (prng.int(2)) fields[name] = prng.int(100);
      }
      instructions.push(
        roll < 3 ? put(id, fields) : roll < 8 ? update(id, fields) : del(id),
      );
    }
    changesets.push({ stamp, instructions });
  }
  // Equal stamps come only from one transaction; keep them unique here too.
  const unique = new Map<string, (typeof changesets)[number]>();
  for (const changeset of changesets) {
    const { time, counter, node } = changeset.stamp;
    unique.set(`${time}:${counter}:${node}`, changeset);
  }
  return [...unique.values()];
}

function snapshotOf(store: ObjectStore) {
  const result: unknown[] = [];
  for (const record of store.records()) {
    result.push({
      key: `${record.type}/${record.id}`,
      put: record.putStamp,
      delete: record.deleteStamp,
      fields: [...record.fields].sort(([a], [b]) => a < b ? -1 : 1),
    });
  }
  return result.sort((a, b) =>
    (a as { key: string }).key < (b as { key: string }).key ? -1 : 1
  );
}

Deno.test("ObjectStore.apply() converges whatever the order and repetition (seeded)", () => {
  const seed = testSeed();
  const prng = new Prng(seed);
  for (let round = 0; round < 200; round++) {
    const changesets = randomChangesets(prng);
    const reference = new ObjectStore();
    for (const changeset of changesets) {
      reference.apply(changeset.stamp, changeset.instructions);
    }
    const other = new ObjectStore();
    const replayed = prng.shuffle([...changesets, ...changesets.slice(0, 5)]);
    for (const changeset of replayed) {
      other.apply(changeset.stamp, changeset.instructions);
    }
    assert.deepEqual(
      snapshotOf(other),
      snapshotOf(reference),
      `diverged in round ${round}; rerun with TETHER_SEED=${seed}`,
    );
    // A snapshot of the state, applied to an empty replica, rebuilds it.
    const rebuilt = new ObjectStore();
    for (const record of reference.records()) {
      rebuilt.apply(at(0), recordToInstructions(record));
    }
    assert.deepEqual(
      snapshotOf(rebuilt),
      snapshotOf(reference).filter((entry) =>
        (entry as { put: unknown; delete: unknown; fields: unknown[] }).put !==
          null ||
        (entry as { delete: unknown }).delete !== null ||
        (entry as { fields: unknown[] }).fields.length > 0
      ),
      `snapshot did not rebuild in round ${round}; rerun with TETHER_SEED=${seed}`,
    );
  }
});
