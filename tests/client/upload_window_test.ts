import assert from "node:assert/strict";
import { UploadWindow } from "../../src/client/upload_window.ts";

/** Lets the window's queued wake-up run. */
async function turn(): Promise<void> {
  await Promise.resolve();
  await Promise.resolve();
}

/** A session that sends `bytes` per frame into `window` when woken. */
function session(
  window: UploadWindow,
  bytes: number,
  log: string[],
  name: string,
) {
  const self = {
    sent: 0,
    wake: () => self.trySend(),
    trySend(): boolean {
      if (!window.fits(bytes)) {
        window.wait(self.wake);
        return false;
      }
      window.take(bytes);
      self.sent++;
      log.push(name);
      return true;
    },
  };
  return self;
}

Deno.test("UploadWindow: frames take room up to the limit, one always goes into an empty window, and a release frees room", () => {
  assert.throws(() => new UploadWindow(0), RangeError);
  const window = new UploadWindow(100);
  assert.equal(window.fits(60), true);
  window.take(60);
  assert.equal(window.fits(40), true);
  assert.equal(window.fits(41), false);
  window.release(60);
  assert.equal(window.inFlightBytes, 0);
  // Larger than the whole window: goes alone.
  assert.equal(window.fits(1_000), true);
  window.take(1_000);
  assert.equal(window.fits(1), false);
  window.release(1_000);
  assert.equal(window.fits(100), true);
});

Deno.test("UploadWindow: sessions that find it full are woken in the order they waited, and one acknowledged meanwhile does not pass them", async () => {
  const window = new UploadWindow(100);
  const log: string[] = [];
  const a = session(window, 50, log, "a");
  const b = session(window, 50, log, "b");
  const c = session(window, 50, log, "c");
  assert.ok(a.trySend());
  assert.ok(a.trySend());
  assert.equal(b.trySend(), false);
  assert.equal(c.trySend(), false);
  assert.equal(window.waiting, 2);
  // A's first frame is acknowledged, and A at once has more to send: it
  // waits behind B and C instead of taking the room back.
  window.release(50);
  assert.equal(a.trySend(), false);
  await turn();
  assert.deepEqual(log, ["a", "a", "b"]);
  // B went; C found no room and keeps the head of the line, A after it.
  window.release(50);
  await turn();
  assert.deepEqual(log, ["a", "a", "b", "c"]);
  window.release(50);
  await turn();
  assert.deepEqual(log, ["a", "a", "b", "c", "a"]);
  assert.equal(window.waiting, 0);
});

Deno.test("UploadWindow: a frame larger than the room left waits at the head of the line until the window empties; smaller frames behind it do not pass", async () => {
  const window = new UploadWindow(100);
  const log: string[] = [];
  const small = session(window, 10, log, "small");
  const big = session(window, 500, log, "big");
  const other = session(window, 10, log, "other");
  assert.ok(small.trySend());
  assert.ok(small.trySend());
  assert.equal(big.trySend(), false);
  assert.equal(other.trySend(), false);
  // Room for `other`, but `big` is first in line and still does not fit.
  window.release(10);
  await turn();
  assert.deepEqual(log, ["small", "small"]);
  assert.equal(window.waiting, 2);
  window.release(10);
  await turn();
  // Empty: `big` goes alone; `other` waits for its release.
  assert.deepEqual(log, ["small", "small", "big"]);
  window.release(500);
  await turn();
  assert.deepEqual(log, ["small", "small", "big", "other"]);
});

Deno.test("UploadWindow: forget() takes a session out of the line, and waiting twice keeps one place", async () => {
  const window = new UploadWindow(10);
  const log: string[] = [];
  const a = session(window, 10, log, "a");
  const b = session(window, 10, log, "b");
  a.trySend();
  b.trySend();
  b.trySend();
  assert.equal(window.waiting, 1);
  window.forget(b.wake);
  assert.equal(window.waiting, 0);
  window.release(10);
  await turn();
  assert.deepEqual(log, ["a"]);
});
