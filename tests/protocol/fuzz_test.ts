import assert from "node:assert/strict";
import {
  compressFrame,
  decompressFrame,
} from "../../src/protocol/compression.ts";
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
import type { Limits } from "../../src/protocol/limits.ts";
import { type Message, MessageType } from "../../src/protocol/messages.ts";
import { ProtocolError } from "../../src/protocol/protocol_error.ts";
import { Prng, testSeed } from "../_helpers/prng.ts";
import { randomMessage } from "../_helpers/random_messages.ts";

/** Small limits, so mutated lengths and counts hit them often. */
const TIGHT_LIMITS: Partial<Limits> = {
  maxMessageBytes: 64 * 1024,
  maxStringBytes: 4096,
  maxBytesLength: 4096,
  maxDepth: 8,
  maxChangesets: 64,
  maxInstructions: 256,
  maxCollectionLength: 256,
};

/** One way of breaking a frame. */
function mutate(random: Prng, frame: Uint8Array): Uint8Array {
  const bytes = Array.from(frame);
  const edits = 1 + random.int(4);
  for (let edit = 0; edit < edits; edit++) {
    const at = random.int(bytes.length + 1);
    switch (random.int(6)) {
      case 0: // flip one bit
        if (at < bytes.length) bytes[at]! ^= 1 << random.int(8);
        break;
      case 1: // replace a byte with anything
        if (at < bytes.length) bytes[at] = random.int(256);
        break;
      case 2: // replace a byte with a varint-ish or boundary value
        if (at < bytes.length) {
          bytes[at] = random.pick([0x00, 0x01, 0x7f, 0x80, 0xff, 0x0f, 0x10]);
        }
        break;
      case 3: // insert bytes
        bytes.splice(
          at,
          0,
          ...Array.from({ length: 1 + random.int(8) }, () => random.int(256)),
        );
        break;
      case 4: // delete bytes
        bytes.splice(at, 1 + random.int(4));
        break;
      default: // a run of continuation bytes: long varints, huge lengths
        bytes.splice(at, 0, ...Array(1 + random.int(9)).fill(0xff));
    }
  }
  // Keep the tag valid half the time, so the body gets exercised.
  if (bytes.length > 0 && frame.length > 0 && random.next() < 0.5) {
    bytes[0] = frame[0]!;
  }
  return Uint8Array.from(bytes);
}

/**
 * Decodes `frame`; anything but success or a ProtocolError fails the test.
 * A frame that decodes must re-encode to something that decodes the same.
 */
function decodeOrReject(
  frame: Uint8Array,
  limits: Partial<Limits> | undefined,
  counts: { decoded: number; rejected: Map<string, number> },
): void {
  let message: Message;
  try {
    message = decodeMessage(frame, limits);
  } catch (error) {
    if (!(error instanceof ProtocolError)) throw error;
    counts.rejected.set(error.code, (counts.rejected.get(error.code) ?? 0) + 1);
    return;
  }
  counts.decoded++;
  assert.deepStrictEqual(decodeMessage(encodeMessage(message)), message);
}

function failWithSeed(seed: number, what: string, error: unknown): never {
  throw new Error(
    `Fuzzing failed on ${what} with seed ${seed} (rerun with TETHER_SEED=${seed}): ${
      error instanceof Error ? `${error.name}: ${error.message}` : String(error)
    }`,
    { cause: error },
  );
}

Deno.test("decodeMessage() meets 40,000 mutated and truncated frames with a message or a ProtocolError only", () => {
  const seed = testSeed();
  const random = new Prng(seed);
  const counts = { decoded: 0, rejected: new Map<string, number>() };
  let frames = 0;
  for (let base = 0; base < 300; base++) {
    const message = base % 5 === 0
      ? randomMessage(random, { maxInstructions: 40 })
      : randomMessage(random);
    const frame = encodeMessage(message).slice();
    const limits = base % 2 === 0 ? TIGHT_LIMITS : undefined;
    for (let index = 0; index < 130; index++) {
      const mutated = mutate(random, frame);
      frames++;
      try {
        decodeOrReject(mutated, limits, counts);
      } catch (error) {
        failWithSeed(
          seed,
          `mutation ${index} of frame ${base} [${mutated}]`,
          error,
        );
      }
    }
    // Truncations: every length for short frames, a sample for long ones.
    const lengths = frame.length <= 60
      ? Array.from({ length: frame.length }, (_, length) => length)
      : Array.from({ length: 40 }, () => random.int(frame.length));
    for (const length of lengths) {
      frames++;
      try {
        decodeOrReject(frame.subarray(0, length), limits, counts);
      } catch (error) {
        failWithSeed(seed, `frame ${base} cut at ${length}`, error);
      }
    }
  }
  assert.ok(frames >= 40_000, `only ${frames} frames`);
  // The mix must reach deep into the decoder, not stop at the tag byte.
  for (
    const code of [
      "truncated",
      "trailing_bytes",
      "unknown_message",
      "unknown_value",
      "bad_reference",
      "invalid_utf8",
      "length_over_limit",
    ]
  ) {
    assert.ok(
      (counts.rejected.get(code) ?? 0) > 0,
      `no frame was rejected with ${code} (seed ${seed}): ${[
        ...counts.rejected,
      ]}`,
    );
  }
  assert.ok(
    counts.decoded > 100,
    `only ${counts.decoded} mutated frames decoded`,
  );
});

Deno.test("decodeUploadChangeset() and decodeDownloadChangeset() meet 10,000 mutated changesets with a changeset or a ProtocolError only", () => {
  const seed = testSeed();
  const random = new Prng(seed);
  let checked = 0;
  while (checked < 10_000) {
    const message = randomMessage(random);
    if (
      message.type !== MessageType.Upload &&
      message.type !== MessageType.Download
    ) {
      continue;
    }
    for (const changeset of message.changesets) {
      const upload = message.type === MessageType.Upload;
      const bytes = upload
        ? encodeUploadChangeset(changeset as never).slice()
        : encodeDownloadChangeset(changeset as never).slice();
      for (let index = 0; index < 50; index++) {
        const mutated = mutate(random, bytes);
        checked++;
        try {
          if (upload) decodeUploadChangeset(mutated, TIGHT_LIMITS);
          else decodeDownloadChangeset(mutated, TIGHT_LIMITS);
        } catch (error) {
          if (error instanceof ProtocolError) continue;
          failWithSeed(seed, `changeset mutation [${mutated}]`, error);
        }
      }
    }
  }
});

Deno.test("decompressFrame() meets 600 mutated compressed frames with a frame or a ProtocolError only", async () => {
  const seed = testSeed();
  const random = new Prng(seed);
  for (let base = 0; base < 20; base++) {
    let message = randomMessage(random, { maxInstructions: 60 });
    while (
      message.type !== MessageType.Upload &&
      message.type !== MessageType.Download
    ) {
      message = randomMessage(random, { maxInstructions: 60 });
    }
    const compressed = await compressFrame(encodeMessage(message), {
      threshold: 0,
    });
    for (let index = 0; index < 30; index++) {
      const mutated = mutate(random, compressed);
      try {
        const frame = await decompressFrame(mutated, {
          maxMessageBytes: 1 << 20,
        });
        decodeMessage(frame);
      } catch (error) {
        if (error instanceof ProtocolError) continue;
        failWithSeed(seed, `compressed mutation [${mutated}]`, error);
      }
    }
  }
});
