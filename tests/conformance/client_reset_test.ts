// Conformance: DESIGN.md "Client reset" (docs/CLIENT.md "Client reset",
// docs/SERVER.md "A client the server cannot continue") through the public
// API only: servers in this process on KV files that the test copies,
// wipes and restores, reached through a proxy that follows them.

import assert from "node:assert/strict";
import {
  type App,
  type ClientResetMode,
  type ClientResetResult,
  type ConnectionStateChange,
  Credentials,
  type LogRecord,
  type Realm,
  type RealmChange,
  SyncError,
  type WriteReceipt,
} from "../../mod.ts";
import type { ServeSyncOptions } from "../../server.ts";
import { fastApp, rejection } from "./_helpers.ts";
import { TcpProxy } from "../_helpers/tcp_proxy.ts";
import { startTestServer, type TestServer } from "../_helpers/test_server.ts";
import { epochSeconds, signUserJwt } from "../_helpers/user_jwt.ts";
import { bounded, Recorder } from "../_helpers/waits.ts";

const SECRET = "conformance-client-reset-secret";
/** Waits that span a server restart and a reset under load. */
const RESET_MS = 20_000;
const PATH = "/alice/todos";

/**
 * One server at a time on a KV file of a temporary directory, behind a
 * proxy whose address never changes: `restart` shuts the server down (the
 * store is then safe to copy) and starts another on the given store.
 */
class Stage implements AsyncDisposable {
  readonly dir: string;
  readonly proxy: TcpProxy;
  server: TestServer;

  private constructor(dir: string, proxy: TcpProxy, server: TestServer) {
    this.dir = dir;
    this.proxy = proxy;
    this.server = server;
  }

  /**
   * A server on `live.kv`; `empty.kv` is a copy of its store before any
   * client wrote (it holds the signing key, so tokens stay valid: a wiped
   * realm, not a new server).
   */
  static async open(): Promise<Stage> {
    const dir = await Deno.makeTempDir();
    const first = await startServer(`${dir}/live.kv`);
    await first.shutdown();
    await copyStore(`${dir}/live.kv`, `${dir}/empty.kv`);
    const server = await startServer(`${dir}/live.kv`);
    return new Stage(dir, new TcpProxy(server.addr), server);
  }

  get url(): string {
    return this.proxy.url;
  }

  /** Shuts the server down and copies its store to `name`. */
  async backup(name: string): Promise<void> {
    await this.server.shutdown();
    await copyStore(`${this.dir}/live.kv`, `${this.dir}/${name}`);
    await this.#start(`${this.dir}/live.kv`);
  }

  /**
   * Shuts the server down, runs `edit` on its stopped store, and starts a
   * server on a copy of `from` (a backup, `empty.kv`, or `live.kv` itself)
   * as the new live store.
   */
  async restart(
    from: string,
    options: Partial<ServeSyncOptions> = {},
    edit?: (kv: Deno.Kv) => Promise<void>,
  ): Promise<TestServer> {
    await this.server.shutdown();
    if (from !== "live.kv") {
      await copyStore(`${this.dir}/${from}`, `${this.dir}/live.kv`);
    }
    if (edit !== undefined) {
      const kv = await Deno.openKv(`${this.dir}/live.kv`);
      try {
        await edit(kv);
      } finally {
        kv.close();
      }
    }
    return await this.#start(`${this.dir}/live.kv`, options);
  }

  async #start(
    kvPath: string,
    options: Partial<ServeSyncOptions> = {},
  ): Promise<TestServer> {
    this.server = await startServer(kvPath, options);
    this.proxy.retarget(this.server.addr);
    // Connections still open to the old server's address are cut.
    this.proxy.dropAll();
    return this.server;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.proxy[Symbol.asyncDispose]();
    await this.server.shutdown();
    await Deno.remove(this.dir, { recursive: true });
  }
}

function startServer(
  kv: string,
  options: Partial<ServeSyncOptions> = {},
): Promise<TestServer> {
  return startTestServer({
    kv,
    auth: { jwtSecret: SECRET },
    shutdownTimeoutMs: 500,
    ...options,
  });
}

/** Copies a KV file with its write-ahead log, replacing `to`. */
async function copyStore(from: string, to: string): Promise<void> {
  for (const suffix of ["", "-wal", "-shm"]) {
    await Deno.remove(`${to}${suffix}`).catch(() => {});
    await Deno.copyFile(`${from}${suffix}`, `${to}${suffix}`).catch(
      (error) => {
        if (!(error instanceof Deno.errors.NotFound)) throw error;
      },
    );
  }
}

async function alice(): Promise<Credentials> {
  return Credentials.jwt(
    await signUserJwt(SECRET, { sub: "alice", exp: epochSeconds(3_600_000) }),
  );
}

