import assert from "node:assert/strict";
import { TokenDeadline } from "../../src/server/token_deadline.ts";
import { FakeClock } from "../_helpers/fake_clock.ts";

Deno.test("TokenDeadline fires once the armed expiry passes, not before", () => {
  const clock = new FakeClock();
  let expired = 0;
  const deadline = new TokenDeadline(clock, () => expired++);
  deadline.arm(clock.now() + 1000);
  clock.advance(999);
  assert.equal(expired, 0);
  clock.advance(1);
  assert.equal(expired, 1);
  assert.equal(clock.pending, 0);
});

Deno.test("TokenDeadline: arming a later expiry (a REFRESH) replaces the earlier one", () => {
  const clock = new FakeClock();
  let expired = 0;
  const deadline = new TokenDeadline(clock, () => expired++);
  deadline.arm(clock.now() + 1000);
  clock.advance(500);
  deadline.arm(clock.now() + 1000);
  clock.advance(999);
  assert.equal(expired, 0);
  clock.advance(1);
  assert.equal(expired, 1);
});

Deno.test("TokenDeadline: an infinite expiry arms nothing; stop() cancels", () => {
  const clock = new FakeClock();
  let expired = 0;
  const deadline = new TokenDeadline(clock, () => expired++);
  deadline.arm(Infinity);
  assert.equal(clock.pending, 0);
  deadline.arm(clock.now() + 10);
  deadline.stop();
  clock.advance(100);
  assert.equal(expired, 0);
  assert.equal(clock.pending, 0);
});

Deno.test("TokenDeadline: a wait past the 32-bit timer limit re-arms instead of firing early", () => {
  const clock = new FakeClock();
  let expired = 0;
  const deadline = new TokenDeadline(clock, () => expired++);
  const limit = 2 ** 31 - 1;
  deadline.arm(clock.now() + limit + 5000);
  clock.advance(limit);
  assert.equal(expired, 0);
  assert.equal(clock.pending, 1);
  clock.advance(5000);
  assert.equal(expired, 1);
});
