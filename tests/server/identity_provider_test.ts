import assert from "node:assert/strict";
import {
  DEFAULT_JWKS_TIMING,
  JwtIdentityProvider,
  type JwtProviderCheck,
  type JwtProviderOptions,
  resolveJwtProviderOptions,
} from "../../src/server/identity_provider.ts";
import { serveSync } from "../../src/server/serve_sync.ts";
import { MessageType } from "../../src/protocol/messages.ts";
import { PROTOCOL_VERSION } from "../../src/protocol/version.ts";
import { errorCodeName } from "../../src/protocol/error_codes.ts";
import { ProtocolClient } from "../_helpers/protocol_client.ts";
import { countAbortListeners } from "../_helpers/abort_listeners.ts";
import { FakeJwks } from "../_helpers/fake_jwks.ts";
import {
  base64url,
  ecPair,
  jwtPart as text,
  type KeyPair as Pair,
  publicJwk as jwk,
  rsaPair,
  signToken as sign,
  spkiPem as pem,
} from "../_helpers/idp_tokens.ts";

// Keys and tokens come from idp_tokens.ts: WebCrypto directly,
// independently of the server's verifier, the way an identity provider
// makes them.

const NOW = 1_800_000_000_000;
const SECONDS = NOW / 1000;

const goodClaims = (extra: Record<string, unknown> = {}) => ({
  sub: "alice",
  iss: "https://issuer.test/",
  aud: "tether",
  exp: SECONDS + 600,
  iat: SECONDS,
  ...extra,
});

class Clock {
  time = NOW;
  now = () => this.time;
}

async function openProvider(
  options: JwtProviderOptions,
  clock: Clock,
  signal: AbortSignal,
  timing = DEFAULT_JWKS_TIMING,
): Promise<JwtIdentityProvider> {
  return await JwtIdentityProvider.open(resolveJwtProviderOptions(options), {
    now: clock.now,
    signal,
    timing,
  });
}

function assertRefused(
  check: JwtProviderCheck,
  code: string,
  message: RegExp,
): void {
  assert.equal(check.ok, false, "the token was accepted");
  if (check.ok) return;
  assert.equal(check.code, code, check.message);
  assert.match(check.message, message);
}

Deno.test("JwtIdentityProvider.verify() accepts RS256 and ES256 tokens from PEM and JWK keys", async () => {
  const clock = new Clock();
  const lifetime = new AbortController();
  const rsa = await rsaPair();
  const ec = await ecPair();
  const cases: Array<[string, string | JsonWebKey, CryptoKey, string]> = [
    ["RS256 PEM", await pem(rsa.publicKey), rsa.privateKey, "RS256"],
    ["RS256 JWK", await jwk(rsa.publicKey), rsa.privateKey, "RS256"],
    ["ES256 PEM", await pem(ec.publicKey), ec.privateKey, "ES256"],
    ["ES256 JWK", await jwk(ec.publicKey), ec.privateKey, "ES256"],
  ];
  for (const [name, publicKey, privateKey, alg] of cases) {
    const provider = await openProvider(
      {
        publicKey,
        issuer: "https://issuer.test/",
        audience: ["other", "tether"],
      },
      clock,
      lifetime.signal,
    );
    const token = await sign({ alg, typ: "JWT" }, goodClaims(), privateKey);
    const check = await provider.verify(token);
    assert.ok(check.ok, `${name}: ${JSON.stringify(check)}`);
    assert.equal(check.claims.sub, "alice");
    assert.equal(check.expiresAt, (SECONDS + 600 + 30) * 1000);
  }
});

