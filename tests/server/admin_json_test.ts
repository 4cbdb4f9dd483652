import assert from "node:assert/strict";
import {
  AdminJsonError,
  decodeAdminValue,
  encodeAdminFields,
  encodeAdminValue,
  parseWriteBody,
} from "../../src/server/admin_json.ts";
import type { Value } from "../../src/model/value.ts";

// Through JSON text and back, as the admin routes carry values.
const roundTrip = (value: Value): Value =>
  decodeAdminValue(JSON.parse(JSON.stringify(encodeAdminValue(value))), "v");

Deno.test("encodeAdminValue() and decodeAdminValue() carry every value a realm stores through JSON text", () => {
  const values: Value[] = [
    null,
    true,
    false,
    0,
    1.5,
    -42,
    Number.MAX_SAFE_INTEGER,
    -0,
    NaN,
    Infinity,
    -Infinity,
    "",
    "héllo 🌍",
    0n,
    -(2n ** 63n),
    2n ** 2047n,
    new Uint8Array(),
    new Uint8Array([0, 1, 2, 253, 254, 255]),
    new Uint8Array(70_000).fill(7),
    new Date(0),
    new Date(8.64e15),
    new Date(-8.64e15),
    new Date(NaN),
    [],
    [1, "two", [3n, new Date(5)]],
    {},
    { nested: { deeper: [new Uint8Array([1])] } },
    // Plain objects that look like tags are wrapped, not misread.
    { $date: "2026-01-01T00:00:00.000Z" },
    { $bigint: "1" },
    { $object: {} },
    { $date: "x", other: 1 },
    { ["__proto__"]: 1 } as Value,
  ];
  for (const value of values) {
    assert.deepEqual(roundTrip(value), value, `${String(value)}`);
  }
  assert.ok(Object.is(roundTrip(-0), -0));
  const proto = JSON.parse('{"__proto__": {"polluted": true}}');
  const decoded = decodeAdminValue(proto, "v") as Record<string, Value>;
  assert.equal(Object.getPrototypeOf(decoded), Object.prototype);
  assert.deepEqual(Object.keys(decoded), ["__proto__"]);
  assert.equal(({} as Record<string, unknown>).polluted, undefined);

  assert.deepEqual(encodeAdminValue(new Date(Date.UTC(2026, 0, 31, 12))), {
    $date: "2026-01-31T12:00:00.000Z",
  });
  assert.deepEqual(encodeAdminValue(12345678901234567890n), {
    $bigint: "12345678901234567890",
  });
  assert.deepEqual(encodeAdminValue(new Uint8Array([104, 105, 255])), {
    $bytes: "aGn/",
  });
  assert.deepEqual(encodeAdminFields({ a: 1n, b: [new Date(0)] }), {
    a: { $bigint: "1" },
    b: [{ $date: "1970-01-01T00:00:00.000Z" }],
  });
  // Dates with offsets, fractions and dates alone are read too.
  assert.deepEqual(
    decodeAdminValue({ $date: "2026-01-31T13:00:00.123456+01:00" }, "v"),
    new Date(Date.UTC(2026, 0, 31, 12, 0, 0, 123)),
  );
  assert.deepEqual(
    decodeAdminValue({ $date: "2026-01-31" }, "v"),
    new Date(Date.UTC(2026, 0, 31)),
  );
  assert.deepEqual(
    decodeAdminValue({ $bytes: "aGk" }, "v"),
    new Uint8Array([104, 105]),
  );
});

Deno.test("decodeAdminValue() refuses malformed tags and deep nesting, naming the field", () => {
  let deep: unknown = 1;
  for (let level = 0; level < 40; level++) deep = [deep];
  const cases: Array<[unknown, string]> = [
    [
      { $date: "yesterday" },
      "Invalid f.$date: must be an ISO 8601 date-time string such as 2026-01-31T12:00:00.000Z",
    ],
    [{ $date: "2026-13-01" }, 'Invalid f.$date: "2026-13-01" is no date'],
    [
      { $date: 5 },
      "Invalid f.$date: must be an ISO 8601 date-time string such as 2026-01-31T12:00:00.000Z",
    ],
    [
      { $bigint: 5 },
      "Invalid f.$bigint: must be a string of decimal digits, with an optional leading -",
    ],
    [
      { $bigint: "1.5" },
      "Invalid f.$bigint: must be a string of decimal digits, with an optional leading -",
    ],
    [
      { $bigint: "007" },
      "Invalid f.$bigint: must be a string of decimal digits, with an optional leading -",
    ],
    [
      { $bigint: (2n ** 2048n).toString() },
      "Invalid f.$bigint: is larger than a realm stores (256 bytes)",
    ],
    [{ $bytes: "not base64!" }, "Invalid f.$bytes: must be a base64 string"],
    [{ $bytes: "a" }, "Invalid f.$bytes: must be a base64 string"],
    [
      { $number: "1" },
      'Invalid f.$number: must be "NaN", "Infinity", "-Infinity" or "-0"',
    ],
    [{ $object: [] }, "Invalid f.$object: must be an object"],
    [
      { $set: 1 },
      'Invalid f: has the unknown tag "$set" ($date, $bigint, $bytes, $number or $object; wrap a plain object whose only key starts with $ in {"$object": …})',
    ],
    [
      [1, { $date: "x" }],
      "Invalid f[1].$date: must be an ISO 8601 date-time string such as 2026-01-31T12:00:00.000Z",
    ],
    [
      { "a b": { $bytes: "?" } },
      'Invalid f["a b"].$bytes: must be a base64 string',
    ],
    [deep, "Invalid f" + "[0]".repeat(32) + ": nests deeper than 32 levels"],
    [undefined, "Invalid f: is undefined, not JSON"],
  ];
  for (const [json, message] of cases) {
    assert.throws(
      () => decodeAdminValue(json, "f"),
      (error: unknown) =>
        error instanceof AdminJsonError && error.message === message &&
        message.startsWith(`Invalid ${error.field}:`),
      message,
    );
  }
});

