/**
 * Durable storage and saved users (docs/CLIENT.md "Storage") through the
 * public API, with real sockets and real processes: saved users restored
 * offline and in order, a SIGKILLed writer's pending writes, logOut with and
 * without its local data, a refused refresh token, no access token on
 * disk, one owner process per store, foreign files left untouched, and
 * per-realm storage overrides.
 */
import assert from "node:assert/strict";
import {
  App,
  type AppOpenOptions,
  Credentials,
  type RealmStorage,
  type StorageBatch,
  SyncError,
} from "../../mod.ts";
import { linesOf } from "../_helpers/lines.ts";
import { Prng, testSeed } from "../_helpers/prng.ts";
import { TcpProxy } from "../_helpers/tcp_proxy.ts";
import { startTestServer } from "../_helpers/test_server.ts";
import { epochSeconds, signUserJwt } from "../_helpers/user_jwt.ts";
import { bounded } from "../_helpers/waits.ts";
import { OBJECTS_PER_TRANSACTION } from "./_durable_child.ts";
import { durableAppOptions, withTempDir } from "./_helpers.ts";

const secret = "durable-storage-secret-of-some-length";
const childPath = new URL("./_durable_child.ts", import.meta.url).pathname;

function options(
  baseUrl: string,
  kvPath: string,
  extra: Partial<AppOpenOptions> = {},
): AppOpenOptions {
  return durableAppOptions(baseUrl, kvPath, extra);
}

function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  return withTempDir("tether-durable-conf-", fn);
}

function jwtFor(sub: string): Promise<string> {
  return signUserJwt(secret, { sub, exp: epochSeconds(3_600_000) });
}

/** Takes the proxy's server away: new connections refused, open ones cut. */
function offline(proxy: TcpProxy): void {
  proxy.mode = "refuse";
  proxy.dropAll();
}

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  return await promise.then(
    () => assert.fail("expected a rejection"),
    (error) => error,
  );
}

/** Every file in `dir` with its bytes, to compare before and after. */
async function snapshot(dir: string): Promise<Map<string, Uint8Array>> {
  const files = new Map<string, Uint8Array>();
  for await (const entry of Deno.readDir(dir)) {
    if (entry.isFile) {
      files.set(entry.name, await Deno.readFile(`${dir}/${entry.name}`));
    }
  }
  return files;
}

/** A child process running `_durable_child.ts`, its output read by line. */
function spawnChild(args: string[]) {
  const proc = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--unstable-kv", "--no-check", childPath, ...args],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stderr = new Response(proc.stderr).text();
  const lines = linesOf(proc.stdout)[Symbol.asyncIterator]();
  return {
    proc,
    lines,
    /** Waits for the next line, bounded. */
    async next(): Promise<string | undefined> {
      const signal = bounded(20_000);
      let onAbort!: () => void;
      const aborted = new Promise<never>((_, reject) => {
        onAbort = () => reject(signal.reason);
        signal.addEventListener("abort", onAbort, { once: true });
      });
      try {
        const item = await Promise.race([lines.next(), aborted]);
        return item.done ? undefined : item.value;
      } finally {
        signal.removeEventListener("abort", onAbort);
      }
    },
    /** Kills it (or lets it end), drains its output, returns what is left. */
    async finish(kill: boolean) {
      if (kill) proc.kill("SIGKILL");
      await proc.stdin.close().catch(() => {});
      const rest: string[] = [];
      for (;;) {
        const item = await lines.next();
        if (item.done) break;
        rest.push(item.value);
      }
      return { rest, status: await proc.status, stderr: await stderr };
    },
  };
}

Deno.test("App.open restores currentUser and allUsers offline, in login order (a user's latest login counts), the same before and after a restart", async () => {
  await withDir(async (dir) => {
    const kvPath = `${dir}/app.kv`;
    await using server = await startTestServer({
      auth: { jwtSecret: secret, allowAnonymous: true },
    });
    await using proxy = new TcpProxy(server.addr);
    let before: string[];
    {
      await using app = await App.open(options(proxy.url, kvPath));
      const alice = await app.logIn(Credentials.jwt(await jwtFor("alice")));
      const bob = await app.logIn(Credentials.jwt(await jwtFor("bob")));
      assert.equal(app.currentUser, bob);
      assert.deepEqual(app.allUsers.map((u) => u.id), ["alice", "bob"]);
      // Alice logs in again: she is current, so she is the latest login.
      assert.equal(
        await app.logIn(Credentials.jwt(await jwtFor("alice"))),
        alice,
      );
      assert.equal(app.currentUser, alice);
      before = app.allUsers.map((u) => u.id);
      assert.deepEqual(before, ["bob", "alice"]);
    }
    offline(proxy);
    await using app = await App.open(options(proxy.url, kvPath));
    assert.equal(app.currentUser?.id, "alice");
    assert.equal(app.currentUser?.isLoggedIn, true);
    assert.deepEqual(app.allUsers.map((u) => u.id), before);
    assert.equal(app.allUsers.at(-1), app.currentUser);
    // Logging out the current user makes the previous login current.
    await app.currentUser!.logOut();
    assert.equal(app.currentUser?.id, "bob");
    await app.close();
    await using again = await App.open(options(proxy.url, kvPath));
    assert.deepEqual(again.allUsers.map((u) => u.id), ["bob"]);
    assert.equal(again.currentUser?.id, "bob");
  });
});

