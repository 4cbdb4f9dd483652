import assert from "node:assert/strict";
import {
  DeliveryRate,
  DOWNLOAD_FLOOR_BYTES,
  FAST_LINK_BYTES_PER_SECOND,
  TIMEOUT_SHARE_DIVISOR,
} from "../../src/server/delivery_rate.ts";
import { RECEIVED_INTERVAL_BYTES } from "../../src/protocol/messages.ts";
import { Prng } from "../_helpers/prng.ts";

const MAX = 64 * 1024;

interface LinkOptions {
  /** Link rate in bytes per millisecond, as a function of the time. */
  rate: (now: number) => number;
  /** One-way latency, in milliseconds. */
  latencyMs: number;
  /** The client's announced timeout. */
  timeoutMs: number;
  /** Batches the server sends. */
  batches: number;
  /** Bytes the server may have unacknowledged (the kernel's buffers). */
  aheadBytes?: number;
  /** Time the server needs to build a batch (storage reads), in ms. */
  serverMsPerBatch?: number;
  /** Sends without their time (what the estimator did before it took it). */
  untimedSends?: boolean;
}

interface Delivery {
  size: number;
  sentAt: number;
  arrivedAt: number;
  /** Time since the client's previous message arrived. */
  gapMs: number;
}

/**
 * Plays a server and a client on a link with an injected clock: the server
 * keeps `aheadBytes` in flight (what the kernel absorbs), sizing each batch
 * with the estimator; the link delivers frames one after the other at its
 * rate; the client acknowledges as PROTOCOL.md §4.8 says. Returns every
 * batch with its arrival.
 */
function playLink(options: LinkOptions): {
  deliveries: Delivery[];
  estimator: DeliveryRate;
} {
  const estimator = new DeliveryRate(MAX);
  const ahead = options.aheadBytes ?? 1024 * 1024;
  const buildMs = options.serverMsPerBatch ?? 1;
  let nextBuildAt = 0;
  const deliveries: Delivery[] = [];
  // Frames in flight (arrival order = send order) and acks in flight.
  const frames: {
    size: number;
    sentAt: number;
    arrivesAt: number;
    batch: number;
  }[] = [];
  const acks: { count: number; arrivesAt: number }[] = [];
  let linkFreeAt = 0;
  let clientReceived = 0;
  let clientAcknowledged = 0;
  let lastArrival = 0;
  let serverAcknowledged = 0;
  let heard = false;
  let now = 0;
  const send = (size: number, batch: number) => {
    estimator.noteSent(size, options.untimedSends ? undefined : now);
    const start = Math.max(linkFreeAt, now + options.latencyMs);
    let arrivesAt = start;
    // Integrate the rate in 1 ms steps so it can change under a frame.
    let left = size;
    while (left > 0) {
      left -= options.rate(arrivesAt);
      arrivesAt += 1;
    }
    linkFreeAt = arrivesAt;
    frames.push({ size, sentAt: now, arrivesAt, batch });
  };
  send(20, -1); // HANDSHAKE_REPLY
  let sent = 0;
  for (let step = 0; step < 1_000_000; step++) {
    const frame = frames[0];
    const ack = acks[0];
    const canBuild = heard && sent < options.batches &&
      estimator.sentBytes - serverAcknowledged < ahead;
    const buildAt = Math.max(now, nextBuildAt);
    if (
      canBuild && buildAt <= (frame?.arrivesAt ?? Infinity) &&
      buildAt <= (ack?.arrivesAt ?? Infinity)
    ) {
      now = buildAt;
      send(estimator.batchBytes, sent++);
      nextBuildAt = now + buildMs;
      continue;
    }
    if (frame === undefined && ack === undefined) break;
    if (
      ack === undefined ||
      (frame !== undefined && frame.arrivesAt <= ack.arrivesAt)
    ) {
      frames.shift();
      now = frame!.arrivesAt;
      clientReceived += frame!.size;
      if (frame!.batch >= 0) {
        deliveries.push({
          size: frame!.size,
          sentAt: frame!.sentAt,
          arrivedAt: now,
          gapMs: now - lastArrival,
        });
      }
      lastArrival = now;
      if (
        frame!.batch < 0 ||
        clientReceived - clientAcknowledged >= RECEIVED_INTERVAL_BYTES
      ) {
        clientAcknowledged = clientReceived;
        acks.push({
          count: clientReceived,
          arrivesAt: now + options.latencyMs,
        });
      }
    } else {
      acks.shift();
      now = ack.arrivesAt;
      assert.ok(estimator.noteReceived(ack.count, options.timeoutMs, now));
      serverAcknowledged = ack.count;
      heard = true;
    }
  }
  assert.equal(deliveries.length, options.batches);
  return { deliveries, estimator };
}

