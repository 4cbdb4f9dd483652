/**
 * The child process of `query_storage_test.ts`, through the public API only:
 * a durable app that restores its saved user, opens an indexed shared realm
 * and writes random transactions one after another (puts, updates and
 * deletes of a small pool of objects, and now and then a transaction big
 * enough to be stored in several parts), printing `ok <tx>` once each
 * `write()` resolved, until it is killed.
 *
 * Usage: `deno run -A --unstable-kv _query_storage_child.ts <kvPath> <baseUrl> <seed>`
 *
 * @module
 */

import { App, type Fields } from "../../mod.ts";
import { Prng } from "../_helpers/prng.ts";

/** The realm the child writes, shared with the parent's server writes. */
export const CHILD_PATH = "/shared/crash-queries";
/** The indexes the child opens its realm with. */
export const CHILD_INDEXES = { Item: ["g", "v"] };

/** Random fields of an `Item`, for the child and the server's writer. */
export function itemFields(prng: Prng, by: string): Fields {
  const fields: Fields = { by };
  // Each field is missing now and then: an index holds missing fields too.
  if (prng.int(5) !== 0) fields.g = prng.int(4);
  if (prng.int(5) !== 0) {
    fields.v = prng.pick([
      null,
      true,
      -0,
      0,
      1.5,
      NaN,
      7n,
      "x",
      "y",
      new Uint8Array([1]),
      new Date(5),
      [1],
      { k: 1 },
    ]);
  }
  return fields;
}

/** Objects a big transaction of the child puts (ids `b0`…). */
export const BIG_OBJECTS = 400;

/** The ids both writers pick from. */
export const ITEM_IDS: string[] = Array.from(
  { length: 40 },
  (_, i) => `i${i}`,
);

if (import.meta.main) {
  const [kvPath, baseUrl, seed] = Deno.args;
  if (kvPath === undefined || baseUrl === undefined || seed === undefined) {
    throw new TypeError(
      "usage: _query_storage_child.ts <kvPath> <baseUrl> <seed>",
    );
  }
  const prng = new Prng(Number(seed));
  await using app = await App.open({
    baseUrl,
    storage: { kvPath },
    reconnect: { minDelayMs: 10, maxDelayMs: 50 },
    lingerMs: 0,
    logger: () => {},
  });
  const user = app.currentUser;
  if (user === undefined) throw new Error("no saved user to restore");
  await using realm = await user.openRealm({
    path: CHILD_PATH,
    indexes: CHILD_INDEXES,
  });
  console.log("open");
  // One write at a time: at a kill, at most one has not resolved.
  for (let tx = 0; tx < 100_000; tx++) {
    await realm.write((t) => {
      if (prng.int(4) === 0) {
        // A big transaction: its commit is written in several parts.
        for (let k = 0; k < BIG_OBJECTS; k++) {
          t.put("Item", `b${k}`, {
            ...itemFields(prng, "child"),
            pad: `${tx}`.padEnd(300, "."),
          });
        }
        return;
      }
      // Whether each object touched exists, as this transaction left it.
      const live = new Map<string, boolean>();
      for (let step = 0, n = 1 + prng.int(3); step < n; step++) {
        const id = prng.pick(ITEM_IDS);
        const roll = prng.int(10);
        const exists = live.get(id) ?? realm.get("Item", id) !== undefined;
        if (roll < 5) {
          t.put("Item", id, itemFields(prng, "child"));
          live.set(id, true);
        } else if (roll < 8 && exists) {
          t.update("Item", id, { g: prng.int(4) });
        } else {
          t.delete("Item", id);
          live.set(id, false);
        }
      }
    });
    console.log(`ok ${tx}`);
  }
}