Deno.test("JwtIdentityProvider.verify() refuses every forged token", async (t) => {
  const clock = new Clock();
  const lifetime = new AbortController();
  const rsa = await rsaPair();
  const ec = await ecPair();
  const stranger = await rsaPair();
  const rsaPem = await pem(rsa.publicKey);
  const rsaProvider = await openProvider(
    { publicKey: rsaPem, issuer: "https://issuer.test/", audience: "tether" },
    clock,
    lifetime.signal,
  );
  const ecProvider = await openProvider(
    { publicKey: await jwk(ec.publicKey), audience: "tether" },
    clock,
    lifetime.signal,
  );
  const valid = await sign({ alg: "RS256" }, goodClaims(), rsa.privateKey);
  assert.ok((await rsaProvider.verify(valid)).ok);

  await t.step(
    "HS256 signed with the RSA public key's bytes (alg confusion)",
    async () => {
      for (const secret of [rsaPem, rsaPem.trim()]) {
        const hmac = await crypto.subtle.importKey(
          "raw",
          new TextEncoder().encode(secret),
          { name: "HMAC", hash: "SHA-256" },
          false,
          ["sign"],
        );
        const body = `${text({ alg: "HS256", typ: "JWT" })}.${
          text(goodClaims())
        }`;
        const mac = await crypto.subtle.sign(
          "HMAC",
          hmac,
          new TextEncoder().encode(body),
        );
        const forged = `${body}.${base64url(new Uint8Array(mac))}`;
        assertRefused(
          await rsaProvider.verify(forged),
          "bad_token",
          /alg "HS256" is not accepted/,
        );
      }
    },
  );
  await t.step("alg none, with and without a signature", async () => {
    for (const alg of ["none", "None", "NONE"]) {
      const body = `${text({ alg })}.${text(goodClaims())}`;
      for (const token of [`${body}.`, `${body}.${valid.split(".")[2]}`]) {
        assertRefused(
          await rsaProvider.verify(token),
          "bad_token",
          /is not accepted/,
        );
      }
    }
    const noAlg = `${text({ typ: "JWT" })}.${text(goodClaims())}.`;
    assertRefused(
      await rsaProvider.verify(noAlg),
      "bad_token",
      /alg \(none\) is not accepted/,
    );
  });
  await t.step(
    "RS256 header against an ES256 key, and the reverse",
    async () => {
      const rsSigned = await sign(
        { alg: "RS256" },
        goodClaims(),
        rsa.privateKey,
      );
      assertRefused(
        await ecProvider.verify(rsSigned),
        "bad_token",
        /alg RS256 does not match its key \(ES256\)/,
      );
      // An ES256 signature under a header relabelled RS256, and the reverse.
      const esSigned = await sign(
        { alg: "ES256" },
        goodClaims(),
        ec.privateKey,
      );
      const [, payload, signature] = esSigned.split(".");
      assertRefused(
        await ecProvider.verify(
          `${text({ alg: "RS256" })}.${payload}.${signature}`,
        ),
        "bad_token",
        /does not match its key/,
      );
      assertRefused(
        await rsaProvider.verify(esSigned),
        "bad_token",
        /alg ES256 does not match its key \(RS256\)/,
      );
    },
  );
  await t.step("signed by another key", async () => {
    const forged = await sign(
      { alg: "RS256" },
      goodClaims(),
      stranger.privateKey,
    );
    assertRefused(
      await rsaProvider.verify(forged),
      "bad_token",
      /badly signed/,
    );
  });
  await t.step("claims changed after signing", async () => {
    const [header, , signature] = valid.split(".");
    const tampered = `${header}.${
      text(goodClaims({ sub: "mallory" }))
    }.${signature}`;
    assertRefused(
      await rsaProvider.verify(tampered),
      "bad_token",
      /badly signed/,
    );
  });
  await t.step(
    "ES256 signature of the wrong length or in DER form",
    async () => {
      const esSigned = await sign(
        { alg: "ES256" },
        goodClaims(),
        ec.privateKey,
      );
      const [header, payload] = esSigned.split(".");
      for (
        const bytes of [
          new Uint8Array(63),
          new Uint8Array(72),
          new Uint8Array(0),
        ]
      ) {
        assertRefused(
          await ecProvider.verify(`${header}.${payload}.${base64url(bytes)}`),
          "bad_token",
          /badly signed/,
        );
      }
    },
  );
  await t.step("wrong issuer, wrong or missing audience", async () => {
    for (
      const [claims, message] of [
        [
          goodClaims({ iss: "https://evil.test/" }),
          /iss "https:\/\/evil.test\/" is not the expected issuer/,
        ],
        [goodClaims({ iss: undefined }), /iss \(none\)/],
        [goodClaims({ aud: "someone-else" }), /aud does not name/],
        [goodClaims({ aud: ["a", "b"] }), /aud does not name/],
        [goodClaims({ aud: undefined }), /aud does not name/],
      ] as const
    ) {
      const token = await sign({ alg: "RS256" }, claims, rsa.privateKey);
      assertRefused(await rsaProvider.verify(token), "bad_token", message);
    }
    const listed = await sign(
      { alg: "RS256" },
      goodClaims({ aud: ["x", "tether"] }),
      rsa.privateKey,
    );
    assert.ok((await rsaProvider.verify(listed)).ok);
  });
  await t.step("exp and nbf, with the clock tolerance", async () => {
    const at = async (claims: Record<string, unknown>) =>
      await rsaProvider.verify(
        await sign({ alg: "RS256" }, goodClaims(claims), rsa.privateKey),
      );
    assertRefused(await at({ exp: undefined }), "bad_token", /no exp/);
    assertRefused(await at({ exp: "soon" }), "bad_token", /no exp/);
    assertRefused(await at({ exp: SECONDS - 30 }), "token_expired", /expired/);
    assert.ok((await at({ exp: SECONDS - 29 })).ok, "within the tolerance");
    assertRefused(
      await at({ nbf: SECONDS + 31 }),
      "bad_token",
      /not yet valid/,
    );
    assert.ok((await at({ nbf: SECONDS + 30 })).ok, "within the tolerance");
    assertRefused(
      await at({ nbf: "later" }),
      "bad_token",
      /nbf is not a number/,
    );
  });
  await t.step("malformed tokens", async () => {
    for (
      const token of [
        "",
        "a.b",
        "a.b.c.d",
        "!!.??.**",
        `${text([1])}.${text({})}.`,
        "x".repeat(9000),
      ]
    ) {
      assertRefused(await rsaProvider.verify(token), "bad_token", /malformed/);
    }
  });
});