Deno.test("DeliveryRate gives a client that never acknowledges the full downloadBatchBytes", () => {
  const estimator = new DeliveryRate(MAX);
  assert.equal(estimator.batchBytes, MAX);
  estimator.noteSent(1_000_000);
  assert.equal(estimator.batchBytes, MAX);
});

Deno.test("DeliveryRate starts at the floor once the client acknowledges, and a client without a timeout gets the maximum", () => {
  const estimator = new DeliveryRate(MAX);
  estimator.noteSent(30);
  assert.ok(estimator.noteReceived(30, 120_000, 1_000));
  assert.equal(estimator.batchBytes, DOWNLOAD_FLOOR_BYTES);
  const patient = new DeliveryRate(MAX);
  patient.noteSent(30);
  assert.ok(patient.noteReceived(30, 0, 1_000));
  assert.equal(patient.batchBytes, MAX);
  // A maximum below the floor is the floor too.
  const small = new DeliveryRate(4096);
  small.noteSent(30);
  small.noteReceived(30, 120_000, 0);
  assert.equal(small.batchBytes, 4096);
});

Deno.test("DeliveryRate.expectAcknowledgements: the floor before any RECEIVED, then the RECEIVED's timeout decides", () => {
  const estimator = new DeliveryRate(MAX);
  estimator.expectAcknowledgements();
  assert.equal(estimator.batchBytes, DOWNLOAD_FLOOR_BYTES);
  estimator.noteSent(100_000);
  assert.equal(estimator.batchBytes, DOWNLOAD_FLOOR_BYTES);
  assert.equal(estimator.isFast, false);
  // A client that says it never times out gets the maximum, as before.
  assert.ok(estimator.noteReceived(20_000, 0, 1_000));
  assert.equal(estimator.batchBytes, MAX);
  // Calling it again later changes nothing.
  estimator.expectAcknowledgements();
  assert.equal(estimator.batchBytes, MAX);
  const timed = new DeliveryRate(MAX);
  timed.expectAcknowledgements();
  timed.noteSent(30);
  assert.ok(timed.noteReceived(30, 120_000, 1_000));
  assert.equal(timed.batchBytes, DOWNLOAD_FLOOR_BYTES);
});

Deno.test("DeliveryRate refuses a count above what was sent or below an earlier one", () => {
  const estimator = new DeliveryRate(MAX);
  estimator.noteSent(100);
  assert.equal(estimator.noteReceived(101, 1000, 0), false);
  assert.ok(estimator.noteReceived(60, 1000, 1));
  assert.equal(estimator.noteReceived(59, 1000, 2), false);
  assert.ok(estimator.noteReceived(60, 1000, 3));
  assert.ok(estimator.noteReceived(100, 1000, 4));
});

Deno.test("DeliveryRate on a fast link reaches downloadBatchBytes within a few batches, and calls it fast", () => {
  const { deliveries, estimator } = playLink({
    rate: () => 100_000, // 100 MB/s
    latencyMs: 0.1,
    timeoutMs: 120_000,
    batches: 20,
  });
  assert.equal(deliveries[0]!.size, DOWNLOAD_FLOOR_BYTES);
  const firstFull = deliveries.findIndex((delivery) => delivery.size === MAX);
  assert.ok(firstFull >= 1 && firstFull <= 4, `first full batch: ${firstFull}`);
  for (const delivery of deliveries.slice(firstFull)) {
    assert.equal(delivery.size, MAX);
  }
  // Measured above FAST_LINK_BYTES_PER_SECOND: DOWNLOADs are not deflated.
  assert.ok(estimator.bytesPerSecond >= FAST_LINK_BYTES_PER_SECOND);
  assert.equal(estimator.isFast, true);
});

