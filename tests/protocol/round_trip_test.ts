import assert from "node:assert/strict";
import type { Instruction } from "../../src/model/changeset.ts";
import type { Value } from "../../src/model/value.ts";
import {
  decodeDownloadChangeset,
  decodeMessage,
  decodeUploadChangeset,
} from "../../src/protocol/decode.ts";
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
import { Prng, testSeed } from "../_helpers/prng.ts";
import { randomMessage, wellFormed } from "../_helpers/random_messages.ts";

const STAMP = { time: 1_767_225_600_000, counter: 3, node: 2 ** 48 - 1 };

function roundTrip(message: Message): Message {
  return decodeMessage(encodeMessage(message));
}

/** A DOWNLOAD whose one instruction holds `fields`. */
function downloadOf(fields: { [name: string]: Value }): DownloadMessage {
  return {
    type: MessageType.Download,
    sessionId: 1,
    serverVersion: 2,
    lastIntegratedClientVersion: 3,
    downloadableBytes: 4,
    changesetBytes: 5,
    changesets: [{
      serverVersion: 2,
      stamp: STAMP,
      instructions: [{ op: "put", type: "T", id: "x", fields, stamp: null }],
    }],
  };
}

function fieldsAfterRoundTrip(fields: { [name: string]: Value }): unknown {
  const decoded = roundTrip(downloadOf(fields)) as DownloadMessage;
  return decoded.changesets[0]!.instructions[0]!.fields;
}

Deno.test("decodeMessage() round-trips every message type", async (t) => {
  const instructions: Instruction[] = [
    {
      op: "put",
      type: "Task",
      id: "2f1c9a0e-5b7d-4e23-9c41-7d0b8e6f1a35",
      fields: { title: "Buy milk", done: false },
      stamp: null,
    },
    {
      op: "update",
      type: "Task",
      id: "t2",
      fields: { done: true },
      stamp: STAMP,
    },
    { op: "delete", type: "Note", id: "n1", fields: null, stamp: null },
  ];
  const messages: Message[] = [
    {
      type: MessageType.Handshake,
      minVersion: 1,
      maxVersion: 3,
      accessToken: "eyJhbGciOiJIUzI1NiJ9.e30.c2ln",
    },
    {
      type: MessageType.Bind,
      sessionId: 5,
      path: "/~/todos",
      clientIdentity: null,
      downloadCursor: 0,
      uploadCursor: 0,
    },
    {
      type: MessageType.Bind,
      sessionId: 2 ** 53 - 1,
      path: "/alice/ünïcødé/🌍",
      clientIdentity: { id: 7, salt: 2 ** 53 - 1 },
      downloadCursor: 123_456,
      uploadCursor: 99,
    },
    {
      type: MessageType.Upload,
      sessionId: 1,
      changesets: [
        { clientVersion: 1, baseServerVersion: 0, stamp: STAMP, instructions },
        {
          clientVersion: 2,
          baseServerVersion: 10,
          stamp: { time: 0, counter: 0, node: 0 },
          instructions: [],
        },
      ],
    },
    { type: MessageType.Upload, sessionId: 0, changesets: [] },
    {
      type: MessageType.UploadTooLarge,
      sessionId: 2,
      clientVersion: 2 ** 40,
      changesetBytes: 17_000_000,
      objects: [{ type: "Photo", id: "p1" }, { type: "", id: "é😀" }],
    },
    {
      type: MessageType.UploadTooLarge,
      sessionId: 1,
      clientVersion: 1,
      changesetBytes: 0,
      objects: [],
    },
    { type: MessageType.Mark, sessionId: 1, requestId: 2 ** 40 },
    { type: MessageType.Unbind, sessionId: 3 },
    { type: MessageType.Ping, timestamp: 1234.5678 },
    { type: MessageType.Ping, timestamp: -0 },
    { type: MessageType.Refresh, accessToken: "" },
    { type: MessageType.Received, receivedBytes: 0, timeoutMs: 0 },
    {
      type: MessageType.Received,
      receivedBytes: Number.MAX_SAFE_INTEGER,
      timeoutMs: 120_000,
    },
    {
      type: MessageType.HandshakeReply,
      version: 1,
      userId: "alice",
      maxMessageBytes: 16 * 1024 * 1024,
    },
    {
      type: MessageType.Ident,
      sessionId: 1,
      clientIdentity: { id: 1, salt: 987_654_321 },
    },
    {
      type: MessageType.Download,
      sessionId: 1,
      serverVersion: 10,
      lastIntegratedClientVersion: 2,
      downloadableBytes: 2 ** 40,
      changesetBytes: Number.MAX_SAFE_INTEGER,
      changesets: [{ serverVersion: 10, stamp: STAMP, instructions }],
    },
    {
      type: MessageType.Download,
      sessionId: 1,
      serverVersion: 10,
      lastIntegratedClientVersion: 2,
      downloadableBytes: 0,
      changesetBytes: 0,
      changesets: [],
    },
    { type: MessageType.MarkReply, sessionId: 1, requestId: 0 },
    { type: MessageType.Unbound, sessionId: 3 },
    { type: MessageType.Pong, timestamp: NaN },
    {
      type: MessageType.Error,
      sessionId: null,
      code: 103,
      tryAgain: false,
      message: "Bad token",
    },
    {
      type: MessageType.Error,
      sessionId: 0,
      code: 206,
      tryAgain: true,
      message: "",
    },
    {
      type: MessageType.Reject,
      sessionId: 2,
      clientVersion: 2 ** 40,
      code: 208,
      message: "Refused by validation: title is required",
      revert: [{ serverVersion: 10, stamp: STAMP, instructions }],
    },
  ];
  const seen = new Set<number>();
  for (const message of messages) {
    seen.add(message.type);
    await t.step(`type 0x${message.type.toString(16)}`, () => {
      assert.deepStrictEqual(roundTrip(message), message);
    });
  }
  assert.deepEqual(
    [...seen].sort((a, b) => a - b),
    Object.values(MessageType).sort((a, b) => a - b),
  );
});

