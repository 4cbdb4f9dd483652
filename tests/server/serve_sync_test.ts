import assert from "node:assert/strict";
import { serveSync, type ServeSyncOptions } from "../../server.ts";
import { errorCodeNumber } from "../../src/protocol/error_codes.ts";
import { MessageType } from "../../src/protocol/messages.ts";
import { put, upload } from "../_helpers/changesets.ts";
import { ProtocolClient } from "../_helpers/protocol_client.ts";
import { startTestServer, type TestServer } from "../_helpers/test_server.ts";

const quiet = { logger: () => {} };

Deno.test("serveSync() without a way to log in is a TypeError", async (t) => {
  const cases: [string, Partial<ServeSyncOptions>][] = [
    ["no auth", {}],
    ["empty auth", { auth: {} }],
    ["anonymous off, no secret", { auth: { allowAnonymous: false } }],
    ["empty secret", { auth: { jwtSecret: "" } }],
  ];
  for (const [name, options] of cases) {
    await t.step(name, async () => {
      await assert.rejects(
        () =>
          serveSync(
            {
              port: 0,
              kv: ":memory:",
              ...quiet,
              ...options,
            } as ServeSyncOptions,
          ),
        TypeError,
      );
    });
  }
  await assert.rejects(
    () =>
      serveSync({
        port: 0,
        kv: ":memory:",
        auth: { allowAnonymous: true },
        limits: { maxConnections: 0 },
        ...quiet,
      }),
    new TypeError(
      "Cannot serve: limits.maxConnections must be an integer in [1, 9007199254740991], got 0",
    ),
  );
});

Deno.test("serveSync() rejects with the reason of an already aborted signal", async () => {
  const reason = new Error("stop");
  await assert.rejects(
    () =>
      serveSync({
        port: 0,
        kv: ":memory:",
        auth: { allowAnonymous: true },
        signal: AbortSignal.abort(reason),
        ...quiet,
      }),
    (error) => error === reason,
  );
});

Deno.test("aborting the signal shuts the server down", async () => {
  const controller = new AbortController();
  const records: string[] = [];
  const server = await serveSync({
    port: 0,
    kv: ":memory:",
    auth: { allowAnonymous: true },
    signal: controller.signal,
    logger: (record) => records.push(record.event),
  });
  controller.abort();
  await server.shutdown();
  assert.deepEqual(records, ["listening", "shutting_down", "stopped"]);
  await assert.rejects(() => fetch(`${server.url}/health`));
});

Deno.test("a Deno.Kv passed in stays open after shutdown", async () => {
  await using kv = await Deno.openKv(":memory:");
  const server = await serveSync({
    port: 0,
    kv,
    auth: { allowAnonymous: true },
    ...quiet,
  });
  await server.shutdown();
  await kv.set(["still", "open"], true);
  assert.equal((await kv.get(["still", "open"])).value, true);
});

async function uploadOne(
  test: TestServer,
  accessToken: string,
  path: string,
): Promise<{ identity: { id: number; salt: number } }> {
  await using client = await ProtocolClient.connect(test.url);
  await client.handshake(accessToken);
  const identity = (await client.bind(1, path))!;
  await client.expect(MessageType.Download);
  client.send({
    type: MessageType.Upload,
    sessionId: 1,
    changesets: [upload(1, [put("Task", "kept", { title: "survives" })])],
  });
  assert.equal(
    (await client.expect(MessageType.Download)).lastIntegratedClientVersion,
    1,
  );
  return { identity };
}

Deno.test("a restart on the same KV path keeps history, identities and tokens", async () => {
  const directory = await Deno.makeTempDir();
  try {
    const options = { kv: `${directory}/data/sync.kv` };
    let login;
    let identity;
    {
      await using first = await startTestServer(options);
      login = await first.login();
      ({ identity } = await uploadOne(first, login.accessToken, "/~/tasks"));
    }
    await using second = await startTestServer(options);
    // The access token was signed with the key kept in the store.
    await using client = await ProtocolClient.connect(second.url);
    await client.handshake(login.accessToken);
    client.send({
      type: MessageType.Bind,
      sessionId: 1,
      path: "/~/tasks",
      clientIdentity: identity,
      downloadCursor: 1,
      uploadCursor: 1,
    });
    const bound = await client.expect(MessageType.Download);
    assert.equal(bound.lastIntegratedClientVersion, 1);
    assert.equal(bound.serverVersion, 1);
    await client.bind(2, "/~/tasks");
    const fresh = await client.downloadUntil(2, 1);
    const changesets = fresh.flatMap((frame) =>
      frame.message.type === MessageType.Download
        ? frame.message.changesets
        : []
    );
    assert.deepEqual(
      changesets.flatMap((changeset) => changeset.instructions).map((
        instruction,
      ) => instruction.fields),
      [
        { title: "survives" },
      ],
    );
  } finally {
    await Deno.remove(directory, { recursive: true });
  }
});

