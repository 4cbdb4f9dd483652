import assert from "node:assert/strict";
import { SyncError } from "../../src/client/sync_error.ts";
import type { ConnectionStateChange } from "../../src/client/sync_session.ts";
import type { Progress } from "../../src/client/progress.ts";
import { MessageType } from "../../src/protocol/messages.ts";
import {
  anonymousClient,
  collect,
  recordingWebSocket,
} from "../_helpers/e2e.ts";
import { startTestServer } from "../_helpers/test_server.ts";

function transitions(changes: ConnectionStateChange[]): string[] {
  return changes.map((change) =>
    `${change.previous}→${change.current}${
      change.error ? ` ${change.error.code}` : ""
    }${change.retry ? ` retry ${change.retry.attempt}` : ""}`
  );
}

Deno.test("Sessions share one WebSocket: three sessions, one paused — it sends nothing, the others carry on, it resumes and uploads", async () => {
  await using server = await startTestServer();
  const recording = recordingWebSocket();
  const client = await anonymousClient(server.url, {
    WebSocket: recording.WebSocket,
  });
  try {
    const [one, two, three] = await Promise.all(
      ["/~/one", "/~/two", "/~/three"].map((path) =>
        client.user.openRealm({ path, waitForDownload: true })
      ),
    );
    assert.equal(recording.sockets.length, 1);
    assert.equal(server.server.stats().connections, 1);
    assert.equal(server.server.stats().sessions, 3);
    const paused = two!.syncSession;
    const bind = recording.frames.find((frame) =>
      frame.direction === "out" && frame.message.type === MessageType.Bind &&
      frame.message.path === "/~/two"
    )!.message as { sessionId: number };
    paused.pause();
    assert.equal(paused.state, "inactive");
    assert.equal(paused.connectionState, "disconnected");
    const mark = recording.frames.length;
    await two!.write((tx) => tx.put("T", "while-paused", { n: 1 }));
    await one!.write((tx) => tx.put("T", "one", {}));
    await three!.write((tx) => tx.put("T", "three", {}));
    await one!.syncSession.waitForUpload({
      signal: AbortSignal.timeout(5_000),
    });
    await three!.syncSession.waitForUpload({
      signal: AbortSignal.timeout(5_000),
    });
    // app.reconnect() replaces the socket; the paused session stays paused.
    client.app.reconnect();
    await one!.syncSession.waitForDownload({
      signal: AbortSignal.timeout(5_000),
    });
    await three!.syncSession.waitForDownload({
      signal: AbortSignal.timeout(5_000),
    });
    const afterPause = recording.frames.slice(mark).filter((frame) =>
      frame.direction === "out"
    );
    assert.equal(
      afterPause.some((frame) =>
        (frame.message.type === MessageType.Bind &&
          frame.message.path === "/~/two") ||
        ("sessionId" in frame.message &&
          frame.message.sessionId === bind.sessionId &&
          frame.message.type !== MessageType.Unbind)
      ),
      false,
    );
    assert.equal(one!.syncSession.connectionState, "connected");
    assert.equal(three!.syncSession.connectionState, "connected");
    assert.equal(paused.stats().pendingUploadChangesets, 1);
    paused.resume();
    await paused.waitForUpload({ signal: AbortSignal.timeout(5_000) });
    assert.equal(paused.stats().pendingUploadChangesets, 0);
    assert.equal(paused.connectionState, "connected");
    for (const realm of [one, two, three]) await realm!.close();
  } finally {
    await client.app.close();
  }
});

