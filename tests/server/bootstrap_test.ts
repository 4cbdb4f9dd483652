import assert from "node:assert/strict";
import type { UploadChangeset } from "../../src/model/changeset.ts";
import { ObjectStore } from "../../src/model/object_store.ts";
import { COMPRESSION_THRESHOLD } from "../../src/protocol/compression.ts";
import { encodeDownloadChangeset } from "../../src/protocol/encode.ts";
import {
  type DownloadMessage,
  MessageType,
} from "../../src/protocol/messages.ts";
import { SNAPSHOT_STAMP } from "../../src/server/storage/snapshot.ts";
import { put, update, upload } from "../_helpers/changesets.ts";
import { type Frame, ProtocolClient } from "../_helpers/protocol_client.ts";
import { startTestServer, type TestServer } from "../_helpers/test_server.ts";

const OBJECTS = 10_000;
const PER_CHANGESET = 100;
const BATCH_BYTES = 64 * 1024;

/** 10,000 tasks, each written three times (a put, then two updates). */
function threeRounds(): UploadChangeset[] {
  const changesets: UploadChangeset[] = [];
  for (let round = 0; round < 3; round++) {
    for (let first = 0; first < OBJECTS; first += PER_CHANGESET) {
      const instructions = [];
      for (let index = first; index < first + PER_CHANGESET; index++) {
        const id = `task-${index}`;
        if (round === 0) {
          instructions.push(put("Task", id, {
            title: `Task number ${index}`,
            done: false,
            priority: index % 5,
            notes: "first draft of the notes",
          }));
        } else if (round === 1) {
          instructions.push(update("Task", id, {
            title: `Task number ${index} (edited)`,
            notes: "second draft of the notes",
          }));
        } else {
          instructions.push(update("Task", id, {
            done: index % 2 === 0,
            notes: "final notes",
          }));
        }
      }
      changesets.push(upload(changesets.length + 1, instructions));
    }
  }
  return changesets;
}

async function uploadAll(
  test: TestServer,
  accessToken: string,
  changesets: UploadChangeset[],
): Promise<void> {
  await using writer = await ProtocolClient.connect(test.url);
  await writer.handshake(accessToken);
  await writer.bind(1, "/~/tasks");
  await writer.expect(MessageType.Download);
  for (let start = 0; start < changesets.length; start += 100) {
    writer.send({
      type: MessageType.Upload,
      sessionId: 1,
      changesets: changesets.slice(start, start + 100),
    });
  }
  const signal = AbortSignal.timeout(30_000);
  for (let step = 0; step < 1000; step++) {
    const message = await writer.expect(MessageType.Download, signal);
    if (message.lastIntegratedClientVersion === changesets.length) return;
  }
  throw new Error("Upload was never fully acknowledged");
}

/**
 * Waits until the realm's snapshot is at `head`: snapshots advance in the
 * background (here after every write), never while a client waits.
 */
async function snapshotAt(test: TestServer, head: number): Promise<void> {
  await test.waitForLog(
    (record) =>
      record.event === "snapshot_advanced" &&
      record.message.startsWith(`Snapshot at version ${head},`),
    AbortSignal.timeout(30_000),
  );
}

async function download(
  test: TestServer,
  accessToken: string,
  head: number,
): Promise<{ frames: Frame[]; store: ObjectStore }> {
  await using reader = await ProtocolClient.connect(test.url);
  await reader.handshake(accessToken);
  await reader.bind(2, "/~/tasks");
  const frames = await reader.downloadUntil(2, head, {
    signal: AbortSignal.timeout(30_000),
  });
  const store = new ObjectStore();
  for (const { message } of frames) {
    if (message.type !== MessageType.Download) continue;
    for (const changeset of message.changesets) {
      store.apply(changeset.stamp, changeset.instructions);
    }
  }
  return { frames, store };
}

/**
 * Checks DOWNLOAD's byte figures across consecutive messages of one session
 * with no upload in between: each `downloadableBytes` is the next message's
 * `changesetBytes + downloadableBytes`, so they add up to the first
 * message's `changesetBytes + downloadableBytes`. Returns that total.
 */
