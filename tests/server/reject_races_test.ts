// REJECT against the races the convergence soak (tests/soak/) found: a
// revert read while a DOWNLOAD goes out, and a REJECT lost with its
// connection before the client heard of it (docs/PROTOCOL.md §4.16).

import assert from "node:assert/strict";
import { errorCodeNumber } from "../../src/protocol/error_codes.ts";
import {
  MessageType,
  type ServerMessage,
} from "../../src/protocol/messages.ts";
import type { UploadChangeset } from "../../src/model/changeset.ts";
import { PROTOCOL_VERSION } from "../../src/protocol/version.ts";
import type { ClientIdentity } from "../../src/protocol/messages.ts";
import { put, update, upload } from "../_helpers/changesets.ts";
import { ProtocolClient } from "../_helpers/protocol_client.ts";
import { startTestServer, type TestServer } from "../_helpers/test_server.ts";
import type { ChangesetValidator } from "../../src/server/changeset_validation.ts";

const BOUND_MS = 10_000;

/**
 * Adopts `test` into `stack` and logs in once; the returned function opens a
 * socket that speaks the current protocol version (REJECT needs 2), also
 * disposed with `stack`.
 */
async function connector(
  stack: AsyncDisposableStack,
  test: TestServer,
): Promise<(() => Promise<ProtocolClient>) & { userId: string }> {
  stack.use(test);
  const login = await test.login();
  const connect = async () => {
    const client = await ProtocolClient.connect(test.url);
    stack.use(client);
    await client.handshake(login.accessToken, {
      minVersion: PROTOCOL_VERSION,
      maxVersion: PROTOCOL_VERSION,
    });
    return client;
  };
  return Object.assign(connect, { userId: login.userId });
}

/**
 * Two connections of one user bound to `/~/todos` with one client identity
 * (the first is given it, the second binds with it), as a client whose old
 * connection the server has not seen go yet.
 */
async function oneIdentityTwice(stack: AsyncDisposableStack, test: TestServer) {
  const connect = await connector(stack, test);
  const first = await connect();
  const identity: ClientIdentity = (await first.bind(1, "/~/todos"))!;
  await first.expect(MessageType.Download, bound());
  const second = await connect();
  await second.bind(1, "/~/todos", { identity });
  const secondBound = await second.expect(MessageType.Download, bound());
  return { first, second, secondBound, userId: connect.userId };
}

/**
 * A validation hook whose first call waits until the test releases it with
 * its answer; `others` answers every later call at once.
 */
function heldFirstCall(
  stack: AsyncDisposableStack,
  others: ChangesetValidator,
) {
  const asked = Promise.withResolvers<void>();
  const answer = Promise.withResolvers<boolean>();
  stack.defer(() => answer.resolve(false));
  let held = false;
  const validateChangeset: ChangesetValidator = (changeset) => {
    if (held) return others(changeset);
    held = true;
    asked.resolve();
    return answer.promise;
  };
  return {
    validateChangeset,
    asked: asked.promise,
    release: (allowed: boolean) => answer.resolve(allowed),
  };
}

/**
 * A KV handle whose next `get` or `getMany` of a key matching the armed
 * predicate waits until released; everything else goes straight to `kv`.
 */
