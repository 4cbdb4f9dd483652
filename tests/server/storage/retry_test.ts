import assert from "node:assert/strict";
import {
  backoffDelayMs,
  isTransientKvError,
  retryKv,
} from "../../../src/server/storage/retry.ts";
import { delay } from "../../../src/util/delay.ts";

Deno.test("isTransientKvError() tells passing failures from permanent ones", () => {
  assert.equal(isTransientKvError(new TypeError("database is locked")), true);
  assert.equal(isTransientKvError(new Error("connection reset by peer")), true);
  assert.equal(
    isTransientKvError(new TypeError("Value too large (max 65536 bytes)")),
    false,
  );
  assert.equal(isTransientKvError("database is locked"), false);
});

Deno.test("backoffDelayMs() grows exponentially, capped at 1 s, with full jitter", () => {
  assert.equal(backoffDelayMs(1, () => 0.999), 10);
  assert.equal(backoffDelayMs(3, () => 0.999), 40);
  assert.equal(backoffDelayMs(30, () => 0.999), 1000);
  assert.equal(backoffDelayMs(30, () => 0), 1);
});

Deno.test("retryKv() retries transient errors and returns the result", async () => {
  let calls = 0;
  const retried: number[] = [];
  const result = await retryKv(() => {
    calls++;
    return calls < 3
      ? Promise.reject(new TypeError("database is locked"))
      : Promise.resolve("done");
  }, {
    signal: AbortSignal.timeout(5000),
    onRetry: (_, attempt) => retried.push(attempt),
  });
  assert.equal(result, "done");
  assert.deepEqual(retried, [1, 2]);
});

Deno.test("retryKv() throws permanent errors at once and transient ones after the last attempt", async () => {
  let calls = 0;
  await assert.rejects(
    () =>
      retryKv(() => {
        calls++;
        return Promise.reject(new TypeError("Value too large"));
      }, { signal: AbortSignal.timeout(5000) }),
    new TypeError("Value too large"),
  );
  assert.equal(calls, 1);
  calls = 0;
  await assert.rejects(
    () =>
      retryKv(() => {
        calls++;
        return Promise.reject(new TypeError("database is locked"));
      }, { signal: AbortSignal.timeout(5000), attempts: 3 }),
    new TypeError("database is locked"),
  );
  assert.equal(calls, 3);
});

Deno.test("delay() rejects with the signal's reason and leaves no timer", async () => {
  const reason = new Error("stop");
  await assert.rejects(
    () => delay(10, AbortSignal.abort(reason)),
    (error) => error === reason,
  );
  const controller = new AbortController();
  const waiting = delay(60_000, controller.signal);
  controller.abort(reason);
  await assert.rejects(() => waiting, (error) => error === reason);
});
