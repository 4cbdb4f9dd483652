/**
 * SIGKILL against a durable app, through the public API in a child process
 * (tests/_helpers/durable_child.ts): the child streams transactions to a
 * KV-backed realm while the server is reachable or not (a TcpProxy that
 * forwards or refuses), and is killed at seeded random points. After every
 * kill the store is checked; at the end a last child uploads what is
 * pending, the server must have integrated each transaction exactly once,
 * and a second client converges with the store.
 *
 * `TETHER_CRASH_KILLS` (default 50) and `TETHER_CRASH_SEED` change the run;
 * `deno task soak:durable` runs 400 kills.
 */
import assert from "node:assert/strict";
import { App, Credentials, SyncError } from "../../mod.ts";
import { LocalRealm } from "../../src/client/local_realm.ts";
import { KvRealmStorage } from "../../src/client/storage/kv.ts";
import { OBJECTS_PER_TRANSACTION } from "../_helpers/durable_child.ts";
import { linesOf } from "../_helpers/lines.ts";
import { Prng } from "../_helpers/prng.ts";
import { TcpProxy } from "../_helpers/tcp_proxy.ts";
import { startTestServer } from "../_helpers/test_server.ts";
import { epochSeconds, signUserJwt } from "../_helpers/user_jwt.ts";
import { bounded } from "../_helpers/waits.ts";

const secret = "crash-test-secret-of-some-length";
const child = new URL("../_helpers/durable_child.ts", import.meta.url)
  .pathname;
const KILLS = Number(Deno.env.get("TETHER_CRASH_KILLS") ?? 50);
const SEED = Number(Deno.env.get("TETHER_CRASH_SEED") ?? 20261207);
/** A child that reports nothing for this long is stuck: killed, and the test fails. */
const STUCK_MS = 30_000;

interface RunResult {
  userLine: string;
  openLine: string;
  confirmed: string[];
  finished: string | undefined;
  stderr: string;
  code: number;
}

/**
 * Runs the child; in `write` mode kills it with SIGKILL once `killAfter`
 * transactions were confirmed (0: as soon as its realm is open, or — with
 * `killAtUser` — as soon as its user is restored, before the realm opens).
 * `halfway` runs once, after half of them (to flip the network).
 */
async function runChild(
  args: string[],
  options: {
    killAfter?: number;
    killAtUser?: boolean;
    halfway?: () => void;
    onOpen?: () => Promise<void>;
  },
): Promise<RunResult> {
  const proc = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--unstable-kv", "--no-check", child, ...args],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stderr = new Response(proc.stderr).text();
  const stuck = setTimeout(() => proc.kill("SIGKILL"), STUCK_MS);
  const result: RunResult = {
    userLine: "",
    openLine: "",
    confirmed: [],
    finished: undefined,
    stderr: "",
    code: 0,
  };
  const killAfter = options.killAfter;
  let halfwayDone = false;
  try {
    for await (const line of linesOf(proc.stdout)) {
      if (line.startsWith("user ")) {
        result.userLine = line;
        if (options.killAtUser) break;
      } else if (line.startsWith("open")) {
        result.openLine = line;
        await options.onOpen?.();
        if (killAfter === 0) break;
      } else if (line.startsWith("ok ")) {
        result.confirmed.push(line.split(" ")[1]!);
        if (
          !halfwayDone && killAfter !== undefined &&
          result.confirmed.length >= killAfter / 2
        ) {
          halfwayDone = true;
          options.halfway?.();
        }
        if (killAfter !== undefined && result.confirmed.length >= killAfter) {
          break;
        }
      } else if (line.startsWith("drained")) {
        result.finished = line;
      }
    }
  } finally {
    clearTimeout(stuck);
    if (killAfter !== undefined || options.killAtUser) proc.kill("SIGKILL");
    result.code = (await proc.status).code;
    await proc.stdout.cancel().catch(() => {});
    result.stderr = await stderr;
  }
  return result;
}

interface Checked {
  transactions: Set<string>;
  meta: {
    identity: string;
    downloadCursor: number;
    lastClientVersion: number;
    acknowledgedClientVersion: number;
  };
  items: Map<string, unknown>;
}

/** Reads the store with the child dead and checks it is whole. */
async function checkStore(
  kvPath: string,
  userId: string,
): Promise<Checked> {
  const storage = await KvRealmStorage.open(kvPath, {
    userId,
    path: `/${userId}/crash`,
  });
  const local = await LocalRealm.open(storage, Date.now);
  try {
    const meta = local.meta;
    const byTx = new Map<string, number[]>();
    const items = new Map<string, unknown>();
    for (const { id, fields } of local.objects("Item")) {
      const tx = fields.tx as string;
      assert.equal(id, `${tx}/${fields.k}`);
      byTx.set(tx, [...(byTx.get(tx) ?? []), fields.k as number]);
      items.set(id, fields);
    }
    // None half-applied: every transaction has all its objects.
    for (const [tx, ks] of byTx) {
      assert.deepEqual(
        ks.sort(),
        [...Array(OBJECTS_PER_TRANSACTION).keys()],
        `transaction ${tx} is torn`,
      );
    }
    // One transaction, one client version; the unacknowledged ones are
    // pending, in order, with nothing missing.
    assert.equal(byTx.size, meta.lastClientVersion);
    assert.ok(meta.acknowledgedClientVersion <= meta.lastClientVersion);
    assert.deepEqual(
      local.pending.map((p) => p.changeset.clientVersion),
      [
        ...Array(meta.lastClientVersion - meta.acknowledgedClientVersion)
          .keys(),
      ].map((i) => meta.acknowledgedClientVersion + 1 + i),
    );
    return {
      transactions: new Set(byTx.keys()),
      meta: {
        identity: JSON.stringify(meta.clientIdentity),
        downloadCursor: meta.downloadCursor,
        lastClientVersion: meta.lastClientVersion,
        acknowledgedClientVersion: meta.acknowledgedClientVersion,
      },
      items,
    };
  } finally {
    await local.close();
  }
}