/** What the reset hooks of a realm saw. */
interface HookLog {
  before: { ids: string[]; objects: unknown[] }[];
  after: { result: ClientResetResult; ids: string[] }[];
  /** With `probeWrite`, what a write in onBefore did. */
  writeInBefore: unknown[];
  probeWrite: boolean;
  done: PromiseWithResolvers<void>;
}

/** Opens alice's realm on `app` in `mode`, recording its hooks. */
async function openAlice(
  app: App,
  mode?: ClientResetMode,
  hookLog?: HookLog,
): Promise<Realm> {
  const user = await app.logIn(await alice());
  return await user.openRealm({
    path: "/~/todos",
    waitForDownload: true,
    signal: bounded(),
    clientReset: {
      ...(mode === undefined ? {} : { mode }),
      onBefore: async (realm) => {
        hookLog?.before.push({
          ids: ids(realm),
          objects: sorted(realm),
        });
        if (!hookLog?.probeWrite) return;
        // The realm is read-only here: a write must throw.
        try {
          await realm.write((tx) => tx.put("Task", "from-onBefore", {}));
          hookLog?.writeInBefore.push("the write was committed");
        } catch (error) {
          hookLog?.writeInBefore.push(error);
        }
      },
      onAfter: (realm, result) => {
        hookLog?.after.push({ result, ids: ids(realm) });
        hookLog?.done.resolve();
      },
    },
  });
}

function hookLog(probeWrite = false): HookLog {
  return {
    before: [],
    after: [],
    writeInBefore: [],
    probeWrite,
    done: Promise.withResolvers(),
  };
}

function ids(realm: Realm): string[] {
  return realm.objects("Task").map((o) => o.id).sort();
}

/** The realm's tasks by id, each as `{ id, ...fields }`. */
function sorted(realm: Realm): unknown[] {
  return realm.objects("Task").map((o) => ({ id: o.id, ...o.fields })).sort(
    (a, b) => a.id.localeCompare(b.id),
  );
}

function write(realm: Realm, id: string, fields: Record<string, unknown>) {
  return realm.write((tx) => tx.put("Task", id, fields as never));
}

async function uploaded(receipt: Promise<WriteReceipt>): Promise<void> {
  await (await receipt).waitForUpload({ signal: bounded(RESET_MS) });
}

/** The remote items of a changes() recording, each sorted by id. */
function remote(changes: Recorder<RealmChange>): RealmChange["changes"][] {
  return changes.items.filter((c) => c.origin === "remote").map((c) =>
    [...c.changes].sort((x, y) => x.id.localeCompare(y.id))
  );
}

function resetChange(
  states: Recorder<ConnectionStateChange>,
): Promise<ConnectionStateChange> {
  return states.until((c) => c.error?.code === "client_reset", {
    signal: bounded(RESET_MS),
  });
}

/** The realm as a client that bootstraps afresh sees it. */
async function freshView(url: string): Promise<unknown[]> {
  await using app = fastApp(url);
  await using realm = await openAlice(app);
  return sorted(realm);
}

/**
 * Each way the server can lose the client's history, from the same start:
 * alice's realm holds t1 (acknowledged) and, after `setUp`, the client is
 * paused with a pending t9 when `lose` restarts the server.
 */
interface Trigger {
  name: string;
  /** Runs while the client is online, after t1. */
  setUp: (stage: Stage, realm: Realm) => Promise<void>;
  /** Restarts the server on a store that cannot continue the history. */
  lose: (stage: Stage) => Promise<void>;
  /** The Task ids on the server after `lose`. */
  server: string[];
}

const TRIGGERS: Trigger[] = [
  {
    name: "restored from a backup older than the download cursor",
    setUp: async (stage, realm) => {
      await stage.backup("backup.kv");
      await uploaded(write(realm, "t2", { n: 2 }));
    },
    lose: async (stage) => {
      await stage.restart("backup.kv");
    },
    server: ["t1"],
  },
  {
    name: "data wiped",
    setUp: () => Promise.resolve(),
    lose: async (stage) => {
      await stage.restart("empty.kv");
    },
    server: [],
  },
  {
    name: "realm recreated under the same path",
    setUp: () => Promise.resolve(),
    lose: async (stage) => {
      // The realm's keys go (docs/SERVER.md "Storage"), the signing key
      // stays; then the realm is written anew under the same path.
      const server = await stage.restart("live.kv", {}, async (kv) => {
        const doomed = kv.list({ prefix: ["tether", "realm", PATH] });
        for await (const entry of doomed) await kv.delete(entry.key);
      });
      await server.realm(PATH).write((tx) => tx.put("Task", "r1", { n: 1 }));
    },
    server: ["r1"],
  },
  {
    name:
      "restored from a backup, then written past the client's download cursor (version salts differ)",
    setUp: async (stage, realm) => {
      await stage.backup("backup.kv");
      // Written by the backend, so the client's own upload cursor stays
      // within the backup.
      await stage.server.realm(PATH).write((tx) => tx.put("Task", "t2", {}));
      await stage.server.realm(PATH).write((tx) => tx.put("Task", "t3", {}));
      await realm.syncSession.waitForDownload({ signal: bounded(RESET_MS) });
      assert.deepEqual(ids(realm), ["t1", "t2", "t3"]);
    },
    lose: async (stage) => {
      const server = await stage.restart("backup.kv");
      for (const id of ["u1", "u2", "u3", "u4"]) {
        await server.realm(PATH).write((tx) => tx.put("Task", id, {}));
      }
    },
    server: ["t1", "u1", "u2", "u3", "u4"],
  },
];

