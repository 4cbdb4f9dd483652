/**
 * Frames no client should send — truncated, mutated, padded, oversized,
 * compressed bombs, text — at every protocol state: each gets an answer
 * (a PONG if it happened to decode to something harmless, else an ERROR and
 * a close of that socket only), the server never logs a fault, another
 * user's connection keeps working and the stored history is unchanged.
 */
import assert from "node:assert/strict";
import { compressFrame } from "../../src/protocol/compression.ts";
import { encodeMessage } from "../../src/protocol/encode.ts";
import { errorCodeNumber } from "../../src/protocol/error_codes.ts";
import {
  type ClientMessage,
  MessageType,
  type ServerMessage,
} from "../../src/protocol/messages.ts";
import type { LogRecord } from "../../server.ts";
import { put, upload } from "../_helpers/changesets.ts";
import { Prng, testSeed } from "../_helpers/prng.ts";
import { ProtocolClient } from "../_helpers/protocol_client.ts";
import { startTestServer, type TestServer } from "../_helpers/test_server.ts";

const MAX_MESSAGE_BYTES = 16 * 1024;

type State = "fresh" | "handshaken" | "bound" | "bootstrapping";
const STATES: State[] = ["fresh", "handshaken", "bound", "bootstrapping"];

/** Valid frames of every type, as a client in `state` might send them. */
async function baseFrames(
  accessToken: string,
): Promise<Uint8Array<ArrayBuffer>[]> {
  const messages: ClientMessage[] = [
    {
      type: MessageType.Handshake,
      minVersion: 1,
      maxVersion: 1,
      accessToken,
    },
    {
      type: MessageType.Bind,
      sessionId: 2,
      path: "/~/other",
      clientIdentity: { id: 1, salt: 12345 },
      downloadCursor: 0,
      uploadCursor: 0,
    },
    {
      type: MessageType.Upload,
      sessionId: 1,
      changesets: [
        upload(1, [put("T", "a", { title: "x", n: 1.5, list: [1, "b"] })]),
        upload(2, [put("T", "b", { nested: { deep: true } })]),
      ],
    },
    { type: MessageType.Mark, sessionId: 1, requestId: 77 },
    { type: MessageType.Unbind, sessionId: 1 },
    { type: MessageType.Ping, timestamp: 5 },
    { type: MessageType.Refresh, accessToken },
  ];
  const frames = messages.map((message) => encodeMessage(message));
  const server: ServerMessage = {
    type: MessageType.Download,
    sessionId: 1,
    serverVersion: 1,
    lastIntegratedClientVersion: 0,
    downloadableBytes: 0,
    changesetBytes: 0,
    changesets: [],
  };
  frames.push(encodeMessage(server));
  frames.push(
    await compressFrame(
      encodeMessage({
        type: MessageType.Upload,
        sessionId: 1,
        changesets: [upload(3, [put("T", "c", { text: "z".repeat(4000) })])],
      }),
      { threshold: 0 },
    ),
  );
  return frames;
}

/** One hostile frame made from `frame`; text for a text frame. */
async function mutate(
  random: Prng,
  frame: Uint8Array<ArrayBuffer>,
): Promise<{ kind: string; data: Uint8Array<ArrayBuffer> | string }> {
  const kind = random.pick([
    "truncate",
    "flip",
    "flip",
    "trailing",
    "tag",
    "varint",
    "empty",
    "text",
    "oversized",
    "bomb",
  ]);
  const copy = frame.slice();
  switch (kind) {
    case "truncate":
      return { kind, data: copy.slice(0, random.int(copy.length)) };
    case "flip": {
      for (let count = 1 + random.int(3); count > 0; count--) {
        copy[random.int(copy.length)] = random.int(256);
      }
      return { kind, data: copy };
    }
    case "trailing": {
      const padded = new Uint8Array(copy.length + 1 + random.int(8));
      padded.set(copy);
      for (let index = copy.length; index < padded.length; index++) {
        padded[index] = random.int(256);
      }
      return { kind, data: padded };
    }
    case "tag":
      copy[0] = random.int(256);
      return { kind, data: copy };
    case "varint": {
      // An over-long varint where a length or id is expected.
      const padded = new Uint8Array(copy.length + 11);
      padded[0] = copy[0]!;
      padded.fill(0xff, 1, 12);
      padded.set(copy.subarray(1), 12);
      return { kind, data: padded };
    }
    case "empty":
      return { kind, data: new Uint8Array(0) };
    case "text":
      return { kind, data: new TextDecoder().decode(copy) };
    case "oversized": {
      const big = new Uint8Array(MAX_MESSAGE_BYTES + 1);
      big.set(copy.subarray(0, Math.min(copy.length, big.length)));
      return { kind, data: big };
    }
    default: {
      // Inflates far past maxMessageBytes.
      const zeros = new Uint8Array(MAX_MESSAGE_BYTES * 64);
      zeros[0] = MessageType.Upload;
      return {
        kind: "bomb",
        data: await compressFrame(zeros, { threshold: 0 }),
      };
    }
  }
}

