// Deterministic tests of the session state machine: the network is scripted
// (fake sockets, fake clock, fake /login) so exact byte figures and exact
// event sequences can be asserted. The same rules are tested against the
// real server over real sockets in tests/e2e/.
import assert from "node:assert/strict";
import { Credentials } from "../../src/client/credentials.ts";
import { SyncError } from "../../src/client/sync_error.ts";
import type { ConnectionStateChange } from "../../src/client/sync_session.ts";
import { errorCodeNumber } from "../../src/protocol/error_codes.ts";
import { compressFrame } from "../../src/protocol/compression.ts";
import {
  encodeDownloadChangeset,
  encodeMessage,
} from "../../src/protocol/encode.ts";
import { MessageType } from "../../src/protocol/messages.ts";
import {
  acceptConnection,
  answerMarks,
  boundSession,
  download,
  flush,
  ident,
  openBound,
  recorder,
  remoteChangeset,
  scriptedApp,
  sentFor,
} from "../_helpers/scripted_app.ts";

Deno.test("SyncSession connection states: connecting → connected on first answer; disconnected carries error and retry", async () => {
  const { app, sockets, clock } = scriptedApp();
  try {
    const user = await app.logIn(Credentials.anonymous());
    const realm = await user.openRealm({ path: "/~/a" });
    const session = realm.syncSession;
    assert.equal(session.connectionState, "connecting");
    const changes: ConnectionStateChange[] = [];
    const controller = new AbortController();
    const reading = (async () => {
      for await (
        const change of session.connectionStateChanges({
          signal: controller.signal,
        })
      ) {
        changes.push(change);
      }
    })();
    const socket = await acceptConnection(sockets);
    // Bound, but the server has not answered this session yet.
    assert.equal(session.connectionState, "connecting");
    await ident(socket, "/~/a");
    assert.equal(session.connectionState, "connected");
    socket.serverClose(1006, "gone");
    await flush();
    assert.equal(session.connectionState, "disconnected");
    assert.equal(session.retry?.attempt, 1);
    assert.equal(session.retry?.nextAttemptAt, clock.now() + 500);
    assert.equal(session.error?.code, "connection_lost");
    assert.equal(session.error?.willRetry, true);
    clock.advance(500);
    const next = await acceptConnection(sockets);
    assert.equal(session.retry, undefined);
    await answerMarks(next);
    controller.abort();
    await reading;
    assert.deepEqual(
      changes.map((
        c,
      ) => [c.previous, c.current, c.error?.code, c.retry?.attempt]),
      [
        ["connecting", "connected", undefined, undefined],
        ["connected", "disconnected", "connection_lost", 1],
        ["disconnected", "connecting", undefined, undefined],
        ["connecting", "connected", undefined, undefined],
      ],
    );
    assert.equal(session.error, undefined);
    assert.equal(session.stats().reconnects, 1);
  } finally {
    await app.close();
  }
});