Deno.test(`A durable app killed with SIGKILL ${KILLS} times while writing, online and offline, loses no confirmed transaction, tears none, and uploads each exactly once`, async () => {
  const dir = await Deno.makeTempDir({ prefix: "tether-crash-" });
  const kvPath = `${dir}/app.kv`;
  const random = new Prng(SEED);
  try {
    await using server = await startTestServer({
      kv: `${dir}/server.kv`,
      auth: { jwtSecret: secret },
    });
    await using proxy = new TcpProxy(server.addr);
    const jwt = await signUserJwt(secret, {
      sub: "crash-user",
      exp: epochSeconds(3_600_000),
    });
    const offline = () => {
      proxy.mode = "refuse";
      proxy.dropAll();
    };
    const online = () => {
      proxy.mode = "forward";
    };
    const confirmed = new Set<string>();
    let previous: Checked["meta"] | undefined;
    let kills = 0;
    let killedOffline = 0;
    for (let run = 0; run < KILLS; run++) {
      // The first run logs in, so it needs the server; later ones restore.
      const network = run === 0 ? 0 : random.int(5);
      if (network <= 1) online();
      else offline();
      const killAtUser = run > 0 && random.int(10) === 0;
      const killAfter = killAtUser ? undefined : random.int(25);
      const result = await runChild(
        [kvPath, proxy.url, jwt, String(run), "write"],
        {
          ...(killAfter === undefined ? {} : { killAfter }),
          killAtUser,
          // Every fifth run the network flips halfway.
          halfway: network === 4 ? online : network === 1 ? offline : () => {},
        },
      );
      kills++;
      if (proxy.mode === "refuse") killedOffline++;
      assert.equal(
        result.userLine,
        `user crash-user ${run === 0 ? "login" : "restored"}`,
        `run ${run}: ${result.stderr}`,
      );
      if (!killAtUser) {
        assert.ok(result.openLine !== "", `run ${run}: ${result.stderr}`);
      }
      assert.equal(result.confirmed.length, killAfter ?? 0);
      for (const tx of result.confirmed) confirmed.add(tx);
      const checked = await checkStore(kvPath, "crash-user");
      // Nothing confirmed is lost.
      for (const tx of confirmed) {
        assert.ok(checked.transactions.has(tx), `run ${run}: lost ${tx}`);
      }
      // Identity and cursors never go back.
      if (previous !== undefined) {
        if (previous.identity !== "null") {
          assert.equal(checked.meta.identity, previous.identity);
        }
        assert.ok(checked.meta.downloadCursor >= previous.downloadCursor);
        assert.ok(
          checked.meta.lastClientVersion >= previous.lastClientVersion,
        );
        assert.ok(
          checked.meta.acknowledgedClientVersion >=
            previous.acknowledgedClientVersion,
        );
      }
      previous = checked.meta;
    }

    // The server is back for good: a last run uploads what is pending.
    online();
    const drain = await runChild(
      [kvPath, proxy.url, jwt, "drain", "drain"],
      {},
    );
    assert.equal(drain.code, 0, drain.stderr);
    assert.equal(drain.finished, "drained 0");
    const final = await checkStore(kvPath, "crash-user");
    assert.equal(
      final.meta.acknowledgedClientVersion,
      final.meta.lastClientVersion,
    );
    const distinct = final.transactions.size;
    const integrated = server.stats().changesetsIntegrated;
    // Every transaction reached the server (acknowledged), each once.
    assert.equal(integrated, distinct, "duplicated or missing changesets");

    // A second client converges with the store.
    await using app = new App({ baseUrl: server.url, lingerMs: 0 });
    const user = await app.logIn(Credentials.jwt(jwt));
    await using realm = await user.openRealm({
      path: "/~/crash",
      waitForDownload: true,
      signal: bounded(30_000),
    });
    const downloaded = new Map(
      realm.objects("Item").map((o) => [o.id, o.fields as unknown]),
    );
    assert.deepEqual(downloaded, final.items);
    console.log(
      `durable crash test: ${kills} kills (${killedOffline} offline) × ${distinct} transactions (${confirmed.size} confirmed before a kill): lost 0, duplicated ${
        integrated - distinct
      }, seed ${SEED}`,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("App.open refuses a store another process holds, naming its path", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tether-owner-" });
  const kvPath = `${dir}/app.kv`;
  try {
    await using server = await startTestServer({ auth: { jwtSecret: secret } });
    const jwt = await signUserJwt(secret, {
      sub: "owner",
      exp: epochSeconds(3_600_000),
    });
    let refused: unknown;
    const result = await runChild([kvPath, server.url, jwt, "0", "write"], {
      killAfter: 0,
      onOpen: async () => {
        refused = await App.open({ baseUrl: server.url, storage: { kvPath } })
          .then(async (app) => {
            await app.close();
            return undefined;
          }, (error) => error);
      },
    });
    assert.ok(result.openLine !== "", result.stderr);
    assert.ok(refused instanceof SyncError, String(refused));
    assert.equal(refused.code, "storage_locked");
    assert.ok(refused.message.includes(JSON.stringify(kvPath)));
    // Once the owner is gone, the store opens and has its user.
    await using app = await App.open({
      baseUrl: server.url,
      storage: { kvPath },
    });
    assert.equal(app.currentUser?.id, "owner");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
