import assert from "node:assert/strict";
import { compileQuery, type Row, runQuery } from "../../src/model/query.ts";
import { compareValues, valueKind } from "../../src/model/value_order.ts";
import type { Fields, Value } from "../../src/model/value.ts";

/** Two or more values of every stored kind. */
const SAMPLES: Value[] = [
  null,
  false,
  true,
  NaN,
  -0,
  0,
  2,
  1n,
  5n,
  "",
  "m",
  "z",
  new Uint8Array([1]),
  new Uint8Array([2, 0]),
  new Date(0),
  new Date(1000),
  [1],
  [1, 2],
  { a: 1 },
  { a: 2 },
];

function matches(where: unknown, fields: Fields): boolean {
  return compileQuery({ where }).matches(fields);
}

function operand(value: Value): Value {
  return value;
}

/** The contract, written out per operator from the value order. */
function expected(op: string, value: Value | undefined, x: Value): boolean {
  if (value === undefined) return (op === "eq" && x === null) || op === "ne";
  const same = valueKind(value) === valueKind(x);
  const order = compareValues(value, x);
  switch (op) {
    case "eq":
      return order === 0;
    case "ne":
      return order !== 0;
    case "gt":
      return same && order > 0;
    case "gte":
      return same && order >= 0;
    case "lt":
      return same && order < 0;
    case "lte":
      return same && order <= 0;
  }
  throw new Error(op);
}

Deno.test("every operator × every value kind follows the value order, with range operators bracketed by kind", () => {
  for (const op of ["eq", "ne", "gt", "gte", "lt", "lte"]) {
    for (const x of SAMPLES) {
      for (const value of [...SAMPLES, undefined]) {
        const fields: Fields = value === undefined ? {} : { f: value };
        assert.equal(
          matches({ f: { [op]: operand(x) } }, fields),
          expected(op, value, x),
          `${op} ${String(x)} on ${String(value)}`,
        );
      }
    }
  }
});

Deno.test("in matches values equal to one of its list, of any kind; never a missing field", () => {
  const list: Value[] = [-0, 1n, "m", new Date(0), [1], { a: 1 }, null];
  for (const value of SAMPLES) {
    const want = list.some((x) => compareValues(x, value) === 0);
    assert.equal(
      matches({ f: { in: list } }, { f: value }),
      want,
      String(value),
    );
  }
  assert.equal(matches({ f: { in: list } }, {}), false);
  assert.equal(matches({ f: { in: [] } }, { f: 1 }), false);
});

/**
 * Primitive operands, which compile to `===` and `typeof` tests (docs/
 * PERFORMANCE.md "Fifth pass"), and values around them: zeros, NaN,
 * infinities, negative bigints, prefixes of strings.
 */
const PRIMITIVES: Value[] = [
  null,
  false,
  true,
  NaN,
  -Infinity,
  -2,
  -0,
  0,
  0.5,
  2,
  Infinity,
  -1n,
  0n,
  2n,
  "",
  "a",
  "ab",
  "b",
];

Deno.test("specialised matchers: every operator on a primitive operand (zeros, NaN, bigints, strings) agrees with the value order on every kind, and on missing and inherited fields", () => {
  const values: (Value | undefined)[] = [...PRIMITIVES, ...SAMPLES, undefined];
  for (const op of ["eq", "ne", "gt", "gte", "lt", "lte"]) {
    for (const x of PRIMITIVES) {
      const compiled = compileQuery({ where: { f: { [op]: x } } });
      const shorthand = op === "eq" ? compileQuery({ where: { f: x } }) : null;
      for (const value of values) {
        const fields: Fields = value === undefined ? {} : { f: value };
        const want = expected(op, value, x);
        const label = `${op} ${String(x)} on ${
          Object.is(value, -0) ? "-0" : String(value)
        }`;
        assert.equal(compiled.matches(fields), want, label);
        if (shorthand !== null) {
          assert.equal(shorthand.matches(fields), want, `shorthand ${label}`);
        }
      }
      // Members every plain object inherits are missing fields.
      for (const field of ["constructor", "toString", "__proto__"]) {
        assert.equal(
          compileQuery({ where: { [field]: { [op]: x } } }).matches({}),
          expected(op, undefined, x),
          `${op} ${String(x)} on an inherited ${field}`,
        );
      }
    }
  }
  // Two conditions on one field, the second tighter: both hold.
  const range = compileQuery({ where: { f: { gt: -2, lt: 2, lte: 0.5 } } });
  for (const value of values) {
    const want = expected("gt", value, -2) && expected("lt", value, 2) &&
      expected("lte", value, 0.5);
    assert.equal(range.matches(value === undefined ? {} : { f: value }), want);
  }
});

