/**
 * Clients that do not read what they asked for: the server's output for
 * them stays bounded by its backpressure mark, whatever else they send.
 */
import assert from "node:assert/strict";
import { MessageType } from "../../src/protocol/messages.ts";
import { ProtocolClient } from "../_helpers/protocol_client.ts";
import { startTestServer } from "../_helpers/test_server.ts";
import { reportBacklog } from "../_helpers/backlog.ts";

Deno.test("PINGs from a client whose socket is backed up are not answered until it drains; then the newest one is", async () => {
  await using test = await startTestServer({ sendBufferBytes: 64 * 1024 });
  const login = await test.login();
  await using client = await ProtocolClient.connect(test.url);
  await client.handshake(login.accessToken);
  let backedUp = true;
  using _backlog = reportBacklog(() => backedUp, 1024 * 1024);
  const pings = 10_000;
  for (let timestamp = 1; timestamp <= pings; timestamp++) {
    client.send({ type: MessageType.Ping, timestamp });
  }
  // A message whose answer shows the PINGs before it were handled.
  client.send({
    type: MessageType.Bind,
    sessionId: 3,
    path: "/somebody-else/x",
    clientIdentity: null,
    downloadCursor: 0,
    uploadCursor: 0,
  });
  const refused = await client.next();
  assert.equal(
    refused.type,
    MessageType.Error,
    "nothing but the ERROR, no PONG, while the socket is backed up",
  );
  assert.equal(refused.sessionId, 3);

  backedUp = false;
  assert.equal((await client.expect(MessageType.Pong)).timestamp, pings);
  client.send({ type: MessageType.Ping, timestamp: -1 });
  assert.equal((await client.expect(MessageType.Pong)).timestamp, -1);
  assert.equal(client.pending, 0);
});
