import assert from "node:assert/strict";
import {
  compareValues,
  valueKey,
  ValueKind,
  valueKind,
} from "../../src/model/value_order.ts";
import type { Value } from "../../src/model/value.ts";

/** Values in their documented order, lowest first, all distinct. */
const ORDERED: Value[] = [
  null,
  false,
  true,
  NaN,
  -Infinity,
  -1.5,
  -0,
  0,
  1,
  Infinity,
  -(2n ** 70n),
  -1n,
  0n,
  1n,
  "",
  "A",
  "B",
  "a",
  "ab",
  "b",
  "\uffff",
  new Uint8Array([]),
  new Uint8Array([0]),
  new Uint8Array([0, 0]),
  new Uint8Array([1]),
  new Uint8Array([255]),
  new Date(NaN),
  new Date(-1),
  new Date(0),
  new Date(1),
  [],
  [null],
  [1],
  [1, 2],
  [1, "a"],
  [2],
  ["a"],
  [[1]],
  {},
  { a: null },
  { a: 1 },
  { a: 1, b: 1 },
  { a: 2 },
  { b: 0 },
];

Deno.test("compareValues() orders kinds null < boolean < number < bigint < string < bytes < date < array < object", () => {
  const kinds = ORDERED.map(valueKind);
  for (let i = 1; i < kinds.length; i++) assert.ok(kinds[i - 1]! <= kinds[i]!);
  assert.deepEqual([...new Set(kinds)], [
    ValueKind.Null,
    ValueKind.Boolean,
    ValueKind.Number,
    ValueKind.BigInt,
    ValueKind.String,
    ValueKind.Bytes,
    ValueKind.Date,
    ValueKind.Array,
    ValueKind.Object,
  ]);
});

Deno.test("compareValues() is a strict total order over distinct stored values, in the documented order", () => {
  for (let i = 0; i < ORDERED.length; i++) {
    for (let j = 0; j < ORDERED.length; j++) {
      const order = Math.sign(compareValues(ORDERED[i]!, ORDERED[j]!));
      assert.equal(
        order,
        Math.sign(i - j),
        `compare(${String(ORDERED[i])}, ${String(ORDERED[j])})`,
      );
    }
  }
  const shuffled = [...ORDERED].reverse();
  shuffled.sort(compareValues);
  assert.deepEqual(shuffled, ORDERED);
});

Deno.test("compareValues(): -0 is not 0, 1 is not 1n, NaN equals NaN, equal composites are equal", () => {
  assert.ok(compareValues(-0, 0) < 0);
  assert.notEqual(compareValues(1, 1n), 0);
  assert.ok(compareValues(1, 1n) < 0, "every number before every bigint");
  assert.ok(compareValues(10, 1n) < 0);
  assert.equal(compareValues(NaN, NaN), 0);
  assert.equal(compareValues(new Date(5), new Date(5)), 0);
  assert.equal(
    compareValues(new Uint8Array([1, 2]), new Uint8Array([1, 2])),
    0,
  );
  assert.equal(compareValues({ a: 1, b: [2] }, { b: [2], a: 1 }), 0);
  assert.notEqual(compareValues([0], [-0]), 0);
  assert.notEqual(compareValues("1", 1), 0);
  assert.notEqual(compareValues(new Date(0), 0), 0);
  assert.notEqual(compareValues(new Uint8Array([97]), "a"), 0);
});

Deno.test("valueKey() is equal exactly when compareValues() says equal", () => {
  const values: Value[] = [
    ...ORDERED,
    NaN,
    new Date(0),
    { b: 1, a: 1 },
    [1, 2],
    new Uint8Array([0]),
    "n1",
    "z",
    "b1",
    "f",
  ];
  for (const a of values) {
    for (const b of values) {
      assert.equal(
        valueKey(a) === valueKey(b),
        compareValues(a, b) === 0,
        `${String(a)} vs ${String(b)}`,
      );
    }
  }
});