Deno.test("resolveJwtProviderOptions() and JwtIdentityProvider.open() refuse keys and options that cannot work", async () => {
  const lifetime = new AbortController();
  const clock = new Clock();
  const rsa = await rsaPair();
  const ec = await ecPair();
  const small = await crypto.subtle.generateKey(
    {
      name: "RSASSA-PKCS1-v1_5",
      modulusLength: 1024,
      publicExponent: new Uint8Array([1, 0, 1]),
      hash: "SHA-256",
    },
    true,
    ["sign", "verify"],
  ) as Pair;
  const p384 = await crypto.subtle.generateKey(
    { name: "ECDSA", namedCurve: "P-384" },
    true,
    ["sign", "verify"],
  ) as Pair;
  const optionCases: Array<[unknown, string]> = [
    [null, "auth.jwt must be an object"],
    [{}, "auth.jwt needs exactly one of publicKey and jwksUrl"],
    [
      { publicKey: "x", jwksUrl: "https://a.test/" },
      "auth.jwt needs exactly one of publicKey and jwksUrl",
    ],
    [
      { publicKey: 5 },
      "auth.jwt.publicKey must be a PEM string or a JsonWebKey",
    ],
    [{ jwksUrl: "not a url" }, 'auth.jwt.jwksUrl is not a URL: "not a url"'],
    [
      { jwksUrl: "ftp://a.test/" },
      "auth.jwt.jwksUrl must be an http: or https: URL",
    ],
    [
      { jwksUrl: "https://a.test/", audience: [] },
      "auth.jwt.audience must be a string or a non-empty array of strings",
    ],
    [
      { jwksUrl: "https://a.test/", issuer: 1 },
      "auth.jwt.issuer must be a non-empty string",
    ],
    [
      { jwksUrl: "https://a.test/", clockToleranceSec: -1 },
      "auth.jwt.clockToleranceSec must be a number of seconds in [0, 3600], got -1",
    ],
  ];
  for (const [options, message] of optionCases) {
    assert.throws(
      () => resolveJwtProviderOptions(options),
      new TypeError(`Cannot serve: ${message}`),
    );
  }
  const privatePkcs8 = new Uint8Array(
    await crypto.subtle.exportKey("pkcs8", rsa.privateKey),
  );
  const keyCases: Array<[string | JsonWebKey, RegExp]> = [
    ["hello", /is not PEM/],
    [
      `-----BEGIN PRIVATE KEY-----\n${
        btoa(String.fromCharCode(...privatePkcs8))
      }\n-----END PRIVATE KEY-----`,
      /is a private key/,
    ],
    [
      "-----BEGIN RSA PUBLIC KEY-----\nAAAA\n-----END RSA PUBLIC KEY-----",
      /PKCS#1/,
    ],
    [await pem(small.publicKey), /1024 bits; at least 2048/],
    [await pem(p384.publicKey), /neither an RSA nor a P-256 public key/],
    [await jwk(rsa.privateKey), /is a private key/],
    [await jwk(p384.publicKey), /curve "P-384"/],
    [await jwk(ec.publicKey, { alg: "ES384" }), /is for "ES384", not ES256/],
    [{ kty: "oct", k: "c2VjcmV0" }, /kty "oct"/],
  ];
  for (const [publicKey, message] of keyCases) {
    await assert.rejects(
      openProvider({ publicKey }, clock, lifetime.signal),
      (error: unknown) =>
        error instanceof TypeError &&
        error.message.startsWith("Cannot serve: auth.jwt.publicKey ") &&
        message.test(error.message),
    );
  }
});