Deno.test("SyncSession pause() sends nothing until resume() — not even after app.reconnect() — and never touches another session", async () => {
  const { app, realm, socket, sessionId, session, user, sockets } =
    await openBound();
  try {
    const other = await user.openRealm({ path: "/~/b" });
    await flush();
    const otherId = boundSession(socket, "/~/b");
    await ident(socket, "/~/b", 2);
    assert.equal(other.syncSession.connectionState, "connected");
    session.pause();
    session.pause();
    assert.equal(session.state, "inactive");
    assert.equal(session.connectionState, "disconnected");
    assert.deepEqual(sentFor(socket, sessionId).at(-1), {
      type: MessageType.Unbind,
      sessionId,
    });
    const sentForPaused = sentFor(socket, sessionId).length;
    await realm.write((tx) => tx.put("T", "while-paused", {}));
    await other.write((tx) => tx.put("T", "other", {}));
    await flush();
    assert.equal(sentFor(socket, sessionId).length, sentForPaused);
    assert.equal(
      sentFor(socket, otherId).filter((m) => m.type === MessageType.Upload)
        .length,
      1,
    );
    assert.equal(other.syncSession.connectionState, "connected");
    // A reconnect rebinds the other session only.
    app.reconnect();
    const replacement = await acceptConnection(sockets);
    assert.deepEqual(replacement.sentOf(MessageType.Bind).map((b) => b.path), [
      "/~/b",
    ]);
    assert.equal(session.connectionState, "disconnected");
    assert.equal(session.stats().pendingUploadChangesets, 1);
    // Resume: connecting → connected on the open socket, then the upload.
    const changes: string[] = [];
    const controller = new AbortController();
    const reading = (async () => {
      for await (
        const c of session.connectionStateChanges({ signal: controller.signal })
      ) {
        changes.push(`${c.previous}→${c.current}`);
      }
    })();
    session.resume();
    session.resume();
    await flush();
    const resumedId = boundSession(replacement, "/~/a");
    const bind = replacement.sentOf(MessageType.Bind).find((b) =>
      b.sessionId === resumedId
    )!;
    assert.deepEqual(bind.clientIdentity, { id: 1, salt: 1234 });
    const upload = replacement.sentOf(MessageType.Upload).find((u) =>
      u.sessionId === resumedId
    )!;
    assert.deepEqual(upload.changesets.map((c) => c.clientVersion), [1]);
    await answerMarks(replacement);
    controller.abort();
    await reading;
    assert.deepEqual(changes, [
      "disconnected→connecting",
      "connecting→connected",
    ]);
    assert.equal(session.state, "active");
  } finally {
    await app.close();
  }
});

Deno.test("SyncSession waits for IDENT before uploading, then re-sends every unacknowledged changeset after each bind", async () => {
  const { app, sockets } = scriptedApp();
  try {
    const user = await app.logIn(Credentials.anonymous());
    const realm = await user.openRealm({ path: "/~/a" });
    await realm.write((tx) => tx.put("T", "1", {}));
    await realm.write((tx) => tx.put("T", "2", {}));
    const socket = await acceptConnection(sockets);
    assert.equal(socket.sentOf(MessageType.Upload).length, 0);
    await ident(socket, "/~/a");
    const sessionId = boundSession(socket, "/~/a");
    assert.deepEqual(
      socket.sentOf(MessageType.Upload).flatMap((u) =>
        u.changesets.map((c) => c.clientVersion)
      ),
      [1, 2],
    );
    await download(socket, sessionId, { ack: 1, serverVersion: 1 });
    socket.serverClose(1006);
    await flush();
    app.reconnect();
    const next = await acceptConnection(sockets);
    const bind = next.sentOf(MessageType.Bind)[0]!;
    assert.deepEqual(
      {
        identity: bind.clientIdentity,
        download: bind.downloadCursor,
        upload: bind.uploadCursor,
      },
      { identity: { id: 1, salt: 1234 }, download: 1, upload: 1 },
    );
    assert.deepEqual(
      next.sentOf(MessageType.Upload).flatMap((u) =>
        u.changesets.map((c) => c.clientVersion)
      ),
      [2],
    );
  } finally {
    await app.close();
  }
});

Deno.test("SyncSession splits uploads into frames below the server's limit", async () => {
  const { app, sockets } = scriptedApp();
  try {
    const user = await app.logIn(Credentials.anonymous());
    const realm = await user.openRealm({ path: "/~/a" });
    for (let index = 0; index < 20; index++) {
      await realm.write((tx) =>
        tx.put("T", `o${index}`, { text: "x".repeat(200) })
      );
    }
    const socket = await acceptConnection(sockets, 1_000);
    await ident(socket, "/~/a");
    const sessionId = boundSession(socket, "/~/a");
    // Two frames go at a time; each acknowledgement lets the next out.
    for (let round = 0; round < 20; round++) {
      const sent = socket.sentOf(MessageType.Upload);
      const last = sent.at(-1)!.changesets.at(-1)!.clientVersion;
      if (last === 20) break;
      assert.ok(sent.length <= 2 * (round + 1));
      await download(socket, sessionId, { ack: last });
    }
    const uploads = socket.sent
      .map((message, index) => ({ message, bytes: socket.sentBytes[index]! }))
      .filter(({ message }) => message.type === MessageType.Upload);
    assert.ok(uploads.length > 1);
    for (const { bytes } of uploads) assert.ok(bytes <= 1_000, `${bytes}`);
    assert.deepEqual(
      uploads.flatMap(({ message }) =>
        (message as { changesets: { clientVersion: number }[] }).changesets.map(
          (c) => c.clientVersion,
        )
      ),
      [...Array(20).keys()].map((i) => i + 1),
    );
  } finally {
    await app.close();
  }
});