Deno.test("clientReset: every way the server loses a client's history (restored from a backup, wiped, realm recreated, history rewritten past the cursor) resets the session instead of failing: a non-fatal client_reset on the state change leaving connecting/connected, hooks once each, the pending write recovered and uploaded, one remote change, stats().clientResets 1, the session active and equal to a fresh client", async () => {
  for (const trigger of TRIGGERS) {
    const context = `trigger: ${trigger.name}`;
    await using stage = await Stage.open();
    await using app = fastApp(stage.url);
    const hooks = hookLog();
    await using realm = await openAlice(app, "recover", hooks);
    await uploaded(write(realm, "t1", { n: 1 }));
    await trigger.setUp(stage, realm);
    const before = ids(realm);

    realm.syncSession.pause();
    const t9 = await write(realm, "t9", { n: 9 });
    await trigger.lose(stage);
    await using states = new Recorder(
      realm.syncSession.connectionStateChanges({ signal: bounded(RESET_MS) }),
    );
    await using changes = new Recorder(
      realm.changes({ signal: bounded(RESET_MS) }),
    );
    realm.syncSession.resume();

    const change = await resetChange(states);
    assert.ok(
      change.previous === "connecting" || change.previous === "connected",
      `${context}: ${JSON.stringify(change)}`,
    );
    assert.notEqual(change.current, change.previous, context);
    const error = change.error!;
    assert.ok(error instanceof SyncError, context);
    assert.equal(error.isFatal, false, context);
    assert.ok(error.cause instanceof SyncError, context);
    assert.equal(
      (error.cause as SyncError).code,
      "client_reset_required",
      context,
    );
    await t9.waitForUpload({ signal: bounded(RESET_MS) });
    await hooks.done.promise;
    const after = [...trigger.server, "t9"].sort();
    assert.deepEqual(
      hooks.before.map((b) => b.ids),
      [[...before, "t9"].sort()],
      context,
    );
    assert.deepEqual(hooks.after, [{
      result: { recovered: 1, discarded: 0 },
      ids: after,
    }], context);
    assert.deepEqual(ids(realm), after, context);
    assert.equal(realm.syncSession.stats().clientResets, 1, context);
    assert.equal(realm.syncSession.state, "active", context);
    assert.equal(realm.syncSession.error, undefined, context);
    // No other change of state carried an error.
    assert.deepEqual(
      states.items.filter((c) => c.error !== undefined).map((c) =>
        c.error!.code
      ),
      ["client_reset"],
      context,
    );

    // The reset's visible effect is one remote transaction: what the
    // client held and the server lost goes, what the server holds comes.
    const removed = before.filter((id) => !after.includes(id));
    const added = after.filter((id) => !before.includes(id) && id !== "t9");
    assert.deepEqual(
      remote(changes).map((items) => items.map((c) => `${c.op} ${c.id}`)),
      [[
        ...removed.map((id) => `delete ${id}`),
        ...added.map((id) => `put ${id}`),
      ].sort((x, y) => x.split(" ")[1]!.localeCompare(y.split(" ")[1]!))],
      context,
    );

    // Everyone agrees, and later writes go on syncing.
    await uploaded(write(realm, "t10", { n: 10 }));
    assert.deepEqual(await freshView(stage.url), sorted(realm), context);
    assert.equal(realm.syncSession.stats().clientResets, 1, context);
  }
});

