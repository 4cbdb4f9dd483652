// A protocol 2 BIND forgets the refusals its upload cursor shows settled
// (docs/PROTOCOL.md §4.16), and only looks for them when the identity ever
// had a changeset refused: the common BIND costs no KV list.

import assert from "node:assert/strict";
import { MessageType } from "../../src/protocol/messages.ts";
import { rejectionKey } from "../../src/server/storage/keys.ts";
import { put, upload } from "../_helpers/changesets.ts";
import { ProtocolClient } from "../_helpers/protocol_client.ts";
import { startTestServer } from "../_helpers/test_server.ts";

/** A KV whose `list` calls over refusals are counted. */
function countingKv(
  kv: Deno.Kv,
): { kv: Deno.Kv; rejectionLists: () => number } {
  let lists = 0;
  const proxy = new Proxy(kv, {
    get(target, property) {
      if (property === "list") {
        return (
          selector: Deno.KvListSelector,
          options?: Deno.KvListOptions,
        ) => {
          const key = "start" in selector
            ? selector.start
            : "prefix" in selector
            ? selector.prefix
            : [];
          if (key.includes("rejection")) lists++;
          return target.list(selector, options);
        };
      }
      const value = Reflect.get(target, property, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  return { kv: proxy, rejectionLists: () => lists };
}

Deno.test("a BIND prunes the settled refusals of an identity that had one, and lists nothing for one that never had", async () => {
  await using store = await Deno.openKv(":memory:");
  const { kv, rejectionLists } = countingKv(store);
  await using test = await startTestServer({
    kv,
    permissions: (_userId, path) =>
      path.endsWith("/shared") ? "read" : "readwrite",
  });
  const login = await test.login();
  await using client = await ProtocolClient.connect(test.url);
  await client.handshake(login.accessToken);

  // An identity with a refusal: pruned at the BIND that shows it settled.
  const refused = (await client.bind(1, "/~/shared"))!;
  await client.expect(MessageType.Download);
  client.send({
    type: MessageType.Upload,
    sessionId: 1,
    changesets: [upload(1, [put("T", "a", {})])],
  });
  assert.equal((await client.expect(MessageType.Reject)).clientVersion, 1);
  client.send({ type: MessageType.Unbind, sessionId: 1 });
  await client.expect(MessageType.Unbound);
  const path = `/${login.userId}/shared`;
  assert.notEqual(
    (await store.get(rejectionKey(path, refused.id, 1))).value,
    null,
  );
  await client.bind(2, "/~/shared", { identity: refused, uploadCursor: 1 });
  assert.equal(
    (await client.expect(MessageType.Download)).lastIntegratedClientVersion,
    1,
  );
  assert.equal(
    (await store.get(rejectionKey(path, refused.id, 1))).value,
    null,
  );
  assert.equal(rejectionLists(), 1);

  // An identity that never had a refusal: its BIND lists nothing.
  const plain = (await client.bind(3, "/~/todos"))!;
  await client.expect(MessageType.Download);
  client.send({
    type: MessageType.Upload,
    sessionId: 3,
    changesets: [upload(1, [put("T", "b", {})])],
  });
  assert.equal(
    (await client.expect(MessageType.Download)).lastIntegratedClientVersion,
    1,
  );
  client.send({ type: MessageType.Unbind, sessionId: 3 });
  await client.expect(MessageType.Unbound);
  await client.bind(4, "/~/todos", { identity: plain, uploadCursor: 1 });
  assert.equal(
    (await client.expect(MessageType.Download)).lastIntegratedClientVersion,
    1,
  );
  assert.equal(rejectionLists(), 1);
});
