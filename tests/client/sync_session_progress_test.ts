// Deterministic tests of the session's progress notifications: the network
// is scripted (fake sockets, fake clock, fake /login) so exact byte figures
// and event sequences can be asserted.
import assert from "node:assert/strict";
import type { Progress } from "../../src/client/progress.ts";
import { MessageType } from "../../src/protocol/messages.ts";
import {
  answerMarks,
  download,
  flush,
  openBound,
  type ProgressEvent,
  recorder,
  remoteChangeset,
} from "../_helpers/scripted_app.ts";

Deno.test("SyncSession upload progress: exact figures in both modes; an upload counts once acknowledged", async () => {
  const { app, realm, socket, sessionId, session } = await openBound();
  try {
    const indefinitely = recorder();
    session.addProgressNotification(
      "upload",
      "reportIndefinitely",
      indefinitely.callback,
    );
    await flush();
    assert.deepEqual(indefinitely.events, [[0, 0, 1]]);
    await realm.write((tx) => tx.put("Task", "1", { title: "one" }));
    const b1 = session.stats().pendingUploadBytes;
    await realm.write((tx) => tx.put("Task", "2", { title: "two" }));
    const b2 = session.stats().pendingUploadBytes - b1;
    const outstanding = recorder();
    session.addProgressNotification(
      "upload",
      "forCurrentlyOutstandingWork",
      outstanding.callback,
    );
    await realm.write((tx) => tx.put("Task", "3", { title: "three" }));
    const b3 = session.stats().pendingUploadBytes - b1 - b2;
    // Uploaded but not acknowledged: nothing counts as transferred yet.
    // Two frames are out, so the third write waits for an acknowledgement.
    assert.equal(socket.sentOf(MessageType.Upload).length, 2);
    await download(socket, sessionId, { ack: 1 });
    assert.equal(socket.sentOf(MessageType.Upload).length, 3);
    await download(socket, sessionId, { ack: 3 });
    await download(socket, sessionId, { ack: 3 });
    const total = b1 + b2 + b3;
    assert.deepEqual(indefinitely.events, [
      [0, 0, 1],
      [0, b1, 0],
      [0, b1 + b2, 0],
      [0, total, 0],
      [b1, total, b1 / total],
      [total, total, 1],
    ]);
    assert.deepEqual(outstanding.events, [
      [0, b1 + b2, 0],
      [b1, b1 + b2, b1 / (b1 + b2)],
      [b1 + b2, b1 + b2, 1],
    ]);
    assert.equal(session.stats().pendingUploadChangesets, 0);
  } finally {
    await app.close();
  }
});

Deno.test("SyncSession download progress: figures are the server's changesetBytes and downloadableBytes, exact to the captured total", async () => {
  const { app, socket, sessionId, session } = await openBound();
  try {
    const outstanding = recorder();
    const indefinitely = recorder();
    // Registered before any figure: captures the first report after it.
    session.addProgressNotification(
      "download",
      "forCurrentlyOutstandingWork",
      outstanding.callback,
    );
    session.addProgressNotification(
      "download",
      "reportIndefinitely",
      indefinitely.callback,
    );
    // The server's count: 4,000 bytes, 1,000 of them in the first DOWNLOAD.
    await download(socket, sessionId, {
      serverVersion: 1,
      downloadableBytes: 3_000,
      changesetBytes: 1_000,
      changesets: [remoteChangeset(1, 20)],
    });
    await download(socket, sessionId, {
      serverVersion: 2,
      downloadableBytes: 2_000,
      changesetBytes: 1_000,
      changesets: [remoteChangeset(2, 20)],
    });
    // An acknowledgement only: nothing taken off the count.
    await download(socket, sessionId, {
      serverVersion: 2,
      downloadableBytes: 2_000,
    });
    // Versions uploaded by this identity on an earlier connection: counted,
    // although skipped.
    await download(socket, sessionId, {
      serverVersion: 4,
      downloadableBytes: 1_500,
      changesetBytes: 500,
    });
    await download(socket, sessionId, {
      serverVersion: 5,
      downloadableBytes: 0,
      changesetBytes: 1_500,
      changesets: [remoteChangeset(5, 30)],
    });
    const steps: ProgressEvent[] = [
      [1_000, 4_000, 0.25],
      [2_000, 4_000, 0.5],
      [2_500, 4_000, 0.625],
      [4_000, 4_000, 1],
    ];
    assert.deepEqual(outstanding.events, steps);
    assert.deepEqual(indefinitely.events, steps);
    // It ended: later downloads reach only the indefinite registration.
    await download(socket, sessionId, {
      serverVersion: 6,
      changesetBytes: 100,
      changesets: [remoteChangeset(6, 1)],
    });
    assert.equal(outstanding.events.length, 4);
    assert.deepEqual(indefinitely.events.at(-1), [4_100, 4_100, 1]);
  } finally {
    await app.close();
  }
});