Deno.test("App.logIn(Credentials.anonymous()) on a durable app returns the saved anonymous user without a network call, also offline; an aborted signal still rejects", async () => {
  await withDir(async (dir) => {
    const kvPath = `${dir}/app.kv`;
    await using server = await startTestServer();
    await using proxy = new TcpProxy(server.addr);
    let id: string;
    {
      await using app = await App.open(options(proxy.url, kvPath));
      id = (await app.logIn(Credentials.anonymous())).id;
    }
    offline(proxy);
    const calls: string[] = [];
    const counting: typeof fetch = (input, init) => {
      calls.push(input instanceof Request ? input.url : String(input));
      return fetch(input, init);
    };
    await using app = await App.open(
      options(proxy.url, kvPath, { fetch: counting }),
    );
    const restored = app.currentUser;
    const user = await app.logIn(Credentials.anonymous(), {
      signal: bounded(),
    });
    assert.equal(user.id, id);
    assert.equal(user, restored);
    assert.equal(app.currentUser, user);
    assert.deepEqual(app.allUsers, [user]);
    const reason = new Error("stop");
    const aborted = AbortSignal.abort(reason);
    assert.equal(
      await rejection(app.logIn(Credentials.anonymous(), { signal: aborted })),
      reason,
    );
    assert.deepEqual(calls, []);
    // The saved user opens its realm offline from the store.
    await using realm = await user.openRealm({ path: "/~/todos" });
    assert.deepEqual(realm.objects("Task"), []);
  });
});

Deno.test("Durable apps on one store opened before any login (two tabs, two apps of a process) that log in anonymously, one after the other or at once, get one saved user", async () => {
  await withDir(async (dir) => {
    await using server = await startTestServer();
    for (const atOnce of [false, true]) {
      const kvPath = `${dir}/app-${atOnce}.kv`;
      await using a = await App.open(options(server.url, kvPath));
      await using b = await App.open(options(server.url, kvPath));
      const [first, second] = atOnce
        ? await Promise.all([
          a.logIn(Credentials.anonymous()),
          b.logIn(Credentials.anonymous()),
        ])
        : [
          await a.logIn(Credentials.anonymous()),
          await b.logIn(Credentials.anonymous()),
        ];
      assert.equal(second.id, first.id, `at once: ${atOnce}`);
      assert.deepEqual(b.allUsers.map((user) => user.id), [first.id]);
    }
  });
});

/**
 * A child restores the saved user and writes one transaction at a time,
 * the server reachable (`online`) or not, and is SIGKILLed; this process
 * then reopens the store offline, checks it, and lets the server appear.
 */
