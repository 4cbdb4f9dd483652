import assert from "node:assert/strict";
import { systemClock, Timer } from "../../src/util/clock.ts";
import { FakeClock } from "../_helpers/fake_clock.ts";

Deno.test("Timer fires once after its delay and reports how late it was", () => {
  const clock = new FakeClock();
  const timer = new Timer(clock);
  const late: number[] = [];
  timer.start((lateMs) => late.push(lateMs), 100);
  assert.equal(timer.isRunning, true);
  clock.advance(99);
  assert.equal(late.length, 0);
  clock.advance(1);
  assert.deepEqual(late, [0]);
  assert.equal(timer.isRunning, false);
  timer.start((lateMs) => late.push(lateMs), 100);
  clock.sleep(5_000);
  clock.advance(0);
  assert.deepEqual(late, [0, 4_900]);
});

Deno.test("Timer.start() replaces the pending callback; stop() leaves nothing behind", () => {
  const clock = new FakeClock();
  const timer = new Timer(clock);
  const seen: string[] = [];
  timer.start(() => seen.push("first"), 10);
  timer.start(() => seen.push("second"), 20);
  assert.equal(clock.pending, 1);
  clock.advance(30);
  assert.deepEqual(seen, ["second"]);
  timer.start(() => seen.push("third"), 10);
  timer.stop();
  timer.stop();
  assert.equal(clock.pending, 0);
});

Deno.test("systemClock schedules and cancels real timers", async () => {
  const handle = systemClock.setTimeout(() => {
    throw new Error("must not fire");
  }, 1);
  systemClock.clearTimeout(handle);
  const timer = new Timer(systemClock);
  await new Promise<void>((resolve) => timer.start(() => resolve(), 1));
  assert.equal(timer.isRunning, false);
});
