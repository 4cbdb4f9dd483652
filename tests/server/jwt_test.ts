import assert from "node:assert/strict";
import { importHmacKey, signJwt, verifyJwt } from "../../src/server/jwt.ts";
import { encodeBase64Url } from "../../src/server/base64url.ts";

const encoder = new TextEncoder();

function segment(value: unknown): string {
  return encodeBase64Url(encoder.encode(JSON.stringify(value)));
}

Deno.test("signJwt() and verifyJwt() round-trip the claims", async () => {
  const key = await importHmacKey("secret");
  const token = await signJwt({ sub: "alice", exp: 1.5 }, key);
  assert.equal(token.split(".").length, 3);
  assert.deepEqual(await verifyJwt(token, key), {
    ok: true,
    claims: { sub: "alice", exp: 1.5 },
  });
});

Deno.test("verifyJwt() refuses a token signed with another key", async () => {
  const token = await signJwt({ sub: "alice" }, await importHmacKey("one"));
  assert.deepEqual(await verifyJwt(token, await importHmacKey("two")), {
    ok: false,
    reason: "bad_signature",
  });
});

Deno.test("verifyJwt() refuses a token whose payload was changed", async () => {
  const key = await importHmacKey("secret");
  const [header, , signature] = (await signJwt({ sub: "alice" }, key)).split(
    ".",
  );
  const forged = `${header}.${segment({ sub: "mallory" })}.${signature}`;
  assert.deepEqual(await verifyJwt(forged, key), {
    ok: false,
    reason: "bad_signature",
  });
});

Deno.test("verifyJwt() refuses alg none and other algorithms", async () => {
  const key = await importHmacKey("secret");
  const none = `${segment({ alg: "none" })}.${segment({ sub: "a" })}.`;
  assert.deepEqual(await verifyJwt(none, key), {
    ok: false,
    reason: "unsupported_algorithm",
  });
  const rs = `${segment({ alg: "RS256" })}.${segment({ sub: "a" })}.AAAA`;
  assert.deepEqual(await verifyJwt(rs, key), {
    ok: false,
    reason: "unsupported_algorithm",
  });
});

Deno.test("verifyJwt() calls malformed tokens malformed", async (t) => {
  const key = await importHmacKey("secret");
  const cases: [string, string][] = [
    ["empty", ""],
    ["two parts", "a.b"],
    ["four parts", "a.b.c.d"],
    ["bad base64", "!!!.e30.AAAA"],
    ["header not JSON", `${encodeBase64Url(encoder.encode("nope"))}.e30.AAAA`],
    ["header an array", `${segment([1])}.e30.AAAA`],
    ["too long", `${"a".repeat(9000)}.e30.AAAA`],
  ];
  for (const [name, token] of cases) {
    await t.step(name, async () => {
      assert.deepEqual(await verifyJwt(token, key), {
        ok: false,
        reason: "malformed",
      });
    });
  }
});
