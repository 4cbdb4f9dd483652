import assert from "node:assert/strict";
import { Backoff, DEFAULT_RECONNECT } from "../../src/client/backoff.ts";
import type { SessionChannel } from "../../src/client/connection.ts";
import { SessionLife } from "../../src/client/session_life.ts";
import { SyncError } from "../../src/client/sync_error.ts";
import { UploadBatcher } from "../../src/client/upload_batcher.ts";
import { UploadWindow } from "../../src/client/upload_window.ts";
import { WaitsLedger } from "../../src/client/waits_ledger.ts";
import { decodeMessage } from "../../src/protocol/decode.ts";
import { encodeUploadChangeset } from "../../src/protocol/encode.ts";
import {
  type ClientMessage,
  MessageType,
  type UploadMessage,
} from "../../src/protocol/messages.ts";
import { put, upload } from "../_helpers/changesets.ts";
import { FakeClock } from "../_helpers/fake_clock.ts";

const policy = {
  ...DEFAULT_RECONNECT,
  minDelayMs: 100,
  maxDelayMs: 1_000,
  resetAfterMs: 5_000,
};

Deno.test("Backoff counts retries, doubles the bound, honours a minimum, and starts over on reset()", () => {
  const clock = new FakeClock();
  const backoff = new Backoff(policy, () => 0.5, () => clock.now());
  assert.equal(backoff.next(), 50);
  assert.equal(backoff.next(), 100);
  assert.equal(backoff.next(), 200);
  assert.equal(backoff.attempts, 3);
  assert.equal(backoff.next(7_000), 7_000);
  assert.equal(backoff.attempts, 4);
  backoff.reset();
  assert.equal(backoff.attempts, 0);
  assert.equal(backoff.next(), 50);
});

Deno.test("Backoff starts over only after a link that stayed up resetAfterMs", () => {
  const clock = new FakeClock();
  const backoff = new Backoff(policy, () => 0.5, () => clock.now());
  backoff.next();
  backoff.next();
  backoff.up();
  clock.advance(4_999);
  assert.equal(backoff.down(), false);
  assert.equal(backoff.attempts, 2);
  backoff.up();
  clock.advance(5_000);
  assert.equal(backoff.down(), true);
  assert.equal(backoff.attempts, 0);
  // A second down() without an up() in between changes nothing.
  backoff.next();
  clock.advance(10_000);
  assert.equal(backoff.down(), false);
  assert.equal(backoff.attempts, 1);
});

Deno.test("Backoff caps the exponent when asked (session rebinds), so small multipliers stop growing there", () => {
  const small = { ...policy, multiplier: 1.01, maxDelayMs: 1_000_000 };
  const capped = new Backoff(small, () => 0.5, () => 0, 2);
  const free = new Backoff(small, () => 0.5, () => 0);
  for (let i = 0; i < 5; i++) {
    capped.next();
    free.next();
  }
  assert.equal(capped.next(), Math.floor(0.5 * 100 * 1.01 ** 2));
  assert.equal(free.next(), Math.floor(0.5 * 100 * 1.01 ** 5));
});

function channel(sessionId: number): SessionChannel {
  return {
    sessionId,
    maxMessageBytes: 1_000,
    protocolVersion: 3,
    uploadWindow: new UploadWindow(),
    isOpen: true,
    isSending: false,
    send: () => 0,
    sendUpload: () => false,
  };
}

Deno.test("SessionLife derives state, binding and liveness from its one phase", () => {
  const life = new SessionLife();
  assert.equal(life.phase, "new");
  assert.equal(life.publicState, "active");
  life.go({ phase: "unbound" });
  const first = channel(1);
  life.go({ phase: "opened", channel: first });
  assert.equal(life.channel, first);
  assert.equal(life.isBound, false);
  life.go({ phase: "identifying", channel: first });
  assert.equal(life.isBound, true);
  assert.equal(life.canUpload, false);
  life.go({ phase: "bound", channel: first });
  assert.equal(life.canUpload, true);
  life.go({ phase: "paused" });
  assert.equal(life.channel, undefined);
  assert.equal(life.isLive, false);
  assert.equal(life.publicState, "inactive");
  life.go({ phase: "unbound" });
  assert.equal(life.publicState, "active");
  const error = new SyncError("permission_denied", "no");
  life.go({ phase: "failed", error });
  assert.equal(life.publicState, "error");
  life.go({ phase: "closed", error: life.fatalError });
  assert.equal(life.isClosed, true);
  assert.equal(life.fatalError, error);
  assert.equal(life.publicState, "error");
});

