// Conformance: progress semantics (docs/CLIENT.md) (and LESSONS rows 1–3, 27),
// through the public entry points only.

import assert from "node:assert/strict";
import {
  Credentials,
  type Progress,
  type Realm,
  type SyncSession,
} from "../../mod.ts";
import type { SyncServer } from "../../server.ts";
import { TcpProxy } from "../_helpers/tcp_proxy.ts";
import { fastApp, openClient } from "./_helpers.ts";
import { bounded, condition, Recorder } from "../_helpers/waits.ts";
import { startTestServer } from "../_helpers/test_server.ts";

function checkShape(p: Progress): void {
  assert.deepEqual(Object.keys(p).sort(), [
    "isTransferComplete",
    "progressEstimate",
    "transferableBytes",
    "transferredBytes",
  ]);
  assert.ok(p.progressEstimate >= 0 && p.progressEstimate <= 1, String(p));
  assert.ok(p.transferredBytes >= 0);
  assert.ok(p.transferredBytes <= p.transferableBytes, JSON.stringify(p));
  assert.equal(p.isTransferComplete, p.progressEstimate === 1);
}

/** Checks a finished forCurrentlyOutstandingWork sequence. */
function checkOutstanding(events: Progress[]): void {
  assert.ok(events.length > 0, "at least one event");
  for (const p of events) checkShape(p);
  const total = events[0]!.transferableBytes;
  for (let i = 0; i < events.length; i++) {
    const p = events[i]!;
    assert.equal(
      p.transferableBytes,
      total,
      "the captured total never changes",
    );
    if (i > 0) {
      assert.ok(
        p.progressEstimate >= events[i - 1]!.progressEstimate,
        `estimate went backwards: ${JSON.stringify(events)}`,
      );
      assert.ok(p.transferredBytes >= events[i - 1]!.transferredBytes);
    }
  }
  const completes = events.filter((p) => p.progressEstimate === 1);
  assert.equal(completes.length, 1, `one final 1.0: ${JSON.stringify(events)}`);
  assert.equal(events.at(-1)!.progressEstimate, 1);
  assert.equal(events.at(-1)!.transferredBytes, total);
  assert.equal(events.at(-1)!.isTransferComplete, true);
}

async function writeItems(realm: Realm, count: number, from = 0) {
  await realm.write((tx) => {
    for (let i = from; i < from + count; i++) {
      tx.put("Item", `i${i}`, { n: i, text: "x".repeat(50) });
    }
  });
}

Deno.test("SyncSession progress with nothing outstanding: forCurrentlyOutstandingWork delivers one 1.0 event and ends", async (t) => {
  await using server = await startTestServer();
  await using client = await openClient(fastApp(server.url));
  const { realm, session } = client;
  await realm.write((tx) => tx.put("Item", "a", { n: 1 }));
  await session.waitForUpload({ signal: bounded() });
  await session.waitForDownload({ signal: bounded() });

  for (const direction of ["upload", "download"] as const) {
    await t.step(`${direction} stream`, async () => {
      await using recorder = new Recorder(
        session.getProgressStream(direction, "forCurrentlyOutstandingWork", {
          signal: bounded(),
        }),
      );
      await recorder.finished();
      assert.deepEqual(recorder.outcome, { kind: "end" });
      assert.equal(recorder.items.length, 1, JSON.stringify(recorder.items));
      checkShape(recorder.items[0]!);
      assert.equal(recorder.items[0]!.progressEstimate, 1);
      assert.equal(recorder.items[0]!.transferredBytes, 0);
      assert.equal(recorder.items[0]!.transferableBytes, 0);
    });
    await t.step(`${direction} callback`, async () => {
      const calls: [number, number, Progress][] = [];
      let resolve = () => {};
      const called = new Promise<void>((r) => resolve = r);
      const token = session.addProgressNotification(
        direction,
        "forCurrentlyOutstandingWork",
        (transferred, transferable, p) => {
          calls.push([transferred, transferable, p]);
          resolve();
        },
      );
      assert.notEqual(token, null);
      await Promise.race([
        called,
        new Promise((_, reject) =>
          bounded().addEventListener(
            "abort",
            () => reject(new Error("timeout")),
          )
        ),
      ]);
      // Another round trip on the session, so a stray second call would show.
      await session.waitForDownload({ signal: bounded() });
      assert.equal(calls.length, 1);
      assert.equal(calls[0]![2].progressEstimate, 1);
      assert.equal(calls[0]![0], calls[0]![2].transferredBytes);
      assert.equal(calls[0]![1], calls[0]![2].transferableBytes);
      token!.cancel(); // already unregistered: harmless
    });
  }
});