async function killedWriter(online: boolean): Promise<void> {
  const seed = testSeed();
  const random = new Prng(seed);
  try {
    await withDir(async (dir) => {
      const kvPath = `${dir}/app.kv`;
      await using server = await startTestServer();
      await using proxy = new TcpProxy(server.addr);
      let id: string;
      {
        await using app = await App.open(options(proxy.url, kvPath));
        id = (await app.logIn(Credentials.anonymous())).id;
      }
      if (!online) offline(proxy);
      // The child restores the user and writes until killed.
      const killAfter = 2 + random.int(12);
      const child = spawnChild(["write", kvPath, proxy.url]);
      const confirmed: [number, number][] = [];
      const parse = (line: string) => {
        const match = /^ok (\d+) (\d+)$/.exec(line);
        if (match) confirmed.push([Number(match[1]), Number(match[2])]);
      };
      let finished;
      try {
        assert.equal(await child.next(), "open 0");
        while (confirmed.length < killAfter) {
          const line = await child.next();
          assert.ok(line !== undefined, "the child ended early");
          parse(line);
        }
      } finally {
        finished = await child.finish(true);
      }
      // Lines the child printed before it died are resolved writes too.
      for (const line of finished.rest) parse(line);
      assert.equal(finished.status.signal, "SIGKILL", finished.stderr);
      assert.deepEqual(
        confirmed.map(([tx]) => tx),
        [...confirmed.keys()],
      );

      // This process reopens the store, the server away.
      offline(proxy);
      const integratedBefore = server.stats().changesetsIntegrated;
      if (!online) assert.equal(integratedBefore, 0);
      let transactions = 0;
      await using app = await App.open(options(proxy.url, kvPath));
      const user = app.currentUser!;
      assert.equal(user.id, id);
      const realm = await user.openRealm({ path: "/~/crash" });
      try {
        const byTx = new Map<number, number[]>();
        for (const { id, fields } of realm.objects("Item")) {
          assert.equal(id, `${fields.tx}/${fields.k}`);
          const tx = fields.tx as number;
          byTx.set(tx, [...byTx.get(tx) ?? [], fields.k as number].sort());
        }
        for (const [tx, ks] of byTx) {
          assert.deepEqual(
            ks,
            [...Array(OBJECTS_PER_TRANSACTION).keys()],
            `transaction ${tx} is torn`,
          );
        }
        const present = [...byTx.keys()].sort((a, b) => a - b);
        // Every resolved write is there; at most the next one besides.
        assert.deepEqual(
          present.slice(0, confirmed.length),
          confirmed.map(([tx]) => tx),
        );
        assert.ok(present.length <= confirmed.length + 1, `${present}`);
        if (present.length > confirmed.length) {
          assert.equal(present.at(-1), confirmed.length);
        }
        transactions = present.length;
        // Client versions of the present transactions, in commit order:
        // the confirmed ones as the child saw them, then the next one.
        const versions = confirmed.map(([, version]) => version);
        if (present.length > confirmed.length) {
          versions.push((versions.at(-1) ?? 0) + 1);
        }
        versions.forEach((version, index) => assert.equal(version, index + 1));
        // Offline, nothing was acknowledged: every transaction is pending.
        // Online, the unacknowledged ones: the last of them, in order.
        const pending = realm.pendingWrites();
        assert.deepEqual(
          pending.map((r) => r.clientVersion),
          versions.slice(versions.length - pending.length),
        );
        if (!online) assert.equal(pending.length, present.length);
        for (const receipt of pending) {
          assert.equal(typeof receipt.waitForUpload, "function");
        }
        assert.equal(
          realm.syncSession.stats().pendingUploadChangesets,
          pending.length,
        );
        assert.ok(integratedBefore >= present.length - pending.length);

        // A server appears: every receipt resolves, each changeset once.
        proxy.mode = "forward";
        app.reconnect();
        await Promise.all(
          pending.map((r) => r.waitForUpload({ signal: bounded(15_000) })),
        );
        assert.deepEqual(realm.pendingWrites(), []);
        assert.equal(server.stats().changesetsIntegrated, present.length);
      } finally {
        await realm.close();
      }
      // Reopened and downloaded again: nothing uploads twice.
      await using again = await user.openRealm({
        path: "/~/crash",
        waitForDownload: true,
        signal: bounded(),
      });
      assert.deepEqual(again.pendingWrites(), []);
      assert.equal(
        again.objects("Item").length,
        transactions * OBJECTS_PER_TRANSACTION,
      );
      assert.equal(server.stats().changesetsIntegrated, transactions);
    });
  } catch (error) {
    console.error(`seed ${seed} (TETHER_SEED=${seed} replays it)`);
    throw error;
  }
}

Deno.test("A durable app SIGKILLed while writing offline keeps every resolved write and loses at most the one in flight; another process gets one pending receipt per transaction in commit order, and each uploads exactly once", async () => {
  await killedWriter(false);
});

Deno.test("A durable app SIGKILLed while writing and uploading: after reopening, the unacknowledged writes are pending in order, and the server holds each transaction exactly once", async () => {
  await killedWriter(true);
});

Deno.test("User.logOut() keeps the user's realms for its next login; logOut({ deleteLocalData: true }) deletes them; a non-boolean deleteLocalData is a TypeError", async () => {
  await withDir(async (dir) => {
    const kvPath = `${dir}/app.kv`;
    await using server = await startTestServer({
      auth: { jwtSecret: secret, allowAnonymous: true },
    });
    await using proxy = new TcpProxy(server.addr);
    await using app = await App.open(options(proxy.url, kvPath));
    const logIn = async () => {
      proxy.mode = "forward";
      const user = await app.logIn(Credentials.jwt(await jwtFor("carol")));
      // Then offline: what a realm holds comes from the store alone.
      offline(proxy);
      return user;
    };
    const first = await logIn();
    {
      await using realm = await first.openRealm({ path: "/~/notes" });
      await realm.write((tx) => tx.put("Note", "n", { text: "kept" }));
    }
    await assert.rejects(
      first.logOut({ deleteLocalData: "yes" as unknown as boolean }),
      (error) =>
        error instanceof TypeError && /deleteLocalData/.test(error.message),
    );
    assert.equal(first.isLoggedIn, true);
    await first.logOut();
    assert.equal(first.isLoggedIn, false);
    assert.deepEqual(app.allUsers, []);
    assert.equal(app.currentUser, undefined);

    const second = await logIn();
    {
      await using realm = await second.openRealm({ path: "/~/notes" });
      assert.deepEqual(realm.get("Note", "n"), { text: "kept" });
      // Never acknowledged: still pending after the logout.
      assert.equal(realm.pendingWrites().length, 1);
    }
    await second.logOut({ deleteLocalData: true });

    const third = await logIn();
    await using realm = await third.openRealm({ path: "/~/notes" });
    assert.equal(realm.get("Note", "n"), undefined);
    assert.deepEqual(realm.pendingWrites(), []);
  });
});

