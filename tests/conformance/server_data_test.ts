// Conformance: docs/SERVER.md "Server-side data access" and "Mounting it in
// your own HTTP server", and the per-connection queue bound ("Memory"):
// backend writes against client writes by stamp, the change feed's edges,
// the admin routes' exact answers, a handler under a prefix or detached, and
// a client refused while the store stalls, through the public API.

import assert from "node:assert/strict";
import { App, type Clock, Credentials, systemClock } from "../../mod.ts";
import { createSyncHandler, serveSync } from "../../server.ts";
import {
  fastApp,
  openClient,
  openDownloaded,
  recordConnectionStates,
} from "./_helpers.ts";
import { startTestServer } from "../_helpers/test_server.ts";
import { TestKv } from "../_helpers/test_kv.ts";
import { bounded } from "../_helpers/waits.ts";
import { take } from "./_helpers.ts";

const TOKEN = "admin-token-0123456789";
const AUTH = { authorization: `Bearer ${TOKEN}` };
const HOUR = 60 * 60 * 1000;

/** The system clock, `offsetMs` away: a device whose clock is wrong. */
function skewedClock(offsetMs: number): Clock {
  return { ...systemClock, now: () => Date.now() + offsetMs };
}

/** Reads an NDJSON body line by line; blank lines are returned as "". */
function ndjsonLines(body: ReadableStream<Uint8Array>) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffered = "";
  return {
    async next(): Promise<string | null> {
      for (;;) {
        const end = buffered.indexOf("\n");
        if (end >= 0) {
          const line = buffered.slice(0, end);
          buffered = buffered.slice(end + 1);
          return line;
        }
        const { done, value } = await reader.read();
        if (done) return null;
        buffered += value;
      }
    },
    cancel: () => reader.cancel(),
  };
}

// First in the file: Deno prints some warnings once per process.
Deno.test("admin changes feed: a server that streams it and sees its client leave prints nothing on the console", async () => {
  const printed: unknown[][] = [];
  const console_ = globalThis.console;
  const saved = { ...console_ };
  for (const method of ["log", "info", "warn", "error", "debug"] as const) {
    console_[method] = (...args: unknown[]) => printed.push([method, ...args]);
  }
  try {
    await using server = await startTestServer({ adminToken: TOKEN });
    await server.realm("/backend/quiet").write((tx) => tx.put("T", "a", {}));
    const leave = new AbortController();
    const feed = await fetch(
      `${server.url}/admin/realms/backend/quiet/changes?since=0`,
      { headers: AUTH, signal: AbortSignal.any([leave.signal, bounded()]) },
    );
    const lines = ndjsonLines(feed.body!);
    assert.match((await lines.next())!, /"version":1/);
    leave.abort();
    await lines.cancel().catch(() => {});
  } finally {
    Object.assign(console_, saved);
  }
  assert.deepEqual(printed, []);
});

Deno.test("ServerRealm.write() after a client write stamped ahead of the server's clock still wins: the server's HLC follows what it stored", async () => {
  await using server = await startTestServer();
  // A phone whose clock runs an hour fast.
  await using client = await openClient(
    fastApp(server.url, { clock: skewedClock(HOUR) }),
  );
  const todos = server.realm(`/${client.user.id}/todos`);
  await client.realm.write((tx) => {
    tx.put("Task", "a", { title: "from the phone", done: false });
    tx.put("Task", "gone", { title: "deleted next" });
  });
  await client.realm.write((tx) => tx.delete("Task", "gone"));
  await client.session.waitForUpload({ signal: bounded() });

  // The backend reads the phone's write, then changes it: it comes after.
  assert.equal((await todos.get("Task", "a"))?.title, "from the phone");
  await todos.write((tx) => {
    tx.update("Task", "a", { title: "from the backend" });
    tx.put("Task", "gone", { title: "put back by the backend" });
  });
  assert.deepEqual(await todos.get("Task", "a"), {
    title: "from the backend",
    done: false,
  });
  assert.deepEqual(await todos.get("Task", "gone"), {
    title: "put back by the backend",
  });
  await client.session.waitForDownload({ signal: bounded() });
  assert.deepEqual(client.realm.get("Task", "a"), {
    title: "from the backend",
    done: false,
  });
  assert.deepEqual(client.realm.get("Task", "gone"), {
    title: "put back by the backend",
  });
});

