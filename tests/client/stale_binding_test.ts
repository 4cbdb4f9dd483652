// Messages a session received on a binding that was lost before they were
// handled are all dropped: a REJECT and the DOWNLOAD after it alike, so the
// acknowledgement cannot settle the refused write (found by the convergence
// soak, tests/soak/).

import assert from "node:assert/strict";
import { SyncError } from "../../src/client/sync_error.ts";
import { errorCodeNumber } from "../../src/protocol/error_codes.ts";
import { MessageType } from "../../src/protocol/messages.ts";
import {
  acceptConnection,
  answerMarks,
  boundSession,
  flush,
  openBoundRealm,
  scriptedApp,
} from "../_helpers/scripted_app.ts";

const ZERO = { time: 0, counter: 0, node: 0 };

Deno.test("a DOWNLOAD acknowledging a refused write, received with its REJECT just before the connection dropped, settles nothing: the write goes up again on the next binding and its receipt rejects with write_rejected", async () => {
  const { app, clock, sockets } = scriptedApp();
  try {
    const { realm, socket, sessionId } = await openBoundRealm(
      app,
      sockets,
      "/~/a",
    );
    await answerMarks(socket);
    const receipt = await realm.write((tx) => tx.put("T", "a", { x: 1 }));
    await flush();
    assert.deepEqual(
      socket.sentOf(MessageType.Upload).flatMap((upload) =>
        upload.changesets.map((changeset) => changeset.clientVersion)
      ),
      [1],
    );
    const refusal = (id: number) => ({
      type: MessageType.Reject,
      sessionId: id,
      clientVersion: 1,
      code: errorCodeNumber("validation_failed"),
      message: "refused",
      revert: [{
        serverVersion: 0,
        stamp: ZERO,
        instructions: [{
          op: "delete" as const,
          type: "T",
          id: "a",
          fields: null,
          stamp: ZERO,
        }],
      }],
    });
    // Both arrive, then the connection drops before either is handled.
    socket.receive(refusal(sessionId));
    socket.receive({
      type: MessageType.Download,
      sessionId,
      serverVersion: 0,
      lastIntegratedClientVersion: 1,
      downloadableBytes: 0,
      changesetBytes: 0,
      changesets: [],
    });
    socket.serverClose(1006);
    await flush();
    assert.equal(realm.syncSession.stats().pendingUploadChangesets, 1);

    clock.advance(500);
    const next = await acceptConnection(sockets);
    const nextId = boundSession(next, "/~/a");
    const bind = next.sentOf(MessageType.Bind).at(-1)!;
    assert.equal(bind.uploadCursor, 0);
    await answerMarks(next);
    assert.deepEqual(
      next.sentOf(MessageType.Upload).flatMap((upload) =>
        upload.changesets.map((changeset) => changeset.clientVersion)
      ),
      [1],
    );
    next.receive(refusal(nextId));
    await flush();
    await assert.rejects(
      receipt.waitForUpload({ signal: AbortSignal.timeout(5_000) }),
      (error) =>
        error instanceof SyncError && error.code === "write_rejected" &&
        error.cause instanceof SyncError &&
        error.cause.code === "validation_failed",
    );
    assert.equal(realm.get("T", "a"), undefined);
    assert.equal(realm.syncSession.state, "active");
  } finally {
    await app.close();
  }
});
