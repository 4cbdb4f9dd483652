import assert from "node:assert/strict";
import {
  MAX_REALM_PATH_LENGTH,
  resolveRealmPath,
} from "../../src/server/realm_path.ts";
import { ownPathsOnly } from "../../src/server/permissions.ts";

Deno.test("resolveRealmPath() replaces each ~ segment with the user id", () => {
  assert.deepEqual(resolveRealmPath("/~/todos", "u1"), {
    ok: true,
    path: "/u1/todos",
  });
  assert.deepEqual(resolveRealmPath("/shared/~/x~y/~", "u1"), {
    ok: true,
    path: "/shared/u1/x~y/u1",
  });
  assert.deepEqual(resolveRealmPath("/a-b_c.d/E9", "u1"), {
    ok: true,
    path: "/a-b_c.d/E9",
  });
  // Segments are taken literally: nothing is percent-decoded.
  assert.deepEqual(resolveRealmPath("/~/a%2Fb/é", "auth0|42"), {
    ok: true,
    path: "/auth0|42/a%2Fb/é",
  });
});

Deno.test("resolveRealmPath() refuses invalid paths", () => {
  for (
    const path of [
      "",
      "todos",
      "/",
      "/a/",
      "//a",
      "/a//b",
      "/a/./b",
      "/a/../b",
      "/a b",
      "/a\tb",
      "/a\u00a0b",
      "/a\u0000",
      "/a\u007f",
    ]
  ) {
    assert.equal(resolveRealmPath(path, "u1").ok, false, JSON.stringify(path));
  }
  const long = "/" + "a".repeat(MAX_REALM_PATH_LENGTH);
  assert.deepEqual(resolveRealmPath(long, "u1"), {
    ok: false,
    reason: `Path is longer than ${MAX_REALM_PATH_LENGTH} characters`,
  });
});

Deno.test("ownPathsOnly() allows only paths under /<userId>/", () => {
  assert.equal(ownPathsOnly("u1", "/u1/todos"), "readwrite");
  assert.equal(ownPathsOnly("u1", "/u1/a/b"), "readwrite");
  assert.equal(ownPathsOnly("u1", "/u1"), "none");
  assert.equal(ownPathsOnly("u1", "/u10/todos"), "none");
  assert.equal(ownPathsOnly("u1", "/u2/todos"), "none");
});