Deno.test("JwtIdentityProvider with a JWKS: caches keys, refetches on an unknown kid at most once per 10 s, follows rotation", async () => {
  await using jwks = new FakeJwks();
  const clock = new Clock();
  const lifetime = new AbortController();
  // The test's clock runs for more than 20 minutes.
  const longLived = goodClaims({ exp: SECONDS + 86_400 });
  const first = await rsaPair();
  const second = await ecPair();
  jwks.keys = [
    await jwk(first.publicKey, { kid: "k1", use: "sig", alg: "RS256" }),
  ];
  const provider = await openProvider(
    { jwksUrl: jwks.url },
    clock,
    lifetime.signal,
  );
  assert.equal(jwks.requests, 0, "nothing is fetched before a token needs it");

  const byFirst = await sign(
    { alg: "RS256", kid: "k1" },
    longLived,
    first.privateKey,
  );
  assert.ok((await provider.verify(byFirst)).ok);
  assert.ok((await provider.verify(byFirst)).ok);
  assert.equal(jwks.requests, 1, "the keys are cached");

  // The provider rotates: a new key, announced by a new kid.
  jwks.keys.push(await jwk(second.publicKey, { kid: "k2" }));
  const bySecond = await sign(
    { alg: "ES256", kid: "k2" },
    longLived,
    second.privateKey,
  );
  clock.time += 10_000;
  assert.ok((await provider.verify(bySecond)).ok);
  assert.equal(jwks.requests, 2, "an unknown kid refetches");

  // Unknown kids within 10 s of the last fetch do not reach the provider.
  const unknown = await sign(
    { alg: "RS256", kid: "k9" },
    longLived,
    first.privateKey,
  );
  for (let attempt = 0; attempt < 5; attempt++) {
    assertRefused(
      await provider.verify(unknown),
      "bad_token",
      /key id "k9" is not one of/,
    );
  }
  assert.equal(jwks.requests, 2);
  clock.time += 9_999;
  assertRefused(await provider.verify(unknown), "bad_token", /k9/);
  assert.equal(jwks.requests, 2);
  clock.time += 1;
  assertRefused(await provider.verify(unknown), "bad_token", /k9/);
  assert.equal(jwks.requests, 3);

  // The old key is retired: once the cache (10 minutes) runs out, its
  // tokens stop working.
  jwks.keys = jwks.keys.slice(1);
  assert.ok((await provider.verify(byFirst)).ok, "still cached");
  assert.equal(jwks.requests, 3);
  clock.time += DEFAULT_JWKS_TIMING.defaultMaxAgeMs;
  assertRefused(await provider.verify(byFirst), "bad_token", /key id "k1"/);
  assert.equal(jwks.requests, 4);
  assert.ok((await provider.verify(bySecond)).ok);

  // Concurrent logins share one fetch.
  clock.time += DEFAULT_JWKS_TIMING.defaultMaxAgeMs;
  const results = await Promise.all(
    Array.from({ length: 8 }, () => provider.verify(bySecond)),
  );
  assert.ok(results.every((result) => result.ok));
  assert.equal(jwks.requests, 5);
});

