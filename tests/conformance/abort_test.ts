// Conformance: every API that waits takes an AbortSignal and leaves nothing
// registered on it once settled (LESSONS rows 6 and 27). Listener counts are
// observed on a signal the test owns.

import assert from "node:assert/strict";
import { Credentials } from "../../mod.ts";
import { fastApp, openDownloaded } from "./_helpers.ts";
import { bounded } from "../_helpers/waits.ts";
import { startTestServer } from "../_helpers/test_server.ts";

/** A signal that counts the abort listeners currently registered on it. */
function countingSignal(): { signal: AbortSignal; live: () => number } {
  const controller = new AbortController();
  const signal = controller.signal;
  const listeners = new Set<unknown>();
  const add = signal.addEventListener.bind(signal);
  const remove = signal.removeEventListener.bind(signal);
  signal.addEventListener = ((
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | AddEventListenerOptions,
  ) => {
    if (type === "abort" && listener !== null) listeners.add(listener);
    if (listener !== null) add(type as "abort", listener, options);
  }) as typeof signal.addEventListener;
  signal.removeEventListener = ((
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | EventListenerOptions,
  ) => {
    if (type === "abort") listeners.delete(listener);
    if (listener !== null) remove(type as "abort", listener, options);
  }) as typeof signal.removeEventListener;
  // `onabort` is another way in; count it too.
  return {
    signal,
    live: () => listeners.size + (signal.onabort === null ? 0 : 1),
  };
}

Deno.test("Waits and streams leave no listener on their signal once settled (1,000 immediate waits, 50 round trips, ended streams)", async () => {
  await using server = await startTestServer();
  await using app = fastApp(server.url);
  const { signal, live } = countingSignal();
  const user = await app.logIn(Credentials.anonymous(), { signal });
  assert.equal(live(), 0, "logIn");
  await using realm = await user.openRealm({
    path: "/~/todos",
    waitForDownload: true,
    signal,
  });
  assert.equal(live(), 0, "openRealm");
  const session = realm.syncSession;
  const receipt = await realm.write((tx) => tx.put("T", "x", {}));
  await receipt.waitForUpload({ signal });
  assert.equal(live(), 0, "receipt.waitForUpload");
  for (let i = 0; i < 1_000; i++) {
    await session.waitForUpload({ signal });
    await receipt.waitForUpload({ signal });
  }
  assert.equal(live(), 0, "immediate waits");
  // The counter sees a pending wait's listener.
  const pending = session.waitForDownload({ signal });
  assert.ok(live() > 0, "a pending wait listens to its signal");
  await pending;
  for (let i = 0; i < 50; i++) {
    await session.waitForDownload({ signal });
  }
  assert.equal(live(), 0, "waitForDownload round trips");

  // A forCurrentlyOutstandingWork stream that ended by itself.
  for await (
    const _ of session.getProgressStream(
      "upload",
      "forCurrentlyOutstandingWork",
      { signal },
    )
  ) { /* one 1.0 event */ }
  assert.equal(live(), 0, "ended progress stream");

  // Streams the reader cancelled.
  for (
    const stream of [
      session.getProgressStream("download", "reportIndefinitely", { signal }),
      session.connectionStateChanges({ signal }),
      realm.changes({ signal }),
      realm.watch("T", { signal }),
      realm.watchObject("T", "x", { signal }),
    ] as ReadableStream<unknown>[]
  ) {
    await stream.cancel();
  }
  assert.equal(live(), 0, "cancelled streams");
  await session.waitForDownload({ signal: bounded() });
});

Deno.test("Streams end when the realm closes and leave no listener on their signal", async () => {
  await using server = await startTestServer();
  await using app = fastApp(server.url);
  const user = await app.logIn(Credentials.anonymous());
  const realm = await openDownloaded(user, "/~/todos");
  const { signal, live } = countingSignal();
  const session = realm.syncSession;
  const streams: ReadableStream<unknown>[] = [
    session.getProgressStream("upload", "reportIndefinitely", { signal }),
    session.connectionStateChanges({ signal }),
    realm.changes({ signal }),
    realm.watch("T", { signal }),
    realm.watchObject("T", "x", { signal }),
  ];
  const drained = streams.map(async (stream) => {
    for await (const _ of stream) { /* drain */ }
  });
  await realm.close();
  await Promise.all(drained);
  assert.equal(live(), 0);
});

Deno.test("Every API that takes a signal refuses one that is not an AbortSignal with a TypeError naming it, leaving nothing open", async () => {
  await using server = await startTestServer();
  await using app = fastApp(server.url);
  const notSignals = [{}, "abort", null, { aborted: false }];
  for (const bad of notSignals) {
    const signal = bad as unknown as AbortSignal;
    await assert.rejects(
      () => app.logIn(Credentials.anonymous(), { signal }),
      /Cannot log in: signal must be an AbortSignal/,
    );
  }
  const user = await app.logIn(Credentials.anonymous());
  await using realm = await openDownloaded(user, "/~/signals");
  const receipt = await realm.write((tx) => tx.put("T", "a", { n: 1 }));
  const session = realm.syncSession;
  for (const bad of notSignals) {
    const signal = bad as unknown as AbortSignal;
    const message = /signal must be an AbortSignal/;
    await assert.rejects(
      () => user.openRealm({ path: "/~/other", signal }),
      message,
    );
    assert.throws(() => realm.changes({ signal }), message);
    assert.throws(() => realm.watch("T", { signal }), message);
    assert.throws(() => realm.watchObject("T", "a", { signal }), message);
    assert.throws(() => session.connectionStateChanges({ signal }), message);
    assert.throws(
      () =>
        session.getProgressStream("download", "reportIndefinitely", { signal }),
      message,
    );
    await assert.rejects(() => session.waitForUpload({ signal }), message);
    await assert.rejects(() => session.waitForDownload({ signal }), message);
    await assert.rejects(() => receipt.waitForUpload({ signal }), message);
  }
  await receipt.waitForUpload({ signal: bounded() });
});