Deno.test("clientReset recover: the unacknowledged write is re-applied with its original stamp, so last-writer-wins decides as if nothing had happened: a newer server-side write of one field wins, the local write of another field newer than the server's wins", async () => {
  await using stage = await Stage.open();
  await using app = fastApp(stage.url);
  await using realm = await openAlice(app, "recover");
  await uploaded(
    realm.write((tx) => tx.put("Task", "o", { x: "acked", y: "acked" })),
  );
  realm.syncSession.pause();
  const local = await realm.write((tx) =>
    tx.update("Task", "o", { x: "local", y: "local" })
  );
  // The wiped server's backend writes o an hour before the local write
  // (y) and an hour after it (x), by its clock.
  let offset = 0;
  const server = await stage.restart("empty.kv", {
    now: () => Date.now() + offset,
  });
  offset = -3_600_000;
  await server.realm(PATH).write((tx) =>
    tx.put("Task", "o", { x: "server-old", y: "server-old" })
  );
  offset = 3_600_000;
  await server.realm(PATH).write((tx) =>
    tx.update("Task", "o", { x: "server-new" })
  );
  offset = 0;
  await using changes = new Recorder(
    realm.changes({ signal: bounded(RESET_MS) }),
  );
  realm.syncSession.resume();

  await local.waitForUpload({ signal: bounded(RESET_MS) });
  assert.equal(realm.syncSession.stats().clientResets, 1);
  const expected = { x: "server-new", y: "local" };
  assert.deepEqual(realm.get("Task", "o"), expected);
  assert.deepEqual(await server.realm(PATH).get("Task", "o"), expected);
  assert.deepEqual(await freshView(stage.url), [{ id: "o", ...expected }]);
  // The server's put replaced the object: a put of all of it.
  assert.deepEqual(remote(changes), [[{
    type: "Task",
    id: "o",
    op: "put",
    fields: expected,
  }]]);
});

Deno.test("clientReset recoverAll after a restore from a backup: also re-uploads what the server lost or holds older (an updated field, a new object, a delete), keeps what the server holds newer, and onAfter counts the synthesized upload as one; recover in the same story re-uploads only the pending write", async () => {
  for (const mode of ["recoverAll", "recover"] as const) {
    await using stage = await Stage.open();
    await using app = fastApp(stage.url);
    const hooks = hookLog();
    await using realm = await openAlice(app, mode, hooks);
    await uploaded(realm.write((tx) => {
      tx.put("Task", "o", { a: 1, b: 1 });
      tx.put("Task", "d", { x: 1 });
    }));
    await stage.backup("backup.kv");
    // Acknowledged after the backup, so lost by the restore.
    await uploaded(realm.write((tx) => tx.update("Task", "o", { a: 2 })));
    await uploaded(realm.write((tx) => tx.delete("Task", "d")));
    await uploaded(write(realm, "n", { z: 1 }));
    realm.syncSession.pause();
    const pending = await write(realm, "p", { q: 1 });
    const server = await stage.restart("backup.kv");
    // Newer than the client's b.
    await server.realm(PATH).write((tx) => tx.update("Task", "o", { b: 5 }));
    await using changes = new Recorder(
      realm.changes({ signal: bounded(RESET_MS) }),
    );
    realm.syncSession.resume();

    await pending.waitForUpload({ signal: bounded(RESET_MS) });
    await hooks.done.promise;
    await realm.syncSession.waitForUpload({ signal: bounded(RESET_MS) });
    const expected = mode === "recoverAll"
      ? [
        { id: "n", z: 1 },
        { id: "o", a: 2, b: 5 },
        { id: "p", q: 1 },
      ]
      : [
        { id: "d", x: 1 },
        { id: "o", a: 1, b: 5 },
        { id: "p", q: 1 },
      ];
    assert.deepEqual(sorted(realm), expected, mode);
    assert.deepEqual(hooks.after, [{
      result: { recovered: mode === "recoverAll" ? 2 : 1, discarded: 0 },
      ids: expected.map((o) => o.id),
    }], mode);
    assert.deepEqual(
      remote(changes),
      [
        mode === "recoverAll"
          ? [{ type: "Task", id: "o", op: "update", fields: { b: 5 } }]
          : [
            { type: "Task", id: "d", op: "put", fields: { x: 1 } },
            { type: "Task", id: "n", op: "delete" },
            { type: "Task", id: "o", op: "update", fields: { a: 1, b: 5 } },
          ],
      ],
      mode,
    );
    assert.deepEqual(await freshView(stage.url), expected, mode);
  }
});

