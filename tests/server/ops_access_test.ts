import assert from "node:assert/strict";
import {
  bearerToken,
  isLoopbackRequest,
  OpsAccess,
  type OpsRouteKind,
} from "../../src/server/ops_access.ts";
import { serveSync } from "../../src/server/serve_sync.ts";

const tcp = (hostname: string): Deno.NetAddr => ({
  transport: "tcp",
  hostname,
  port: 50_000,
});

const request = (headers: Record<string, string> = {}) =>
  new Request("http://sync.test/metrics", { headers });

Deno.test("OpsAccess without an admin token: monitoring for loopback clients only, admin routes do not exist", async () => {
  const access = await OpsAccess.create(undefined);
  assert.equal(access.hasToken, false);
  const cases: Array<[Deno.Addr | undefined, OpsRouteKind, string]> = [
    [tcp("127.0.0.1"), "monitoring", "allow"],
    [tcp("127.3.2.1"), "monitoring", "allow"],
    [tcp("::1"), "monitoring", "allow"],
    [tcp("::ffff:127.0.0.1"), "monitoring", "allow"],
    [tcp("10.0.0.7"), "monitoring", "forbidden"],
    [tcp("::ffff:10.0.0.7"), "monitoring", "forbidden"],
    [tcp("128.0.0.1"), "monitoring", "forbidden"],
    [tcp("2001:db8::1"), "monitoring", "forbidden"],
    [undefined, "monitoring", "forbidden"],
    [tcp("127.0.0.1"), "admin", "not_found"],
    [tcp("10.0.0.7"), "admin", "not_found"],
  ];
  for (const [addr, kind, expected] of cases) {
    assert.equal(
      await access.check(request(), addr, kind),
      expected,
      `${JSON.stringify(addr)} ${kind}`,
    );
  }
  // A reverse proxy on this machine forwards everyone from loopback.
  for (const header of ["x-forwarded-for", "forwarded"]) {
    assert.equal(
      await access.check(
        request({ [header]: "203.0.113.9" }),
        tcp("127.0.0.1"),
        "monitoring",
      ),
      "forbidden",
    );
  }
  // A token sent to a server without one changes nothing.
  assert.equal(
    await access.check(
      request({ authorization: "Bearer x" }),
      tcp("10.0.0.7"),
      "admin",
    ),
    "not_found",
  );
});

Deno.test("OpsAccess with an admin token: the Bearer token and nothing else, from anywhere", async () => {
  const access = await OpsAccess.create("s3cret-token");
  assert.equal(access.hasToken, true);
  const cases: Array<[Record<string, string>, string]> = [
    [{ authorization: "Bearer s3cret-token" }, "allow"],
    [{ authorization: "bearer s3cret-token" }, "allow"],
    [{ authorization: "Bearer s3cret-token " }, "allow"],
    [{}, "unauthorized"],
    [{ authorization: "Bearer" }, "unauthorized"],
    [{ authorization: "Bearer " }, "unauthorized"],
    [{ authorization: "Bearer s3cret-toke" }, "unauthorized"],
    [{ authorization: "Bearer s3cret-token2" }, "unauthorized"],
    [{ authorization: "Basic s3cret-token" }, "unauthorized"],
    [{ authorization: "s3cret-token" }, "unauthorized"],
    [{ authorization: "Bearer s3cret token" }, "unauthorized"],
  ];
  for (const kind of ["monitoring", "admin"] as const) {
    for (const addr of [tcp("127.0.0.1"), tcp("10.0.0.7"), undefined]) {
      for (const [headers, expected] of cases) {
        assert.equal(
          await access.check(request(headers), addr, kind),
          expected,
          `${JSON.stringify(headers)} ${kind} ${JSON.stringify(addr)}`,
        );
      }
    }
  }
});

Deno.test("OpsAccess.refusal() answers 401 with WWW-Authenticate, 403, and the ordinary 404", async () => {
  const access = await OpsAccess.create("t");
  const unauthorized = access.refusal("unauthorized", request());
  assert.equal(unauthorized.status, 401);
  assert.equal(
    unauthorized.headers.get("www-authenticate"),
    'Bearer realm="tether"',
  );
  const body = await unauthorized.json();
  assert.equal(body.error.code, "unauthorized");
  // The same bytes whatever was asked for: nothing about the realm leaks.
  const other = access.refusal(
    "unauthorized",
    new Request("http://sync.test/admin/realms/alice/todos/objects?type=T"),
  );
  assert.deepEqual(await other.json(), body);

  const forbidden = access.refusal("forbidden", request());
  assert.equal(forbidden.status, 403);
  assert.equal((await forbidden.json()).error.code, "forbidden");
  const missing = access.refusal(
    "not_found",
    new Request("http://sync.test/admin/realms/a/objects", { method: "GET" }),
  );
  assert.equal(missing.status, 404);
  assert.deepEqual(await missing.json(), {
    error: {
      code: "not_found",
      message: "No route for GET /admin/realms/a/objects",
    },
  });
});

Deno.test("isLoopbackRequest() sees a real loopback client through Deno.serve's remoteAddr", async () => {
  const seen: boolean[] = [];
  await using server = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen() {} },
    (req, info) => {
      seen.push(isLoopbackRequest(req, info.remoteAddr));
      return new Response("ok");
    },
  );
  const response = await fetch(`http://127.0.0.1:${server.addr.port}/`);
  await response.body?.cancel();
  const proxied = await fetch(`http://127.0.0.1:${server.addr.port}/`, {
    headers: { "x-forwarded-for": "198.51.100.4" },
  });
  await proxied.body?.cancel();
  assert.deepEqual(seen, [true, false]);
});

Deno.test("bearerToken() reads the token of a Bearer header only", () => {
  assert.equal(bearerToken("Bearer abc.def-ghi_jkl"), "abc.def-ghi_jkl");
  assert.equal(bearerToken("BEARER  abc"), "abc");
  assert.equal(bearerToken(null), null);
  assert.equal(bearerToken("Token abc"), null);
  assert.equal(bearerToken("Bearer a b"), null);
});

Deno.test("serveSync() refuses an adminToken too short to guess slowly, or with white space", async () => {
  for (const adminToken of ["", "fifteen-chars-x", "sixteen chars xx"]) {
    await assert.rejects(
      serveSync({
        port: 0,
        kv: ":memory:",
        auth: { allowAnonymous: true },
        adminToken,
        logger: () => {},
      }),
      new TypeError(
        "Cannot serve: adminToken must be a string of at least 16 characters without white space",
      ),
    );
  }
  await using _server = await serveSync({
    port: 0,
    kv: ":memory:",
    auth: { allowAnonymous: true },
    adminToken: "sixteen-chars-xx",
    logger: () => {},
  });
});
