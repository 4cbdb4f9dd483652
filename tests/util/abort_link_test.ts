// Tests for linkAbort: abort reasons, already-aborted sources, and that a link leaves nothing on its sources.
import assert from "node:assert/strict";
import { linkAbort } from "../../src/util/abort_link.ts";
import { countAbortListeners as listeners } from "../_helpers/abort_listeners.ts";

Deno.test("linkAbort() aborts with the reason of the first source that aborts, unchanged", () => {
  const first = new AbortController();
  const second = new AbortController();
  const link = linkAbort([first.signal, second.signal]);
  const seen: unknown[] = [];
  link.signal.addEventListener("abort", () => seen.push(link.signal.reason));
  assert.equal(link.signal.aborted, false);
  const reason = { why: "second" };
  second.abort(reason);
  first.abort(new Error("later"));
  assert.equal(link.signal.reason, reason);
  assert.deepEqual(seen, [reason]);
  link.dispose();
});

Deno.test("linkAbort() aborts at once with the first already-aborted source's reason and registers nothing", () => {
  const live = new AbortController();
  const count = listeners(live.signal);
  const reason = new Error("gone");
  const link = linkAbort([
    live.signal,
    AbortSignal.abort(reason),
    AbortSignal.abort(new Error("also gone")),
  ]);
  assert.equal(link.signal.aborted, true);
  assert.equal(link.signal.reason, reason);
  assert.equal(count(), 0);
  link.dispose();
});

Deno.test("linkAbort() skips absent sources; with none it never aborts", () => {
  const source = new AbortController();
  const link = linkAbort([undefined, source.signal, undefined]);
  source.abort("why");
  assert.equal(link.signal.reason, "why");
  const none = linkAbort([undefined]);
  assert.equal(none.signal.aborted, false);
  none.dispose();
});

Deno.test("linkAbort() dispose removes its listener from every source, and a later abort does not reach the link", () => {
  const lifetime = new AbortController();
  const request = new AbortController();
  const lifetimeCount = listeners(lifetime.signal);
  const requestCount = listeners(request.signal);
  const link = linkAbort([lifetime.signal, request.signal]);
  assert.equal(lifetimeCount(), 1);
  assert.equal(requestCount(), 1);
  link.dispose();
  assert.equal(lifetimeCount(), 0);
  assert.equal(requestCount(), 0);
  lifetime.abort(new Error("shutdown"));
  assert.equal(link.signal.aborted, false);
});

Deno.test("linkAbort() dispose is idempotent", () => {
  const source = new AbortController();
  const count = listeners(source.signal);
  const other = linkAbort([source.signal]);
  const link = linkAbort([source.signal]);
  link.dispose();
  link.dispose();
  // The second dispose removed nothing of the other link's.
  assert.equal(count(), 1);
  source.abort("why");
  assert.equal(other.signal.reason, "why");
  assert.equal(link.signal.aborted, false);
  other.dispose();
});

Deno.test("linkAbort() lets go of every source on the first abort, before its own listeners run", () => {
  const first = new AbortController();
  const second = new AbortController();
  const firstCount = listeners(first.signal);
  const secondCount = listeners(second.signal);
  const link = linkAbort([first.signal, second.signal]);
  const during: number[] = [];
  link.signal.addEventListener("abort", () => {
    during.push(firstCount(), secondCount());
    // A listener that aborts another source does not re-enter the link.
    second.abort(new Error("second"));
  });
  first.abort("first");
  assert.deepEqual(during, [0, 0]);
  assert.equal(link.signal.reason, "first");
  link.dispose();
});

Deno.test("linkAbort() once per request leaves no listener on a long-lived source (10,000 links)", () => {
  const lifetime = new AbortController();
  const count = listeners(lifetime.signal);
  for (let index = 0; index < 10_000; index++) {
    const request = new AbortController();
    const link = linkAbort([lifetime.signal, request.signal]);
    try {
      if (index % 2 === 0) request.abort(new Error("client left"));
    } finally {
      link.dispose();
    }
  }
  assert.equal(count(), 0);
  lifetime.abort();
});

Deno.test("linkAbort() starts no timer", () => {
  const saved = { setTimeout, setInterval };
  let timers = 0;
  globalThis.setTimeout = ((...args: Parameters<typeof setTimeout>) => {
    timers++;
    return saved.setTimeout(...args);
  }) as typeof setTimeout;
  globalThis.setInterval = ((...args: Parameters<typeof setInterval>) => {
    timers++;
    return saved.setInterval(...args);
  }) as typeof setInterval;
  try {
    const source = new AbortController();
    const link = linkAbort([source.signal, AbortSignal.abort()]);
    const other = linkAbort([source.signal]);
    source.abort();
    link.dispose();
    other.dispose();
  } finally {
    globalThis.setTimeout = saved.setTimeout;
    globalThis.setInterval = saved.setInterval;
  }
  assert.equal(timers, 0);
});
