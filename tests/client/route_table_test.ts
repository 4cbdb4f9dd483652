// The live queries' route tables: each lookup gives the answer of one map
// keyed by valueKey (a missing field as null), whichever place (boolean
// slot, small-integer array, map by value, map by key) a value takes.
import assert from "node:assert/strict";
import { RouteTable, SMALL_INTEGERS } from "../../src/client/route_table.ts";
import type { Fields, Value } from "../../src/model/value.ts";
import { valueKey } from "../../src/model/value_order.ts";
import { Prng, testSeed } from "../_helpers/prng.ts";

/**
 * Values on each side of every place's edge: zeros, the array's ends and
 * just past them, non-integers, NaN, numbers beside bigints and strings of
 * the same digits, booleans, and the kinds only the key map takes.
 */
const VALUES: (Value | undefined)[] = [
  undefined,
  null,
  -0,
  0,
  1,
  2,
  SMALL_INTEGERS - 1,
  SMALL_INTEGERS,
  SMALL_INTEGERS + 1,
  -1,
  2 ** 31,
  2 ** 32,
  -(2 ** 31),
  0.5,
  1.5,
  NaN,
  Infinity,
  -Infinity,
  0n,
  1n,
  BigInt(SMALL_INTEGERS - 1),
  "",
  "0",
  "1",
  true,
  false,
  new Date(0),
  new Date(1),
  new Uint8Array([1]),
  [1],
  { a: 1 },
];

/** The answer a lookup must give: the queries routed by valueKey. */
class Reference {
  #byKey = new Map<string, number[]>();

  add(values: readonly Value[], query: number): void {
    for (const value of values) {
      const list = this.#byKey.get(valueKey(value)) ?? [];
      if (!list.includes(query)) list.push(query);
      this.#byKey.set(valueKey(value), list);
    }
  }

  remove(values: readonly Value[], query: number): void {
    for (const value of values) {
      const list = this.#byKey.get(valueKey(value)) ?? [];
      const at = list.indexOf(query);
      if (at !== -1) list.splice(at, 1);
      if (list.length === 0) this.#byKey.delete(valueKey(value));
    }
  }

  lookup(value: Value | undefined): number[] | undefined {
    return this.#byKey.get(valueKey(value ?? null));
  }

  get size(): number {
    let size = 0;
    for (const list of this.#byKey.values()) size += list.length;
    return size;
  }
}

function label(value: Value | undefined): string {
  if (value === undefined) return "missing";
  if (Object.is(value, -0)) return "-0";
  return typeof value === "bigint" ? `${value}n` : String(value);
}

function checkAll(
  table: RouteTable<number>,
  reference: Reference,
  at: string,
): void {
  for (const value of VALUES) {
    const fields: Fields = value === undefined ? { other: 1 } : { f: value };
    const got = table.lookup(fields);
    const want = reference.lookup(value);
    assert.deepEqual(
      got === undefined ? [] : [...got].sort(),
      want === undefined ? [] : [...want].sort(),
      `${at}: lookup of ${label(value)}`,
    );
  }
  assert.equal(table.size, reference.size, `${at}: size`);
}

Deno.test("RouteTable.lookup() gives the queries routed by the value's key for every value kind, as routes come and go", () => {
  const seed = testSeed();
  const prng = new Prng(seed);
  for (let round = 0; round < 50; round++) {
    const table = new RouteTable<number>("f");
    const reference = new Reference();
    const routes = new Map<number, Value[]>();
    for (let step = 0; step < 40; step++) {
      const at = `seed ${seed} round ${round} step ${step}`;
      const query = prng.int(8);
      const values = routes.get(query);
      if (values !== undefined) {
        table.remove(values, query);
        reference.remove(values, query);
        routes.delete(query);
      } else {
        // One to four values (a value listed twice is routed once); a
        // missing field is not a value a query can require.
        const chosen = Array.from(
          { length: 1 + prng.int(4) },
          () => prng.pick(VALUES.slice(1)) as Value,
        );
        table.add(chosen, query);
        reference.add(chosen, query);
        routes.set(query, chosen);
      }
      checkAll(table, reference, at);
    }
    for (const [query, values] of routes) {
      table.remove(values, query);
      reference.remove(values, query);
    }
    checkAll(table, reference, `seed ${seed} round ${round} emptied`);
    assert.equal(table.size, 0);
  }
});

Deno.test("RouteTable keeps 0 and -0, 1 and 1n, and true and 1 apart, and routes a missing field as null", () => {
  const table = new RouteTable<string>("f");
  table.add([0], "zero");
  table.add([-0], "minus zero");
  table.add([1], "one");
  table.add([1n], "big one");
  table.add([true], "true");
  table.add([null], "null");
  table.add([SMALL_INTEGERS - 1, SMALL_INTEGERS], "edges");
  assert.deepEqual(table.lookup({ f: 0 }), ["zero"]);
  assert.deepEqual(table.lookup({ f: -0 }), ["minus zero"]);
  assert.deepEqual(table.lookup({ f: 1 }), ["one"]);
  assert.deepEqual(table.lookup({ f: 1n }), ["big one"]);
  assert.deepEqual(table.lookup({ f: true }), ["true"]);
  assert.equal(table.lookup({ f: false }), undefined);
  assert.deepEqual(table.lookup({}), ["null"]);
  assert.deepEqual(table.lookup({ f: null }), ["null"]);
  assert.deepEqual(table.lookup({ f: SMALL_INTEGERS - 1 }), ["edges"]);
  assert.deepEqual(table.lookup({ f: SMALL_INTEGERS }), ["edges"]);
  assert.equal(table.lookup({ f: SMALL_INTEGERS - 2 }), undefined);
  assert.equal(table.lookup({ f: 2 }), undefined);
  table.remove([SMALL_INTEGERS - 1, SMALL_INTEGERS], "edges");
  assert.equal(table.lookup({ f: SMALL_INTEGERS - 1 }), undefined);
  assert.equal(table.lookup({ f: SMALL_INTEGERS }), undefined);
  assert.deepEqual(table.lookup({ f: 1 }), ["one"]);
  assert.equal(table.size, 6);
});
