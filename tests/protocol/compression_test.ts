import assert from "node:assert/strict";
import {
  compressFrame,
  COMPRESSION_THRESHOLD,
  decompressFrame,
  isCompressedFrame,
} from "../../src/protocol/compression.ts";
import { decodeMessage } from "../../src/protocol/decode.ts";
import { encodeMessage } from "../../src/protocol/encode.ts";
import {
  type DownloadMessage,
  MessageType,
  type UploadMessage,
} from "../../src/protocol/messages.ts";
import { ProtocolError } from "../../src/protocol/protocol_error.ts";
import { Prng } from "../_helpers/prng.ts";

function download(objects: number, bytesPerObject = 0): DownloadMessage {
  const random = new Prng(objects);
  return {
    type: MessageType.Download,
    sessionId: 1,
    serverVersion: 5,
    lastIntegratedClientVersion: 0,
    downloadableBytes: 0,
    changesetBytes: 0,
    changesets: [{
      serverVersion: 5,
      stamp: { time: 1_767_225_600_000, counter: 0, node: 9 },
      instructions: Array.from({ length: objects }, (_, index) => ({
        op: "put" as const,
        type: "Task",
        id: `task-${index}`,
        fields: {
          title: `Task number ${index}`,
          done: index % 3 === 0,
          blob: Uint8Array.from(
            { length: bytesPerObject },
            () => random.int(256),
          ),
        },
        stamp: null,
      })),
    }],
  };
}

async function deflateRaw(bytes: Uint8Array): Promise<Uint8Array> {
  const stream = new Blob([bytes as Uint8Array<ArrayBuffer>]).stream()
    .pipeThrough(new CompressionStream("deflate-raw"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

async function assertRejects(
  promise: Promise<unknown>,
  code: string,
  message: string,
): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(error instanceof ProtocolError, `not a ProtocolError: ${error}`);
    assert.equal(error.code, code);
    assert.equal(error.message, message);
    return true;
  });
}

Deno.test("compressFrame() compresses a large DOWNLOAD, and decompressFrame() restores it", async () => {
  const message = download(1_000);
  const frame = encodeMessage(message);
  assert.ok(frame.length > COMPRESSION_THRESHOLD);
  const compressed = await compressFrame(frame);
  assert.ok(isCompressedFrame(compressed));
  assert.equal(compressed[0], MessageType.Download | 0x80);
  assert.ok(compressed.length < frame.length / 2);
  const restored = await decompressFrame(compressed);
  assert.deepStrictEqual(restored, frame);
  assert.deepStrictEqual(decodeMessage(restored), message);
});

Deno.test("compressFrame() compresses a large UPLOAD too", async () => {
  const { changesets } = download(1_000);
  const message: UploadMessage = {
    type: MessageType.Upload,
    sessionId: 2,
    changesets: changesets.map((changeset, index) => ({
      clientVersion: index + 1,
      baseServerVersion: 0,
      stamp: changeset.stamp,
      instructions: changeset.instructions,
    })),
  };
  const compressed = await compressFrame(encodeMessage(message));
  assert.equal(compressed[0], MessageType.Upload | 0x80);
  assert.deepStrictEqual(
    decodeMessage(await decompressFrame(compressed)),
    message,
  );
});

Deno.test("compressFrame() returns the frame itself when compression does not apply or pay", async (t) => {
  await t.step("below the threshold", async () => {
    const frame = encodeMessage(download(3));
    assert.ok(frame.length < COMPRESSION_THRESHOLD);
    assert.equal(await compressFrame(frame), frame);
  });
  await t.step("a message type that may not be compressed", async () => {
    const frame = encodeMessage({
      type: MessageType.Refresh,
      accessToken: "a".repeat(50_000),
    });
    assert.equal(await compressFrame(frame), frame);
  });
  await t.step("incompressible contents", async () => {
    const frame = encodeMessage(download(20, 1_000));
    assert.ok(frame.length > COMPRESSION_THRESHOLD);
    assert.equal(await compressFrame(frame), frame);
  });
  await t.step("already compressed", async () => {
    const compressed = await compressFrame(encodeMessage(download(1_000)));
    assert.equal(await compressFrame(compressed, { threshold: 0 }), compressed);
  });
  await t.step("a lower threshold given as an option", async () => {
    const frame = encodeMessage(download(40));
    assert.ok(frame.length < COMPRESSION_THRESHOLD);
    assert.ok(
      isCompressedFrame(await compressFrame(frame, { threshold: 100 })),
    );
  });
});

Deno.test("decompressFrame() returns an uncompressed frame unchanged", async () => {
  const frame = encodeMessage({ type: MessageType.Ping, timestamp: 1 });
  assert.equal(await decompressFrame(frame), frame);
  const empty = new Uint8Array(0);
  assert.equal(await decompressFrame(empty), empty);
  assert.equal(isCompressedFrame(empty), false);
});

Deno.test("decompressFrame() rejects a compressed frame of a type that may not be compressed", async () => {
  const body = await deflateRaw(new Uint8Array([0, 0, 0, 0, 0, 0, 0, 0]));
  await assertRejects(
    decompressFrame(new Uint8Array([MessageType.Ping | 0x80, ...body])),
    "invalid_field",
    "Cannot decompress frame: type 0x06 may not be compressed",
  );
});

Deno.test("decompressFrame() rejects a body that is not deflate data", async () => {
  await assertRejects(
    decompressFrame(
      new Uint8Array([MessageType.Download | 0x80, 0xff, 0xff, 0xff, 0x00]),
    ),
    "decompression_failed",
    "Cannot decompress frame: the body is not valid deflate-raw data",
  );
});

Deno.test("decompressFrame() stops a decompression bomb at maxMessageBytes", async () => {
  // 16 MiB of zeros deflate to about 16 KiB.
  const body = await deflateRaw(new Uint8Array(16 * 1024 * 1024));
  assert.ok(body.length < 64 * 1024);
  const frame = new Uint8Array([MessageType.Download | 0x80, ...body]);
  await assertRejects(
    decompressFrame(frame, { maxMessageBytes: 1024 * 1024 }),
    "length_over_limit",
    "Cannot decompress frame: inflated length exceeds limit 1048576",
  );
  await assertRejects(
    decompressFrame(frame, { maxMessageBytes: 16 * 1024 * 1024 }),
    "length_over_limit",
    "Cannot decompress frame: inflated length exceeds limit 16777216",
  );
});

Deno.test("decompressFrame() accepts a frame of exactly maxMessageBytes", async () => {
  const frame = encodeMessage(download(1_000));
  const compressed = await compressFrame(frame);
  assert.equal(
    (await decompressFrame(compressed, { maxMessageBytes: frame.length }))
      .length,
    frame.length,
  );
  await assertRejects(
    decompressFrame(compressed, { maxMessageBytes: frame.length - 1 }),
    "length_over_limit",
    `Cannot decompress frame: inflated length exceeds limit ${
      frame.length - 1
    }`,
  );
});
