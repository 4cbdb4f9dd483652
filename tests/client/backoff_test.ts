import assert from "node:assert/strict";
import {
  DEFAULT_RECONNECT,
  nextDelay,
  resolveReconnectOptions,
} from "../../src/client/backoff.ts";
import { Prng, testSeed } from "../_helpers/prng.ts";

Deno.test("nextDelay() is a full-jitter draw under min(maxDelayMs, minDelayMs × multiplier^attempt)", () => {
  const options = { minDelayMs: 100, maxDelayMs: 5_000, multiplier: 3 };
  assert.equal(nextDelay(0, options, () => 0), 0);
  assert.equal(nextDelay(0, options, () => 0.5), 50);
  assert.equal(nextDelay(1, options, () => 0.5), 150);
  assert.equal(nextDelay(2, options, () => 0.5), 450);
  assert.equal(nextDelay(10, options, () => 0.5), 2_500);
  assert.equal(nextDelay(10, options, () => 0.999999), 4_999);
});

Deno.test("nextDelay() uses the documented defaults: 1 s, doubling, capped at 30 s", () => {
  assert.deepEqual(DEFAULT_RECONNECT, {
    minDelayMs: 1_000,
    maxDelayMs: 30_000,
    multiplier: 2,
    maxAttempts: Infinity,
    resetAfterMs: 10_000,
  });
  const bounds = [0, 1, 2, 3, 4, 5, 6].map((attempt) =>
    nextDelay(attempt, {}, () => 0.999999999) + 1
  );
  assert.deepEqual(bounds, [
    1_000,
    2_000,
    4_000,
    8_000,
    16_000,
    30_000,
    30_000,
  ]);
});

Deno.test("nextDelay() stays within [0, maxDelayMs] for 10,000 seeded draws", () => {
  const seed = testSeed();
  const random = new Prng(seed);
  for (let index = 0; index < 10_000; index++) {
    const attempt = random.int(2_000);
    const delay = nextDelay(
      attempt,
      { maxDelayMs: 7_000 },
      () => random.next(),
    );
    assert.ok(delay >= 0 && delay <= 7_000, `seed ${seed}: ${delay}`);
    assert.ok(Number.isInteger(delay), `seed ${seed}`);
  }
  assert.equal(nextDelay(5_000, { minDelayMs: 0 }, () => 0.5), 0);
});

Deno.test("nextDelay() throws RangeError for attempt -1 and treats a broken random source as 0.5", () => {
  assert.throws(() => nextDelay(-1), RangeError);
  assert.throws(() => nextDelay(1.5), RangeError);
  assert.equal(nextDelay(0, {}, () => NaN), 500);
  assert.equal(nextDelay(0, {}, () => 1), 500);
});

Deno.test("resolveReconnectOptions() fills defaults and rejects nonsense", () => {
  assert.deepEqual(resolveReconnectOptions({ maxAttempts: 3 }), {
    ...DEFAULT_RECONNECT,
    maxAttempts: 3,
  });
  assert.throws(() => resolveReconnectOptions({ minDelayMs: -1 }), RangeError);
  assert.throws(() => resolveReconnectOptions({ maxDelayMs: NaN }), RangeError);
  assert.throws(
    () => resolveReconnectOptions({ minDelayMs: 10, maxDelayMs: 5 }),
    RangeError,
  );
  assert.throws(() => resolveReconnectOptions({ multiplier: 0.5 }), RangeError);
  assert.throws(() => resolveReconnectOptions({ maxAttempts: 0 }), RangeError);
  assert.throws(
    () => resolveReconnectOptions({ maxAttempts: 2.5 }),
    RangeError,
  );
});
