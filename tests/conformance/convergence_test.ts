// Conformance: convergence (docs/ARCHITECTURE.md "Data model") — any set of clients
// that has seen the same changesets holds the same state, whatever the
// order; per-field last-writer-wins; deletes win over older writes.

import assert from "node:assert/strict";
import { Credentials, type Realm } from "../../mod.ts";
import { fastApp, openDownloaded } from "./_helpers.ts";
import { bounded } from "../_helpers/waits.ts";
import { startTestServer } from "../_helpers/test_server.ts";

/** A small seeded generator (mulberry32), so a failure can be replayed. */
function prng(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// Fixed seeds keep the suite deterministic; TETHER_SEED=<n> explores others.
const SEEDS = Deno.env.get("TETHER_SEED") === undefined
  ? [1, 2, 3]
  : [Number(Deno.env.get("TETHER_SEED"))];

for (const seed of SEEDS) {
  Deno.test(`Convergence: three clients writing concurrently, pausing and resuming at random, end with the same objects (seed ${seed})`, async () => {
    const random = prng(seed);
    const int = (n: number) => Math.floor(random() * n);
    await using server = await startTestServer({
      permissions: () => "readwrite",
    });
    const apps = [
      fastApp(server.url),
      fastApp(server.url),
      fastApp(server.url),
    ];
    const realms: Realm[] = [];
    try {
      for (const app of apps) {
        const user = await app.logIn(Credentials.anonymous());
        realms.push(await openDownloaded(user, "/shared/converge"));
      }
      for (let round = 0; round < 8; round++) {
        for (const realm of realms) {
          if (int(3) === 0) realm.syncSession.pause();
          const writes = 1 + int(3);
          for (let w = 0; w < writes; w++) {
            await realm.write((tx) => {
              const id = `o${int(5)}`;
              const kind = int(4);
              const exists = realm.get("T", id) !== undefined;
              if (kind === 0) tx.delete("T", id);
              else if (kind === 1 && exists) {
                tx.update("T", id, { [`f${int(3)}`]: int(100) });
              } else {
                tx.put("T", id, { f0: int(100), f1: `s${int(10)}` });
              }
            });
          }
          if (int(2) === 0) realm.syncSession.resume();
        }
      }
      for (const realm of realms) realm.syncSession.resume();
      for (const realm of realms) {
        await realm.syncSession.waitForUpload({ signal: bounded() });
      }
      for (const realm of realms) {
        await realm.syncSession.waitForDownload({ signal: bounded() });
      }
      const sorted = (realm: Realm) =>
        realm.objects("T").sort((a, b) => a.id.localeCompare(b.id));
      assert.deepEqual(sorted(realms[1]!), sorted(realms[0]!), `seed ${seed}`);
      assert.deepEqual(sorted(realms[2]!), sorted(realms[0]!), `seed ${seed}`);
    } finally {
      for (const realm of realms) await realm.close();
      for (const app of apps) await app.close();
    }
  });
}
