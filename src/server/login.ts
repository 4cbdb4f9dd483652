import { readBounded } from "../util/read_bounded.ts";
import { jsonError, jsonResponse, shuttingDown } from "./http_responses.ts";
import type { Log } from "./log.ts";
import type { TokenAuthority } from "./tokens.ts";

/**
 * `POST /login` (docs/ARCHITECTURE.md "POST /login"): turns anonymous, JWT or
 * refresh credentials into an access token and a refresh token.
 */

/** Largest login request body read, in bytes. */
export const MAX_LOGIN_BODY_BYTES = 64 * 1024;

// Tokens travel in the body, never in cookies, so any origin may call.
const CORS_HEADERS: HeadersInit = { "access-control-allow-origin": "*" };

/** Answers a CORS preflight for `/login`. */
export function loginPreflight(): Response {
  return new Response(null, {
    status: 204,
    headers: {
      ...CORS_HEADERS,
      "access-control-allow-methods": "POST, OPTIONS",
      "access-control-allow-headers": "content-type",
      "access-control-max-age": "86400",
    },
  });
}

/**
 * Handles a `POST /login` request. Reading the body gives up when `signal`
 * aborts (shutdown: 503) or the client leaves.
 */
export async function handleLogin(
  request: Request,
  tokens: TokenAuthority,
  log: Log,
  signal: AbortSignal,
): Promise<Response> {
  let body;
  try {
    body = await readJsonBody(request, signal);
  } catch (error) {
    log("debug", "login_abandoned", "The login request's body did not arrive", {
      error,
    });
    // The answer reaches a client that is still there (shutdown) or nobody.
    return shuttingDown();
  }
  if (!body.ok) return badRequest(body.message);
  const value = body.value;
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    return badRequest("Cannot log in: the body must be a JSON object");
  }
  const credentials = value as Record<string, unknown>;
  switch (credentials.provider) {
    case "anonymous": {
      if (!tokens.allowsAnonymous) {
        return refuse(403, "Cannot log in: anonymous login is disabled");
      }
      const result = await tokens.issue(crypto.randomUUID(), "anonymous");
      log("debug", "login", "Anonymous login", { userId: result.userId });
      return jsonResponse(200, result, CORS_HEADERS);
    }
    case "jwt": {
      if (typeof credentials.token !== "string") {
        return badRequest('Cannot log in: "token" must be a string');
      }
      if (!tokens.allowsJwt) {
        return refuse(403, "Cannot log in: JWT login is disabled");
      }
      const check = await tokens.verifyUserJwt(credentials.token);
      if (!check.ok && check.code === "auth_unavailable") {
        // 503 + Retry-After: the client's app.logIn retries it with backoff.
        return jsonError(
          503,
          "auth_unavailable",
          `Cannot log in: ${check.message}`,
          { ...CORS_HEADERS, "retry-after": String(check.retryAfterSec) },
        );
      }
      if (!check.ok) return refuse(401, `Cannot log in: ${check.message}`);
      const result = await tokens.issue(check.userId, "jwt");
      log("debug", "login", "JWT login", { userId: result.userId });
      return jsonResponse(200, result, CORS_HEADERS);
    }
    case "refresh": {
      if (typeof credentials.refreshToken !== "string") {
        return badRequest('Cannot log in: "refreshToken" must be a string');
      }
      const check = await tokens.verifyRefresh(credentials.refreshToken);
      if (!check.ok) return refuse(401, `Cannot log in: ${check.message}`);
      const result = await tokens.issue(check.userId, check.provider);
      log("debug", "login", "Token refresh", { userId: result.userId });
      return jsonResponse(200, result, CORS_HEADERS);
    }
    default:
      return badRequest(
        'Cannot log in: "provider" must be "anonymous", "jwt" or "refresh"',
      );
  }
}

function badRequest(message: string): Response {
  return jsonError(400, "bad_request", message, CORS_HEADERS);
}

function refuse(status: 401 | 403, message: string): Response {
  return jsonError(status, "login_failed", message, CORS_HEADERS);
}

/**
 * Reads and parses the body; throws when the client leaves or `signal`
 * aborts before it has all arrived.
 */
async function readJsonBody(
  request: Request,
  signal: AbortSignal,
): Promise<{ ok: true; value: unknown } | { ok: false; message: string }> {
  const declared = Number(request.headers.get("content-length") ?? "0");
  if (declared > MAX_LOGIN_BODY_BYTES) {
    await request.body?.cancel();
    return { ok: false, message: "Cannot log in: the body is too large" };
  }
  if (request.body === null) {
    return { ok: false, message: "Cannot log in: the body is empty" };
  }
  const bytes = await readBounded(request.body, MAX_LOGIN_BODY_BYTES, signal);
  if (bytes === null) {
    return { ok: false, message: "Cannot log in: the body is too large" };
  }
  try {
    const text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
    return { ok: true, value: JSON.parse(text) };
  } catch {
    return { ok: false, message: "Cannot log in: the body is not valid JSON" };
  }
}
