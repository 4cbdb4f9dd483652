// A session's download pump against a scripted hub: it parks (ends its run)
// when there is nothing to send, so an idle session keeps no suspended task,
// and its storage reads are aborted by close() and by the server's shutdown.

import assert from "node:assert/strict";
import {
  type DownloadMessage,
  MessageType,
  type ServerMessage,
} from "../../src/protocol/messages.ts";
import type { RealmHub } from "../../src/server/realm_hub.ts";
import { Session } from "../../src/server/session.ts";
import type { HistoryRead } from "../../src/server/storage/history.ts";
import { sessionSettings } from "./_session_settings.ts";

/** Settles with `promise`, or rejects after 5 s. */
function within<T>(promise: Promise<T>): Promise<T> {
  const timeout = AbortSignal.timeout(5_000);
  return Promise.race([
    promise,
    new Promise<never>((_, reject) =>
      timeout.addEventListener("abort", () => reject(timeout.reason), {
        once: true,
      })
    ),
  ]);
}

const changeset = {
  serverVersion: 1,
  stamp: { time: 1, counter: 0, node: 1 },
  instructions: [],
};

/** Version 1 of the scripted realm: another client's changeset. */
const item = {
  version: 1,
  size: 20,
  cumulativeBytes: 20,
  salt: 5,
  identity: 8,
  clientVersion: 1,
  changeset,
};

/**
 * A session on a hub whose head the test moves; `read` answers version 1
 * (another client's) unless `stallReads` is set, when it waits for its
 * signal and rejects with the reason. Memory holds nothing unless `cached`
 * is set, when it holds version 1.
 */
function scripted(
  options: { stallReads?: boolean; cached?: boolean } = {},
) {
  let reads = 0;
  const sent: ServerMessage[] = [];
  const signals: AbortSignal[] = [];
  const readStarted = Promise.withResolvers<void>();
  let head = { version: 0, bytes: 0 };
  const hub = {
    get head() {
      return head;
    },
    snapshotsEnabled: false,
    attach() {},
    detach() {
      return true;
    },
    read(
      _fromVersion: number,
      _maxBytes: number,
      signal: AbortSignal,
    ): Promise<HistoryRead> {
      signals.push(signal);
      reads++;
      readStarted.resolve();
      if (options.stallReads) {
        return new Promise((_, reject) =>
          signal.addEventListener("abort", () => reject(signal.reason), {
            once: true,
          })
        );
      }
      return Promise.resolve({
        items: [item],
        gap: false,
      } as unknown as HistoryRead);
    },
    readCached(fromVersion: number): unknown[] {
      return options.cached && fromVersion === 1 && head.version >= 1
        ? [item]
        : [];
    },
  };
  const lifetime = new AbortController();
  const session = new Session({
    id: 1,
    path: "/u/r",
    userId: "u",
    identity: { id: 7, salt: 1 },
    permission: "readwrite",
    hub: hub as unknown as RealmHub,
    transport: {
      send: (message) => sent.push(message),
      bufferedAmount: () => 0,
      buffersMoreThan: () => false,
      batchBytes: () => 64 * 1024,
      failSession: () => {},
    },
    downloadCursor: 0,
    cursorBytes: 0,
    cursorSalt: 0,
    lastIntegratedClientVersion: 0,
    protocolVersion: 2,
    ...sessionSettings(lifetime.signal),
  });
  return {
    sent,
    get reads() {
      return reads;
    },
    signals,
    readStarted: readStarted.promise,
    session,
    lifetime,
    moveHead(version: number, bytes: number) {
      head = { version, bytes };
    },
  };
}

Deno.test("an idle session's pump ends its run once nothing is left, and a wake starts one that sends what the head moved to", async () => {
  const script = scripted();
  const { sent, session, moveHead } = script;
  session.start();
  // Nothing to download: the first DOWNLOAD, then the run ends while the
  // session stays bound.
  await within(session.stopped);
  assert.equal(session.closed, false);
  assert.equal(sent.length, 1);
  assert.equal((sent[0] as DownloadMessage).serverVersion, 0);

  moveHead(1, 20);
  session.wake();
  // Not in memory: the pump reads it, in a later turn.
  assert.equal(sent.length, 1);
  await within(session.stopped);
  assert.equal(script.reads, 1);
  assert.equal(sent.length, 2);
  const next = sent[1] as DownloadMessage;
  assert.equal(next.type, MessageType.Download);
  assert.equal(next.serverVersion, 1);
  assert.deepEqual(next.changesets, [changeset]);
  assert.equal(next.downloadableBytes, 0);

  await session.close();
  moveHead(2, 40);
  session.wake();
  await within(session.stopped);
  assert.equal(sent.length, 2, "a closed session sends nothing");
});

Deno.test("a wake sends versions memory holds in the same turn, without a storage read or a pump run", async () => {
  const script = scripted({ cached: true });
  const { sent, session, moveHead } = script;
  session.start();
  await within(session.stopped);
  assert.equal(sent.length, 1);

  moveHead(1, 20);
  session.wake();
  // Sent before wake() returned: no turn passes between the commit that
  // woke the session and the DOWNLOAD.
  assert.equal(sent.length, 2);
  const next = sent[1] as DownloadMessage;
  assert.equal(next.serverVersion, 1);
  assert.deepEqual(next.changesets, [changeset]);
  assert.equal(next.downloadableBytes, 0);
  assert.equal(script.reads, 0);
  await within(session.stopped);
  assert.equal(sent.length, 2);
  assert.equal(script.reads, 0);
  await session.close();
});

Deno.test("a wake before start only notes itself: the pump starts with start()", async () => {
  const { sent, session, moveHead } = scripted();
  moveHead(1, 20);
  session.wake();
  await within(session.stopped);
  assert.equal(sent.length, 0);
  session.start();
  await within(session.stopped);
  assert.deepEqual(sent.map((message) => message.type), [
    MessageType.Download,
  ]);
  assert.equal((sent[0] as DownloadMessage).serverVersion, 1);
  await session.close();
});

Deno.test("close() aborts the pump's storage read in flight and waits for the pump", async () => {
  const { sent, signals, readStarted, session, moveHead } = scripted({
    stallReads: true,
  });
  moveHead(1, 20);
  session.start();
  await within(readStarted);
  assert.equal(signals[0]!.aborted, false);
  await within(session.close());
  assert.equal(signals[0]!.aborted, true);
  assert.equal(sent.length, 0);
});

Deno.test("abortWork() at the server's shutdown aborts a storage read in flight with the lifetime's reason", async () => {
  const { sent, signals, readStarted, session, lifetime, moveHead } = scripted(
    { stallReads: true },
  );
  moveHead(1, 20);
  session.start();
  await within(readStarted);
  const reason = new Error("The server is shutting down");
  lifetime.abort(reason);
  assert.equal(session.closed, true);
  session.abortWork();
  assert.equal(signals[0]!.reason, reason);
  // The pump's run ends on its own: the failed read of a closed session is
  // not reported.
  await within(session.stopped);
  assert.equal(sent.length, 0);
  await session.close();
});
