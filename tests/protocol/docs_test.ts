import assert from "node:assert/strict";
import { decodeMessage } from "../../src/protocol/decode.ts";
import {
  encodeDownloadChangeset,
  encodeMessage,
} from "../../src/protocol/encode.ts";
import { ERROR_CODES } from "../../src/protocol/error_codes.ts";
import { DEFAULT_LIMITS } from "../../src/protocol/limits.ts";
import {
  type DownloadMessage,
  type Message,
  MessageType,
} from "../../src/protocol/messages.ts";
import type { ProtocolErrorCode } from "../../src/protocol/protocol_error.ts";

const PROTOCOL_MD = await Deno.readTextFile(
  new URL("../../docs/PROTOCOL.md", import.meta.url),
);

/**
 * The golden vectors: the messages whose exact bytes docs/PROTOCOL.md §10
 * prints, each after a `<!-- golden: name -->` marker.
 */
const GOLDEN: Record<string, Message> = {
  ping: { type: MessageType.Ping, timestamp: 1.5 },
  received: {
    type: MessageType.Received,
    receivedBytes: 70_000,
    timeoutMs: 120_000,
  },
  handshake: {
    type: MessageType.Handshake,
    minVersion: 1,
    maxVersion: 1,
    accessToken: "tok",
  },
  bind: {
    type: MessageType.Bind,
    sessionId: 1,
    path: "/~/todos",
    clientIdentity: { id: 7, salt: 300 },
    downloadCursor: 12,
    downloadCursorSalt: 0x9e37_79b9,
    uploadCursor: 3,
  },
  reject: {
    type: MessageType.Reject,
    sessionId: 1,
    clientVersion: 4,
    code: 203,
    message: "read-only",
    revert: [],
  },
  upload_too_large: {
    type: MessageType.UploadTooLarge,
    sessionId: 1,
    clientVersion: 5,
    changesetBytes: 20_000_000,
    objects: [{ type: "Photo", id: "p1" }],
  },
  error: {
    type: MessageType.Error,
    sessionId: null,
    code: 103,
    tryAgain: false,
    message: "Bad token",
  },
  upload: {
    type: MessageType.Upload,
    sessionId: 1,
    changesets: [{
      clientVersion: 1,
      baseServerVersion: 0,
      stamp: { time: 1_767_225_600_000, counter: 0, node: 42 },
      instructions: [
        {
          op: "put",
          type: "Task",
          id: "2f1c9a0e-5b7d-4e23-9c41-7d0b8e6f1a35",
          fields: { title: "Milk", done: false },
          stamp: null,
        },
        {
          op: "update",
          type: "Task",
          id: "t2",
          fields: { title: "Eggs", done: true },
          stamp: null,
        },
        { op: "delete", type: "Note", id: "t2", fields: null, stamp: null },
      ],
    }],
  },
  values: {
    type: MessageType.Download,
    sessionId: 1,
    serverVersion: 9,
    serverVersionSalt: 4660,
    lastIntegratedClientVersion: 0,
    downloadableBytes: 0,
    changesetBytes: 115,
    changesets: [{
      serverVersion: 9,
      stamp: { time: 1000, counter: 0, node: 1 },
      instructions: [{
        op: "put",
        type: "T",
        id: "x",
        stamp: { time: 999, counter: 2, node: 3 },
        fields: {
          a: null,
          b: true,
          c: -0,
          d: 1.5,
          e: 200,
          f: -5,
          g: 2n ** 64n,
          h: -1n,
          i: "é",
          j: new Uint8Array([1, 2, 3]),
          k: new Date(1000),
          l: new Date(-1),
          m: new Date(NaN),
          n: [1, "a"],
          o: { a: 7 },
        },
      }],
    }],
  },
};