Deno.test("clientReset discard and manual with two pending writes: discard drops both (receipts reject with client_reset, onAfter counts 2, nothing pending, the session active); manual fails the session with client_reset_required, rejects both receipts and session waits with it, calls no hook and keeps the local data (a later write's receipt rejects with it too)", async () => {
  for (const mode of ["discard", "manual"] as const) {
    await using stage = await Stage.open();
    await using app = fastApp(stage.url);
    const hooks = hookLog();
    await using realm = await openAlice(app, mode, hooks);
    await uploaded(write(realm, "t1", { n: 1 }));
    realm.syncSession.pause();
    const p1 = await write(realm, "p1", {});
    const p2 = await write(realm, "p2", {});
    const server = await stage.restart("empty.kv");
    await server.realm(PATH).write((tx) => tx.put("Task", "s1", {}));
    await using states = new Recorder(
      realm.syncSession.connectionStateChanges({ signal: bounded(RESET_MS) }),
    );
    await using changes = new Recorder(
      realm.changes({ signal: bounded(RESET_MS) }),
    );
    realm.syncSession.resume();

    const errors = [
      await rejection(p1.waitForUpload({ signal: bounded(RESET_MS) })),
      await rejection(p2.waitForUpload({ signal: bounded(RESET_MS) })),
    ];
    if (mode === "discard") {
      for (const error of errors) {
        assert.equal(error.code, "client_reset");
        assert.equal(error.isFatal, false);
      }
      await hooks.done.promise;
      assert.deepEqual(hooks.after, [{
        result: { recovered: 0, discarded: 2 },
        ids: ["s1"],
      }]);
      assert.deepEqual(realm.pendingWrites(), []);
      assert.equal(realm.syncSession.stats().pendingUploadChangesets, 0);
      await realm.syncSession.waitForUpload({ signal: bounded(RESET_MS) });
      assert.deepEqual(ids(realm), ["s1"]);
      assert.deepEqual(remote(changes), [[
        { type: "Task", id: "p1", op: "delete" },
        { type: "Task", id: "p2", op: "delete" },
        { type: "Task", id: "s1", op: "put", fields: {} },
        { type: "Task", id: "t1", op: "delete" },
      ]]);
      assert.equal(realm.syncSession.state, "active");
      assert.equal(realm.syncSession.stats().clientResets, 1);
      // The receipts keep their answer; later writes sync.
      assert.equal(
        (await rejection(p1.waitForUpload({ signal: bounded() }))).code,
        "client_reset",
      );
      await uploaded(write(realm, "t2", {}));
      assert.deepEqual(await freshView(stage.url), sorted(realm));
    } else {
      for (const error of errors) {
        assert.equal(error.code, "client_reset_required");
        assert.equal(error.isFatal, true);
      }
      await states.finished(bounded(RESET_MS));
      assert.equal(states.outcome?.kind, "error");
      assert.equal(realm.syncSession.state, "error");
      assert.equal(realm.syncSession.error?.code, "client_reset_required");
      assert.equal(
        (await rejection(
          realm.syncSession.waitForDownload({ signal: bounded() }),
        )).code,
        "client_reset_required",
      );
      assert.deepEqual(hooks.before, []);
      assert.deepEqual(hooks.after, []);
      assert.deepEqual(ids(realm), ["p1", "p2", "t1"]);
      assert.deepEqual(remote(changes), []);
      assert.equal(realm.syncSession.stats().clientResets, 0);
      assert.equal(await server.realm(PATH).get("Task", "p1"), undefined);
      // A write after the failure stays local and its receipt says why.
      const late = await write(realm, "p3", {});
      assert.equal(
        (await rejection(late.waitForUpload({ signal: bounded() }))).code,
        "client_reset_required",
      );
      assert.deepEqual(ids(realm), ["p1", "p2", "p3", "t1"]);
    }
  }
});

