import assert from "node:assert/strict";
import { findInvalidUpload } from "../../src/server/upload_validation.ts";
import {
  keyBytes,
  MAX_KEY_BYTES,
  objectKey,
} from "../../src/server/storage/keys.ts";
import { put, remove, update, upload } from "../_helpers/changesets.ts";

Deno.test("findInvalidUpload() accepts increasing client versions touching each object once", () => {
  assert.equal(
    findInvalidUpload([
      upload(3, [put("T", "a", {}), put("U", "a", {})]),
      upload(7, [update("T", "a", { x: 1 }), remove("T", "b")]),
    ], "/u/r"),
    null,
  );
  assert.equal(findInvalidUpload([], "/u/r"), null);
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
    assert.equal(findInvalidUpload(changesets, "/u/r"), reason);
  }
});

Deno.test("findInvalidUpload() refuses names that, with the realm path, make a snapshot key longer than Deno KV takes, and no others", async () => {
  // 1530 bytes of UTF-8: about the longest realm path there is.
  const longPath = "/u/" + "名".repeat(509);
  const room = MAX_KEY_BYTES - keyBytes(objectKey(longPath));
  // "T" takes 3 bytes as a key part, an id of n ASCII characters n + 2.
  const fits = "x".repeat(room - 5);
  const over = "x".repeat(room - 4);
  const tooLong =
    "changeset 1 names an object whose storage key, with the realm path, is longer than 2048 bytes";
  assert.equal(
    findInvalidUpload([upload(1, [put("T", fits, {})])], longPath),
    null,
  );
  assert.equal(
    findInvalidUpload([upload(1, [put("T", over, {})])], longPath),
    tooLong,
  );
  // NUL bytes count twice (Deno KV escapes them).
  const nuls = "\0".repeat(Math.ceil(room / 4));
  assert.equal(
    findInvalidUpload([upload(1, [put(nuls, nuls, {})])], longPath),
    tooLong,
  );
  // Names of the longest allowed size fit under a short path.
  const name = "名".repeat(170);
  assert.equal(
    findInvalidUpload([upload(1, [put(name, name, {})])], "/u/r"),
    null,
  );
  // The bound is Deno KV's own.
  await using kv = await Deno.openKv(":memory:");
  await kv.set(objectKey(longPath, "T", fits), 1);
  await assert.rejects(
    () => kv.set(objectKey(longPath, "T", over), 1),
    /Key too large/,
  );
});
