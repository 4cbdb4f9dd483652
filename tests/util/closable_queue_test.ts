import assert from "node:assert/strict";
import { ClosableQueue } from "../../src/util/closable_queue.ts";

Deno.test("ClosableQueue runs tasks one at a time in call order, each with its own result", async () => {
  const queue = new ClosableQueue();
  const events: string[] = [];
  const gate = Promise.withResolvers<void>();
  const first = queue.run("first", async () => {
    events.push("first start");
    await gate.promise;
    events.push("first end");
    return 1;
  });
  const second = queue.run("second", () => {
    events.push("second");
    return Promise.resolve("two");
  });
  await Promise.resolve();
  assert.deepEqual(events, ["first start"]);
  gate.resolve();
  assert.equal(await first, 1);
  assert.equal(await second, "two");
  assert.deepEqual(events, ["first start", "first end", "second"]);
});

Deno.test("ClosableQueue: a failed task rejects only its own promise", async () => {
  const queue = new ClosableQueue();
  const failed = queue.run("fail", () => Promise.reject(new Error("boom")));
  const next = queue.run("next", () => Promise.resolve("ran"));
  await assert.rejects(failed, /boom/);
  assert.equal(await next, "ran");
});

Deno.test("ClosableQueue.close() waits for queued tasks, runs its last step once, then refuses tasks with a TypeError", async () => {
  const queue = new ClosableQueue();
  const events: string[] = [];
  const gate = Promise.withResolvers<void>();
  const task = queue.run("commit", async () => {
    await gate.promise;
    events.push("task");
  });
  let lasts = 0;
  const closed = queue.close(() => {
    lasts++;
    events.push("last");
  });
  const again = queue.close(() => {
    lasts++;
  });
  assert.equal(queue.closed, true);
  await assert.rejects(
    queue.run("load", () => Promise.resolve()),
    (error) =>
      error instanceof TypeError &&
      error.message === "Cannot load: the storage is closed",
  );
  gate.resolve();
  await task;
  await closed;
  await again;
  assert.deepEqual(events, ["task", "last"]);
  assert.equal(lasts, 1);
});