Deno.test("clientReset hooks: onBefore gets the realm as it was, read-only (a write in it throws and commits nothing), onAfter the realm as it is; a hook that throws is logged and the reset goes on; a second reset counts again", async () => {
  await using stage = await Stage.open();
  const logs: LogRecord[] = [];
  await using app = fastApp(stage.url, { logger: (r) => logs.push(r) });
  const hooks = hookLog(true);
  let throwing = false;
  const user = await app.logIn(await alice());
  await using realm = await user.openRealm({
    path: "/~/todos",
    waitForDownload: true,
    signal: bounded(),
    clientReset: {
      onBefore: async (realm) => {
        hooks.before.push({ ids: ids(realm), objects: sorted(realm) });
        try {
          await realm.write((tx) => tx.put("Task", "from-onBefore", {}));
          hooks.writeInBefore.push("the write was committed");
        } catch (error) {
          hooks.writeInBefore.push(error);
        }
        if (throwing) throw new Error("onBefore failed on purpose");
      },
      onAfter: (realm, result) => {
        hooks.after.push({ result, ids: ids(realm) });
        hooks.done.resolve();
        if (throwing) throw new Error("onAfter failed on purpose");
      },
    },
  });
  await uploaded(write(realm, "t1", {}));
  realm.syncSession.pause();
  const p1 = await write(realm, "p1", { v: 1 });
  await stage.restart("empty.kv");
  realm.syncSession.resume();
  await p1.waitForUpload({ signal: bounded(RESET_MS) });
  await hooks.done.promise;
  assert.deepEqual(hooks.before, [{
    ids: ["p1", "t1"],
    objects: [{ id: "p1", v: 1 }, { id: "t1" }],
  }]);
  assert.equal(hooks.writeInBefore.length, 1);
  assert.ok(
    hooks.writeInBefore[0] instanceof TypeError,
    `a write in onBefore: ${hooks.writeInBefore[0]}`,
  );
  assert.deepEqual(hooks.after, [{
    result: { recovered: 1, discarded: 0 },
    ids: ["p1"],
  }]);
  await realm.syncSession.waitForUpload({ signal: bounded(RESET_MS) });
  assert.deepEqual(ids(realm), ["p1"]);
  assert.equal(
    await stage.server.realm(PATH).get("Task", "from-onBefore"),
    undefined,
  );
  // Writes outside the hook go on (the app's own handle is not read-only).
  await uploaded(write(realm, "t2", {}));

  // A second reset, with hooks that throw: logged, and the reset goes on.
  throwing = true;
  hooks.done = Promise.withResolvers();
  realm.syncSession.pause();
  const p2 = await write(realm, "p2", {});
  await stage.restart("empty.kv");
  realm.syncSession.resume();
  await p2.waitForUpload({ signal: bounded(RESET_MS) });
  await hooks.done.promise;
  await realm.syncSession.waitForUpload({ signal: bounded(RESET_MS) });
  assert.equal(realm.syncSession.stats().clientResets, 2);
  assert.equal(hooks.after.length, 2);
  assert.deepEqual(hooks.after[1]!.result, { recovered: 1, discarded: 0 });
  assert.deepEqual(ids(realm), ["p2"]);
  assert.equal(realm.syncSession.state, "active");
  for (const hook of ["onBefore", "onAfter"]) {
    assert.ok(
      logs.some((r) =>
        (r.level === "error" || r.level === "warn") &&
        r.message.includes(`${hook} failed on purpose`)
      ),
      `${hook}'s throw is logged: ${JSON.stringify(logs.map((r) => r.event))}`,
    );
  }
});

Deno.test("clientReset recover: a write made while the reset is under way (from onBefore, through the app's own handle) is part of the recovery: uploaded under the new identity, its receipt resolves, onAfter counts it, and client versions go on upward; onAfter's realm writes", async () => {
  await using stage = await Stage.open();
  await using app = fastApp(stage.url);
  const user = await app.logIn(await alice());
  const after: ClientResetResult[] = [];
  const during: Promise<WriteReceipt>[] = [];
  const fromOnAfter: Promise<WriteReceipt>[] = [];
  const realm: Realm = await user.openRealm({
    path: "/~/todos",
    waitForDownload: true,
    signal: bounded(),
    clientReset: {
      onBefore: () => {
        during.push(write(realm, "during", { n: 2 }));
      },
      onAfter: (hookRealm, result) => {
        after.push(result);
        // Unlike onBefore's, this realm writes.
        fromOnAfter.push(write(hookRealm, "after", { n: 3 }));
      },
    },
  });
  await using _realm = realm;
  await uploaded(write(realm, "t1", {}));
  realm.syncSession.pause();
  const p1 = await write(realm, "p1", { n: 1 });
  await stage.restart("empty.kv");
  realm.syncSession.resume();
  await p1.waitForUpload({ signal: bounded(RESET_MS) });
  assert.equal(during.length, 1);
  const duringReceipt = await during[0]!;
  await duringReceipt.waitForUpload({ signal: bounded(RESET_MS) });
  assert.ok(duringReceipt.clientVersion > p1.clientVersion);
  assert.deepEqual(after, [{ recovered: 2, discarded: 0 }]);
  assert.equal(fromOnAfter.length, 1);
  await uploaded(fromOnAfter[0]!);
  assert.deepEqual(ids(realm), ["after", "during", "p1"]);
  const next = await write(realm, "t2", {});
  assert.ok(next.clientVersion > duringReceipt.clientVersion);
  await next.waitForUpload({ signal: bounded(RESET_MS) });
  assert.deepEqual(await freshView(stage.url), sorted(realm));
});

