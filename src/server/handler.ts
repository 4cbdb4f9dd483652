import { jsonError, jsonResponse, shuttingDown } from "./http_responses.ts";
import { handleLogin, loginPreflight } from "./login.ts";
import type { Log } from "./log.ts";
import type { TokenAuthority } from "./tokens.ts";
import { type AdminRouteContext, handleAdminRoute } from "./admin_routes.ts";
import type { OpsAccess, OpsRouteKind } from "./ops_access.ts";
import { PROMETHEUS_CONTENT_TYPE } from "./metrics.ts";
import { STATUS_PAGE_CONTENT_TYPE } from "./status_page.ts";

/**
 * The HTTP surface, the one place routes are decided (docs/SERVER.md "HTTP
 * surface"): `GET /sync` (the WebSocket endpoint), `POST /login`,
 * `GET /health`, `GET /metrics`, `GET /status` and the admin routes, under
 * an optional prefix; JSON errors for the rest.
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
  /**
   * Where the surface is mounted, e.g. `/api/sync` (no trailing slash), or
   * `""`; paths outside it answer 404.
   */
  prefix: string;
  /** Who may reach `/metrics`, `/status` and the admin routes. */
  access: OpsAccess;
  /** The Prometheus exposition of the server's metrics. */
  metrics(): string;
  /** The status page's HTML. */
  status(): string;
  /** One KV read: resolves when the store answers, rejects when it fails. */
  checkStore(): Promise<void>;
  /** The admin routes' server parts. */
  admin: AdminRouteContext;
}

// How long GET /health waits for the store before calling it unavailable.
const HEALTH_TIMEOUT_MS = 5_000;

/** Builds the server's request handler. */
export function createHandler(context: HandlerContext): SyncHandler {
  const prefix = context.prefix;
  return (request, info) => {
    const full = new URL(request.url).pathname;
    let pathname = full;
    if (prefix !== "") {
      if (full !== prefix && !full.startsWith(prefix + "/")) {
        return notFound(request.method, full);
      }
      pathname = full.slice(prefix.length) || "/";
    }
    if (pathname.startsWith("/admin/")) {
      return guarded(
        context,
        request,
        info,
        "admin",
        () => handleAdminRoute(request, pathname, context.admin),
      );
    }
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
        if (!context.isServing()) {
          return jsonResponse(503, { status: "shutting_down" });
        }
        return health(context);
      case "/metrics":
        if (request.method !== "GET") return methodNotAllowed("GET");
        return guarded(
          context,
          request,
          info,
          "monitoring",
          () => uncached(context.metrics(), PROMETHEUS_CONTENT_TYPE),
        );
      case "/status":
        if (request.method !== "GET") return methodNotAllowed("GET");
        return guarded(
          context,
          request,
          info,
          "monitoring",
          () => uncached(context.status(), STATUS_PAGE_CONTENT_TYPE),
        );
      default:
        return notFound(request.method, full);
    }
  };
}

async function guarded(
  context: HandlerContext,
  request: Request,
  info: Deno.ServeHandlerInfo | undefined,
  kind: OpsRouteKind,
  answer: () => Response | Promise<Response>,
): Promise<Response> {
  const decision = await context.access.check(request, info?.remoteAddr, kind);
  if (decision !== "allow") return context.access.refusal(decision, request);
  if (!context.isServing()) return shuttingDown();
  return await answer();
}

async function health(context: HandlerContext): Promise<Response> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    await Promise.race([
      context.checkStore(),
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () =>
            reject(
              new Error(
                `The store did not answer within ${HEALTH_TIMEOUT_MS} ms`,
              ),
            ),
          HEALTH_TIMEOUT_MS,
        );
      }),
    ]);
    return jsonResponse(200, { status: "ok" });
  } catch (error) {
    return jsonResponse(503, {
      status: "unavailable",
      error: {
        code: "store_unavailable",
        message: `Cannot read the store: ${
          error instanceof Error ? error.message : String(error)
        }`,
      },
    });
  } finally {
    clearTimeout(timer);
  }
}

function notFound(method: string, pathname: string): Response {
  return jsonError(404, "not_found", `No route for ${method} ${pathname}`);
}

function methodNotAllowed(allow: string): Response {
  return jsonError(
    405,
    "method_not_allowed",
    `Method not allowed here; use ${allow}`,
    { allow },
  );
}

/** A page that must be fetched afresh every time (metrics, status). */
function uncached(body: string, contentType: string): Response {
  return new Response(body, {
    headers: { "content-type": contentType, "cache-control": "no-store" },
  });
}