Deno.test("DeliveryRate calls a fast link fast from one large frame sent onto it idle, where intervals between acknowledgements read it slow", () => {
  // A bootstrap on loopback (docs/PERFORMANCE.md "Tenth pass"): the server
  // builds each 190 KB frame for 60 ms (33-105 ms were measured), and each
  // RECEIVED comes 1.5 ms after its frame was sent.
  const play = (timed: boolean) => {
    const estimator = new DeliveryRate(MAX);
    estimator.expectAcknowledgements();
    const at = (now: number) => timed ? now : undefined;
    estimator.noteSent(43, at(0)); // BOUND
    estimator.noteSent(11, at(1)); // the first, empty DOWNLOAD
    let now = 61;
    for (let frame = 0; frame < 4; frame++) {
      estimator.noteSent(190_000, at(now));
      now += 1.5;
      assert.ok(
        estimator.noteReceived(estimator.sentBytes, 120_000, now),
      );
      now += 60;
    }
    return estimator;
  };
  const untimed = play(false);
  assert.equal(untimed.isFast, false, `${untimed.bytesPerSecond} B/s`);
  const timed = play(true);
  assert.equal(timed.isFast, true, `${timed.bytesPerSecond} B/s`);
  // A lower bound: 190,000 bytes in at most 1.5 ms.
  assert.ok(timed.bytesPerSecond <= 190_000 / 1.5 * 1000);
  assert.equal(timed.batchBytes, MAX);
});

Deno.test("DeliveryRate's measure from an idle link never reads a slow link as fast", () => {
  for (const serverMsPerBatch of [1, 40, 2_000]) {
    const { estimator } = playLink({
      rate: () => 20, // 20 KB/s
      latencyMs: 20,
      timeoutMs: 120_000,
      batches: 20,
      serverMsPerBatch,
    });
    assert.ok(
      estimator.bytesPerSecond <= 20_000 * 1.05,
      `${estimator.bytesPerSecond} B/s with ${serverMsPerBatch} ms per batch`,
    );
    assert.equal(estimator.isFast, false);
  }
});

Deno.test("DeliveryRate calls no link fast before it measured one", () => {
  const estimator = new DeliveryRate(MAX);
  assert.equal(estimator.isFast, false, "a client that never acknowledges");
  estimator.noteSent(30);
  assert.ok(estimator.noteReceived(30, 120_000, 1_000));
  assert.equal(estimator.isFast, false, "acknowledged, no rate yet");
});

Deno.test("DeliveryRate on a 20 KB/s link with a 1 s timeout keeps every DOWNLOAD well inside the timeout", () => {
  const timeoutMs = 1000;
  const { deliveries, estimator } = playLink({
    rate: () => 20,
    latencyMs: 20,
    timeoutMs,
    batches: 40,
  });
  for (const delivery of deliveries) {
    assert.equal(delivery.size, DOWNLOAD_FLOOR_BYTES);
  }
  // Measured, not guessed: the link's rate within a few percent.
  assert.ok(
    Math.abs(estimator.bytesPerSecond - 20_000) < 1_000,
    `${estimator.bytesPerSecond} B/s`,
  );
  assert.equal(estimator.isFast, false, "a slow link keeps deflate");
  const gaps = deliveries.slice(1).map((delivery) => delivery.gapMs);
  assert.ok(Math.max(...gaps) < timeoutMs, `gaps ${gaps}`);
});