Deno.test("in on primitive lists (with and without zeros, NaN, null, bigints) agrees with the value order; never a missing or inherited field", () => {
  const lists: Value[][] = [
    [1, 2, 3],
    ["a", "b"],
    [NaN, 2],
    [null, "a"],
    [0, 2],
    [-0],
    [0n, -1n, 2],
    [true],
    [false, 0, ""],
    [],
  ];
  const values: (Value | undefined)[] = [...PRIMITIVES, ...SAMPLES, 1, 3, 1n];
  for (const list of lists) {
    const compiled = compileQuery({ where: { f: { in: list } } });
    for (const value of values) {
      const want = value !== undefined &&
        list.some((x) => compareValues(x, value) === 0);
      assert.equal(
        compiled.matches(value === undefined ? {} : { f: value }),
        want,
        `in ${list.map(String)} on ${
          Object.is(value, -0) ? "-0" : String(value)
        }`,
      );
    }
    assert.equal(compiled.matches({}), false);
    for (const field of ["constructor", "toString", "__proto__"]) {
      assert.equal(
        compileQuery({ where: { [field]: { in: list } } }).matches({}),
        false,
        `in on an inherited ${field}`,
      );
    }
  }
});

Deno.test("shorthand equality: scalars, dates and bytes; -0, 1n and NaN are exact", () => {
  assert.ok(matches({ f: 0 }, { f: 0 }));
  assert.ok(!matches({ f: 0 }, { f: -0 }));
  assert.ok(matches({ f: -0 }, { f: -0 }));
  assert.ok(!matches({ f: 1 }, { f: 1n }));
  assert.ok(matches({ f: NaN }, { f: NaN }));
  assert.ok(matches({ f: new Date(5) }, { f: new Date(5) }));
  assert.ok(matches({ f: new Uint8Array([1]) }, { f: new Uint8Array([1]) }));
  assert.ok(!matches({ f: "1" }, { f: 1 }));
  assert.ok(matches({ f: { eq: [1, { b: 2 }] } }, { f: [1, { b: 2 }] }));
  assert.ok(matches({ f: { eq: { a: 1, b: 2 } } }, { f: { b: 2, a: 1 } }));
});

Deno.test("a missing field matches only eq: null and ne", () => {
  assert.ok(matches({ f: null }, {}));
  assert.ok(matches({ f: { eq: null } }, {}));
  assert.ok(matches({ f: { ne: 1 } }, {}));
  assert.ok(matches({ f: { ne: null } }, {}), "ne matches every missing field");
  assert.ok(!matches({ f: { ne: null } }, { f: null }));
  for (const op of ["eq", "gt", "gte", "lt", "lte"]) {
    assert.ok(!matches({ f: { [op]: 0 } }, {}), op);
  }
  assert.ok(!matches({ f: { gte: null } }, {}));
  assert.ok(matches({ f: { gte: null } }, { f: null }));
  // A field inherited from Object.prototype is missing, not a function.
  assert.ok(matches({ toString: null }, {}));
  assert.ok(matches({ constructor: null }, {}));
  assert.ok(matches({ constructor: 1 }, { constructor: 1 }));
  // `__proto__` reads the prototype unless the object has its own.
  const own: Fields = {};
  Object.defineProperty(own, "__proto__", {
    value: 2,
    enumerable: true,
    writable: true,
    configurable: true,
  });
  assert.ok(matches({ ["__proto__"]: null }, {}), "no own __proto__");
  assert.ok(!matches({ ["__proto__"]: { gte: null } }, {}));
  assert.ok(matches({ ["__proto__"]: 2 }, own), "an own __proto__");
  assert.ok(!matches({ ["__proto__"]: null }, own));
});

Deno.test("range operators bracket by kind: { lt: 5 } never matches null, strings or bigints", () => {
  for (const value of [null, "a", 1n, false, new Date(0), [1]] as Value[]) {
    assert.ok(!matches({ f: { lt: 5 } }, { f: value }), String(value));
  }
  assert.ok(matches({ f: { lt: 5 } }, { f: -Infinity }));
  assert.ok(matches({ f: { lt: 5 } }, { f: NaN }), "NaN is the lowest number");
  assert.ok(matches({ f: { gt: "a" } }, { f: "b" }));
  assert.ok(matches({ f: { gte: 2, lt: 5 } }, { f: 2 }));
  assert.ok(!matches({ f: { gte: 2, lt: 5 } }, { f: 5 }));
  assert.ok(matches({ f: { gt: new Date(0) } }, { f: new Date(1) }));
});