Deno.test("SyncSession a changeset larger than the server's limit is a fatal bad_changeset, not a loop", async () => {
  const { app, sockets } = scriptedApp();
  try {
    const user = await app.logIn(Credentials.anonymous());
    const realm = await user.openRealm({ path: "/~/a" });
    const receipt = await realm.write((tx) =>
      tx.put("T", "big", { text: "x".repeat(5_000) })
    );
    const rejected = assert.rejects(
      receipt.waitForUpload(),
      (error: SyncError) => error.code === "bad_changeset",
    );
    const socket = await acceptConnection(sockets, 1_000);
    await ident(socket, "/~/a");
    await rejected;
    const session = realm.syncSession;
    assert.equal(session.state, "error");
    assert.equal(socket.sentOf(MessageType.Upload).length, 0);
    // The local data stays.
    assert.deepEqual(realm.get("T", "big"), { text: "x".repeat(5_000) });
  } finally {
    await app.close();
  }
});

Deno.test("SyncSession waitForDownload() survives a lost MARK: it asks again after the reconnect", async () => {
  const { app, socket, sessionId, session, sockets } = await openBound();
  try {
    await answerMarks(socket);
    let resolved = false;
    const waiting = session.waitForDownload({
      signal: AbortSignal.timeout(5_000),
    }).then(() => {
      resolved = true;
    });
    await flush();
    const marks = sentFor(socket, sessionId).filter((m) =>
      m.type === MessageType.Mark
    );
    assert.equal(marks.length, 2);
    socket.serverClose(1006);
    await flush();
    assert.equal(resolved, false);
    app.reconnect();
    const next = await acceptConnection(sockets);
    assert.equal(resolved, false);
    await answerMarks(next);
    await waiting;
    assert.equal(resolved, true);
  } finally {
    await app.close();
  }
});

Deno.test("SyncSession waits keep waiting while paused and resolve after resume", async () => {
  const { app, realm, socket, session } = await openBound();
  try {
    await answerMarks(socket);
    session.pause();
    await realm.write((tx) => tx.put("T", "x", {}));
    let done = 0;
    const upload = session.waitForUpload().then(() => done++);
    const downloaded = session.waitForDownload().then(() => done++);
    await flush();
    assert.equal(done, 0);
    session.resume();
    await flush();
    const sessionId = boundSession(socket, "/~/a");
    await download(socket, sessionId, { ack: 1 });
    await answerMarks(socket);
    await Promise.all([upload, downloaded]);
    assert.equal(done, 2);
  } finally {
    await app.close();
  }
});

Deno.test("SyncSession a session-scoped fatal error rejects waiters, errors streams, keeps local data, spares the socket", async () => {
  const { app, realm, socket, sessionId, session, user } = await openBound();
  try {
    const other = await user.openRealm({ path: "/~/b" });
    await flush();
    await ident(socket, "/~/b", 2);
    await realm.write((tx) => tx.put("T", "kept", { v: 1 }));
    const isDenied = (error: unknown) =>
      error instanceof SyncError && error.code === "permission_denied" &&
      error.message === "Cannot access /u1/a" && error.isFatal;
    const upload = assert.rejects(session.waitForUpload(), isDenied);
    const downloaded = assert.rejects(session.waitForDownload(), isDenied);
    const progress = session.getProgressStream("upload", "reportIndefinitely");
    const states = session.connectionStateChanges();
    socket.receive({
      type: MessageType.Error,
      sessionId,
      code: errorCodeNumber("permission_denied"),
      tryAgain: false,
      message: "Cannot access /u1/a",
    });
    await flush();
    await upload;
    await downloaded;
    await assert.rejects(
      (async () => {
        for await (const _ of progress) { /* drain */ }
      })(),
      isDenied,
    );
    const reader = states.getReader();
    const last = await reader.read();
    assert.deepEqual([
      last.value?.previous,
      last.value?.current,
      last.value?.error?.code,
    ], [
      "connected",
      "disconnected",
      "permission_denied",
    ]);
    await assert.rejects(reader.read(), isDenied);
    assert.equal(session.state, "error");
    assert.ok(isDenied(session.error));
    assert.equal(
      session.addProgressNotification("upload", "reportIndefinitely", () => {}),
      null,
    );
    await assert.rejects(
      session.getProgressStream("download", "reportIndefinitely").getReader()
        .read(),
      isDenied,
    );
    await assert.rejects(session.waitForUpload(), isDenied);
    assert.deepEqual(realm.get("T", "kept"), { v: 1 });
    await realm.write((tx) => tx.put("T", "still-writable", {}));
    // No UNBIND for a session the server already ended; the other session
    // keeps the socket.
    assert.equal(
      sentFor(socket, sessionId).some((m) => m.type === MessageType.Unbind),
      false,
    );
    assert.equal(socket.readyState, 1);
    assert.equal(other.syncSession.connectionState, "connected");
    session.pause();
    session.resume();
    assert.equal(session.state, "error");
  } finally {
    await app.close();
  }
});

