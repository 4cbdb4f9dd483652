// A server restored from an older copy of its store, after which other
// clients write until the head passes a reader's download cursor: the
// reader's cursor looks continuous but names versions of the lost history.
// Version salts (docs/PROTOCOL.md §4.11) make the server see it, and the
// reader resets in its mode (docs/CLIENT.md "Client reset"), with real
// processes: the server is a child process killed with SIGKILL and
// restarted on a copy of its KV file.

import assert from "node:assert/strict";
import {
  type ClientResetMode,
  type ClientResetResult,
  type ConnectionStateChange,
  type Realm,
  SyncError,
} from "../../mod.ts";
import { fastApp } from "../conformance/_helpers.ts";
import { bounded, Recorder } from "../_helpers/waits.ts";
import {
  alice,
  copyStore,
  RESTART_MS,
  ServerProcess,
} from "./_reset_process.ts";

function ids(realm: Realm): string[] {
  return realm.objects("Task").map((o) => o.id).sort();
}

function resetChange(states: Recorder<ConnectionStateChange>) {
  return states.until(
    (c) => c.error?.code === "client_reset",
    { signal: bounded(RESTART_MS) },
  );
}

/**
 * The story: a writer W (default mode) and a reader R (in `mode`) sync t1;
 * the store is copied (the backup, head 1); W writes t2 and t3 and R
 * downloads them (R's cursor: 3), then R goes offline and writes t9, which
 * stays pending; the server is killed and restarted on the backup. W's
 * acknowledged upload cursor is ahead of the restored record, so W resets;
 * then W writes u1, u2, u3 (versions 2, 3, 4 of the restored history): the
 * head passes R's cursor, and R's upload cursor is not ahead of anything,
 * since R wrote nothing the server acknowledged since the backup. Then R
 * comes back.
 */
async function story(stack: AsyncDisposableStack, mode: ClientResetMode) {
  const dir = await Deno.makeTempDir();
  stack.defer(() => Deno.remove(dir, { recursive: true }));
  const live = `${dir}/live`;
  await Deno.mkdir(live);
  let server = await ServerProcess.start(`${live}/sync.kv`, 0);
  const port = server.port;
  stack.defer(() => server.kill());
  const url = `http://127.0.0.1:${port}`;
  const appW = stack.use(fastApp(url));
  const appR = stack.use(fastApp(url));
  const after: ClientResetResult[] = [];
  const before: string[][] = [];
  const w = await (await appW.logIn(await alice())).openRealm({
    path: "/~/todos",
    waitForDownload: true,
    signal: bounded(),
  });
  const r = await (await appR.logIn(await alice())).openRealm({
    path: "/~/todos",
    waitForDownload: true,
    signal: bounded(),
    clientReset: {
      mode,
      onBefore: (realm: Realm) => {
        before.push(ids(realm));
      },
      onAfter: (_realm: Realm, result: ClientResetResult) => {
        after.push(result);
      },
    },
  });
  await (await w.write((tx) => tx.put("Task", "t1", { n: 1 })))
    .waitForUpload({ signal: bounded() });
  await r.syncSession.waitForDownload({ signal: bounded() });

  await server.kill();
  await copyStore(live, `${dir}/backup`);
  server = await ServerProcess.start(`${live}/sync.kv`, port);
  await (await w.write((tx) => tx.put("Task", "t2", { n: 2 })))
    .waitForUpload({ signal: bounded(RESTART_MS) });
  await (await w.write((tx) => tx.put("Task", "t3", { n: 3 })))
    .waitForUpload({ signal: bounded(RESTART_MS) });
  await r.syncSession.waitForDownload({ signal: bounded(RESTART_MS) });
  assert.deepEqual(ids(r), ["t1", "t2", "t3"]);

  // R leaves before the restore and only comes back once the restored
  // history has passed its cursor.
  r.syncSession.pause();
  await server.kill();
  const t9 = await r.write((tx) => tx.put("Task", "t9", { n: 9 }));
  await copyStore(`${dir}/backup`, `${dir}/restored`);
  server = await ServerProcess.start(`${dir}/restored/sync.kv`, port);

  await using wStates = new Recorder(
    w.syncSession.connectionStateChanges({ signal: bounded(RESTART_MS) }),
  );
  await resetChange(wStates);
  await w.syncSession.waitForDownload({ signal: bounded(RESTART_MS) });
  assert.deepEqual(ids(w), ["t1"]);
  for (const id of ["u1", "u2", "u3"]) {
    await (await w.write((tx) => tx.put("Task", id, { by: "w" })))
      .waitForUpload({ signal: bounded(RESTART_MS) });
  }

  const states = new Recorder(
    r.syncSession.connectionStateChanges({ signal: bounded(RESTART_MS) }),
  );
  stack.use(states);
  assert.equal(r.syncSession.stats().clientResets, 0);
  r.syncSession.resume();
  return { w, r, t9, states, before, after };
}