Deno.test("DeliveryRate sizes batches to the rate times a share of the timeout", () => {
  const timeoutMs = 10_000;
  const rate = 10; // 10 KB/s: 25 KB per quarter of 10 s
  const { deliveries } = playLink({
    rate: () => rate,
    latencyMs: 50,
    timeoutMs,
    batches: 30,
    aheadBytes: 64 * 1024,
  });
  const target = rate * timeoutMs / TIMEOUT_SHARE_DIVISOR;
  for (const delivery of deliveries.slice(10)) {
    assert.ok(
      Math.abs(delivery.size - target) < target * 0.05,
      `${delivery.size} vs ${target}`,
    );
    assert.ok(delivery.gapMs < timeoutMs / 2, `gap ${delivery.gapMs}`);
  }
});

Deno.test("DeliveryRate shrinks the batches when the link slows down, and grows them again when it recovers", () => {
  const timeoutMs = 8_000;
  const { deliveries } = playLink({
    // 1 MB/s, then 10 KB/s from 2 s to 80 s, then 1 MB/s again.
    rate: (now) => now >= 2_000 && now < 80_000 ? 10 : 1_000,
    latencyMs: 10,
    timeoutMs,
    batches: 200,
    aheadBytes: 256 * 1024,
  });
  const before = deliveries.filter((delivery) => delivery.sentAt < 2_000);
  // Built after two acknowledgements from the slow link. (What the server
  // had already handed to the socket still goes at the old size.)
  const slow = deliveries.filter((delivery) =>
    delivery.sentAt > 11_000 && delivery.arrivedAt < 80_000
  );
  const after = deliveries.filter((delivery) => delivery.sentAt > 82_000);
  assert.ok(before.length > 5 && slow.length > 5 && after.length > 5);
  assert.equal(before.at(-1)!.size, MAX);
  // 10 KB/s × 2 s.
  for (const delivery of slow) {
    assert.ok(delivery.size <= 21_000, `${delivery.size} while slow`);
    assert.ok(delivery.gapMs < timeoutMs / 2, `gap ${delivery.gapMs}`);
  }
  assert.equal(after.at(-1)!.size, MAX);
});

Deno.test("DeliveryRate does not read a burst of acknowledgements from a client that was busy as a fast link", () => {
  const estimator = new DeliveryRate(MAX);
  const timeoutMs = 4_000;
  let now = 0;
  let acknowledged = 0;
  estimator.noteSent(1024 * 1024); // far ahead of the link
  // 16 KiB every 800 ms (20 KB/s)...
  for (let index = 0; index < 10; index++) {
    now += 800;
    acknowledged += DOWNLOAD_FLOOR_BYTES;
    estimator.noteReceived(acknowledged, timeoutMs, now);
  }
  const steady = estimator.batchBytes;
  // ...then the client stalls for 2.4 s and acknowledges three frames in
  // one millisecond.
  now += 2_400;
  for (let index = 0; index < 3; index++) {
    acknowledged += DOWNLOAD_FLOOR_BYTES;
    estimator.noteReceived(acknowledged, timeoutMs, now);
    now += 0.3;
  }
  assert.ok(
    estimator.batchBytes <= steady * 1.25,
    `${estimator.batchBytes} after the burst, ${steady} before`,
  );
});

Deno.test("DeliveryRate never leaves [floor, downloadBatchBytes] whatever the acknowledgements", () => {
  const random = new Prng(20260713);
  for (let run = 0; run < 200; run++) {
    const max = 1024 + random.int(256 * 1024);
    const estimator = new DeliveryRate(max);
    const floor = Math.min(DOWNLOAD_FLOOR_BYTES, max);
    let now = random.int(1_000_000);
    let acknowledged = 0;
    for (let step = 0; step < 100; step++) {
      estimator.noteSent(random.int(100_000));
      if (random.next() < 0.6) {
        acknowledged += random.int(estimator.sentBytes - acknowledged + 1);
        now += random.next() < 0.2 ? 0 : random.next() * 5_000;
        const timeoutMs = random.next() < 0.1 ? 0 : 1 + random.int(300_000);
        assert.ok(estimator.noteReceived(acknowledged, timeoutMs, now));
        const batch = estimator.batchBytes;
        assert.ok(Number.isInteger(batch), `${batch}`);
        assert.ok(
          batch >= floor && batch <= max,
          `${batch} [${floor}, ${max}]`,
        );
      }
    }
  }
});
