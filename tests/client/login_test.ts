import assert from "node:assert/strict";
import { requestLogin, retryAfterMs } from "../../src/client/login.ts";
import { SyncError } from "../../src/client/sync_error.ts";

function answering(response: Response | Error): typeof fetch {
  return (() =>
    response instanceof Error
      ? Promise.reject(response)
      : Promise.resolve(response)) as typeof fetch;
}

const url = "http://sync.test/login";
const now = () => 1_000_000;

Deno.test("requestLogin() returns the tokens of a 200 answer", async () => {
  const tokens = {
    userId: "u1",
    accessToken: "a",
    accessTokenExpiresAt: 5,
    refreshToken: "r",
  };
  assert.deepEqual(
    await requestLogin(
      answering(Response.json(tokens)),
      url,
      { provider: "anonymous" },
      undefined,
      now,
    ),
    tokens,
  );
});

Deno.test("requestLogin() turns 400, 401 and 403 into login_failed with the server's message", async () => {
  for (const status of [400, 401, 403]) {
    const response = Response.json(
      { error: { code: "login_failed", message: `Refused with ${status}` } },
      { status },
    );
    await assert.rejects(
      requestLogin(
        answering(response),
        url,
        { provider: "anonymous" },
        undefined,
        now,
      ),
      (error) =>
        error instanceof SyncError && error.code === "login_failed" &&
        error.message === `Refused with ${status}` && error.isFatal &&
        !error.willRetry,
    );
  }
  await assert.rejects(
    requestLogin(
      answering(new Response("nope", { status: 404 })),
      url,
      { provider: "anonymous" },
      undefined,
      now,
    ),
    {
      name: "SyncError",
      code: "login_failed",
      message: `Cannot log in: the server answered 404 at ${url}`,
    },
  );
});

Deno.test("requestLogin() turns 503 into a retryable connection_lost that carries Retry-After", async () => {
  const response = new Response("busy", {
    status: 503,
    headers: { "retry-after": "7" },
  });
  const error = await requestLogin(
    answering(response),
    url,
    { provider: "anonymous" },
    undefined,
    now,
  )
    .catch((e) => e);
  assert.ok(error instanceof SyncError);
  assert.equal(error.code, "connection_lost");
  assert.equal(error.willRetry, true);
  assert.equal(retryAfterMs(error), 7_000);
  const dated = new Response("busy", {
    status: 429,
    headers: { "retry-after": new Date(now() + 3_000).toUTCString() },
  });
  const second = await requestLogin(
    answering(dated),
    url,
    { provider: "anonymous" },
    undefined,
    now,
  )
    .catch((e) => e);
  assert.equal(retryAfterMs(second), 3_000);
  assert.equal(retryAfterMs(new Error("other")), undefined);
});

Deno.test("requestLogin() turns a network failure into connection_lost and an abort into the signal's reason", async () => {
  await assert.rejects(
    requestLogin(
      answering(new TypeError("connection refused")),
      url,
      { provider: "anonymous" },
      undefined,
      now,
    ),
    (error) =>
      error instanceof SyncError && error.code === "connection_lost" &&
      error.cause instanceof TypeError,
  );
  const reason = new Error("stop");
  const controller = new AbortController();
  controller.abort(reason);
  await assert.rejects(
    requestLogin(
      answering(new DOMException("aborted", "AbortError")),
      url,
      { provider: "anonymous" },
      controller.signal,
      now,
    ),
    (error) => error === reason,
  );
});

Deno.test("requestLogin() refuses a 200 answer that is not the documented JSON", async () => {
  for (const body of ["not json", JSON.stringify({ userId: "u1" })]) {
    await assert.rejects(
      requestLogin(
        answering(new Response(body)),
        url,
        { provider: "anonymous" },
        undefined,
        now,
      ),
      (error) => error instanceof SyncError && error.code === "login_failed",
    );
  }
});
