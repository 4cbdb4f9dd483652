// Conformance: the App option defaults docs/CLIENT.md lists, observed through
// behaviour with an injected clock (the public `clock` option): the backoff
// bounds, the ping interval, the read timeout, the connect timeout, the
// linger time — and the wake-from-sleep liveness check.

import assert from "node:assert/strict";
import { App } from "../../mod.ts";
import {
  type ProxiedClient,
  proxiedClient,
  recordConnectionStates,
} from "./_helpers.ts";
import { bounded, condition } from "../_helpers/waits.ts";
import { FakeClock } from "../_helpers/fake_clock.ts";

/** A client whose app has every documented default, only time and randomness injected. */
async function defaultsClient(clock: FakeClock): Promise<ProxiedClient> {
  const client = await proxiedClient({
    app: (baseUrl) => new App({ baseUrl, clock, random: () => 0.5 }),
  });
  try {
    assert.equal(client.server.stats().connections, 1);
  } catch (error) {
    await client[Symbol.asyncDispose]();
    throw error;
  }
  return client;
}

Deno.test("App defaults: reconnect backoff is full jitter within min(30 s, 1 s × 2^(n−1))", async () => {
  const clock = new FakeClock(Date.now());
  await using client = await defaultsClient(clock);
  const { proxy, app, session } = client;
  await using states = recordConnectionStates(session);
  proxy.mode = "refuse";
  proxy.dropAll();
  // random() = 0.5: each delay is half its bound.
  const expected = [500, 1_000, 2_000, 4_000, 8_000, 15_000, 15_000];
  let from = 0;
  for (let attempt = 1; attempt <= expected.length; attempt++) {
    const change = await states.until(
      (s) => s.current === "disconnected" && s.retry?.attempt === attempt,
      { from },
    );
    from = states.items.indexOf(change) + 1;
    const delay = change.retry!.nextAttemptAt - clock.now();
    assert.ok(
      Math.abs(delay - expected[attempt - 1]!) <= 1,
      `retry ${attempt}: delay ${delay}, expected ${expected[attempt - 1]}`,
    );
    assert.deepEqual(session.retry, change.retry);
    // One millisecond early, nothing dials.
    const dialsBefore = proxy.accepted;
    clock.advance(delay - 1);
    assert.equal(session.connectionState, "disconnected");
    clock.advance(1);
    await states.until((s) => s.current === "connecting", { from });
    await condition(
      (poke) => proxy.onConnection(poke),
      () => proxy.accepted > dialsBefore,
    );
  }
  // maxAttempts defaults to unlimited: still retrying, not "error".
  assert.equal(session.state, "active");
  // app.reconnect() resets the backoff: the next failure is retry 1 again.
  app.reconnect();
  const reset = await states.until(
    (s) => s.current === "disconnected" && s.retry !== undefined,
    { from },
  );
  from = states.items.indexOf(reset) + 1;
  assert.equal(reset.retry!.attempt, 1);
  assert.ok(reset.retry!.nextAttemptAt - clock.now() <= 500);
  proxy.mode = "forward";
  app.reconnect();
  await states.until((s) => s.current === "connected", { from });
});

Deno.test("App defaults: a PING every 30 s; 120 s without inbound data is a dead connection", async () => {
  const clock = new FakeClock(Date.now());
  await using client = await defaultsClient(clock);
  const { proxy, app, session } = client;
  await using states = recordConnectionStates(session);
  // Ping interval: no PING (so no round-trip figure) in the first 29 s.
  // A MARK round trip on the same socket would carry any PONG before it.
  assert.equal(session.stats().rttMs, undefined);
  clock.advance(29_000);
  await session.waitForDownload({ signal: bounded() });
  assert.equal(session.stats().rttMs, undefined, "no PING before 30 s");
  // Within 30 s of the last activity, a PING goes out and a PONG comes back.
  let toClient = 0;
  clock.advance(30_000);
  await condition(
    (poke) =>
      proxy.onChunk((direction) => {
        if (direction === "toClient") toClient++;
        poke();
      }),
    () => toClient > 0,
  );
  // The PONG arrived before the answer to this MARK.
  await session.waitForDownload({ signal: bounded() });
  assert.equal(typeof session.stats().rttMs, "number");

  // Read timeout: silence the link; nothing arrives from now on.
  proxy.silence();
  clock.advance(119_000);
  assert.equal(session.connectionState, "connected", "still alive at 119 s");
  assert.deepEqual(states.items, []);
  // Dead by readTimeout + pingInterval at the latest.
  clock.advance(31_000);
  const lost = await states.until((s) => s.current === "disconnected");
  assert.equal(lost.error?.code, "read_timeout");
  proxy.dropSilent();
  app.reconnect();
  await states.until((s) => s.current === "connected");
});