Deno.test("a second process pointed at a served KV path is refused at start with a clear message", async () => {
  const directory = await Deno.makeTempDir();
  try {
    const kvPath = `${directory}/sync.kv`;
    const code = `
      import { serveSync } from ${
      JSON.stringify(new URL("../../server.ts", import.meta.url).href)
    };
      try {
        const server = await serveSync({ port: 0, kv: ${
      JSON.stringify(kvPath)
    }, auth: { allowAnonymous: true }, logger: () => {} });
        await server.shutdown();
        console.log("served");
      } catch (error) {
        console.error(error.name + ": " + error.message);
        Deno.exit(3);
      }
    `;
    const run = () =>
      new Deno.Command(Deno.execPath(), {
        args: ["eval", "--unstable-kv", code],
        stdout: "piped",
        stderr: "piped",
      }).output();
    {
      await using _held = await startTestServer({ kv: kvPath });
      const refused = await run();
      assert.equal(refused.code, 3);
      const message = new TextDecoder().decode(refused.stderr).trim();
      assert.equal(
        message,
        `KvLockedError: Cannot serve "${kvPath}": another server process holds it (lock file "${kvPath}.lock"). A local KV file is served by one process; to run several, share a KV Connect URL instead`,
      );
    }
    // Once the first server is gone, the path is free again.
    const after = await run();
    assert.equal(new TextDecoder().decode(after.stdout).trim(), "served");
    assert.equal(after.code, 0);
  } finally {
    await Deno.remove(directory, { recursive: true });
  }
});

Deno.test("two servers sharing one Deno.Kv stay consistent under concurrent uploads", async () => {
  await using kv = await Deno.openKv(":memory:");
  await using east = await startTestServer({ kv });
  await using west = await startTestServer({ kv });
  const login = await east.login();
  // Tokens from one process are accepted by the other: the key is shared.
  await using a = await ProtocolClient.connect(east.url);
  await a.handshake(login.accessToken);
  await using b = await ProtocolClient.connect(west.url);
  await b.handshake(login.accessToken);
  const identityA = (await a.bind(1, "/~/shared"))!;
  await a.expect(MessageType.Download);
  await b.bind(1, "/~/shared");
  await b.expect(MessageType.Download);

  const perClient = 25;
  for (let clientVersion = 1; clientVersion <= perClient; clientVersion++) {
    for (const [client, name] of [[a, "a"], [b, "b"]] as const) {
      client.send({
        type: MessageType.Upload,
        sessionId: 1,
        changesets: [
          upload(clientVersion, [
            put("Item", `${name}${clientVersion}`, { by: name }),
          ]),
        ],
      });
    }
  }
  const total = perClient * 2;
  const collect = async (client: ProtocolClient, other: string) => {
    const versions: number[] = [];
    let serverVersion = 0;
    let acknowledged = 0;
    const signal = AbortSignal.timeout(20_000);
    for (let step = 0; step < 1000; step++) {
      if (serverVersion === total && acknowledged === perClient) break;
      const message = await client.expect(MessageType.Download, signal);
      assert.ok(
        message.serverVersion >= serverVersion,
        "server versions never go back",
      );
      serverVersion = message.serverVersion;
      acknowledged = message.lastIntegratedClientVersion;
      for (const changeset of message.changesets) {
        assert.equal(changeset.instructions[0]!.fields!.by, other);
        versions.push(changeset.serverVersion);
      }
    }
    assert.equal(serverVersion, total);
    return versions;
  };
  const [fromB, fromA] = await Promise.all([collect(a, "b"), collect(b, "a")]);
  assert.equal(fromB.length, perClient, "a received every changeset of b");
  assert.equal(fromA.length, perClient, "b received every changeset of a");
  const all = [...fromA, ...fromB].sort((x, y) => x - y);
  assert.deepEqual(all, Array.from({ length: total }, (_, index) => index + 1));
  assert.equal(
    east.server.stats().changesetsIntegrated +
      west.server.stats().changesetsIntegrated,
    total,
  );

  // A re-upload through the other process is deduplicated there too.
  await using again = await ProtocolClient.connect(west.url);
  await again.handshake(login.accessToken);
  again.send({
    type: MessageType.Bind,
    sessionId: 1,
    path: "/~/shared",
    clientIdentity: identityA,
    downloadCursor: total,
    uploadCursor: 0,
  });
  assert.equal(
    (await again.expect(MessageType.Download)).lastIntegratedClientVersion,
    perClient,
  );
  again.send({
    type: MessageType.Upload,
    sessionId: 1,
    changesets: [
      upload(perClient, [put("Item", `a${perClient}`, { by: "a" })]),
    ],
  });
  assert.equal(
    (await again.expect(MessageType.Download)).lastIntegratedClientVersion,
    perClient,
  );
  assert.equal(
    east.server.stats().changesetsIntegrated +
      west.server.stats().changesetsIntegrated,
    total,
  );
});