/** The golden frames in PROTOCOL.md: name → bytes (leading hex of each line). */
function goldenFrames(): Map<string, Uint8Array> {
  const frames = new Map<string, Uint8Array>();
  const pattern = /<!-- golden: ([\w-]+) -->\s*```text\n([\s\S]*?)```/g;
  for (const [, name, body] of PROTOCOL_MD.matchAll(pattern)) {
    const bytes: number[] = [];
    for (const line of body!.split("\n")) {
      const hex = line.match(/^([0-9a-f]{2}(?: [0-9a-f]{2})*)(?:\s{2,}|$)/);
      if (hex === null) {
        assert.equal(
          line.trim(),
          "",
          `golden ${name}: unreadable line "${line}"`,
        );
        continue;
      }
      bytes.push(...hex[1]!.split(" ").map((byte) => parseInt(byte, 16)));
    }
    frames.set(name!, Uint8Array.from(bytes));
  }
  return frames;
}

Deno.test("PROTOCOL.md golden vectors are exactly what encodeMessage() writes", async (t) => {
  const frames = goldenFrames();
  assert.deepEqual([...frames.keys()].sort(), Object.keys(GOLDEN).sort());
  for (const [name, message] of Object.entries(GOLDEN)) {
    await t.step(name, () => {
      const documented = frames.get(name)!;
      assert.deepStrictEqual(encodeMessage(message), documented);
      assert.deepStrictEqual(decodeMessage(documented), message);
    });
  }
});

Deno.test("PROTOCOL.md's DOWNLOAD example counts its changeset's stored size in changesetBytes", () => {
  const values = GOLDEN.values as DownloadMessage;
  assert.equal(
    values.changesetBytes,
    encodeDownloadChangeset(values.changesets[0]!).byteLength,
  );
});

Deno.test("PROTOCOL.md lists every error code with its number, and no other", () => {
  const rows = new Map<string, number>();
  const section = PROTOCOL_MD.slice(
    PROTOCOL_MD.indexOf("## 7. Error codes"),
    PROTOCOL_MD.indexOf("## 8."),
  );
  for (const [, code, name] of section.matchAll(/^\| (\d+) +\| `(\w+)` /gm)) {
    rows.set(name!, Number(code));
  }
  const table = Object.fromEntries(
    Object.entries(ERROR_CODES).map(([name, info]) => [name, info.code]),
  );
  assert.deepEqual(Object.fromEntries(rows), table);
  for (const [name, info] of Object.entries(ERROR_CODES)) {
    const row = section.split("\n").find((line) =>
      line.includes(`\`${name}\``)
    )!;
    const cells = row.split("|").map((cell) => cell.trim());
    assert.equal(cells[3], info.isFatal ? "yes" : "no", `${name} fatal`);
    assert.equal(cells[4], info.tryAgain ? "yes" : "no", `${name} try again`);
    assert.equal(cells[5], info.description, `${name} description`);
  }
});

Deno.test("PROTOCOL.md lists every default limit with its value", () => {
  const section = PROTOCOL_MD.slice(
    PROTOCOL_MD.indexOf("## 8. Limits"),
    PROTOCOL_MD.indexOf("## 9."),
  );
  const rows = new Map<string, number>();
  for (
    const [, name, value] of section.matchAll(/^\| `(\w+)` +\| ([\d ]+?) +\|/gm)
  ) {
    rows.set(name!, Number(value!.replaceAll(" ", "")));
  }
  assert.deepEqual(Object.fromEntries(rows), { ...DEFAULT_LIMITS });
});

Deno.test("PROTOCOL.md lists every ProtocolError code", () => {
  const codes: Record<ProtocolErrorCode, true> = {
    truncated: true,
    length_over_limit: true,
    varint_too_long: true,
    integer_out_of_range: true,
    unknown_message: true,
    unknown_value: true,
    unknown_instruction: true,
    invalid_utf8: true,
    depth_over_limit: true,
    trailing_bytes: true,
    bad_reference: true,
    bad_magic: true,
    invalid_field: true,
    decompression_failed: true,
    unencodable_value: true,
  };
  for (const code of Object.keys(codes)) {
    assert.match(PROTOCOL_MD, new RegExp(`^\\| \`${code}\` `, "m"), code);
  }
});
