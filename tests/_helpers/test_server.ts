/**
 * Starts a sync server for a test: `127.0.0.1`, a free port, an in-memory
 * KV, anonymous login, and a log collector instead of the console. Use with
 * `await using`; every option can be overridden. It imports only the public
 * `server.ts`, so the conformance suite can use it.
 *
 * @module
 */
import {
  type LogRecord,
  serveSync,
  type ServeSyncOptions,
  type SyncServer,
} from "../../server.ts";

/** What `POST /login` answers. */
export interface TestLogin {
  userId: string;
  accessToken: string;
  accessTokenExpiresAt: number;
  refreshToken: string;
}

/**
 * A running test server: a `SyncServer` itself (so it goes wherever one
 * does) with the log collector and a login shortcut; dispose it to shut it
 * down.
 */
export interface TestServer extends SyncServer {
  /** The server itself, without the test's additions. */
  server: SyncServer;
  /** Every log record so far. */
  logs: LogRecord[];
  /** Logs in anonymously (or with the given body) and returns the tokens. */
  login(body?: Record<string, unknown>): Promise<TestLogin>;
  /**
   * Waits for a log record matching `predicate` (including records already
   * logged), up to the signal (default 5 s).
   */
  waitForLog(
    predicate: (record: LogRecord) => boolean,
    signal?: AbortSignal,
  ): Promise<LogRecord>;
}

/** Starts a test server; see the file comment. */
export async function startTestServer(
  options: Partial<ServeSyncOptions> = {},
): Promise<TestServer> {
  const logs: LogRecord[] = [];
  const watchers = new Set<(record: LogRecord) => void>();
  const server = await serveSync({
    port: 0,
    hostname: "127.0.0.1",
    kv: ":memory:",
    auth: { allowAnonymous: true },
    ...options,
    logger: (record) => {
      logs.push(record);
      options.logger?.(record);
      for (const watcher of watchers) watcher(record);
    },
  });
  const url = server.url;
  return {
    server,
    url,
    addr: server.addr,
    handler: server.handler,
    stats: () => server.stats(),
    realm: (path) => server.realm(path),
    shutdown: () => server.shutdown(),
    logs,
    async login(body = { provider: "anonymous" }) {
      const response = await fetch(`${url}/login`, {
        method: "POST",
        body: JSON.stringify(body),
      });
      const json = await response.json();
      if (response.status !== 200) {
        throw new Error(
          `Login failed: ${response.status} ${JSON.stringify(json)}`,
        );
      }
      return json as TestLogin;
    },
    waitForLog(predicate, signal = AbortSignal.timeout(5000)) {
      const found = logs.find(predicate);
      if (found !== undefined) return Promise.resolve(found);
      if (signal.aborted) return Promise.reject(signal.reason);
      return new Promise((resolve, reject) => {
        const watcher = (record: LogRecord) => {
          if (!predicate(record)) return;
          watchers.delete(watcher);
          signal.removeEventListener("abort", onAbort);
          resolve(record);
        };
        const onAbort = () => {
          watchers.delete(watcher);
          reject(signal.reason);
        };
        watchers.add(watcher);
        signal.addEventListener("abort", onAbort, { once: true });
      });
    },
    async [Symbol.asyncDispose]() {
      await server.shutdown();
    },
  };
}
