/**
 * A realm hub on its own for the hub's tests (`realm_hub_*_test.ts`): no
 * server, no watch, no snapshots, and the retry options its storage calls
 * take.
 */
import { RealmHub } from "../../src/server/realm_hub.ts";
import type { SnapshotScheduler } from "../../src/server/snapshot_scheduler.ts";
import type { ServerKv } from "../../src/server/storage/kv_store.ts";

/** A hub for realm `path` on `kv`, and the retry options it was given. */
export function testHub(
  kv: ServerKv,
  path = "/r",
): { hub: RealmHub; retry: { signal: AbortSignal } } {
  const retry = { signal: new AbortController().signal };
  const hub = new RealmHub(path, {
    kv,
    watchHeads: false,
    retry,
    log: () => {},
    onIntegrated: () => {},
    snapshots: { noteHead() {} } as unknown as SnapshotScheduler,
  });
  return { hub, retry };
}
