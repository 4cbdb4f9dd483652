/**
 * Per-connection limits hold however fast a client sends: they count what
 * the client asked for, not what the server has finished.
 */
import assert from "node:assert/strict";
import { errorCodeNumber } from "../../src/protocol/error_codes.ts";
import { MessageType } from "../../src/protocol/messages.ts";
import { put, upload } from "../_helpers/changesets.ts";
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

Deno.test("an object whose snapshot record key would not fit in Deno KV is refused with bad_changeset, so the realm's snapshot keeps advancing", async () => {
  await using test = await startTestServer({
    history: { snapshotLagVersions: 1 },
  });
  const login = await test.login();
  await using client = await ProtocolClient.connect(test.url);
  await client.handshake(login.accessToken);
  // As long as a path may be, in three-byte characters.
  const path = "/~/" + "名".repeat(512 - 2 - login.userId.length - 1);
  const long = "名".repeat(170); // 510 bytes: within the name limit
  await client.bind(1, path);
  await client.expect(MessageType.Download);
  client.send({
    type: MessageType.Upload,
    sessionId: 1,
    changesets: [upload(1, [put(long, long, { a: 1 })])],
  });
  const error = await client.expect(MessageType.Error);
  assert.equal(error.sessionId, 1);
  assert.equal(error.code, errorCodeNumber("bad_changeset"));
  assert.equal(
    error.message,
    "Cannot upload: changeset 1 names an object whose storage key, with the realm path, is longer than 2048 bytes",
  );

  const identity = await client.bind(2, path);
  client.send({
    type: MessageType.Upload,
    sessionId: 2,
    changesets: [upload(1, [put("T", "short", { a: 1 })])],
  });
  for (let step = 0; step < 5; step++) {
    const message = await client.expect(MessageType.Download);
    if (message.serverVersion === 1) break;
  }
  assert.ok(identity !== null);
  // A fresh client bootstraps from an up-to-date snapshot.
  await client.bind(3, path);
  const fresh = await client.downloadUntil(3, 1);
  assert.deepEqual(
    fresh.flatMap((frame) =>
      frame.message.type === MessageType.Download
        ? frame.message.changesets.flatMap((changeset) =>
          changeset.instructions.map((instruction) => instruction.id)
        )
        : []
    ),
    ["short"],
  );
  assert.deepEqual(
    test.logs.filter((record) => record.event === "snapshot_failed"),
    [],
  );
});