Deno.test("SyncSession upload forCurrentlyOutstandingWork captures writes before the call, never grows, ends after one 1.0", async () => {
  await using server = await startTestServer();
  await using client = await openClient(fastApp(server.url));
  const { realm, session } = client;
  session.pause();
  await writeItems(realm, 10, 0);
  await writeItems(realm, 20, 10);
  await writeItems(realm, 5, 30);
  const pending = session.stats().pendingUploadBytes;
  assert.ok(pending > 0);

  await using outstanding = new Recorder(
    session.getProgressStream("upload", "forCurrentlyOutstandingWork", {
      signal: bounded(),
    }),
  );
  await using indefinite = new Recorder(
    session.getProgressStream("upload", "reportIndefinitely", {
      signal: bounded(),
    }),
  );
  // Registered while figures are known: the latest figures arrive at once.
  const first = await outstanding.until(() => true);
  checkShape(first);
  assert.equal(first.transferredBytes, 0);
  assert.equal(first.transferableBytes, pending);
  assert.ok(first.progressEstimate < 1);
  const firstIndefinite = await indefinite.until(() => true);
  assert.equal(
    firstIndefinite.transferableBytes - firstIndefinite.transferredBytes,
    pending,
  );

  // Not part of the capture.
  await writeItems(realm, 50, 100);
  session.resume();
  await outstanding.finished();
  assert.deepEqual(outstanding.outcome, { kind: "end" });
  checkOutstanding(outstanding.items);
  assert.equal(outstanding.items.at(-1)!.transferableBytes, pending);

  await session.waitForUpload({ signal: bounded() });
  const last = await indefinite.until((p) =>
    p.progressEstimate === 1 && p.transferredBytes === p.transferableBytes &&
    p.transferableBytes > firstIndefinite.transferableBytes
  );
  assert.ok(last.transferredBytes > firstIndefinite.transferredBytes + pending);
});

Deno.test("SyncSession upload reportIndefinitely: cumulative bytes never decrease, estimate is per batch and 1.0 when idle", async () => {
  await using server = await startTestServer();
  await using client = await openClient(fastApp(server.url));
  const { realm, session } = client;
  const calls: Progress[] = [];
  const callback = (_a: number, _b: number, p: Progress) => {
    calls.push(p);
  };
  using _token = session.addProgressNotification(
    "upload",
    "reportIndefinitely",
    callback,
  )!;
  await using stream = new Recorder(
    session.getProgressStream("upload", "reportIndefinitely", {
      signal: bounded(),
    }),
  );
  // Nothing outstanding: 1.0 at once.
  const initial = await stream.until(() => true);
  assert.equal(initial.progressEstimate, 1);

  await writeItems(realm, 20, 0);
  await session.waitForUpload({ signal: bounded() });
  const afterFirst = await stream.until((p) =>
    p.progressEstimate === 1 && p.transferredBytes > 0
  );
  assert.equal(afterFirst.transferredBytes, afterFirst.transferableBytes);

  // New work: the estimate drops (a new batch), the cumulative bytes do not.
  session.pause();
  await writeItems(realm, 20, 100);
  const dropped = await stream.until((p) => p.progressEstimate < 1, {
    from: stream.items.indexOf(afterFirst),
  });
  assert.equal(dropped.transferredBytes, afterFirst.transferredBytes);
  assert.ok(dropped.transferableBytes > afterFirst.transferableBytes);
  assert.equal(dropped.progressEstimate, 0);
  session.resume();
  await session.waitForUpload({ signal: bounded() });
  const done = await stream.until((p) =>
    p.progressEstimate === 1 && p.transferredBytes === dropped.transferableBytes
  );
  assert.equal(done.transferableBytes, done.transferredBytes);

  // The callback saw the same story and never saw bytes decrease.
  await session.waitForDownload({ signal: bounded() });
  for (const list of [stream.items, calls]) {
    for (let i = 0; i < list.length; i++) {
      checkShape(list[i]!);
      if (i === 0) continue;
      assert.ok(list[i]!.transferredBytes >= list[i - 1]!.transferredBytes);
      assert.ok(list[i]!.transferableBytes >= list[i - 1]!.transferableBytes);
      if (list[i]!.transferredBytes === list[i]!.transferableBytes) {
        assert.equal(list[i]!.progressEstimate, 1);
      }
    }
  }
  assert.equal(calls.at(-1)!.progressEstimate, 1);
  assert.equal(calls.at(-1)!.transferredBytes, done.transferredBytes);

  // A registration made now gets the latest figures at once.
  await using late = new Recorder(
    session.getProgressStream("upload", "reportIndefinitely", {
      signal: bounded(),
    }),
  );
  const latest = await late.until(() => true);
  assert.deepEqual(latest, done);
});

