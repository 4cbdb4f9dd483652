// Client reset with real processes (docs/CLIENT.md "Client reset"): a server
// in a child process on a KV file, a copy of that file taken while it is
// down, more writes, the server killed with SIGKILL and restarted on the
// older copy (or on a wiped store), and clients in each mode reconnecting.

import assert from "node:assert/strict";
import {
  type ClientResetMode,
  type ClientResetResult,
  type ConnectionStateChange,
  type Realm,
  type RealmChange,
  SyncError,
} from "../../mod.ts";
import { fastApp } from "../conformance/_helpers.ts";
import {
  alice,
  copyStore,
  RESTART_MS,
  ServerProcess,
} from "./_reset_process.ts";
import { bounded, Recorder } from "../_helpers/waits.ts";

interface Hooks {
  before: { t3: unknown; count: number }[];
  after: { result: ClientResetResult; t2: unknown; t3: unknown }[];
  done: PromiseWithResolvers<void>;
}

/**
 * The story every test tells, up to the restart on the older store:
 * A (in `mode`) and B (default mode) write t1 and sync; the store is copied
 * (`backup`), or an empty store of the same server is kept (`wiped`); A
 * writes t2, acknowledged; the server is killed; A writes t3, which stays
 * pending (A is paused, so it comes back after B); the server restarts on
 * the older store and B resets before A resumes.
 */
async function story(
  stack: AsyncDisposableStack,
  mode: ClientResetMode,
  restore: "backup" | "wiped",
  storageA: { kvPath: string } | "memory" = "memory",
) {
  const dir = await Deno.makeTempDir();
  stack.defer(() => Deno.remove(dir, { recursive: true }));
  const live = `${dir}/live`;
  await Deno.mkdir(live);
  // The server's signing key is in its store: a store taken before any
  // client wrote is the "wiped" one, and keeps tokens valid.
  let server = await ServerProcess.start(`${live}/sync.kv`, 0);
  const port = server.port;
  await server.kill();
  await copyStore(live, `${dir}/empty`);
  server = await ServerProcess.start(`${live}/sync.kv`, port);
  stack.defer(() => server.kill());

  const url = `http://127.0.0.1:${port}`;
  const appA = stack.use(fastApp(url));
  const appB = stack.use(fastApp(url));
  const hooks: Hooks = { before: [], after: [], done: Promise.withResolvers() };
  const a = await (await appA.logIn(await alice())).openRealm({
    path: "/~/todos",
    storage: storageA,
    waitForDownload: true,
    signal: bounded(),
    clientReset: {
      mode,
      onBefore: (realm: Realm) => {
        hooks.before.push({
          t3: realm.get("Task", "t3"),
          count: realm.objects("Task").length,
        });
      },
      onAfter: (realm: Realm, result: ClientResetResult) => {
        hooks.after.push({
          result,
          t2: realm.get("Task", "t2"),
          t3: realm.get("Task", "t3"),
        });
        hooks.done.resolve();
      },
    },
  });
  const b = await (await appB.logIn(await alice())).openRealm({
    path: "/~/todos",
    waitForDownload: true,
    signal: bounded(),
  });
  await (await a.write((tx) => tx.put("Task", "t1", { n: 1 })))
    .waitForUpload({ signal: bounded() });
  await b.syncSession.waitForDownload({ signal: bounded() });
  assert.deepEqual(b.get("Task", "t1"), { n: 1 });

  await server.kill();
  await copyStore(live, `${dir}/backup`);
  server = await ServerProcess.start(`${live}/sync.kv`, port);
  await (await a.write((tx) => tx.put("Task", "t2", { n: 2 })))
    .waitForUpload({ signal: bounded(RESTART_MS) });
  await b.syncSession.waitForDownload({ signal: bounded(RESTART_MS) });
  assert.deepEqual(b.get("Task", "t2"), { n: 2 });

  // A comes back only once B has reset, so each test sees B reset by its
  // cursor being ahead; B coming back after A's recovered uploads passed
  // its cursor is restore_continuity_test.ts (the version salt check).
  a.syncSession.pause();
  await server.kill();
  const states = new Recorder(
    a.syncSession.connectionStateChanges({ signal: bounded(RESTART_MS) }),
  );
  stack.use(states);
  const t3 = await a.write((tx) => tx.put("Task", "t3", { n: 3 }));
  const changes = new Recorder(a.changes({ signal: bounded(RESTART_MS) }));
  stack.use(changes);
  assert.equal(a.syncSession.stats().clientResets, 0);
  await copyStore(
    `${dir}/${restore === "backup" ? "backup" : "empty"}`,
    `${dir}/restored`,
  );
  server = await ServerProcess.start(`${dir}/restored/sync.kv`, port);
  await using bStates = new Recorder(
    b.syncSession.connectionStateChanges({ signal: bounded(RESTART_MS) }),
  );
  await resetChange(bStates);
  await b.syncSession.waitForDownload({ signal: bounded(RESTART_MS) });
  assert.equal(b.syncSession.stats().clientResets, 1);
  a.syncSession.resume();
  return { a, b, t3, hooks, states, changes, appA, url };
}

