// Progress over real sockets: the expected figures are computed from the
// frames that really crossed the wire (recorded through the App's WebSocket
// seam), so every event sequence is asserted in full.
import assert from "node:assert/strict";
import type { Progress } from "../../src/client/progress.ts";
import { SyncError } from "../../src/client/sync_error.ts";
import {
  encodeMessage,
  encodeUploadChangeset,
} from "../../src/protocol/encode.ts";
import {
  type DownloadMessage,
  MessageType,
  type UploadMessage,
} from "../../src/protocol/messages.ts";
import {
  anonymousClient,
  collect,
  recordingWebSocket,
  type SeenFrame,
} from "../_helpers/e2e.ts";
import { startTestServer } from "../_helpers/test_server.ts";

type Event = [number, number, number];

function recorder() {
  const events: Event[] = [];
  const callback = (_t: number, _T: number, p: Progress) =>
    events.push([p.transferredBytes, p.transferableBytes, p.progressEstimate]);
  return { events, callback };
}

function dedupe(events: Event[]): Event[] {
  return events.filter((event, index) =>
    index === 0 || event.some((value, i) => value !== events[index - 1]![i])
  );
}

function downloadsFor(frames: SeenFrame[], sessionId: number) {
  return frames
    .filter((frame) =>
      frame.direction === "in" && frame.message.type === MessageType.Download &&
      frame.message.sessionId === sessionId
    )
    .map((frame) => ({
      bytes: frame.bytes,
      message: frame.message as DownloadMessage,
    }));
}

function bindOf(frames: SeenFrame[], path: string): number {
  const bind = frames.find((frame) =>
    frame.direction === "out" && frame.message.type === MessageType.Bind &&
    frame.message.path === path
  );
  return (bind!.message as { sessionId: number }).sessionId;
}

async function seed(
  url: string,
  writes: number,
  perWrite: number,
): Promise<void> {
  const writer = await anonymousClient(url);
  try {
    const realm = await writer.user.openRealm({ path: "/shared/p" });
    for (let write = 0; write < writes; write++) {
      await realm.write((tx) => {
        for (let index = 0; index < perWrite; index++) {
          tx.put("Item", `${write}-${index}`, {
            write,
            index,
            text: "progress test payload",
          });
        }
      });
    }
    await realm.syncSession.waitForUpload({
      signal: AbortSignal.timeout(20_000),
    });
    await realm.close();
  } finally {
    await writer.app.close();
  }
}

Deno.test("SyncSession download progress over real sockets: both modes asserted in full from the DOWNLOADs received, exact to the captured total", async () => {
  // Small DOWNLOAD batches so the bootstrap takes several frames.
  await using server = await startTestServer({
    permissions: () => "readwrite",
    downloadBatchBytes: 16 * 1024,
  });
  await seed(server.url, 10, 400);
  const recording = recordingWebSocket();
  const reader = await anonymousClient(server.url, {
    WebSocket: recording.WebSocket,
  });
  try {
    const realm = await reader.user.openRealm({ path: "/shared/p" });
    const session = realm.syncSession;
    // Registered before the first figure: both start with the bootstrap.
    const indefinitely = recorder();
    const outstanding = recorder();
    session.addProgressNotification(
      "download",
      "reportIndefinitely",
      indefinitely.callback,
    );
    session.addProgressNotification(
      "download",
      "forCurrentlyOutstandingWork",
      outstanding.callback,
    );
    await session.waitForDownload({ signal: AbortSignal.timeout(20_000) });
    assert.equal(realm.objects("Item").length, 4_000);
    await recording.settled();
    const downloads = downloadsFor(
      recording.frames,
      bindOf(recording.frames, "/shared/p"),
    );
    assert.ok(
      downloads.filter((d) => d.message.changesets.length > 0).length >= 3,
    );
    // The server's figures are exact (nobody writes meanwhile): each
    // DOWNLOAD takes its changesetBytes off the count the one before left.
    const total = downloads[0]!.message.changesetBytes +
      downloads[0]!.message.downloadableBytes;
    let left = total;
    for (const { message } of downloads) {
      assert.equal(message.changesetBytes + message.downloadableBytes, left);
      left = message.downloadableBytes;
    }
    assert.equal(left, 0);
    // So both modes report the bytes taken off so far against that total,
    // DOWNLOAD by DOWNLOAD (never held back), and end exactly at it.
    const expected: Event[] = [];
    let transferred = 0;
    for (const { message } of downloads) {
      transferred += message.changesetBytes;
      expected.push([
        transferred,
        total,
        transferred === total ? 1 : transferred / total,
      ]);
    }
    assert.deepEqual(indefinitely.events, dedupe(expected));
    assert.deepEqual(outstanding.events, dedupe(expected));
    assert.deepEqual(outstanding.events.at(-1), [total, total, 1]);
    assert.ok(outstanding.events.length >= 4, "intermediate steps show");
    const estimates = outstanding.events.map((event) => event[2]);
    assert.deepEqual(estimates, [...estimates].sort((a, b) => a - b));
    await realm.close();
  } finally {
    await reader.app.close();
  }
});

