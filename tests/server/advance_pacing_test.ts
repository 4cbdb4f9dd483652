import assert from "node:assert/strict";
import {
  ADVANCE_PACING,
  AdvancePacer,
  type AdvancePacing,
} from "../../src/server/advance_pacing.ts";

const PACING: AdvancePacing = {
  quietMs: 100,
  maxDeferMs: 1_000,
  maxBytes: 10_000,
  minIntervalMs: 500,
};

Deno.test("AdvancePacer: a due advance waits until the server's writes pause", () => {
  const pacer = new AdvancePacer(PACING);
  pacer.wrote(100);
  pacer.due(0);
  assert.equal(pacer.startAt(0, 0), 100);
  // Every write, to this realm or another, moves the start while they go on.
  assert.equal(pacer.startAt(70, 60), 160);
  assert.equal(pacer.startAt(160, 150), 250);
  // Once they pause, it starts.
  assert.equal(pacer.startAt(250, 150), 250);
  assert.equal(pacer.startAt(400, 150), 400);
});

Deno.test("AdvancePacer: writes that never pause wait at most maxDeferMs", () => {
  const pacer = new AdvancePacer(PACING);
  pacer.due(0);
  let now = 0;
  for (; now < 2_000; now += 10) {
    pacer.wrote(10);
    if (pacer.startAt(now, now) <= now) break;
  }
  assert.equal(now, PACING.maxDeferMs);
});

Deno.test("AdvancePacer: writes that never pause start it once maxBytes of the realm's history piled up", () => {
  const pacer = new AdvancePacer(PACING);
  pacer.due(0);
  let now = 0;
  for (; now < 2_000; now += 10) {
    pacer.wrote(1_000);
    if (pacer.startAt(now, now) <= now) break;
  }
  // The bytes since the last advance started count, not only since due.
  assert.equal(now, 90);
});

Deno.test("AdvancePacer: advances are minIntervalMs apart, pause or not", () => {
  const pacer = new AdvancePacer(PACING);
  pacer.due(0);
  assert.equal(pacer.startAt(0, Number.NEGATIVE_INFINITY), 0);
  pacer.started();
  assert.equal(pacer.isDue, false);
  pacer.ended(40);
  pacer.due(40);
  assert.equal(pacer.startAt(40, Number.NEGATIVE_INFINITY), 540);
  // Bytes do not override the interval either.
  pacer.wrote(1_000_000);
  assert.equal(pacer.startAt(60, 50), 540);
  assert.equal(pacer.startAt(600, 50), 600);
});

Deno.test("AdvancePacer: becoming due again keeps the first due time", () => {
  const pacer = new AdvancePacer(PACING);
  pacer.due(0);
  pacer.due(900);
  pacer.wrote(1);
  // The deadline counts from 0, not from 900.
  assert.equal(pacer.startAt(960, 950), 1_000);
  pacer.started();
  pacer.ended(1_000);
  pacer.due(2_000);
  pacer.wrote(1);
  assert.equal(pacer.startAt(2_000, 2_000), 2_100);
});

Deno.test("AdvancePacer: the server's pacing is a pause of 200 ms, 10 s or 4 MiB at most", () => {
  assert.deepEqual(ADVANCE_PACING, {
    quietMs: 200,
    maxDeferMs: 10_000,
    maxBytes: 4 * 1024 * 1024,
    minIntervalMs: 500,
  });
  const pacer = new AdvancePacer();
  pacer.due(0);
  assert.equal(pacer.startAt(0, Number.NEGATIVE_INFINITY), 0);
  assert.equal(pacer.startAt(0, 0), 200);
});