Deno.test("JwtIdentityProvider with a JWKS whose keys have no kid tries them by signature", async () => {
  await using jwks = new FakeJwks();
  const clock = new Clock();
  const lifetime = new AbortController();
  const [one, two] = [await ecPair(), await ecPair()];
  jwks.keys = [await jwk(one.publicKey), await jwk(two.publicKey)];
  const provider = await openProvider(
    { jwksUrl: jwks.url },
    clock,
    lifetime.signal,
  );
  for (const pair of [one, two]) {
    for (const header of [{ alg: "ES256" }, { alg: "ES256", kid: "any" }]) {
      const token = await sign(header, goodClaims(), pair.privateKey);
      assert.ok((await provider.verify(token)).ok, JSON.stringify(header));
    }
  }
  const stranger = await ecPair();
  const forged = await sign(
    { alg: "ES256" },
    goodClaims(),
    stranger.privateKey,
  );
  assertRefused(await provider.verify(forged), "bad_token", /badly signed/);
});

Deno.test("JwtIdentityProvider honours the JWKS response's max-age", async () => {
  await using jwks = new FakeJwks();
  const clock = new Clock();
  const lifetime = new AbortController();
  const pair = await ecPair();
  jwks.keys = [await jwk(pair.publicKey, { kid: "a" })];
  jwks.cacheControl = "public, max-age=60, must-revalidate";
  const provider = await openProvider(
    { jwksUrl: jwks.url },
    clock,
    lifetime.signal,
  );
  const token = await sign(
    { alg: "ES256", kid: "a" },
    goodClaims(),
    pair.privateKey,
  );
  assert.ok((await provider.verify(token)).ok);
  clock.time += 59_999;
  assert.ok((await provider.verify(token)).ok);
  assert.equal(jwks.requests, 1);
  clock.time += 1;
  assert.ok((await provider.verify(token)).ok);
  assert.equal(jwks.requests, 2);
  // max-age=0 still keeps the keys for the 10 s between two fetches.
  jwks.cacheControl = "no-cache, max-age=0";
  clock.time += 60_000;
  assert.ok((await provider.verify(token)).ok);
  assert.equal(jwks.requests, 3);
  clock.time += 9_999;
  assert.ok((await provider.verify(token)).ok);
  assert.equal(jwks.requests, 3);
  clock.time += 1;
  assert.ok((await provider.verify(token)).ok);
  assert.equal(jwks.requests, 4);
});

