// The admin /changes route links its feed to the server's lifetime for the response only.
import assert from "node:assert/strict";
import { handleAdminRoute } from "../../src/server/admin_routes.ts";
import {
  ChangesCompactedError,
  type RealmChangeset,
  type ServerRealms,
} from "../../src/server/server_realm.ts";
import { countAbortListeners } from "../_helpers/abort_listeners.ts";

const PATH = "/admin/realms/r/changes";

/** Realms whose feed is `open`, recording the signal each feed was given. */
function realmsWith(
  open: () => ReadableStream<RealmChangeset>,
  given: AbortSignal[],
): ServerRealms {
  return {
    realm: (path: string) => ({ path }),
    openFeed: (_path: string, _since: number, signal: AbortSignal) => {
      given.push(signal);
      return Promise.resolve(open());
    },
  } as unknown as ServerRealms;
}

Deno.test("admin /changes leaves no listener on the server's lifetime once the response ends, is cancelled, fails or is refused", async (t) => {
  const lifetime = new AbortController();
  const listening = countAbortListeners(lifetime.signal);
  const given: AbortSignal[] = [];
  const context = (open: () => ReadableStream<RealmChangeset>) => ({
    realms: realmsWith(open, given),
    maxBodyBytes: 1024,
    lifetime: lifetime.signal,
    keepAliveMs: 60_000,
  });
  const request = () => new Request(`http://admin.test${PATH}?since=0`);

  await t.step("the feed ends", async () => {
    const response = await handleAdminRoute(
      request(),
      PATH,
      context(() =>
        ReadableStream.from([{ version: 1, changes: [] }] as RealmChangeset[])
      ),
    );
    assert.equal(response.status, 200);
    assert.equal(listening(), 1, "the response follows the lifetime");
    assert.equal(await response.text(), '{"version":1,"changes":[]}\n');
    assert.equal(listening(), 0);
  });

  await t.step("the reader cancels the response", async () => {
    const response = await handleAdminRoute(
      request(),
      PATH,
      context(() => new ReadableStream<RealmChangeset>({ pull() {} })),
    );
    const reader = response.body!.getReader();
    const pending = reader.read();
    await reader.cancel();
    assert.deepEqual(await pending, { done: true, value: undefined });
    assert.equal(listening(), 0);
  });

  await t.step("the feed fails", async () => {
    const failure = new Error("storage failed");
    const response = await handleAdminRoute(
      request(),
      PATH,
      context(() =>
        new ReadableStream<RealmChangeset>({
          pull(controller) {
            controller.error(failure);
          },
        })
      ),
    );
    await assert.rejects(response.text(), (error) => error === failure);
    assert.equal(listening(), 0);
  });

  await t.step("the feed is refused", async () => {
    const response = await handleAdminRoute(
      request(),
      PATH,
      context(() => {
        throw new ChangesCompactedError("/r", 0);
      }),
    );
    assert.equal(response.status, 410);
    await response.body?.cancel();
    assert.equal(listening(), 0);
  });

  // Nothing any of them was given follows the lifetime any more.
  lifetime.abort(new Error("The server is shutting down"));
  assert.equal(given.length, 4);
  assert.deepEqual(given.map((signal) => signal.aborted), [
    false,
    true,
    false,
    false,
  ]);
});
