import assert from "node:assert/strict";
import { errorCodeNumber } from "../../src/protocol/error_codes.ts";
import { compressFrame } from "../../src/protocol/compression.ts";
import { encodeMessage } from "../../src/protocol/encode.ts";
import { put, upload } from "../_helpers/changesets.ts";
import { MessageType } from "../../src/protocol/messages.ts";
import { PROTOCOL_VERSION } from "../../src/protocol/version.ts";
import { importHmacKey, signJwt } from "../../src/server/jwt.ts";
import { ProtocolClient } from "../_helpers/protocol_client.ts";
import { startTestServer } from "../_helpers/test_server.ts";

const SECRET = "peer-test-secret";

async function userJwt(sub: string, expiresInMs: number): Promise<string> {
  return await signJwt(
    { sub, exp: (Date.now() + expiresInMs) / 1000 },
    await importHmacKey(SECRET),
  );
}

/** Expects a connection-scoped ERROR with `code`, then a close with `closeCode`. */
async function expectConnectionError(
  client: ProtocolClient,
  code: Parameters<typeof errorCodeNumber>[0],
  closeCode: number,
  tryAgain = false,
): Promise<string> {
  const error = await client.expect(MessageType.Error);
  assert.equal(error.sessionId, null);
  assert.equal(error.code, errorCodeNumber(code), error.message);
  assert.equal(error.tryAgain, tryAgain);
  const closed = await client.closed;
  assert.equal(closed.code, closeCode);
  return error.message;
}

Deno.test("HANDSHAKE with a login access token is answered with version, user id and frame limit", async () => {
  await using test = await startTestServer({
    limits: { maxMessageBytes: 123_456 },
  });
  const login = await test.login();
  await using client = await ProtocolClient.connect(test.url);
  const reply = await client.handshake(login.accessToken, {
    minVersion: 1,
    maxVersion: PROTOCOL_VERSION + 5,
  });
  assert.deepEqual(reply, {
    type: MessageType.HandshakeReply,
    version: PROTOCOL_VERSION,
    userId: login.userId,
    maxMessageBytes: 123_456,
  });
  assert.equal(test.server.stats().connections, 1);
});

Deno.test("HANDSHAKE accepts a user JWT signed with jwtSecret directly", async () => {
  await using test = await startTestServer({ auth: { jwtSecret: SECRET } });
  await using client = await ProtocolClient.connect(test.url);
  const reply = await client.handshake(await userJwt("carol", 60_000));
  assert.equal(reply.userId, "carol");
});

Deno.test("HANDSHAKE with a bad token gets bad_token and close 1008", async (t) => {
  await using test = await startTestServer({ auth: { jwtSecret: SECRET } });
  const forged = await signJwt(
    { sub: "carol", exp: Date.now() / 1000 + 60 },
    await importHmacKey("not-the-secret"),
  );
  const tokens: [string, string][] = [
    ["empty", ""],
    ["garbage", "x.y.z"],
    ["forged", forged],
  ];
  for (const [name, token] of tokens) {
    await t.step(name, async () => {
      await using client = await ProtocolClient.connect(test.url);
      client.send({
        type: MessageType.Handshake,
        minVersion: 1,
        maxVersion: 1,
        accessToken: token,
      });
      await expectConnectionError(client, "bad_token", 1008);
    });
  }
  const sent = test.logs.filter((record) => record.event === "error_sent");
  assert.equal(sent.length, 3, "each error is logged once");
  assert.ok(sent.every((record) => record.code === "bad_token"));
});

Deno.test("HANDSHAKE with an expired token gets token_expired (try again) and close 1008", async () => {
  await using test = await startTestServer({ auth: { jwtSecret: SECRET } });
  await using client = await ProtocolClient.connect(test.url);
  client.send({
    type: MessageType.Handshake,
    minVersion: 1,
    maxVersion: 1,
    accessToken: await userJwt("carol", -1000),
  });
  const message = await expectConnectionError(
    client,
    "token_expired",
    1008,
    true,
  );
  assert.equal(message, "Cannot connect: Token has expired");
});

Deno.test("HANDSHAKE with no common protocol version gets unsupported_protocol_version", async () => {
  await using test = await startTestServer();
  const login = await test.login();
  await using client = await ProtocolClient.connect(test.url);
  client.send({
    type: MessageType.Handshake,
    minVersion: PROTOCOL_VERSION + 1,
    maxVersion: PROTOCOL_VERSION + 3,
    accessToken: login.accessToken,
  });
  const message = await expectConnectionError(
    client,
    "unsupported_protocol_version",
    1002,
  );
  assert.equal(
    message,
    `Cannot connect: the client speaks protocol versions ${
      PROTOCOL_VERSION + 1
    }-${PROTOCOL_VERSION + 3}, the server 1-${PROTOCOL_VERSION}`,
  );
});

