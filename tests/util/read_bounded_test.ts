import assert from "node:assert/strict";
import { readBounded } from "../../src/util/read_bounded.ts";

function streamOf(...chunks: number[]): ReadableStream<Uint8Array> {
  return ReadableStream.from(
    chunks.map((size) => new Uint8Array(size).fill(7)),
  );
}

Deno.test("readBounded() joins the chunks, up to and including the limit", async () => {
  const bytes = await readBounded(streamOf(3, 4), 7);
  assert.deepEqual(bytes, new Uint8Array(7).fill(7));
  assert.deepEqual(await readBounded(null, 0), new Uint8Array());
});

Deno.test("readBounded() returns null past the limit and cancels the stream", async () => {
  let cancelled = false;
  const body = new ReadableStream<Uint8Array>({
    pull(controller) {
      controller.enqueue(new Uint8Array(4));
    },
    cancel() {
      cancelled = true;
    },
  });
  assert.equal(await readBounded(body, 10), null);
  assert.equal(cancelled, true);
});

Deno.test("readBounded() rejects with the signal's reason when it aborts mid-read", async () => {
  const controller = new AbortController();
  const body = new ReadableStream<Uint8Array>({ pull() {} });
  const reading = readBounded(body, 10, controller.signal);
  const reason = new Error("gone");
  controller.abort(reason);
  await assert.rejects(reading, (error) => error === reason);
});
