import { jsonError } from "./http_responses.ts";

/**
 * Who may see the operator routes (docs/SERVER.md "Metrics", "Status page",
 * "Server-side data access"): with an `adminToken`, requests that present
 * it as a Bearer token; without one, loopback clients for `/metrics` and
 * `/status`, and nobody for the admin routes (which then do not exist).
 */

/**
 * The two kinds of operator route: `monitoring` (`/metrics`, `/status`)
 * and `admin` (`/admin/…`: data read, write, change feed).
 */
export type OpsRouteKind = "monitoring" | "admin";

/**
 * What {@linkcode OpsAccess.check} decided:
 * - `allow`: serve the route;
 * - `unauthorized`: 401 (a token is configured; the request's is missing or
 *   wrong), the same answer whatever the route or realm;
 * - `forbidden`: 403 (no token configured; a monitoring route asked from
 *   another machine);
 * - `not_found`: 404 (no token configured; admin routes do not exist).
 */
export type OpsDecision = "allow" | "unauthorized" | "forbidden" | "not_found";

/** Decides, and phrases the refusals of, access to the operator routes. */
export class OpsAccess {
  #expected: Uint8Array | null;

  /**
   * Use {@linkcode OpsAccess.create}, which hashes the token.
   *
   * @param expected SHA-256 of the admin token, or null when there is none.
   */
  constructor(expected: Uint8Array | null) {
    this.#expected = expected;
  }

  /**
   * @param adminToken The `adminToken` option (checked non-empty by the
   *   options), or undefined.
   */
  static async create(adminToken: string | undefined): Promise<OpsAccess> {
    return new OpsAccess(
      adminToken === undefined ? null : await sha256(adminToken),
    );
  }

  /** Whether an admin token is configured. */
  get hasToken(): boolean {
    return this.#expected !== null;
  }

  /**
   * Decides whether `request` may use a route of `kind`.
   *
   * @param request The request (its `Authorization` and forwarding headers).
   * @param remoteAddr The peer's address (`info.remoteAddr` of
   *   `Deno.serve`); without it the client is not taken for loopback.
   * @param kind The route's kind.
   */
  async check(
    request: Request,
    remoteAddr: Deno.Addr | undefined,
    kind: OpsRouteKind,
  ): Promise<OpsDecision> {
    if (this.#expected !== null) {
      const presented = bearerToken(request.headers.get("authorization"));
      if (presented === null) return "unauthorized";
      // Both sides hashed: the comparison takes the same time whatever the
      // token's length and wherever it first differs.
      const digest = await sha256(presented);
      let difference = 0;
      for (let index = 0; index < digest.length; index++) {
        difference |= digest[index]! ^ this.#expected[index]!;
      }
      return difference === 0 ? "allow" : "unauthorized";
    }
    if (kind === "admin") return "not_found";
    return isLoopbackRequest(request, remoteAddr) ? "allow" : "forbidden";
  }

  /**
   * The answer to a refused request: 401 with `WWW-Authenticate: Bearer`,
   * 403, or the 404 every unknown route gets.
   */
  refusal(
    decision: Exclude<OpsDecision, "allow">,
    request: Request,
  ): Response {
    switch (decision) {
      case "unauthorized":
        return jsonError(
          401,
          "unauthorized",
          "Send the admin token as Authorization: Bearer <token>",
          { "www-authenticate": 'Bearer realm="tether"' },
        );
      case "forbidden":
        return jsonError(
          403,
          "forbidden",
          "Only loopback clients may see this without an admin token; configure adminToken to reach it from elsewhere",
        );
      case "not_found":
        return jsonError(
          404,
          "not_found",
          `No route for ${request.method} ${new URL(request.url).pathname}`,
        );
    }
  }
}

/** The token of an `Authorization: Bearer <token>` header, else null. */
export function bearerToken(header: string | null): string | null {
  if (header === null) return null;
  const match = /^Bearer +([^\s]+) *$/i.exec(header);
  return match === null ? null : match[1]!;
}

/**
 * Whether the request comes from this machine: a loopback peer address
 * (127.0.0.0/8, ::1, or IPv4-mapped 127.x) and no `Forwarded` or
 * `X-Forwarded-For` header. A reverse proxy on the same machine connects
 * from loopback on behalf of everyone; the header gives it away.
 */
export function isLoopbackRequest(
  request: Request,
  remoteAddr: Deno.Addr | undefined,
): boolean {
  if (
    request.headers.has("forwarded") || request.headers.has("x-forwarded-for")
  ) {
    return false;
  }
  if (remoteAddr === undefined) return false;
  if (remoteAddr.transport === "unix") return true;
  if (remoteAddr.transport !== "tcp" && remoteAddr.transport !== "udp") {
    return false;
  }
  return isLoopbackHost(remoteAddr.hostname);
}

function isLoopbackHost(hostname: string): boolean {
  const host = hostname.replace(/^\[|\]$/g, "").toLowerCase();
  if (host === "::1" || host === "0:0:0:0:0:0:0:1") return true;
  const v4 = host.startsWith("::ffff:") ? host.slice(7) : host;
  return /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(v4);
}

async function sha256(text: string): Promise<Uint8Array> {
  return new Uint8Array(
    await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text)),
  );
}
