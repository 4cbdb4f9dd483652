import assert from "node:assert/strict";
import { errorCodeNumber } from "../../src/protocol/error_codes.ts";
import { MessageType } from "../../src/protocol/messages.ts";
import { put, upload } from "../_helpers/changesets.ts";
import { ProtocolClient } from "../_helpers/protocol_client.ts";
import { startTestServer } from "../_helpers/test_server.ts";
import { TestKv } from "../_helpers/test_kv.ts";
import { heldUploadBytes, HeldUploads } from "../../src/server/held_uploads.ts";

// Incompressible-ish payload so frames have a known, real size.
function payload(index: number): string {
  return `${index}:` + crypto.randomUUID().repeat(40);
}

Deno.test("a client that uploads faster than the server stores is refused with queue_full (try again) once the held bytes pass the limit; what was acknowledged is stored once", async () => {
  await using inner = await Deno.openKv(":memory:");
  const gated = new TestKv(inner);
  await using test = await startTestServer({
    kv: gated.kv,
    limits: { maxQueuedBytesPerConnection: 64 * 1024 },
  });
  const login = await test.login();
  await using client = await ProtocolClient.connect(test.url);
  await client.handshake(login.accessToken);
  const identity = (await client.bind(1, "/~/fast"))!;
  await client.expect(MessageType.Download);
  // Storage stops taking commits: every UPLOAD from here on is held.
  const stall = gated.stall("commit", () => true);
  let sent = 0;
  for (; sent < 200; sent++) {
    client.send({
      type: MessageType.Upload,
      sessionId: 1,
      changesets: [
        upload(sent + 1, [put("T", `o${sent}`, { v: payload(sent) })]),
      ],
    });
  }
  const error = await client.expect(MessageType.Error);
  assert.equal(error.sessionId, null, "the refusal is about the connection");
  assert.equal(error.code, errorCodeNumber("queue_full"));
  assert.equal(error.tryAgain, true);
  assert.match(error.message, /limit is 65536/);
  await client.closed;
  stall.release();
  // The client comes back, slower, and uploads everything again: the
  // server integrates each changeset once.
  await using again = await ProtocolClient.connect(test.url);
  await again.handshake(login.accessToken);
  again.send({
    type: MessageType.Bind,
    sessionId: 1,
    path: "/~/fast",
    clientIdentity: identity,
    downloadCursor: 0,
    uploadCursor: 0,
  });
  let acknowledged = 0;
  for (let index = 0; index < sent; index += 10) {
    again.send({
      type: MessageType.Upload,
      sessionId: 1,
      changesets: Array.from(
        { length: Math.min(10, sent - index) },
        (_, offset) =>
          upload(index + offset + 1, [
            put("T", `o${index + offset}`, { v: payload(index + offset) }),
          ]),
      ),
    });
    while (acknowledged < Math.min(index + 10, sent)) {
      const message = await again.expect(MessageType.Download);
      acknowledged = Math.max(
        acknowledged,
        message.lastIntegratedClientVersion,
      );
    }
  }
  assert.equal(acknowledged, sent);
  assert.equal(test.server.stats().changesetsIntegrated, sent);
});

Deno.test("HeldUploads takes one upload of any size when nothing is held, refuses past the limit, and frees what is released", () => {
  const held = new HeldUploads(1000);
  assert.equal(held.hold(5000), true, "a lone large upload is taken");
  assert.equal(held.hold(1), false);
  assert.equal(held.bytes, 5000);
  held.release(5000);
  assert.equal(held.hold(600), true);
  assert.equal(held.hold(400), true);
  assert.equal(held.hold(1), false);
  held.release(600);
  assert.equal(held.hold(500), true);
  assert.equal(held.bytes, 900);
});

Deno.test("heldUploadBytes() counts twice the frame plus 256 bytes per instruction", () => {
  assert.equal(
    heldUploadBytes({
      type: MessageType.Upload,
      sessionId: 1,
      changesets: [
        upload(1, [put("T", "a", {}), put("T", "b", {})]),
        upload(2, [put("T", "c", {})]),
      ],
    }, 1000),
    2000 + 3 * 256,
  );
});