/** W downloads everything the server holds; R must hold the same. */
async function assertEqualToServer(w: Realm, r: Realm): Promise<void> {
  await r.syncSession.waitForUpload({ signal: bounded(RESTART_MS) });
  await w.syncSession.waitForDownload({ signal: bounded(RESTART_MS) });
  await r.syncSession.waitForDownload({ signal: bounded(RESTART_MS) });
  const byId = (realm: Realm) =>
    [...realm.objects("Task")].sort((a, b) => a.id.localeCompare(b.id));
  assert.deepEqual(byId(r), byId(w));
}

Deno.test("restored server, head past a reader's cursor: recover resets the reader, which drops what the server lost, re-uploads its pending write and ends equal to the server", async () => {
  await using stack = new AsyncDisposableStack();
  const { w, r, t9, states, before, after } = await story(stack, "recover");
  const change = await resetChange(states);
  assert.ok(change.error instanceof SyncError);
  assert.equal(change.error.isFatal, false);
  await t9.waitForUpload({ signal: bounded(RESTART_MS) });
  assert.equal(r.syncSession.stats().clientResets, 1);
  assert.deepEqual(before, [["t1", "t2", "t3", "t9"]]);
  assert.deepEqual(after, [{ recovered: 1, discarded: 0 }]);
  await assertEqualToServer(w, r);
  assert.deepEqual(ids(r), ["t1", "t9", "u1", "u2", "u3"]);
  assert.equal(r.syncSession.state, "active");
});

Deno.test("restored server, head past a reader's cursor: recoverAll also gives the server back what it lost (t2, t3)", async () => {
  await using stack = new AsyncDisposableStack();
  const { w, r, t9, states, after } = await story(stack, "recoverAll");
  await resetChange(states);
  await t9.waitForUpload({ signal: bounded(RESTART_MS) });
  assert.deepEqual(after, [{ recovered: 2, discarded: 0 }]);
  await assertEqualToServer(w, r);
  assert.deepEqual(ids(r), ["t1", "t2", "t3", "t9", "u1", "u2", "u3"]);
});

Deno.test("restored server, head past a reader's cursor: discard drops the reader's local changes (the pending receipt rejects with client_reset) and it ends equal to the server", async () => {
  await using stack = new AsyncDisposableStack();
  const { w, r, t9, states, after } = await story(stack, "discard");
  await resetChange(states);
  const error = await t9.waitForUpload({ signal: bounded(RESTART_MS) }).then(
    () => assert.fail("the dropped write's receipt resolved"),
    (error: unknown) => error,
  );
  assert.ok(error instanceof SyncError);
  assert.equal(error.code, "client_reset");
  assert.deepEqual(after, [{ recovered: 0, discarded: 1 }]);
  await assertEqualToServer(w, r);
  assert.deepEqual(ids(r), ["t1", "u1", "u2", "u3"]);
});

Deno.test("restored server, head past a reader's cursor: manual puts the reader in error with client_reset_required and keeps its local data", async () => {
  await using stack = new AsyncDisposableStack();
  const { r, t9, states, before, after } = await story(stack, "manual");
  await states.finished(bounded(RESTART_MS));
  assert.equal(states.outcome?.kind, "error");
  const error = await t9.waitForUpload({ signal: bounded() }).then(
    () => assert.fail("the receipt resolved"),
    (error: unknown) => error,
  );
  assert.ok(error instanceof SyncError);
  assert.equal(error.code, "client_reset_required");
  assert.equal(r.syncSession.state, "error");
  assert.deepEqual(before, []);
  assert.deepEqual(after, []);
  assert.deepEqual(ids(r), ["t1", "t2", "t3", "t9"]);
  assert.equal(r.syncSession.stats().clientResets, 0);
});