Deno.test("SyncSession upload progress over real sockets: both modes in full; transferred only once acknowledged; captured total never grows", async () => {
  await using server = await startTestServer();
  const recording = recordingWebSocket();
  const client = await anonymousClient(server.url, {
    WebSocket: recording.WebSocket,
  });
  try {
    const realm = await client.user.openRealm({
      path: "/~/up",
      waitForDownload: true,
    });
    const session = realm.syncSession;
    session.pause();
    for (let write = 0; write < 5; write++) {
      await realm.write((tx) => {
        for (let index = 0; index < 50; index++) {
          tx.put("T", `${write}-${index}`, { write, index });
        }
      });
    }
    const total = session.stats().pendingUploadBytes;
    const indefinitely = recorder();
    const outstanding = recorder();
    session.addProgressNotification(
      "upload",
      "reportIndefinitely",
      indefinitely.callback,
    );
    session.addProgressNotification(
      "upload",
      "forCurrentlyOutstandingWork",
      outstanding.callback,
    );
    // Work committed after the registration is not part of its capture.
    await realm.write((tx) => tx.put("T", "late", { n: 1 }));
    const late = session.stats().pendingUploadBytes - total;
    const mark = recording.frames.length;
    session.resume();
    await session.waitForUpload({ signal: AbortSignal.timeout(10_000) });
    await new Promise((resolve) => queueMicrotask(() => resolve(undefined)));
    await recording.settled();
    // Sizes of the uploaded changesets, and the acknowledgements received.
    const sizes = new Map<number, number>();
    for (const frame of recording.frames.slice(mark)) {
      if (
        frame.direction === "out" && frame.message.type === MessageType.Upload
      ) {
        for (const changeset of (frame.message as UploadMessage).changesets) {
          sizes.set(
            changeset.clientVersion,
            encodeUploadChangeset(changeset).byteLength,
          );
        }
      }
    }
    assert.equal([...sizes.values()].reduce((a, b) => a + b, 0), total + late);
    const sessionId = bindOf(recording.frames.slice(mark), "/~/up");
    const acks = downloadsFor(recording.frames.slice(mark), sessionId).map((
      d,
    ) => d.message.lastIntegratedClientVersion);
    const acknowledgedBytes = (version: number) =>
      [...sizes].filter(([v]) => v <= version).reduce(
        (sum, [, bytes]) => sum + bytes,
        0,
      );
    const expectIndefinitely: Event[] = [[0, total, 0], [0, total + late, 0]];
    const expectOutstanding: Event[] = [[0, total, 0]];
    for (const ack of acks) {
      const acked = acknowledgedBytes(ack);
      expectIndefinitely.push([
        acked,
        total + late,
        acked === total + late ? 1 : acked / (total + late),
      ]);
      if (expectOutstanding.at(-1)![2] < 1) {
        const moved = ack >= 5 ? total : Math.min(total, acked);
        expectOutstanding.push([
          moved,
          total,
          moved === total ? 1 : moved / total,
        ]);
      }
    }
    assert.deepEqual(indefinitely.events, dedupe(expectIndefinitely));
    assert.deepEqual(outstanding.events, dedupe(expectOutstanding));
    assert.deepEqual(outstanding.events.at(-1), [total, total, 1]);
    await realm.close();
  } finally {
    await client.app.close();
  }
});

Deno.test("SyncSession getProgressStream(forCurrentlyOutstandingWork) ends after exactly one final 1.0 event; nothing outstanding → one 1.0 event", async () => {
  await using server = await startTestServer();
  const client = await anonymousClient(server.url);
  try {
    await using realm = await client.user.openRealm({
      path: "/~/s",
      waitForDownload: true,
    });
    const session = realm.syncSession;
    for (const direction of ["upload", "download"] as const) {
      assert.deepEqual(
        await collect(
          session.getProgressStream(direction, "forCurrentlyOutstandingWork", {
            signal: AbortSignal.timeout(5_000),
          }),
        ),
        [{
          transferredBytes: 0,
          transferableBytes: 0,
          progressEstimate: 1,
          isTransferComplete: true,
        }],
      );
    }
    await realm.write((tx) => {
      for (let index = 0; index < 200; index++) {
        tx.put("T", `${index}`, { index });
      }
    });
    const events = await collect(
      session.getProgressStream("upload", "forCurrentlyOutstandingWork", {
        signal: AbortSignal.timeout(5_000),
      }),
    );
    assert.equal(events.filter((p) => p.progressEstimate === 1).length, 1);
    assert.equal(events.at(-1)!.isTransferComplete, true);
    assert.equal(events.at(-1)!.transferredBytes, events[0]!.transferableBytes);
  } finally {
    await client.app.close();
  }
});

