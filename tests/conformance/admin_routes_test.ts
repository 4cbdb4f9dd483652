import assert from "node:assert/strict";
import { compactedRealm, fastApp, openClient } from "./_helpers.ts";
import { startTestServer } from "../_helpers/test_server.ts";
import { bounded } from "../_helpers/waits.ts";

const TOKEN = "admin-token-0123456789";
const AUTH = { authorization: `Bearer ${TOKEN}` };

function writeBody(changes: unknown[]): string {
  return JSON.stringify({ changes });
}

Deno.test("admin routes: write, read objects and follow the NDJSON feed with the admin token; the client sees the write", async () => {
  await using server = await startTestServer({ adminToken: TOKEN });
  await using client = await openClient(fastApp(server.url));
  const base = `${server.url}/admin/realms/${client.user.id}/todos`;

  const written = await fetch(`${base}/write`, {
    method: "POST",
    headers: AUTH,
    body: writeBody([
      {
        op: "put",
        type: "Task",
        id: "t1",
        fields: {
          title: "From the backend",
          due: { $date: "2030-01-02T03:04:05.000Z" },
          big: { $bigint: "123456789012345678901234567890" },
          blob: { $bytes: "AQID" },
        },
      },
    ]),
  });
  assert.equal(written.status, 200);
  assert.deepEqual(await written.json(), { version: 1 });
  await client.session.waitForDownload({ signal: bounded() });
  const synced = client.realm.get("Task", "t1")!;
  assert.equal(synced.title, "From the backend");
  assert.deepEqual(synced.due, new Date("2030-01-02T03:04:05.000Z"));
  assert.equal(synced.big, 123456789012345678901234567890n);
  assert.deepEqual(synced.blob, new Uint8Array([1, 2, 3]));

  const objects = await fetch(`${base}/objects?type=Task`, { headers: AUTH });
  assert.equal(objects.status, 200);
  assert.deepEqual(await objects.json(), {
    objects: [{
      id: "t1",
      fields: {
        title: "From the backend",
        due: { $date: "2030-01-02T03:04:05.000Z" },
        big: { $bigint: "123456789012345678901234567890" },
        blob: { $bytes: "AQID" },
      },
    }],
  });

  const leave = new AbortController();
  const feed = await fetch(`${base}/changes?since=0`, {
    headers: AUTH,
    signal: AbortSignal.any([leave.signal, bounded()]),
  });
  assert.equal(feed.status, 200);
  assert.match(feed.headers.get("content-type")!, /^application\/x-ndjson/);
  const lines = feed.body!.pipeThrough(new TextDecoderStream()).getReader();
  let buffered = "";
  const next = async (): Promise<unknown> => {
    for (;;) {
      const end = buffered.indexOf("\n");
      if (end >= 0) {
        const line = buffered.slice(0, end);
        buffered = buffered.slice(end + 1);
        if (line !== "") return JSON.parse(line);
        continue;
      }
      const { done, value } = await lines.read();
      assert.ok(!done, "the feed stays open");
      buffered += value;
    }
  };
  assert.deepEqual(await next(), {
    version: 1,
    changes: [{
      op: "put",
      type: "Task",
      id: "t1",
      fields: {
        title: "From the backend",
        due: { $date: "2030-01-02T03:04:05.000Z" },
        big: { $bigint: "123456789012345678901234567890" },
        blob: { $bytes: "AQID" },
      },
    }],
  });
  // Live: a client's write arrives on the open feed.
  await client.realm.write((tx) => tx.delete("Task", "t1"));
  assert.deepEqual(await next(), {
    version: 2,
    changes: [{ op: "delete", type: "Task", id: "t1" }],
  });
  await lines.cancel();
  leave.abort();
});