Deno.test("App.open: a saved user whose refresh token the server refuses is logged out (its session reports login_failed, currentUser falls back to the other user, its realm stays readable) and stays logged out after reopening", async () => {
  await withDir(async (dir) => {
    const kvPath = `${dir}/app.kv`;
    // The first server's key signed the saved refresh token; the second
    // server, behind the same address, has another key.
    await using old = await startTestServer();
    await using server = await startTestServer({
      auth: { jwtSecret: secret, allowAnonymous: true },
    });
    await using proxy = new TcpProxy(old.addr);
    let refusedId: string;
    let freshId: string;
    {
      await using app = await App.open(options(proxy.url, kvPath));
      const user = await app.logIn(Credentials.anonymous());
      refusedId = user.id;
      await using realm = await user.openRealm({ path: "/~/todos" });
      await realm.write((tx) => tx.put("Task", "t", { title: "local" }));
    }
    proxy.retarget(server.addr);
    proxy.dropAll(); // also the pooled HTTP connection to the old server
    {
      await using app = await App.open(options(proxy.url, kvPath));
      const refused = app.currentUser!;
      assert.equal(refused.id, refusedId);
      const dave = await app.logIn(Credentials.jwt(await jwtFor("dave")));
      assert.deepEqual(app.allUsers.map((u) => u.id), [refusedId, "dave"]);
      // Make the refused user current again, so its logout moves currentUser.
      assert.equal(await app.logIn(Credentials.anonymous()), refused);
      assert.equal(app.currentUser, refused);

      // Both realms open offline; then the server answers the refresh.
      offline(proxy);
      await using realm = await refused.openRealm({ path: "/~/todos" });
      await using second = await refused.openRealm({ path: "/~/second" });
      proxy.mode = "forward";
      app.reconnect();
      const failure = await rejection(
        realm.syncSession.waitForDownload({ signal: bounded() }),
      );
      // Every session of the user reports it.
      const also = await rejection(
        second.syncSession.waitForDownload({ signal: bounded() }),
      );
      assert.ok(also instanceof SyncError, String(also));
      assert.equal(also.code, "login_failed");
      assert.ok(failure instanceof SyncError, String(failure));
      assert.equal(failure.code, "login_failed");
      assert.equal(realm.syncSession.state, "error");
      assert.equal(realm.syncSession.error?.code, "login_failed");
      assert.equal(refused.isLoggedIn, false);
      assert.equal(app.currentUser, dave);
      assert.deepEqual(app.allUsers, [dave]);
      assert.deepEqual(realm.get("Task", "t"), { title: "local" });
      await assert.rejects(
        refused.openRealm({ path: "/~/other" }),
        TypeError,
      );
      // The refused user is not reused by the next anonymous login.
      const fresh = await app.logIn(Credentials.anonymous());
      assert.notEqual(fresh.id, refusedId);
      freshId = fresh.id;
    }
    offline(proxy);
    await using app = await App.open(options(proxy.url, kvPath));
    assert.deepEqual(app.allUsers.map((u) => u.id), ["dave", freshId]);
    assert.equal(app.currentUser?.id, freshId);
  });
});

/** Every key and value of a KV file as text (byte arrays as Latin-1). */
async function kvText(kvPath: string): Promise<string> {
  const parts: string[] = [];
  const text = (value: unknown): void => {
    if (typeof value === "string") parts.push(value);
    else if (value instanceof Uint8Array) {
      parts.push(String.fromCharCode(...value));
      parts.push(new TextDecoder().decode(value));
    } else if (Array.isArray(value)) value.forEach(text);
    else if (value instanceof Map) {
      for (const [k, v] of value) (text(k), text(v));
    } else if (typeof value === "object" && value !== null) {
      for (const [k, v] of Object.entries(value)) (text(k), text(v));
    } else parts.push(String(value));
  };
  const kv = await Deno.openKv(kvPath);
  try {
    for await (const entry of kv.list({ prefix: [] })) {
      text([...entry.key]);
      text(entry.value);
    }
  } finally {
    kv.close();
  }
  return parts.join("\n");
}

