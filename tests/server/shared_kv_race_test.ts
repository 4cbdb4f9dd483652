/**
 * Two server instances on one Deno.Kv (as two processes on one KV Connect
 * store), many clients uploading to one realm at once through both, leaving
 * mid-upload and coming back through either with their identity, as a real
 * client does. Afterwards the history holds every version once, every
 * (identity, client version) once, and every client — and a fresh one on
 * each instance — has every changeset.
 */
import assert from "node:assert/strict";
import { MessageType } from "../../src/protocol/messages.ts";
import type { ClientIdentity } from "../../src/protocol/messages.ts";
import { put, upload } from "../_helpers/changesets.ts";
import { Prng, testSeed } from "../_helpers/prng.ts";
import { ProtocolClient } from "../_helpers/protocol_client.ts";
import { startTestServer, type TestServer } from "../_helpers/test_server.ts";
import { TestKv } from "../_helpers/test_kv.ts";

const CLIENTS = 8;
const CHANGESETS = 30;
const PATH = "/~/shared";

interface SimulatedClient {
  name: string;
  identity: ClientIdentity | null;
  acknowledged: number;
  cursor: number;
  /** Object ids received in DOWNLOADs. */
  seen: Set<string>;
  connections: number;
  /** What the client waits for now, for a failure message. */
  waiting: string;
  /** The server its current connection is on. */
  server: string;
}

/** One line per client: what it waits for, on which server, and its state. */
function describe(clients: readonly SimulatedClient[]): string {
  return clients.map((client) =>
    `${client.name} (identity ${client.identity?.id ?? "none"}, ` +
    `connection ${client.connections} on ${client.server}): ` +
    `waiting for ${client.waiting}; ` +
    `acknowledged ${client.acknowledged}/${CHANGESETS}, cursor ${client.cursor}`
  ).join("\n");
}

function objectId(client: string, clientVersion: number): string {
  return `${client}-${clientVersion}`;
}

/** Applies one server message to the client's view; returns it. */
function apply(
  client: SimulatedClient,
  message: Awaited<ReturnType<ProtocolClient["next"]>>,
) {
  if (message.type === MessageType.Ident) {
    client.identity = message.clientIdentity;
  } else if (message.type === MessageType.Download) {
    client.acknowledged = Math.max(
      client.acknowledged,
      message.lastIntegratedClientVersion,
    );
    client.cursor = Math.max(client.cursor, message.serverVersion);
    for (const changeset of message.changesets) {
      for (const instruction of changeset.instructions) {
        client.seen.add(instruction.id);
      }
    }
  } else if (message.type !== MessageType.MarkReply) {
    throw new Error(`${client.name}: unexpected ${JSON.stringify(message)}`);
  }
  return message;
}

/** Reads until a MARK_REPLY for `requestId`. */
async function markAndWait(
  socket: ProtocolClient,
  client: SimulatedClient,
  requestId: number,
  signal: AbortSignal,
): Promise<void> {
  socket.send({ type: MessageType.Mark, sessionId: 1, requestId });
  client.waiting = `MARK_REPLY ${requestId}`;
  for (let step = 0; step < 10_000; step++) {
    const message = apply(client, await socket.next(signal));
    if (
      message.type === MessageType.MarkReply && message.requestId === requestId
    ) return;
  }
  throw new Error(`${client.name}: no MARK_REPLY`);
}

/**
 * Uploads everything not yet acknowledged through a random server, maybe
 * leaving before the acknowledgements arrive; returns the socket once all
 * is acknowledged (kept open for the final check).
 */