function assertExactCount(messages: readonly DownloadMessage[]): number {
  for (let index = 1; index < messages.length; index++) {
    const previous = messages[index - 1]!;
    const message = messages[index]!;
    assert.equal(
      previous.downloadableBytes,
      message.changesetBytes + message.downloadableBytes,
      `message ${index}: ${previous.downloadableBytes} left before, ${message.changesetBytes} taken off, ${message.downloadableBytes} left`,
    );
  }
  const total = messages[0]!.changesetBytes + messages[0]!.downloadableBytes;
  assert.equal(
    messages.reduce((sum, message) => sum + message.changesetBytes, 0),
    total,
  );
  assert.equal(messages.at(-1)!.downloadableBytes, 0);
  return total;
}

/** Sum of the stored sizes of the snapshot records a bootstrap carried. */
function recordBytes(messages: readonly DownloadMessage[]): number {
  let bytes = 0;
  for (const message of messages) {
    for (const changeset of message.changesets) {
      // A snapshot changeset holds whole records: one per object, each
      // stored as a changeset of that object's instructions.
      const byObject = new Map<string, typeof changeset.instructions>();
      for (const instruction of changeset.instructions) {
        const key = `${instruction.type}\u0000${instruction.id}`;
        const list = byObject.get(key) ?? [];
        list.push(instruction);
        byObject.set(key, list);
      }
      for (const instructions of byObject.values()) {
        bytes += encodeDownloadChangeset({
          serverVersion: 0,
          stamp: SNAPSHOT_STAMP,
          instructions,
        }).byteLength;
      }
    }
  }
  return bytes;
}

function downloads(frames: Frame[]) {
  return frames.map((frame) => {
    assert.equal(frame.message.type, MessageType.Download);
    return frame.message as Extract<Frame["message"], { type: 0x43 }>;
  });
}

Deno.test("a fresh client bootstraps 10,000 objects from the snapshot in bounded batches, with fewer bytes than the history", async () => {
  await using kv = await Deno.openKv(":memory:");
  // Four servers on one store: snapshot or replay, deflated frames or not.
  const start = (snapshots: boolean, compression: boolean) =>
    startTestServer({
      kv,
      downloadBatchBytes: BATCH_BYTES,
      compression,
      history: { snapshots, snapshotLagVersions: 1 },
    });
  await using withSnapshots = await start(true, true);
  await using historyOnly = await start(false, true);
  await using plainSnapshots = await start(true, false);
  await using plainHistory = await start(false, false);
  const login = await withSnapshots.login();
  const changesets = threeRounds();
  await uploadAll(withSnapshots, login.accessToken, changesets);
  const head = changesets.length;
  assert.equal(withSnapshots.server.stats().changesetsIntegrated, head);
  await snapshotAt(withSnapshots, head);

  const expected = new ObjectStore();
  for (const changeset of changesets) {
    expected.apply(changeset.stamp, changeset.instructions);
  }

  const bootstrap = await download(withSnapshots, login.accessToken, head);
  const replay = await download(historyOnly, login.accessToken, head);
  const plainBootstrap = await download(
    plainSnapshots,
    login.accessToken,
    head,
  );
  const plainReplay = await download(plainHistory, login.accessToken, head);

  // All converge on the state the uploads describe.
  for (const { store } of [bootstrap, replay, plainBootstrap, plainReplay]) {
    assert.equal(store.size, OBJECTS);
    for (const index of [0, 1, 4321, OBJECTS - 1]) {
      assert.deepEqual(
        store.get("Task", `task-${index}`),
        expected.get("Task", `task-${index}`),
      );
    }
    assert.deepEqual(
      [...store.records()].map((record) => record.fields.size),
      [...expected.records()].map((record) => record.fields.size),
    );
  }

  for (const { frames } of [bootstrap, plainBootstrap]) {
    // Snapshot phase: serverVersion stays at the cursor (0) until the last
    // snapshot message, which carries the snapshot's version.
    const messages = downloads(frames);
    const snapshotEnd = messages.findIndex((message) =>
      message.serverVersion > 0
    );
    assert.ok(snapshotEnd > 10, `${snapshotEnd} snapshot batches`);
    assert.equal(messages[snapshotEnd]!.serverVersion, head);
    for (const message of messages.slice(0, snapshotEnd)) {
      assert.equal(message.serverVersion, 0);
      for (const changeset of message.changesets) {
        assert.equal(changeset.serverVersion, head);
        assert.ok(
          changeset.instructions.every((instruction) =>
            instruction.stamp !== null
          ),
        );
      }
    }
    // Bounded batches with decreasing downloadable bytes, ending at 0.
    for (const frame of frames) {
      assert.ok(frame.bytes <= BATCH_BYTES, `${frame.bytes} > ${BATCH_BYTES}`);
    }
    for (let index = 1; index < messages.length; index++) {
      assert.ok(
        messages[index]!.downloadableBytes <
          messages[index - 1]!.downloadableBytes,
        `downloadable bytes went ${messages[index - 1]!.downloadableBytes} → ${
          messages[index]!.downloadableBytes
        } at message ${index}`,
      );
    }
    assert.equal(messages.at(-1)!.downloadableBytes, 0);
    // Exact counts: each snapshot message takes off the stored sizes of
    // the records it carries, and they add up to the first figure.
    for (const message of messages) {
      assert.equal(message.changesetBytes, recordBytes([message]));
    }
    assert.equal(assertExactCount(messages), recordBytes(messages));
  }
  const historyBytes = changesets.reduce(
    (sum, changeset) =>
      sum + encodeDownloadChangeset({ ...changeset, serverVersion: 0 })
        .byteLength,
    0,
  );
  for (const { frames } of [replay, plainReplay]) {
    assert.equal(assertExactCount(downloads(frames)), historyBytes);
  }
  // Every frame worth compressing is compressed; the last batch may be too
  // small to be.
  assert.ok(
    bootstrap.frames.every((frame) =>
      frame.compressed || frame.bytes < COMPRESSION_THRESHOLD
    ),
  );
  assert.ok(bootstrap.frames.slice(0, -1).every((frame) => frame.compressed));
  assert.ok(plainBootstrap.frames.every((frame) => !frame.compressed));

  // The comparison the snapshot exists for: with every object written three
  // times, the state is smaller than the history behind it, with or without
  // deflate (which squeezes out much of the history's repetition).
  const total = (frames: Frame[]) =>
    frames.reduce((sum, frame) => sum + frame.bytes, 0);
  const figures = {
    snapshot: total(bootstrap.frames),
    history: total(replay.frames),
    plainSnapshot: total(plainBootstrap.frames),
    plainHistory: total(plainReplay.frames),
  };
  assert.ok(figures.snapshot < figures.history, JSON.stringify(figures));
  assert.ok(
    figures.plainSnapshot < figures.plainHistory * 0.75,
    JSON.stringify(figures),
  );
  if (Deno.env.get("TETHER_PRINT_FIGURES")) {
    console.log(
      `bootstrap of ${OBJECTS} objects × 3 writes, ${BATCH_BYTES} B batches:`,
    );
    for (
      const [name, frames] of [
        ["snapshot, deflated", bootstrap.frames],
        ["history, deflated", replay.frames],
        ["snapshot, plain", plainBootstrap.frames],
        ["history, plain", plainReplay.frames],
      ] as const
    ) {
      console.log(`  ${name}: ${total(frames)} B in ${frames.length} messages`);
    }
  }
});