Deno.test("ServerRealm.write() and an offline client write of one field: the newer stamp wins on both sides, whatever arrives last", async () => {
  await using server = await startTestServer();
  for (const [offset, winner] of [[-HOUR, "backend"], [HOUR, "client"]]) {
    await using client = await openClient(
      fastApp(server.url, { clock: skewedClock(offset as number) }),
    );
    const todos = server.realm(`/${client.user.id}/todos`);
    await todos.write((tx) => tx.put("Task", "t", { title: "first", n: 1 }));
    await client.session.waitForDownload({ signal: bounded() });

    // Offline, the client writes the field the backend writes meanwhile.
    client.session.pause();
    const receipt = await client.realm.write((tx) =>
      tx.update("Task", "t", { title: "client" })
    );
    await todos.write((tx) => tx.update("Task", "t", { title: "backend" }));
    client.session.resume();
    await receipt.waitForUpload({ signal: bounded() });
    await client.session.waitForDownload({ signal: bounded() });

    const expected = { title: winner, n: 1 };
    assert.deepEqual(await todos.get("Task", "t"), expected, `${offset}`);
    assert.deepEqual(client.realm.get("Task", "t"), expected, `${offset}`);
  }
});

Deno.test("ServerRealm.objects() refuses a bad query with the client's own error", async () => {
  await using server = await startTestServer();
  await using client = await openClient(fastApp(server.url));
  const todos = server.realm(`/${client.user.id}/todos`);
  await todos.write((tx) => tx.put("Task", "a", { rank: 1 }));
  const bad: unknown[] = [
    { where: { rank: { between: 1 } } },
    { where: { rank: { gt: undefined } } },
    { where: { $or: "rank" } },
    { sort: [["rank", "up"]] },
    { sort: "rank" },
    { limit: -1 },
    { limit: 1.5 },
    { offset: -2 },
    { where: { rank: { in: "12" } } },
    { bogus: true },
  ];
  for (const query of bad) {
    let clientError: unknown;
    try {
      client.realm.objects("Task", query as never);
    } catch (error) {
      clientError = error;
    }
    assert.ok(clientError instanceof TypeError, JSON.stringify(query));
    await assert.rejects(
      todos.objects("Task", query as never),
      (error: unknown) => {
        assert.ok(error instanceof TypeError, JSON.stringify(query));
        assert.equal(error.message, clientError.message);
        return true;
      },
    );
  }
  await assert.rejects(todos.objects("", {}), TypeError);
  await assert.rejects(todos.get("Task", ""), TypeError);
});