function resetChange(states: Recorder<ConnectionStateChange>) {
  return states.until(
    (c) => c.error?.code === "client_reset",
    { signal: bounded(RESTART_MS) },
  );
}

function remote(changes: Recorder<RealmChange>): RealmChange[] {
  return changes.items.filter((c) => c.origin === "remote");
}

function ids(realm: Realm): string[] {
  return realm.objects("Task").map((o) => o.id).sort();
}

Deno.test("client reset recover (server restored from a backup): the unacknowledged write is re-applied and uploaded under a new identity, its receipt resolves; the acknowledged write the server lost is gone; one remote change; a second client converges", async () => {
  await using stack = new AsyncDisposableStack();
  const { a, b, t3, hooks, states, changes } = await story(
    stack,
    "recover",
    "backup",
  );
  const change = await resetChange(states);
  assert.ok(
    change.previous === "connecting" || change.previous === "connected",
  );
  assert.equal(change.current, "disconnected");
  assert.ok(change.error instanceof SyncError);
  assert.equal(change.error.isFatal, false);
  await hooks.done.promise;
  await t3.waitForUpload({ signal: bounded(RESTART_MS) });
  assert.equal(a.syncSession.stats().clientResets, 1);
  assert.deepEqual(hooks.before, [{ t3: { n: 3 }, count: 3 }]);
  assert.deepEqual(hooks.after, [{
    result: { recovered: 1, discarded: 0 },
    t2: undefined,
    t3: { n: 3 },
  }]);
  assert.deepEqual(ids(a), ["t1", "t3"]);
  const reset = remote(changes);
  assert.equal(reset.length, 1, JSON.stringify(changes.items));
  assert.deepEqual(reset[0]!.changes, [{
    type: "Task",
    id: "t2",
    op: "delete",
  }]);
  assert.equal(a.syncSession.state, "active");
  await b.syncSession.waitForDownload({ signal: bounded(RESTART_MS) });
  assert.deepEqual(b.objects("Task"), a.objects("Task"));
  // Later writes go on syncing under the new identity.
  await (await a.write((tx) => tx.put("Task", "t4", { n: 4 })))
    .waitForUpload({ signal: bounded() });
  await b.syncSession.waitForDownload({ signal: bounded() });
  assert.deepEqual(ids(b), ["t1", "t3", "t4"]);
});

Deno.test("client reset recoverAll (server restored from a backup): also uploads what the server lost, so every replica has t1, t2 and t3; onAfter counts the synthesized upload", async () => {
  await using stack = new AsyncDisposableStack();
  const { a, b, t3, hooks, states, changes } = await story(
    stack,
    "recoverAll",
    "backup",
  );
  await resetChange(states);
  await hooks.done.promise;
  await t3.waitForUpload({ signal: bounded(RESTART_MS) });
  await a.syncSession.waitForUpload({ signal: bounded(RESTART_MS) });
  assert.equal(a.syncSession.stats().clientResets, 1);
  assert.deepEqual(hooks.after, [{
    result: { recovered: 2, discarded: 0 },
    t2: { n: 2 },
    t3: { n: 3 },
  }]);
  assert.deepEqual(ids(a), ["t1", "t2", "t3"]);
  // Nothing visible changed for A: no remote transaction from the reset.
  assert.equal(remote(changes).length, 0, JSON.stringify(changes.items));
  await b.syncSession.waitForDownload({ signal: bounded(RESTART_MS) });
  assert.deepEqual(b.objects("Task"), a.objects("Task"));
  assert.deepEqual(ids(b), ["t1", "t2", "t3"]);
});

