import assert from "node:assert/strict";
import { abortable, onAbort } from "../../src/util/abort.ts";
import { Deferred } from "../../src/util/deferred.ts";

Deno.test("abortable() rejects at once with the reason of an already-aborted signal", async () => {
  const reason = new Error("already");
  await assert.rejects(
    abortable(new Promise(() => {}), AbortSignal.abort(reason)),
    (error) => error === reason,
  );
});

Deno.test("abortable() rejects with the signal's reason, unchanged, when aborted while waiting", async () => {
  const controller = new AbortController();
  const pending = abortable(new Deferred<number>().promise, controller.signal);
  const reason = { custom: true };
  controller.abort(reason);
  await assert.rejects(pending, (error) => error === reason);
});

Deno.test("abortable() passes the value through and removes its listener (no leak over 10,000 calls)", async () => {
  const controller = new AbortController();
  const signal = controller.signal;
  let added = 0;
  let removed = 0;
  const add = signal.addEventListener.bind(signal);
  const remove = signal.removeEventListener.bind(signal);
  signal.addEventListener = ((...args: Parameters<typeof add>) => {
    added++;
    return add(...args);
  }) as typeof signal.addEventListener;
  signal.removeEventListener = ((...args: Parameters<typeof remove>) => {
    removed++;
    return remove(...args);
  }) as typeof signal.removeEventListener;
  for (let index = 0; index < 10_000; index++) {
    assert.equal(await abortable(Promise.resolve(index), signal), index);
  }
  assert.equal(added, 10_000);
  assert.equal(removed, 10_000);
});

Deno.test("onAbort() runs once and can be unregistered", () => {
  const controller = new AbortController();
  const seen: unknown[] = [];
  const remove = onAbort(controller.signal, (reason) => seen.push(reason));
  const removeOther = onAbort(controller.signal, () => seen.push("other"));
  removeOther();
  controller.abort("why");
  controller.abort("again");
  remove();
  assert.deepEqual(seen, ["why"]);
  assert.doesNotThrow(() => onAbort(undefined, () => {})());
});

Deno.test("Deferred settles once", async () => {
  const deferred = new Deferred<number>();
  deferred.resolve(1);
  deferred.resolve(2);
  deferred.reject(new Error("late"));
  assert.equal(deferred.isSettled, true);
  assert.equal(await deferred.promise, 1);
  const handled = new Deferred<number>({ handled: true });
  handled.reject(new Error("nobody listens"));
  await assert.rejects(handled.promise);
});