function gatedKv(kv: Deno.Kv) {
  let armed:
    | {
      matches: (key: Deno.KvKey) => boolean;
      reached: PromiseWithResolvers<void>;
      release: PromiseWithResolvers<void>;
    }
    | undefined;
  const gated = new Proxy(kv, {
    get(target, property) {
      if (property === "get" || property === "getMany") {
        const read = property === "get"
          ? (key: Deno.KvKey) => target.get(key)
          : (keys: Deno.KvKey[]) => target.getMany(keys);
        return async (keys: Deno.KvKey & Deno.KvKey[]) => {
          const gate = armed;
          const named = property === "get" ? [keys] : keys;
          if (gate !== undefined && named.some((key) => gate.matches(key))) {
            armed = undefined;
            gate.reached.resolve();
            await gate.release.promise;
          }
          return await read(keys);
        };
      }
      const value = Reflect.get(target, property, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  return {
    kv: gated,
    /** Holds the next matching `get`; resolves `reached` when it starts. */
    arm(matches: (key: Deno.KvKey) => boolean) {
      const gate = {
        matches,
        reached: Promise.withResolvers<void>(),
        release: Promise.withResolvers<void>(),
      };
      armed = gate;
      return gate;
    },
  };
}

function bound(): AbortSignal {
  return AbortSignal.timeout(BOUND_MS);
}

/** The next message of `type`, passing over DOWNLOADs. */
async function skipDownloads<T extends ServerMessage["type"]>(
  client: ProtocolClient,
  type: T,
): Promise<Extract<ServerMessage, { type: T }>> {
  for (let index = 0; index < 100; index++) {
    const message = await client.next(bound());
    if (message.type === type) {
      return message as Extract<ServerMessage, { type: T }>;
    }
    if (message.type !== MessageType.Download) {
      throw new Error(`Expected ${type}, got ${message.type}`);
    }
  }
  throw new Error(`No message ${type} within 100 DOWNLOADs`);
}

/** DOWNLOADs of `client` until one moves its cursor to `version`. */
async function downloadTo(
  client: ProtocolClient,
  version: number,
): Promise<void> {
  for (let index = 0; index < 100; index++) {
    const message = await client.expect(MessageType.Download, bound());
    if (message.serverVersion >= version) return;
  }
  throw new Error(`No DOWNLOAD to version ${version} within 100`);
}

function uploadMessage(changesets: UploadChangeset[]) {
  return { type: MessageType.Upload, sessionId: 1, changesets } as const;
}

Deno.test("a REJECT whose revert is read while another client's commit goes out to the writer carries that commit too: the revert is never older than what the session sent", async () => {
  await using stack = new AsyncDisposableStack();
  const kv = await Deno.openKv(":memory:");
  stack.defer(() => kv.close());
  const gate = gatedKv(kv);
  const test = await startTestServer({
    kv: gate.kv,
    validateChangeset: ({ changes }) =>
      changes.every((change) => change.fields?.["title"] !== ""),
  });
  const open = await connector(stack, test);
  const connect = async () => {
    const client = await open();
    await client.bind(1, "/~/todos");
    await client.expect(MessageType.Download, bound());
    return client;
  };
  const writer = await connect();
  const other = await connect();

  other.send(uploadMessage([
    upload(1, [put("T", "a", { title: "ok" })], { node: 2 }),
  ]));
  await downloadTo(writer, 1);

  // The writer's refused update: the server reads T/a for the revert, and
  // that read is held until the other client's update has gone out to the
  // writer.
  const held = gate.arm((key) => key.at(-3) === "object" && key.at(-1) === "a");
  stack.defer(() => held.release.resolve());
  writer.send(uploadMessage([upload(1, [update("T", "a", { title: "" })])]));
  await held.reached.promise;
  other.send(uploadMessage([
    upload(2, [update("T", "a", { done: true })], { node: 2 }),
  ]));
  await downloadTo(writer, 2);
  held.release.resolve();

  const reject = await skipDownloads(writer, MessageType.Reject);
  assert.equal(reject.clientVersion, 1);
  assert.equal(reject.code, errorCodeNumber("validation_failed"));
  assert.ok(reject.revert.every((changeset) => changeset.serverVersion >= 2));
  const fields = Object.assign(
    {},
    ...reject.revert.flatMap((changeset) =>
      changeset.instructions.map((instruction) => instruction.fields ?? {})
    ),
  );
  assert.deepEqual(fields, { title: "ok", done: true });
});

Deno.test("a REJECT lost with its connection comes again before anything acknowledges its version: the next BIND acknowledges only what precedes it, the re-upload is refused again with the revert, and what follows is acknowledged without being stored twice", async () => {
  await using stack = new AsyncDisposableStack();
  let asked = 0;
  const test = await startTestServer({
    validateChangeset: ({ changes }) => {
      asked++;
      return changes.every((change) => change.fields?.["title"] !== "");
    },
  });
  const connect = await connector(stack, test);
  const changesets = [
    upload(1, [put("T", "a", { title: "ok" })]),
    upload(2, [update("T", "a", { title: "" })]),
    upload(3, [update("T", "a", { done: true })]),
  ];

  const first = await connect();
  const identity: ClientIdentity = (await first.bind(1, "/~/todos"))!;
  await first.expect(MessageType.Download, bound());
  first.send(uploadMessage(changesets));
  // Every one settled on the server; then the connection goes, and the
  // client (which never processed the REJECT) binds again below.
  for (let index = 0; index < 100; index++) {
    const message = await first.next(bound());
    if (
      message.type === MessageType.Download &&
      message.lastIntegratedClientVersion === 3
    ) break;
  }
  assert.equal(test.stats().changesetsIntegrated, 2);
  await first[Symbol.asyncDispose]();

  // The client heard of version 1 only.
  const second = await connect();
  await second.bind(1, "/~/todos", { identity, uploadCursor: 1 });
  const rebound = await second.expect(MessageType.Download, bound());
  assert.equal(rebound.lastIntegratedClientVersion, 1);
  second.send(uploadMessage(changesets.slice(1)));
  const reject = await skipDownloads(second, MessageType.Reject);
  assert.equal(reject.clientVersion, 2);
  assert.equal(reject.code, errorCodeNumber("validation_failed"));
  const fields = Object.assign(
    {},
    ...reject.revert.flatMap((changeset) =>
      changeset.instructions.map((instruction) => instruction.fields ?? {})
    ),
  );
  assert.deepEqual(fields, { title: "ok", done: true });
  for (let index = 0; index < 100; index++) {
    const message = await second.expect(MessageType.Download, bound());
    if (message.lastIntegratedClientVersion === 3) break;
    assert.ok(message.lastIntegratedClientVersion < 3);
  }
  assert.equal(test.stats().changesetsIntegrated, 2);
  // The hook was asked once per changeset: re-uploads are settled already.
  assert.equal(asked, 3);
});

Deno.test("two sessions of one identity: a refusal settled by one is never acknowledged by the other before its REJECT, whatever the other integrates first", async () => {
  await using stack = new AsyncDisposableStack();
  const test = await startTestServer({
    validateChangeset: ({ changes }) =>
      changes.every((change) => change.fields?.["title"] !== ""),
  });
  const changesets = [
    upload(1, [put("T", "a", { title: "ok" })]),
    upload(2, [update("T", "a", { title: "" })]),
    upload(3, [update("T", "a", { done: true })]),
  ];
  // The old link and the new one, both bound before anything is uploaded
  // (the client gave up on the first, which the server still serves).
  const { first: old, second: fresh, secondBound } = await oneIdentityTwice(
    stack,
    test,
  );
  assert.equal(secondBound.lastIntegratedClientVersion, 0);
  // The old session settles all three: 1 and 3 stored, 2 refused.
  old.send(uploadMessage(changesets));
  for (let index = 0; index < 100; index++) {
    const message = await old.next(bound());
    if (
      message.type === MessageType.Download &&
      message.lastIntegratedClientVersion === 3
    ) break;
  }

  // The client uploads them again on the new link: nothing acknowledges
  // version 2 before its REJECT.
  fresh.send(uploadMessage(changesets));
  let rejected = false;
  for (let index = 0; index < 100; index++) {
    const message = await fresh.next(bound());
    if (message.type === MessageType.Reject) {
      assert.equal(message.clientVersion, 2);
      rejected = true;
      continue;
    }
    assert.equal(message.type, MessageType.Download);
    if (!rejected) assert.ok(message.lastIntegratedClientVersion < 2);
    if (message.lastIntegratedClientVersion === 3) break;
  }
  assert.ok(rejected);
  assert.equal(test.stats().changesetsIntegrated, 2);
});

Deno.test("two sessions of one identity upload one changeset at once and the hook answers each differently: the one it allowed finds the refusal recorded and sends REJECT, never an acknowledgement, and goes on", async () => {
  await using stack = new AsyncDisposableStack();
  // The hook's first call waits for the test's answer; the second refuses
  // at once (a rate limit, a permission that changed meanwhile).
  let later = 0;
  const hook = heldFirstCall(stack, () => ++later > 1);
  const test = await startTestServer({
    validateChangeset: hook.validateChangeset,
  });
  const { first, second, userId } = await oneIdentityTwice(stack, test);

  const refused = upload(1, [put("T", "a", { title: "x" })]);
  second.send(uploadMessage([refused]));
  await hook.asked;
  first.send(uploadMessage([refused]));
  const firstReject = await skipDownloads(first, MessageType.Reject);
  assert.equal(firstReject.clientVersion, 1);
  assert.equal(firstReject.code, errorCodeNumber("validation_failed"));
  hook.release(true);

  // Connection 2 hears of version 1 only as refused: no DOWNLOAD
  // acknowledges it before the REJECT.
  let reject;
  for (let index = 0; index < 100 && reject === undefined; index++) {
    const message = await second.next(bound());
    if (message.type === MessageType.Reject) reject = message;
    else {
      assert.equal(message.type, MessageType.Download);
      assert.equal(message.lastIntegratedClientVersion, 0);
    }
  }
  assert.equal(reject?.clientVersion, 1);
  assert.equal(reject.code, errorCodeNumber("validation_failed"));
  assert.equal(test.stats().changesetsIntegrated, 0);

  // The session goes on: the next changeset is stored and acknowledged.
  second.send(uploadMessage([upload(2, [put("T", "b", { title: "y" })])]));
  for (let index = 0; index < 100; index++) {
    const message = await second.expect(MessageType.Download, bound());
    if (message.lastIntegratedClientVersion === 2) break;
    assert.ok(message.lastIntegratedClientVersion <= 1);
  }
  assert.equal(test.stats().changesetsIntegrated, 1);
  const realm = test.realm(`/${userId}/todos`);
  assert.equal(await realm.get("T", "a"), undefined);
  assert.deepEqual(await realm.get("T", "b"), { title: "y" });
});

Deno.test("two sessions of one identity upload one changeset at once, the allowed one with the next in the same upload: the commit stores only the next, and it is acknowledged only after the REJECT of the first", async () => {
  await using stack = new AsyncDisposableStack();
  // The hook's first call (version 1 from the second connection) waits for
  // the test's answer; the next allows "b" and refuses the rest.
  const hook = heldFirstCall(
    stack,
    ({ changes }) => changes.some((change) => change.id === "b"),
  );
  const test = await startTestServer({
    validateChangeset: hook.validateChangeset,
  });
  const { first, second } = await oneIdentityTwice(stack, test);

  const refused = upload(1, [put("T", "a", { title: "x" })]);
  second.send(uploadMessage([
    refused,
    upload(2, [put("T", "b", { title: "y" })]),
  ]));
  await hook.asked;
  first.send(uploadMessage([refused]));
  assert.equal(
    (await skipDownloads(first, MessageType.Reject)).clientVersion,
    1,
  );
  hook.release(true);

  let rejected = false;
  for (let index = 0; index < 100; index++) {
    const message = await second.next(bound());
    if (message.type === MessageType.Reject) {
      assert.equal(message.clientVersion, 1);
      assert.equal(message.code, errorCodeNumber("validation_failed"));
      rejected = true;
      continue;
    }
    assert.equal(message.type, MessageType.Download);
    if (!rejected) assert.equal(message.lastIntegratedClientVersion, 0);
    if (message.lastIntegratedClientVersion === 2) break;
  }
  assert.ok(rejected);
  assert.equal(test.stats().changesetsIntegrated, 1);
});
