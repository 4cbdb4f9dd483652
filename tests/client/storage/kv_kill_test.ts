/**
 * SIGKILL against the Deno KV storage: a child process streams write
 * transactions to a KV-backed local realm and reports each one whose
 * write() resolved; the test kills it at seeded random points and checks,
 * after each restart, that every reported write is there, whole, in
 * client-version order with nothing torn.
 */
import assert from "node:assert/strict";
import { LocalRealm } from "../../../src/client/local_realm.ts";
import { KvRealmStorage } from "../../../src/client/storage/kv.ts";
import { linesOf } from "../../_helpers/lines.ts";
import { Prng } from "../../_helpers/prng.ts";

const realm = { userId: "u1", path: "/u1/kill" };
const child = `
import { LocalRealm } from ${
  JSON.stringify(
    new URL("../../../src/client/local_realm.ts", import.meta.url).href,
  )
};
import { KvRealmStorage } from ${
  JSON.stringify(
    new URL("../../../src/client/storage/kv.ts", import.meta.url).href,
  )
};
const storage = await KvRealmStorage.open(Deno.args[0], ${
  JSON.stringify(realm)
});
const local = await LocalRealm.open(storage, Date.now);
let next = local.meta.lastClientVersion + 1;
console.log("open " + local.meta.lastClientVersion);
// Writes queue without waiting (so commits group); each transaction puts
// three objects, one large enough now and then to need several KV parts.
for (let round = 0; round < 100_000; round++) {
  const batch = [];
  for (let i = 0; i < 8; i++) {
    const n = next++;
    const big = n % 37 === 0 ? "x".repeat(150_000) : "";
    batch.push(local.write((tx) => {
      for (const k of [0, 1, 2]) tx.put("T", n + "/" + k, { n, k, big });
      tx.put("Last", "one", { n });
    }).then((r) => console.log("ok " + r.clientVersion)));
  }
  await Promise.all(batch);
}
`;

Deno.test("KvRealmStorage under SIGKILL: every write whose write() resolved survives, none is torn", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tether-kill-" });
  const kvPath = `${dir}/kill.kv`;
  const script = `${dir}/child.ts`;
  await Deno.writeTextFile(script, child);
  const random = new Prng(20261207);
  let confirmed = 0;
  try {
    for (let kill = 0; kill < 6; kill++) {
      const proc = new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", "--unstable-kv", script, kvPath],
        stdout: "piped",
        stderr: "null",
      }).spawn();
      const target = confirmed + 20 + Math.floor(random.next() * 200);
      let opened = -1;
      try {
        for await (const line of linesOf(proc.stdout)) {
          if (line.startsWith("open ")) opened = Number(line.slice(5));
          if (line.startsWith("ok ")) {
            confirmed = Math.max(confirmed, Number(line.slice(3)));
            if (confirmed >= target) break;
          }
        }
        assert.ok(opened >= 0, "the child opened the realm");
      } finally {
        proc.kill("SIGKILL");
        await proc.status;
        await proc.stdout.cancel().catch(() => {});
      }
      const storage = await KvRealmStorage.open(kvPath, realm);
      const local = await LocalRealm.open(storage, Date.now);
      try {
        const last = local.meta.lastClientVersion;
        assert.ok(last >= confirmed, `${last} < ${confirmed} confirmed`);
        assert.deepEqual(
          local.pending.map((p) => p.changeset.clientVersion),
          [...Array(last).keys()].map((i) => i + 1),
        );
        for (let n = 1; n <= last; n++) {
          for (const k of [0, 1, 2]) {
            const fields = local.get("T", `${n}/${k}`);
            assert.equal(fields?.n, n, `object ${n}/${k}`);
          }
        }
        assert.equal(local.get("T", `${last + 1}/0`), undefined);
        assert.deepEqual(
          local.get("Last", "one"),
          last === 0 ? undefined : { n: last },
        );
        confirmed = last;
      } finally {
        await local.close();
      }
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