/** Opens a connection and brings it to `state`. */
async function reach(
  test: TestServer,
  accessToken: string,
  state: State,
): Promise<ProtocolClient> {
  const client = await ProtocolClient.connect(test.url);
  if (state === "fresh") return client;
  await client.handshake(accessToken);
  if (state === "handshaken") return client;
  if (state === "bound") {
    await client.bind(1, "/~/small");
    await client.expect(MessageType.Download);
    return client;
  }
  // The attacker's own realm holds enough for several DOWNLOAD batches;
  // the frame follows the BIND at once, while they are being sent.
  client.send({
    type: MessageType.Bind,
    sessionId: 1,
    path: "/~/big",
    clientIdentity: null,
    downloadCursor: 0,
    uploadCursor: 0,
  });
  return client;
}

/**
 * Reads until a PONG (the frame did no harm) or a close; returns which,
 * checking that any connection-scoped ERROR came before the close.
 */
async function outcome(
  client: ProtocolClient,
  label: string,
): Promise<"pong" | number> {
  const signal = AbortSignal.timeout(5000);
  let connectionError: ServerMessage | null = null;
  for (let step = 0; step < 1000; step++) {
    let message: ServerMessage;
    try {
      message = await client.next(signal);
    } catch (error) {
      signal.throwIfAborted();
      const closed = await client.closed;
      assert.ok(
        connectionError !== null,
        `${label}: closed (${closed.code}) without ERROR: ${String(error)}`,
      );
      // The PING sent after the hostile frame can reach the server after it
      // closed: Deno then drops the TCP connection, and the close code the
      // ERROR announced is lost (0); the ERROR itself always arrives first.
      assert.ok(
        [0, 1002, 1008, 1009].includes(closed.code),
        `${label}: close code ${closed.code}`,
      );
      return closed.code;
    }
    if (message.type === MessageType.Pong) return "pong";
    if (message.type === MessageType.Error && message.sessionId === null) {
      assert.ok(
        [
          errorCodeNumber("protocol_violation"),
          errorCodeNumber("message_too_large"),
          errorCodeNumber("bad_token"),
          errorCodeNumber("unsupported_protocol_version"),
        ].includes(message.code),
        `${label}: ${message.message}`,
      );
      connectionError = message;
    }
  }
  assert.fail(`${label}: neither PONG nor close`);
}

async function storedHistory(kv: Deno.Kv, realm: string): Promise<unknown[]> {
  const entries = [];
  for await (
    const entry of kv.list({ prefix: ["tether", "realm", realm] })
  ) {
    entries.push([entry.key, entry.value, entry.versionstamp]);
  }
  return entries;
}

