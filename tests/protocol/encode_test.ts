import assert from "node:assert/strict";
import type { Instruction } from "../../src/model/changeset.ts";
import type { Value } from "../../src/model/value.ts";
import { decodeMessage } from "../../src/protocol/decode.ts";
import {
  encodeDownloadChangeset,
  encodeMessage,
  encodeUploadChangeset,
} from "../../src/protocol/encode.ts";
import {
  type DownloadMessage,
  type Message,
  MessageType,
} from "../../src/protocol/messages.ts";
import { ProtocolError } from "../../src/protocol/protocol_error.ts";
import { Writer } from "../../src/protocol/writer.ts";

const STAMP = { time: 1, counter: 0, node: 1 };

function downloadOf(instructions: Instruction[]): DownloadMessage {
  return {
    type: MessageType.Download,
    sessionId: 1,
    serverVersion: 1,
    lastIntegratedClientVersion: 0,
    downloadableBytes: 0,
    changesetBytes: 0,
    changesets: [{ serverVersion: 1, stamp: STAMP, instructions }],
  };
}

function withField(value: unknown): DownloadMessage {
  return downloadOf([{
    op: "put",
    type: "T",
    id: "x",
    fields: { v: value as Value },
    stamp: null,
  }]);
}

function assertUnencodable(message: unknown, text: string): void {
  assert.throws(
    () => encodeMessage(message as Message),
    (error: unknown) => {
      assert.ok(
        error instanceof ProtocolError,
        `not a ProtocolError: ${error}`,
      );
      assert.equal(error.code, "unencodable_value");
      assert.equal(error.message, text);
      assert.equal(error.offset, -1);
      return true;
    },
  );
}

Deno.test("encodeMessage() rejects values outside the data model with unencodable_value", async (t) => {
  class Point {
    x = 1;
  }
  const cyclic: Record<string, unknown> = {};
  cyclic.self = cyclic;
  const cyclicArray: unknown[] = [];
  cyclicArray.push(cyclicArray);
  let deep: unknown = null;
  for (let depth = 0; depth < 33; depth++) deep = [deep];
  const cases: [string, unknown, string][] = [
    [
      "undefined",
      undefined,
      'Cannot encode value: undefined in field "v" is not a storable value',
    ],
    [
      "a function",
      () => 1,
      "Cannot encode value: a function is not a storable value",
    ],
    [
      "a symbol",
      Symbol("s"),
      "Cannot encode value: a symbol is not a storable value",
    ],
    [
      "a class instance",
      new Point(),
      "Cannot encode value: an instance of Point is not a storable value",
    ],
    [
      "a Map",
      new Map(),
      "Cannot encode value: an instance of Map is not a storable value",
    ],
    [
      "a Uint16Array",
      new Uint16Array(2),
      "Cannot encode value: an instance of Uint16Array is not a storable value",
    ],
    [
      "an ArrayBuffer",
      new ArrayBuffer(2),
      "Cannot encode value: an instance of ArrayBuffer is not a storable value",
    ],
    [
      "undefined in an array",
      [1, undefined],
      "Cannot encode value: undefined (or a hole) in an array is not a storable value",
    ],
    // deno-lint-ignore no-sparse-arrays
    [
      "a sparse array",
      [1, , 3],
      "Cannot encode value: undefined (or a hole) in an array is not a storable value",
    ],
    [
      "undefined in an object",
      { a: undefined },
      'Cannot encode value: undefined in key "a" is not a storable value',
    ],
    [
      "a cycle through an object",
      cyclic,
      "Cannot encode value: nesting deeper than the depth limit (or a cycle) is not a storable value",
    ],
    [
      "a cycle through an array",
      cyclicArray,
      "Cannot encode value: nesting deeper than the depth limit (or a cycle) is not a storable value",
    ],
    [
      "nesting over 32 levels",
      deep,
      "Cannot encode value: nesting deeper than the depth limit (or a cycle) is not a storable value",
    ],
    [
      "a bigint over 256 bytes",
      2n ** 2048n,
      "Cannot encode value: a bigint of 257 bytes (limit 256) is not a storable value",
    ],
  ];
  for (const [name, value, text] of cases) {
    await t.step(name, () => assertUnencodable(withField(value), text));
  }
});

Deno.test("encodeMessage() accepts 32 levels of nesting, the most a decoder accepts", () => {
  let deep: Value = null;
  for (let depth = 0; depth < 32; depth++) deep = [deep];
  const message = withField(deep);
  assert.deepStrictEqual(decodeMessage(encodeMessage(message)), message);
});