Deno.test("a message before HANDSHAKE is a protocol_violation", async () => {
  await using test = await startTestServer();
  await using client = await ProtocolClient.connect(test.url);
  client.send({ type: MessageType.Ping, timestamp: 1 });
  const message = await expectConnectionError(
    client,
    "protocol_violation",
    1002,
  );
  assert.equal(message, "Expected HANDSHAKE as the first message");
});

Deno.test("a connection that never sends HANDSHAKE is closed after handshakeTimeoutMs", async () => {
  await using test = await startTestServer({ handshakeTimeoutMs: 50 });
  await using client = await ProtocolClient.connect(test.url);
  const message = await expectConnectionError(
    client,
    "protocol_violation",
    1002,
  );
  assert.equal(message, "No HANDSHAKE within 50 ms");
});

Deno.test("malformed frames close that socket only; the server and other sockets go on", async (t) => {
  await using test = await startTestServer();
  const login = await test.login();
  await using bystander = await ProtocolClient.connect(test.url);
  await bystander.handshake(login.accessToken);
  const frames: [string, Uint8Array<ArrayBuffer> | string][] = [
    ["unknown tag", new Uint8Array([0x3f, 1, 2])],
    [
      "truncated handshake",
      encodeMessage({
        type: MessageType.Handshake,
        minVersion: 1,
        maxVersion: 1,
        accessToken: login.accessToken,
      }).slice(0, 10),
    ],
    ["empty frame", new Uint8Array(0)],
    ["text frame", "hello"],
    ["server message", encodeMessage({ type: MessageType.Pong, timestamp: 1 })],
  ];
  for (const [name, frame] of frames) {
    await t.step(name, async () => {
      await using client = await ProtocolClient.connect(test.url);
      client.sendRaw(frame);
      await expectConnectionError(client, "protocol_violation", 1002);
    });
  }
  await t.step("after a handshake too", async () => {
    await using client = await ProtocolClient.connect(test.url);
    await client.handshake(login.accessToken);
    client.sendRaw(new Uint8Array([MessageType.Bind, 0xff]));
    await expectConnectionError(client, "protocol_violation", 1002);
  });
  bystander.send({ type: MessageType.Ping, timestamp: 42 });
  assert.deepEqual(await bystander.expect(MessageType.Pong), {
    type: MessageType.Pong,
    timestamp: 42,
  });
});

Deno.test("a frame above maxMessageBytes gets message_too_large and close 1009", async () => {
  await using test = await startTestServer({
    limits: { maxMessageBytes: 2048 },
  });
  const login = await test.login();
  await using client = await ProtocolClient.connect(test.url);
  await client.handshake(login.accessToken);
  client.sendRaw(new Uint8Array(2049));
  const message = await expectConnectionError(
    client,
    "message_too_large",
    1009,
  );
  assert.equal(
    message,
    "Cannot accept message: 2049 bytes exceeds the limit of 2048",
  );
});

Deno.test("PING is answered with PONG echoing the timestamp", async () => {
  await using test = await startTestServer();
  const login = await test.login();
  await using client = await ProtocolClient.connect(test.url);
  await client.handshake(login.accessToken);
  for (const timestamp of [0, -1.5, 1e300, Number.MAX_SAFE_INTEGER]) {
    client.send({ type: MessageType.Ping, timestamp });
    assert.equal((await client.expect(MessageType.Pong)).timestamp, timestamp);
  }
});

Deno.test("a second HANDSHAKE is a protocol_violation", async () => {
  await using test = await startTestServer();
  const login = await test.login();
  await using client = await ProtocolClient.connect(test.url);
  await client.handshake(login.accessToken);
  client.send({
    type: MessageType.Handshake,
    minVersion: 1,
    maxVersion: 1,
    accessToken: login.accessToken,
  });
  await expectConnectionError(client, "protocol_violation", 1002);
});

Deno.test("a connection whose token expires without REFRESH gets token_expired and is closed", async () => {
  await using test = await startTestServer({
    auth: { allowAnonymous: true, accessTokenTtlMs: 1000 },
  });
  const login = await test.login();
  await using client = await ProtocolClient.connect(test.url);
  await client.handshake(login.accessToken);
  const message = await expectConnectionError(
    client,
    "token_expired",
    1008,
    true,
  );
  assert.equal(
    message,
    "The access token expired; refresh it before it expires",
  );
});

Deno.test("REFRESH with a later token keeps the connection past the first token's expiry", async () => {
  await using test = await startTestServer({ auth: { jwtSecret: SECRET } });
  await using refreshed = await ProtocolClient.connect(test.url);
  await refreshed.handshake(await userJwt("dave", 1000));
  refreshed.send({
    type: MessageType.Refresh,
    accessToken: await userJwt("dave", 60_000),
  });
  // A control connection whose token expires a little later than the first
  // one would have: once it is closed for expiry, that moment has passed.
  await using control = await ProtocolClient.connect(test.url);
  await control.handshake(await userJwt("dave", 1000));
  await expectConnectionError(control, "token_expired", 1008, true);
  refreshed.send({ type: MessageType.Ping, timestamp: 7 });
  assert.equal((await refreshed.expect(MessageType.Pong)).timestamp, 7);
});