Deno.test("ServerRealm.write() and the admin write refuse a value no client could download, naming the field; a value at the limit syncs", async () => {
  await using server = await startTestServer({ adminToken: TOKEN });
  await using client = await openClient(fastApp(server.url));
  const path = `/${client.user.id}/todos`;
  const todos = server.realm(path);
  const MiB = 1024 * 1024;
  const tooLong = "x".repeat(MiB + 1);
  const tooMany = new Uint8Array(8 * MiB + 1);
  for (const [name, value] of [["text", tooLong], ["blob", tooMany]] as const) {
    await assert.rejects(
      todos.write((tx) => tx.put("Task", "big", { ok: 1, [name]: value })),
      (error: unknown) =>
        error instanceof TypeError &&
        error.message.includes(`field "${name}"`),
      name,
    );
  }
  const refusals = [
    [{ text: tooLong }, "changes[0].fields.text"],
    [
      // 8 MiB + 1 zero bytes: every 4 base64 characters "AAAA" are 3.
      { blob: { $bytes: "AAAA".repeat((8 * MiB + 1) / 3) } },
      "changes[0].fields.blob.$bytes",
    ],
  ] as const;
  for (const [fields, field] of refusals) {
    const response = await fetch(`${server.url}/admin/realms${path}/write`, {
      method: "POST",
      headers: AUTH,
      body: JSON.stringify({
        changes: [{ op: "put", type: "Task", id: "big", fields }],
      }),
    });
    assert.equal(response.status, 400, field);
    const body = await response.json();
    assert.equal(body.error.code, "bad_value");
    assert.equal(body.error.field, field);
  }
  assert.equal(await todos.get("Task", "big"), undefined);

  // At the limit: stored, and the client downloads it.
  const longest = "y".repeat(MiB);
  const { version } = await todos.write((tx) =>
    tx.put("Task", "big", { text: longest })
  );
  assert.equal(version, 1);
  await client.session.waitForDownload({ signal: bounded() });
  assert.equal(client.realm.get("Task", "big")?.text, longest);
  assert.equal(client.session.state, "active");

  // 6 MiB of bytes over HTTP (a base64 check once overflowed a stack here
  // and answered 500).
  const large = await fetch(`${server.url}/admin/realms${path}/write`, {
    method: "POST",
    headers: AUTH,
    body: JSON.stringify({
      changes: [{
        op: "put",
        type: "Task",
        id: "blob",
        fields: { blob: { $bytes: "AAAA".repeat(2 * MiB) } },
      }],
    }),
  });
  assert.equal(large.status, 200);
  assert.deepEqual(await large.json(), { version: 2 });
  await client.session.waitForDownload({ signal: bounded() });
  assert.deepEqual(
    client.realm.get("Task", "blob")?.blob,
    new Uint8Array(6 * MiB),
  );
});

Deno.test("ServerRealm.changes(): since is exclusive, two consumers see the same order, a bad since is a TypeError, an aborted signal ends the feed at once", async () => {
  await using server = await startTestServer();
  const realm = server.realm("/backend/feed");
  for (let index = 1; index <= 4; index++) {
    await realm.write((tx) => tx.put("Task", `t${index}`, { index }));
  }
  const [one, two] = await Promise.all([
    take(realm.changes({ since: 1, signal: bounded() }), 3),
    take(realm.changes({ since: 1, signal: bounded() }), 3),
  ]);
  assert.deepEqual(one.map(({ version }) => version), [2, 3, 4]);
  assert.deepEqual(two, one);
  assert.deepEqual(one[0]!.changes, [
    { op: "put", type: "Task", id: "t2", fields: { index: 2 } },
  ]);
  // Default since is 0: everything.
  const all = await take(realm.changes({ signal: bounded() }), 1);
  assert.equal(all[0]!.version, 1);

  for (const since of [-1, 1.5, Number.NaN, "2" as unknown as number]) {
    assert.throws(
      () => realm.changes({ since, signal: bounded() }),
      (error: unknown) =>
        error instanceof TypeError && /since/.test(error.message),
      String(since),
    );
  }

  const aborted = new AbortController();
  aborted.abort(new Error("consumer left"));
  const seen = [];
  for await (
    const item of realm.changes({ since: 0, signal: aborted.signal })
  ) {
    seen.push(item);
  }
  assert.deepEqual(seen, []);

  // Aborted while it waits for the next version: ends, no error.
  const leave = new AbortController();
  const waiting = realm.changes({
    since: 4,
    signal: AbortSignal.any([leave.signal, bounded()]),
  }).getReader();
  const next = waiting.read();
  leave.abort(new Error("consumer left"));
  assert.deepEqual(await next, { done: true, value: undefined });
});