async function run(
  client: SimulatedClient,
  servers: TestServer[],
  accessToken: string,
  random: Prng,
  signal: AbortSignal,
): Promise<ProtocolClient> {
  for (let attempt = 0; attempt < 20; attempt++) {
    const server = random.pick(servers);
    client.server = server === servers[0] ? "east" : "west";
    client.waiting = "the connection";
    const socket = await ProtocolClient.connect(server.url);
    client.connections++;
    await socket.handshake(accessToken);
    socket.send({
      type: MessageType.Bind,
      sessionId: 1,
      path: PATH,
      clientIdentity: client.identity,
      downloadCursor: client.cursor,
      uploadCursor: client.acknowledged,
    });
    if (client.identity === null) {
      client.waiting = "IDENT";
      apply(client, await socket.expect(MessageType.Ident, signal));
    }
    // Everything not acknowledged, again (the server deduplicates), in
    // batches of random size.
    let next = client.acknowledged + 1;
    while (next <= CHANGESETS) {
      const size = 1 + random.int(5);
      const batch = [];
      for (; batch.length < size && next <= CHANGESETS; next++) {
        batch.push(
          upload(next, [
            put("Item", objectId(client.name, next), {
              client: client.name,
              clientVersion: next,
            }),
          ], { node: client.connections }),
        );
      }
      socket.send({
        type: MessageType.Upload,
        sessionId: 1,
        changesets: batch,
      });
    }
    // The first client always leaves once, so every run has a comeback.
    const leaves = attempt < 3 &&
      (random.next() < 0.5 || (attempt === 0 && client.name === "c0"));
    if (leaves) {
      // Gone after a few messages, uploads possibly still in flight.
      // Only while something is unacknowledged: its acknowledgement is
      // still owed, so a message will come. With everything acknowledged
      // the server may owe nothing more (a realm nobody writes to any
      // longer sends one DOWNLOAD after BIND).
      for (
        let read = random.int(4);
        read > 0 && client.acknowledged < CHANGESETS;
        read--
      ) {
        client.waiting = `${read} more message(s) before leaving`;
        apply(client, await socket.next(signal));
      }
      await socket.close();
      continue;
    }
    client.waiting = `the acknowledgement of ${CHANGESETS}`;
    for (let step = 0; step < 10_000; step++) {
      if (client.acknowledged === CHANGESETS) {
        client.waiting = "nothing (done)";
        return socket;
      }
      apply(client, await socket.next(signal));
    }
    throw new Error(`${client.name}: never fully acknowledged`);
  }
  throw new Error(`${client.name}: too many attempts`);
}

/**
 * Runs the clients through two instances on `store` (which `kv` reads
 * directly) and checks the history and every client's view.
 */
