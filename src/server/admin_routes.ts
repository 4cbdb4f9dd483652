import { linkAbort } from "../util/abort_link.ts";
import { readBounded } from "../util/read_bounded.ts";
/**
 * The admin HTTP routes under `/admin/realms/<path>/…` (docs/SERVER.md
 * "Server-side data access"): objects, write and the NDJSON change feed,
 * reached only with the admin token.
 */

import {
  AdminJsonError,
  encodeAdminFields,
  parseWriteBody,
} from "./admin_json.ts";
import { jsonError, jsonResponse } from "./http_responses.ts";
import {
  ChangesCompactedError,
  type RealmChangeset,
  type ServerRealm,
  type ServerRealms,
} from "./server_realm.ts";

/** How often a change feed sends a blank line, changesets or not. */
export const KEEP_ALIVE_MS = 15_000;

/** What the admin routes need from their server. */
export interface AdminRouteContext {
  realms: ServerRealms;
  /** Largest write body, in bytes (`limits.maxMessageBytes`). */
  maxBodyBytes: number;
  /** Aborts when the server shuts down: feeds end. */
  lifetime: AbortSignal;
  /** The keep-alive interval (tests shorten it). */
  keepAliveMs?: number;
}

const PREFIX = "/admin/realms/";
const ACTIONS = new Set(["objects", "write", "changes"]);

/**
 * Answers one admin request whose access has been checked; `pathname` is
 * relative to the handler's prefix and starts with `/admin/`.
 */
export async function handleAdminRoute(
  request: Request,
  pathname: string,
  context: AdminRouteContext,
): Promise<Response> {
  const route = parseAdminPath(pathname);
  if (!route.ok) return route.response;
  const { action } = route;
  const method = action === "write" ? "POST" : "GET";
  if (request.method !== method) {
    return jsonError(
      405,
      "method_not_allowed",
      `Method not allowed here; use ${method}`,
      { allow: method },
    );
  }
  let realm: ServerRealm;
  try {
    realm = context.realms.realm(route.path);
  } catch (error) {
    return badRequest("invalid_path", messageOf(error));
  }
  const params = new URL(request.url).searchParams;
  switch (action) {
    case "objects":
      return await objects(realm, params);
    case "write":
      return await write(request, realm, context);
    case "changes":
      return await changes(realm, params, context);
  }
  throw new Error(`Unknown admin action ${action}`);
}

type ParsedPath =
  | { ok: true; path: string; action: "objects" | "write" | "changes" }
  | { ok: false; response: Response };

function parseAdminPath(pathname: string): ParsedPath {
  if (!pathname.startsWith(PREFIX)) {
    return { ok: false, response: notFound(pathname) };
  }
  const rest = pathname.slice(PREFIX.length);
  const cut = rest.lastIndexOf("/");
  const action = rest.slice(cut + 1);
  if (!ACTIONS.has(action)) {
    return { ok: false, response: notFound(pathname) };
  }
  if (cut <= 0) {
    // A known action with no realm path before it: the path is bad.
    return {
      ok: false,
      response: badRequest(
        "invalid_path",
        `No realm path before /${action}: use /admin/realms/<path>/${action}`,
      ),
    };
  }
  let segments: string[];
  try {
    segments = rest.slice(0, cut).split("/").map((segment) =>
      decodeURIComponent(segment)
    );
  } catch {
    return {
      ok: false,
      response: badRequest(
        "invalid_path",
        "The realm path is not valid percent-encoding",
      ),
    };
  }
  if (segments.some((segment) => segment.includes("/"))) {
    return {
      ok: false,
      response: badRequest(
        "invalid_path",
        'A realm path segment cannot hold "/" (%2F)',
      ),
    };
  }
  return {
    ok: true,
    path: "/" + segments.join("/"),
    action: action as "objects" | "write" | "changes",
  };
}

async function objects(
  realm: ServerRealm,
  params: URLSearchParams,
): Promise<Response> {
  const type = params.get("type");
  if (type === null || type === "") {
    return badRequest("bad_request", "Add ?type=<type name>");
  }
  const found = await realm.objects(type);
  return jsonResponse(200, {
    objects: found.map(({ id, fields }) => ({
      id,
      fields: encodeAdminFields(fields),
    })),
  });
}