Deno.test("ServerRealm.write() from many callers at once: each gets its own version, and the feed lists them in that order", async () => {
  await using server = await startTestServer();
  const realm = server.realm("/backend/burst");
  const results = await Promise.all(
    Array.from(
      { length: 8 },
      (_, index) => realm.write((tx) => tx.put("Task", `t${index}`, { index })),
    ),
  );
  const versions = results.map(({ version }) => version);
  assert.deepEqual([...versions].sort((a, b) => a - b), [
    1,
    2,
    3,
    4,
    5,
    6,
    7,
    8,
  ]);
  const items = await take(realm.changes({ since: 0, signal: bounded() }), 8);
  for (const [index, { version }] of results.entries()) {
    assert.deepEqual(items[version - 1]!.changes, [
      { op: "put", type: "Task", id: `t${index}`, fields: { index } },
    ]);
  }
});

Deno.test("ServerRealm.write() takes an async function as the client does: writes after an await belong to it, a rejection writes nothing, calls commit in order", async () => {
  await using server = await startTestServer();
  const realm = server.realm("/backend/async");
  let release!: () => void;
  const gate = new Promise<void>((resolve) => release = resolve);
  const slow = realm.write(async (tx) => {
    tx.put("Task", "before", { n: 1 });
    await gate;
    tx.put("Task", "after", { n: 2 });
  });
  // Called later, but committed after the slow one: calls keep their order.
  const quick = realm.write((tx) => tx.put("Task", "quick", { n: 3 }));
  const failing = realm.write(async (tx) => {
    tx.put("Task", "never", { n: 4 });
    await Promise.resolve();
    throw new Error("the backend gave up");
  });
  release();
  assert.deepEqual(await slow, { version: 1 });
  assert.deepEqual(await quick, { version: 2 });
  await assert.rejects(failing, { message: "the backend gave up" });
  const items = await take(realm.changes({ since: 0, signal: bounded() }), 2);
  assert.deepEqual(items, [
    {
      version: 1,
      changes: [
        { op: "put", type: "Task", id: "before", fields: { n: 1 } },
        { op: "put", type: "Task", id: "after", fields: { n: 2 } },
      ],
    },
    {
      version: 2,
      changes: [{ op: "put", type: "Task", id: "quick", fields: { n: 3 } }],
    },
  ]);
  assert.equal(await realm.get("Task", "never"), undefined);
  // A write after the rejected one still goes through.
  assert.deepEqual(await realm.write((tx) => tx.delete("Task", "quick")), {
    version: 3,
  });
});