Deno.test("App.open never stores an access token (nor a JWT), only refresh tokens: checked in the KV file and its raw bytes after the app closed", async () => {
  await withDir(async (dir) => {
    const kvPath = `${dir}/app.kv`;
    await using server = await startTestServer({
      auth: { jwtSecret: secret, allowAnonymous: true },
    });
    const accessTokens: string[] = [];
    const refreshTokens: string[] = [];
    /** The refresh token each user got last. */
    const latest = new Map<string, string>();
    const recording: typeof fetch = async (input, init) => {
      const response = await fetch(input, init);
      if (response.ok) {
        const body = await response.clone().json();
        accessTokens.push(body.accessToken);
        refreshTokens.push(body.refreshToken);
        latest.set(body.userId, body.refreshToken);
      }
      return response;
    };
    const jwt = await jwtFor("erin");
    for (let run = 0; run < 2; run++) {
      await using app = await App.open(
        options(server.url, kvPath, { fetch: recording }),
      );
      // The first run logs in; the second restores both users, whose
      // first connections trade refresh tokens for new access tokens.
      const anonymous = run === 0
        ? await app.logIn(Credentials.anonymous())
        : app.allUsers[0]!;
      const erin = run === 0
        ? await app.logIn(Credentials.jwt(jwt))
        : app.allUsers[1]!;
      for (const user of [anonymous, erin]) {
        await using realm = await user.openRealm({
          path: "/~/todos",
          waitForDownload: true,
          signal: bounded(),
        });
        await realm.write((tx) => tx.put("Task", `r${run}`, { run }));
        await realm.syncSession.waitForUpload({ signal: bounded() });
      }
    }
    assert.ok(accessTokens.length >= 4, `${accessTokens.length} logins`);
    const files = [...(await snapshot(dir)).values()]
      .map((bytes) => String.fromCharCode(...bytes)).join("\n");
    const stored = await kvText(kvPath);
    for (const token of [...accessTokens, jwt]) {
      assert.ok(token.length > 20);
      assert.ok(!stored.includes(token), "a token is stored in the KV");
      assert.ok(!files.includes(token), "a token is in the file's bytes");
    }
    // The check can see a token: the latest refresh tokens are there.
    assert.ok(refreshTokens.some((token) => stored.includes(token)));
    assert.ok(refreshTokens.some((token) => files.includes(token)));
    // Each saved user holds the refresh token it got last (a refresh
    // token the server issues anew is saved again).
    const kv = await Deno.openKv(kvPath);
    try {
      assert.equal(latest.size, 2);
      for (const [id, token] of latest) {
        const saved = await kv.get<{ refreshToken: string }>(
          ["tether", "v1", "users", id],
        );
        assert.equal(saved.value?.refreshToken, token, id);
      }
    } finally {
      kv.close();
    }
  });
});

/** Asserts `error` is a SyncError with `code` whose message names `path`. */
function assertRefused(error: unknown, code: string, path: string): void {
  assert.ok(error instanceof SyncError, String(error));
  assert.equal(error.code, code);
  assert.ok(error.message.includes(path), error.message);
}

Deno.test("A store another process holds is refused at App.open, and a per-realm store at openRealm, with storage_locked naming the path; both open once it lets go", async () => {
  await withDir(async (dir) => {
    const held = `${dir}/held.kv`;
    await using server = await startTestServer();
    const child = spawnChild(["hold", held]);
    let finished;
    try {
      assert.equal(await child.next(), "held");
      // Whatever name the file is reached by.
      const symlink = `${dir}/symlink.kv`;
      const hardLink = `${dir}/hardlink.kv`;
      await Deno.symlink(held, symlink);
      await Deno.link(held, hardLink);
      for (const path of [held, symlink, hardLink]) {
        assertRefused(
          await rejection(App.open(options(server.url, path))),
          "storage_locked",
          path,
        );
      }
      await using app = await App.open(options(server.url, `${dir}/app.kv`));
      const user = await app.logIn(Credentials.anonymous());
      assertRefused(
        await rejection(
          user.openRealm({ path: "/~/todos", storage: { kvPath: held } }),
        ),
        "storage_locked",
        held,
      );
      // The refusal left nothing behind: the app store still works.
      await using realm = await user.openRealm({ path: "/~/todos" });
      await realm.write((tx) => tx.put("Task", "t", {}));
    } finally {
      finished = await child.finish(false);
    }
    assert.equal(finished.status.code, 0, finished.stderr);
    await using app = await App.open(options(server.url, held));
    const user = await app.logIn(Credentials.anonymous());
    await using realm = await user.openRealm({
      path: "/~/todos",
      storage: { kvPath: held },
    });
    assert.deepEqual(realm.objects("Task"), []);
  });
});

