/**
 * Client-side helpers for the conformance suite. Like the shared helpers it
 * uses (`tests/_helpers/`), they import only the public entry points
 * (`mod.ts`, `server.ts`), as a test outside the repository would.
 *
 * @module
 */

import {
  App,
  type AppOptions,
  type ConnectionStateChange,
  Credentials,
  type Realm,
  type SyncSession,
  type User,
} from "../../mod.ts";
import type { ServeSyncOptions } from "../../server.ts";
import { TcpProxy } from "../_helpers/tcp_proxy.ts";
import { startTestServer, type TestServer } from "../_helpers/test_server.ts";

/** Upper bound of any single wait in this suite, in milliseconds. */
export const WAIT_MS = 5_000;

/** A fresh bounded signal for one wait. */
export function bounded(ms: number = WAIT_MS): AbortSignal {
  return AbortSignal.timeout(ms);
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
 * Reads a stream in the background, keeping every item, so a test can wait
 * for a condition on what has arrived so far.
 */
export class Recorder<T> implements AsyncDisposable {
  readonly items: T[] = [];
  /** Set once the stream has ended (`"end"`) or errored (the error). */
  outcome: { kind: "end" } | { kind: "error"; error: unknown } | undefined;
  #reader: ReadableStreamDefaultReader<T>;
  #waiters = new Set<() => void>();
  #loop: Promise<void>;

  constructor(stream: ReadableStream<T>) {
    this.#reader = stream.getReader();
    this.#loop = this.#read();
  }

  async #read(): Promise<void> {
    try {
      for (;;) {
        const { done, value } = await this.#reader.read();
        if (done) {
          this.outcome = { kind: "end" };
          break;
        }
        this.items.push(value);
        this.#wake();
      }
    } catch (error) {
      this.outcome = { kind: "error", error };
    }
    this.#wake();
  }

  #wake(): void {
    for (const waiter of this.#waiters) waiter();
  }

  /**
   * Resolves with the first item (at index `from` or later) that satisfies
   * `predicate`; rejects when the stream finishes first or `signal` aborts.
   */
  async until(
    predicate: (item: T) => boolean,
    options: { from?: number; signal?: AbortSignal } = {},
  ): Promise<T> {
    const signal = options.signal ?? bounded();
    let index = options.from ?? 0;
    for (;;) {
      for (; index < this.items.length; index++) {
        const item = this.items[index]!;
        if (predicate(item)) return item;
      }
      if (this.outcome !== undefined) {
        throw new Error(
          `stream finished (${this.outcome.kind}) before the condition held; got ${
            JSON.stringify(this.items)
          }`,
        );
      }
      await this.#next(signal);
    }
  }

  /** Resolves once the stream has ended or errored. */
  async finished(signal: AbortSignal = bounded()): Promise<void> {
    while (this.outcome === undefined) await this.#next(signal);
  }

  #next(signal: AbortSignal): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      if (signal.aborted) {
        reject(
          new Error(
            `timed out waiting; got ${
              JSON.stringify(this.items, (_k, v) =>
                typeof v === "bigint" ? String(v) : v)
            }`,
          ),
        );
        return;
      }
      const done = () => {
        this.#waiters.delete(done);
        signal.removeEventListener("abort", done);
        resolve();
      };
      this.#waiters.add(done);
      signal.addEventListener("abort", done);
    });
  }

  /** Stops reading and waits for the loop to finish. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.#reader.cancel().catch(() => {});
    await this.#loop;
  }
}

/** Resolves once `predicate()` holds, checked after each call of `poke`. */
export function condition(
  subscribe: (poke: () => void) => () => void,
  predicate: () => boolean,
  signal: AbortSignal = bounded(),
): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    if (predicate()) {
      resolve();
      return;
    }
    const check = () => {
      if (!predicate()) return;
      cleanup();
      resolve();
    };
    const abort = () => {
      cleanup();
      reject(new Error("timed out waiting for a condition"));
    };
    const unsubscribe = subscribe(check);
    const cleanup = () => {
      unsubscribe();
      signal.removeEventListener("abort", abort);
    };
    signal.addEventListener("abort", abort);
  });
}