Deno.test("ServerRealm.changes() resumes across a server restart on the same KV file: from the last version seen, nothing missed or repeated", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const kv = `${dir}/sync.kv`;
    let lastSeen = 0;
    {
      await using first = await startTestServer({ kv });
      const realm = first.realm("/backend/orders");
      for (let index = 1; index <= 3; index++) {
        await realm.write((tx) => tx.put("Order", `o${index}`, { index }));
      }
      const items = await take(
        realm.changes({ since: 0, signal: bounded() }),
        2,
      );
      lastSeen = items.at(-1)!.version;
    }
    await using second = await startTestServer({ kv });
    const realm = second.realm("/backend/orders");
    const leave = new AbortController();
    const seen: string[] = [];
    const reading = (async () => {
      for await (
        const { version, changes } of realm.changes({
          since: lastSeen,
          signal: AbortSignal.any([leave.signal, bounded()]),
        })
      ) {
        seen.push(`${version}:${changes.map(({ id }) => id).join()}`);
        if (version === 4) leave.abort();
      }
    })();
    await realm.write((tx) => tx.put("Order", "o4", { index: 4 }));
    await reading;
    assert.deepEqual(seen, ["3:o3", "4:o4"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("admin write answers only once the store has committed: a stalled store holds the answer back", async () => {
  await using inner = await Deno.openKv(":memory:");
  const gated = new TestKv(inner);
  await using server = await startTestServer({
    adminToken: TOKEN,
    kv: gated.kv,
  });
  const stall = gated.stall("commit", () => true);
  let answered = false;
  const response = fetch(`${server.url}/admin/realms/backend/slow/write`, {
    method: "POST",
    headers: AUTH,
    body: JSON.stringify({
      changes: [{ op: "put", type: "T", id: "a", fields: { n: 1 } }],
    }),
    signal: bounded(),
  }).then((answer) => {
    answered = true;
    return answer;
  });
  await stall.reached;
  // A full request through the same server meanwhile: the write is still
  // waiting for the store.
  const health = await fetch(`${server.url}/health`, { signal: bounded() });
  await health.body?.cancel();
  assert.equal(answered, false, "answered before the store committed");
  stall.release();
  const written = await response;
  assert.equal(written.status, 200);
  assert.deepEqual(await written.json(), { version: 1 });
  assert.deepEqual(await server.realm("/backend/slow").get("T", "a"), { n: 1 });
});

Deno.test("admin changes feed: headers come at once, before any changeset, and a prefixed handler serves the admin routes under its prefix", async () => {
  await using sync = await createSyncHandler({
    kv: ":memory:",
    auth: { allowAnonymous: true },
    prefix: "/api/sync",
    adminToken: TOKEN,
    logger: () => {},
  });
  await using http = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen() {} },
    (request, info) => sync.fetch(request, info),
  );
  const base = `http://127.0.0.1:${http.addr.port}/api/sync/admin/realms`;
  const leave = new AbortController();
  const feed = await fetch(`${base}/backend/quiet/changes?since=0`, {
    headers: AUTH,
    signal: AbortSignal.any([leave.signal, bounded()]),
  });
  assert.equal(feed.status, 200);
  assert.match(feed.headers.get("content-type")!, /^application\/x-ndjson/);
  const lines = ndjsonLines(feed.body!);
  try {
    const written = await fetch(`${base}/backend/quiet/write`, {
      method: "POST",
      headers: AUTH,
      body: JSON.stringify({ changes: [{ op: "delete", type: "T", id: "x" }] }),
    });
    assert.deepEqual(await written.json(), { version: 1 });
    let line = await lines.next();
    // A keep-alive may come first; it is a blank line.
    while (line === "") line = await lines.next();
    assert.deepEqual(JSON.parse(line!), {
      version: 1,
      changes: [{ op: "delete", type: "T", id: "x" }],
    });
  } finally {
    await lines.cancel();
    leave.abort();
  }
  const unprefixed = await sync.fetch(
    new Request("http://app/admin/realms/backend/quiet/objects?type=T", {
      headers: AUTH,
    }),
  );
  assert.equal(unprefixed.status, 404);
  await unprefixed.body?.cancel();
});

Deno.test("admin routes: the feed's since is exclusive over HTTP, values JSON lacks round-trip nested, and a write's version is the feed's", async () => {
  await using server = await startTestServer({ adminToken: TOKEN });
  const base = `${server.url}/admin/realms/backend/values`;
  const nested = {
    list: [{ $date: "2030-01-02T03:04:05.000Z" }, { $bigint: "-42" }],
    map: { blob: { $bytes: "/w==" }, text: "plain", none: null },
  };
  const versions = [];
  for (const id of ["a", "b"]) {
    const response = await fetch(`${base}/write`, {
      method: "POST",
      headers: { ...AUTH, "content-type": "application/json" },
      body: JSON.stringify({
        changes: [{ op: "put", type: "T", id, fields: nested }],
      }),
    });
    assert.equal(response.status, 200);
    assert.match(response.headers.get("content-type")!, /^application\/json/);
    const body = await response.json();
    assert.deepEqual(Object.keys(body), ["version"]);
    versions.push(body.version);
  }
  assert.deepEqual(versions, [1, 2]);
  // Stored as realm values, not as the tags.
  assert.deepEqual(await server.realm("/backend/values").get("T", "a"), {
    list: [new Date("2030-01-02T03:04:05.000Z"), -42n],
    map: { blob: new Uint8Array([255]), text: "plain", none: null },
  });
  const objects = await fetch(`${base}/objects?type=T`, { headers: AUTH });
  assert.deepEqual(await objects.json(), {
    objects: [{ id: "a", fields: nested }, { id: "b", fields: nested }],
  });

  const deleted = await fetch(`${base}/write`, {
    method: "POST",
    headers: AUTH,
    body: JSON.stringify({
      changes: [
        { op: "update", type: "T", id: "a", fields: { extra: 1 } },
        { op: "delete", type: "T", id: "b" },
      ],
    }),
  });
  assert.deepEqual(await deleted.json(), { version: 3 });

  const leave = new AbortController();
  const feed = await fetch(`${base}/changes?since=1`, {
    headers: AUTH,
    signal: AbortSignal.any([leave.signal, bounded()]),
  });
  assert.equal(feed.status, 200);
  const lines = ndjsonLines(feed.body!);
  try {
    assert.deepEqual(JSON.parse((await lines.next())!), {
      version: 2,
      changes: [{ op: "put", type: "T", id: "b", fields: nested }],
    });
    assert.deepEqual(JSON.parse((await lines.next())!), {
      version: 3,
      changes: [
        { op: "update", type: "T", id: "a", fields: { extra: 1 } },
        { op: "delete", type: "T", id: "b" },
      ],
    });
  } finally {
    await lines.cancel();
    leave.abort();
  }
});

Deno.test("admin routes refuse the same way on every route: 401 alike for any realm, 404 without adminToken, 400 for a bad since, a bad op, a missing type or realm path", async () => {
  await using server = await startTestServer({ adminToken: TOKEN });
  await using closed = await startTestServer();
  await server.realm("/exists/here").write((tx) => tx.put("T", "a", {}));
  const requests: [string, RequestInit][] = [
    ["objects?type=T", {}],
    ["write", {
      method: "POST",
      body: JSON.stringify({
        changes: [{ op: "put", type: "T", id: "x", fields: {} }],
      }),
    }],
    ["changes?since=0", {}],
  ];
  const bodies = new Set<string>();
  for (const [route, init] of requests) {
    for (const path of ["/exists/here", "/does/not/exist"]) {
      for (const token of [undefined, "Bearer wrong-token", `Basic ${TOKEN}`]) {
        const headers = token === undefined ? {} : { authorization: token };
        const response = await fetch(
          `${server.url}/admin/realms${path}/${route}`,
          { ...init, headers, signal: bounded() },
        );
        assert.equal(response.status, 401, `${route} ${path} ${token}`);
        bodies.add(await response.text());
      }
      const hidden = await fetch(`${closed.url}/admin/realms${path}/${route}`, {
        ...init,
        headers: AUTH,
        signal: bounded(),
      });
      assert.equal(hidden.status, 404, `${route} without adminToken`);
      await hidden.body?.cancel();
    }
  }
  assert.equal(bodies.size, 1, "one 401 body for every realm and route");
  assert.deepEqual(await server.realm("/does/not/exist").objects("T"), []);
  assert.deepEqual(
    (await server.realm("/exists/here").objects("T")).map(({ id }) => id),
    ["a"],
  );

  const base = `${server.url}/admin/realms/exists/here`;
  for (const since of ["abc", "1.5", "-1", "1e3"]) {
    const response = await fetch(`${base}/changes?since=${since}`, {
      headers: AUTH,
    });
    assert.equal(response.status, 400, since);
    await response.body?.cancel();
  }
  // A known route with no realm path, or an empty segment in it.
  for (const path of ["/objects", "//write", "/a//b/changes"]) {
    const response = await fetch(`${server.url}/admin/realms${path}`, {
      method: path.endsWith("write") ? "POST" : "GET",
      headers: AUTH,
      body: path.endsWith("write") ? "{}" : null,
    });
    assert.equal(response.status, 400, path);
    assert.equal((await response.json()).error.code, "invalid_path", path);
  }
  const noType = await fetch(`${base}/objects`, { headers: AUTH });
  assert.equal(noType.status, 400);
  await noType.body?.cancel();
  const badOp = await fetch(`${base}/write`, {
    method: "POST",
    headers: AUTH,
    body: JSON.stringify({
      changes: [{ op: "upsert", type: "T", id: "x", fields: {} }],
    }),
  });
  assert.equal(badOp.status, 400);
  const badOpBody = await badOp.json();
  assert.equal(badOpBody.error.field, "changes[0].op");
  assert.match(badOpBody.error.message, /changes\[0\]\.op/);
});

Deno.test("admin write: a streamed body over limits.maxMessageBytes without Content-Length is 413, and nothing is written", async () => {
  await using server = await startTestServer({
    adminToken: TOKEN,
    limits: { maxMessageBytes: 4096 },
  });
  const text = JSON.stringify({
    changes: [{
      op: "put",
      type: "T",
      id: "big",
      fields: { s: "x".repeat(8000) },
    }],
  });
  const bytes = new TextEncoder().encode(text);
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      for (let at = 0; at < bytes.length; at += 1000) {
        controller.enqueue(bytes.slice(at, at + 1000));
      }
      controller.close();
    },
  });
  const response = await fetch(`${server.url}/admin/realms/a/b/write`, {
    method: "POST",
    headers: AUTH,
    body,
    signal: bounded(),
  });
  assert.equal(response.status, 413);
  assert.equal((await response.json()).error.code, "payload_too_large");
  assert.deepEqual(await server.realm("/a/b").objects("T"), []);
});

