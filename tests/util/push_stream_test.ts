import assert from "node:assert/strict";
import { PushStream } from "../../src/util/push_stream.ts";

async function readAll<T>(stream: ReadableStream<T>): Promise<T[]> {
  const values: T[] = [];
  for await (const value of stream) values.push(value);
  return values;
}

Deno.test("PushStream (queue) delivers every value in order, then ends on close()", async () => {
  const channel = new PushStream<number>({ latestOnly: false });
  channel.push(1);
  channel.push(2);
  channel.push(3);
  channel.close();
  channel.push(4);
  assert.deepEqual(await readAll(channel.stream), [1, 2, 3]);
});

Deno.test("PushStream (latestOnly) coalesces values the reader has not taken yet", async () => {
  const channel = new PushStream<number>({ latestOnly: true });
  const reader = channel.stream.getReader();
  channel.push(1);
  channel.push(2);
  assert.deepEqual(await reader.read(), { done: false, value: 2 });
  const next = reader.read();
  channel.push(3);
  assert.deepEqual(await next, { done: false, value: 3 });
  channel.push(4);
  channel.push(5);
  channel.close();
  assert.deepEqual(await reader.read(), { done: false, value: 5 });
  assert.deepEqual(await reader.read(), { done: true, value: undefined });
});

Deno.test("PushStream fail() delivers what is queued, then errors", async () => {
  const channel = new PushStream<string>({ latestOnly: false });
  const failure = new Error("boom");
  channel.push("a");
  channel.push("b");
  channel.fail(failure);
  const reader = channel.stream.getReader();
  assert.deepEqual(await reader.read(), { done: false, value: "a" });
  assert.deepEqual(await reader.read(), { done: false, value: "b" });
  await assert.rejects(reader.read(), (error) => error === failure);
});

Deno.test("PushStream error() errors at once, dropping queued values", async () => {
  let detached = 0;
  const channel = new PushStream<string>({
    latestOnly: false,
    onDetach: () => detached++,
  });
  const failure = new Error("boom");
  channel.push("a");
  channel.error(failure);
  await assert.rejects(readAll(channel.stream), (error) => error === failure);
  assert.equal(detached, 1);
});

Deno.test("PushStream ends (without error) when its signal aborts, and detaches once", async () => {
  let detached = 0;
  const controller = new AbortController();
  const channel = new PushStream<number>({
    latestOnly: false,
    signal: controller.signal,
    onDetach: () => detached++,
  });
  const reading = readAll(channel.stream);
  channel.push(1);
  await Promise.resolve();
  controller.abort(new Error("stop"));
  assert.deepEqual(await reading, [1]);
  assert.equal(detached, 1);
  assert.equal(channel.isDetached, true);
  channel.close();
  assert.equal(detached, 1);
});

Deno.test("PushStream with an already-aborted signal is empty", async () => {
  let detached = 0;
  const channel = new PushStream<number>({
    latestOnly: true,
    signal: AbortSignal.abort(),
    onDetach: () => detached++,
  });
  channel.push(1);
  assert.equal(channel.isDetached, true);
  assert.deepEqual(await readAll(channel.stream), []);
  // Nothing was attached, so nothing is detached (callers may not even have
  // finished constructing what onDetach refers to).
  assert.equal(detached, 0);
});

Deno.test("PushStream detaches when the reader breaks out of for await", async () => {
  let detached = 0;
  const controller = new AbortController();
  const channel = new PushStream<number>({
    latestOnly: false,
    signal: controller.signal,
    onDetach: () => detached++,
  });
  channel.push(1);
  channel.push(2);
  for await (const value of channel.stream) {
    assert.equal(value, 1);
    break;
  }
  assert.equal(detached, 1);
  assert.equal(channel.isDetached, true);
  // The abort listener was removed with the detach: aborting does nothing.
  controller.abort();
  assert.equal(detached, 1);
});

Deno.test("PushStream (queue) hands values to reads already waiting, several at once, in order", async () => {
  {
    const channel = new PushStream<number>({ latestOnly: false });
    const reader = channel.stream.getReader();
    // Reads made before any push: each push answers the oldest one.
    const first = reader.read();
    const second = reader.read();
    const third = reader.read();
    await Promise.resolve();
    channel.push(1);
    channel.push(2);
    channel.push(3);
    assert.deepEqual(await first, { done: false, value: 1 });
    assert.deepEqual(await second, { done: false, value: 2 });
    assert.deepEqual(await third, { done: false, value: 3 });
    // A push with no read waiting is kept for the next read.
    channel.push(4);
    assert.deepEqual(await reader.read(), { done: false, value: 4 });
    const fifth = reader.read();
    channel.close();
    assert.deepEqual(await fifth, { done: true, value: undefined });
  }
});

Deno.test("PushStream fail() while a read waits errors that read after earlier values", async () => {
  const channel = new PushStream<number>({ latestOnly: false });
  const reader = channel.stream.getReader();
  const first = reader.read();
  channel.push(1);
  assert.deepEqual(await first, { done: false, value: 1 });
  const second = reader.read();
  const failure = new Error("boom");
  channel.fail(failure);
  await assert.rejects(second, (error) => error === failure);
});