/** A realm with enough data that its download spans many DOWNLOAD messages. */
async function seed(
  server: SyncServer,
  path: string,
  items: number,
  overwrites = 0,
) {
  await using client = await openClient(fastApp(server.url), path);
  const { realm } = client;
  for (let i = 0; i < items; i += 100) await writeItems(realm, 100, i);
  // Overwritten objects make the snapshot cheaper than the history.
  for (let round = 1; round <= overwrites; round++) {
    for (let i = 0; i < items; i += 100) {
      await realm.write((tx) => {
        for (let j = i; j < i + 100; j++) tx.update("Item", `i${j}`, { round });
      });
    }
  }
  await realm.syncSession.waitForUpload({ signal: bounded() });
}

for (
  const variant of [
    { history: false, compression: false, progressIntervalMs: 0 },
    { history: true, compression: false, progressIntervalMs: 0 },
    { history: false, compression: true, progressIntervalMs: 0 },
    { history: false, compression: false, progressIntervalMs: 50 },
  ]
) {
  const name = `${variant.history ? "snapshot" : "history"}${
    variant.compression ? ", compressed" : ""
  }, progressIntervalMs ${variant.progressIntervalMs}`;
  Deno.test(`SyncSession download forCurrentlyOutstandingWork registered before the first connection captures the initial download (${name})`, async () => {
    await using server = await startTestServer({
      permissions: () => "readwrite",
      downloadBatchBytes: 4096,
      history: { snapshots: variant.history },
      compression: variant.compression,
    });
    await seed(server, "/shared/big", 600, variant.history ? 2 : 0);

    await using proxy = new TcpProxy(server.addr);
    await using app = fastApp(proxy.url, {
      progressIntervalMs: variant.progressIntervalMs,
    });
    const user = await app.logIn(Credentials.anonymous());
    proxy.mode = "refuse";
    await using realm = await user.openRealm({ path: "/shared/big" });
    const session: SyncSession = realm.syncSession;
    assert.notEqual(session.connectionState, "connected");
    await using outstanding = new Recorder(
      session.getProgressStream("download", "forCurrentlyOutstandingWork", {
        signal: bounded(),
      }),
    );
    await using indefinite = new Recorder(
      session.getProgressStream("download", "reportIndefinitely", {
        signal: bounded(),
      }),
    );
    const callbacks: Progress[] = [];
    const token = session.addProgressNotification(
      "download",
      "forCurrentlyOutstandingWork",
      (_a, _b, p) => {
        callbacks.push(p);
      },
    );
    assert.notEqual(token, null);
    proxy.mode = "forward";
    app.reconnect();

    await outstanding.finished();
    assert.deepEqual(outstanding.outcome, { kind: "end" });
    checkOutstanding(outstanding.items);
    // Complete means complete: everything is here when 1.0 is reported.
    assert.equal(realm.objects("Item").length, 600);
    await session.waitForDownload({ signal: bounded() });

    await indefinite.until((p) => p.progressEstimate === 1);
    checkOutstanding(callbacks);
    if (variant.progressIntervalMs === 0) {
      // Not merged away: the intermediate values of a large download show.
      assert.ok(
        callbacks.filter((p) => p.progressEstimate < 1).length >= 2,
        `intermediate values: ${JSON.stringify(callbacks)}`,
      );
    }
    for (let i = 1; i < indefinite.items.length; i++) {
      checkShape(indefinite.items[i]!);
      assert.ok(
        indefinite.items[i]!.transferredBytes >=
          indefinite.items[i - 1]!.transferredBytes,
      );
      assert.ok(
        indefinite.items[i]!.transferableBytes >=
          indefinite.items[i - 1]!.transferableBytes,
        `transferable decreased: ${
          JSON.stringify(
            indefinite.items.map((
              p,
            ) => [p.transferredBytes, p.transferableBytes]),
          )
        }`,
      );
    }
    // Both registrations learnt the initial download from the same first
    // DOWNLOAD, and nobody wrote meanwhile: the server's count is exact, so
    // the cumulative total never moved, and both end exactly at it.
    const captured = outstanding.items[0]!.transferableBytes;
    assert.ok(captured > 0);
    for (const p of indefinite.items) {
      assert.equal(p.transferableBytes, captured, JSON.stringify(p));
    }
    assert.equal(indefinite.items.at(-1)!.transferredBytes, captured);
    assert.equal(outstanding.items.at(-1)!.transferredBytes, captured);
    // Never held just short of the total: the last step before 1.0 is a
    // whole DOWNLOAD's worth.
    for (const list of [outstanding.items, callbacks, indefinite.items]) {
      assert.ok(
        list.every((p) => p.transferredBytes !== captured - 1),
        JSON.stringify(list.map((p) => p.transferredBytes)),
      );
    }
  });
}