Deno.test("createSyncHandler({ prefix }): paths only under the prefix, never a neighbour that shares its letters; await using shuts it down", async () => {
  let outlived: Awaited<ReturnType<typeof createSyncHandler>>;
  {
    await using sync = await createSyncHandler({
      kv: ":memory:",
      auth: { allowAnonymous: true },
      prefix: "/api/sync",
      logger: () => {},
    });
    for (const path of ["/api/synced/health", "/api/sync-old/health"]) {
      const response = await sync.fetch(new Request(`http://app${path}`));
      assert.equal(response.status, 404, path);
      await response.body?.cancel();
    }
    const login = await sync.fetch(
      new Request("http://app/api/sync/login", {
        method: "POST",
        body: JSON.stringify({ provider: "anonymous" }),
      }),
    );
    assert.equal(login.status, 200);
    assert.equal(typeof (await login.json()).accessToken, "string");
    const health = await sync.fetch(
      new Request("http://app/api/sync/health"),
    );
    assert.equal(health.status, 200);
    await health.body?.cancel();
    outlived = sync;
    // Disposed here: the KV and timers it holds are released (sanitizers).
  }
  const after = await outlived.fetch(
    new Request("http://app/api/sync/health"),
  );
  assert.equal(after.status, 503);
  await after.body?.cancel();
});