Deno.test("admin routes refuse: 401 alike for any realm, 400 bad path / JSON / value naming the field, 413 over maxMessageBytes", async () => {
  await using server = await startTestServer({
    adminToken: TOKEN,
    limits: { maxMessageBytes: 4096 },
  });
  const base = `${server.url}/admin/realms`;
  await server.realm("/exists/here").write((tx) => tx.put("T", "a", {}));

  const refusals = [];
  for (const path of ["/exists/here", "/does/not/exist"]) {
    for (
      const headers of [{}, { authorization: "Bearer nope-nope-nope-nope" }]
    ) {
      const response = await fetch(`${base}${path}/objects?type=T`, {
        headers,
      });
      assert.equal(response.status, 401);
      refusals.push(await response.text());
    }
  }
  assert.equal(new Set(refusals).size, 1, "the same body whatever the realm");

  // A segment with white space, and one with percent-encoding that does
  // not decode.
  const badPath = await fetch(`${base}/a%20b/c/objects?type=T`, {
    headers: AUTH,
  });
  assert.equal(badPath.status, 400);
  assert.equal((await badPath.json()).error.code, "invalid_path");
  const undecodable = await fetch(`${base}/a/%E0%A4%A/objects?type=T`, {
    headers: AUTH,
  });
  assert.equal(undecodable.status, 400);
  await undecodable.body?.cancel();
  const tilde = await fetch(`${base}/~/todos/objects?type=T`, {
    headers: AUTH,
  });
  assert.equal(tilde.status, 400);
  await tilde.body?.cancel();

  const badJson = await fetch(`${base}/exists/here/write`, {
    method: "POST",
    headers: AUTH,
    body: "{not json",
  });
  assert.equal(badJson.status, 400);
  assert.equal((await badJson.json()).error.code, "bad_json");

  const badValue = await fetch(`${base}/exists/here/write`, {
    method: "POST",
    headers: AUTH,
    body: writeBody([
      {
        op: "put",
        type: "T",
        id: "b",
        fields: { ok: 1, due: { $date: "yesterday" } },
      },
    ]),
  });
  assert.equal(badValue.status, 400);
  const badValueBody = await badValue.json();
  assert.equal(badValueBody.error.field, "changes[0].fields.due.$date");
  assert.match(badValueBody.error.message, /changes\[0\]\.fields\.due/);

  const missing = await fetch(`${base}/exists/here/write`, {
    method: "POST",
    headers: AUTH,
    body: writeBody([{
      op: "update",
      type: "T",
      id: "nobody",
      fields: { x: 1 },
    }]),
  });
  assert.equal(missing.status, 400);
  assert.match((await missing.json()).error.message, /does not exist/);

  const large = await fetch(`${base}/exists/here/write`, {
    method: "POST",
    headers: AUTH,
    body: writeBody([{
      op: "put",
      type: "T",
      id: "c",
      fields: { text: "x".repeat(5000) },
    }]),
  });
  assert.equal(large.status, 413);
  await large.body?.cancel();

  const since = await fetch(`${base}/exists/here/changes?since=-1`, {
    headers: AUTH,
  });
  assert.equal(since.status, 400);
  await since.body?.cancel();

  // Nothing refused was written.
  assert.deepEqual(
    (await server.realm("/exists/here").objects("T")).map(({ id }) => id),
    ["a"],
  );
});

Deno.test("admin routes answer 404 without adminToken, whatever the token sent", async () => {
  await using server = await startTestServer();
  for (const headers of [{}, AUTH]) {
    const response = await fetch(
      `${server.url}/admin/realms/a/b/objects?type=T`,
      { headers },
    );
    assert.equal(response.status, 404);
    assert.equal((await response.json()).error.code, "not_found");
  }
});

Deno.test("GET /admin/realms/<path>/changes from a compacted version answers 410 changes_compacted", async () => {
  await using server = await startTestServer({
    adminToken: TOKEN,
    history: { retainVersions: 0, snapshotLagVersions: 1 },
  });
  await compactedRealm(server, "/backend/log");
  const response = await fetch(
    `${server.url}/admin/realms/backend/log/changes?since=0`,
    { headers: AUTH },
  );
  assert.equal(response.status, 410);
  assert.equal((await response.json()).error.code, "changes_compacted");
});

Deno.test("an open NDJSON change feed and an in-process feed end when the server shuts down", async () => {
  const server = await startTestServer({ adminToken: TOKEN });
  try {
    const realm = server.realm("/backend/feed");
    await realm.write((tx) => tx.put("Task", "a", {}));
    const response = await fetch(
      `${server.url}/admin/realms/backend/feed/changes?since=0`,
      { headers: AUTH, signal: bounded() },
    );
    const reader = response.body!.pipeThrough(new TextDecoderStream())
      .getReader();
    const first = await reader.read();
    assert.match(first.value!, /"version":1/);
    const inProcess = realm.changes({ since: 1, signal: bounded() });
    const ended = (async () => {
      const seen = [];
      for await (const item of inProcess) seen.push(item);
      return seen;
    })();
    await server.shutdown();
    assert.deepEqual(await ended, []);
    // The body ends (or the connection is cut) rather than hanging.
    for (;;) {
      const next = await reader.read().catch(() => ({ done: true }));
      if (next.done) break;
    }
  } finally {
    await server.shutdown();
  }
});