Deno.test("SyncSession download progress of changes made by another client: figures relative to the capture", async () => {
  await using server = await startTestServer({
    permissions: () => "readwrite",
    downloadBatchBytes: 4096,
  });
  await using a = await openClient(fastApp(server.url), "/shared/live");
  await using b = await openClient(fastApp(server.url), "/shared/live");

  // b already downloaded everything; its indefinite figures so far.
  await using indefinite = new Recorder(
    b.session.getProgressStream("download", "reportIndefinitely", {
      signal: bounded(),
    }),
  );
  const before = await indefinite.until(() => true);
  assert.equal(before.progressEstimate, 1);

  for (let i = 0; i < 300; i += 100) await writeItems(a.realm, 100, i);
  await a.session.waitForUpload({ signal: bounded() });
  await b.session.waitForDownload({ signal: bounded() });
  assert.equal(b.realm.objects("Item").length, 300);
  const after = await indefinite.until((p) =>
    p.progressEstimate === 1 && p.transferredBytes > before.transferredBytes
  );
  assert.equal(after.transferredBytes, after.transferableBytes);

  // Caught up: a new outstanding registration completes at once.
  await using outstanding = new Recorder(
    b.session.getProgressStream("download", "forCurrentlyOutstandingWork", {
      signal: bounded(),
    }),
  );
  await outstanding.finished();
  assert.equal(outstanding.items.length, 1);
  assert.equal(outstanding.items[0]!.progressEstimate, 1);
});

Deno.test("SyncSession.removeProgressNotification() unregisters every registration of a callback; a second call is ignored; token.cancel() and [Symbol.dispose] unregister", async () => {
  await using server = await startTestServer();
  await using client = await openClient(fastApp(server.url));
  const { realm, session } = client;
  let removedCalls = 0;
  const removed = () => {
    removedCalls++;
  };
  let cancelledCalls = 0;
  const cancelled = () => {
    cancelledCalls++;
  };
  let disposedCalls = 0;
  const disposed = () => {
    disposedCalls++;
  };
  let keptCalls = 0;
  let keptPoke = () => {};
  const kept = () => {
    keptCalls++;
    keptPoke();
  };
  assert.notEqual(
    session.addProgressNotification("upload", "reportIndefinitely", removed),
    null,
  );
  assert.notEqual(
    session.addProgressNotification("download", "reportIndefinitely", removed),
    null,
  );
  const token = session.addProgressNotification(
    "upload",
    "reportIndefinitely",
    cancelled,
  );
  {
    using _disposed = session.addProgressNotification(
      "upload",
      "reportIndefinitely",
      disposed,
    )!;
  }
  const keptToken = session.addProgressNotification(
    "upload",
    "reportIndefinitely",
    kept,
  )!;
  token!.cancel();
  token!.cancel();
  session.removeProgressNotification(removed);
  session.removeProgressNotification(removed);
  session.removeProgressNotification(() => {});

  const baseline = { removedCalls, cancelledCalls, disposedCalls };
  const keptBefore = keptCalls;
  await writeItems(realm, 5);
  await session.waitForUpload({ signal: bounded() });
  await session.waitForDownload({ signal: bounded() });
  // The kept callback proves reports were delivered meanwhile (callbacks of
  // one report run together, so the others would have run by then too).
  await condition(
    (poke) => {
      keptPoke = poke;
      return () => keptPoke = () => {};
    },
    () => keptCalls > keptBefore,
  );
  assert.deepEqual({ removedCalls, cancelledCalls, disposedCalls }, baseline);
  keptToken.cancel();
});