Deno.test("$and, $or, $not combine; an entry list is a conjunction", () => {
  const task = { done: false, priority: 3, owner: "ann" };
  assert.ok(matches({ done: false, priority: { gte: 3 } }, task));
  assert.ok(!matches({ done: false, priority: { gt: 3 } }, task));
  assert.ok(matches({ $or: [{ priority: 9 }, { owner: "ann" }] }, task));
  assert.ok(!matches({ $or: [{ priority: 9 }, { owner: "bob" }] }, task));
  assert.ok(matches({ $and: [{ done: false }, { owner: "ann" }] }, task));
  assert.ok(matches({ $not: { owner: "bob" } }, task));
  assert.ok(!matches({ $not: { owner: "ann" } }, task));
  assert.ok(matches({ $not: { missing: { gt: 1 } } }, task));
  assert.ok(matches({ $and: [] }, task));
  assert.ok(!matches({ $or: [] }, task));
  assert.ok(
    matches({
      $or: [{ $and: [{ done: true }] }, { $not: { $not: { priority: 3 } } }],
    }, task),
  );
});

function rows(...list: [string, Fields][]): Row[] {
  return list.map(([id, fields]) => ({ id, fields }));
}

Deno.test("sort: keys in order, desc per key, ties by id ascending whatever the direction, missing first", () => {
  const data = rows(
    ["c", { p: 1, t: "x" }],
    ["a", { p: 2, t: "y" }],
    ["b", { p: 1, t: "x" }],
    ["d", { t: "z" }],
    ["e", { p: 2, t: "a" }],
  );
  const ids = (query: unknown) =>
    runQuery(compileQuery(query), data).map((r) => r.id);
  assert.deepEqual(ids({ sort: [["p", "asc"]] }), ["d", "b", "c", "a", "e"]);
  assert.deepEqual(ids({ sort: [["p", "desc"]] }), ["a", "e", "b", "c", "d"]);
  assert.deepEqual(ids({ sort: [["p", "desc"], ["t", "asc"]] }), [
    "e",
    "a",
    "b",
    "c",
    "d",
  ]);
  assert.deepEqual(ids({}), ["a", "b", "c", "d", "e"], "without sort: by id");
  assert.deepEqual(ids({ sort: [] }), ["a", "b", "c", "d", "e"]);
  assert.deepEqual(ids({ sort: [["p", "asc"]], offset: 1, limit: 2 }), [
    "b",
    "c",
  ]);
  assert.deepEqual(ids({ sort: [["p", "asc"]], offset: 4, limit: 5 }), ["e"]);
  assert.deepEqual(ids({ offset: 9 }), []);
  assert.deepEqual(ids({ limit: 0 }), []);
  assert.deepEqual(ids({ where: { p: { gte: 2 } }, sort: [["t", "asc"]] }), [
    "e",
    "a",
  ]);
});

Deno.test("sort across kinds follows the value order (-0 before 0, numbers before bigints)", () => {
  const data = rows(["a", { v: 1n }], ["b", { v: 0 }], ["c", { v: -0 }], ["d", {
    v: "s",
  }], ["e", { v: null }]);
  assert.deepEqual(
    runQuery(compileQuery({ sort: [["v", "asc"]] }), data).map((r) => r.id),
    ["e", "c", "b", "a", "d"],
  );
});

/** `[<hole>, item]`: a sparse array, which `map` and `every` skip. */
function holey(item: unknown): unknown[] {
  const list: unknown[] = [];
  list[1] = item;
  return list;
}

/** `{ f: 1 }` inside `levels` combinators. */
function nested(combinator: string, levels: number): Record<string, unknown> {
  let where: Record<string, unknown> = { f: 1 };
  for (let level = 0; level < levels; level++) {
    where = { [combinator]: combinator === "$not" ? where : [where] };
  }
  return where;
}

Deno.test("combinators nest up to 100 levels deep", () => {
  const deep = compileQuery({ where: nested("$and", 100) });
  assert.ok(deep.matches({ f: 1 }));
  assert.deepEqual(deep.indexable.map((c) => c.field), ["f"]);
  assert.ok(compileQuery({ where: nested("$not", 100) }).matches({ f: 1 }));
  assert.ok(!compileQuery({ where: nested("$not", 99) }).matches({ f: 1 }));
});

