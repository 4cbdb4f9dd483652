import assert from "node:assert/strict";
import { InboundQueue } from "../../src/client/inbound_queue.ts";

Deno.test("InboundQueue runs tasks in push order, is idle only once all finished, reports failures and answers", async () => {
  const log: string[] = [];
  const queue = new InboundQueue(
    (error) => log.push(`error ${(error as Error).message}`),
    () => log.push("answered"),
  );
  assert.equal(queue.idle, true);
  const gate = Promise.withResolvers<void>();
  queue.push(async () => {
    await gate.promise;
    log.push("bind");
  }, false);
  queue.push(() => {
    log.push("message 1");
    return Promise.reject(new Error("bad"));
  }, true);
  queue.push(() => {
    log.push("message 2");
    return Promise.resolve();
  }, true);
  assert.equal(queue.idle, false);
  await Promise.resolve();
  assert.deepEqual(log, []);
  gate.resolve();
  for (let turn = 0; turn < 50 && !queue.idle; turn++) await Promise.resolve();
  assert.equal(queue.idle, true);
  assert.deepEqual(log, [
    "bind",
    "message 1",
    "error bad",
    "answered",
    "message 2",
    "answered",
  ]);
});
