import assert from "node:assert/strict";
import {
  type Progress,
  type ProgressDirection,
  type ProgressMode,
  ProgressTracker,
} from "../../src/client/progress.ts";
import { Prng, testSeed } from "../_helpers/prng.ts";

type Event = [number, number, number] | "end" | ["error", unknown];

/** Registers a sink that records [transferred, transferable, estimate]. */
function record(
  tracker: ProgressTracker,
  direction: ProgressDirection,
  mode: ProgressMode,
): { events: Event[]; cancel(): void } {
  const events: Event[] = [];
  const registration = tracker.register(direction, mode, {
    next: (p: Progress) =>
      events.push([
        p.transferredBytes,
        p.transferableBytes,
        p.progressEstimate,
      ]),
    complete: () => events.push("end"),
    error: (reason) => events.push(["error", reason]),
  });
  return { events, cancel: () => registration.cancel() };
}

Deno.test("ProgressTracker upload reportIndefinitely: cumulative bytes, estimate per batch, complete many times", () => {
  const tracker = new ProgressTracker();
  const { events } = record(tracker, "upload", "reportIndefinitely");
  // Nothing outstanding: one report at once, complete.
  assert.deepEqual(events, [[0, 0, 1]]);
  tracker.localCommitted(1, 100);
  tracker.localCommitted(2, 300);
  tracker.publish();
  tracker.acknowledged(1);
  tracker.publish();
  tracker.acknowledged(2);
  tracker.publish();
  // A new batch: bytes keep growing, the estimate starts again from 0.
  tracker.localCommitted(3, 50);
  tracker.publish();
  tracker.acknowledged(3);
  tracker.publish();
  assert.deepEqual(events, [
    [0, 0, 1],
    [0, 400, 0],
    [100, 400, 0.25],
    [400, 400, 1],
    [400, 450, 0],
    [450, 450, 1],
  ]);
});

Deno.test("ProgressTracker upload forCurrentlyOutstandingWork: captured total never grows, one final 1.0, then end", () => {
  const tracker = new ProgressTracker();
  tracker.localCommitted(1, 100);
  tracker.localCommitted(2, 100);
  const { events } = record(tracker, "upload", "forCurrentlyOutstandingWork");
  assert.deepEqual(events, [[0, 200, 0]]);
  // Work committed after the registration is not part of it.
  tracker.localCommitted(3, 1000);
  tracker.publish();
  tracker.acknowledged(1);
  tracker.publish();
  tracker.acknowledged(3);
  tracker.publish();
  tracker.publish();
  assert.deepEqual(events, [
    [0, 200, 0],
    [100, 200, 0.5],
    [200, 200, 1],
    "end",
  ]);
  assert.equal(tracker.registrationCount, 0);
});

Deno.test("ProgressTracker upload forCurrentlyOutstandingWork with nothing outstanding: one 1.0 event and end", () => {
  const tracker = new ProgressTracker();
  tracker.localCommitted(1, 100);
  tracker.acknowledged(1);
  const { events } = record(tracker, "upload", "forCurrentlyOutstandingWork");
  assert.deepEqual(events, [[0, 0, 1], "end"]);
});

Deno.test("ProgressTracker upload counts a changeset as transferred only once acknowledged", () => {
  const tracker = new ProgressTracker();
  tracker.localCommitted(1, 80);
  const { events } = record(tracker, "upload", "reportIndefinitely");
  // Sending is not acknowledging: nothing changes until the ack.
  tracker.publish();
  assert.deepEqual(events, [[0, 80, 0]]);
  tracker.acknowledged(1);
  tracker.publish();
  assert.deepEqual(events, [[0, 80, 0], [80, 80, 1]]);
  assert.equal(tracker.pendingUploadBytes, 0);
  assert.equal(tracker.pendingUploadChangesets, 0);
});

Deno.test("ProgressTracker upload ignores a repeated or stale acknowledgement", () => {
  const tracker = new ProgressTracker();
  tracker.localCommitted(1, 10);
  tracker.localCommitted(2, 10);
  tracker.acknowledged(2);
  tracker.acknowledged(1);
  tracker.acknowledged(2);
  assert.deepEqual(tracker.current("upload"), {
    transferredBytes: 20,
    transferableBytes: 20,
    progressEstimate: 1,
    isTransferComplete: true,
  });
});

Deno.test("ProgressTracker restore() skips changesets acknowledged before the session", () => {
  const tracker = new ProgressTracker();
  tracker.restore(5);
  tracker.localCommitted(4, 10);
  tracker.localCommitted(6, 10);
  assert.equal(tracker.pendingUploadChangesets, 1);
  assert.equal(tracker.lastCommittedVersion, 6);
});