Deno.test("encodeMessage() accepts null-prototype objects as plain objects", () => {
  const object = Object.create(null) as Record<string, Value>;
  object.a = 1;
  const decoded = decodeMessage(
    encodeMessage(withField(object)),
  ) as DownloadMessage;
  assert.deepEqual(decoded.changesets[0]!.instructions[0]!.fields, {
    v: { a: 1 },
  });
});

Deno.test("encodeMessage() rejects integers outside the wire ranges", () => {
  assertUnencodable(
    { type: MessageType.Unbind, sessionId: -1 },
    "Cannot encode varint: -1 is not an integer in [0, 2^53 - 1]",
  );
  assertUnencodable(
    { type: MessageType.Unbind, sessionId: 1.5 },
    "Cannot encode varint: 1.5 is not an integer in [0, 2^53 - 1]",
  );
  assertUnencodable(
    { type: MessageType.Unbind, sessionId: 2 ** 53 },
    "Cannot encode varint: 9007199254740992 is not an integer in [0, 2^53 - 1]",
  );
  assertUnencodable(
    { type: MessageType.Unbind, sessionId: NaN },
    "Cannot encode varint: NaN is not an integer in [0, 2^53 - 1]",
  );
});

Deno.test("encodeMessage() rejects stamps out of range", () => {
  for (
    const stamp of [
      { time: 2 ** 48, counter: 0, node: 1 },
      { time: 1, counter: 65536, node: 1 },
      { time: 1, counter: 0, node: 2 ** 48 },
    ]
  ) {
    assert.throws(
      () =>
        encodeMessage({
          ...downloadOf([]),
          changesets: [{ serverVersion: 1, stamp, instructions: [] }],
        }),
      (error: unknown) =>
        error instanceof ProtocolError && error.code === "unencodable_value" &&
        error.message ===
          `Cannot encode stamp: (${stamp.time}, ${stamp.counter}, ${stamp.node}) is out of range`,
    );
  }
});

Deno.test("encodeMessage() rejects malformed instructions and message types", () => {
  assertUnencodable(
    downloadOf([
      { op: "upsert", type: "T", id: "x", fields: {}, stamp: null } as never,
    ]),
    "Cannot encode instruction: unknown op upsert",
  );
  assertUnencodable(
    downloadOf([
      { op: "put", type: 1, id: "x", fields: {}, stamp: null } as never,
    ]),
    "Cannot encode instruction: type and id must be strings",
  );
  assertUnencodable(
    downloadOf([
      {
        op: "put",
        type: "T",
        id: "x",
        fields: new Map(),
        stamp: null,
      } as never,
    ]),
    "Cannot encode instruction: fields must be a plain object",
  );
  assertUnencodable(
    { type: 0x99 },
    "Cannot encode message: unknown type 153",
  );
});

Deno.test("encodeMessage() recovers after a failed encode", () => {
  assert.throws(() => encodeMessage(withField(() => 1)), ProtocolError);
  const message = withField("after");
  assert.deepStrictEqual(decodeMessage(encodeMessage(message)), message);
});

Deno.test("encodeMessage() never writes into a frame it returned earlier", () => {
  const frames: [Uint8Array, Message][] = [];
  for (let index = 0; index < 3_000; index++) {
    const message = withField("x".repeat(index % 700));
    const frame = encodeMessage(message);
    frames.push([frame.slice(), message]);
    frames.push([frame, message]);
  }
  for (let index = 0; index < frames.length; index += 2) {
    assert.deepStrictEqual(frames[index + 1]![0], frames[index]![0]);
  }
});

Deno.test("encodeMessage() returns frames in buffers of their own", () => {
  for (
    const frame of [
      encodeMessage({ type: MessageType.Unbind, sessionId: 1 }),
      encodeMessage(withField("y".repeat(10_000))),
    ]
  ) {
    assert.equal(frame.byteOffset, 0);
    assert.equal(frame.buffer.byteLength, frame.length);
  }
});

Deno.test("encodeMessage() with a writer of one's own returns a view into it until its next use", () => {
  const writer = new Writer(64);
  const messages = [
    withField("x".repeat(1_000)),
    { type: MessageType.Unbind, sessionId: 7 },
    withField(new Uint8Array(300)),
  ] as Message[];
  for (const message of messages) {
    const frame = encodeMessage(message, writer);
    assert.equal(frame.buffer, writer.bytes.buffer);
    assert.equal(frame.byteOffset, 0);
    assert.deepStrictEqual(frame, encodeMessage(message));
    assert.deepStrictEqual(decodeMessage(frame), message);
  }
  const first = encodeMessage(
    { type: MessageType.Unbind, sessionId: 1 },
    writer,
  );
  encodeMessage({ type: MessageType.Unbind, sessionId: 2 }, writer);
  assert.deepEqual([...first], [MessageType.Unbind, 2]);
});