Deno.test("SessionLife refuses a transition its table does not allow", () => {
  const life = new SessionLife();
  assert.throws(
    () => life.go({ phase: "bound", channel: channel(1) }),
    /Session cannot go from new to bound/,
  );
  life.go({ phase: "closed", error: undefined });
  assert.equal(life.publicState, "inactive");
  assert.throws(() => life.go({ phase: "unbound" }), /from closed to unbound/);
});

Deno.test("WaitsLedger answers a download wait with the MARK sent after it, and moves it to the next MARK when the binding is lost", async () => {
  const ledger = new WaitsLedger();
  const settled: string[] = [];
  const wait = ledger.waitForDownload(undefined).then(() => settled.push("d"));
  assert.equal(ledger.needsMark, true);
  const lost = ledger.markSent(1);
  assert.equal(ledger.needsMark, false);
  assert.equal(ledger.marksOutstanding, true);
  ledger.bindingLost();
  assert.equal(ledger.marksOutstanding, false);
  assert.equal(ledger.takeMark(lost), undefined);
  const next = ledger.markSent(2);
  const mark = ledger.takeMark(next)!;
  assert.equal(mark.sequence, 2);
  ledger.resolveMark(mark);
  await wait;
  assert.deepEqual(settled, ["d"]);
});

Deno.test("WaitsLedger resolves upload waits by version, rejects the rest with the error, and forgets an aborted wait", async () => {
  const ledger = new WaitsLedger();
  const first = ledger.waitForUpload(1, undefined);
  const second = ledger.waitForUpload(3, undefined);
  const controller = new AbortController();
  const aborted = ledger.waitForDownload(controller.signal);
  controller.abort(new Error("stop"));
  await assert.rejects(aborted, /stop/);
  ledger.acknowledged(2);
  await first;
  const error = new SyncError("session_closed", "closed");
  ledger.rejectAll(error);
  await assert.rejects(second, (reason) => reason === error);
  assert.equal(ledger.needsMark, false);
});

Deno.test("WaitsLedger rejects only the receipt of a write settled without being stored, also for later waits; waits for everything resolve on the acknowledgement", async () => {
  const ledger = new WaitsLedger();
  const receipt = ledger.waitForUpload(2, undefined, true);
  const everything = ledger.waitForUpload(2, undefined, false);
  const other = ledger.waitForUpload(1, undefined, true);
  const error = new SyncError("write_rejected", "refused");
  ledger.failed(2, error);
  await assert.rejects(receipt, (reason) => reason === error);
  ledger.acknowledged(2);
  await everything;
  await other;
  assert.equal(ledger.failure(2)?.error, error);
  assert.equal(ledger.failure(1), undefined);
});

Deno.test("UploadBatcher keeps at most its window of UPLOAD bytes unacknowledged (one frame always goes) and sends more as acknowledgements free it", () => {
  const sent: number[][] = [];
  const channel = {
    sessionId: 1,
    maxMessageBytes: 1_000,
    protocolVersion: 3,
    uploadWindow: new UploadWindow(2_000),
    send: () => 0,
    sendUpload: (frame: Uint8Array, onSent: (bytes: number) => void) => {
      const message = decodeMessage(frame) as UploadMessage;
      sent.push(message.changesets.map((c) => c.clientVersion));
      onSent(frame.byteLength);
      return true;
    },
  };
  const pending = [1, 2, 3, 4, 5, 6].map((version) => {
    const changeset = upload(version, [
      put("Task", `t${version}`, { text: "x".repeat(400) }),
    ]);
    return { changeset, bytes: encodeUploadChangeset(changeset).byteLength };
  });
  const batcher = new UploadBatcher();
  assert.equal(batcher.send(pending, channel, () => {}), undefined);
  // Two changesets fit one frame (under 1,000 bytes); a second frame fits
  // the window, a third would not.
  assert.deepEqual(sent, [[1, 2], [3, 4]]);
  assert.equal(batcher.sentThrough, 4);
  assert.ok(batcher.inFlightBytes > 1_000 && batcher.inFlightBytes <= 2_000);
  batcher.send(pending, channel, () => {});
  assert.equal(sent.length, 2);
  assert.equal(batcher.acknowledged(1), false);
  assert.equal(batcher.acknowledged(2), true);
  batcher.send(pending, channel, () => {});
  assert.deepEqual(sent.slice(2), [[5, 6]]);
  assert.equal(batcher.acknowledged(6), true);
  assert.equal(batcher.inFlightBytes, 0);
  // Frames pack at most a window's worth; one frame always goes, with one
  // changeset at least, even past a window smaller than it.
  const tiny = new UploadBatcher();
  tiny.send(
    pending,
    { ...channel, uploadWindow: new UploadWindow(10) },
    () => {},
  );
  assert.deepEqual(sent.slice(3), [[1]]);
  // A new binding starts with an empty window.
  tiny.rebound(0);
  assert.equal(tiny.inFlightBytes, 0);
});