Deno.test("Session opened while the socket is up still reports connecting → connected; closing one session leaves the socket to the others", async () => {
  await using server = await startTestServer();
  const recording = recordingWebSocket();
  const client = await anonymousClient(server.url, {
    WebSocket: recording.WebSocket,
  });
  try {
    const first = await client.user.openRealm({
      path: "/~/first",
      waitForDownload: true,
    });
    const second = await client.user.openRealm({ path: "/~/second" });
    assert.equal(second.syncSession.connectionState, "connecting");
    const controller = new AbortController();
    const changes = collect(
      second.syncSession.connectionStateChanges({ signal: controller.signal }),
    );
    await second.syncSession.waitForDownload({
      signal: AbortSignal.timeout(5_000),
    });
    await first.close();
    await second.write((tx) => tx.put("T", "x", {}));
    await second.syncSession.waitForUpload({
      signal: AbortSignal.timeout(5_000),
    });
    controller.abort();
    assert.deepEqual(transitions(await changes), ["connecting→connected"]);
    assert.equal(recording.sockets.length, 1);
    assert.equal(recording.sockets[0]!.readyState, WebSocket.OPEN);
    await second.close();
  } finally {
    await client.app.close();
  }
});

Deno.test("openRealm without waitForDownload opens a forbidden path; the session reports permission_denied and the socket stays for the others", async () => {
  await using server = await startTestServer();
  const owner = await anonymousClient(server.url);
  const other = await anonymousClient(server.url);
  try {
    await using good = await other.user.openRealm({
      path: "/~/mine",
      waitForDownload: true,
    });
    await using forbidden = await other.user.openRealm({
      path: `/${owner.user.id}/secret`,
    });
    const session = forbidden.syncSession;
    const states = collect(
      session.connectionStateChanges({ signal: AbortSignal.timeout(5_000) }),
    )
      .catch((error) => error);
    await assert.rejects(
      session.waitForDownload({ signal: AbortSignal.timeout(5_000) }),
      (error) =>
        error instanceof SyncError && error.code === "permission_denied" &&
        error.isFatal,
    );
    assert.equal(session.state, "error");
    assert.equal(session.error?.code, "permission_denied");
    assert.equal(session.connectionState, "disconnected");
    // Never reported connected; the state stream ends with the error.
    const streamError = await states;
    assert.ok(
      streamError instanceof SyncError &&
        streamError.code === "permission_denied",
    );
    // Local writes still work; the other session is untouched.
    await forbidden.write((tx) => tx.put("T", "local", {}));
    assert.deepEqual(forbidden.get("T", "local"), {});
    await good.write((tx) => tx.put("T", "x", {}));
    await good.syncSession.waitForUpload({
      signal: AbortSignal.timeout(5_000),
    });
    assert.equal(good.syncSession.connectionState, "connected");
  } finally {
    await owner.app.close();
    await other.app.close();
  }
});

Deno.test("openRealm with waitForDownload rejects on a forbidden path with permission_denied and closes what it opened", async () => {
  await using server = await startTestServer();
  const owner = await anonymousClient(server.url);
  const other = await anonymousClient(server.url);
  try {
    const path = `/${owner.user.id}/secret`;
    await assert.rejects(
      other.user.openRealm({
        path,
        waitForDownload: true,
        signal: AbortSignal.timeout(5_000),
      }),
      (error) =>
        error instanceof SyncError && error.code === "permission_denied",
    );
    assert.equal(other.user.sessionFor(path), undefined);
    assert.deepEqual(other.user.allSessions, []);
  } finally {
    await owner.app.close();
    await other.app.close();
  }
});

Deno.test("openRealm without waitForDownload opens offline; the session shows the retry schedule", async () => {
  const server = await startTestServer();
  const client = await anonymousClient(server.url, {
    reconnect: { minDelayMs: 10_000, maxDelayMs: 10_000 },
  });
  try {
    await server.server.shutdown();
    const realm = await client.user.openRealm({ path: "/~/offline" });
    await realm.write((tx) => tx.put("T", "x", { n: 1 }));
    assert.deepEqual(realm.get("T", "x"), { n: 1 });
    const [change] = await collect(
      realm.syncSession.connectionStateChanges({
        signal: AbortSignal.timeout(5_000),
      }),
      1,
    );
    assert.equal(change!.current, "disconnected");
    assert.equal(change!.error?.code, "connection_lost");
    assert.equal(change!.retry?.attempt, 1);
    assert.deepEqual(realm.syncSession.retry, change!.retry);
    assert.equal(realm.syncSession.stats().pendingUploadChangesets, 1);
    await realm.close();
  } finally {
    await client.app.close();
  }
});