async function race(
  kv: Deno.Kv,
  store: Deno.Kv,
  seed: number,
  onStarted: () => void = () => {},
): Promise<TestServer[]> {
  const random = new Prng(seed);
  const signal = AbortSignal.timeout(30_000);
  const options = {
    kv: store,
    history: { snapshotLagVersions: 16 },
    downloadBatchBytes: 2048,
  };
  await using east = await startTestServer(options);
  await using west = await startTestServer(options);
  const login = await east.login();
  onStarted();
  const clients: SimulatedClient[] = Array.from(
    { length: CLIENTS },
    (_, index) => ({
      name: `c${index}`,
      identity: null,
      acknowledged: 0,
      cursor: 0,
      seen: new Set<string>(),
      connections: 0,
      waiting: "its start",
      server: "none",
    }),
  );
  // A hang says who waits for what when the race's signal fires.
  const timedOut = (error: unknown) => {
    if (signal.aborted) {
      throw new Error(`seed ${seed}: timed out\n${describe(clients)}`, {
        cause: error,
      });
    }
    throw error;
  };
  const sockets = await Promise.all(
    clients.map((client) =>
      run(
        client,
        [east, west],
        login.accessToken,
        new Prng(random.nextUint32()),
        signal,
      )
    ),
  ).catch(timedOut);
  try {
    const everything = new Set(
      clients.flatMap((client) =>
        Array.from(
          { length: CHANGESETS },
          (_, index) => objectId(client.name, index + 1),
        )
      ),
    );
    assert.ok(
      clients.some((client) => client.connections > 1),
      `seed ${seed}: some client left and came back`,
    );

    // The stored history: versions 1..head, each (identity, client
    // version) once, every changeset there.
    const realm = `/${login.userId}/shared`;
    const head = (await kv.get<{ version: number }>(
      ["tether", "realm", realm, "head"],
    )).value;
    const versions: number[] = [];
    const pairs = new Set<string>();
    for await (
      const entry of kv.list<{ identity: number; clientVersion: number }>({
        prefix: ["tether", "realm", realm, "history"],
      })
    ) {
      versions.push(entry.key.at(-1) as number);
      pairs.add(`${entry.value.identity}:${entry.value.clientVersion}`);
    }
    assert.equal(head?.version, CLIENTS * CHANGESETS, `seed ${seed}`);
    assert.deepEqual(
      versions,
      Array.from({ length: CLIENTS * CHANGESETS }, (_, index) => index + 1),
      `seed ${seed}`,
    );
    assert.equal(pairs.size, CLIENTS * CHANGESETS, `seed ${seed}`);
    for (const client of clients) {
      for (let version = 1; version <= CHANGESETS; version++) {
        assert.ok(pairs.has(`${client.identity!.id}:${version}`));
      }
    }
    assert.equal(
      east.server.stats().changesetsIntegrated +
        west.server.stats().changesetsIntegrated,
      CLIENTS * CHANGESETS,
      `seed ${seed}: re-uploads were not stored again`,
    );

    // Every client, once everyone is done, has every changeset.
    await Promise.all(
      clients.map((client, index) =>
        markAndWait(sockets[index]!, client, 1000, signal)
      ),
    ).catch(timedOut);
    for (const client of clients) {
      const known = new Set(client.seen);
      for (let version = 1; version <= CHANGESETS; version++) {
        known.add(objectId(client.name, version));
      }
      assert.deepEqual(known, everything, `seed ${seed}: ${client.name}`);
    }
    // And so does a fresh client on either instance.
    for (const server of [east, west]) {
      const fresh: SimulatedClient = {
        name: "fresh",
        identity: null,
        acknowledged: 0,
        cursor: 0,
        seen: new Set(),
        connections: 1,
        waiting: "BIND",
        server: server === east ? "east" : "west",
      };
      await using socket = await ProtocolClient.connect(server.url);
      await socket.handshake(login.accessToken);
      await socket.bind(1, PATH);
      await markAndWait(socket, fresh, 1, signal).catch((error) => {
        throw signal.aborted
          ? new Error(`seed ${seed}: timed out\n${describe([fresh])}`, {
            cause: error,
          })
          : error;
      });
      assert.deepEqual(fresh.seen, everything, `seed ${seed}`);
      assert.equal(fresh.cursor, CLIENTS * CHANGESETS);
    }
  } finally {
    await Promise.all(sockets.map((socket) => socket.close()));
  }
  return [east, west];
}

Deno.test("many clients uploading to one realm through two instances on one KV, leaving and coming back, never get a version assigned twice or a changeset lost, and all converge", async () => {
  await using kv = await Deno.openKv(":memory:");
  await race(kv, kv, testSeed());
});

Deno.test('the same, with one KV call in eight failing as "database is locked": every one is retried, none reaches a client', async () => {
  const seed = testSeed();
  await using kv = await Deno.openKv(":memory:");
  const flaky = new TestKv(kv, {
    flaky: { random: new Prng(seed ^ 0x5eed), probability: 0 },
  });
  const calls = ["get", "getMany", "list", "commit"] as const;
  const servers = await race(kv, flaky.kv, seed, () => {
    flaky.probability = 1 / 8;
    // Each kind fails at least once however few of it the race makes (a
    // server that commits what it knows reads with getMany only rarely).
    for (const call of calls) flaky.failNext(call);
  });
  flaky.probability = 0;
  for (const call of calls) {
    assert.ok(flaky.failures[call]! > 0, `seed ${seed}: no ${call} failed`);
  }
  const logs = servers.flatMap((server) => server.logs);
  assert.ok(logs.some((record) => record.event === "kv_retry"));
  assert.deepEqual(
    logs.filter((record) =>
      record.event === "error_sent" || record.level === "error"
    ).map((record) =>
      `${record.event} ${record.code ?? ""} ${record.message}${
        record.error instanceof Error ? `: ${record.error.stack}` : ""
      }`
    ),
    [],
    `seed ${seed}`,
  );
});