Deno.test("a client behind compacted history bootstraps from the snapshot, and MARK waits for the snapshot phase", async () => {
  await using test = await startTestServer({
    downloadBatchBytes: 2048,
    history: { snapshotLagVersions: 1, retainVersions: 0 },
  });
  const login = await test.login();
  await using writer = await ProtocolClient.connect(test.url);
  await writer.handshake(login.accessToken);
  await writer.bind(1, "/~/notes");
  await writer.expect(MessageType.Download);
  const send = (from: number, to: number) => {
    const changesets = [];
    for (let version = from; version <= to; version++) {
      changesets.push(upload(version, [put("Note", `n${version % 7}`, {
        text: `version ${version} `.repeat(60),
      })]));
    }
    writer.send({ type: MessageType.Upload, sessionId: 1, changesets });
  };
  send(1, 5);

  // A reader catches up to version 5, then leaves.
  const reader = await ProtocolClient.connect(test.url);
  await reader.handshake(login.accessToken);
  const identity = (await reader.bind(2, "/~/notes"))!;
  const before = await reader.downloadUntil(2, 5);
  const store = new ObjectStore();
  for (const { message } of before) {
    if (message.type !== MessageType.Download) continue;
    for (const changeset of message.changesets) {
      store.apply(changeset.stamp, changeset.instructions);
    }
  }
  await reader.close();

  // Meanwhile the history up to 40 is written, snapshotted and compacted.
  send(6, 40);
  await test.waitForLog((record) =>
    record.event === "snapshot_advanced" &&
    record.message === "Snapshot at version 40, history compacted through 40"
  );

  await using back = await ProtocolClient.connect(test.url);
  await back.handshake(login.accessToken);
  back.send({
    type: MessageType.Bind,
    sessionId: 2,
    path: "/~/notes",
    clientIdentity: identity,
    downloadCursor: 5,
    uploadCursor: 0,
  });
  back.send({ type: MessageType.Mark, sessionId: 2, requestId: 1 });
  const messages = [];
  for (let step = 0; step < 200; step++) {
    const message = await back.next();
    if (message.type === MessageType.MarkReply) break;
    assert.equal(message.type, MessageType.Download);
    if (message.type === MessageType.Download) messages.push(message);
  }
  assert.ok(messages.length > 2, "the snapshot took several batches");
  assert.ok(
    messages.slice(0, -1).every((message) => message.serverVersion === 5),
  );
  assert.equal(messages.at(-1)!.serverVersion, 40);
  assert.equal(messages.at(-1)!.downloadableBytes, 0);
  for (const message of messages) {
    assert.equal(message.changesetBytes, recordBytes([message]));
  }
  assert.equal(assertExactCount(messages), recordBytes(messages));
  for (const message of messages) {
    for (const changeset of message.changesets) {
      store.apply(changeset.stamp, changeset.instructions);
    }
  }
  for (let index = 0; index < 7; index++) {
    const last = 40 - ((40 - index) % 7);
    assert.deepEqual(store.get("Note", `n${index}`), {
      text: `version ${last} `.repeat(60),
    });
  }
});