Deno.test("a malformed query throws a TypeError naming the offending part", () => {
  const cases: [unknown, RegExp][] = [
    // Holes are undefined where a value or a filter is expected (a hole in
    // `in` once matched every missing field; in $and, $or or sort it threw
    // a bare TypeError when matching or sorting).
    [{ where: { f: { in: holey(1) } } }, /where\.f\.in\[0\] must be a value/],
    [{ where: { $and: holey({ f: 1 }) } }, /where\.\$and\[0\] must be a plain/],
    [{ where: { $or: holey({ f: 1 }) } }, /where\.\$or\[0\] must be a plain/],
    [{ sort: holey(["f", "asc"]) }, /sort\[0\] must be a \[field/],
    // A bad part deep inside an operand is named, not the whole operand.
    [
      { where: { f: { eq: { a: [1, () => 1] } } } },
      /where\.f\.eq\.a\[1\] must be a value.*function/,
    ],
    [{ where: { f: { eq: holey(1) } } }, /where\.f\.eq\[0\].*hole/],
    // Combinators nest at most 100 levels (thousands overflowed the stack).
    [
      { where: nested("$not", 101) },
      /where(\.\$not){101} nests combinators over 100 levels deep/,
    ],
    [{ where: nested("$and", 101) }, /where(\.\$and\[0\]){101} nests/],
    [{ where: nested("$or", 5000) }, /where(\.\$or\[0\]){101} nests/],
    [{ where: { priority: { between: [1, 2] } } }, /where\.priority\.between/],
    [{ where: { priority: {} } }, /where\.priority has no operator/],
    [{ where: { tags: [1, 2] } }, /where\.tags is an array/],
    [{ where: { f: () => 1 } }, /where\.f must be a value.*function/],
    [
      { where: { f: { eq: () => 1 } } },
      /where\.f\.eq must be a value.*function/,
    ],
    [{ where: { f: { in: 3 } } }, /where\.f\.in must be an array/],
    [{ where: { f: { in: [1, undefined] } } }, /where\.f\.in\[1\]/],
    [{ where: { f: undefined } }, /where\.f must be a value/],
    [{ where: { f: Symbol("x") } }, /where\.f must be a value/],
    [{ where: { f: new Map() } }, /where\.f must be a value.*Map/],
    [{ where: () => true }, /where must be a plain object, got a function/],
    [{ where: [] }, /where must be a plain object/],
    [{ where: { $nor: [] } }, /where\.\$nor is not a combinator/],
    [{ where: { $and: {} } }, /where\.\$and must be an array/],
    [
      { where: { $or: [{ a: { gt: 1 } }, { b: { nope: 1 } }] } },
      /where\.\$or\[1\]\.b\.nope/,
    ],
    [{ where: { $not: [] } }, /where\.\$not must be a plain object/],
    [{ where: { "my field": { x: 1 } } }, /where\["my field"\]\.x/],
    [{ sort: "title" }, /sort must be an array/],
    [{ sort: ["title", "asc"] }, /sort\[0\] must be a \[field/],
    [{ sort: [["title", "up"]] }, /sort\[0\]\[1\] must be "asc" or "desc"/],
    [
      { sort: [["title", "asc"], [3, "asc"]] },
      /sort\[1\]\[0\] must be a field name/,
    ],
    [{ limit: -1 }, /limit must be a non-negative integer, got -1/],
    [{ limit: 1.5 }, /limit must be a non-negative integer/],
    [{ limit: "5" }, /limit must be a non-negative integer/],
    [{ offset: NaN }, /offset must be a non-negative integer/],
    [{ filter: {} }, /filter is not an option/],
    [() => true, /the query must be a plain object, got a function/],
  ];
  for (const [query, message] of cases) {
    assert.throws(() => compileQuery(query), (error: unknown) => {
      assert.ok(error instanceof TypeError, String(error));
      assert.match(error.message, message);
      return true;
    });
  }
});

Deno.test("indexable conditions come from the top-level conjunction only", () => {
  const fields = (query: unknown) =>
    compileQuery(query).indexable.map((c) => `${c.field}:${c.op}`);
  assert.deepEqual(
    fields({
      where: {
        a: 1,
        b: { in: [1] },
        c: { gt: 1, lte: 5 },
        d: { ne: 1 },
        $and: [{ e: 2 }],
      },
    }),
    ["a:eq", "b:in", "c:range", "e:eq"],
  );
  assert.deepEqual(fields({ where: { $or: [{ a: 1 }], $not: { b: 1 } } }), []);
});