Deno.test("REFRESH with another user's token gets bad_token", async () => {
  await using test = await startTestServer({ auth: { jwtSecret: SECRET } });
  await using client = await ProtocolClient.connect(test.url);
  await client.handshake(await userJwt("erin", 60_000));
  client.send({
    type: MessageType.Refresh,
    accessToken: await userJwt("frank", 60_000),
  });
  const message = await expectConnectionError(client, "bad_token", 1008);
  assert.equal(message, "Cannot refresh: the token is for a different user");
});

Deno.test("a connection above maxConnections gets too_many_connections (try again) and close 1013", async () => {
  await using test = await startTestServer({ limits: { maxConnections: 1 } });
  const login = await test.login();
  await using first = await ProtocolClient.connect(test.url);
  await first.handshake(login.accessToken);
  await using second = await ProtocolClient.connect(test.url);
  await expectConnectionError(second, "too_many_connections", 1013, true);
  first.send({ type: MessageType.Ping, timestamp: 1 });
  await first.expect(MessageType.Pong);
});

Deno.test("shutdown sends server_shutting_down and closes every connection with 1001", async () => {
  const test = await startTestServer();
  const login = await test.login();
  await using client = await ProtocolClient.connect(test.url);
  await client.handshake(login.accessToken);
  await client.bind(1, "/~/todos");
  await client.expect(MessageType.Download);
  const stopping = test.server.shutdown();
  await expectConnectionError(client, "server_shutting_down", 1001, true);
  await stopping;
  assert.equal(test.server.stats().connections, 0);
  assert.equal(test.server.stats().sessions, 0);
  assert.equal(test.server.stats().realms, 0);
  await test.server.shutdown();
});

Deno.test("compressed UPLOAD frames are inflated in order; bad or oversized ones close the socket", async (t) => {
  await using test = await startTestServer({
    limits: { maxMessageBytes: 64 * 1024 },
  });
  const login = await test.login();
  await t.step(
    "a compressed UPLOAD is integrated, in order with the frames around it",
    async () => {
      await using client = await ProtocolClient.connect(test.url);
      await client.handshake(login.accessToken);
      await client.bind(1, "/~/z");
      await client.expect(MessageType.Download);
      const frame = encodeMessage({
        type: MessageType.Upload,
        sessionId: 1,
        changesets: [upload(1, [put("T", "a", { text: "z".repeat(20_000) })])],
      });
      const compressed = await compressFrame(frame, { threshold: 0 });
      assert.ok(compressed.length < frame.length / 10);
      client.sendRaw(compressed);
      client.send({ type: MessageType.Mark, sessionId: 1, requestId: 5 });
      const ack = await client.expect(MessageType.Download);
      assert.equal(ack.lastIntegratedClientVersion, 1);
      assert.equal(ack.serverVersion, 1, "the ack moves past its own");
      assert.equal((await client.expect(MessageType.MarkReply)).requestId, 5);
    },
  );
  await t.step(
    "inflating past maxMessageBytes gets message_too_large",
    async () => {
      await using client = await ProtocolClient.connect(test.url);
      await client.handshake(login.accessToken);
      const zeros = new Uint8Array(200_000);
      zeros[0] = MessageType.Upload;
      const bomb = await compressFrame(zeros, { threshold: 0 });
      assert.ok(bomb.length < 2048);
      client.sendRaw(bomb);
      await expectConnectionError(client, "message_too_large", 1009);
    },
  );
  await t.step(
    "a body that is not deflate data is a protocol_violation",
    async () => {
      await using client = await ProtocolClient.connect(test.url);
      await client.handshake(login.accessToken);
      client.sendRaw(
        new Uint8Array([MessageType.Upload | 0x80, 0xff, 0xff, 0xff, 0xff]),
      );
      await expectConnectionError(client, "protocol_violation", 1002);
    },
  );
  await t.step("a compressed PING is a protocol_violation", async () => {
    await using client = await ProtocolClient.connect(test.url);
    await client.handshake(login.accessToken);
    client.sendRaw(new Uint8Array([MessageType.Ping | 0x80, 0x03, 0x00]));
    await expectConnectionError(client, "protocol_violation", 1002);
  });
});

Deno.test("a JWT subject such as auth0|… logs in and owns /~/ realms", async () => {
  await using test = await startTestServer({
    auth: { jwtSecret: SECRET, allowAnonymous: false },
  });
  const subject = "auth0|5f7c8ec7c33c6c004bbafe82";
  const login = await test.login({
    provider: "jwt",
    token: await userJwt(subject, 60_000),
  });
  assert.equal(login.userId, subject);
  await using client = await ProtocolClient.connect(test.url);
  const reply = await client.handshake(login.accessToken);
  assert.equal(reply.userId, subject);
  assert.ok(await client.bind(1, "/~/todos") !== null);
  const download = await client.expect(MessageType.Download);
  assert.equal(download.sessionId, 1);
});