Deno.test("SyncSession progress streams end (not throw) when their signal aborts, promptly, also when already aborted", async () => {
  await using server = await startTestServer();
  await using client = await openClient(fastApp(server.url));
  const { realm, session } = client;
  const aborted = AbortSignal.abort(new Error("already"));
  for (const direction of ["upload", "download"] as const) {
    for (
      const mode of [
        "reportIndefinitely",
        "forCurrentlyOutstandingWork",
      ] as const
    ) {
      await using recorder = new Recorder(
        session.getProgressStream(direction, mode, { signal: aborted }),
      );
      await recorder.finished();
      assert.deepEqual(recorder.outcome, { kind: "end" });
    }
  }
  const controller = new AbortController();
  session.pause();
  await writeItems(realm, 5);
  await using live = new Recorder(
    session.getProgressStream("upload", "forCurrentlyOutstandingWork", {
      signal: controller.signal,
    }),
  );
  await live.until(() => true);
  controller.abort(new Error("stop"));
  await live.finished();
  assert.deepEqual(live.outcome, { kind: "end" });
  session.resume();
  await session.waitForUpload({ signal: bounded() });
});

Deno.test("SyncSession progress: a slow stream reader never loses the final event; it gets exactly one 1.0 and the end", async () => {
  await using server = await startTestServer();
  await using client = await openClient(fastApp(server.url));
  const { realm, session } = client;
  session.pause();
  for (let i = 0; i < 5; i++) await writeItems(realm, 10, i * 10);
  const stream = session.getProgressStream(
    "upload",
    "forCurrentlyOutstandingWork",
    { signal: bounded() },
  );
  const indefinite = session.getProgressStream(
    "upload",
    "reportIndefinitely",
    { signal: bounded() },
  );
  session.resume();
  await session.waitForUpload({ signal: bounded() });
  await session.waitForDownload({ signal: bounded() });
  // Only now start reading.
  const events: Progress[] = [];
  for await (const p of stream) events.push(p);
  checkOutstanding(events);
  const reader = indefinite.getReader();
  let latest: Progress | undefined;
  for (let i = 0; i < 100; i++) {
    const { value } = await reader.read();
    latest = value;
    if (latest!.progressEstimate === 1) break;
  }
  await reader.cancel();
  assert.equal(latest?.progressEstimate, 1);
  assert.equal(latest?.transferredBytes, latest?.transferableBytes);
});

Deno.test("SyncSession.addProgressNotification() made while figures are known calls back at once with them", async () => {
  await using server = await startTestServer();
  await using client = await openClient(fastApp(server.url));
  const { realm, session } = client;
  await writeItems(realm, 10);
  await session.waitForUpload({ signal: bounded() });
  const first = await new Promise<[number, number, Progress]>(
    (resolve, reject) => {
      const signal = bounded();
      let token: { cancel(): void } | null = null;
      const onAbort = () => {
        token?.cancel();
        reject(new Error("no call"));
      };
      signal.addEventListener("abort", onAbort, { once: true });
      token = session.addProgressNotification(
        "upload",
        "reportIndefinitely",
        (a, b, p) => {
          token?.cancel();
          signal.removeEventListener("abort", onAbort);
          resolve([a, b, p]);
        },
      );
    },
  );
  assert.ok(first[0] > 0);
  assert.equal(first[0], first[1]);
  assert.equal(first[2].progressEstimate, 1);
});

