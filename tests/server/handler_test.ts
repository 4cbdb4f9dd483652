import assert from "node:assert/strict";
import type { ServeSyncOptions } from "../../server.ts";
import { encodeBase64Url } from "../../src/server/base64url.ts";
import { importHmacKey, signJwt } from "../../src/server/jwt.ts";
import { startTestServer } from "../_helpers/test_server.ts";

const SECRET = "test-secret";

async function startServer(overrides: Partial<ServeSyncOptions> = {}) {
  return await startTestServer({
    auth: { allowAnonymous: true, jwtSecret: SECRET },
    ...overrides,
  });
}

async function userJwt(
  claims: Record<string, unknown>,
  secret = SECRET,
): Promise<string> {
  return await signJwt(claims, await importHmacKey(secret));
}

/** One base64url JSON segment of a hand-made JWT. */
function jwtSegment(value: unknown): string {
  return encodeBase64Url(new TextEncoder().encode(JSON.stringify(value)));
}

function post(path: string, body: unknown): Request {
  return new Request(`http://localhost${path}`, {
    method: "POST",
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
}

async function errorOf(response: Response) {
  const body = await response.json();
  return { status: response.status, ...body.error };
}

const inAnHour = () => Date.now() / 1000 + 3600;

Deno.test("handler answers GET /health with 200 {status: ok}", async () => {
  await using server = await startServer();
  const response = await server.handler(new Request("http://localhost/health"));
  assert.equal(response.status, 200);
  assert.deepEqual(await response.json(), { status: "ok" });
});

Deno.test("handler answers unknown paths with 404 and a JSON error", async () => {
  await using server = await startServer();
  const response = await server.handler(new Request("http://localhost/nope"));
  assert.deepEqual(await errorOf(response), {
    status: 404,
    code: "not_found",
    message: "No route for GET /nope",
  });
});

Deno.test("handler answers GET /sync without an upgrade with 426", async () => {
  await using server = await startServer();
  const response = await server.handler(new Request("http://localhost/sync"));
  assert.equal(response.headers.get("upgrade"), "websocket");
  assert.deepEqual(await errorOf(response), {
    status: 426,
    code: "upgrade_required",
    message:
      "GET /sync is the WebSocket sync endpoint: send Upgrade: websocket",
  });
});

Deno.test("handler answers a wrong method with 405 and Allow", async (t) => {
  await using server = await startServer();
  const cases: [string, string, string][] = [
    ["POST", "/sync", "GET"],
    ["GET", "/login", "POST, OPTIONS"],
    ["DELETE", "/health", "GET, HEAD"],
  ];
  for (const [method, path, allow] of cases) {
    await t.step(`${method} ${path}`, async () => {
      const response = await server.handler(
        new Request(`http://localhost${path}`, { method }),
      );
      assert.equal(response.headers.get("allow"), allow);
      const error = await errorOf(response);
      assert.equal(error.status, 405);
      assert.equal(error.code, "method_not_allowed");
    });
  }
});

Deno.test("POST /login anonymous issues a new user and both tokens", async () => {
  await using server = await startServer();
  const before = Date.now();
  const response = await server.handler(
    post("/login", { provider: "anonymous" }),
  );
  assert.equal(response.status, 200);
  assert.equal(response.headers.get("access-control-allow-origin"), "*");
  const body = await response.json();
  assert.deepEqual(Object.keys(body).sort(), [
    "accessToken",
    "accessTokenExpiresAt",
    "refreshToken",
    "userId",
  ]);
  assert.match(body.userId, /^[0-9a-f-]{36}$/);
  assert.ok(body.accessTokenExpiresAt >= before + 30 * 60 * 1000);
  assert.ok(body.accessTokenExpiresAt <= Date.now() + 30 * 60 * 1000);
  const again = await (await server.handler(
    post("/login", { provider: "anonymous" }),
  )).json();
  assert.notEqual(again.userId, body.userId);
});

Deno.test("POST /login anonymous is refused with 403 when disabled", async () => {
  await using server = await startServer({ auth: { jwtSecret: SECRET } });
  assert.deepEqual(
    await errorOf(
      await server.handler(post("/login", { provider: "anonymous" })),
    ),
    {
      status: 403,
      code: "login_failed",
      message: "Cannot log in: anonymous login is disabled",
    },
  );
});

Deno.test("POST /login jwt uses sub as the user id", async () => {
  await using server = await startServer();
  const token = await userJwt({ sub: "alice", exp: inAnHour() });
  const response = await server.handler(
    post("/login", { provider: "jwt", token }),
  );
  assert.equal(response.status, 200);
  assert.equal((await response.json()).userId, "alice");
});

Deno.test("POST /login jwt refuses bad tokens with 401", async (t) => {
  await using server = await startServer();
  const cases: [string, Promise<string> | string, string][] = [
    [
      "expired",
      userJwt({ sub: "alice", exp: Date.now() / 1000 - 1 }),
      "Cannot log in: Token has expired",
    ],
    [
      "signed with another secret",
      userJwt({ sub: "alice", exp: inAnHour() }, "other"),
      "Cannot log in: Token is badly signed",
    ],
    [
      "without exp",
      userJwt({ sub: "alice" }),
      "Cannot log in: Token has no exp",
    ],
    [
      "not yet valid",
      userJwt({ sub: "alice", exp: inAnHour(), nbf: inAnHour() - 60 }),
      "Cannot log in: Token is not yet valid",
    ],
    [
      "sub not a valid user id",
      userJwt({ sub: "a/b", exp: inAnHour() }),
      `Cannot log in: Token's sub is not a valid user id (1-256 characters without "/", white space or control characters, and not ".", ".." or "~")`,
    ],
    [
      "sub not a string",
      userJwt({ sub: 42, exp: inAnHour() }),
      `Cannot log in: Token's sub is not a valid user id (1-256 characters without "/", white space or control characters, and not ".", ".." or "~")`,
    ],
    [
      "alg none, unsigned",
      `${jwtSegment({ alg: "none", typ: "JWT" })}.${
        jwtSegment({ sub: "alice", exp: inAnHour() })
      }.`,
      "Cannot log in: Token is not signed with HS256",
    ],
    [
      "RS256 header over an HS256 signature",
      userJwt({ sub: "alice", exp: inAnHour() }).then((token) =>
        `${jwtSegment({ alg: "RS256", typ: "JWT" })}.${
          token.split(".").slice(1).join(".")
        }`
      ),
      "Cannot log in: Token is not signed with HS256",
    ],
    ["garbage", "not.a.token", "Cannot log in: Token is malformed"],
  ];
  for (const [name, token, message] of cases) {
    await t.step(name, async () => {
      const response = await server.handler(
        post("/login", { provider: "jwt", token: await token }),
      );
      assert.deepEqual(await errorOf(response), {
        status: 401,
        code: "login_failed",
        message,
      });
    });
  }
});

Deno.test("POST /login jwt is refused with 403 without a jwtSecret", async () => {
  await using server = await startServer({ auth: { allowAnonymous: true } });
  const token = await userJwt({ sub: "alice", exp: inAnHour() });
  assert.deepEqual(
    await errorOf(
      await server.handler(post("/login", { provider: "jwt", token })),
    ),
    {
      status: 403,
      code: "login_failed",
      message: "Cannot log in: JWT login is disabled",
    },
  );
});

Deno.test("POST /login refresh trades a refresh token for new tokens", async () => {
  await using server = await startServer();
  const token = await userJwt({ sub: "bob", exp: inAnHour() });
  const first = await (await server.handler(
    post("/login", { provider: "jwt", token }),
  )).json();
  const response = await server.handler(
    post("/login", { provider: "refresh", refreshToken: first.refreshToken }),
  );
  assert.equal(response.status, 200);
  const second = await response.json();
  assert.equal(second.userId, "bob");
  assert.notEqual(second.refreshToken, first.refreshToken);

  const wrongKind = await server.handler(
    post("/login", { provider: "refresh", refreshToken: first.accessToken }),
  );
  assert.deepEqual(await errorOf(wrongKind), {
    status: 401,
    code: "login_failed",
    message: "Cannot log in: Token is not a refresh token",
  });
});

Deno.test("POST /login refresh fails once the refresh token expired", async () => {
  let now = 1_000_000;
  await using server = await startServer({
    now: () => now,
    auth: { allowAnonymous: true, refreshTokenTtlMs: 1000 },
  });
  const first = await (await server.handler(
    post("/login", { provider: "anonymous" }),
  )).json();
  now += 1000;
  assert.deepEqual(
    await errorOf(
      await server.handler(
        post("/login", {
          provider: "refresh",
          refreshToken: first.refreshToken,
        }),
      ),
    ),
    {
      status: 401,
      code: "login_failed",
      message: "Cannot log in: Token has expired",
    },
  );
});

Deno.test("POST /login answers malformed requests with 400", async (t) => {
  await using server = await startServer();
  const cases: [string, unknown, string][] = [
    ["not JSON", "{", "Cannot log in: the body is not valid JSON"],
    ["not an object", "[1]", "Cannot log in: the body must be a JSON object"],
    [
      "unknown provider",
      { provider: "password" },
      'Cannot log in: "provider" must be "anonymous", "jwt" or "refresh"',
    ],
    [
      "jwt without token",
      { provider: "jwt" },
      'Cannot log in: "token" must be a string',
    ],
    [
      "too large",
      { provider: "anonymous", padding: "x".repeat(70_000) },
      "Cannot log in: the body is too large",
    ],
  ];
  for (const [name, body, message] of cases) {
    await t.step(name, async () => {
      assert.deepEqual(
        await errorOf(await server.handler(post("/login", body))),
        {
          status: 400,
          code: "bad_request",
          message,
        },
      );
    });
  }
});

Deno.test("OPTIONS /login answers a CORS preflight", async () => {
  await using server = await startServer();
  const response = await server.handler(
    new Request("http://localhost/login", { method: "OPTIONS" }),
  );
  assert.equal(response.status, 204);
  assert.equal(response.headers.get("access-control-allow-origin"), "*");
  assert.equal(
    response.headers.get("access-control-allow-headers"),
    "content-type",
  );
});

Deno.test("handler answers /health with 503 once shutdown began", async () => {
  const server = await startServer();
  await server.shutdown();
  const response = await server.handler(new Request("http://localhost/health"));
  assert.equal(response.status, 503);
  assert.deepEqual(await response.json(), { status: "shutting_down" });
  const login = await server.handler(post("/login", { provider: "anonymous" }));
  assert.equal((await errorOf(login)).code, "server_shutting_down");
});