Deno.test("SyncSession a session error the server says may pass binds again after a backoff", async () => {
  const { app, socket, sessionId, session, clock } = await openBound();
  try {
    socket.receive({
      type: MessageType.Error,
      sessionId,
      code: errorCodeNumber("session_failed"),
      tryAgain: true,
      message: "busy",
    });
    await flush();
    assert.equal(session.state, "active");
    assert.equal(session.connectionState, "disconnected");
    assert.equal(session.retry?.attempt, 1);
    assert.equal(session.error?.code, "session_failed");
    clock.advance(500);
    await flush();
    assert.equal(socket.sentOf(MessageType.Bind).length, 2);
    await answerMarks(socket);
    assert.equal(session.connectionState, "connected");
  } finally {
    await app.close();
  }
});

Deno.test("SyncSession waits reject with the signal's reason, unchanged, before and during; close() rejects with session_closed", async () => {
  const { app, realm, session } = await openBound();
  const reason = { why: "user left" };
  await assert.rejects(
    session.waitForDownload({ signal: AbortSignal.abort(reason) }),
    (e) => e === reason,
  );
  await assert.rejects(
    session.waitForUpload({ signal: AbortSignal.abort(reason) }),
    (e) => e === reason,
  );
  await realm.write((tx) => tx.put("T", "x", {}));
  const controller = new AbortController();
  const upload = assert.rejects(
    session.waitForUpload({ signal: controller.signal }),
    (e) => e === reason,
  );
  const downloaded = assert.rejects(
    session.waitForDownload({ signal: controller.signal }),
    (e) => e === reason,
  );
  await flush();
  controller.abort(reason);
  await upload;
  await downloaded;
  const pending = assert.rejects(
    session.waitForUpload(),
    (e) => e instanceof SyncError && e.code === "session_closed",
  );
  await flush();
  await realm.close();
  await pending;
  assert.equal(session.state, "inactive");
  assert.equal(
    session.addProgressNotification("upload", "reportIndefinitely", () => {}),
    null,
  );
  await app.close();
});

Deno.test("SyncSession app.close() leaves no timer behind and is safe twice", async () => {
  const { app, clock, realm } = await openBound();
  await realm.write((tx) => tx.put("T", "x", {}));
  await app.close();
  await app.close();
  assert.equal(clock.pending, 0);
  assert.equal(realm.isClosed, true);
  await assert.rejects(app.logIn(Credentials.anonymous()), TypeError);
});