Deno.test("SyncSession a progress registration while figures are known receives the latest at once", async () => {
  await using server = await startTestServer();
  const client = await anonymousClient(server.url);
  try {
    await using realm = await client.user.openRealm({
      path: "/~/k",
      waitForDownload: true,
    });
    await realm.write((tx) => tx.put("T", "a", {}));
    await realm.syncSession.waitForUpload({
      signal: AbortSignal.timeout(5_000),
    });
    await realm.syncSession.waitForDownload({
      signal: AbortSignal.timeout(5_000),
    });
    const reader = realm.syncSession.getProgressStream(
      "upload",
      "reportIndefinitely",
    ).getReader();
    const first = await reader.read();
    assert.equal(first.value?.isTransferComplete, true);
    assert.ok(first.value!.transferredBytes > 0);
    await reader.cancel();
    const download = realm.syncSession.getProgressStream(
      "download",
      "reportIndefinitely",
      {
        signal: AbortSignal.timeout(5_000),
      },
    ).getReader();
    // Known (caught up after the MARK) even with nothing downloaded.
    assert.deepEqual((await download.read()).value, {
      transferredBytes: 0,
      transferableBytes: 0,
      progressEstimate: 1,
      isTransferComplete: true,
    });
    await download.cancel();
  } finally {
    await client.app.close();
  }
});

Deno.test("SyncSession on an errored session addProgressNotification returns null and streams error with the session's error", async () => {
  await using server = await startTestServer();
  const owner = await anonymousClient(server.url);
  const client = await anonymousClient(server.url);
  try {
    await using realm = await client.user.openRealm({
      path: `/${owner.user.id}/x`,
    });
    const live = collect(
      realm.syncSession.getProgressStream("download", "reportIndefinitely"),
    );
    const rejectsDenied = (promise: Promise<unknown>) =>
      assert.rejects(
        promise,
        (e) => e instanceof SyncError && e.code === "permission_denied",
      );
    await rejectsDenied(
      realm.syncSession.waitForDownload({ signal: AbortSignal.timeout(5_000) }),
    );
    await rejectsDenied(live);
    assert.equal(
      realm.syncSession.addProgressNotification(
        "upload",
        "reportIndefinitely",
        () => {},
      ),
      null,
    );
    await rejectsDenied(
      collect(
        realm.syncSession.getProgressStream(
          "upload",
          "forCurrentlyOutstandingWork",
        ),
      ),
    );
  } finally {
    await owner.app.close();
    await client.app.close();
  }
});

Deno.test("SyncSession bootstraps from a server that deflates DOWNLOAD frames: progress in the server's changesetBytes, stats in wire bytes", async () => {
  await using server = await startTestServer({
    permissions: () => "readwrite",
    compression: true,
    downloadBatchBytes: 32 * 1024,
  });
  await seed(server.url, 10, 400);
  const recording = recordingWebSocket();
  const reader = await anonymousClient(server.url, {
    WebSocket: recording.WebSocket,
  });
  try {
    const seen: Progress[] = [];
    const realm = await reader.user.openRealm({
      path: "/shared/p",
      waitForDownload: true,
      onProgress: (p) => seen.push(p),
      signal: AbortSignal.timeout(20_000),
    });
    assert.equal(realm.objects("Item").length, 4_000);
    await recording.settled();
    const downloads = downloadsFor(
      recording.frames,
      bindOf(recording.frames, "/shared/p"),
    ).filter((d) => d.message.changesets.length > 0);
    assert.ok(downloads.length >= 3);
    const wire = downloads.reduce((sum, d) => sum + d.bytes, 0);
    const inflated = downloads.reduce(
      (sum, d) => sum + encodeMessage(d.message).byteLength,
      0,
    );
    // Deflated on the wire.
    assert.ok(wire < inflated, `${wire} < ${inflated}`);
    // Progress is in the unit of the server's figures, whatever the frames
    // weigh: the captured total is what the DOWNLOADs took off the count,
    // every report is a sum of their changesetBytes, and the bar ends
    // exactly at the captured total.
    const captured = seen[0]!.transferableBytes;
    assert.equal(
      captured,
      downloads.reduce((sum, d) => sum + d.message.changesetBytes, 0),
    );
    const sums = new Set<number>();
    let sum = 0;
    for (const d of downloads) sums.add(sum += d.message.changesetBytes);
    for (const p of seen) {
      assert.equal(p.transferableBytes, captured);
      assert.ok(sums.has(p.transferredBytes), `${p.transferredBytes}`);
    }
    assert.deepEqual(seen.at(-1), {
      transferredBytes: captured,
      transferableBytes: captured,
      progressEstimate: 1,
      isTransferComplete: true,
    });
    const estimates = seen.map((p) => p.progressEstimate);
    assert.deepEqual(estimates, [...estimates].sort((a, b) => a - b));
    assert.ok(estimates.some((e) => e > 0.3 && e < 0.9), `${estimates}`);
    assert.ok(realm.syncSession.stats().bytesReceived < inflated);
    await realm.close();
  } finally {
    await reader.app.close();
  }
});