Deno.test("client reset discard (server restored from a backup): local changes are dropped, the pending receipt rejects with client_reset, session.waitForUpload() resolves", async () => {
  await using stack = new AsyncDisposableStack();
  const { a, b, t3, hooks, states, changes } = await story(
    stack,
    "discard",
    "backup",
  );
  await resetChange(states);
  await hooks.done.promise;
  const error = await t3.waitForUpload({ signal: bounded() }).then(
    () => assert.fail("the dropped write's receipt resolved"),
    (error: unknown) => error,
  );
  assert.ok(error instanceof SyncError);
  assert.equal(error.code, "client_reset");
  await a.syncSession.waitForUpload({ signal: bounded() });
  assert.deepEqual(hooks.after, [{
    result: { recovered: 0, discarded: 1 },
    t2: undefined,
    t3: undefined,
  }]);
  assert.deepEqual(ids(a), ["t1"]);
  const reset = remote(changes);
  assert.equal(reset.length, 1, JSON.stringify(changes.items));
  assert.deepEqual(
    [...reset[0]!.changes].sort((x, y) => x.id.localeCompare(y.id)),
    [
      { type: "Task", id: "t2", op: "delete" },
      { type: "Task", id: "t3", op: "delete" },
    ],
  );
  assert.equal(a.syncSession.state, "active");
  await b.syncSession.waitForDownload({ signal: bounded(RESTART_MS) });
  assert.deepEqual(ids(b), ["t1"]);
});

Deno.test("client reset manual (server restored from a backup): the session goes to error with client_reset_required, the pending receipt rejects with it, the hooks are not called, the local data stays", async () => {
  await using stack = new AsyncDisposableStack();
  const { a, t3, hooks, states } = await story(stack, "manual", "backup");
  // The state stream errors with the session's fatal error.
  await states.finished(bounded(RESTART_MS));
  assert.equal(states.outcome?.kind, "error");
  const error = await t3.waitForUpload({ signal: bounded() }).then(
    () => assert.fail("the receipt resolved"),
    (error: unknown) => error,
  );
  assert.ok(error instanceof SyncError);
  assert.equal(error.code, "client_reset_required");
  assert.equal(error.isFatal, true);
  assert.equal(a.syncSession.state, "error");
  assert.equal(a.syncSession.error?.code, "client_reset_required");
  assert.deepEqual(hooks.before, []);
  assert.deepEqual(hooks.after, []);
  assert.deepEqual(ids(a), ["t1", "t2", "t3"]);
  assert.equal(a.syncSession.stats().clientResets, 0);
});

Deno.test("client reset after a wiped store: recoverAll puts everything back on the server and a second client (recover) converges; recover alone re-uploads only the pending write", async () => {
  await using stack = new AsyncDisposableStack();
  const { a, b, t3, hooks, states } = await story(stack, "recoverAll", "wiped");
  await resetChange(states);
  await hooks.done.promise;
  await t3.waitForUpload({ signal: bounded(RESTART_MS) });
  await a.syncSession.waitForUpload({ signal: bounded(RESTART_MS) });
  assert.deepEqual(hooks.after[0]!.result, { recovered: 2, discarded: 0 });
  assert.deepEqual(ids(a), ["t1", "t2", "t3"]);
  await b.syncSession.waitForDownload({ signal: bounded(RESTART_MS) });
  assert.equal(b.syncSession.stats().clientResets, 1);
  assert.deepEqual(b.objects("Task"), a.objects("Task"));

  await using stack2 = new AsyncDisposableStack();
  const second = await story(stack2, "recover", "wiped");
  await second.hooks.done.promise;
  await second.t3.waitForUpload({ signal: bounded(RESTART_MS) });
  assert.deepEqual(second.hooks.after[0]!.result, {
    recovered: 1,
    discarded: 0,
  });
  assert.deepEqual(ids(second.a), ["t3"]);
  await second.b.syncSession.waitForDownload({ signal: bounded(RESTART_MS) });
  assert.deepEqual(ids(second.b), ["t3"]);
});

Deno.test("client reset with durable storage: a realm reopened after a reset binds under its new identity without resetting again", async () => {
  await using stack = new AsyncDisposableStack();
  const kvDir = await Deno.makeTempDir();
  stack.defer(() => Deno.remove(kvDir, { recursive: true }));
  const kvPath = `${kvDir}/client.kv`;
  const { a, hooks, states, appA, url } = await story(
    stack,
    "discard",
    "backup",
    { kvPath },
  );
  await resetChange(states);
  await hooks.done.promise;
  await a.syncSession.waitForDownload({ signal: bounded() });
  assert.deepEqual(ids(a), ["t1"]);
  await appA.close();

  await using again = fastApp(url);
  const realm = await (await again.logIn(await alice())).openRealm({
    path: "/~/todos",
    storage: { kvPath },
    waitForDownload: true,
    signal: bounded(),
  });
  await using reopenedStates = new Recorder(
    realm.syncSession.connectionStateChanges({ signal: bounded() }),
  );
  await (await realm.write((tx) => tx.put("Task", "t5", { n: 5 })))
    .waitForUpload({ signal: bounded() });
  assert.equal(realm.syncSession.stats().clientResets, 0);
  assert.deepEqual(
    reopenedStates.items.filter((c) => c.error !== undefined),
    [],
  );
  assert.deepEqual(ids(realm), ["t1", "t5"]);
});
