// Version salts on a real server (docs/PROTOCOL.md §4.2, §4.11): every
// DOWNLOAD carries the salt of the version it moves the client to, a BIND
// with another salt for its cursor is told to reset, and a cursor whose
// version was compacted away is still checked — and still accepted.

import assert from "node:assert/strict";
import { errorCodeNumber } from "../../src/protocol/error_codes.ts";
import {
  type ClientIdentity,
  type DownloadMessage,
  MessageType,
} from "../../src/protocol/messages.ts";
import { put, upload } from "../_helpers/changesets.ts";
import { ProtocolClient } from "../_helpers/protocol_client.ts";
import { startTestServer, type TestServer } from "../_helpers/test_server.ts";

async function connect(
  test: TestServer,
  token: string,
  maxVersion?: number,
): Promise<ProtocolClient> {
  const client = await ProtocolClient.connect(test.url);
  await client.handshake(
    token,
    maxVersion === undefined ? {} : {
      minVersion: 1,
      maxVersion,
    },
  );
  return client;
}

function lastDownload(frames: { message: unknown }[]): DownloadMessage {
  return frames.at(-1)!.message as DownloadMessage;
}

/** A writer that has stored versions 1…`count` of `path`. */
async function writeVersions(
  test: TestServer,
  token: string,
  path: string,
  count: number,
) {
  const writer = await connect(test, token);
  await writer.bind(1, path);
  await writer.expect(MessageType.Download);
  writer.send({
    type: MessageType.Upload,
    sessionId: 1,
    changesets: Array.from(
      { length: count },
      (_, index) => upload(index + 1, [put("Note", `n${index + 1}`, {})]),
    ),
  });
  const ack = await writer.expect(MessageType.Download);
  assert.equal(ack.serverVersion, count);
  assert.equal(ack.lastIntegratedClientVersion, count);
  return { writer, salt: ack.serverVersionSalt };
}

Deno.test("every DOWNLOAD carries the salt of the version it moves the client to, the same for every session", async () => {
  await using test = await startTestServer();
  const login = await test.login();
  const { writer, salt } = await writeVersions(
    test,
    login.accessToken,
    "/~/notes",
    3,
  );
  await using _ = writer;
  assert.ok(salt !== undefined && salt >= 1 && salt <= 0xffff_ffff);

  await using reader = await connect(test, login.accessToken);
  await reader.bind(2, "/~/notes");
  const frames = await reader.downloadUntil(2, 3);
  assert.equal(lastDownload(frames).serverVersionSalt, salt);
  // An upload: the uploader's acknowledgement and the reader's DOWNLOAD
  // carry one salt for the new version.
  writer.send({
    type: MessageType.Upload,
    sessionId: 1,
    changesets: [upload(4, [put("Note", "n4", {})])],
  });
  const own = await writer.expect(MessageType.Download);
  assert.equal(own.serverVersion, 4);
  const seen = await reader.expect(MessageType.Download);
  assert.equal(seen.serverVersion, 4);
  assert.equal(seen.serverVersionSalt, own.serverVersionSalt);
  assert.notEqual(seen.serverVersionSalt, salt);
});

Deno.test("a BIND whose cursor salt differs from the server's is told client_reset_required; the right salt, or none, binds; protocol 1 binds as before", async () => {
  await using test = await startTestServer();
  const login = await test.login();
  const { writer, salt } = await writeVersions(
    test,
    login.accessToken,
    "/~/notes",
    3,
  );
  await using _ = writer;
  await using reader = await connect(test, login.accessToken);
  const identity = (await reader.bind(2, "/~/notes")) as ClientIdentity;
  await reader.downloadUntil(2, 3);
  reader.send({ type: MessageType.Unbind, sessionId: 2 });
  await reader.expect(MessageType.Unbound);

  const other = (salt! % 0xffff_fffe) + 1;
  await reader.bind(3, "/~/notes", {
    identity,
    downloadCursor: 3,
    downloadCursorSalt: other,
  });
  const error = await reader.expect(MessageType.Error);
  assert.equal(error.sessionId, 3);
  assert.equal(error.code, errorCodeNumber("client_reset_required"));
  assert.match(
    error.message,
    /download cursor 3 names a version of another history/,
  );

  for (const [sessionId, cursorSalt] of [[4, salt!], [5, 0]] as const) {
    await reader.bind(sessionId, "/~/notes", {
      identity,
      downloadCursor: 3,
      downloadCursorSalt: cursorSalt,
    });
    const download = await reader.expect(MessageType.Download);
    assert.equal(download.sessionId, sessionId);
    assert.equal(download.serverVersion, 3);
    assert.equal(download.serverVersionSalt, salt);
  }

  // Version 1 has no salts on the wire: it binds, and its DOWNLOADs have
  // none.
  await using old = await connect(test, login.accessToken, 1);
  await old.bind(1, "/~/notes", { identity, downloadCursor: 3 });
  const download = await old.expect(MessageType.Download);
  assert.equal(download.serverVersion, 3);
  assert.equal("serverVersionSalt" in download, false);
});

Deno.test("a client whose cursor version was compacted away binds with its salt and catches up without a reset; another salt for it is still refused", async () => {
  await using test = await startTestServer({
    downloadBatchBytes: 2048,
    history: { snapshotLagVersions: 1, retainVersions: 0 },
  });
  const login = await test.login();
  await using writer = await connect(test, login.accessToken);
  await writer.bind(1, "/~/notes");
  await writer.expect(MessageType.Download);
  const send = (from: number, to: number) => {
    const changesets = [];
    for (let version = from; version <= to; version++) {
      changesets.push(upload(version, [put("Note", `n${version % 7}`, {
        text: `version ${version} `.repeat(20),
      })]));
    }
    writer.send({ type: MessageType.Upload, sessionId: 1, changesets });
  };
  send(1, 5);

  const reader = await connect(test, login.accessToken);
  const identity = (await reader.bind(2, "/~/notes")) as ClientIdentity;
  const salt = lastDownload(await reader.downloadUntil(2, 5))
    .serverVersionSalt;
  assert.ok(salt !== undefined && salt !== 0);
  await reader.close();

  send(6, 40);
  await test.waitForLog((record) =>
    record.event === "snapshot_advanced" &&
    record.message === "Snapshot at version 40, history compacted through 40"
  );

  await using back = await connect(test, login.accessToken);
  await back.bind(2, "/~/notes", {
    identity,
    downloadCursor: 5,
    downloadCursorSalt: salt,
  });
  const frames = await back.downloadUntil(2, 40);
  const caughtUp = lastDownload(frames);
  assert.equal(caughtUp.serverVersion, 40);
  assert.ok(caughtUp.serverVersionSalt !== undefined);
  assert.notEqual(caughtUp.serverVersionSalt, 0);

  // The salt of compacted version 5 is kept, not forgotten: another one is
  // still a different history.
  await back.bind(3, "/~/notes", {
    identity,
    downloadCursor: 5,
    downloadCursorSalt: (salt % 0xffff_fffe) + 1,
  });
  const error = await back.expect(MessageType.Error);
  assert.equal(error.sessionId, 3);
  assert.equal(error.code, errorCodeNumber("client_reset_required"));
});
