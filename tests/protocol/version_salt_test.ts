// Version salts on the wire (docs/PROTOCOL.md §4.2, §4.11, §6): BIND's
// downloadCursorSalt and DOWNLOAD's serverVersionSalt exist from protocol
// version 2 on, are bounded to 32 bits, and version 1 frames have neither.

import assert from "node:assert/strict";
import { decodeMessage } from "../../src/protocol/decode.ts";
import { encodeMessage } from "../../src/protocol/encode.ts";
import {
  type BindMessage,
  type DownloadMessage,
  MAX_VERSION_SALT,
  MessageType,
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

Deno.test("version salts round-trip with protocol 2, at both ends of their range", () => {
  assert.deepEqual(decodeMessage(encodeMessage(bind)), bind);
  assert.deepEqual(decodeMessage(encodeMessage(download)), download);
  for (const salt of [1, 127, 128, 0x1234_5678, MAX_VERSION_SALT]) {
    const message = { ...download, serverVersionSalt: salt };
    assert.deepEqual(
      decodeMessage(encodeMessage(message, undefined, 2)),
      message,
    );
  }
});

Deno.test("a salt of 0 (unknown) is written as one byte and decodes as absent", () => {
  const { downloadCursorSalt: _, ...unsalted } = bind;
  const absent = encodeMessage(unsalted);
  assert.deepEqual([...encodeMessage({ ...bind, downloadCursorSalt: 0 })], [
    ...absent,
  ]);
  assert.deepEqual(decodeMessage(absent), unsalted);
  // The salt sits between the download cursor (40) and the upload cursor (5).
  assert.deepEqual([...absent.subarray(-3)], [40, 0, 5]);
});

Deno.test("protocol 1 frames carry no salt: shorter by the salt's bytes, decoded without it", () => {
  const v1 = encodeMessage(bind, undefined, 1);
  const v2 = encodeMessage(bind, undefined, 2);
  assert.equal(v2.length - v1.length, 5); // 2^32 − 1 takes five varuint bytes
  const { downloadCursorSalt: _, ...bindV1 } = bind;
  assert.deepEqual(decodeMessage(v1, undefined, 1), bindV1);
  const { serverVersionSalt: __, ...downloadV1 } = download;
  const frame = encodeMessage(download, undefined, 1);
  assert.deepEqual(decodeMessage(frame, undefined, 1), downloadV1);
  // A version 1 frame read as version 2 is malformed, not silently misread.
  assert.throws(
    () => decodeMessage(frame, undefined, 2),
    (error) => error instanceof ProtocolError,
  );
});

Deno.test("decodeMessage() rejects a salt above 2^32 - 1 with invalid_field, naming its offset", () => {
  // BIND: tag, session 3, path "/a", no identity, cursor 1, salt 2^32, upload 0.
  const frame = Uint8Array.from([
    MessageType.Bind,
    3,
    2,
    0x2f,
    0x61,
    0,
    1,
    0x80,
    0x80,
    0x80,
    0x80,
    0x10,
    0,
  ]);
  assert.throws(
    () => decodeMessage(frame),
    (error) =>
      error instanceof ProtocolError && error.code === "invalid_field" &&
      error.message ===
        "Cannot decode bind: version salt 4294967296 at offset 7 exceeds 2^32 - 1",
  );
  // The same bytes are a valid frame with salt 2^32 − 1.
  frame[11] = 0x0f;
  frame[7] = 0xff;
  frame[8] = 0xff;
  frame[9] = 0xff;
  frame[10] = 0xff;
  assert.equal(
    (decodeMessage(frame) as BindMessage).downloadCursorSalt,
    MAX_VERSION_SALT,
  );
  // DOWNLOAD: tag, session 1, version 9, salt 2^32, then the rest.
  const download = Uint8Array.from([
    MessageType.Download,
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
  // Version 1 writes no salt, so it never looks at it.
  const frame = encodeMessage(
    { ...download, serverVersionSalt: -1 },
    undefined,
    1,
  );
  assert.equal(frame[0], MessageType.Download);
});