Deno.test("Several App.open calls on one store in one process (also through another name for the file) share it: one realm of one user has one writer, and closing one app leaves the others working", async () => {
  await withDir(async (dir) => {
    const kvPath = `${dir}/app.kv`;
    await using server = await startTestServer({
      auth: { jwtSecret: secret, allowAnonymous: true },
    });
    const jwt = await jwtFor("frank");
    await using one = await App.open(options(server.url, kvPath));
    const link = `${dir}/link.kv`;
    await Deno.symlink(kvPath, link);
    await using two = await App.open(options(server.url, link));
    await using three = await App.open(options(server.url, `${dir}/./app.kv`));
    const first = await one.logIn(Credentials.jwt(jwt));
    const second = await two.logIn(Credentials.jwt(jwt));
    const realm = await first.openRealm({ path: "/~/todos" });
    await realm.write((tx) => tx.put("Task", "a", { by: "one" }));
    assertRefused(
      await rejection(second.openRealm({ path: "/~/todos" })),
      "storage_locked",
      link,
    );
    await realm.close();
    await using shared = await second.openRealm({ path: "/~/todos" });
    assert.deepEqual(shared.get("Task", "a"), { by: "one" });
    await one.close();
    await three.close();
    // Still one owner: another process is refused while `two` holds it.
    const child = spawnChild(["hold", kvPath]);
    assert.equal(await child.next(), undefined);
    const refused = await child.finish(false);
    assert.notEqual(refused.status.code, 0);
    assert.match(refused.stderr, /storage_locked|another process holds it/);
    // The store stays open under the remaining app.
    await shared.write((tx) => tx.put("Task", "b", { by: "two" }));
    await shared.close();
    await two.close();
    await using four = await App.open(options(server.url, kvPath));
    assert.equal(four.currentUser?.id, "frank");
    await using again = await four.currentUser!.openRealm({ path: "/~/todos" });
    assert.deepEqual(again.objects("Task").map((o) => o.id), ["a", "b"]);
  });
});

Deno.test("A file that is not a Tether store (random bytes, a KV file with other keys, another SQLite database, a directory) is refused at App.open and at openRealm with storage_invalid naming the path, and left byte-for-byte untouched; a path that cannot be created rejects with Deno.errors.NotFound", async () => {
  await withDir(async (dir) => {
    const foreign = `${dir}/foreign`;
    await Deno.mkdir(foreign);
    const random = `${foreign}/random.kv`;
    const prng = new Prng(7);
    await Deno.writeFile(
      random,
      Uint8Array.from({ length: 4096 }, () => prng.int(256)),
    );
    const otherKv = `${foreign}/other.kv`;
    {
      const kv = await Deno.openKv(otherKv);
      await kv.set(["mine"], "not tether");
      kv.close();
    }
    const sqlite = `${foreign}/notes.sqlite`;
    {
      const { DatabaseSync } = await import("node:sqlite");
      const db = new DatabaseSync(sqlite);
      db.exec(
        "CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT); INSERT INTO notes (text) VALUES ('mine');",
      );
      db.close();
    }
    const before = await snapshot(foreign);
    await using server = await startTestServer();
    await using app = await App.open(options(server.url, `${dir}/app.kv`));
    const user = await app.logIn(Credentials.anonymous());
    for (const path of [random, otherKv, sqlite]) {
      assertRefused(
        await rejection(App.open(options(server.url, path))),
        "storage_invalid",
        path,
      );
      assertRefused(
        await rejection(
          user.openRealm({ path: "/~/todos", storage: { kvPath: path } }),
        ),
        "storage_invalid",
        path,
      );
    }
    assert.deepEqual(await snapshot(foreign), before);
    // A directory is not a store either.
    assertRefused(
      await rejection(App.open(options(server.url, foreign))),
      "storage_invalid",
      foreign,
    );
    // A path that cannot be created: Deno's own error, naming it.
    const missing = `${dir}/missing/app.kv`;
    const notFound = await rejection(App.open(options(server.url, missing)));
    assert.ok(notFound instanceof Deno.errors.NotFound, String(notFound));
    assert.ok(notFound.message.includes(missing));
  });
});

/** A `RealmStorage` of the caller's own, recording what the realm asks. */
class RecordingStorage implements RealmStorage {
  batches: StorageBatch[] = [];
  closed = false;
  load() {
    return Promise.resolve({ meta: null, records: [], pending: [] });
  }
  commit(batch: StorageBatch): Promise<void> {
    this.batches.push(batch);
    return Promise.resolve();
  }
  close(): Promise<void> {
    this.closed = true;
    return Promise.resolve();
  }
}