Deno.test("SyncSession download forCurrentlyOutstandingWork: work announced later never grows the captured total; the capture completes when its MARK is answered", async () => {
  const { app, socket, sessionId, session } = await openBound();
  try {
    await download(socket, sessionId, {
      serverVersion: 1,
      downloadableBytes: 3_000,
      changesetBytes: 1_000,
      changesets: [remoteChangeset(1, 20)],
    });
    const outstanding = recorder();
    const indefinitely = recorder();
    session.addProgressNotification(
      "download",
      "forCurrentlyOutstandingWork",
      outstanding.callback,
    );
    session.addProgressNotification(
      "download",
      "reportIndefinitely",
      indefinitely.callback,
    );
    await flush();
    // Another client uploads 6,000 bytes meanwhile.
    await download(socket, sessionId, {
      serverVersion: 2,
      downloadableBytes: 8_000,
      changesetBytes: 1_000,
      changesets: [remoteChangeset(2, 20)],
    });
    await download(socket, sessionId, {
      serverVersion: 3,
      downloadableBytes: 6_000,
      changesetBytes: 2_000,
      changesets: [remoteChangeset(3, 20)],
    });
    // The 3,000 captured bytes were counted, but only the server's answer
    // to the MARK sent for the registration says that was all of it.
    assert.deepEqual(outstanding.events, [
      [0, 3_000, 0],
      [1_000, 3_000, 1 / 3],
      [2_999, 3_000, 2_999 / 3_000],
    ]);
    assert.equal(await answerMarks(socket), 2);
    assert.deepEqual(outstanding.events.at(-1), [3_000, 3_000, 1]);
    await download(socket, sessionId, {
      serverVersion: 4,
      downloadableBytes: 0,
      changesetBytes: 6_000,
      changesets: [remoteChangeset(4, 20)],
    });
    assert.equal(outstanding.events.length, 4);
    assert.deepEqual(indefinitely.events, [
      [1_000, 4_000, 0.25],
      [2_000, 10_000, 0.2],
      [4_000, 10_000, 0.4],
      [10_000, 10_000, 1],
    ]);
  } finally {
    await app.close();
  }
});

Deno.test("SyncSession forCurrentlyOutstandingWork with nothing outstanding: one 1.0 event, then the stream ends", async () => {
  const { app, socket, session } = await openBound();
  try {
    await answerMarks(socket);
    for (const direction of ["upload", "download"] as const) {
      const seen: Progress[] = [];
      for await (
        const p of session.getProgressStream(
          direction,
          "forCurrentlyOutstandingWork",
          {
            signal: AbortSignal.timeout(5_000),
          },
        )
      ) {
        seen.push(p);
      }
      assert.deepEqual(seen, [{
        transferredBytes: 0,
        transferableBytes: 0,
        progressEstimate: 1,
        isTransferComplete: true,
      }]);
    }
  } finally {
    await app.close();
  }
});

