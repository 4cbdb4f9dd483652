// Version salts on the wire (docs/PROTOCOL.md §4.2, §4.11, §6): BIND's
// downloadCursorSalt and DOWNLOAD's serverVersionSalt (protocol version 2)
// are bounded to 32 bits, and a frame without them is the version 1 frame.

import assert from "node:assert/strict";
import {
  compressFrame,
  decompressFrame,
} from "../../src/protocol/compression.ts";
import { decodeMessage } from "../../src/protocol/decode.ts";
import { encodeMessage } from "../../src/protocol/encode.ts";
import {
  type BindMessage,
  type DownloadMessage,
  MAX_VERSION_SALT,
  MessageType,
  SALTED_DOWNLOAD_TAG,
} from "../../src/protocol/messages.ts";
import { ProtocolError } from "../../src/protocol/protocol_error.ts";

const bind: BindMessage = {
  type: MessageType.Bind,
  sessionId: 3,
  path: "/~/todos",
  clientIdentity: { id: 2, salt: 99 },
  downloadCursor: 40,
  downloadCursorSalt: MAX_VERSION_SALT,
  uploadCursor: 5,
};

const download: DownloadMessage = {
  type: MessageType.Download,
  sessionId: 3,
  serverVersion: 41,
  serverVersionSalt: 1,
  lastIntegratedClientVersion: 5,
  downloadableBytes: 0,
  changesetBytes: 0,
  changesets: [],
};

Deno.test("version salts round-trip, at both ends of their range", () => {
  assert.deepEqual(decodeMessage(encodeMessage(bind)), bind);
  assert.deepEqual(decodeMessage(encodeMessage(download)), download);
  for (const salt of [1, 127, 128, 0x1234_5678, MAX_VERSION_SALT]) {
    const message = { ...download, serverVersionSalt: salt };
    assert.deepEqual(decodeMessage(encodeMessage(message)), message);
    const bound = { ...bind, downloadCursorSalt: salt };
    assert.deepEqual(decodeMessage(encodeMessage(bound)), bound);
  }
});

Deno.test("without a salt (absent or 0) BIND and DOWNLOAD are the version 1 frames; with one, BIND appends it and DOWNLOAD takes the salted tag", () => {
  const { downloadCursorSalt: _, ...unsaltedBind } = bind;
  const { serverVersionSalt: __, ...unsaltedDownload } = download;
  const plainBind = encodeMessage(unsaltedBind);
  assert.deepEqual([...encodeMessage({ ...bind, downloadCursorSalt: 0 })], [
    ...plainBind,
  ]);
  assert.deepEqual(decodeMessage(plainBind), unsaltedBind);
  // The salt comes last, after the download cursor (40) and upload cursor (5).
  const saltedBind = encodeMessage(bind);
  assert.deepEqual([...saltedBind.subarray(0, plainBind.length)], [
    ...plainBind,
  ]);
  assert.deepEqual([...saltedBind.subarray(plainBind.length - 2)], [
    40,
    5,
    0xff,
    0xff,
    0xff,
    0xff,
    0x0f,
  ]);

  const plain = encodeMessage(unsaltedDownload);
  assert.equal(plain[0], MessageType.Download);
  assert.deepEqual([...encodeMessage({ ...download, serverVersionSalt: 0 })], [
    ...plain,
  ]);
  assert.deepEqual(decodeMessage(plain), unsaltedDownload);
  const salted = encodeMessage(download);
  assert.equal(salted[0], SALTED_DOWNLOAD_TAG);
  // Tag, session 3, version 41, then the salt 1; the rest is the plain form's.
  assert.deepEqual([...salted.subarray(0, 4)], [SALTED_DOWNLOAD_TAG, 3, 41, 1]);
  assert.deepEqual([...salted.subarray(4)], [...plain.subarray(3)]);
});

Deno.test("a salted DOWNLOAD may be compressed like a plain one", async () => {
  const big: DownloadMessage = {
    ...download,
    changesets: [{
      serverVersion: 41,
      stamp: { time: 1, counter: 0, node: 1 },
      instructions: Array.from({ length: 400 }, (_, index) => ({
        op: "put" as const,
        type: "Task",
        id: `t${index}`,
        fields: { title: "the same title again" },
        stamp: null,
      })),
    }],
  };
  const frame = encodeMessage(big);
  const compressed = await compressFrame(frame, { threshold: 0 });
  assert.equal(compressed[0], SALTED_DOWNLOAD_TAG | 0x80);
  assert.ok(compressed.length < frame.length);
  assert.deepEqual(decodeMessage(await decompressFrame(compressed)), big);
});

Deno.test("decodeMessage() rejects a salt above 2^32 - 1 with invalid_field, naming its offset", () => {
  // BIND: tag, session 3, path "/a", no identity, cursor 1, upload 0, salt 2^32.
  const frame = Uint8Array.from([
    MessageType.Bind,
    3,
    2,
    0x2f,
    0x61,
    0,
    1,
    0,
    0x80,
    0x80,
    0x80,
    0x80,
    0x10,
  ]);
  assert.throws(
    () => decodeMessage(frame),
    (error) =>
      error instanceof ProtocolError && error.code === "invalid_field" &&
      error.message ===
        "Cannot decode bind: version salt 4294967296 at offset 8 exceeds 2^32 - 1",
  );
  // The same bytes are a valid frame with salt 2^32 − 1.
  frame.set([0xff, 0xff, 0xff, 0xff, 0x0f], 8);
  assert.equal(
    (decodeMessage(frame) as BindMessage).downloadCursorSalt,
    MAX_VERSION_SALT,
  );
  // Bytes after the salt are still trailing bytes.
  assert.throws(
    () => decodeMessage(Uint8Array.from([...frame, 0])),
    (error) =>
      error instanceof ProtocolError && error.code === "trailing_bytes",
  );
  // Salted DOWNLOAD: tag, session 1, version 9, salt 2^32, then the rest.
  const download = Uint8Array.from([
    SALTED_DOWNLOAD_TAG,
    1,
    9,
    0x80,
    0x80,
    0x80,
    0x80,
    0x10,
    0,
    0,
    0,
    1,
    0,
    0,
    0,
    0,
    0,
  ]);
  assert.throws(
    () => decodeMessage(download),
    (error) =>
      error instanceof ProtocolError && error.code === "invalid_field" &&
      error.message ===
        "Cannot decode download: version salt 4294967296 at offset 3 exceeds 2^32 - 1",
  );
});

Deno.test("encodeMessage() refuses a salt outside [0, 2^32 - 1] with unencodable_value", () => {
  for (const salt of [-1, 1.5, MAX_VERSION_SALT + 1, Number.NaN]) {
    assert.throws(
      () => encodeMessage({ ...download, serverVersionSalt: salt }),
      (error) =>
        error instanceof ProtocolError && error.code === "unencodable_value",
    );
    assert.throws(
      () => encodeMessage({ ...bind, downloadCursorSalt: salt }),
      (error) =>
        error instanceof ProtocolError && error.code === "unencodable_value",
    );
  }
});
