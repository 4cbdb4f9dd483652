/**
 * Per-connection limits hold however fast a client sends: they count what
 * the client asked for, not what the server has finished.
 */
import assert from "node:assert/strict";
import { errorCodeNumber } from "../../src/protocol/error_codes.ts";
import { MessageType } from "../../src/protocol/messages.ts";
import { ProtocolClient } from "../_helpers/protocol_client.ts";
import { startTestServer } from "../_helpers/test_server.ts";

Deno.test("BINDs sent back to back cannot bind more than maxSessionsPerConnection sessions", async () => {
  const limit = 4;
  await using test = await startTestServer({
    limits: { maxSessionsPerConnection: limit },
  });
  const login = await test.login();
  await using client = await ProtocolClient.connect(test.url);
  await client.handshake(login.accessToken);
  const binds = 20;
  for (let sessionId = 1; sessionId <= binds; sessionId++) {
    client.send({
      type: MessageType.Bind,
      sessionId,
      path: `/~/realm${sessionId}`,
      clientIdentity: null,
      downloadCursor: 0,
      uploadCursor: 0,
    });
  }
  client.send({ type: MessageType.Ping, timestamp: 1 });
  const bound = new Set<number>();
  const refused = new Set<number>();
  let ponged = false;
  for (let step = 0; step < 200; step++) {
    if (ponged && bound.size + refused.size === binds) break;
    const message = await client.next();
    if (message.type === MessageType.Pong) ponged = true;
    else if (message.type === MessageType.Download) {
      bound.add(message.sessionId);
    } else if (message.type === MessageType.Error) {
      assert.equal(message.code, errorCodeNumber("too_many_sessions"));
      refused.add(message.sessionId!);
    } else {
      assert.equal(message.type, MessageType.Ident);
    }
  }
  assert.equal(bound.size, limit);
  assert.equal(refused.size, binds - limit);
  assert.equal(test.server.stats().sessions, limit);

  // Unbinding one makes room for one more.
  const first = [...bound][0]!;
  client.send({ type: MessageType.Unbind, sessionId: first });
  assert.equal((await client.expect(MessageType.Unbound)).sessionId, first);
  assert.ok(await client.bind(100, "/~/again") !== null);
  assert.equal((await client.expect(MessageType.Download)).sessionId, 100);
  client.send({
    type: MessageType.Bind,
    sessionId: 101,
    path: "/~/one-too-many",
    clientIdentity: null,
    downloadCursor: 0,
    uploadCursor: 0,
  });
  const error = await client.expect(MessageType.Error);
  assert.equal(error.sessionId, 101);
  assert.equal(error.code, errorCodeNumber("too_many_sessions"));
});
