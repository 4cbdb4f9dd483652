/**
 * The child process of `durable_storage_test.ts`, through the public API
 * only: a durable app that either holds its store until its stdin closes
 * (`hold`), or restores its saved user and writes transactions one after
 * another, printing `ok <tx> <clientVersion>` once each `write()` resolved,
 * until it is killed (`write`).
 *
 * Usage: `deno run -A durable_child.ts hold <kvPath>` or
 * `deno run -A durable_child.ts write <kvPath> <baseUrl>`
 *
 * @module
 */

import { App } from "../../mod.ts";

/** Objects each transaction of `write` puts, sharing its tx number. */
export const OBJECTS_PER_TRANSACTION = 3;

if (import.meta.main) {
  const [mode, kvPath, baseUrl = "http://127.0.0.1:1"] = Deno.args;
  if ((mode !== "hold" && mode !== "write") || kvPath === undefined) {
    throw new TypeError(
      "usage: _durable_child.ts hold <kvPath> | write <kvPath> <baseUrl>",
    );
  }
  await using app = await App.open({
    baseUrl,
    storage: { kvPath },
    reconnect: { minDelayMs: 10, maxDelayMs: 50 },
    lingerMs: 0,
    logger: () => {},
  });
  if (mode === "hold") {
    console.log("held");
    // Until the parent closes stdin (or kills this process).
    for await (const _ of Deno.stdin.readable) { /* nothing to read */ }
  } else {
    const user = app.currentUser;
    if (user === undefined) throw new Error("no saved user to restore");
    await using realm = await user.openRealm({ path: "/~/crash" });
    console.log(`open ${realm.pendingWrites().length}`);
    // One write at a time: at a kill, at most one has not resolved.
    for (let tx = 0; tx < 100_000; tx++) {
      const receipt = await realm.write((t) => {
        for (let k = 0; k < OBJECTS_PER_TRANSACTION; k++) {
          t.put("Item", `${tx}/${k}`, { tx, k });
        }
      });
      console.log(`ok ${tx} ${receipt.clientVersion}`);
    }
  }
}
