import assert from "node:assert/strict";
import {
  decodeDownloadChangeset,
  decodeMessage,
} from "../../src/protocol/decode.ts";
import { encodeMessage } from "../../src/protocol/encode.ts";
import type { Limits } from "../../src/protocol/limits.ts";
import { MessageType } from "../../src/protocol/messages.ts";
import {
  ProtocolError,
  type ProtocolErrorCode,
} from "../../src/protocol/protocol_error.ts";

/** Asserts that decoding `frame` throws exactly this ProtocolError. */
function assertRejects(
  frame: number[] | Uint8Array,
  code: ProtocolErrorCode,
  message: string,
  limits?: Partial<Limits>,
): void {
  assert.throws(
    () => decodeMessage(Uint8Array.from(frame), limits),
    (error: unknown) => {
      assert.ok(
        error instanceof ProtocolError,
        `not a ProtocolError: ${error}`,
      );
      assert.equal(error.name, "ProtocolError");
      assert.equal(error.code, code);
      assert.equal(error.message, message);
      return true;
    },
  );
}

const utf8 = (text: string): number[] => [...new TextEncoder().encode(text)];

/**
 * A DOWNLOAD frame (session 1, versions 0) around a block: `structure`,
 * then the byte section `blobs`, then the string section `strings`. The
 * structure starts at offset 10.
 */
function download(
  strings: string | number[],
  blobs: number[],
  structure: number[],
): number[] {
  const length = structure.length;
  return [
    MessageType.Download,
    1,
    0,
    0,
    0,
    0,
    length & 0xff,
    (length >> 8) & 0xff,
    (length >> 16) & 0xff,
    length >>> 24,
    ...structure,
    blobs.length,
    ...blobs,
    ...(typeof strings === "string" ? utf8(strings) : strings),
  ];
}

/**
 * A DOWNLOAD of one changeset with one put of type "T", id "x" and one
 * field "v" holding the value bytes `value`; `strings` and `blobs` are
 * appended to the sections for the value to use.
 */
function withValue(value: number[], strings = "", blobs: number[] = []) {
  return download(`Txv${strings}`, blobs, [
    1, // one changeset
    9, // serverVersion
    1,
    0,
    1, // stamp
    1, // one instruction
    0x00, // put
    0x04, // type: new, 1 unit → "T"
    0x04, // id: new, 1 unit → "x"
    1, // one field
    0x04, // name: new, 1 unit → "v"
    ...value,
  ]);
}

/** A DOWNLOAD of one changeset with the given instruction bytes. */
function withInstructions(strings: string, count: number, bytes: number[]) {
  return download(strings, [], [1, 9, 1, 0, 1, count, ...bytes]);
}

Deno.test("decodeMessage() accepts the hand-built frames these tests start from", () => {
  const decoded = decodeMessage(Uint8Array.from(withValue([0x85])));
  assert.deepStrictEqual(decoded, {
    type: MessageType.Download,
    sessionId: 1,
    serverVersion: 0,
    lastIntegratedClientVersion: 0,
    downloadableBytes: 0,
    changesetBytes: 0,
    changesets: [{
      serverVersion: 9,
      stamp: { time: 1, counter: 0, node: 1 },
      instructions: [{
        op: "put",
        type: "T",
        id: "x",
        fields: { v: 5 },
        stamp: null,
      }],
    }],
  });
});

Deno.test("decodeMessage() rejects an unknown message type", () => {
  assertRejects(
    [0x30],
    "unknown_message",
    "Cannot decode message: unknown type 0x30 at offset 0",
  );
  assertRejects(
    [0x00],
    "unknown_message",
    "Cannot decode message: unknown type 0x00 at offset 0",
  );
});

Deno.test("decodeMessage() rejects a compressed frame: it must be inflated first", () => {
  assertRejects(
    [MessageType.Download | 0x80, 0x01],
    "unknown_message",
    "Cannot decode message: compressed frame (tag 0xc3); decompress it first",
  );
});

Deno.test("decodeMessage() rejects an empty frame", () => {
  assertRejects(
    [],
    "truncated",
    "Cannot decode message: need 1 bytes at offset 0, 0 left",
  );
});

Deno.test("decodeMessage() rejects an unknown value tag", () => {
  assertRejects(
    withValue([0x0f]),
    "unknown_value",
    "Cannot decode value: unknown tag 0x0f at offset 21",
  );
  assertRejects(
    withValue([0x7f]),
    "unknown_value",
    "Cannot decode value: unknown tag 0x7f at offset 21",
  );
});

