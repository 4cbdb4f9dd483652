import assert from "node:assert/strict";
import {
  isValidUserId,
  TokenAuthority,
  type TokenSettings,
} from "../../src/server/tokens.ts";
import { importHmacKey, signJwt } from "../../src/server/jwt.ts";

const retry = () => ({ signal: AbortSignal.timeout(5000) });

function settings(overrides: Partial<TokenSettings> = {}): TokenSettings {
  return {
    jwtSecret: "secret",
    allowAnonymous: true,
    accessTokenTtlMs: 60_000,
    refreshTokenTtlMs: 600_000,
    now: () => 1_000_000,
    ...overrides,
  };
}

Deno.test("TokenAuthority keeps one signing key per store: tokens verify across instances", async () => {
  await using kv = await Deno.openKv(":memory:");
  const [first, second] = await Promise.all([
    TokenAuthority.open(kv, settings(), retry()),
    TokenAuthority.open(kv, settings(), retry()),
  ]);
  const issued = await first.issue("alice", "jwt");
  assert.equal(issued.accessTokenExpiresAt, 1_060_000);
  assert.deepEqual(await second.verifyAccess(issued.accessToken), {
    ok: true,
    userId: "alice",
    provider: "jwt",
    expiresAt: 1_060_000,
  });
  await using other = await Deno.openKv(":memory:");
  const stranger = await TokenAuthority.open(other, settings(), retry());
  const check = await stranger.verifyAccess(issued.accessToken);
  assert.equal(check.ok, false);
});

Deno.test("TokenAuthority.verifyAccess() refuses refresh tokens and expired access tokens", async () => {
  await using kv = await Deno.openKv(":memory:");
  let now = 1_000_000;
  const authority = await TokenAuthority.open(
    kv,
    settings({ now: () => now }),
    retry(),
  );
  const issued = await authority.issue("bob", "anonymous");
  assert.deepEqual(await authority.verifyAccess(issued.refreshToken), {
    ok: false,
    code: "bad_token",
    message: "Token is not an access token",
  });
  now = issued.accessTokenExpiresAt;
  assert.deepEqual(await authority.verifyAccess(issued.accessToken), {
    ok: false,
    code: "token_expired",
    message: "Token has expired",
  });
  assert.equal((await authority.verifyRefresh(issued.refreshToken)).ok, true);
});

Deno.test("tokens of a provider that was disabled stop working", async () => {
  await using kv = await Deno.openKv(":memory:");
  const open = await TokenAuthority.open(kv, settings(), retry());
  const anonymous = await open.issue("carol", "anonymous");
  const closed = await TokenAuthority.open(
    kv,
    settings({ allowAnonymous: false }),
    retry(),
  );
  assert.deepEqual(await closed.verifyAccess(anonymous.accessToken), {
    ok: false,
    code: "bad_token",
    message: 'Login provider "anonymous" is disabled',
  });
  assert.equal((await closed.verifyRefresh(anonymous.refreshToken)).ok, false);
});

Deno.test("TokenAuthority.verifyAccess() accepts user JWTs signed with jwtSecret", async () => {
  await using kv = await Deno.openKv(":memory:");
  const authority = await TokenAuthority.open(kv, settings(), retry());
  const token = await signJwt(
    { sub: "dave", exp: 2000 },
    await importHmacKey("secret"),
  );
  assert.deepEqual(await authority.verifyAccess(token), {
    ok: true,
    userId: "dave",
    provider: "jwt",
    expiresAt: 2_000_000,
  });
  const withoutSecret = await TokenAuthority.open(
    kv,
    settings({ jwtSecret: undefined }),
    retry(),
  );
  assert.equal((await withoutSecret.verifyAccess(token)).ok, false);
  assert.deepEqual(await authority.verifyAccess(""), {
    ok: false,
    code: "bad_token",
    message: "No access token",
  });
});

Deno.test("isValidUserId() accepts ids that are one path segment, such as common JWT subjects", () => {
  for (
    const id of [
      "alice",
      "u_1.2-3",
      "9f1b6c1e-2f51-4a1f-9d0e-7c3b5a0e4d21",
      "auth0|5f7c8ec7c33c6c004bbafe82",
      "google-oauth2|104838278283484",
      "ada@example.com",
      "zoë",
      "x".repeat(256),
    ]
  ) {
    assert.equal(isValidUserId(id), true, id);
  }
  for (
    const id of [
      "",
      ".",
      "..",
      "~",
      "a/b",
      "/",
      "a b",
      "a\tb",
      "a\u0000",
      "a\u007f",
      "x".repeat(257),
    ]
  ) {
    assert.equal(isValidUserId(id), false, JSON.stringify(id));
  }
});
