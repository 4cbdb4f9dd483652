/**
 * Upload coalescing end to end, over real sockets: writes made while UPLOADs
 * are in flight leave together in one UPLOAD, each keeping its own client
 * version and receipt, and a connection cut while such an UPLOAD is out
 * loses nothing and integrates nothing twice (docs/CLIENT.md "Upload
 * batching").
 */
import assert from "node:assert/strict";
import type { Realm, RealmChange, WriteReceipt } from "../../mod.ts";
import { decodeMessage } from "../../src/protocol/decode.ts";
import { isCompressedFrame } from "../../src/protocol/compression.ts";
import { MessageType } from "../../src/protocol/messages.ts";
import { anonymousClient } from "../_helpers/e2e.ts";
import { startTestServer } from "../_helpers/test_server.ts";

/** How an outgoing UPLOAD that carries several changesets is treated. */
type Cut = "none" | "delivered" | "lost";

/**
 * A WebSocket (the App's seam) that records the client versions of every
 * UPLOAD it sends and, when `cut` says so, closes itself right after the
 * first UPLOAD carrying several changesets: sent first ("delivered", the
 * server may integrate it, and what it answers on that socket is dropped)
 * or dropped itself ("lost").
 */
function uploadWatcher(cut: Cut) {
  const uploads: number[][] = [];
  let armed = cut !== "none";
  class WatchingWebSocket extends WebSocket {
    #cut = false;
    constructor(
      url: string | URL,
      protocols?: ConstructorParameters<typeof WebSocket>[1],
    ) {
      super(url, protocols);
      // Registered before the client's handlers: after the cut nothing more
      // from this socket reaches the client (its acknowledgement is lost).
      this.addEventListener("message", (event) => {
        if (this.#cut) event.stopImmediatePropagation();
      });
    }
    override send(
      data: string | ArrayBufferLike | Blob | ArrayBufferView,
    ): void {
      const bytes = data as Uint8Array;
      const message = isCompressedFrame(bytes) ? undefined : decodeMessage(
        bytes,
      );
      if (message?.type !== MessageType.Upload) return super.send(data);
      const versions = message.changesets.map((c) => c.clientVersion);
      uploads.push(versions);
      if (!armed || versions.length < 2) return super.send(data);
      armed = false;
      if (cut === "delivered") super.send(data);
      this.#cut = true;
      this.close();
    }
  }
  return { WebSocket: WatchingWebSocket, uploads };
}

/** Remote values of field `n` of `T/x`, one entry per `changes()` item. */
function watchRemote(realm: Realm, signal: AbortSignal) {
  const items: number[][] = [];
  let wanted = Infinity;
  let reached: (() => void) | undefined;
  const done = (async () => {
    for await (const change of realm.changes({ signal })) {
      if (change.origin !== "remote") continue;
      items.push(valuesOf(change));
      if ((items.at(-1)!.at(-1) ?? -1) >= wanted) reached?.();
    }
  })();
  const until = (value: number) =>
    new Promise<void>((resolve) => {
      if (items.some((values) => values.includes(value))) return resolve();
      wanted = value;
      reached = resolve;
    });
  return { items, done, until };
}

function valuesOf(change: RealmChange): number[] {
  return change.changes.flatMap((c) =>
    c.id === "x" && typeof c.fields?.n === "number" ? [c.fields.n] : []
  );
}

async function coalesced(cut: Cut) {
  await using server = await startTestServer({
    permissions: () => "readwrite",
  });
  const watcher = uploadWatcher(cut);
  const writer = await anonymousClient(server.url, {
    WebSocket: watcher.WebSocket,
  });
  const reader = await anonymousClient(server.url);
  const controller = new AbortController();
  const signal = AbortSignal.any([
    controller.signal,
    AbortSignal.timeout(10_000),
  ]);
  try {
    const path = `/shared/coalescing-${cut}`;
    const a = await writer.user.openRealm({ path, waitForDownload: true });
    const b = await reader.user.openRealm({ path, waitForDownload: true });
    const remote = watchRemote(b, controller.signal);
    const first = await a.write((tx) => tx.put("T", "x", { n: 0 }));
    await first.waitForUpload({ signal });
    await remote.until(0);
    const integratedBefore = server.stats().changesetsIntegrated;
    const uploadsBefore = watcher.uploads.length;
    const base = first.clientVersion;

    // Awaited one after another: with memory storage each write settles in
    // microtasks, so no acknowledgement is handled between them.
    const receipts: WriteReceipt[] = [];
    for (let n = 1; n <= 8; n++) {
      receipts.push(await a.write((tx) => tx.update("T", "x", { n })));
    }
    assert.deepEqual(
      receipts.map((r) => r.clientVersion),
      [...Array(8).keys()].map((i) => base + 1 + i),
    );
    // Two frames go; the six later writes wait for an acknowledgement.
    assert.deepEqual(watcher.uploads.slice(uploadsBefore), [
      [base + 1],
      [base + 2],
    ]);
    await receipts[0]!.waitForUpload({ signal });
    if (cut === "none") {
      // The first acknowledgement sent the six together; they are not yet
      // acknowledged when the first receipt resolves.
      assert.deepEqual(watcher.uploads.slice(uploadsBefore + 2), [
        [3, 4, 5, 6, 7, 8].map((i) => base + i),
      ]);
      assert.ok(a.syncSession.stats().pendingUploadChangesets >= 6);
    }
    for (const receipt of receipts) await receipt.waitForUpload({ signal });
    await remote.until(8);

    // Each changeset integrated once, whatever was re-uploaded.
    assert.equal(server.stats().changesetsIntegrated - integratedBefore, 8);
    assert.deepEqual(a.syncSession.stats().pendingUploadChangesets, 0);
    // The reader sees each write as a transaction of its own, in order.
    assert.deepEqual(remote.items.slice(1), [[1], [2], [3], [4], [5], [6], [
      7,
    ], [8]]);
    assert.deepEqual(b.get("T", "x"), { n: 8 });
    if (cut !== "none") {
      // The coalesced UPLOAD went out again on the new binding.
      const sent = watcher.uploads.slice(uploadsBefore).flat();
      assert.ok(sent.filter((v) => v === base + 8).length >= 2, `${sent}`);
      assert.ok(a.syncSession.stats().reconnects >= 1);
    }
    controller.abort();
    await remote.done;
    await a.close();
    await b.close();
  } finally {
    controller.abort();
    await writer.app.close();
    await reader.app.close();
  }
}

Deno.test("Upload coalescing: writes awaited one after another while UPLOADs are in flight leave in one UPLOAD, each receipt resolves, each changeset integrates once and a reader sees one transaction per write", async () => {
  await coalesced("none");
});

Deno.test("Upload coalescing: a connection cut right after a coalesced UPLOAD reached the server re-uploads it on the next binding without integrating anything twice", async () => {
  await coalesced("delivered");
});

Deno.test("Upload coalescing: a coalesced UPLOAD lost with the connection goes again on the next binding, nothing lost", async () => {
  await coalesced("lost");
});