Deno.test("parseWriteBody() decodes put, update and delete changes", () => {
  assert.deepEqual(
    parseWriteBody({
      changes: [
        {
          op: "put",
          type: "Task",
          id: "t9",
          fields: {
            title: "From the backend",
            due: { $date: "2026-02-01T00:00:00Z" },
          },
        },
        {
          op: "update",
          type: "Task",
          id: "t1",
          fields: { done: true, n: { $bigint: "-3" } },
        },
        { op: "delete", type: "Task", id: "t2" },
      ],
    }),
    [
      {
        op: "put",
        type: "Task",
        id: "t9",
        fields: {
          title: "From the backend",
          due: new Date(Date.UTC(2026, 1, 1)),
        },
      },
      { op: "update", type: "Task", id: "t1", fields: { done: true, n: -3n } },
      { op: "delete", type: "Task", id: "t2" },
    ],
  );
});

Deno.test("parseWriteBody() refuses bad bodies with a message naming the bad field", () => {
  const put = (extra: Record<string, unknown>) => ({
    changes: [{ op: "put", type: "Task", id: "t1", fields: {}, ...extra }],
  });
  const cases: Array<[unknown, string]> = [
    [null, 'Invalid body: must be an object {"changes": [...]}'],
    [[], 'Invalid body: must be an object {"changes": [...]}'],
    [{}, "Invalid changes: must be an array"],
    [{ changes: [] }, "Invalid changes: is empty"],
    [
      { changes: [], extra: 1 },
      'Invalid body.extra: is not expected; the body is {"changes": [...]}',
    ],
    [
      { changes: [5] },
      "Invalid changes[0]: must be an object {op, type, id, fields}",
    ],
    [
      put({ op: "upsert" }),
      'Invalid changes[0].op: must be "put", "update" or "delete"',
    ],
    [put({ type: "" }), "Invalid changes[0].type: must be a non-empty string"],
    [put({ id: 7 }), "Invalid changes[0].id: must be a non-empty string"],
    [
      put({ id: "é".repeat(257) }),
      "Invalid changes[0].id: is longer than 512 bytes of UTF-8",
    ],
    [
      put({ fields: [] }),
      "Invalid changes[0].fields: must be an object for put",
    ],
    [
      put({ fields: undefined }),
      "Invalid changes[0].fields: must be an object for put",
    ],
    [
      put({ extra: true }),
      "Invalid changes[0].extra: is not expected (op, type, id, fields)",
    ],
    [
      { changes: [{ op: "delete", type: "T", id: "x", fields: {} }] },
      "Invalid changes[0].fields: is not expected on a delete",
    ],
    [
      put({ fields: { due: { $date: "tomorrow" } } }),
      "Invalid changes[0].fields.due.$date: must be an ISO 8601 date-time string such as 2026-01-31T12:00:00.000Z",
    ],
    [
      {
        changes: [
          { op: "delete", type: "T", id: "a" },
          {
            op: "update",
            type: "T",
            id: "b",
            fields: { list: [1, { $bytes: "%%" }] },
          },
        ],
      },
      "Invalid changes[1].fields.list[1].$bytes: must be a base64 string",
    ],
  ];
  for (const [body, message] of cases) {
    assert.throws(
      () => parseWriteBody(body),
      (error: unknown) =>
        error instanceof AdminJsonError && error.message === message,
      message,
    );
  }
  assert.throws(
    () =>
      parseWriteBody(
        {
          changes: [{ op: "delete", type: "T", id: "a" }, {
            op: "delete",
            type: "T",
            id: "b",
          }],
        },
        { maxChanges: 1 },
      ),
    new AdminJsonError("changes", "holds 2 changes; at most 1 go in one write"),
  );
});

Deno.test("decodeAdminValue() takes base64 of megabytes and checks it exactly, and refuses what a realm cannot store, naming the field", () => {
  const MiB = 1024 * 1024;
  // 6 MiB: a regular expression over this much text once overflowed.
  const large = decodeAdminValue({ $bytes: "AAEC".repeat(2 * MiB) }, "f");
  assert.ok(large instanceof Uint8Array);
  assert.equal(large.length, 6 * MiB);
  assert.deepEqual(large.subarray(0, 3), new Uint8Array([0, 1, 2]));
  for (const good of ["", "AQ==", "AQ", "AQI=", "AQI", "AQID", "+/+/"]) {
    assert.ok(decodeAdminValue({ $bytes: good }, "f") instanceof Uint8Array);
  }
  for (
    const bad of ["A", "AQ=", "A===", "AQ ID", "AQ-_", "AQI==", "=", "AQ==AQ=="]
  ) {
    assert.throws(
      () => decodeAdminValue({ $bytes: bad }, "f"),
      (error: unknown) =>
        error instanceof AdminJsonError && error.field === "f.$bytes",
      bad,
    );
  }
  assert.throws(
    () => decodeAdminValue({ $bytes: "AAAA".repeat((8 * MiB + 1) / 3) }, "f"),
    (error: unknown) =>
      error instanceof AdminJsonError && error.field === "f.$bytes" &&
      /more than a realm stores/.test(error.message),
  );
  assert.throws(
    () => decodeAdminValue({ list: ["x".repeat(MiB + 1)] }, "f"),
    (error: unknown) =>
      error instanceof AdminJsonError && error.field === "f.list[0]",
  );
  assert.equal(decodeAdminValue("x".repeat(MiB), "f"), "x".repeat(MiB));
});
