/**
 * The child process of the durable crash test (tests/e2e/durable_crash_test.ts):
 * opens a durable app through the public API, restores or logs in its user,
 * opens one realm and either streams transactions (printing `ok <tx>` once
 * each `write()` resolved) until it is killed, or — in `drain` mode — waits
 * for every pending write to be acknowledged and exits.
 *
 * Usage: `deno run -A durable_child.ts <kvPath> <baseUrl> <jwt> <run> <write|drain>`
 *
 * @module
 */

import { App, Credentials } from "../../mod.ts";

/** Objects each transaction writes, sharing its tx id. */
export const OBJECTS_PER_TRANSACTION = 3;

if (import.meta.main) {
  const [kvPath, baseUrl, jwt, run, mode] = Deno.args;
  if (
    kvPath === undefined || baseUrl === undefined || jwt === undefined ||
    run === undefined || (mode !== "write" && mode !== "drain")
  ) {
    throw new TypeError(
      "usage: durable_child.ts <kvPath> <baseUrl> <jwt> <run> <write|drain>",
    );
  }
  await using app = await App.open({
    baseUrl,
    storage: { kvPath },
    reconnect: { minDelayMs: 10, maxDelayMs: 100 },
    connectTimeoutMs: 2_000,
    lingerMs: 0,
    logger: () => {},
  });
  const restored = app.currentUser;
  const user = restored ?? await app.logIn(Credentials.jwt(jwt));
  console.log(
    `user ${user.id} ${restored === undefined ? "login" : "restored"}`,
  );
  await using realm = await user.openRealm({ path: "/~/crash" });
  const pending = realm.pendingWrites();
  console.log(`open ${pending.map((r) => r.clientVersion).join(",")}`);
  if (mode === "drain") {
    const signal = AbortSignal.timeout(60_000);
    await Promise.all(pending.map((r) => r.waitForUpload({ signal })));
    console.log(`drained ${realm.pendingWrites().length}`);
  } else {
    // Four writes in flight at a time, so commits group as they do in an
    // app; a kill lands anywhere in the commit pipeline.
    let seq = 0;
    for (let round = 0; round < 100_000; round++) {
      const batch: Promise<void>[] = [];
      for (let i = 0; i < 4; i++) {
        const tx = `${run}-${seq++}`;
        batch.push(
          realm.write((t) => {
            for (let k = 0; k < OBJECTS_PER_TRANSACTION; k++) {
              t.put("Item", `${tx}/${k}`, { tx, k });
            }
          }).then((receipt) =>
            console.log(`ok ${tx} ${receipt.clientVersion}`)
          ),
        );
      }
      await Promise.all(batch);
    }
  }
}
