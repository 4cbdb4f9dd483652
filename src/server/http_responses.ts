/**
 * JSON responses of the HTTP surface (docs/ARCHITECTURE.md "HTTP surface"):
 * errors are `{"error": {"code", "message"}}`.
 */

/** Returns a JSON response with `body`. */
export function jsonResponse(
  status: number,
  body: unknown,
  headers: HeadersInit = {},
): Response {
  const merged = new Headers(headers);
  merged.set("content-type", "application/json; charset=utf-8");
  merged.set("cache-control", "no-store");
  return new Response(JSON.stringify(body), { status, headers: merged });
}

/** Returns a JSON error response. */
export function jsonError(
  status: number,
  code: string,
  message: string,
  headers: HeadersInit = {},
): Response {
  return jsonResponse(status, { error: { code, message } }, headers);
}

/** The answer to any request once shutdown has begun. */
export function shuttingDown(): Response {
  return jsonError(
    503,
    "server_shutting_down",
    "The server is shutting down",
    { "retry-after": "1" },
  );
}