Deno.test("App defaults: a connection attempt that gets no answer fails after 30 s", async () => {
  const clock = new FakeClock(Date.now());
  await using client = await defaultsClient(clock);
  const { proxy, app, session } = client;
  await using states = recordConnectionStates(session);
  proxy.mode = "blackhole";
  const before = proxy.accepted;
  app.reconnect();
  await states.until((s) => s.current === "connecting");
  await condition(
    (poke) => proxy.onConnection(poke),
    () => proxy.accepted > before,
  );
  clock.advance(29_999);
  assert.equal(session.connectionState, "connecting");
  clock.advance(1);
  const failed = await states.until((s) => s.current === "disconnected", {
    from: 1,
  });
  assert.equal(failed.error?.code, "connect_timeout");
  proxy.mode = "forward";
  proxy.dropSilent();
  app.reconnect();
  await states.until((s) => s.current === "connected");
});

Deno.test("App defaults: an idle connection closes 30 s after its last session", async () => {
  const clock = new FakeClock(Date.now());
  await using client = await defaultsClient(clock);
  const { server, proxy, realm } = client;
  await realm.close();
  // The server has seen the session go (a round trip of its own).
  await condition(
    (poke) => proxy.onChunk(poke),
    () => server.stats().sessions === 0,
  );
  clock.advance(29_999);
  assert.equal(server.stats().connections, 1, "still lingering at 29.999 s");
  const open = proxy.openConnections;
  clock.advance(1);
  await condition(
    (poke) => proxy.onConnection(poke),
    () => proxy.openConnections < open,
  );
});

Deno.test("Keepalive: after a long timer delay (the machine slept), liveness is checked at once with a short deadline", async () => {
  const clock = new FakeClock(Date.now());
  await using client = await defaultsClient(clock);
  const { proxy, app, session } = client;
  await using states = recordConnectionStates(session);
  proxy.silence();
  // The process sleeps 100 s: the 30 s ping timer fires 70 s late, well
  // before the 120 s read timeout would.
  clock.jump(100_000);
  assert.equal(session.connectionState, "connected");
  // A short deadline (wakeTimeoutMs, 5 s by default), not the read timeout.
  clock.advance(5_000);
  const lost = await states.until((s) => s.current === "disconnected");
  assert.equal(lost.error?.code, "read_timeout");
  proxy.dropSilent();
  app.reconnect();
  await states.until((s) => s.current === "connected");
});

Deno.test("App defaults: the backoff starts again once a connection has stayed up (10 s), not before", async () => {
  const clock = new FakeClock(Date.now());
  await using client = await defaultsClient(clock);
  const { proxy, session } = client;
  await using states = recordConnectionStates(session);
  let from = 0;
  const nextRetry = async () => {
    const change = await states.until(
      (s) => s.current === "disconnected" && s.retry !== undefined,
      { from },
    );
    from = states.items.indexOf(change) + 1;
    return change.retry!;
  };
  // Grow the backoff: three failed attempts.
  proxy.mode = "refuse";
  proxy.dropAll();
  for (let attempt = 1; attempt <= 3; attempt++) {
    const retry = await nextRetry();
    assert.equal(retry.attempt, attempt);
    if (attempt < 3) clock.advance(retry.nextAttemptAt - clock.now());
  }
  // The next dial succeeds, but the connection drops before 10 s: the
  // backoff keeps growing.
  proxy.mode = "forward";
  clock.advance(session.retry!.nextAttemptAt - clock.now());
  await states.until((s) => s.current === "connected", { from });
  clock.advance(9_000);
  proxy.dropAll();
  const early = await nextRetry();
  assert.equal(early.attempt, 4);
  // Connected again and up for 10 s: the next loss is retry 1 again.
  clock.advance(early.nextAttemptAt - clock.now());
  await states.until((s) => s.current === "connected", { from });
  clock.advance(10_000);
  proxy.dropAll();
  const fresh = await nextRetry();
  assert.equal(fresh.attempt, 1);
  assert.ok(fresh.nextAttemptAt - clock.now() <= 500);
  clock.advance(fresh.nextAttemptAt - clock.now());
  await states.until((s) => s.current === "connected", { from });
});