Deno.test("ProgressTracker download is unknown until the first figure; registrations then get it at once", () => {
  const tracker = new ProgressTracker();
  const early = record(tracker, "download", "reportIndefinitely");
  assert.deepEqual(early.events, []);
  assert.equal(tracker.current("download"), undefined);
  tracker.downloaded(100, 300);
  tracker.publish();
  const late = record(tracker, "download", "reportIndefinitely");
  assert.deepEqual(early.events, [[100, 400, 0.25]]);
  assert.deepEqual(late.events, [[100, 400, 0.25]]);
});

Deno.test("ProgressTracker download reportIndefinitely: a full bootstrap, then live changes", () => {
  const tracker = new ProgressTracker();
  const { events } = record(tracker, "download", "reportIndefinitely");
  // Each DOWNLOAD: (changesetBytes, downloadableBytes).
  tracker.downloaded(100, 300);
  tracker.publish();
  tracker.downloaded(100, 200);
  tracker.publish();
  tracker.downloaded(200, 0);
  tracker.publish();
  // A live change arrives in one DOWNLOAD: the batch completes at once.
  tracker.downloaded(50, 0);
  tracker.publish();
  // A larger one arrives in two: the estimate starts a new batch.
  tracker.downloaded(60, 60);
  tracker.publish();
  tracker.downloaded(60, 0);
  tracker.publish();
  assert.deepEqual(events, [
    [100, 400, 0.25],
    [200, 400, 0.5],
    [400, 400, 1],
    [450, 450, 1],
    [510, 570, 0.5],
    [570, 570, 1],
  ]);
});

Deno.test("ProgressTracker download forCurrentlyOutstandingWork registered before the first figure captures the initial download; the server's figures climb to it exactly", () => {
  const tracker = new ProgressTracker();
  const outstanding = record(
    tracker,
    "download",
    "forCurrentlyOutstandingWork",
  );
  const indefinitely = record(tracker, "download", "reportIndefinitely");
  assert.deepEqual(outstanding.events, []);
  // No upload meanwhile: each downloadableBytes is the next DOWNLOAD's
  // changesetBytes + downloadableBytes.
  for (const [bytes, left] of [[250, 750], [0, 750], [500, 250], [250, 0]]) {
    tracker.downloaded(bytes!, left!);
    tracker.publish();
  }
  const steps = [[250, 1000, 0.25], [750, 1000, 0.75], [1000, 1000, 1]];
  assert.deepEqual(outstanding.events, [...steps, "end"]);
  assert.deepEqual(indefinitely.events, steps);
});

Deno.test("ProgressTracker download forCurrentlyOutstandingWork: work announced later never grows the captured total; the MARK's answer completes it", () => {
  const tracker = new ProgressTracker();
  const { events } = record(tracker, "download", "forCurrentlyOutstandingWork");
  // The session sends a MARK for it (the one after BIND, here).
  const markSequence = tracker.sequence + 1;
  assert.deepEqual(events, []);
  tracker.downloaded(100, 300);
  tracker.publish();
  // Another client uploads 600 bytes: the captured total stays 400.
  tracker.downloaded(100, 900);
  tracker.publish();
  // As many bytes as captured have been counted, but the captured figure
  // is only what the server knew then: not complete until the work is
  // known to be here.
  tracker.downloaded(200, 700);
  tracker.publish();
  // The MARK's answer: everything the server held when it was sent is here.
  tracker.caughtUp(markSequence);
  tracker.publish();
  tracker.downloaded(700, 0);
  tracker.publish();
  assert.deepEqual(events, [
    [100, 400, 0.25],
    [200, 400, 0.5],
    [399, 400, 399 / 400],
    [400, 400, 1],
    "end",
  ]);
});

Deno.test("ProgressTracker download forCurrentlyOutstandingWork never completes on counted bytes alone (the server's count grew meanwhile)", () => {
  const tracker = new ProgressTracker();
  const { events } = record(tracker, "download", "forCurrentlyOutstandingWork");
  // Each DOWNLOAD takes off 106 bytes while uploads elsewhere add more.
  tracker.downloaded(106, 300);
  tracker.publish();
  tracker.downloaded(106, 200);
  tracker.publish();
  tracker.downloaded(106, 100);
  tracker.publish();
  // The captured 406 bytes have been counted, yet the server has more.
  tracker.downloaded(106, 50);
  tracker.publish();
  tracker.downloaded(50, 0);
  tracker.publish();
  assert.deepEqual(events, [
    [106, 406, 106 / 406],
    [212, 406, 212 / 406],
    [318, 406, 318 / 406],
    [405, 406, 405 / 406],
    [406, 406, 1],
    "end",
  ]);
});