Deno.test('openRealm({ storage }) on a durable app overrides the app\'s store per realm: "memory", { kvPath } and a RealmStorage object', async () => {
  await withDir(async (dir) => {
    const kvPath = `${dir}/app.kv`;
    const other = `${dir}/other.kv`;
    await using server = await startTestServer();
    await using app = await App.open(options(server.url, kvPath));
    const user = await app.logIn(Credentials.anonymous());
    const mine = new RecordingStorage();
    for (
      const [path, storage] of [
        ["/~/memory", "memory"],
        ["/~/other", { kvPath: other }],
        ["/~/mine", mine],
      ] as const
    ) {
      await using realm = await user.openRealm({ path, storage });
      await realm.write((tx) => tx.put("Task", "t", { path }));
    }
    assert.ok(mine.closed);
    assert.ok(
      mine.batches.some((batch) =>
        batch.records.some((record) => record.id === "t") &&
        batch.append.length === 1
      ),
    );
    // None of them is in the app's store.
    for (const path of ["/~/memory", "/~/other", "/~/mine"]) {
      await using realm = await user.openRealm({ path });
      assert.equal(realm.get("Task", "t"), undefined, path);
    }
    // The { kvPath } one is in its own file, and the memory one nowhere.
    {
      await using realm = await user.openRealm({
        path: "/~/other",
        storage: { kvPath: other },
      });
      assert.deepEqual(realm.get("Task", "t"), { path: "/~/other" });
    }
    await using realm = await user.openRealm({
      path: "/~/memory",
      storage: "memory",
    });
    assert.equal(realm.get("Task", "t"), undefined);
    await assert.rejects(
      user.openRealm({ path: "/~/x", storage: { kvPath: "" } }),
      (error) => error instanceof TypeError && /kvPath/.test(error.message),
    );
    await assert.rejects(
      user.openRealm({ path: "/~/x", storage: { kvPath: ":memory:" } }),
      (error) => error instanceof TypeError && /memory/.test(error.message),
    );
    await assert.rejects(Deno.stat(":memory:"), Deno.errors.NotFound);
  });
});

Deno.test("Durable realms and aborts: an open aborted while waiting for the download rejects with the reason and leaves the store free; a restored receipt's waitForUpload rejects with its signal's reason, then with session_closed when the realm closes", async () => {
  await withDir(async (dir) => {
    const kvPath = `${dir}/app.kv`;
    await using server = await startTestServer();
    await using proxy = new TcpProxy(server.addr);
    {
      await using app = await App.open(options(proxy.url, kvPath));
      const user = await app.logIn(Credentials.anonymous());
      offline(proxy);
      await using realm = await user.openRealm({ path: "/~/todos" });
      await realm.write((tx) => tx.put("Task", "t", {}));
    }
    await using app = await App.open(options(proxy.url, kvPath));
    const user = app.currentUser!;
    const controller = new AbortController();
    const opening = user.openRealm({
      path: "/~/todos",
      waitForDownload: true,
      signal: controller.signal,
    });
    const reason = new Error("stop waiting");
    controller.abort(reason);
    assert.equal(await rejection(opening), reason);
    const realm = await user.openRealm({ path: "/~/todos" });
    const [receipt] = realm.pendingWrites();
    assert.ok(receipt !== undefined);
    assert.equal(
      await rejection(
        receipt.waitForUpload({ signal: AbortSignal.abort(reason) }),
      ),
      reason,
    );
    const waiting = receipt.waitForUpload({ signal: bounded() });
    await realm.close();
    const closed = await rejection(waiting);
    assert.ok(closed instanceof SyncError, String(closed));
    assert.equal(closed.code, "session_closed");
  });
});

Deno.test("Realm.pendingWrites(): writes started together without awaiting are one receipt each, in call order, before and after a restart, and the server integrates each once", async () => {
  await withDir(async (dir) => {
    const kvPath = `${dir}/app.kv`;
    await using server = await startTestServer();
    await using proxy = new TcpProxy(server.addr);
    let versions: number[];
    {
      await using app = await App.open(options(proxy.url, kvPath));
      const user = await app.logIn(Credentials.anonymous());
      offline(proxy);
      await using realm = await user.openRealm({ path: "/~/todos" });
      const receipts = await Promise.all(
        [...Array(6).keys()].map((index) =>
          realm.write((tx) => tx.put("Task", `t${index}`, { index }))
        ),
      );
      versions = receipts.map((receipt) => receipt.clientVersion);
      assert.deepEqual(
        versions,
        versions.map((_, index) => versions[0]! + index),
      );
      assert.deepEqual(realm.pendingWrites().map((r) => r.clientVersion), [
        ...versions,
      ]);
    }
    await using app = await App.open(options(proxy.url, kvPath));
    await using realm = await app.currentUser!.openRealm({ path: "/~/todos" });
    const pending = realm.pendingWrites();
    assert.deepEqual(pending.map((r) => r.clientVersion), versions);
    proxy.mode = "forward";
    app.reconnect();
    // Each receipt resolves; together they may go in one upload.
    await Promise.all(
      pending.map((r) => r.waitForUpload({ signal: bounded() })),
    );
    assert.equal(server.stats().changesetsIntegrated, versions.length);
    assert.deepEqual(realm.pendingWrites(), []);
  });
});

Deno.test("App.open: two calls at once on a new file both open and share it; a saved user that does not decode is refused with storage_invalid and left untouched", async () => {
  await withDir(async (dir) => {
    const kvPath = `${dir}/app.kv`;
    await using server = await startTestServer();
    {
      const [one, two] = await Promise.all([
        App.open(options(server.url, kvPath)),
        App.open(options(server.url, kvPath)),
      ]);
      await using _one = one;
      await using _two = two;
      await one.logIn(Credentials.anonymous());
    }
    const kv = await Deno.openKv(kvPath);
    try {
      const [saved] = await Array.fromAsync(
        kv.list({ prefix: ["tether", "v1", "users"] }),
      );
      assert.ok(saved !== undefined);
      await kv.set(saved.key, { id: 42 });
    } finally {
      kv.close();
    }
    const before = await snapshot(dir);
    assertRefused(
      await rejection(App.open(options(server.url, kvPath))),
      "storage_invalid",
      kvPath,
    );
    assert.deepEqual(await snapshot(dir), before);
  });
});