Deno.test("JwtIdentityProvider answers auth_unavailable while the JWKS is down, slow or garbage, and recovers", async (t) => {
  await using jwks = new FakeJwks();
  const lifetime = new AbortController();
  // Each fetch links to the lifetime and lets go of it when done, answered
  // or not (docs/PERFORMANCE.md).
  const listening = countAbortListeners(lifetime.signal);
  const pair = await rsaPair();
  jwks.keys = [await jwk(pair.publicKey, { kid: "k" })];
  const token = await sign(
    { alg: "RS256", kid: "k" },
    goodClaims(),
    pair.privateKey,
  );
  // A short fetch timeout keeps the slow case quick; the outcome, not the
  // time it took, is what is checked.
  const timing = { ...DEFAULT_JWKS_TIMING, fetchTimeoutMs: 300 };
  for (const mode of ["down", "garbage", "held", "empty"] as const) {
    await t.step(mode, async () => {
      const clock = new Clock();
      jwks.mode = mode;
      const provider = await openProvider(
        { jwksUrl: jwks.url },
        clock,
        lifetime.signal,
        timing,
      );
      const before = jwks.requests;
      const check = await provider.verify(token);
      assertRefused(
        check,
        "auth_unavailable",
        /Cannot verify the token: the JWKS at .* cannot be used/,
      );
      assert.ok(
        !check.ok && check.code === "auth_unavailable" &&
          check.retryAfterSec === 10,
      );
      assert.equal(jwks.requests, before + 1);
      // Within 10 s, logins fail fast without asking the provider again.
      clock.time += 4_000;
      const again = await provider.verify(token);
      assert.ok(
        !again.ok && again.code === "auth_unavailable" &&
          again.retryAfterSec === 6,
      );
      assert.equal(jwks.requests, before + 1);
      // Forged tokens are refused as such whatever the JWKS does.
      assertRefused(await provider.verify("a.b.c"), "bad_token", /malformed/);
      // The provider comes back.
      jwks.mode = "ok";
      clock.time += 6_000;
      assert.ok((await provider.verify(token)).ok);
      assert.equal(listening(), 0);
    });
  }
  await t.step("an unknown kid while the refetch fails", async () => {
    const clock = new Clock();
    jwks.mode = "ok";
    const provider = await openProvider(
      { jwksUrl: jwks.url },
      clock,
      lifetime.signal,
      timing,
    );
    assert.ok((await provider.verify(token)).ok);
    jwks.mode = "down";
    clock.time += 10_000;
    const rotated = await sign(
      { alg: "RS256", kid: "new" },
      goodClaims(),
      pair.privateKey,
    );
    assertRefused(
      await provider.verify(rotated),
      "auth_unavailable",
      /answered 503/,
    );
    clock.time += 1_000;
    assertRefused(
      await provider.verify(rotated),
      "auth_unavailable",
      /answered 503/,
    );
    // Known keys within their lifetime keep working.
    assert.ok((await provider.verify(token)).ok);
    assert.equal(listening(), 0);
  });
  await t.step("shutdown aborts a fetch in flight", async () => {
    const clock = new Clock();
    jwks.mode = "held";
    const stopping = new AbortController();
    const stoppingListeners = countAbortListeners(stopping.signal);
    const provider = await openProvider(
      { jwksUrl: jwks.url },
      clock,
      stopping.signal,
    );
    const pending = provider.verify(token);
    stopping.abort(new Error("The server is shutting down"));
    assertRefused(await pending, "auth_unavailable", /shutting down/);
    assert.equal(stoppingListeners(), 0);
  });
});