Deno.test("decodeMessage() rejects a varint longer than 8 bytes", () => {
  assertRejects(
    [MessageType.Unbind, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00],
    "varint_too_long",
    "Cannot decode varint: more than 8 bytes at offset 1",
  );
});

Deno.test("decodeMessage() accepts a padded varint of up to 8 bytes", () => {
  assert.deepStrictEqual(
    decodeMessage(
      Uint8Array.from([MessageType.Unbind, 0x85, 0x80, 0x80, 0x00]),
    ),
    { type: MessageType.Unbind, sessionId: 5 },
  );
});

Deno.test("decodeMessage() rejects a varint above 2^53 - 1", () => {
  // 2^53 − 1 itself is accepted.
  assert.deepStrictEqual(
    decodeMessage(
      Uint8Array.from([
        MessageType.Unbind,
        ...[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f],
      ]),
    ),
    { type: MessageType.Unbind, sessionId: Number.MAX_SAFE_INTEGER },
  );
  assertRejects(
    [MessageType.Unbind, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x10],
    "integer_out_of_range",
    "Cannot decode varint: value exceeds 2^53 - 1 at offset 1",
  );
  assertRejects(
    [MessageType.Unbind, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f],
    "integer_out_of_range",
    "Cannot decode varint: value exceeds 2^53 - 1 at offset 1",
  );
});

Deno.test("decodeMessage() rejects a frame over maxMessageBytes before reading it", () => {
  const frame = encodeMessage({
    type: MessageType.Refresh,
    accessToken: "x".repeat(100),
  });
  assertRejects(
    frame,
    "length_over_limit",
    "Cannot decode message: length 102 exceeds limit 101",
    { maxMessageBytes: 101 },
  );
  assert.equal(
    decodeMessage(frame, { maxMessageBytes: 102 }).type,
    MessageType.Refresh,
  );
});

Deno.test("decodeMessage() rejects lengths over their limits", async (t) => {
  await t.step("inline string", () => {
    assertRejects(
      [MessageType.Refresh, 0x05, ...utf8("token")],
      "length_over_limit",
      "Cannot decode string length: 5 exceeds limit 4 at offset 1",
      { maxStringBytes: 4 },
    );
  });
  await t.step("string in a block", () => {
    assertRejects(
      withValue([0x08, 0x05], "hello"),
      "length_over_limit",
      "Cannot decode string length: 5 exceeds limit 4 at offset 21",
      { maxStringBytes: 4 },
    );
  });
  await t.step("string-table string in a block", () => {
    assertRejects(
      withInstructions("Tlong-id", 1, [0x02, 0x04, 0x0e]),
      "length_over_limit",
      "Cannot decode string length: 6 exceeds limit 5 at offset 18",
      { maxStringBytes: 5 },
    );
  });
  await t.step("byte array", () => {
    assertRejects(
      withValue([0x09, 0x03], "", [1, 2, 3]),
      "length_over_limit",
      "Cannot decode byte array length: 3 exceeds limit 2 at offset 21",
      { maxBytesLength: 2 },
    );
  });
  await t.step("changeset count", () => {
    assertRejects(
      download("", [], [3]),
      "length_over_limit",
      "Cannot decode changeset count: 3 exceeds limit 2 at offset 10",
      { maxChangesets: 2 },
    );
  });
  await t.step("instruction count", () => {
    assertRejects(
      withInstructions("", 3, []),
      "length_over_limit",
      "Cannot decode instruction count: 3 exceeds limit 2 at offset 15",
      { maxInstructions: 2 },
    );
  });
  await t.step("field count", () => {
    assertRejects(
      withInstructions("Tx", 1, [0x00, 0x04, 0x04, 0x03]),
      "length_over_limit",
      "Cannot decode field count: 3 exceeds limit 2 at offset 19",
      { maxCollectionLength: 2 },
    );
  });
  await t.step("array length", () => {
    assertRejects(
      withValue([0x0d, 0x03, 0x80, 0x80, 0x80]),
      "length_over_limit",
      "Cannot decode array length: 3 exceeds limit 2 at offset 22",
      { maxCollectionLength: 2 },
    );
  });
  await t.step("object size", () => {
    assertRejects(
      withValue([0x0e, 0x03]),
      "length_over_limit",
      "Cannot decode object size: 3 exceeds limit 2 at offset 22",
      { maxCollectionLength: 2 },
    );
  });
  await t.step("bigint", () => {
    assertRejects(
      withValue([0x06, 0x81, 0x02]),
      "length_over_limit",
      "Cannot decode bigint length: 257 exceeds limit 256 at offset 21",
    );
  });
});

