// UPLOAD_TOO_LARGE on the wire (docs/PROTOCOL.md §4.17): the server refuses
// the changeset it stands for in order with the session's uploads, stores
// nothing of it, and never reads it as a write.

import assert from "node:assert/strict";
import { errorCodeNumber } from "../../src/protocol/error_codes.ts";
import {
  type ClientIdentity,
  MessageType,
  type ServerMessage,
  type UploadTooLargeMessage,
} from "../../src/protocol/messages.ts";
import type { UploadChangeset } from "../../src/model/changeset.ts";
import { put, update, upload } from "../_helpers/changesets.ts";
import { ProtocolClient } from "../_helpers/protocol_client.ts";
import { startTestServer } from "../_helpers/test_server.ts";
import type { ServeSyncOptions } from "../../server.ts";

function bound(): AbortSignal {
  return AbortSignal.timeout(10_000);
}

function uploadOf(changesets: UploadChangeset[]) {
  return { type: MessageType.Upload, sessionId: 1, changesets } as const;
}

function tooLarge(
  clientVersion: number,
  objects: { type: string; id: string }[],
): UploadTooLargeMessage {
  return {
    type: MessageType.UploadTooLarge,
    sessionId: 1,
    clientVersion,
    changesetBytes: 99_999,
    objects,
  };
}

/** A server, a client bound to `/~/todos` on `version`, and its identity. */
async function boundClient(
  stack: AsyncDisposableStack,
  options: Partial<ServeSyncOptions> = {},
  version?: number,
) {
  const test = stack.use(
    await startTestServer({ limits: { maxMessageBytes: 4096 }, ...options }),
  );
  const login = await test.login();
  const client = stack.use(await ProtocolClient.connect(test.url));
  await client.handshake(login.accessToken, {
    ...(version === undefined ? {} : { minVersion: version }),
    ...(version === undefined ? {} : { maxVersion: version }),
  });
  const identity: ClientIdentity = (await client.bind(1, "/~/todos"))!;
  await client.expect(MessageType.Download, bound());
  return {
    test,
    client,
    identity,
    path: `/${login.userId}/todos`,
    accessToken: login.accessToken,
  };
}

/** Messages until a DOWNLOAD acknowledges `clientVersion` (at most 100). */
async function until(
  client: ProtocolClient,
  clientVersion: number,
): Promise<ServerMessage[]> {
  const seen: ServerMessage[] = [];
  for (let index = 0; index < 100; index++) {
    const message = await client.next(bound());
    seen.push(message);
    if (
      message.type === MessageType.Download &&
      message.lastIntegratedClientVersion >= clientVersion
    ) return seen;
  }
  throw new Error(`No acknowledgement of ${clientVersion} within 100`);
}

Deno.test("UPLOAD_TOO_LARGE between two UPLOADs: REJECT message_too_large with the server's state of the objects it names, in order, and the uploads around it stored", async () => {
  await using stack = new AsyncDisposableStack();
  const { test, client, path } = await boundClient(stack);
  client.send(uploadOf([upload(1, [put("T", "a", { title: "one" })])]));
  client.send(
    tooLarge(2, [{ type: "T", id: "a" }, { type: "T", id: "b" }]),
  );
  client.send(uploadOf([upload(3, [update("T", "a", { done: true })])]));
  const seen = await until(client, 3);
  const rejects = seen.filter((m) => m.type === MessageType.Reject);
  assert.equal(rejects.length, 1);
  const reject = rejects[0]!;
  assert.equal(reject.clientVersion, 2);
  assert.equal(reject.code, errorCodeNumber("message_too_large"));
  assert.match(reject.message, /99999 bytes.*4096/);
  const revert = reject.revert.flatMap((c) => c.instructions)
    .map(({ op, id, fields }) => ({ op, id, fields }))
    .sort((x, y) => x.id.localeCompare(y.id));
  assert.deepEqual(revert, [
    { op: "put", id: "a", fields: { title: "one" } },
    { op: "delete", id: "b", fields: null },
  ]);
  // The REJECT comes before any DOWNLOAD acknowledging version 3.
  const rejectAt = seen.indexOf(reject);
  assert.ok(
    seen.slice(0, rejectAt).every((m) =>
      m.type !== MessageType.Download || m.lastIntegratedClientVersion < 2
    ),
  );
  assert.equal(test.stats().changesetsIntegrated, 2);
  const objects = await test.realm(path).objects("T");
  assert.deepEqual(objects.map((o) => [o.id, o.fields]), [
    ["a", { title: "one", done: true }],
  ]);
});

Deno.test("UPLOAD_TOO_LARGE for a client version the server integrated before (an UPLOAD under a larger limit) is acknowledged like any re-upload: nothing it names is deleted", async () => {
  await using stack = new AsyncDisposableStack();
  const { test, client, identity, path, accessToken } = await boundClient(
    stack,
  );
  client.send(uploadOf([upload(1, [put("T", "a", { title: "kept" })])]));
  await until(client, 1);
  await client[Symbol.asyncDispose]();
  // The client never heard of the acknowledgement and binds again.
  const again = stack.use(await ProtocolClient.connect(test.url));
  await again.handshake(accessToken);
  await again.bind(1, "/~/todos", { identity, downloadCursor: 0 });
  again.send(tooLarge(1, [{ type: "T", id: "a" }]));
  const seen = await until(again, 1);
  assert.ok(seen.every((m) => m.type === MessageType.Download), String(seen));
  assert.equal(test.stats().changesetsIntegrated, 1);
  const objects = await test.realm(path).objects("T");
  assert.deepEqual(objects.map((o) => [o.id, o.fields]), [
    ["a", { title: "kept" }],
  ]);
});

Deno.test("UPLOAD_TOO_LARGE on a realm the user may only read is refused with write_not_allowed", async () => {
  await using stack = new AsyncDisposableStack();
  const { client } = await boundClient(stack, {
    permissions: () => "read",
  });
  client.send(tooLarge(1, [{ type: "T", id: "a" }]));
  // The REJECT itself settles the version: nothing else need follow it.
  let message = await client.next(bound());
  while (message.type === MessageType.Download) {
    message = await client.next(bound());
  }
  assert.equal(message.type, MessageType.Reject);
  assert.equal(message.code, errorCodeNumber("write_not_allowed"));
});

Deno.test("UPLOAD_TOO_LARGE naming an object twice, or a name no UPLOAD could carry, ends the session with bad_changeset", async (t) => {
  for (
    const [name, objects] of [
      ["twice", [{ type: "T", id: "a" }, { type: "T", id: "a" }]],
      ["too long", [{ type: "T", id: "x".repeat(600) }]],
    ] as const
  ) {
    await t.step(name, async () => {
      await using stack = new AsyncDisposableStack();
      const { client } = await boundClient(stack, {
        limits: { maxMessageBytes: 64 * 1024 },
      });
      client.send(tooLarge(1, [...objects]));
      const error = await client.expect(MessageType.Error, bound());
      assert.equal(error.sessionId, 1);
      assert.equal(error.code, errorCodeNumber("bad_changeset"));
    });
  }
});

Deno.test("UPLOAD_TOO_LARGE on a connection that negotiated version 2 is a protocol violation", async () => {
  await using stack = new AsyncDisposableStack();
  const { client } = await boundClient(stack, {}, 2);
  client.send(tooLarge(1, [{ type: "T", id: "a" }]));
  const error = await client.expect(MessageType.Error, bound());
  assert.equal(error.sessionId, null);
  assert.equal(error.code, errorCodeNumber("protocol_violation"));
  assert.equal((await client.close()).code, 1002);
});