Deno.test("transient KV errors are retried with backoff, not surfaced", async () => {
  await using kv = await Deno.openKv(":memory:");
  let failures = 0;
  // A store whose commits fail like a local file held by another handle.
  const flaky = new Proxy(kv, {
    get(target, property) {
      if (property === "atomic") {
        return () => {
          const operation = target.atomic();
          const wrapper: Deno.AtomicOperation = new Proxy(operation, {
            get(inner, name) {
              if (name === "commit" && failures > 0) {
                failures--;
                return () =>
                  Promise.reject(new TypeError("database is locked"));
              }
              const value = Reflect.get(inner, name);
              if (typeof value !== "function") return value;
              return (...args: unknown[]) => {
                const result = value.apply(inner, args);
                return result === inner ? wrapper : result;
              };
            },
          });
          return wrapper;
        };
      }
      const value = Reflect.get(target, property);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  await using test = await startTestServer({ kv: flaky });
  const login = await test.login();
  failures = 3;
  await uploadOne(test, login.accessToken, "/~/flaky");
  const retries = test.logs.filter((record) => record.event === "kv_retry");
  assert.equal(retries.length, 3);
  assert.equal((retries[0]!.error as Error).message, "database is locked");
  assert.equal(test.server.stats().changesetsIntegrated, 1);
});

Deno.test("a session whose storage keeps failing gets session_failed (try again); the server goes on", async () => {
  await using kv = await Deno.openKv(":memory:");
  let broken = false;
  const flaky = new Proxy(kv, {
    get(target, property) {
      const value = Reflect.get(target, property);
      if (property === "getMany" && typeof value === "function") {
        return (...args: unknown[]) =>
          broken
            ? Promise.reject(new Error("disk on fire"))
            : value.apply(target, args);
      }
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  await using test = await startTestServer({ kv: flaky });
  const login = await test.login();
  await using client = await ProtocolClient.connect(test.url);
  await client.handshake(login.accessToken);
  await client.bind(1, "/~/x");
  await client.expect(MessageType.Download);
  broken = true;
  client.send({
    type: MessageType.Upload,
    sessionId: 1,
    changesets: [upload(1, [put("T", "a", {})])],
  });
  const error = await client.expect(MessageType.Error);
  assert.equal(error.sessionId, 1);
  assert.equal(error.code, errorCodeNumber("session_failed"));
  assert.equal(error.tryAgain, true);
  broken = false;
  client.send({ type: MessageType.Ping, timestamp: 1 });
  await client.expect(MessageType.Pong);
});

Deno.test("a second process reaching a served KV file through a hard link or a symlink is refused at start", async () => {
  const directory = await Deno.makeTempDir();
  try {
    const kvPath = `${directory}/sync.kv`;
    const run = (path: string) =>
      new Deno.Command(Deno.execPath(), {
        args: [
          "eval",
          "--unstable-kv",
          `
          import { serveSync } from ${
            JSON.stringify(new URL("../../server.ts", import.meta.url).href)
          };
          try {
            const server = await serveSync({ port: 0, kv: ${
            JSON.stringify(path)
          }, auth: { allowAnonymous: true }, logger: () => {} });
            await server.shutdown();
            console.log("served");
          } catch (error) {
            console.error(error.name + ": " + error.message);
            Deno.exit(3);
          }
        `,
        ],
        stdout: "piped",
        stderr: "piped",
      }).output();
    {
      await using _held = await startTestServer({ kv: kvPath });
      await Deno.link(kvPath, `${directory}/hard.kv`);
      await Deno.symlink(kvPath, `${directory}/soft.kv`);
      for (const name of ["hard.kv", "soft.kv"]) {
        const linked = `${directory}/${name}`;
        const refused = await run(linked);
        assert.equal(refused.code, 3, name);
        assert.equal(
          new TextDecoder().decode(refused.stderr).trim(),
          `KvLockedError: Cannot serve "${linked}": another server process holds this file under another name (a hard link or a symlink to it). A local KV file is served by one process; to run several, share a KV Connect URL instead`,
        );
      }
    }
    // Once the first server is gone, the file is free under any name.
    const after = await run(`${directory}/hard.kv`);
    assert.equal(new TextDecoder().decode(after.stdout).trim(), "served");
    assert.equal(after.code, 0);
  } finally {
    await Deno.remove(directory, { recursive: true });
  }
});