Deno.test("decodeMessage() rejects huge declared lengths and counts before allocating", async (t) => {
  // Each frame is a few bytes that claim up to 2^53 − 1 items or bytes:
  // they must fail on the check, never on an allocation.
  const huge = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f];
  await t.step("structure", () => {
    assertRejects(
      [MessageType.Download, 1, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff],
      "truncated",
      "Cannot decode changesets: structure length 4294967295 exceeds the 0 bytes left at offset 6",
    );
  });
  await t.step("byte section", () => {
    assertRejects(
      [MessageType.Download, 1, 0, 0, 0, 0, 0, 0, 0, 0, ...huge],
      "truncated",
      "Cannot decode byte section: length 9007199254740991 exceeds the 0 bytes left at offset 10",
    );
  });
  await t.step("changeset count", () => {
    assertRejects(
      download("", [], [...huge]),
      "length_over_limit",
      "Cannot decode changeset count: 9007199254740991 exceeds limit 100000 at offset 10",
    );
  });
  await t.step("UPLOAD_TOO_LARGE object count", () => {
    assertRejects(
      [MessageType.UploadTooLarge, 1, 1, 0, ...huge],
      "length_over_limit",
      "Cannot decode object count: 9007199254740991 exceeds limit 1000000 at offset 4",
    );
    // 100 objects of two empty strings need 200 bytes.
    assertRejects(
      [MessageType.UploadTooLarge, 1, 1, 0, 100, 0, 0],
      "truncated",
      "Cannot decode object count: 100 items cannot fit in 2 bytes at offset 5",
    );
  });
  await t.step("a count the frame cannot hold", () => {
    assertRejects(
      download("", [], [0x90, 0x4e]),
      "truncated",
      "Cannot decode changeset count: 10000 items cannot fit in 0 bytes at offset 12",
    );
    assertRejects(
      withInstructions("", 100, [0x00]),
      "truncated",
      "Cannot decode instruction count: 100 items cannot fit in 1 bytes at offset 16",
    );
    assertRejects(
      withValue([0x0d, 0xe8, 0x07, 0x80]),
      "truncated",
      "Cannot decode array length: 1000 items cannot fit in 1 bytes at offset 24",
    );
    assertRejects(
      withValue([0x0e, 0x02, 0x05, 0x80]),
      "truncated",
      "Cannot decode object size: 2 items cannot fit in 2 bytes at offset 23",
    );
  });
  await t.step("inline string", () => {
    assertRejects(
      [MessageType.Refresh, 0x80, 0x80, 0x40],
      "truncated",
      "Cannot decode message: need 1048576 bytes at offset 4, 0 left",
    );
  });
  await t.step("string from the string section", () => {
    assertRejects(
      withValue([0x08, 0x80, 0x80, 0x40]),
      "truncated",
      "Cannot decode string: 1048576 code units needed, 0 left in the string section at offset 21",
    );
  });
  await t.step("byte array", () => {
    assertRejects(
      withValue([0x09, 0x80, 0x80, 0x80, 0x04]),
      "truncated",
      "Cannot decode byte array: 8388608 bytes needed, 0 left in the byte section at offset 21",
    );
  });
});

Deno.test("decodeMessage() rejects nesting deeper than maxDepth", () => {
  const nested = (depth: number) => [
    ...Array.from({ length: depth }, () => [0x0d, 0x01]).flat(),
    0x00,
  ];
  assert.deepStrictEqual(
    (decodeMessage(Uint8Array.from(withValue(nested(3))), {
      maxDepth: 3,
    }) as { changesets: { instructions: { fields: unknown }[] }[] })
      .changesets[0]!.instructions[0]!.fields,
    { v: [[[null]]] },
  );
  assertRejects(
    withValue(nested(4)),
    "depth_over_limit",
    "Cannot decode value: nesting exceeds limit 3 at offset 27",
    { maxDepth: 3 },
  );
  assertRejects(
    withValue(nested(33)),
    "depth_over_limit",
    "Cannot decode value: nesting exceeds limit 32 at offset 85",
  );
});