Deno.test("SyncSession handles compressed DOWNLOAD frames in arrival order: progress counts the server's changesetBytes, stats the wire", async () => {
  const { app, realm, socket, sessionId, session } = await openBound();
  try {
    const changeset = remoteChangeset(1, 200);
    // The server counts the changeset as it stores it.
    const stored = encodeDownloadChangeset(changeset).length;
    const frame = encodeMessage({
      type: MessageType.Download,
      sessionId,
      serverVersion: 1,
      lastIntegratedClientVersion: 0,
      downloadableBytes: 0,
      changesetBytes: stored,
      changesets: [changeset],
    });
    const compressed = await compressFrame(frame, { threshold: 0 });
    assert.ok(compressed.length < stored && stored < frame.length);
    const progress = recorder();
    session.addProgressNotification(
      "download",
      "reportIndefinitely",
      progress.callback,
    );
    let downloaded = false;
    const waiting = session.waitForDownload().then(() => {
      downloaded = true;
      // The MARK reply arrived right behind the compressed DOWNLOAD, but
      // is handled after it.
      assert.equal(realm.objects("R").length, 200);
    });
    await flush();
    const mark = socket.sentOf(MessageType.Mark).at(-1)!;
    const receivedBefore = session.stats().bytesReceived;
    socket.dispatchEvent(
      new MessageEvent("message", { data: compressed.buffer }),
    );
    const replySize = socket.receive({
      type: MessageType.MarkReply,
      sessionId,
      requestId: mark.requestId,
    });
    await waiting;
    assert.equal(downloaded, true);
    // Progress counts what the server counted; stats count what crossed
    // the wire.
    assert.deepEqual(progress.events.at(-1), [stored, stored, 1]);
    assert.equal(
      session.stats().bytesReceived - receivedBefore,
      compressed.length + replySize,
    );
  } finally {
    await app.close();
  }
});

Deno.test("SyncSession a compressed frame that does not inflate is a fatal protocol_violation", async () => {
  const { app, socket, session } = await openBound();
  try {
    const broken = new Uint8Array([
      MessageType.Download | 0x80,
      0xff,
      0xff,
      0xff,
      0x00,
    ]);
    const failed = assert.rejects(
      session.waitForDownload(),
      (error) =>
        error instanceof SyncError && error.code === "protocol_violation",
    );
    await flush();
    socket.dispatchEvent(new MessageEvent("message", { data: broken.buffer }));
    await failed;
    assert.equal(session.state, "error");
  } finally {
    await app.close();
  }
});

Deno.test("SyncSession a client reset binds with no identity and cursors 0, stages the server's state out of sight until the MARK after that BIND is answered, then replaces the realm at once and uploads the recovered writes (also one made while staging)", async () => {
  const { app, realm, socket, sessionId, session } = await openBound();
  try {
    await realm.write((tx) => tx.put("Task", "t1", { n: 1 }));
    await flush();
    await download(socket, sessionId, { serverVersion: 1, ack: 1 });
    await realm.write((tx) => tx.put("Task", "t2", { n: 2 }));
    await flush();
    socket.receive({
      type: MessageType.Error,
      sessionId,
      code: errorCodeNumber("client_reset_required"),
      tryAgain: true,
      message: "download cursor 1 is ahead of the server's history (0)",
    });
    await flush();
    const bind = socket.sentOf(MessageType.Bind).at(-1)!;
    assert.notEqual(bind.sessionId, sessionId);
    assert.deepEqual(
      [bind.clientIdentity, bind.downloadCursor, bind.uploadCursor],
      [null, 0, 0],
    );
    await ident(socket, "/~/a", 7);
    await download(socket, bind.sessionId, {
      serverVersion: 5,
      changesets: [remoteChangeset(5, 2)],
    });
    // Staged, not shown: the realm is as it was.
    assert.deepEqual(realm.objects("R"), []);
    assert.deepEqual(realm.get("Task", "t1"), { n: 1 });
    await realm.write((tx) => tx.put("Task", "t3", { n: 3 }));
    await flush();
    assert.deepEqual(
      sentFor(socket, bind.sessionId).filter((m) =>
        m.type === MessageType.Upload
      ),
      [],
    );
    await answerMarks(socket);
    assert.equal(realm.objects("R").length, 2);
    assert.equal(realm.get("Task", "t1"), undefined);
    assert.deepEqual(realm.get("Task", "t2"), { n: 2 });
    assert.deepEqual(realm.get("Task", "t3"), { n: 3 });
    const uploads = sentFor(socket, bind.sessionId).filter((m) =>
      m.type === MessageType.Upload
    );
    assert.deepEqual(
      uploads.flatMap((m) =>
        m.type === MessageType.Upload
          ? m.changesets.map((c) => c.clientVersion)
          : []
      ),
      [2, 3],
    );
    assert.equal(session.stats().clientResets, 1);
    assert.equal(session.state, "active");
  } finally {
    await app.close();
  }
});
