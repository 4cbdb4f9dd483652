/**
 * `serveSync`: the server's parts wired to one listener, with the shutdown
 * that takes them apart (`docs/SERVER.md` "Embedding it").
 */

import type { SyncHandler } from "./handler.ts";
import type { ServeSyncOptions } from "./options.ts";
import type { ServerRealm } from "./server_realm.ts";
import type { SyncServerStats } from "./stats.ts";
import { SyncService } from "./sync_handler.ts";

export type {
  AuthOptions,
  HistoryOptions,
  LimitOptions,
  ServeSyncOptions,
} from "./options.ts";

/**
 * A running sync server, returned by {@linkcode serveSync}. Dispose it
 * (`await using`) or call `shutdown()`.
 *
 * @example URL, address and stats
 * ```ts
 * import { serveSync, type SyncServer } from "@tether/sync/server";
 * import assert from "node:assert/strict";
 *
 * await using server: SyncServer = await serveSync({
 *   port: 0,
 *   kv: ":memory:",
 *   auth: { allowAnonymous: true },
 *   logger: () => {},
 * });
 * assert.equal(server.url, `http://127.0.0.1:${server.addr.port}`);
 * assert.deepEqual(server.stats(), {
 *   connections: 0,
 *   sessions: 0,
 *   realms: 0,
 *   bytesIn: 0,
 *   bytesOut: 0,
 *   changesetsIntegrated: 0,
 * });
 * ```
 */
export interface SyncServer extends AsyncDisposable {
  /** Base URL of the server, e.g. `http://127.0.0.1:8080` (no trailing slash). */
  readonly url: string;
  /** The address the server listens on. */
  readonly addr: Deno.NetAddr;
  /**
   * The request handler, for calling the HTTP surface without a socket
   * (`/login`, `/health`; WebSocket upgrades need a real connection).
   */
  readonly handler: SyncHandler;
  /** Current counters. */
  stats(): SyncServerStats;
  /**
   * A realm's data from the server's own process: `get`, `objects`,
   * `write` and the `changes` feed (docs/SERVER.md "Server-side data
   * access").
   *
   * @throws {TypeError} For an invalid realm path (or one with `~`).
   */
  realm(path: string): ServerRealm;
  /**
   * Stops the server: refuses new requests, sends every connection an ERROR
   * `server_shutting_down` and a 1001 close, waits (up to
   * `shutdownTimeoutMs`) for in-flight commits, cuts whatever connection is
   * still open, then releases the KV store and lock it opened. Safe to call
   * more than once.
   */
  shutdown(): Promise<void>;
}

/**
 * Starts a sync server: the WebSocket sync endpoint (`GET /sync`),
 * `POST /login` and `GET /health` on `Deno.serve`, with every realm's
 * history in Deno KV.
 *
 * @param options Where to listen, where to store, how users log in.
 * @returns The running server, once it listens.
 * @throws {TypeError} If no login method is enabled or an option is invalid,
 *   or `kv` is a path to something that is not a Deno KV file (left
 *   untouched).
 * @throws {KvLockedError} If another live process serves the same KV file.
 * @throws {Deno.errors.AddrInUse} If the port is taken.
 *
 * @example Serve on a free port, check health, shut down
 * ```ts
 * import { serveSync } from "@tether/sync/server";
 * import assert from "node:assert/strict";
 *
 * await using server = await serveSync({
 *   port: 0,
 *   kv: ":memory:",
 *   auth: { allowAnonymous: true },
 *   logger: () => {},
 * });
 * const response = await fetch(`${server.url}/health`);
 * assert.deepEqual(await response.json(), { status: "ok" });
 * assert.equal(server.stats().connections, 0);
 * ```
 */
export async function serveSync(
  options: ServeSyncOptions,
): Promise<SyncServer> {
  const service = await SyncService.open(options, "");
  let server: SyncServerInstance;
  try {
    server = await SyncServerInstance.listen(service);
  } catch (error) {
    await service.shutdown();
    throw error;
  }
  await service.throwIfAborted();
  return server;
}

class SyncServerInstance implements SyncServer {
  readonly url: string;
  readonly addr: Deno.NetAddr;
  readonly handler: SyncHandler;
  #service: SyncService;

  constructor(service: SyncService, addr: Deno.NetAddr) {
    this.#service = service;
    this.handler = service.handler;
    this.addr = addr;
    this.url = `${service.settings.tls !== null ? "https" : "http"}://${
      urlHost(addr.hostname)
    }:${addr.port}`;
    // Bound, so they work detached (`Deno.addSignalListener("SIGINT",
    // server.shutdown)`), like the handler's.
    this.stats = this.stats.bind(this);
    this.realm = this.realm.bind(this);
    this.shutdown = this.shutdown.bind(this);
  }

  static async listen(service: SyncService): Promise<SyncServerInstance> {
    const { settings } = service;
    const listening = Promise.withResolvers<void>();
    // The switch that closes the listener and every connection at once
    // (see SyncService's shutdown).
    const closeHttp = new AbortController();
    const serveOptions = {
      port: settings.port,
      hostname: settings.hostname,
      signal: closeHttp.signal,
      onListen: () => listening.resolve(),
      ...(settings.tls ?? {}),
    };
    const http = Deno.serve(serveOptions, (request, info) => {
      service.track(info.completed);
      return service.handler(request, info);
    });
    service.attachListener({
      async close() {
        closeHttp.abort();
        await http.finished;
      },
    });
    await listening.promise;
    const server = new SyncServerInstance(service, http.addr);
    service.log(
      "info",
      "listening",
      `Tether sync server listening on ${server.url}`,
    );
    return server;
  }

  stats(): SyncServerStats {
    return this.#service.stats();
  }

  realm(path: string): ServerRealm {
    return this.#service.realm(path);
  }

  shutdown(): Promise<void> {
    return this.#service.shutdown();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.shutdown();
  }
}

function urlHost(hostname: string): string {
  if (hostname === "0.0.0.0") return "127.0.0.1";
  if (hostname === "::") return "[::1]";
  return hostname.includes(":") ? `[${hostname}]` : hostname;
}
