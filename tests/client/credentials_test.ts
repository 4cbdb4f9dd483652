import assert from "node:assert/strict";
import {
  Credentials,
  credentialsBody,
  renewJwt,
} from "../../src/client/credentials.ts";

Deno.test("Credentials.anonymous() and Credentials.jwt() give the POST /login bodies", () => {
  assert.deepEqual(credentialsBody(Credentials.anonymous()), {
    provider: "anonymous",
  });
  assert.deepEqual(credentialsBody(Credentials.jwt("t.o.k")), {
    provider: "jwt",
    token: "t.o.k",
  });
  assert.equal(Credentials.jwt("t").provider, "jwt");
});

Deno.test("Credentials.jwt() rejects an empty token or a refresh option that is not a function", () => {
  assert.throws(() => Credentials.jwt(""), TypeError);
  assert.throws(
    () => Credentials.jwt("t", { refreshToken: "x" as never }),
    TypeError,
  );
  assert.throws(() => new Credentials(), TypeError);
});

Deno.test("Credentials.jwt() refreshToken (or refresh) callback replaces the token", async () => {
  const credentials = Credentials.jwt("old", { refreshToken: () => "new" });
  assert.equal(await renewJwt(credentials), true);
  assert.deepEqual(credentialsBody(credentials), {
    provider: "jwt",
    token: "new",
  });
  // The same token again is no renewal.
  assert.equal(await renewJwt(credentials), false);
  const alias = Credentials.jwt("old", {
    refresh: () => Promise.resolve("fresh"),
  });
  assert.equal(await renewJwt(alias), true);
  assert.equal(await renewJwt(Credentials.jwt("no-callback")), false);
  await assert.rejects(
    renewJwt(Credentials.jwt("t", { refreshToken: () => "" })),
    TypeError,
  );
});
