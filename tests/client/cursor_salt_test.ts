// The client's download cursor and its version salt (docs/PROTOCOL.md
// §4.11): how a DOWNLOAD moves them, and how the meta record stores them.

import assert from "node:assert/strict";
import { encodeForSend } from "../../src/client/connection_attempt.ts";
import { moveCursor, type SaltedCursor } from "../../src/client/local_realm.ts";
import { decodeMessage } from "../../src/protocol/decode.ts";
import { type BindMessage, MessageType } from "../../src/protocol/messages.ts";
import {
  metaFromStored,
  metaToStored,
} from "../../src/client/storage/codec.ts";
import type { RealmMeta } from "../../src/client/storage/storage.ts";

Deno.test("moveCursor() takes a DOWNLOAD's version and salt, never moves back, and keeps the salt on an acknowledgement without one", () => {
  const cursor: SaltedCursor = { downloadCursor: 0 };
  moveCursor(cursor, { serverVersion: 3, serverVersionSalt: 33 });
  assert.deepEqual(cursor, { downloadCursor: 3, downloadCursorSalt: 33 });
  // Same version, no salt (version 1, or 0 = unknown): the salt stays.
  moveCursor(cursor, { serverVersion: 3 });
  assert.deepEqual(cursor, { downloadCursor: 3, downloadCursorSalt: 33 });
  // An older version (an acknowledgement during a snapshot) changes nothing.
  moveCursor(cursor, { serverVersion: 2, serverVersionSalt: 22 });
  assert.deepEqual(cursor, { downloadCursor: 3, downloadCursorSalt: 33 });
  moveCursor(cursor, { serverVersion: 5, serverVersionSalt: 55 });
  assert.deepEqual(cursor, { downloadCursor: 5, downloadCursorSalt: 55 });
  // A newer version without a salt: the old salt belonged to version 5.
  moveCursor(cursor, { serverVersion: 6 });
  assert.deepEqual(cursor, { downloadCursor: 6 });
});

Deno.test("the meta record keeps the cursor's salt, omits it when unknown, and refuses one out of range", () => {
  const meta: RealmMeta = {
    nodeId: 7,
    clientIdentity: { id: 1, salt: 2 },
    downloadCursor: 9,
    downloadCursorSalt: 0xffff_ffff,
    lastClientVersion: 3,
    acknowledgedClientVersion: 3,
  };
  assert.deepEqual(metaFromStored(metaToStored(meta)), meta);
  const { downloadCursorSalt: _, ...unsalted } = meta;
  assert.equal("downloadCursorSalt" in metaToStored(unsalted), false);
  // A store written before salts loads with none.
  assert.deepEqual(metaFromStored(metaToStored(unsalted)), unsalted);
  for (const bad of [-1, 1.5, 2 ** 32, "7"]) {
    assert.throws(
      () => metaFromStored({ ...metaToStored(meta), downloadCursorSalt: bad }),
      RangeError,
    );
  }
});

Deno.test("encodeForSend() leaves a BIND's salt out when the server talks protocol 1, and keeps it for 2", () => {
  const bind: BindMessage = {
    type: MessageType.Bind,
    sessionId: 1,
    path: "/~/todos",
    clientIdentity: { id: 1, salt: 2 },
    downloadCursor: 9,
    downloadCursorSalt: 0x1234,
    uploadCursor: 3,
  };
  const { downloadCursorSalt: _, ...unsalted } = bind;
  assert.deepEqual(decodeMessage(encodeForSend(bind, 1).slice()), unsalted);
  assert.deepEqual(decodeMessage(encodeForSend(bind, 2).slice()), bind);
});