Deno.test("App.open checks every App option and its storage before it touches the file", async () => {
  await withDir(async (dir) => {
    const kvPath = `${dir}/app.kv`;
    await assert.rejects(
      App.open({ baseUrl: "ftp://127.0.0.1:1", storage: { kvPath } }),
      TypeError,
    );
    await assert.rejects(
      App.open({
        baseUrl: "http://127.0.0.1:1",
        reconnect: { minDelayMs: -1 },
        storage: { kvPath },
      }),
      RangeError,
    );
    await assert.rejects(
      App.open({
        baseUrl: "http://127.0.0.1:1",
        storage: { kvPath: 42 as unknown as string },
      }),
      (error) => error instanceof TypeError && /kvPath/.test(error.message),
    );
    // Deno KV's in-memory database is not durable storage (and opening it
    // must not leave a file named ":memory:" in the working directory).
    await assert.rejects(
      App.open({
        baseUrl: "http://127.0.0.1:1",
        storage: { kvPath: ":memory:" },
      }),
      (error) => error instanceof TypeError && /memory/.test(error.message),
    );
    await assert.rejects(
      Deno.stat(":memory:"),
      Deno.errors.NotFound,
    );
    // Deno has no IndexedDB: a TypeError, not a hang or a SyncError.
    await assert.rejects(
      App.open({
        baseUrl: "http://127.0.0.1:1",
        storage: { indexedDb: "my-app" },
      }),
      TypeError,
    );
    assert.deepEqual([...(await snapshot(dir)).keys()], []);
  });
});

Deno.test("WriteReceipt from pendingWrites() after a restart rejects with the session's fatal error when the server refuses the realm", async () => {
  await withDir(async (dir) => {
    const kvPath = `${dir}/app.kv`;
    await using server = await startTestServer();
    await using proxy = new TcpProxy(server.addr);
    {
      await using app = await App.open(options(proxy.url, kvPath));
      const user = await app.logIn(Credentials.anonymous());
      offline(proxy);
      // Another user's path: the default permissions refuse it.
      await using realm = await user.openRealm({ path: "/someone-else/x" });
      await realm.write((tx) => tx.put("Task", "t", {}));
    }
    await using app = await App.open(options(proxy.url, kvPath));
    await using realm = await app.currentUser!.openRealm({
      path: "/someone-else/x",
    });
    const [receipt] = realm.pendingWrites();
    assert.ok(receipt !== undefined);
    const waiting = receipt.waitForUpload({ signal: bounded() });
    proxy.mode = "forward";
    app.reconnect();
    const error = await rejection(waiting);
    assert.ok(error instanceof SyncError, String(error));
    assert.equal(error.code, "permission_denied");
    assert.equal(realm.syncSession.error?.code, "permission_denied");
    assert.equal(server.stats().changesetsIntegrated, 0);
  });
});

Deno.test("User.logOut({ deleteLocalData: true }) while another app of the process has one of the user's realms open on the store deletes nothing and rejects with storage_locked; that realm stays whole", async () => {
  await withDir(async (dir) => {
    const kvPath = `${dir}/app.kv`;
    await using server = await startTestServer({
      auth: { jwtSecret: secret, allowAnonymous: true },
    });
    const jwt = await jwtFor("grace");
    {
      await using one = await App.open(options(server.url, kvPath));
      await using two = await App.open(options(server.url, kvPath));
      const first = await one.logIn(Credentials.jwt(jwt));
      const second = await two.logIn(Credentials.jwt(jwt));
      {
        await using other = await first.openRealm({ path: "/~/other" });
        await other.write((tx) => tx.put("Task", "o", {}));
      }
      await using realm = await second.openRealm({ path: "/~/todos" });
      await realm.write((tx) => tx.put("Task", "a", {}));
      assertRefused(
        await rejection(first.logOut({ deleteLocalData: true })),
        "storage_locked",
        "/grace/todos",
      );
      assert.equal(first.isLoggedIn, false);
      assert.deepEqual(one.allUsers, []);
      await realm.write((tx) => tx.put("Task", "b", {}));
    }
    await using app = await App.open(options(server.url, kvPath));
    const user = await app.logIn(Credentials.jwt(jwt));
    await using realm = await user.openRealm({ path: "/~/todos" });
    assert.deepEqual(realm.objects("Task").map((o) => o.id), ["a", "b"]);
    await using other = await user.openRealm({ path: "/~/other" });
    assert.deepEqual(other.objects("Task").map((o) => o.id), ["o"]);
  });
});
