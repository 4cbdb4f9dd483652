import assert from "node:assert/strict";
import {
  DEFAULT_KEEPALIVE,
  Keepalive,
  resolveKeepaliveOptions,
} from "../../src/client/keepalive.ts";
import { FakeClock } from "../_helpers/fake_clock.ts";

function setup(
  options = { pingIntervalMs: 1_000, readTimeoutMs: 3_000, wakeTimeoutMs: 500 },
) {
  const clock = new FakeClock();
  const pings: number[] = [];
  const deaths: string[] = [];
  const keepalive = new Keepalive(clock, options, {
    sendPing: (timestamp) => pings.push(timestamp - clock.start),
    onDead: (reason) => deaths.push(reason),
  });
  return { clock, pings, deaths, keepalive };
}

Deno.test("Keepalive pings every pingIntervalMs while the server answers", () => {
  const { clock, pings, deaths, keepalive } = setup();
  keepalive.start();
  for (let second = 0; second < 10; second++) {
    clock.advance(1_000);
    keepalive.notePong(clock.now() - 7);
  }
  assert.deepEqual(pings, [
    1_000,
    2_000,
    3_000,
    4_000,
    5_000,
    6_000,
    7_000,
    8_000,
    9_000,
    10_000,
  ]);
  assert.deepEqual(deaths, []);
  assert.equal(keepalive.rttMs, 7);
  keepalive.stop();
  assert.equal(clock.pending, 0);
});

Deno.test("Keepalive declares the connection dead after readTimeoutMs without inbound data", () => {
  const { clock, deaths, keepalive } = setup();
  keepalive.start();
  clock.advance(2_999);
  assert.deepEqual(deaths, []);
  clock.advance(1);
  assert.deepEqual(deaths, ["read_timeout"]);
  assert.equal(clock.pending, 0);
});

Deno.test("Keepalive charges no time the process did not run to the link: a read timer late by more than half the read timeout checks liveness instead", () => {
  const { clock, pings, deaths, keepalive } = setup({
    pingIntervalMs: 20,
    readTimeoutMs: 100,
    wakeTimeoutMs: 5_000,
  });
  keepalive.start();
  clock.advance(10);
  keepalive.noteInbound();
  // The process is starved for 300 ms (a busy loop, a loaded machine): the
  // next timer fires 280 ms late, the PONGs still unread.
  clock.sleep(300);
  clock.advance(0);
  assert.deepEqual(deaths, []);
  assert.equal(keepalive.isCheckingLiveness, true);
  assert.equal(pings.at(-1), 310);
  // The waiting input is read: the link lives.
  keepalive.notePong(clock.now() - 1);
  assert.equal(keepalive.isCheckingLiveness, false);
  clock.advance(99);
  assert.deepEqual(deaths, []);
  // A link that really went silent is still found: the check's deadline
  // is min(wakeTimeoutMs, readTimeoutMs) after the check's ping.
  keepalive.stop();
  keepalive.start();
  clock.sleep(300);
  clock.advance(0);
  assert.equal(keepalive.isCheckingLiveness, true);
  clock.advance(99);
  assert.deepEqual(deaths, []);
  clock.advance(1);
  assert.deepEqual(deaths, ["wake_timeout"]);
  assert.equal(clock.pending, 0);
});

Deno.test("Keepalive counts any inbound message as life, so a long download is never cut", () => {
  const { clock, deaths, keepalive } = setup();
  keepalive.start();
  // Data (no PONG at all) every 2.5 s for a minute: the read timeout of
  // 3 s never fires.
  for (let tick = 0; tick < 24; tick++) {
    clock.advance(2_500);
    keepalive.noteInbound();
  }
  assert.deepEqual(deaths, []);
  keepalive.stop();
});

Deno.test("Keepalive after a sleep pings at once and gives the server only wakeTimeoutMs", () => {
  const { clock, pings, deaths, keepalive } = setup();
  keepalive.start();
  clock.advance(500);
  // The machine sleeps for ten minutes; timers fire late on waking.
  clock.sleep(600_000);
  clock.advance(0);
  assert.deepEqual(pings, [600_500]);
  assert.equal(keepalive.isCheckingLiveness, true);
  assert.deepEqual(deaths, []);
  clock.advance(499);
  assert.deepEqual(deaths, []);
  clock.advance(1);
  assert.deepEqual(deaths, ["wake_timeout"]);
});

Deno.test("Keepalive after a sleep keeps a connection that answers the check", () => {
  const { clock, pings, deaths, keepalive } = setup();
  keepalive.start();
  clock.sleep(60_000);
  clock.advance(0);
  assert.equal(pings.length, 1);
  clock.advance(100);
  keepalive.notePong(clock.now() - 100);
  assert.equal(keepalive.isCheckingLiveness, false);
  // Back to the normal schedule: the wake deadline no longer applies.
  for (let tick = 0; tick < 10; tick++) {
    clock.advance(1_000);
    keepalive.notePong(clock.now());
  }
  assert.deepEqual(deaths, []);
  assert.equal(pings.length, 11);
  keepalive.stop();
});

Deno.test("Keepalive checkNow() (network back) uses the short deadline", () => {
  const { clock, deaths, keepalive } = setup();
  keepalive.start();
  keepalive.checkNow();
  clock.advance(500);
  assert.deepEqual(deaths, ["wake_timeout"]);
});

Deno.test("Keepalive ignores events while stopped", () => {
  const { clock, pings, deaths, keepalive } = setup();
  keepalive.noteInbound();
  keepalive.checkNow();
  clock.advance(100_000);
  assert.deepEqual(pings, []);
  assert.deepEqual(deaths, []);
  assert.equal(clock.pending, 0);
});

Deno.test("resolveKeepaliveOptions() fills the documented defaults and rejects non-positive values", () => {
  assert.deepEqual(DEFAULT_KEEPALIVE, {
    pingIntervalMs: 30_000,
    readTimeoutMs: 120_000,
    wakeTimeoutMs: 5_000,
    responseTimeoutMs: 120_000,
  });
  // The response timeout follows the read timeout unless set on its own.
  assert.deepEqual(resolveKeepaliveOptions({ readTimeoutMs: 10 }), {
    ...DEFAULT_KEEPALIVE,
    readTimeoutMs: 10,
    responseTimeoutMs: 10,
  });
  assert.deepEqual(
    resolveKeepaliveOptions({ readTimeoutMs: 10, responseTimeoutMs: 20 }),
    { ...DEFAULT_KEEPALIVE, readTimeoutMs: 10, responseTimeoutMs: 20 },
  );
  for (const bad of [0, -1, NaN, Infinity]) {
    assert.throws(
      () => resolveKeepaliveOptions({ responseTimeoutMs: bad }),
      RangeError,
    );
  }
  assert.throws(
    () => resolveKeepaliveOptions({ pingIntervalMs: 0 }),
    RangeError,
  );
  assert.throws(
    () => resolveKeepaliveOptions({ readTimeoutMs: Infinity }),
    RangeError,
  );
});