Deno.test("SyncSession progress stream: break in for-await detaches (sanitizers prove nothing is left)", async () => {
  await using server = await startTestServer();
  await using client = await openClient(fastApp(server.url));
  const { realm, session } = client;
  for await (
    const p of session.getProgressStream("upload", "reportIndefinitely", {
      signal: bounded(),
    })
  ) {
    assert.equal(p.progressEstimate, 1);
    break;
  }
  const changes = realm.changes({ signal: bounded() });
  await writeItems(realm, 1);
  for await (const c of changes) {
    assert.equal(c.origin, "local");
    break;
  }
  await session.waitForUpload({ signal: bounded() });
});

Deno.test("SyncSession download forCurrentlyOutstandingWork registered mid-download: relative figures from 0, total never grows, one 1.0", async () => {
  await using server = await startTestServer({
    permissions: () => "readwrite",
    downloadBatchBytes: 2048,
    history: { snapshots: false },
  });
  await seed(server, "/shared/slow", 300);
  await using proxy = new TcpProxy(server.addr);
  await using app = fastApp(proxy.url);
  const user = await app.logIn(Credentials.anonymous());
  proxy.throttle = { bytes: 4096, everyMs: 20 };
  await using realm = await user.openRealm({ path: "/shared/slow" });
  const session = realm.syncSession;
  await using indefinite = new Recorder(
    session.getProgressStream("download", "reportIndefinitely", {
      signal: bounded(),
    }),
  );
  const midway = await indefinite.until((p) =>
    p.transferredBytes > 0 && p.progressEstimate < 0.5
  );
  await using outstanding = new Recorder(
    session.getProgressStream("download", "forCurrentlyOutstandingWork", {
      signal: bounded(),
    }),
  );
  await outstanding.finished();
  proxy.throttle = undefined;
  assert.deepEqual(outstanding.outcome, { kind: "end" });
  checkOutstanding(outstanding.items);
  const first = outstanding.items[0]!;
  assert.equal(first.transferredBytes, 0, JSON.stringify(outstanding.items));
  assert.ok(
    first.transferableBytes <=
      midway.transferableBytes - midway.transferredBytes,
  );
  assert.ok(first.transferableBytes > 0);
  await session.waitForDownload({ signal: bounded() });
  assert.equal(realm.objects("Item").length, 300);
});

Deno.test("SyncSession download forCurrentlyOutstandingWork is complete only when the download is: many frames, each one changeset", async () => {
  await using server = await startTestServer({
    permissions: () => "readwrite",
    downloadBatchBytes: 1024,
    history: { snapshots: false },
    compression: false,
  });
  {
    await using seed = await openClient(fastApp(server.url), "/shared/frames");
    const seedRealm = seed.realm;
    // One changeset per write, each too big to share a 1 KiB DOWNLOAD.
    for (let i = 0; i < 200; i++) {
      await seedRealm.write((tx) =>
        tx.put("Item", `i${i}`, { text: "w".repeat(600) })
      );
    }
    await seedRealm.syncSession.waitForUpload({ signal: bounded() });
  }
  await using proxy = new TcpProxy(server.addr);
  await using app = fastApp(proxy.url);
  const user = await app.logIn(Credentials.anonymous());
  proxy.mode = "refuse";
  await using realm = await user.openRealm({ path: "/shared/frames" });
  const session = realm.syncSession;
  const seenAtComplete: number[] = [];
  let resolveDone = () => {};
  const done = new Promise<void>((resolve) => resolveDone = resolve);
  session.addProgressNotification(
    "download",
    "forCurrentlyOutstandingWork",
    (_a, _b, p) => {
      if (p.isTransferComplete) {
        seenAtComplete.push(realm.objects("Item").length);
        resolveDone();
      }
    },
  );
  await using stream = new Recorder(
    session.getProgressStream("download", "forCurrentlyOutstandingWork", {
      signal: bounded(),
    }),
  );
  proxy.mode = "forward";
  app.reconnect();
  await stream.finished();
  await Promise.race([
    done,
    new Promise((_, reject) =>
      bounded().addEventListener("abort", () => reject(new Error("no 1.0")))
    ),
  ]);
  checkOutstanding(stream.items);
  assert.deepEqual(
    seenAtComplete,
    [200],
    "1.0 reported before the data was here",
  );
  await session.waitForDownload({ signal: bounded() });
});