Deno.test("createSyncHandler() in a Deno.serve app: a client stays connected through shutdown() only as a disconnect, never an error", async () => {
  const sync = await createSyncHandler({
    kv: ":memory:",
    auth: { allowAnonymous: true },
    prefix: "/api/sync",
    logger: () => {},
  });
  try {
    await using http = Deno.serve(
      { port: 0, hostname: "127.0.0.1", onListen() {} },
      (request, info) => sync.fetch(request, info),
    );
    const baseUrl = `http://127.0.0.1:${http.addr.port}/api/sync`;
    await using app = new App({
      baseUrl,
      lingerMs: 0,
      reconnect: { minDelayMs: 10, maxDelayMs: 50 },
    });
    const user = await app.logIn(Credentials.anonymous());
    await using realm = await openDownloaded(user, "/~/todos");
    const receipt = await realm.write((tx) => tx.put("Task", "t", {}));
    await receipt.waitForUpload({ signal: bounded() });
    assert.deepEqual(
      await sync.realm(`/${user.id}/todos`).get("Task", "t"),
      {},
    );
    await sync.shutdown();
    assert.notEqual(realm.syncSession.state, "error");
  } finally {
    await sync.shutdown();
  }
});

Deno.test("createSyncHandler().fetch passed on its own (Deno.serve(sync.fetch)) serves a real client; shutdown, realm and stats work detached too", async () => {
  const sync = await createSyncHandler({
    kv: ":memory:",
    auth: { allowAnonymous: true },
    logger: () => {},
  });
  const { fetch: handle, shutdown, realm, stats } = sync;
  try {
    await using http = Deno.serve(
      { port: 0, hostname: "127.0.0.1", onListen() {} },
      handle,
    );
    await using client = await openClient(
      fastApp(`http://127.0.0.1:${http.addr.port}`),
    );
    const receipt = await client.realm.write((tx) => tx.put("Task", "t", {}));
    await receipt.waitForUpload({ signal: bounded() });
    assert.deepEqual(
      await realm(`/${client.user.id}/todos`).get("Task", "t"),
      {},
    );
    assert.equal(stats().sessions, 1);
    await shutdown();
  } finally {
    await sync.shutdown();
  }
  // And serveSync's server, the same way.
  const server = await serveSync({
    port: 0,
    hostname: "127.0.0.1",
    kv: ":memory:",
    auth: { allowAnonymous: true },
    logger: () => {},
  });
  try {
    const detached = { realm: server.realm, stats: server.stats };
    await detached.realm("/backend/x").write((tx) => tx.put("T", "a", {}));
    assert.equal(detached.stats().changesetsIntegrated, 1);
    const stop = server.shutdown;
    await stop();
  } finally {
    await server.shutdown();
  }
});

