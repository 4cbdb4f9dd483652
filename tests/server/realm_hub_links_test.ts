// A realm hub's group commit links its sessions' signals for that commit only.
import assert from "node:assert/strict";
import { allocateIdentity } from "../../src/server/storage/identities.ts";
import { countAbortListeners } from "../_helpers/abort_listeners.ts";
import { put, upload } from "../_helpers/changesets.ts";
import { testHub } from "./_test_hub.ts";

Deno.test("RealmHub: a commit of several sessions' uploads leaves no listener on their signals", async () => {
  const kv = await Deno.openKv(":memory:");
  try {
    const { hub, retry } = testHub(kv);
    const identities = await Promise.all(
      [0, 1, 2, 3].map(() => allocateIdentity(kv, "/r", retry)),
    );
    const signals = identities.map(() => new AbortController().signal);
    const counts = signals.map(countAbortListeners);
    // Queued at once: the first commits alone, the others as one group
    // while it runs.
    const results = await Promise.all(
      identities.map((identity, index) =>
        hub.integrate(
          identity,
          [upload(1, [put("Task", `t${index}`, { index })])],
          signals[index]!,
        )
      ),
    );
    assert.deepEqual(
      results.map((result) => result.lastIntegratedClientVersion),
      [1, 1, 1, 1],
    );
    assert.ok(
      counts.some((count) => count.added > 0),
      "no commit held more than one session's signal",
    );
    assert.deepEqual(counts.map((count) => count()), [0, 0, 0, 0]);
  } finally {
    kv.close();
  }
});
