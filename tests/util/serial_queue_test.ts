import assert from "node:assert/strict";
import { SerialQueue } from "../../src/util/serial_queue.ts";
import { Deferred } from "../../src/util/deferred.ts";

Deno.test("SerialQueue runs steps one at a time in push order, even when a later step would finish first", async () => {
  const errors: unknown[] = [];
  const queue = new SerialQueue((error) => errors.push(error));
  const slow = new Deferred<void>();
  const log: string[] = [];
  queue.push(async () => {
    log.push("a start");
    await slow.promise;
    log.push("a end");
  });
  queue.push(() => {
    log.push("b");
  });
  assert.equal(queue.idle, false);
  await Promise.resolve();
  await Promise.resolve();
  assert.deepEqual(log, ["a start"]);
  slow.resolve();
  await queue.drained();
  assert.deepEqual(log, ["a start", "a end", "b"]);
  assert.deepEqual(errors, []);
});

Deno.test("SerialQueue hands a step's error to onError and still runs the steps behind it", async () => {
  const errors: unknown[] = [];
  const queue = new SerialQueue((error) => errors.push(error));
  const boom = new Error("boom");
  const log: string[] = [];
  queue.push(() => {
    throw boom;
  });
  queue.push(async () => {
    await Promise.resolve();
    throw new TypeError("second");
  });
  queue.push(() => {
    log.push("after");
  });
  await queue.drained();
  assert.deepEqual(log, ["after"]);
  assert.equal(errors.length, 2);
  assert.equal(errors[0], boom);
  assert.ok(errors[1] instanceof TypeError);
});

Deno.test("SerialQueue is idle before any step and again once every step has finished", async () => {
  const queue = new SerialQueue(() => {});
  assert.equal(queue.idle, true);
  await queue.drained();
  queue.push(() => {});
  assert.equal(queue.idle, false);
  await queue.drained();
  assert.equal(queue.idle, true);
});
