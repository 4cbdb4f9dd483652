import assert from "node:assert/strict";
import type { DownloadChangeset } from "../../src/model/changeset.ts";
import { encodeMessage } from "../../src/protocol/encode.ts";
import { decodeMessage } from "../../src/protocol/decode.ts";
import {
  type DownloadMessage,
  MessageType,
} from "../../src/protocol/messages.ts";
import { Writer } from "../../src/protocol/writer.ts";
import {
  encodeSharedDownload,
  shareBatch,
} from "../../src/server/shared_download.ts";
import { put, stampAt, update } from "../_helpers/changesets.ts";

function changeset(version: number, id: string): DownloadChangeset {
  return {
    serverVersion: version,
    stamp: stampAt(1_000 + version, 3),
    instructions: [
      put("Task", id, { title: `task ${id}`, done: false, n: version }),
      update("Task", "00000000-0000-4000-8000-000000000001", { done: true }),
    ],
  };
}

function download(
  sessionId: number,
  changesets: DownloadChangeset[],
): DownloadMessage {
  return {
    type: MessageType.Download,
    sessionId,
    serverVersion: 300 + sessionId,
    serverVersionSalt: 0xfedc_ba98 - sessionId,
    lastIntegratedClientVersion: 7 * sessionId,
    downloadableBytes: 1_000_000 + sessionId,
    changesetBytes: 99,
    changesets,
  };
}

Deno.test("shareBatch returns one batch for the same changeset objects in the same order", () => {
  const a = changeset(1, "a");
  const b = changeset(2, "b");
  const first = shareBatch([a, b]);
  assert.equal(shareBatch([a, b]), first);
  assert.ok(Object.isFrozen(first));
  // Equal content but other objects, another order or another length: not
  // the same batch.
  assert.notEqual(shareBatch([changeset(1, "a"), b]), first);
  assert.notEqual(shareBatch([b, a]), first);
  assert.notEqual(shareBatch([a]), shareBatch([a, b]));
  assert.deepEqual(shareBatch([]), []);
});

Deno.test("encodeSharedDownload makes the bytes encodeMessage makes, for every session sharing the batch, salted or not", () => {
  const batch = shareBatch([changeset(5, "x"), changeset(6, "y")]);
  const writer = new Writer(16);
  for (const sessionId of [1, 2, 300]) {
    const message = download(sessionId, batch);
    const shared = encodeSharedDownload(message, writer);
    assert.ok(shared !== null);
    assert.deepEqual([...shared], [...encodeMessage(message)]);
    assert.deepEqual(decodeMessage(shared), message);
    // Without a salt (a protocol 1 session): the plain form.
    const { serverVersionSalt: _, ...plain } = message;
    const unsalted = encodeSharedDownload(plain, writer);
    assert.ok(unsalted !== null);
    assert.deepEqual([...unsalted], [...encodeMessage(plain)]);
    assert.deepEqual(decodeMessage(unsalted), plain);
  }
});

Deno.test("encodeSharedDownload leaves a batch that was not shared to encodeMessage", () => {
  assert.equal(
    encodeSharedDownload(download(1, [changeset(1, "a")]), new Writer()),
    null,
  );
});

Deno.test("encodeSharedDownload keeps the frame of a header sent twice in a row, and makes the right bytes for every header after it", () => {
  const batch = shareBatch([changeset(7, "p"), changeset(8, "q")]);
  const writer = new Writer(16);
  const one = download(1, batch);
  const other = { ...one, downloadableBytes: 5 };
  const { serverVersionSalt: _, ...plain } = one;
  const frames: Uint8Array[] = [];
  // The same header three times, another, the first again, the unsalted
  // form (equal fields but the salt) and the first twice more.
  for (const message of [one, one, one, other, one, plain, one, one]) {
    const frame = encodeSharedDownload(message, writer);
    assert.ok(frame !== null);
    assert.deepEqual([...frame], [...encodeMessage(message)]);
    frames.push(frame);
    // Whatever the writer is used for next leaves a kept frame as it was.
    writer.reset();
    writer.bytes.fill(0);
  }
  // The second and third sends of a header share one kept frame, which the
  // writer's reuse did not touch.
  assert.equal(frames[2], frames[1]);
  assert.deepEqual([...frames[1]!], [...encodeMessage(one)]);
  assert.deepEqual([...frames[7]!], [...encodeMessage(one)]);
  // The first send of a header after another is the writer's, which the
  // loop zeroed after it.
  assert.ok(frames[6]!.every((byte) => byte === 0));
  assert.notEqual(frames[7], frames[1]);
});
