/**
 * Client-side helpers for the conformance suite. Like the shared helpers it
 * uses (`tests/_helpers/`), they import only the public entry points
 * (`mod.ts`, `server.ts`), as a test outside the repository would.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  App,
  type AppOpenOptions,
  type AppOptions,
  type ConnectionStateChange,
  Credentials,
  type Realm,
  SyncError,
  type SyncSession,
  type User,
} from "../../mod.ts";
import type {
  RealmChangeset,
  ServerRealm,
  ServeSyncOptions,
} from "../../server.ts";
import { TcpProxy } from "../_helpers/tcp_proxy.ts";
import { startTestServer, type TestServer } from "../_helpers/test_server.ts";
import { bounded, Recorder } from "../_helpers/waits.ts";

/**
 * `App.open` options for a durable app on the Deno KV file `kvPath`, with
 * {@link fastApp}'s small retry delays; `extra` adds or overrides.
 */
export function durableAppOptions(
  baseUrl: string,
  kvPath: string,
  extra: Partial<AppOpenOptions> = {},
): AppOpenOptions {
  return {
    baseUrl,
    storage: { kvPath },
    reconnect: { minDelayMs: 10, maxDelayMs: 50 },
    lingerMs: 0,
    ...extra,
  };
}

/** Runs `fn` in a fresh temporary directory, removed afterwards. */
export async function withTempDir(
  prefix: string,
  fn: (dir: string) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** The `SyncError` `promise` rejects with; fails the test if it resolves. */
export async function rejection(promise: Promise<unknown>): Promise<SyncError> {
  const error = await promise.then(
    () => assert.fail("resolved where it had to reject"),
    (error: unknown) => error,
  );
  assert.ok(error instanceof SyncError, String(error));
  return error;
}

/** An app with small retry delays, suitable for tests over real sockets. */
export function fastApp(
  baseUrl: string,
  options: Partial<AppOptions> = {},
): App {
  return new App({
    baseUrl,
    reconnect: { minDelayMs: 10, maxDelayMs: 50 },
    lingerMs: 0,
    progressIntervalMs: 0,
    ...options,
  });
}

/** Opens `path` for `user` once its initial download is in, within one wait. */
export function openDownloaded(user: User, path: string): Promise<Realm> {
  return user.openRealm({ path, waitForDownload: true, signal: bounded() });
}

/** An anonymous user of an app, with one realm open and downloaded. */
export interface Client extends AsyncDisposable {
  readonly app: App;
  readonly user: User;
  readonly realm: Realm;
  readonly session: SyncSession;
}

/**
 * Logs `app` in anonymously and opens `path`. The client owns `app` from the
 * call on, so a failed login or open still closes it; disposing closes the
 * realm, then the app.
 */
export async function openClient(
  app: App,
  path: string = "/~/todos",
): Promise<Client> {
  await using stack = new AsyncDisposableStack();
  stack.use(app);
  const user = await app.logIn(Credentials.anonymous());
  const realm = stack.use(await openDownloaded(user, path));
  const owned = stack.move();
  return {
    app,
    user,
    realm,
    session: realm.syncSession,
    [Symbol.asyncDispose]: () => owned.disposeAsync(),
  };
}

/** A server, a proxy in front of it, and a client that reaches it through it. */
export interface ProxiedClient extends Client {
  readonly server: TestServer;
  readonly proxy: TcpProxy;
}

/**
 * Starts a server and a proxy and opens a client through the proxy: a
 * {@link fastApp} with `options.app`, or what `options.app` builds when it is
 * a function (a test of App's own defaults must not get fastApp's).
 * Disposing tears down in reverse: realm, app, proxy, server.
 */
export async function proxiedClient(
  options: {
    server?: Partial<ServeSyncOptions>;
    app?: Partial<AppOptions> | ((baseUrl: string) => App);
    path?: string;
  } = {},
): Promise<ProxiedClient> {
  await using stack = new AsyncDisposableStack();
  const server = stack.use(await startTestServer(options.server));
  const proxy = stack.use(new TcpProxy(server.addr));
  const app = typeof options.app === "function"
    ? options.app(proxy.url)
    : fastApp(proxy.url, options.app);
  const client = stack.use(await openClient(app, options.path));
  const owned = stack.move();
  return {
    server,
    proxy,
    app: client.app,
    user: client.user,
    realm: client.realm,
    session: client.session,
    [Symbol.asyncDispose]: () => owned.disposeAsync(),
  };
}

/** Records `session`'s connection state changes for at most one wait. */
export function recordConnectionStates(
  session: SyncSession,
): Recorder<ConnectionStateChange> {
  return new Recorder(session.connectionStateChanges({ signal: bounded() }));
}

/**
 * Writes three objects to the realm at `path` of a server that keeps no
 * history (`retainVersions: 0`) and waits until its snapshot has moved past
 * version 1, so a feed from version 0 is compacted away. Returns the realm.
 */
export async function compactedRealm(
  server: TestServer,
  path: string,
): Promise<ServerRealm> {
  const realm = server.realm(path);
  for (let index = 0; index < 3; index++) {
    await realm.write((tx) => tx.put("Task", `t${index}`, { index }));
  }
  // Each write moves the snapshot in the background; wait until version 1
  // is gone from the history.
  await server.waitForLog(
    (record) =>
      record.event === "snapshot_advanced" &&
      /compacted through [1-9]/.test(record.message),
    bounded(),
  );
  return realm;
}

/** Reads `count` items of a feed, then stops it. */
export async function take(
  feed: ReadableStream<RealmChangeset>,
  count: number,
): Promise<RealmChangeset[]> {
  const items: RealmChangeset[] = [];
  const reader = feed.getReader();
  try {
    while (items.length < count) {
      const { done, value } = await reader.read();
      if (done) break;
      items.push(value);
    }
  } finally {
    await reader.cancel();
  }
  return items;
}

/** JSON for a failure message: bigints, NaN, infinities and -0 shown. */
export function replacer(_key: string, value: unknown): unknown {
  if (typeof value === "bigint") return `${value}n`;
  if (typeof value === "number" && !Number.isFinite(value)) {
    return String(value);
  }
  if (Object.is(value, -0)) return "-0";
  return value;
}
