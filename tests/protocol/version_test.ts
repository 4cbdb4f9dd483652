import assert from "node:assert/strict";
import {
  MIN_PROTOCOL_VERSION,
  negotiateVersion,
  PROTOCOL_VERSION,
} from "../../src/protocol/version.ts";

Deno.test("negotiateVersion() picks the highest version both ranges hold", () => {
  assert.equal(negotiateVersion(1, 1, 1, 1), 1);
  assert.equal(negotiateVersion(1, 5, 1, 3), 3);
  assert.equal(negotiateVersion(2, 3, 1, 5), 3);
  assert.equal(negotiateVersion(3, 3, 1, 5), 3);
  assert.equal(negotiateVersion(1, 2, 2, 4), 2);
});

Deno.test("negotiateVersion() returns null when the ranges do not overlap or are malformed", () => {
  assert.equal(negotiateVersion(4, 6, 1, 3), null);
  assert.equal(negotiateVersion(1, 1, 2, 3), null);
  assert.equal(negotiateVersion(3, 1, 1, 5), null);
  assert.equal(negotiateVersion(1, 5, 4, 2), null);
});

Deno.test("negotiateVersion() defaults to this build's range", () => {
  assert.ok(MIN_PROTOCOL_VERSION <= PROTOCOL_VERSION);
  assert.equal(negotiateVersion(1, 99), PROTOCOL_VERSION);
  assert.equal(
    negotiateVersion(PROTOCOL_VERSION + 1, PROTOCOL_VERSION + 2),
    null,
  );
});