Deno.test("clientReset: closing the realm while onBefore runs ends the reset: close() resolves, the pending receipt rejects with session_closed, onAfter is not called and nothing is left running", async () => {
  await using stage = await Stage.open();
  await using app = fastApp(stage.url);
  const user = await app.logIn(await alice());
  const gate = Promise.withResolvers<void>();
  const entered = Promise.withResolvers<void>();
  let afterCalls = 0;
  const realm = await user.openRealm({
    path: "/~/todos",
    waitForDownload: true,
    signal: bounded(),
    clientReset: {
      onBefore: async () => {
        entered.resolve();
        await gate.promise;
      },
      onAfter: () => {
        afterCalls++;
      },
    },
  });
  await uploaded(write(realm, "t1", {}));
  realm.syncSession.pause();
  const p1 = await write(realm, "p1", {});
  await stage.restart("empty.kv");
  realm.syncSession.resume();
  await entered.promise;
  const waiting = p1.waitForUpload({ signal: bounded(RESET_MS) });
  await realm.close();
  gate.resolve();
  assert.equal((await rejection(waiting)).code, "session_closed");
  assert.equal(afterCalls, 0);
  // The app goes on: the realm opens again and syncs.
  await using again = await openAlice(app);
  await uploaded(write(again, "t2", {}));
});

Deno.test("openRealm({ clientReset }) with a bad option throws a TypeError naming it and opens nothing; the same user opens the realm afterwards", async () => {
  await using stage = await Stage.open();
  await using app = fastApp(stage.url);
  const user = await app.logIn(await alice());
  const bad: [unknown, string][] = [
    ["recover", "clientReset"],
    [null, "clientReset"],
    [{ mode: "recoverall" }, "clientReset.mode"],
    [{ mode: 1 }, "clientReset.mode"],
    [{ onBefore: "log" }, "clientReset.onBefore"],
    [{ onAfter: {} }, "clientReset.onAfter"],
  ];
  for (const [clientReset, named] of bad) {
    await assert.rejects(
      user.openRealm({
        path: "/~/todos",
        clientReset: clientReset as never,
      }),
      (error) => error instanceof TypeError && error.message.includes(named),
      JSON.stringify(clientReset),
    );
  }
  await using realm = await openAlice(app, "discard");
  await uploaded(write(realm, "t1", {}));
});

Deno.test("clientReset recover, then the new server refuses one recovered write (validateChangeset): that receipt rejects with write_rejected and the write is reverted, the other recovered write is stored, the session stays active", async () => {
  await using stage = await Stage.open();
  await using app = fastApp(stage.url);
  const hooks = hookLog();
  await using realm = await openAlice(app, "recover", hooks);
  await uploaded(write(realm, "t1", {}));
  realm.syncSession.pause();
  const refused = await write(realm, "p1", { title: "no" });
  const taken = await write(realm, "p2", { title: "ok" });
  const server = await stage.restart("empty.kv", {
    validateChangeset: ({ changes }) =>
      changes.every((c) => c.fields?.title !== "no"),
  });
  realm.syncSession.resume();
  const error = await rejection(
    refused.waitForUpload({ signal: bounded(RESET_MS) }),
  );
  assert.equal(error.code, "write_rejected");
  assert.equal((error.cause as SyncError).code, "validation_failed");
  await taken.waitForUpload({ signal: bounded(RESET_MS) });
  await hooks.done.promise;
  await realm.syncSession.waitForUpload({ signal: bounded(RESET_MS) });
  assert.deepEqual(hooks.after[0]!.result, { recovered: 2, discarded: 0 });
  assert.deepEqual(sorted(realm), [{ id: "p2", title: "ok" }]);
  assert.equal(await server.realm(PATH).get("Task", "p1"), undefined);
  assert.equal(realm.syncSession.state, "active");
  assert.equal(realm.syncSession.stats().clientResets, 1);
  assert.deepEqual(await freshView(stage.url), sorted(realm));
});

Deno.test("clientReset with durable storage: an app closed in the middle of a reset resets again when the realm reopens, and the pending write (a receipt from pendingWrites()) is recovered", async () => {
  await using stage = await Stage.open();
  const kvPath = `${stage.dir}/client.kv`;
  const entered = Promise.withResolvers<void>();
  const gate = Promise.withResolvers<void>();
  {
    await using app = fastApp(stage.url);
    const user = await app.logIn(await alice());
    const realm = await user.openRealm({
      path: "/~/todos",
      storage: { kvPath },
      waitForDownload: true,
      signal: bounded(),
      clientReset: {
        onBefore: async () => {
          entered.resolve();
          await gate.promise;
        },
      },
    });
    await uploaded(write(realm, "t1", {}));
    realm.syncSession.pause();
    await write(realm, "p1", { n: 1 });
    await stage.restart("empty.kv");
    realm.syncSession.resume();
    await entered.promise;
    const closing = app.close();
    gate.resolve();
    await closing;
  }
  await using app = fastApp(stage.url);
  const after: ClientResetResult[] = [];
  const user = await app.logIn(await alice());
  await using realm = await user.openRealm({
    path: "/~/todos",
    storage: { kvPath },
    signal: bounded(),
    clientReset: { onAfter: (_realm, result) => void after.push(result) },
  });
  assert.deepEqual(ids(realm), ["p1", "t1"]);
  const pending = realm.pendingWrites();
  assert.equal(pending.length, 1);
  await pending[0]!.waitForUpload({ signal: bounded(RESET_MS) });
  assert.deepEqual(after, [{ recovered: 1, discarded: 0 }]);
  assert.equal(realm.syncSession.stats().clientResets, 1);
  assert.deepEqual(sorted(realm), [{ id: "p1", n: 1 }]);
  assert.deepEqual(await freshView(stage.url), sorted(realm));
});