async function seedBigRealm(url: string, objects: number) {
  const writer = await anonymousClient(url);
  try {
    const source = await writer.user.openRealm({ path: "/shared/big" });
    for (let batch = 0; batch < objects / 1_000; batch++) {
      await source.write((tx) => {
        for (let index = 0; index < 1_000; index++) {
          tx.put("Item", `${batch}-${index}`, {
            batch,
            index,
            text: "some text of forty characters, roughly.",
          });
        }
      });
    }
    await source.syncSession.waitForUpload({
      signal: AbortSignal.timeout(20_000),
    });
    await source.close();
  } finally {
    await writer.app.close();
  }
}

Deno.test("openRealm({ waitForDownload, onProgress }) reports the initial download: never decreasing, one final 1.0, data there on resolve", async () => {
  await using server = await startTestServer({
    permissions: () => "readwrite",
  });
  await seedBigRealm(server.url, 8_000);
  const reader = await anonymousClient(server.url);
  try {
    const seen: Progress[] = [];
    await using realm = await reader.user.openRealm({
      path: "/shared/big",
      waitForDownload: true,
      onProgress: (p) => seen.push(p),
      signal: AbortSignal.timeout(20_000),
    });
    assert.equal(realm.objects("Item").length, 8_000);
    assert.ok(seen.length >= 2, `only ${seen.length} reports`);
    const estimates = seen.map((p) => p.progressEstimate);
    for (let index = 1; index < estimates.length; index++) {
      assert.ok(estimates[index]! >= estimates[index - 1]!, `${estimates}`);
    }
    assert.equal(estimates.filter((e) => e === 1).length, 1);
    assert.equal(estimates.at(-1), 1);
    const total = seen[0]!.transferableBytes;
    assert.ok(
      seen.every((p) => p.transferableBytes === total),
      "the captured total never grows",
    );
    assert.deepEqual(seen.at(-1), {
      transferredBytes: total,
      transferableBytes: total,
      progressEstimate: 1,
      isTransferComplete: true,
    });
  } finally {
    await reader.app.close();
  }
});

Deno.test("openRealm({ waitForDownload, onProgress, signal }) aborted mid-way rejects with the reason and closes what it opened", async () => {
  await using server = await startTestServer({
    permissions: () => "readwrite",
  });
  await seedBigRealm(server.url, 8_000);
  const reader = await anonymousClient(server.url);
  try {
    const controller = new AbortController();
    const reason = new Error("the user went back");
    let reports = 0;
    await assert.rejects(
      reader.user.openRealm({
        path: "/shared/big",
        waitForDownload: true,
        onProgress: () => {
          reports++;
          controller.abort(reason);
        },
        signal: controller.signal,
      }),
      (error) => error === reason,
    );
    assert.equal(reports, 1);
    assert.equal(reader.user.sessionFor("/shared/big"), undefined);
    assert.deepEqual(reader.user.allSessions, []);
    // The open can be tried again and completes.
    await using realm = await reader.user.openRealm({
      path: "/shared/big",
      waitForDownload: true,
      signal: AbortSignal.timeout(20_000),
    });
    assert.equal(realm.objects("Item").length, 8_000);
  } finally {
    await reader.app.close();
  }
});

Deno.test("openRealm rejects at once, opening nothing, for an already-aborted signal", async () => {
  await using server = await startTestServer();
  const client = await anonymousClient(server.url);
  try {
    const reason = new Error("never mind");
    await assert.rejects(
      client.user.openRealm({
        path: "/~/x",
        signal: AbortSignal.abort(reason),
      }),
      (error) => error === reason,
    );
    assert.deepEqual(client.user.allSessions, []);
    await assert.rejects(
      client.user.openRealm({ path: "/~/x", storage: { kvPath: "" } }),
      {
        name: "TypeError",
        message: "Cannot open realm: storage.kvPath must be a non-empty string",
      },
    );
  } finally {
    await client.app.close();
  }
});