Deno.test("UploadBatcher keeps at most maxFrames frames unacknowledged: what is written meanwhile leaves in one frame on the next acknowledgement, each changeset with its own client version", () => {
  const sent: number[][] = [];
  const channel = {
    sessionId: 1,
    maxMessageBytes: 100_000,
    protocolVersion: 3,
    uploadWindow: new UploadWindow(1_000_000),
    send: () => 0,
    sendUpload: (frame: Uint8Array, onSent: (bytes: number) => void) => {
      const message = decodeMessage(frame) as UploadMessage;
      sent.push(message.changesets.map((c) => c.clientVersion));
      onSent(frame.byteLength);
      return true;
    },
  };
  const pending: { changeset: ReturnType<typeof upload>; bytes: number }[] = [];
  const write = (version: number) => {
    const changeset = upload(version, [put("Task", "t", { n: version })]);
    pending.push({
      changeset,
      bytes: encodeUploadChangeset(changeset).byteLength,
    });
  };
  assert.throws(() => new UploadBatcher({ maxFrames: 0 }), RangeError);
  const batcher = new UploadBatcher({ maxFrames: 1 });
  write(1);
  batcher.send(pending, channel, () => {});
  assert.deepEqual(sent, [[1]]);
  assert.equal(batcher.framesInFlight, 1);
  // Written while frame 1 is out: held, however often send() is called.
  for (let version = 2; version <= 6; version++) {
    write(version);
    batcher.send(pending, channel, () => {});
  }
  assert.deepEqual(sent, [[1]]);
  assert.equal(batcher.acknowledged(1), true);
  batcher.send(pending, channel, () => {});
  assert.deepEqual(sent, [[1], [2, 3, 4, 5, 6]]);
  assert.equal(batcher.sentThrough, 6);
  // A partial acknowledgement leaves the frame out.
  write(7);
  assert.equal(batcher.acknowledged(4), false);
  batcher.send(pending, channel, () => {});
  assert.equal(sent.length, 2);
  assert.equal(batcher.acknowledged(6), true);
  assert.equal(batcher.framesInFlight, 0);
  batcher.send(pending, channel, () => {});
  assert.deepEqual(sent.at(-1), [7]);
  // A new binding forgets the frames out and resends from its cursor.
  batcher.rebound(6);
  assert.equal(batcher.framesInFlight, 0);
  batcher.send(pending, channel, () => {});
  assert.deepEqual(sent.at(-1), [7]);
  // Two in flight (the default): a second frame goes, a third waits.
  const two = new UploadBatcher();
  const sentBefore = sent.length;
  two.send(pending.slice(0, 1), channel, () => {});
  two.send(pending.slice(0, 2), channel, () => {});
  two.send(pending, channel, () => {});
  assert.deepEqual(sent.slice(sentBefore), [[1], [2]]);
  assert.equal(two.acknowledged(1), true);
  two.send(pending, channel, () => {});
  assert.deepEqual(sent.slice(sentBefore), [[1], [2], [3, 4, 5, 6, 7]]);
});