Deno.test("hostile frames at every protocol state close only their own socket; the server logs no fault, a bystander keeps working, stored data is untouched", async () => {
  const seed = testSeed();
  const random = new Prng(seed);
  await using kv = await Deno.openKv(":memory:");
  const faults: LogRecord[] = [];
  await using test = await startTestServer({
    kv,
    limits: { maxMessageBytes: MAX_MESSAGE_BYTES },
    downloadBatchBytes: 1024,
    logger: (record) => {
      if (record.level === "error") faults.push(record);
    },
  });
  const victim = await test.login();
  const attacker = await test.login();

  // The victim's realm and a bystander bound to it.
  await using bystander = await ProtocolClient.connect(test.url);
  await bystander.handshake(victim.accessToken);
  await bystander.bind(1, "/~/witness");
  await bystander.expect(MessageType.Download);
  bystander.send({
    type: MessageType.Upload,
    sessionId: 1,
    changesets: [upload(1, [put("T", "w", { kept: true })])],
  });
  await bystander.expect(MessageType.Download);
  bystander.send({ type: MessageType.Mark, sessionId: 1, requestId: 1 });
  for (let step = 0; step < 5; step++) {
    if ((await bystander.next()).type === MessageType.MarkReply) break;
  }
  const witness = `/${victim.userId}/witness`;
  const before = await storedHistory(kv, witness);

  // The attacker's own big realm, for the bootstrapping state.
  {
    await using writer = await ProtocolClient.connect(test.url);
    await writer.handshake(attacker.accessToken);
    await writer.bind(1, "/~/big");
    await writer.expect(MessageType.Download);
    writer.send({
      type: MessageType.Upload,
      sessionId: 1,
      changesets: Array.from(
        { length: 30 },
        (_, index) =>
          upload(index + 1, [put("T", `t${index}`, { x: "y".repeat(300) })]),
      ),
    });
    for (let step = 0; step < 50; step++) {
      const message = await writer.expect(MessageType.Download);
      if (message.lastIntegratedClientVersion === 30) break;
    }
  }

  const frames = await baseFrames(attacker.accessToken);
  let cases = 0;
  const outcomes = new Map<string, number>();
  for (const state of STATES) {
    for (const frame of frames) {
      for (let variant = 0; variant < 5; variant++) {
        const { kind, data } = await mutate(random, frame);
        const label = `seed ${seed}, ${state}, tag 0x${
          frame[0]!.toString(16)
        }, ${kind}`;
        await using client = await reach(test, attacker.accessToken, state);
        client.sendRaw(data);
        client.send({ type: MessageType.Ping, timestamp: 1 });
        const result = await outcome(client, label);
        const key = `${kind}:${result}`;
        outcomes.set(key, (outcomes.get(key) ?? 0) + 1);
        cases++;
      }
    }
  }
  assert.equal(cases, STATES.length * frames.length * 5);
  assert.deepEqual(faults, [], `seed ${seed}: the server logged a fault`);

  bystander.send({ type: MessageType.Ping, timestamp: 42 });
  for (let step = 0; step < 5; step++) {
    const message = await bystander.next();
    if (message.type === MessageType.Pong) {
      assert.equal(message.timestamp, 42);
      break;
    }
    assert.equal(message.type, MessageType.Download, `seed ${seed}`);
  }
  assert.deepEqual(await storedHistory(kv, witness), before);
});

Deno.test("an error about a path quotes a bounded part of it, however large the path the client sent", async () => {
  await using test = await startTestServer();
  const login = await test.login();
  await using client = await ProtocolClient.connect(test.url);
  await client.handshake(login.accessToken);
  // Almost the largest string a frame may carry, in characters that JSON
  // quoting blows up sixfold.
  const paths = [
    "/" + "\u0001".repeat(1024 * 1024 - 10),
    "relative/" + "a".repeat(1024 * 1024 - 20),
    "/ok/" + "b".repeat(600),
  ];
  for (const [index, path] of paths.entries()) {
    client.send({
      type: MessageType.Bind,
      sessionId: index + 1,
      path,
      clientIdentity: null,
      downloadCursor: 0,
      uploadCursor: 0,
    });
    const error = await client.expect(MessageType.Error);
    assert.equal(error.sessionId, index + 1);
    assert.equal(error.code, errorCodeNumber("invalid_path"), error.message);
    assert.ok(
      error.message.length <= 1024,
      `${error.message.length} characters`,
    );
  }
  const logged = test.logs.filter((record) => record.event === "error_sent");
  assert.equal(logged.length, paths.length);
  for (const record of logged) assert.ok(record.message.length <= 1024);
});
