import { jsonError, jsonResponse, shuttingDown } from "./http_responses.ts";
import { handleLogin, loginPreflight } from "./login.ts";
import type { Log } from "./log.ts";
import type { TokenAuthority } from "./tokens.ts";

/**
 * The HTTP surface (docs/ARCHITECTURE.md "HTTP surface"): `GET /sync` (the
 * WebSocket endpoint), `POST /login`, `GET /health`; JSON errors for the
 * rest.
 */

/**
 * A request handler as `Deno.serve` calls it; `server.handler` is one, so
 * the HTTP surface can be exercised without a socket.
 *
 * @example Calling the handler directly
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
 * const response = await server.handler(new Request("http://x/nowhere"));
 * assert.equal(response.status, 404);
 * assert.equal((await response.json()).error.code, "not_found");
 * ```
 */
export type SyncHandler = (
  request: Request,
  info?: Deno.ServeHandlerInfo,
) => Response | Promise<Response>;

/** What the handler needs from its server. */
export interface HandlerContext {
  /** False once shutdown has begun. */
  isServing(): boolean;
  /**
   * Aborts when shutdown begins: requests still reading their body give
   * up then, so they do not hold the shutdown until its deadline.
   */
  lifetime: AbortSignal;
  /**
   * Upgrades a WebSocket request and attaches a connection. Must call
   * `Deno.upgradeWebSocket` before awaiting anything: a client that leaves
   * during an await would leave an upgrade that never completes, and
   * `Deno.HttpServer.shutdown()` waiting for it forever.
   */
  acceptSocket(request: Request): Response;
  tokens: TokenAuthority;
  log: Log;
}

/** Builds the server's request handler. */
export function createHandler(context: HandlerContext): SyncHandler {
  return (request) => {
    const { pathname } = new URL(request.url);
    switch (pathname) {
      case "/sync":
        if (request.method !== "GET") return methodNotAllowed("GET");
        if (request.headers.get("upgrade")?.toLowerCase() !== "websocket") {
          return jsonError(
            426,
            "upgrade_required",
            "GET /sync is the WebSocket sync endpoint: send Upgrade: websocket",
            { upgrade: "websocket" },
          );
        }
        if (!context.isServing()) return shuttingDown();
        return context.acceptSocket(request);
      case "/login":
        if (request.method === "OPTIONS") return loginPreflight();
        if (request.method !== "POST") return methodNotAllowed("POST, OPTIONS");
        if (!context.isServing()) return shuttingDown();
        return handleLogin(
          request,
          context.tokens,
          context.log,
          context.lifetime,
        );
      case "/health":
        if (request.method !== "GET" && request.method !== "HEAD") {
          return methodNotAllowed("GET, HEAD");
        }
        return context.isServing()
          ? jsonResponse(200, { status: "ok" })
          : jsonResponse(503, { status: "shutting_down" });
      default:
        return jsonError(
          404,
          "not_found",
          `No route for ${request.method} ${pathname}`,
        );
    }
  };
}

function methodNotAllowed(allow: string): Response {
  return jsonError(
    405,
    "method_not_allowed",
    `Method not allowed here; use ${allow}`,
    { allow },
  );
}
