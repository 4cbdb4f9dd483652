import assert from "node:assert/strict";
import { MicrotaskOnce } from "../../src/util/microtask_once.ts";

Deno.test("MicrotaskOnce runs once per burst of schedule() calls, after the turn, and again for a later burst", async () => {
  let runs = 0;
  const once = new MicrotaskOnce(() => runs++);
  once.schedule();
  once.schedule();
  once.schedule();
  assert.equal(runs, 0);
  await Promise.resolve();
  assert.equal(runs, 1);
  once.schedule();
  await Promise.resolve();
  assert.equal(runs, 2);
});