Deno.test("limits.maxQueuedBytesPerConnection: a client writing while the store stalls is refused with the retryable queue_full, treats it as transient, and every write lands exactly once", async () => {
  await using inner = await Deno.openKv(":memory:");
  const gated = new TestKv(inner);
  // Each 40 KiB write is held as about twice that: the client's second
  // frame in flight passes the bound while the first waits for the store.
  await using server = await startTestServer({
    kv: gated.kv,
    limits: {
      maxQueuedBytesPerConnection: 120 * 1024,
      maxMessageBytes: 128 * 1024,
    },
  });
  await using client = await openClient(fastApp(server.url));
  const path = `/${client.user.id}/bulk`;
  const base = server.stats().changesetsIntegrated;
  await using realm = await openDownloaded(client.user, "/~/bulk");
  await using states = recordConnectionStates(realm.syncSession);
  const stall = gated.stall("commit", () => true);
  const receipts = [];
  const count = 12;
  for (let index = 0; index < count; index++) {
    const bytes = crypto.getRandomValues(new Uint8Array(40 * 1024));
    receipts.push(
      await realm.write((tx) => tx.put("Blob", `b${index}`, { bytes })),
    );
  }
  // Refused while the store stalls, and the session only reconnects.
  const refused = await states.until(
    (change) => change.error?.code === "queue_full",
  );
  assert.equal(refused.current, "disconnected");
  assert.ok(refused.retry !== undefined, "a reconnect is scheduled");
  assert.equal(realm.syncSession.state, "active");
  stall.release();
  await Promise.all(
    receipts.map((receipt) => receipt.waitForUpload({ signal: bounded() })),
  );
  assert.equal(realm.syncSession.state, "active");
  assert.equal(realm.syncSession.stats().pendingUploadChangesets, 0);
  // Each write is one changeset, stored once: the history holds exactly
  // `count` changesets with every id once.
  const items = await take(
    server.realm(path).changes({ since: 0, signal: bounded() }),
    count,
  );
  assert.deepEqual(
    items.flatMap(({ changes }) => changes.map(({ id }) => id)).sort(),
    Array.from({ length: count }, (_, index) => `b${index}`).sort(),
  );
  assert.equal(items.at(-1)!.version, count);
  assert.equal(server.stats().changesetsIntegrated - base, count);
  const stored = await server.realm(path).objects("Blob");
  assert.equal(stored.length, count);
  for (const { id, fields } of stored) {
    assert.deepEqual(fields, realm.get("Blob", id), id);
  }
});