Deno.test("UploadBatcher sends UPLOAD_TOO_LARGE in the place of a changeset over the server's frame limit, in order between the frames around it, on protocol 3; on protocol 2, or when even the object list is over the limit, it returns bad_changeset", () => {
  const sent: (number[] | string)[] = [];
  const channel = (protocolVersion: number, maxMessageBytes = 1_000) => ({
    sessionId: 1,
    maxMessageBytes,
    protocolVersion,
    uploadWindow: new UploadWindow(1_000_000),
    send: (message: ClientMessage) => {
      assert.equal(message.type, MessageType.UploadTooLarge);
      if (message.type !== MessageType.UploadTooLarge) return 0;
      sent.push(
        `too large ${message.clientVersion}: ${
          message.objects.map((o) => o.id).join(",")
        } (${message.changesetBytes} B)`,
      );
      return 20;
    },
    sendUpload: (frame: Uint8Array, onSent: (bytes: number) => void) => {
      const message = decodeMessage(frame) as UploadMessage;
      sent.push(message.changesets.map((c) => c.clientVersion));
      onSent(frame.byteLength);
      return true;
    },
  });
  const pending = [
    upload(1, [put("Task", "t1", { n: 1 })]),
    upload(2, [
      put("Doc", "d1", { body: "x".repeat(2_000) }),
      put("Doc", "d2", { body: "" }),
    ]),
    upload(3, [put("Task", "t3", { n: 3 })]),
  ].map((changeset) => ({
    changeset,
    bytes: encodeUploadChangeset(changeset).byteLength,
  }));
  const large = pending[1]!.bytes;
  const batcher = new UploadBatcher({ maxFrames: 3 });
  const wire: number[] = [];
  assert.equal(
    batcher.send(pending, channel(3), (bytes) => wire.push(bytes)),
    undefined,
  );
  assert.deepEqual(sent, [[1], `too large 2: d1,d2 (${large} B)`, [3]]);
  assert.equal(batcher.sentThrough, 3);
  assert.equal(batcher.framesInFlight, 3);
  assert.equal(wire[1], 20);
  // The stand-in settles like a frame when its version is acknowledged.
  assert.equal(batcher.acknowledged(2), true);
  assert.equal(batcher.framesInFlight, 1);

  sent.length = 0;
  const old = new UploadBatcher({ maxFrames: 3 });
  const error = old.send(pending, channel(2), () => {});
  assert.ok(error instanceof SyncError);
  assert.equal(error.code, "bad_changeset");
  assert.match(
    error.message,
    /changeset 2: \d+ bytes exceed the server's limit of 1000/,
  );
  // What precedes it went; nothing after it did.
  assert.deepEqual(sent, [[1]]);

  sent.length = 0;
  const many = [{
    changeset: upload(
      1,
      Array.from({ length: 200 }, (_, i) => put("Doc", `d${i}`, { n: i })),
    ),
    bytes: 5_000,
  }];
  const none = new UploadBatcher({ maxFrames: 3 });
  const listed = none.send(many, channel(3, 1_024), () => {});
  assert.equal(listed?.code, "bad_changeset");
  assert.match(listed!.message, /list of the 200 objects/);
  assert.deepEqual(sent, []);
  assert.equal(none.sentThrough, 0);
});

Deno.test("WaitsLedger resolves upload waits in any order of registration by target, skipping aborted ones, however many there are", async () => {
  const ledger = new WaitsLedger();
  const resolved: number[] = [];
  const controller = new AbortController();
  const waits: Promise<void>[] = [];
  // Targets registered out of order, with duplicates; every third aborted.
  for (let index = 0; index < 300; index++) {
    const target = (index * 7919) % 150 + 1;
    const aborted = index % 3 === 0;
    const wait = ledger.waitForUpload(
      target,
      aborted ? controller.signal : undefined,
    );
    waits.push(
      aborted
        ? assert.rejects(wait, (e) => e === "gone")
        : wait.then(() => void resolved.push(target)),
    );
  }
  controller.abort("gone");
  ledger.acknowledged(50);
  await Promise.resolve();
  await Promise.resolve();
  const first = resolved.length;
  assert.ok(first > 0);
  assert.ok(resolved.every((target) => target <= 50));
  ledger.acknowledged(49);
  ledger.acknowledged(150);
  await Promise.all(waits);
  assert.equal(resolved.length, 200);
  assert.ok(resolved.slice(first).every((target) => target > 50));
});