Deno.test("a client whose cursor is exactly the compacted snapshot version goes on with the history after it", async () => {
  await using test = await startTestServer({
    history: { snapshotLagVersions: 1, retainVersions: 0 },
  });
  const login = await test.login();
  await using writer = await ProtocolClient.connect(test.url);
  await writer.handshake(login.accessToken);
  const identity = (await writer.bind(1, "/~/log"))!;
  await writer.expect(MessageType.Download);
  writer.send({
    type: MessageType.Upload,
    sessionId: 1,
    changesets: [1, 2, 3].map((version) =>
      upload(version, [put("Line", `l${version}`, {})])
    ),
  });
  await test.waitForLog((record) =>
    record.message === "Snapshot at version 3, history compacted through 3"
  );

  await using reader = await ProtocolClient.connect(test.url);
  await reader.handshake(login.accessToken);
  reader.send({
    type: MessageType.Bind,
    sessionId: 9,
    path: "/~/log",
    clientIdentity: identity,
    downloadCursor: 3,
    uploadCursor: 3,
  });
  const caughtUp = await reader.expect(MessageType.Download);
  assert.equal(caughtUp.serverVersion, 3);
  assert.equal(caughtUp.downloadableBytes, 0);
  assert.deepEqual(caughtUp.changesets, []);
  // Another client's write arrives as history, not as a snapshot.
  await using other = await ProtocolClient.connect(test.url);
  await other.handshake(login.accessToken);
  await other.bind(2, "/~/log");
  await other.downloadUntil(2, 3);
  other.send({
    type: MessageType.Upload,
    sessionId: 2,
    changesets: [upload(1, [put("Line", "l4", {})], { node: 2 })],
  });
  const next = await reader.expect(MessageType.Download);
  assert.equal(next.serverVersion, 4);
  assert.equal(next.changesets.length, 1);
  assert.equal(next.changesets[0]!.serverVersion, 4);
});

Deno.test("by default a DOWNLOAD holds at most 64 KiB, so a slow link sees a whole message (life, progress) every 64 KiB", async () => {
  // Uncompressed frames, so the wire size is the size the bound is about.
  await using test = await startTestServer({ compression: false });
  const login = await test.login();
  const changesets: UploadChangeset[] = [];
  for (let first = 0; first < 3000; first += PER_CHANGESET) {
    const instructions = [];
    for (let index = first; index < first + PER_CHANGESET; index++) {
      instructions.push(put("Task", `task-${index}`, {
        title: `Task number ${index}`,
        notes: "notes long enough to make the realm a few hundred KB",
      }));
    }
    changesets.push(upload(changesets.length + 1, instructions));
  }
  await uploadAll(test, login.accessToken, changesets);

  const { frames, store } = await download(
    test,
    login.accessToken,
    changesets.length,
  );
  assert.equal(store.size, 3000);
  const messages = downloads(frames);
  const total = assertExactCount(messages);
  assert.ok(total > 3 * 64 * 1024, `${total} B is too small to need batches`);
  assert.ok(messages.length > 3, `${messages.length} messages`);
  for (const frame of frames) {
    assert.ok(frame.bytes <= 64 * 1024, `${frame.bytes} > 64 KiB`);
  }
});