async function write(
  request: Request,
  realm: ServerRealm,
  context: AdminRouteContext,
): Promise<Response> {
  const limit = context.maxBodyBytes;
  const declared = Number(request.headers.get("content-length"));
  if (Number.isFinite(declared) && declared > limit) return tooLarge(limit);
  const body = await readBounded(request.body, limit);
  if (body === null) return tooLarge(limit);
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder().decode(body));
  } catch (error) {
    return badRequest("bad_json", `The body is not JSON: ${messageOf(error)}`);
  }
  let changes;
  try {
    changes = parseWriteBody(json);
  } catch (error) {
    if (error instanceof AdminJsonError) {
      return jsonResponse(400, {
        error: {
          code: "bad_value",
          message: error.message,
          field: error.field,
        },
      });
    }
    throw error;
  }
  try {
    const { version } = await realm.write((tx) => {
      for (const change of changes) {
        if (change.op === "delete") tx.delete(change.type, change.id);
        else if (change.op === "put") {
          tx.put(change.type, change.id, change.fields);
        } else tx.update(change.type, change.id, change.fields);
      }
    });
    return jsonResponse(200, { version });
  } catch (error) {
    if (error instanceof TypeError) {
      return badRequest("bad_value", error.message);
    }
    throw error;
  }
}

async function changes(
  realm: ServerRealm,
  params: URLSearchParams,
  context: AdminRouteContext,
): Promise<Response> {
  const raw = params.get("since") ?? "0";
  const since = /^(0|[1-9]\d{0,15})$/.test(raw) ? Number(raw) : NaN;
  if (!Number.isSafeInteger(since)) {
    return badRequest(
      "bad_request",
      `since must be a non-negative integer, got ${JSON.stringify(raw)}`,
    );
  }
  const leave = new AbortController();
  // Linked until the response ends: the lifetime outlives every request
  // (docs/PERFORMANCE.md). A client that leaves cancels the body (below);
  // request.signal is not linked, because Deno aborts it on every response
  // that completes and warns that this legacy behaviour will change.
  const link = linkAbort([context.lifetime, leave.signal]);
  let feed: ReadableStream<RealmChangeset>;
  try {
    feed = await context.realms.openFeed(realm.path, since, link.signal);
  } catch (error) {
    link.dispose();
    if (error instanceof ChangesCompactedError) {
      return jsonError(410, error.code, error.message);
    }
    throw error;
  }
  const encoder = new TextEncoder();
  const reader = feed.getReader();
  let keepAlive: ReturnType<typeof setInterval> | undefined;
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      keepAlive = setInterval(() => {
        try {
          controller.enqueue(encoder.encode("\n"));
        } catch {
          clearInterval(keepAlive);
        }
      }, context.keepAliveMs ?? KEEP_ALIVE_MS);
    },
    async pull(controller) {
      try {
        const { done, value } = await reader.read();
        if (done) {
          clearInterval(keepAlive);
          link.dispose();
          controller.close();
          return;
        }
        const line = {
          version: value.version,
          changes: value.changes.map((change) =>
            change.op === "delete" ? change : {
              ...change,
              fields: encodeAdminFields(change.fields),
            }
          ),
        };
        controller.enqueue(encoder.encode(JSON.stringify(line) + "\n"));
      } catch (error) {
        clearInterval(keepAlive);
        link.dispose();
        controller.error(error);
      }
    },
    cancel() {
      clearInterval(keepAlive);
      leave.abort();
      link.dispose();
      return reader.cancel();
    },
  }, { highWaterMark: 0 });
  return new Response(body, {
    status: 200,
    headers: {
      "content-type": "application/x-ndjson; charset=utf-8",
      "cache-control": "no-store",
    },
  });
}

function tooLarge(limit: number): Response {
  return jsonError(
    413,
    "payload_too_large",
    `The body is larger than limits.maxMessageBytes (${limit} bytes)`,
  );
}

function badRequest(code: string, message: string): Response {
  return jsonError(400, code, message);
}

function notFound(pathname: string): Response {
  return jsonError(404, "not_found", `No admin route ${pathname}`);
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