Deno.test("decodeMessage() rejects trailing bytes", async (t) => {
  await t.step("after the message", () => {
    assertRejects(
      [MessageType.Unbind, 0x01, 0x00],
      "trailing_bytes",
      "Cannot decode message: 1 bytes left over at offset 2",
    );
  });
  await t.step("unused string section", () => {
    assertRejects(
      withValue([0x85], "extra"),
      "trailing_bytes",
      "Cannot decode changesets: 5 code units of the string section unused",
    );
  });
  await t.step("unused byte section", () => {
    assertRejects(
      withValue([0x85], "", [1, 2]),
      "trailing_bytes",
      "Cannot decode changesets: 2 bytes of the byte section unused",
    );
  });
  await t.step("left in a block's structure", () => {
    // No changesets, then a byte the structure's length still covers.
    assertRejects(
      download("", [], [0, 7]),
      "trailing_bytes",
      "Cannot decode changesets: 1 bytes of the structure left over at offset 11",
    );
  });
  await t.step("in a stored changeset's string section", () => {
    assert.throws(
      () =>
        decodeDownloadChangeset(
          Uint8Array.from([5, 0, 0, 0, 9, 1, 0, 1, 0, 0, 0x41]),
        ),
      (error: unknown) =>
        error instanceof ProtocolError && error.code === "trailing_bytes" &&
        error.message ===
          "Cannot decode changesets: 1 code units of the string section unused",
    );
  });
});

Deno.test("decodeMessage() rejects bad string references", async (t) => {
  await t.step("an index past the table", () => {
    assertRejects(
      withInstructions("T", 1, [0x02, 0x04, 0x03]),
      "bad_reference",
      "Cannot decode string reference: index 1 exceeds table size 1 at offset 18",
    );
    assertRejects(
      withInstructions("", 1, [0x02, 0x01]),
      "bad_reference",
      "Cannot decode string reference: index 0 exceeds table size 0 at offset 17",
    );
  });
  await t.step("SAME_TYPE on the first instruction", () => {
    assertRejects(
      withInstructions("x", 1, [0x0a, 0x04]),
      "bad_reference",
      'Cannot decode instruction: "same type" with no previous instruction at offset 16',
    );
  });
  await t.step("SAME_FIELDS with no earlier fields for the type", () => {
    assertRejects(
      withInstructions("Tx", 1, [0x10, 0x04, 0x04]),
      "bad_reference",
      'Cannot decode instruction: "same fields" with no earlier fields for type "T" at offset 16',
    );
  });
});

Deno.test("decodeMessage() rejects bad instruction headers", () => {
  assertRejects(
    withInstructions("Tx", 1, [0x03, 0x04, 0x04]),
    "unknown_instruction",
    "Cannot decode instruction: bad header 0x03 at offset 16",
  );
  assertRejects(
    withInstructions("Tx", 1, [0x20, 0x04, 0x04]),
    "unknown_instruction",
    "Cannot decode instruction: bad header 0x20 at offset 16",
  );
  assertRejects(
    withInstructions("Tx", 1, [0x12, 0x04, 0x04]),
    "unknown_instruction",
    "Cannot decode instruction: bad header 0x12 at offset 16",
  );
});

Deno.test("decodeMessage() rejects a HANDSHAKE with bad magic", () => {
  assertRejects(
    [MessageType.Handshake, 0x54, 0x54, 0x48, 0x53, 1, 1, 0],
    "bad_magic",
    "Cannot decode handshake: bad magic at offset 4",
  );
  assertRejects(
    [MessageType.Handshake, ...utf8("GET ")],
    "bad_magic",
    "Cannot decode handshake: bad magic at offset 1",
  );
});

Deno.test("decodeMessage() rejects invalid UTF-8", async (t) => {
  const invalid: [string, number[]][] = [
    ["a stray continuation byte", [0x80]],
    ["an overlong form", [0xc0, 0xaf]],
    ["an encoded surrogate", [0xed, 0xa0, 0x80]],
    ["a code point above U+10FFFF", [0xf4, 0x90, 0x80, 0x80]],
    ["a truncated sequence", [0xe2, 0x82]],
  ];
  for (const [name, bytes] of invalid) {
    await t.step(`inline: ${name}`, () => {
      assertRejects(
        [MessageType.Refresh, bytes.length, ...bytes],
        "invalid_utf8",
        "Cannot decode string: invalid UTF-8 at offset 2",
      );
    });
    await t.step(`string section: ${name}`, () => {
      assertRejects(
        download(bytes, [], [0]),
        "invalid_utf8",
        "Cannot decode string: invalid UTF-8 at offset 12",
      );
    });
  }
  await t.step("a block string that ends inside a surrogate pair", () => {
    // "🌍" is two UTF-16 units; the structure cuts it in half.
    assertRejects(
      withValue([0x0d, 0x02, 0x08, 0x01, 0x08, 0x01], "🌍"),
      "invalid_utf8",
      "Cannot decode string: it starts inside a surrogate pair at offset 25",
    );
  });
});