Deno.test("ProgressTracker download reportIndefinitely: transferable never falls when the server's count drops without a download; transferred catches up when nothing is left", () => {
  const tracker = new ProgressTracker();
  const { events } = record(tracker, "download", "reportIndefinitely");
  tracker.downloaded(100, 300);
  tracker.publish();
  // The server's count falls by more than this DOWNLOAD took off (its
  // history was compacted and a smaller snapshot replaces it).
  tracker.downloaded(100, 150);
  tracker.publish();
  tracker.downloaded(100, 0);
  tracker.publish();
  assert.deepEqual(events, [
    [100, 400, 0.25],
    [200, 400, 0.5],
    [400, 400, 1],
  ]);
});

Deno.test("ProgressTracker download forCurrentlyOutstandingWork completes when the server reports nothing left, even if its count dropped on the way", () => {
  const tracker = new ProgressTracker();
  tracker.downloaded(10, 1000);
  const { events } = record(tracker, "download", "forCurrentlyOutstandingWork");
  tracker.downloaded(300, 0);
  tracker.publish();
  assert.deepEqual(events, [[0, 1000, 0], [1000, 1000, 1], "end"]);
});

Deno.test("ProgressTracker download forCurrentlyOutstandingWork with nothing outstanding: one 1.0 event and end", () => {
  const tracker = new ProgressTracker();
  tracker.downloaded(100, 0);
  const { events } = record(tracker, "download", "forCurrentlyOutstandingWork");
  assert.deepEqual(events, [[0, 0, 1], "end"]);
});

Deno.test("ProgressTracker caughtUp() completes download registrations made before the MARK, and only those", () => {
  const tracker = new ProgressTracker();
  const before = record(tracker, "download", "forCurrentlyOutstandingWork");
  const indefinitely = record(tracker, "download", "reportIndefinitely");
  const markSequence = tracker.sequence + 1;
  const after = record(tracker, "download", "forCurrentlyOutstandingWork");
  // The server had nothing to send: no DOWNLOAD, only the MARK reply.
  tracker.caughtUp(markSequence);
  tracker.publish();
  assert.deepEqual(before.events, [[0, 0, 1], "end"]);
  assert.deepEqual(indefinitely.events, [[0, 0, 1]]);
  // Registered after the MARK was sent: it learns the figure at the next
  // publish, which says nothing is outstanding.
  assert.deepEqual(after.events, []);
  tracker.downloaded(40, 0);
  tracker.publish();
  assert.deepEqual(after.events, [[40, 40, 1], "end"]);
});

Deno.test("ProgressTracker caughtUp() after a download whose count later dropped ends the captured work at 1.0", () => {
  const tracker = new ProgressTracker();
  const { events } = record(tracker, "download", "forCurrentlyOutstandingWork");
  const markSequence = tracker.sequence + 1;
  tracker.downloaded(100, 900);
  tracker.publish();
  tracker.caughtUp(markSequence);
  tracker.publish();
  assert.deepEqual(events, [[100, 1000, 0.1], [1000, 1000, 1], "end"]);
});

Deno.test("ProgressTracker a sink may cancel its own registration while it runs", () => {
  const tracker = new ProgressTracker();
  const seen: string[] = [];
  const handle: { own?: { cancel(): void } } = {};
  handle.own = tracker.register("upload", "reportIndefinitely", {
    next: (p) => {
      seen.push(`a ${p.transferableBytes}`);
      handle.own?.cancel();
    },
    complete: () => seen.push("a-end"),
    error: () => {},
  });
  const other = record(tracker, "upload", "reportIndefinitely");
  tracker.localCommitted(1, 10);
  tracker.publish();
  tracker.acknowledged(1);
  tracker.publish();
  // The first report came at registration, before `own` was assigned; the
  // second cancelled it; the other registration carried on.
  assert.deepEqual(seen, ["a 0", "a 10"]);
  assert.deepEqual(other.events, [[0, 0, 1], [0, 10, 0], [10, 10, 1]]);
  handle.own.cancel();
  assert.equal(tracker.registrationCount, 1);
});

Deno.test("ProgressTracker a sink cancelling a later registration stops its report in the same publish", () => {
  const tracker = new ProgressTracker();
  const seen: string[] = [];
  const handle: { second?: { cancel(): void } } = {};
  tracker.register("upload", "reportIndefinitely", {
    next: () => {
      seen.push("first");
      handle.second?.cancel();
    },
    complete: () => {},
    error: () => {},
  });
  handle.second = tracker.register("upload", "reportIndefinitely", {
    next: () => seen.push("second"),
    complete: () => {},
    error: () => {},
  });
  seen.length = 0;
  tracker.localCommitted(1, 10);
  tracker.publish();
  assert.deepEqual(seen, ["first"]);
});