Deno.test("decodeMessage() round-trips every value kind and its edge cases", async (t) => {
  const cases: [string, Value][] = [
    ["null", null],
    ["false", false],
    ["true", true],
    ["zero", 0],
    ["negative zero", -0],
    ["NaN", NaN],
    ["Infinity", Infinity],
    ["-Infinity", -Infinity],
    ["127 (last small integer)", 127],
    ["128 (first varuint integer)", 128],
    ["-1", -1],
    ["MAX_SAFE_INTEGER", Number.MAX_SAFE_INTEGER],
    ["MIN_SAFE_INTEGER", Number.MIN_SAFE_INTEGER],
    ["2^53 (beyond safe)", 2 ** 53],
    ["-(2^53) - 2 (beyond safe)", -(2 ** 53) - 2],
    ["fraction", 0.1],
    ["MAX_VALUE", Number.MAX_VALUE],
    ["MIN_VALUE", Number.MIN_VALUE],
    ["bigint 0", 0n],
    ["bigint 2^63 - 1", 2n ** 63n - 1n],
    ["bigint -2^63", -(2n ** 63n)],
    ["bigint 2^64", 2n ** 64n],
    ["bigint -(2^200)", -(2n ** 200n)],
    ["bigint 2^2048 - 1 (largest)", 2n ** 2048n - 1n],
    ["empty string", ""],
    ["ASCII string", "Buy milk"],
    ["Latin-1 and BMP", "héllo 東京"],
    ["astral plane", "🌍 \u{10ffff} 𝄞"],
    ["byte order mark kept", "\ufeffBOM"],
    ["NUL inside", "a\u0000b"],
    ["long string", "é🌍x".repeat(5000)],
    ["canonical UUID", "2f1c9a0e-5b7d-4e23-9c41-7d0b8e6f1a35"],
    ["uppercase UUID stays uppercase", "2F1C9A0E-5B7D-4E23-9C41-7D0B8E6F1A35"],
    ["empty bytes", new Uint8Array(0)],
    ["bytes", new Uint8Array([0, 1, 254, 255])],
    ["large bytes", new Uint8Array(100_000).fill(7)],
    ["date", new Date(1_767_225_600_123)],
    ["epoch", new Date(0)],
    ["date before the epoch", new Date(-86_400_000)],
    ["latest date", new Date(8.64e15)],
    ["earliest date", new Date(-8.64e15)],
    ["invalid date", new Date(NaN)],
    ["empty array", []],
    ["nested arrays", [[[]], [1, [2, [3]]]]],
    ["mixed array", [null, true, 1.5, "s", new Uint8Array([1]), new Date(5)]],
    ["empty object", {}],
    ["nested object", { a: { b: { c: [1, { d: "e" }] } } }],
  ];
  for (const [name, value] of cases) {
    await t.step(name, () => {
      assert.deepStrictEqual(fieldsAfterRoundTrip({ v: value }), { v: value });
    });
  }
});

Deno.test("decodeMessage() keeps __proto__ an ordinary own key", () => {
  const fields: { [name: string]: Value } = JSON.parse(
    '{"__proto__": {"polluted": true}, "inner": {"__proto__": 1}}',
  );
  const decoded = fieldsAfterRoundTrip(fields) as Record<string, unknown>;
  assert.equal(Object.getPrototypeOf(decoded), Object.prototype);
  assert.deepEqual(Object.keys(decoded), ["__proto__", "inner"]);
  assert.deepStrictEqual(
    Object.getOwnPropertyDescriptor(decoded, "__proto__")?.value,
    { polluted: true },
  );
  const inner = decoded.inner as Record<string, unknown>;
  assert.equal(Object.getPrototypeOf(inner), Object.prototype);
  assert.equal(Object.getOwnPropertyDescriptor(inner, "__proto__")?.value, 1);
  assert.equal(({} as Record<string, unknown>).polluted, undefined);
});