Deno.test("clientReset: waits for the download span the reset — session.waitForDownload() called as the session resumes, and openRealm({ waitForDownload }) of a durable realm the server lost, resolve with the server's state in place", async () => {
  await using stage = await Stage.open();
  const kvPath = `${stage.dir}/client.kv`;
  {
    await using app = fastApp(stage.url);
    await using realm = await openAlice(app);
    await uploaded(write(realm, "t1", {}));
    realm.syncSession.pause();
    const server = await stage.restart("empty.kv");
    await server.realm(PATH).write((tx) => tx.put("Task", "s1", {}));
    realm.syncSession.resume();
    await realm.syncSession.waitForDownload({ signal: bounded(RESET_MS) });
    assert.deepEqual(ids(realm), ["s1"]);
    assert.equal(realm.syncSession.stats().clientResets, 1);
  }
  {
    await using app = fastApp(stage.url);
    const user = await app.logIn(await alice());
    await using realm = await user.openRealm({
      path: "/~/todos",
      storage: { kvPath },
      waitForDownload: true,
      signal: bounded(),
    });
    await uploaded(write(realm, "t2", {}));
  }
  const server = await stage.restart("empty.kv");
  await server.realm(PATH).write((tx) => tx.put("Task", "s2", {}));
  await using app = fastApp(stage.url);
  const user = await app.logIn(await alice());
  await using realm = await user.openRealm({
    path: "/~/todos",
    storage: { kvPath },
    waitForDownload: true,
    signal: bounded(RESET_MS),
  });
  assert.deepEqual(ids(realm), ["s2"]);
  assert.equal(realm.syncSession.stats().clientResets, 1);
});

Deno.test("clientReset recoverAll, two writers after a restore: each gives back what the server lost with the original stamps, so the later of two acknowledged writes of one field wins whichever client comes back first, nothing acknowledged is lost, and what the server already holds at the same stamp is not uploaded again", async () => {
  for (const first of ["A", "B"] as const) {
    const context = `${first} comes back first`;
    await using stage = await Stage.open();
    await using appA = fastApp(stage.url);
    await using appB = fastApp(stage.url);
    const hooks = { A: hookLog(), B: hookLog() };
    await using a = await openAlice(appA, "recoverAll", hooks.A);
    await using b = await openAlice(appB, "recoverAll", hooks.B);
    await uploaded(a.write((tx) => tx.put("Task", "o", { f: "base" })));
    await b.syncSession.waitForDownload({ signal: bounded() });
    await stage.backup("backup.kv");
    // Acknowledged, then lost: A's write, which B sees, then B's (newer),
    // which A does not see.
    await uploaded(a.write((tx) => tx.update("Task", "o", { f: "a" })));
    await uploaded(write(a, "onlyA", {}));
    await b.syncSession.waitForDownload({ signal: bounded(RESET_MS) });
    assert.deepEqual(ids(b), ["o", "onlyA"], context);
    a.syncSession.pause();
    await uploaded(b.write((tx) => tx.update("Task", "o", { f: "b" })));
    await uploaded(write(b, "onlyB", {}));
    b.syncSession.pause();
    await stage.restart("backup.kv");
    const order = first === "A" ? [a, b] : [b, a];
    for (const realm of order) {
      realm.syncSession.resume();
      await (realm === a ? hooks.A : hooks.B).done.promise;
      await realm.syncSession.waitForUpload({ signal: bounded(RESET_MS) });
    }
    await a.syncSession.waitForDownload({ signal: bounded(RESET_MS) });
    await b.syncSession.waitForDownload({ signal: bounded(RESET_MS) });
    const expected = [
      { id: "o", f: "b" },
      { id: "onlyA" },
      { id: "onlyB" },
    ];
    assert.deepEqual(sorted(a), expected, context);
    assert.deepEqual(sorted(b), expected, context);
    assert.deepEqual(await freshView(stage.url), expected, context);
    // B holds everything A acknowledged: coming back second, A has nothing
    // the server lacks or holds older.
    assert.deepEqual(
      [hooks.A.after[0]!.result, hooks.B.after[0]!.result],
      [
        { recovered: first === "A" ? 1 : 0, discarded: 0 },
        { recovered: 1, discarded: 0 },
      ],
      context,
    );
  }
});
