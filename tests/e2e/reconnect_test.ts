import assert from "node:assert/strict";
import { SyncError } from "../../src/client/sync_error.ts";
import type { ConnectionStateChange } from "../../src/client/sync_session.ts";
import type { SyncSession } from "../../src/client/sync_session.ts";
import { MessageType } from "../../src/protocol/messages.ts";
import { anonymousClient, recordingWebSocket } from "../_helpers/e2e.ts";
import { TcpProxy } from "../_helpers/tcp_proxy.ts";
import { startTestServer } from "../_helpers/test_server.ts";

/** Resolves with the first state change matching `predicate`. */
async function nextChange(
  session: SyncSession,
  predicate: (change: ConnectionStateChange) => boolean,
  signal = AbortSignal.timeout(10_000),
): Promise<ConnectionStateChange> {
  for await (const change of session.connectionStateChanges({ signal })) {
    if (predicate(change)) return change;
  }
  throw signal.reason ?? new Error("The session's state stream ended");
}

async function withDataDir<T>(fn: (kv: string) => Promise<T>): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix: "tether-reconnect-" });
  try {
    return await fn(`${dir}/sync.kv`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("Connection after a server restart (same port, same KV) every session binds again with its cursor: no full re-download", async () => {
  await withDataDir(async (kv) => {
    const first = await startTestServer({ kv });
    const port = first.server.addr.port;
    const recording = recordingWebSocket();
    const client = await anonymousClient(first.url, {
      WebSocket: recording.WebSocket,
    });
    try {
      const one = await client.user.openRealm({
        path: "/~/one",
        waitForDownload: true,
      });
      const two = await client.user.openRealm({
        path: "/~/two",
        waitForDownload: true,
      });
      await one.write((tx) => {
        for (let index = 0; index < 500; index++) {
          tx.put("T", `${index}`, { index });
        }
      });
      await one.syncSession.waitForUpload({
        signal: AbortSignal.timeout(5_000),
      });
      // The cursor moves past the client's own changeset in a DOWNLOAD that
      // may follow the acknowledgement.
      await one.syncSession.waitForDownload({
        signal: AbortSignal.timeout(5_000),
      });
      const lost = nextChange(
        one.syncSession,
        (change) => change.current === "disconnected",
      );
      await first.server.shutdown();
      const change = await lost;
      assert.equal(change.error?.code, "server_shutting_down");
      assert.equal(change.error?.willRetry, true);
      assert.ok(change.retry !== undefined && change.retry.attempt >= 1);
      const socketsBefore = recording.sockets.length;
      const framesBefore = recording.frames.length;
      await using second = await startTestServer({ kv, port });
      await one.syncSession.waitForDownload({
        signal: AbortSignal.timeout(10_000),
      });
      await two.syncSession.waitForDownload({
        signal: AbortSignal.timeout(10_000),
      });
      assert.ok(recording.sockets.length > socketsBefore);
      // Both sessions bound again on the new socket, with their cursors.
      const after = recording.frames.slice(framesBefore);
      const binds = after.filter((frame) =>
        frame.direction === "out" && frame.message.type === MessageType.Bind
      )
        .map((frame) =>
          frame.message as {
            path: string;
            clientIdentity: unknown;
            downloadCursor: number;
          }
        );
      assert.deepEqual(binds.map((bind) => bind.path).sort(), [
        "/~/one",
        "/~/two",
      ]);
      assert.ok(binds.every((bind) => bind.clientIdentity !== null));
      assert.ok(
        binds.find((bind) => bind.path === "/~/one")!.downloadCursor >= 1,
      );
      // Nothing already held was downloaded again.
      const downloaded = after.filter((frame) =>
        frame.direction === "in" &&
        frame.message.type === MessageType.Download &&
        frame.message.changesets.length > 0
      );
      assert.deepEqual(downloaded, []);
      assert.equal(one.objects("T").length, 500);
      assert.equal(one.syncSession.stats().reconnects, 1);
      await one.write((tx) => tx.put("T", "after", {}));
      await one.syncSession.waitForUpload({
        signal: AbortSignal.timeout(5_000),
      });
      void second;
      await one.close();
      await two.close();
    } finally {
      await client.app.close();
    }
  });
});

Deno.test("App.reconnect() beats a long configured backoff", async () => {
  await withDataDir(async (kv) => {
    const first = await startTestServer({ kv });
    const port = first.server.addr.port;
    const client = await anonymousClient(first.url, {
      reconnect: { minDelayMs: 600_000, maxDelayMs: 600_000 },
      random: () => 0.9,
    });
    try {
      const realm = await client.user.openRealm({
        path: "/~/r",
        waitForDownload: true,
      });
      const lost = nextChange(
        realm.syncSession,
        (change) => change.retry !== undefined,
      );
      await first.server.shutdown();
      const change = await lost;
      // 0.9 × 10 minutes: far beyond this test's bound.
      assert.ok(change.retry!.nextAttemptAt >= Date.now() + 500_000);
      await using second = await startTestServer({ kv, port });
      const connected = nextChange(
        realm.syncSession,
        (c) => c.current === "connected",
        AbortSignal.timeout(5_000),
      );
      client.app.reconnect();
      await connected;
      assert.equal(realm.syncSession.retry, undefined);
      void second;
      await realm.close();
    } finally {
      await client.app.close();
    }
  });
});

Deno.test("Connection detects a silent socket by the read timeout and reconnects on its own", async () => {
  await using server = await startTestServer();
  await using proxy = new TcpProxy({
    hostname: "127.0.0.1",
    port: server.server.addr.port,
  });
  const client = await anonymousClient(proxy.url, {
    keepalive: { pingIntervalMs: 50, readTimeoutMs: 300 },
  });
  try {
    const realm = await client.user.openRealm({
      path: "/~/silent",
      waitForDownload: true,
    });
    const lost = nextChange(
      realm.syncSession,
      (change) => change.current === "disconnected",
    );
    const accepted = proxy.accepted;
    proxy.silence();
    const change = await lost;
    assert.equal(change.error?.code, "read_timeout");
    assert.equal(
      change.error?.message,
      "No data from the server within 300 ms",
    );
    assert.equal(change.retry?.attempt, 1);
    await realm.syncSession.waitForDownload({
      signal: AbortSignal.timeout(5_000),
    });
    assert.equal(realm.syncSession.connectionState, "connected");
    assert.equal(proxy.accepted, accepted + 1);
    await realm.close();
  } finally {
    await client.app.close();
  }
});

Deno.test("App.reconnect() replaces a silent-but-open socket at once (no read timeout needed)", async () => {
  await using server = await startTestServer();
  await using proxy = new TcpProxy({
    hostname: "127.0.0.1",
    port: server.server.addr.port,
  });
  const client = await anonymousClient(proxy.url, {
    keepalive: { pingIntervalMs: 60_000, readTimeoutMs: 600_000 },
  });
  try {
    const realm = await client.user.openRealm({
      path: "/~/s",
      waitForDownload: true,
    });
    proxy.silence();
    await realm.write((tx) => tx.put("T", "x", {}));
    const changes: string[] = [];
    const controller = new AbortController();
    const reading = (async () => {
      for await (
        const change of realm.syncSession.connectionStateChanges({
          signal: controller.signal,
        })
      ) {
        changes.push(
          `${change.previous}→${change.current}${
            change.error ? " " + change.error.code : ""
          }`,
        );
      }
    })();
    client.app.reconnect();
    await realm.syncSession.waitForUpload({
      signal: AbortSignal.timeout(5_000),
    });
    controller.abort();
    await reading;
    assert.deepEqual(changes, ["connected→connecting", "connecting→connected"]);
    await realm.close();
  } finally {
    await client.app.close();
  }
});

Deno.test("Connection a healthy idle connection never flaps: many pings answered, no state change", async () => {
  await using server = await startTestServer();
  const recording = recordingWebSocket();
  const client = await anonymousClient(server.url, {
    WebSocket: recording.WebSocket,
    keepalive: { pingIntervalMs: 20, readTimeoutMs: 100 },
  });
  try {
    const realm = await client.user.openRealm({
      path: "/~/idle",
      waitForDownload: true,
    });
    const changes: ConnectionStateChange[] = [];
    const controller = new AbortController();
    const reading = (async () => {
      for await (
        const change of realm.syncSession.connectionStateChanges({
          signal: controller.signal,
        })
      ) {
        changes.push(change);
      }
    })();
    // Wait for the event meant: 30 PONGs (about 6 read timeouts' worth).
    await recording.waitFor(
      (f) => f.direction === "in" && f.message.type === MessageType.Pong,
      30,
      AbortSignal.timeout(10_000),
    );
    controller.abort();
    await reading;
    assert.deepEqual(changes, []);
    assert.equal(recording.sockets.length, 1);
    assert.ok(realm.syncSession.stats().rttMs !== undefined);
    await realm.close();
  } finally {
    await client.app.close();
  }
});

Deno.test("Connection reconnect.maxAttempts failed attempts in a row put the session in error with reconnect_gave_up", async () => {
  const server = await startTestServer();
  const client = await anonymousClient(server.url, {
    reconnect: { minDelayMs: 5, maxDelayMs: 20, maxAttempts: 3 },
  });
  try {
    const realm = await client.user.openRealm({
      path: "/~/g",
      waitForDownload: true,
    });
    const retries: number[] = [];
    let final: ConnectionStateChange | undefined;
    // Watching from before the shutdown: the first retry can start (its
    // delay is drawn from [0, 5) ms) before shutdown() has returned.
    const watching = (async () => {
      try {
        for await (
          const change of realm.syncSession.connectionStateChanges({
            signal: AbortSignal.timeout(10_000),
          })
        ) {
          if (change.retry) retries.push(change.retry.attempt);
          final = change;
        }
      } catch (error) {
        assert.ok(
          error instanceof SyncError && error.code === "reconnect_gave_up",
        );
      }
    })();
    await server.server.shutdown();
    const waiting = assert.rejects(
      realm.syncSession.waitForDownload({
        signal: AbortSignal.timeout(10_000),
      }),
      (error) =>
        error instanceof SyncError && error.code === "reconnect_gave_up",
    );
    await watching;
    await waiting;
    // The first retry follows the lost connection; then three failed dials.
    assert.deepEqual(retries, [1, 2, 3]);
    assert.equal(final?.current, "disconnected");
    assert.equal(final?.error?.code, "reconnect_gave_up");
    assert.equal(final?.retry, undefined);
    assert.equal(realm.syncSession.state, "error");
    assert.equal(realm.syncSession.error?.isFatal, true);
    await realm.close();
  } finally {
    await client.app.close();
  }
});

Deno.test("App an `online` event (browsers) retries a waiting connection at once", async () => {
  await withDataDir(async (kv) => {
    const first = await startTestServer({ kv });
    const port = first.server.addr.port;
    const client = await anonymousClient(first.url, {
      reconnect: { minDelayMs: 600_000, maxDelayMs: 600_000 },
      random: () => 0.9,
    });
    try {
      const realm = await client.user.openRealm({
        path: "/~/online",
        waitForDownload: true,
      });
      const lost = nextChange(
        realm.syncSession,
        (change) => change.retry !== undefined,
      );
      await first.server.shutdown();
      await lost;
      await using second = await startTestServer({ kv, port });
      const connected = nextChange(
        realm.syncSession,
        (change) => change.current === "connected",
        AbortSignal.timeout(5_000),
      );
      globalThis.dispatchEvent(new Event("online"));
      await connected;
      void second;
      await realm.close();
    } finally {
      await client.app.close();
    }
  });
});

Deno.test("SyncSession connectionState and the change stream always agree", async () => {
  await withDataDir(async (kv) => {
    const first = await startTestServer({ kv });
    const port = first.server.addr.port;
    const client = await anonymousClient(first.url);
    try {
      const realm = await client.user.openRealm({ path: "/~/agree" });
      const session = realm.syncSession;
      const seen: string[] = [];
      const controller = new AbortController();
      const reading = (async () => {
        for await (
          const change of session.connectionStateChanges({
            signal: controller.signal,
          })
        ) {
          // Read as each change is delivered: the getter says the same or
          // has already moved on to a later state that is also reported.
          seen.push(change.current);
        }
      })();
      await session.waitForDownload({ signal: AbortSignal.timeout(5_000) });
      session.pause();
      session.resume();
      await session.waitForDownload({ signal: AbortSignal.timeout(5_000) });
      await first.server.shutdown();
      await using second = await startTestServer({ kv, port });
      await session.waitForDownload({ signal: AbortSignal.timeout(10_000) });
      controller.abort();
      await reading;
      void second;
      // Every transition once, in order, ending where the getter is.
      assert.equal(seen.at(-1), session.connectionState);
      for (let index = 1; index < seen.length; index++) {
        assert.notEqual(seen[index], seen[index - 1]);
      }
      assert.deepEqual(seen.slice(0, 4), [
        "connected",
        "disconnected",
        "connecting",
        "connected",
      ]);
      await realm.close();
    } finally {
      await client.app.close();
    }
  });
});