Deno.test("SyncSession a registration while progress is known gets the latest figures at once", async () => {
  const { app, socket, sessionId, session } = await openBound();
  try {
    await download(socket, sessionId, {
      serverVersion: 1,
      downloadableBytes: 500,
      changesetBytes: 700,
      changesets: [remoteChangeset(1, 5)],
    });
    const reader = session.getProgressStream("download", "reportIndefinitely")
      .getReader();
    const first = await reader.read();
    assert.deepEqual(first.value, {
      transferredBytes: 700,
      transferableBytes: 1_200,
      progressEstimate: 700 / 1_200,
      isTransferComplete: false,
    });
    await reader.cancel();
    const late = recorder();
    session.addProgressNotification(
      "download",
      "forCurrentlyOutstandingWork",
      late.callback,
    );
    await flush();
    assert.deepEqual(late.events, [[0, 500, 0]]);
  } finally {
    await app.close();
  }
});

Deno.test("SyncSession merges bursts of progress (progressIntervalMs) but never delays the complete report", async () => {
  const { app, socket, sessionId, session, clock } = await openBound({
    progressIntervalMs: 50,
  });
  try {
    const indefinitely = recorder();
    session.addProgressNotification(
      "download",
      "reportIndefinitely",
      indefinitely.callback,
    );
    for (let index = 1; index <= 5; index++) {
      await download(socket, sessionId, {
        serverVersion: index,
        downloadableBytes: 10_000 - index * 1_000,
        changesetBytes: 1_000,
        changesets: [remoteChangeset(index, 3)],
      });
    }
    // The first report went out at once; the burst waits for the interval.
    assert.equal(indefinitely.events.length, 1);
    clock.advance(50);
    await flush();
    assert.equal(indefinitely.events.length, 2);
    assert.deepEqual(indefinitely.events, [
      [1_000, 10_000, 0.1],
      [5_000, 10_000, 0.5],
    ]);
    // Complete: delivered at once, inside the interval.
    await download(socket, sessionId, {
      serverVersion: 6,
      downloadableBytes: 0,
      changesetBytes: 5_000,
      changesets: [remoteChangeset(6, 3)],
    });
    assert.deepEqual(indefinitely.events, [
      [1_000, 10_000, 0.1],
      [5_000, 10_000, 0.5],
      [10_000, 10_000, 1],
    ]);
  } finally {
    await app.close();
  }
});

Deno.test("SyncSession a progress callback may cancel its own and another registration while it runs", async () => {
  const { app, realm, socket, sessionId, session } = await openBound();
  try {
    const calls: string[] = [];
    const tokens: {
      a?: { cancel(): void } | null;
      b?: { cancel(): void } | null;
    } = {};
    tokens.a = session.addProgressNotification(
      "upload",
      "reportIndefinitely",
      () => {
        calls.push("a");
        if (calls.length > 1) {
          tokens.a!.cancel();
          tokens.b!.cancel();
        }
      },
    );
    tokens.b = session.addProgressNotification(
      "upload",
      "reportIndefinitely",
      () => calls.push("b"),
    );
    await flush();
    assert.deepEqual(calls, ["a", "b"]);
    await realm.write((tx) => tx.put("T", "x", {}));
    await download(socket, sessionId, { ack: 1 });
    // "a" ran, cancelled itself and "b" before b's report of the same
    // change was delivered.
    assert.deepEqual(calls, ["a", "b", "a"]);
    tokens.a!.cancel();
    session.removeProgressNotification(() => {});
  } finally {
    await app.close();
  }
});

Deno.test("SyncSession removeProgressNotification() ends every registration of that callback; a second call is ignored", async () => {
  const { app, realm, socket, sessionId, session } = await openBound();
  try {
    const seen = recorder();
    session.addProgressNotification(
      "upload",
      "reportIndefinitely",
      seen.callback,
    );
    session.addProgressNotification(
      "download",
      "reportIndefinitely",
      seen.callback,
    );
    await flush();
    session.removeProgressNotification(seen.callback);
    session.removeProgressNotification(seen.callback);
    await realm.write((tx) => tx.put("T", "x", {}));
    await download(socket, sessionId, {
      ack: 1,
      changesets: [remoteChangeset(1, 1)],
    });
    assert.equal(seen.events.length, 1);
  } finally {
    await app.close();
  }
});