Deno.test("ProgressTracker close() ends or errors every registration", () => {
  const tracker = new ProgressTracker();
  const a = record(tracker, "download", "reportIndefinitely");
  const b = record(tracker, "upload", "forCurrentlyOutstandingWork");
  const failure = new Error("boom");
  tracker.close(failure);
  assert.deepEqual(a.events, [["error", failure]]);
  assert.deepEqual(b.events, [[0, 0, 1], "end"]);
  const c = new ProgressTracker();
  const d = record(c, "download", "reportIndefinitely");
  c.close();
  assert.deepEqual(d.events, ["end"]);
  assert.equal(c.registrationCount, 0);
});

Deno.test("ProgressTracker hasCompletion tells when a complete report is due", () => {
  const tracker = new ProgressTracker();
  tracker.localCommitted(1, 10);
  record(tracker, "upload", "forCurrentlyOutstandingWork");
  assert.equal(tracker.hasCompletion, false);
  tracker.acknowledged(1);
  assert.equal(tracker.hasCompletion, true);
  tracker.publish();
  assert.equal(tracker.hasCompletion, false);
});

Deno.test("ProgressTracker estimates stay in [0, 1], never fall within forCurrentlyOutstandingWork, and end at exactly 1.0 once; cumulative figures never fall (seeded)", () => {
  const seed = testSeed();
  const random = new Prng(seed);
  for (let round = 0; round < 300; round++) {
    const tracker = new ProgressTracker();
    let version = 0;
    let acknowledged = 0;
    let downloadable = random.int(5000);
    const logs: { mode: ProgressMode; events: Event[] }[] = [];
    for (let step = 0; step < 60; step++) {
      const choice = random.int(7);
      if (choice === 0) {
        tracker.localCommitted(++version, 1 + random.int(500));
      } else if (choice === 1 && acknowledged < version) {
        acknowledged += 1 + random.int(version - acknowledged);
        tracker.acknowledged(acknowledged);
      } else if (choice === 2) {
        // Any figures at all, consistent or not: the rules hold regardless.
        const bytes = random.int(2) === 0 ? 0 : 1 + random.int(800);
        downloadable = random.int(4) === 0 ? 0 : random.int(5000);
        tracker.downloaded(bytes, downloadable);
      } else if (choice === 3) {
        tracker.caughtUp(tracker.sequence + 1 - random.int(3));
      } else if (choice === 4) {
        const direction = random.pick(["upload", "download"] as const);
        const mode = random.pick(
          ["reportIndefinitely", "forCurrentlyOutstandingWork"] as const,
        );
        logs.push({ mode, events: record(tracker, direction, mode).events });
      }
      tracker.publish();
    }
    for (const { mode, events } of logs) {
      let last = -1;
      let lastTransferable = -1;
      let lastTransferred = -1;
      let ended = false;
      let completes = 0;
      for (const event of events) {
        assert.ok(!ended, `seed ${seed}: event after end`);
        if (event === "end") {
          ended = true;
          continue;
        }
        const [transferred, transferable, estimate] = event as number[];
        assert.ok(
          estimate! >= 0 && estimate! <= 1,
          `seed ${seed}: ${estimate}`,
        );
        assert.ok(transferred! <= transferable!, `seed ${seed}`);
        if (mode === "reportIndefinitely" && lastTransferable >= 0) {
          assert.ok(
            transferable! >= lastTransferable,
            `seed ${seed}: cumulative transferable fell`,
          );
          assert.ok(
            transferred! >= lastTransferred,
            `seed ${seed}: cumulative transferred fell`,
          );
        }
        if (mode === "forCurrentlyOutstandingWork") {
          assert.ok(estimate! >= last, `seed ${seed}: estimate fell`);
          if (lastTransferable >= 0) {
            assert.equal(
              transferable,
              lastTransferable,
              `seed ${seed}: total grew`,
            );
          }
          if (estimate === 1) completes++;
        }
        last = estimate!;
        lastTransferable = transferable!;
        lastTransferred = transferred!;
      }
      if (mode === "forCurrentlyOutstandingWork") {
        assert.ok(completes <= 1, `seed ${seed}: ${completes} complete events`);
        assert.equal(completes === 1, ended, `seed ${seed}: end without 1.0`);
        if (ended) assert.equal(last, 1, `seed ${seed}`);
      }
    }
  }
});

