import assert from "node:assert/strict";
import { findInvalidUpload } from "../../src/server/upload_validation.ts";
import { put, remove, update, upload } from "../_helpers/changesets.ts";

Deno.test("findInvalidUpload() accepts increasing client versions touching each object once", () => {
  assert.equal(
    findInvalidUpload([
      upload(3, [put("T", "a", {}), put("U", "a", {})]),
      upload(7, [update("T", "a", { x: 1 }), remove("T", "b")]),
    ]),
    null,
  );
  assert.equal(findInvalidUpload([]), null);
});

Deno.test("findInvalidUpload() names what is wrong", () => {
  const badStamp = upload(1, []);
  badStamp.stamp = { time: 1, counter: 70_000, node: 1 };
  const cases: [Parameters<typeof findInvalidUpload>[0], string][] = [
    [[upload(2, []), upload(1, [])], "client version 1 does not follow 2"],
    [[upload(1.5, [])], "client version 1.5 does not follow 0"],
    [[badStamp], "changeset 1 has a stamp out of range"],
    [
      [upload(1, [put("T", "a", {}), remove("T", "a")])],
      'changeset 1: object "T" "a" appears twice',
    ],
    [
      [upload(1, [put("x".repeat(513), "a", {})])],
      "changeset 1 has a type name or object id longer than 512 bytes",
    ],
  ];
  for (const [changesets, reason] of cases) {
    assert.equal(findInvalidUpload(changesets), reason);
  }
});