Deno.test("encodeMessage() works when called again from inside a value's getter", () => {
  const inner = withField("inner");
  let innerFrame: Uint8Array | undefined;
  const fields = {
    get v(): Value {
      innerFrame = encodeMessage(inner);
      return "outer";
    },
  };
  const outer = downloadOf([
    { op: "put", type: "T", id: "x", fields, stamp: null },
  ]);
  const decoded = decodeMessage(encodeMessage(outer)) as DownloadMessage;
  assert.deepEqual(decoded.changesets[0]!.instructions[0]!.fields, {
    v: "outer",
  });
  assert.deepStrictEqual(decodeMessage(innerFrame!), inner);
});

Deno.test("encodeMessage() ignores keys added to Object.prototype", () => {
  const prototype = Object.prototype as Record<string, unknown>;
  prototype.injected = "bad";
  try {
    const message = withField({ a: 1 });
    const decoded = decodeMessage(encodeMessage(message)) as DownloadMessage;
    const fields = decoded.changesets[0]!.instructions[0]!.fields!;
    assert.deepEqual(Object.keys(fields), ["v"]);
    assert.deepEqual(Object.keys(fields.v as object), ["a"]);
  } finally {
    delete prototype.injected;
  }
});

Deno.test("encodeMessage() writes a canonical UUID as 16 bytes and anything else as text", () => {
  const uuid = "2f1c9a0e-5b7d-4e23-9c41-7d0b8e6f1a35";
  const asUuid = encodeDownloadChangeset({
    serverVersion: 1,
    stamp: STAMP,
    instructions: [{
      op: "delete",
      type: "T",
      id: uuid,
      fields: null,
      stamp: null,
    }],
  });
  const asText = encodeDownloadChangeset({
    serverVersion: 1,
    stamp: STAMP,
    instructions: [
      {
        op: "delete",
        type: "T",
        id: uuid.toUpperCase(),
        fields: null,
        stamp: null,
      },
    ],
  });
  assert.equal(asText.length - asUuid.length, 36 - 16);
});

Deno.test("encodeMessage() interns repeated names and ids and reuses field lists", () => {
  const instructions: Instruction[] = Array.from(
    { length: 100 },
    (_, index) => ({
      op: "update",
      type: "Task",
      id: `task-${index % 10}`,
      fields: { title: "t", done: index % 2 === 0 },
      stamp: null,
    }),
  );
  const frame = encodeMessage(downloadOf(instructions));
  // Once the ten ids are in the table, an instruction is 6 bytes: header,
  // id reference, "t" (tag, length, 1 byte of string section) and `done`.
  // Writing the names each time would take over 20 more.
  assert.ok(
    frame.length <= 100 * 6 + 10 * 8 + 20,
    `frame is ${frame.length} bytes`,
  );
  assert.deepStrictEqual(decodeMessage(frame), downloadOf(instructions));
});

Deno.test("encodeUploadChangeset() and encodeDownloadChangeset() return buffers of their own", () => {
  const upload = encodeUploadChangeset({
    clientVersion: 1,
    baseServerVersion: 0,
    stamp: STAMP,
    instructions: [],
  });
  const download = encodeDownloadChangeset({
    serverVersion: 1,
    stamp: STAMP,
    instructions: [],
  });
  for (const bytes of [upload, download]) {
    assert.equal(bytes.byteOffset, 0);
    assert.equal(bytes.buffer.byteLength, bytes.length);
  }
});

Deno.test("encodeMessage() writes instructions with 128 fields and more", () => {
  for (const count of [127, 128, 200, 20_000]) {
    const fields: Record<string, Value> = {};
    for (let index = 0; index < count; index++) fields[`f${index}`] = index;
    const message = downloadOf([
      { op: "put", type: "T", id: "a", fields, stamp: null },
      { op: "put", type: "T", id: "b", fields, stamp: null },
      {
        op: "put",
        type: "T",
        id: "c",
        fields: { ...fields, extra: 1 },
        stamp: null,
      },
    ]);
    assert.deepStrictEqual(decodeMessage(encodeMessage(message)), message);
  }
});