Deno.test("decodeMessage() replaces lone surrogates with U+FFFD, as PROTOCOL.md §3.4 states", () => {
  const decoded = fieldsAfterRoundTrip({
    high: "a\ud800b",
    low: "\udc00",
    reversed: "\udc00\ud800",
    ["key\ud800"]: 1,
    // Side by side in the string section, the two lone halves would make
    // one pair (a seeded round trip found it).
    ["ends high\ud800"]: "\udc00starts low",
  });
  assert.deepStrictEqual(decoded, {
    high: "a\ufffdb",
    low: "\ufffd",
    reversed: "\ufffd\ufffd",
    ["key\ufffd"]: 1,
    ["ends high\ufffd"]: "\ufffdstarts low",
  });
  const bind = roundTrip({
    type: MessageType.Bind,
    sessionId: 1,
    path: "/\udbff/x",
    clientIdentity: null,
    downloadCursor: 0,
    uploadCursor: 0,
  });
  assert.equal((bind as { path: string }).path, "/\ufffd/x");
});

Deno.test("decodeMessage() gives byte arrays that are views into the frame", () => {
  const frame = encodeMessage(downloadOf({ a: new Uint8Array([1, 2, 3]) }));
  const decoded = decodeMessage(frame) as DownloadMessage;
  const bytes = decoded.changesets[0]!.instructions[0]!.fields!.a as Uint8Array;
  assert.deepStrictEqual(bytes, new Uint8Array([1, 2, 3]));
  assert.equal(bytes.buffer, frame.buffer);
});

Deno.test("decodeDownloadChangeset() gives byte arrays that do not alias the stored bytes", () => {
  const stored = encodeDownloadChangeset(
    downloadOf({ a: new Uint8Array([1, 2, 3]) }).changesets[0]!,
  );
  const decoded = decodeDownloadChangeset(stored);
  stored.fill(0);
  assert.deepStrictEqual(
    decoded.instructions[0]!.fields!.a,
    new Uint8Array([1, 2, 3]),
  );
});

Deno.test("decodeMessage() builds instructions with one stable shape", () => {
  const frame = encodeMessage(downloadOf({ a: 1 }));
  const instruction = (decodeMessage(frame) as DownloadMessage).changesets[0]!
    .instructions[0]!;
  assert.deepEqual(Object.keys(instruction), [
    "op",
    "type",
    "id",
    "fields",
    "stamp",
  ]);
});

Deno.test("encodeUploadChangeset() and decodeUploadChangeset() round-trip a stored changeset", () => {
  const changeset = {
    clientVersion: 12,
    baseServerVersion: 40,
    stamp: STAMP,
    instructions: [
      {
        op: "put" as const,
        type: "Task",
        id: "a",
        fields: { n: 1, when: new Date(3) },
        stamp: null,
      },
      {
        op: "put" as const,
        type: "Task",
        id: "b",
        fields: { n: 2, when: new Date(4) },
        stamp: null,
      },
    ],
  };
  const bytes = encodeUploadChangeset(changeset);
  assert.deepStrictEqual(decodeUploadChangeset(bytes), changeset);
});

Deno.test("encodeDownloadChangeset() and decodeDownloadChangeset() round-trip a stored changeset", () => {
  const changeset = {
    serverVersion: 99,
    stamp: STAMP,
    instructions: [
      {
        op: "update" as const,
        type: "T",
        id: "x",
        fields: { s: "é", b: new Uint8Array([9]) },
        stamp: { time: 1, counter: 2, node: 3 },
      },
      { op: "delete" as const, type: "T", id: "y", fields: null, stamp: null },
    ],
  };
  const bytes = encodeDownloadChangeset(changeset);
  assert.deepStrictEqual(decodeDownloadChangeset(bytes), changeset);
});

Deno.test("decodeMessage() round-trips seeded random messages", () => {
  const seed = testSeed();
  const random = new Prng(seed);
  for (let iteration = 0; iteration < 2_000; iteration++) {
    const message = randomMessage(random);
    let decoded: Message;
    try {
      decoded = roundTrip(message);
      assert.deepStrictEqual(decoded, wellFormed(message));
    } catch (error) {
      throw new Error(
        `Random message ${iteration} failed with seed ${seed} (rerun with TETHER_SEED=${seed}): ${
          error instanceof Error ? error.message : String(error)
        }`,
        { cause: error },
      );
    }
  }
});