Deno.test("decodeMessage() rejects stamps out of range", async (t) => {
  const stamp = (time: number[], counter: number[], node: number[]) =>
    download("", [], [1, 9, ...time, ...counter, ...node, 0]);
  await t.step("time above 2^48 - 1", () => {
    assertRejects(
      stamp([0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x40], [0], [1]),
      "invalid_field",
      "Cannot decode stamp: time 281474976710656 exceeds 281474976710655 at offset 12",
    );
  });
  await t.step("counter above 65535", () => {
    assertRejects(
      stamp([1], [0x80, 0x80, 0x04], [1]),
      "invalid_field",
      "Cannot decode stamp: counter 65536 exceeds 65535 at offset 13",
    );
  });
  await t.step("node above 2^48 - 1", () => {
    assertRejects(
      stamp([1], [0], [0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x40]),
      "invalid_field",
      "Cannot decode stamp: node 281474976710656 exceeds 281474976710655 at offset 14",
    );
  });
});

Deno.test("decodeMessage() rejects dates out of range", () => {
  // 8.64e15 + 1 as a varuint.
  const beyond = [0x81, 0x80, 0xf0, 0x96, 0x8c, 0xc1, 0xac, 0x0f];
  assertRejects(
    withValue([0x0a, ...beyond]),
    "invalid_field",
    "Cannot decode date: 8640000000000001 ms is outside the range of a Date at offset 21",
  );
});

Deno.test("decodeMessage() rejects flag bytes other than 00 and 01", () => {
  assertRejects(
    [MessageType.Bind, 1, 0, 2, 0, 0],
    "invalid_field",
    "Cannot decode bind: identity flag 2 at offset 3",
  );
  assertRejects(
    [MessageType.Error, 2],
    "invalid_field",
    "Cannot decode error: session flag 2 at offset 1",
  );
  assertRejects(
    [MessageType.Error, 0, 100, 7, 0],
    "invalid_field",
    "Cannot decode error: try-again flag 7 at offset 3",
  );
});

Deno.test("decodeMessage() rejects every truncation of a valid frame with `truncated`", () => {
  const frame = Uint8Array.from(
    withValue([0x0d, 0x02, 0x03, 1, 2, 3, 4, 5, 6, 7, 8, 0x82]),
  );
  decodeMessage(frame);
  for (let length = 0; length < frame.length; length++) {
    assert.throws(
      () => decodeMessage(frame.subarray(0, length)),
      (error: unknown) =>
        error instanceof ProtocolError &&
        (error.code === "truncated" || error.code === "trailing_bytes"),
      `length ${length}`,
    );
  }
});

Deno.test("decodeMessage() reads RECEIVED strictly: every truncation, an over-long or too-large varuint and a trailing byte are refused", () => {
  const frame = Uint8Array.from([
    MessageType.Received,
    0xf0,
    0xa2,
    0x04, // receivedBytes 70000
    0xc0,
    0xa9,
    0x07, // timeoutMs 120000
  ]);
  assert.deepEqual(decodeMessage(frame), {
    type: MessageType.Received,
    receivedBytes: 70_000,
    timeoutMs: 120_000,
  });
  for (let length = 1; length < frame.length; length++) {
    assert.throws(
      () => decodeMessage(frame.subarray(0, length)),
      (error: unknown) =>
        error instanceof ProtocolError && error.code === "truncated",
      `length ${length}`,
    );
  }
  assertRejects(
    [...frame, 0x00],
    "trailing_bytes",
    "Cannot decode message: 1 bytes left over at offset 7",
  );
  assertRejects(
    [MessageType.Received, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x10, 0],
    "integer_out_of_range",
    "Cannot decode varint: value exceeds 2^53 - 1 at offset 1",
  );
  assertRejects(
    [
      MessageType.Received,
      0x01,
      0x80,
      0x80,
      0x80,
      0x80,
      0x80,
      0x80,
      0x80,
      0x80,
      0x01,
    ],
    "varint_too_long",
    "Cannot decode varint: more than 8 bytes at offset 2",
  );
});
