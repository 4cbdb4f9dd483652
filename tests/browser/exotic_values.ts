/**
 * Values of every kind (and the edges of the value order) with queries over
 * them, and a canonical description of results, shared by the browser page
 * and the Deno side of conformance_test.ts so both can be compared as text.
 */
import type { Fields, Query, Realm, Value } from "../../mod.ts";

/** The values, in no particular order: edges of every kind. */
const VALUES: Value[] = [
  -0,
  0,
  NaN,
  Infinity,
  -Infinity,
  1,
  1.5,
  Number.MAX_SAFE_INTEGER,
  1n,
  -(2n ** 64n),
  2n ** 70n,
  "",
  "héllo 🌍",
  "\u0000nul",
  "Z",
  "a",
  new Uint8Array([0, 255]),
  new Uint8Array(0),
  new Date(0),
  new Date(-1),
  null,
  true,
  false,
  [],
  [1, [2, "x"]],
  {},
  { a: { b: [1n, null] } },
];

/** One object per value: `{ v: value, k: index }`, id `x00`… */
export function exoticObjects(): { id: string; fields: Fields }[] {
  return VALUES.map((v, k) => ({
    id: `x${String(k).padStart(2, "0")}`,
    fields: { v, k },
  }));
}

/** Queries whose answers depend on the value order and on equality. */
export const EXOTIC_QUERIES: Query[] = [
  { sort: [["v", "asc"]] },
  { sort: [["v", "desc"]], limit: 9, offset: 4 },
  { where: { v: -0 }, sort: [["k", "asc"]] },
  { where: { v: 0 }, sort: [["k", "asc"]] },
  { where: { v: NaN }, sort: [["k", "asc"]] },
  { where: { v: { in: [1, 1n, "a"] } }, sort: [["k", "asc"]] },
  { where: { v: { gt: 0 } }, sort: [["v", "asc"]] },
  { where: { v: { lt: "b" } }, sort: [["v", "asc"]] },
  { where: { v: { gte: 0n } }, sort: [["v", "desc"]] },
  { where: { v: { ne: null } }, sort: [["k", "desc"]] },
  { where: { v: { eq: null } }, sort: [["k", "asc"]] },
  { where: { v: { gte: new Date(-1) } }, sort: [["v", "asc"]] },
  { where: { v: { eq: new Uint8Array([0, 255]) } } },
  { where: { v: { eq: [1, [2, "x"]] } } },
];

/** A canonical text for a value: every kind and edge distinct. */
export function describe(value: Value | undefined): string {
  if (value === undefined) return "undefined";
  if (value === null) return "null";
  switch (typeof value) {
    case "number":
      return Object.is(value, -0) ? "n:-0" : `n:${value}`;
    case "bigint":
      return `b:${value}`;
    case "string":
      return `s:${JSON.stringify(value)}`;
    case "boolean":
      return `t:${value}`;
  }
  if (value instanceof Uint8Array) return `u8:[${Array.from(value)}]`;
  if (value instanceof Date) return `d:${value.getTime()}`;
  if (Array.isArray(value)) return `[${value.map(describe).join(",")}]`;
  return `{${
    Object.keys(value).sort().map((key) =>
      `${JSON.stringify(key)}:${describe(value[key])}`
    ).join(",")
  }}`;
}

/** Describes one object. */
export function describeObject(object: { id: string; fields: Fields }): string {
  return `${object.id}=${describe(object.fields)}`;
}

/**
 * Every object of `type` described (sorted by id), then each of
 * `EXOTIC_QUERIES` described in its order, with its `count()`.
 */
export function exoticReport(realm: Realm, type: string): string[][] {
  return [
    realm.objects(type).map(describeObject).sort(),
    ...EXOTIC_QUERIES.map((query) => [
      ...realm.objects(type, query).map(describeObject),
      `count ${
        realm.count(
          type,
          query.where === undefined ? {} : {
            where: query.where,
          },
        )
      }`,
    ]),
  ];
}