Deno.test("serveSync() with auth.jwt: POST /login and the HANDSHAKE accept RS256 and ES256 tokens; a JWKS that is down gives 503 auth_unavailable and nothing else waits", async () => {
  await using jwks = new FakeJwks();
  const rsa = await rsaPair();
  const ec = await ecPair();
  jwks.keys = [
    await jwk(rsa.publicKey, { kid: "rsa" }),
    await jwk(ec.publicKey, { kid: "ec" }),
  ];
  let now = NOW;
  await using server = await serveSync({
    port: 0,
    kv: ":memory:",
    auth: {
      allowAnonymous: true,
      jwt: {
        jwksUrl: jwks.url,
        issuer: "https://issuer.test/",
        audience: "tether",
      },
    },
    now: () => now,
    logger: () => {},
  });
  const login = async (body: unknown) => {
    const response = await fetch(`${server.url}/login`, {
      method: "POST",
      body: JSON.stringify(body),
    });
    return {
      status: response.status,
      headers: response.headers,
      body: await response.json(),
    };
  };
  const rsToken = await sign(
    { alg: "RS256", kid: "rsa" },
    goodClaims(),
    rsa.privateKey,
  );
  const esToken = await sign(
    { alg: "ES256", kid: "ec" },
    goodClaims({ sub: "bob" }),
    ec.privateKey,
  );
  const rs = await login({ provider: "jwt", token: rsToken });
  assert.equal(rs.status, 200, JSON.stringify(rs.body));
  assert.equal(rs.body.userId, "alice");
  const es = await login({ provider: "jwt", token: esToken });
  assert.equal(es.status, 200, JSON.stringify(es.body));
  assert.equal(es.body.userId, "bob");

  const forged = await login({
    provider: "jwt",
    token: `${text({ alg: "none" })}.${text(goodClaims())}.`,
  });
  assert.equal(forged.status, 401);
  assert.equal(forged.body.error.code, "login_failed");

  // The provider's token itself works in a HANDSHAKE.
  for (
    const [token, userId] of [[rsToken, "alice"], [esToken, "bob"]] as const
  ) {
    await using client = await ProtocolClient.connect(server.url);
    client.send({
      type: MessageType.Handshake,
      minVersion: PROTOCOL_VERSION,
      maxVersion: PROTOCOL_VERSION,
      accessToken: token,
    });
    const reply = await client.expect(MessageType.HandshakeReply);
    assert.equal(reply.userId, userId);
  }

  // The JWKS goes down and its keys expire.
  jwks.mode = "down";
  now += DEFAULT_JWKS_TIMING.defaultMaxAgeMs;
  const unavailable = await login({ provider: "jwt", token: rsToken });
  assert.equal(unavailable.status, 503);
  assert.equal(unavailable.body.error.code, "auth_unavailable");
  assert.equal(unavailable.headers.get("retry-after"), "10");
  {
    await using client = await ProtocolClient.connect(server.url);
    client.send({
      type: MessageType.Handshake,
      minVersion: PROTOCOL_VERSION,
      maxVersion: PROTOCOL_VERSION,
      accessToken: esToken,
    });
    const error = await client.expect(MessageType.Error);
    assert.equal(errorCodeName(error.code), "internal_server_error");
    assert.equal(error.tryAgain, true);
  }
  // Anonymous logins, refreshes and tokens already issued keep working.
  assert.equal((await login({ provider: "anonymous" })).status, 200);
  const refreshed = await login({
    provider: "refresh",
    refreshToken: rs.body.refreshToken,
  });
  assert.equal(refreshed.status, 200);
  {
    await using client = await ProtocolClient.connect(server.url);
    client.send({
      type: MessageType.Handshake,
      minVersion: PROTOCOL_VERSION,
      maxVersion: PROTOCOL_VERSION,
      accessToken: refreshed.body.accessToken,
    });
    assert.equal(
      (await client.expect(MessageType.HandshakeReply)).userId,
      "alice",
    );
  }
});

Deno.test("serveSync() with auth.jwt.publicKey as PEM verifies RS256 logins; a bad key is a TypeError at start", async () => {
  const rsa = await rsaPair();
  await using server = await serveSync({
    port: 0,
    kv: ":memory:",
    auth: { jwt: { publicKey: await pem(rsa.publicKey) } },
    logger: () => {},
  });
  const token = await sign(
    { alg: "RS256" },
    goodClaims({ exp: Date.now() / 1000 + 60 }),
    rsa.privateKey,
  );
  const response = await fetch(`${server.url}/login`, {
    method: "POST",
    body: JSON.stringify({ provider: "jwt", token }),
  });
  assert.equal(response.status, 200);
  assert.equal((await response.json()).userId, "alice");
  await assert.rejects(
    serveSync({
      port: 0,
      kv: ":memory:",
      auth: {
        jwt: {
          publicKey:
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----",
        },
      },
      logger: () => {},
    }),
    (error: unknown) =>
      error instanceof TypeError &&
      /auth\.jwt\.publicKey is neither an RSA nor a P-256 public key/.test(
        error.message,
      ),
  );
});