Deno.test("ProgressTracker reproduces the worked sequences of docs/CLIENT.md", () => {
  const upload = new ProgressTracker();
  upload.localCommitted(1, 100);
  upload.localCommitted(2, 200);
  const uploadIndefinitely = record(upload, "upload", "reportIndefinitely");
  const uploadOutstanding = record(
    upload,
    "upload",
    "forCurrentlyOutstandingWork",
  );
  upload.localCommitted(3, 50);
  upload.publish();
  upload.acknowledged(1);
  upload.publish();
  upload.acknowledged(3);
  upload.publish();
  assert.deepEqual(uploadIndefinitely.events, [
    [0, 300, 0],
    [0, 350, 0],
    [100, 350, 100 / 350],
    [350, 350, 1],
  ]);
  assert.deepEqual(uploadOutstanding.events, [
    [0, 300, 0],
    [100, 300, 1 / 3],
    [300, 300, 1],
    "end",
  ]);

  const download = new ProgressTracker();
  const downloadIndefinitely = record(
    download,
    "download",
    "reportIndefinitely",
  );
  const downloadOutstanding = record(
    download,
    "download",
    "forCurrentlyOutstandingWork",
  );
  for (
    const [bytes, left] of [[100, 300], [0, 300], [120, 180], [180, 0]] as const
  ) {
    download.downloaded(bytes, left);
    download.publish();
  }
  const steps = [[100, 400, 0.25], [220, 400, 0.55], [400, 400, 1]];
  assert.deepEqual(downloadIndefinitely.events, steps);
  assert.deepEqual(downloadOutstanding.events, [...steps, "end"]);

  const live = new ProgressTracker();
  const liveIndefinitely = record(live, "download", "reportIndefinitely");
  const liveOutstanding = record(
    live,
    "download",
    "forCurrentlyOutstandingWork",
  );
  const markSequence = live.sequence + 1;
  for (const [bytes, left] of [[100, 300], [100, 900], [200, 700]] as const) {
    live.downloaded(bytes, left);
    live.publish();
  }
  live.caughtUp(markSequence);
  live.publish();
  live.downloaded(700, 0);
  live.publish();
  assert.deepEqual(liveIndefinitely.events, [
    [100, 400, 0.25],
    [200, 1100, 200 / 1100],
    [400, 1100, 400 / 1100],
    [1100, 1100, 1],
  ]);
  assert.deepEqual(liveOutstanding.events, [
    [100, 400, 0.25],
    [200, 400, 0.5],
    [399, 400, 399 / 400],
    [400, 400, 1],
    "end",
  ]);
});

Deno.test("ProgressTracker with the server's figures consistent (no upload meanwhile), download transferred is exactly the bytes taken off, transferable never moves, and a registration completes with the DOWNLOAD that leaves 0 (seeded)", () => {
  const seed = testSeed();
  const random = new Prng(seed);
  for (let round = 0; round < 300; round++) {
    const tracker = new ProgressTracker();
    const indefinitely = record(tracker, "download", "reportIndefinitely");
    const outstanding: { at: number; events: Event[] }[] = [];
    let left = random.int(20_000);
    let taken = 0;
    let first = true;
    for (let step = 0; step < 40 && (first || left > 0); step++) {
      if (!first && random.int(4) === 0) {
        outstanding.push({
          at: taken,
          events: record(tracker, "download", "forCurrentlyOutstandingWork")
            .events,
        });
      }
      const bytes = random.int(3) === 0 ? 0 : random.int(left + 1);
      left -= bytes;
      taken += bytes;
      tracker.downloaded(bytes, left);
      tracker.publish();
      first = false;
    }
    const total = taken + left;
    for (const event of indefinitely.events) {
      const [transferred, transferable] = event as number[];
      assert.equal(transferable, total, `seed ${seed}: transferable moved`);
      assert.ok(transferred! <= total, `seed ${seed}`);
    }
    const transferredSeen = indefinitely.events.map((event) =>
      (event as number[])[0]
    );
    for (const { at, events } of outstanding) {
      const captured = total - at;
      let ended = false;
      for (const event of events) {
        if (event === "end") {
          ended = true;
          continue;
        }
        const [transferred, transferable, estimate] = event as number[];
        assert.equal(transferable, captured, `seed ${seed}`);
        // The counted bytes themselves: never held back, never ahead.
        assert.ok(
          transferredSeen.includes(at + transferred!),
          `seed ${seed}: ${transferred} of ${captured} from ${at}`,
        );
        assert.equal(estimate === 1, transferred === captured, `seed ${seed}`);
      }
      assert.equal(ended, left === 0, `seed ${seed}: end iff nothing left`);
    }
  }
});
