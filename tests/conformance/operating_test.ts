import assert from "node:assert/strict";
import { serveSync } from "../../server.ts";
import { fastApp, openClient } from "./_helpers.ts";
import { startTestServer } from "../_helpers/test_server.ts";
import { bounded } from "../_helpers/waits.ts";

const ADMIN_TOKEN = "an-admin-token-of-some-length";

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/**
 * Parses Prometheus text exposition strictly enough for these tests: every
 * sample's family has # HELP and # TYPE before it.
 */
function parseMetrics(
  text: string,
): { types: Map<string, string>; samples: Sample[] } {
  const types = new Map<string, string>();
  const helps = new Set<string>();
  const samples: Sample[] = [];
  for (const line of text.split("\n")) {
    if (line === "") continue;
    const meta = /^# (HELP|TYPE) (\w+) (.+)$/.exec(line);
    if (meta !== null) {
      if (meta[1] === "HELP") helps.add(meta[2]!);
      else types.set(meta[2]!, meta[3]!);
      continue;
    }
    const sample = /^(\w+)(?:\{(.*)\})? (\S+)$/.exec(line);
    assert.ok(sample !== null, `not a sample line: ${line}`);
    const name = sample[1]!;
    const family = name.replace(/_(bucket|sum|count)$/, "");
    const known = types.has(name) ? name : family;
    assert.ok(types.has(known), `${name} has no # TYPE before it`);
    assert.ok(helps.has(known), `${name} has no # HELP before it`);
    const labels: Record<string, string> = {};
    for (
      const [, key, value] of (sample[2] ?? "").matchAll(
        /(\w+)="((?:[^"\\]|\\.)*)"/g,
      )
    ) {
      labels[key!] = value!;
    }
    const raw = sample[3]!;
    samples.push({
      name,
      labels,
      value: raw === "+Inf" ? Infinity : Number(raw),
    });
  }
  return { types, samples };
}

function value(
  samples: Sample[],
  name: string,
  labels: Record<string, string> = {},
): number {
  const found = samples.find((sample) =>
    sample.name === name &&
    Object.entries(labels).every(([key, label]) => sample.labels[key] === label)
  );
  assert.ok(found !== undefined, `no sample ${name} ${JSON.stringify(labels)}`);
  return found.value;
}

Deno.test("GET /metrics: Prometheus text with every tether_* family, counting a real client's sync", async () => {
  await using server = await startTestServer();
  {
    await using client = await openClient(fastApp(server.url));
    await client.realm.write((tx) => tx.put("Task", "a", { title: "one" }));
    await client.session.waitForUpload({ signal: bounded() });
    await client.realm.write((tx) => tx.put("Task", "b", { title: "two" }));
    await client.session.waitForUpload({ signal: bounded() });
    const response = await fetch(`${server.url}/metrics`);
    assert.equal(response.status, 200);
    assert.match(
      response.headers.get("content-type")!,
      /^text\/plain; version=0\.0\.4/,
    );
    const { types, samples } = parseMetrics(await response.text());
    assert.deepEqual(
      [
        "tether_connections",
        "tether_sessions",
        "tether_realms",
        "tether_changesets_integrated_total",
        "tether_bytes_received_total",
        "tether_bytes_sent_total",
        "tether_messages_received_total",
        "tether_messages_sent_total",
        "tether_errors_total",
        "tether_client_resets_total",
        "tether_rejected_writes_total",
        "tether_upload_ack_seconds",
        "tether_bootstrap_seconds",
        "tether_kv_operation_seconds",
      ].map((name) => [name, types.has(name)]),
      [
        "tether_connections",
        "tether_sessions",
        "tether_realms",
        "tether_changesets_integrated_total",
        "tether_bytes_received_total",
        "tether_bytes_sent_total",
        "tether_messages_received_total",
        "tether_messages_sent_total",
        "tether_errors_total",
        "tether_client_resets_total",
        "tether_rejected_writes_total",
        "tether_upload_ack_seconds",
        "tether_bootstrap_seconds",
        "tether_kv_operation_seconds",
      ].map((name) => [name, true]),
    );
    assert.equal(types.get("tether_upload_ack_seconds"), "histogram");
    assert.equal(value(samples, "tether_connections"), 1);
    assert.equal(value(samples, "tether_sessions"), 1);
    assert.equal(value(samples, "tether_realms"), 1);
    assert.equal(value(samples, "tether_changesets_integrated_total"), 2);
    assert.equal(
      value(samples, "tether_messages_received_total", { type: "handshake" }),
      1,
    );
    assert.equal(
      value(samples, "tether_messages_received_total", { type: "bind" }),
      1,
    );
    assert.equal(
      value(samples, "tether_messages_received_total", { type: "upload" }),
      2,
    );
    assert.equal(
      value(samples, "tether_messages_sent_total", { type: "handshake_reply" }),
      1,
    );
    assert.ok(
      value(samples, "tether_messages_sent_total", { type: "download" }) >= 3,
    );
    assert.equal(value(samples, "tether_upload_ack_seconds_count"), 2);
    assert.equal(value(samples, "tether_bootstrap_seconds_count"), 1);
    assert.ok(
      value(samples, "tether_kv_operation_seconds_count", { op: "commit" }) >=
        2,
    );
    assert.ok(
      value(samples, "tether_kv_operation_seconds_count", { op: "get" }) >= 1,
    );
    const stats = server.stats();
    assert.equal(value(samples, "tether_bytes_received_total"), stats.bytesIn);
    assert.ok(value(samples, "tether_bytes_sent_total") > 0);
  }
  // The client left: the gauges follow.
  await server.waitForLog(
    (record) => record.event === "connection_closed",
    bounded(),
  );
  const after = parseMetrics(
    await (await fetch(`${server.url}/metrics`)).text(),
  );
  assert.equal(value(after.samples, "tether_connections"), 0);
  assert.equal(value(after.samples, "tether_sessions"), 0);
});

Deno.test("tether_errors_total and tether_rejected_writes_total count what the server refused", async () => {
  await using server = await startTestServer({
    validateChangeset: ({ changes }) =>
      changes.every((change) => change.id !== "bad"),
  });
  await using client = await openClient(fastApp(server.url));
  await client.realm.write((tx) => tx.put("Task", "bad", {}));
  // Uploads of one session are answered in order: once the next one is
  // acknowledged, the REJECT of the first has been written.
  const next = await client.realm.write((tx) => tx.put("Task", "good", {}));
  await next.waitForUpload({ signal: bounded() });
  // A client that sends text is refused with protocol_violation.
  const socket = new WebSocket(`${server.url.replace("http", "ws")}/sync`);
  const closed = new Promise((resolve) => socket.onclose = resolve);
  socket.onopen = () => socket.send("hello");
  await closed;
  const { samples } = parseMetrics(
    await (await fetch(`${server.url}/metrics`)).text(),
  );
  assert.equal(value(samples, "tether_rejected_writes_total"), 1);
  assert.equal(
    value(samples, "tether_errors_total", { code: "protocol_violation" }),
    1,
  );
  assert.equal(
    value(samples, "tether_errors_total", { code: "token_expired" }),
    0,
  );
});

Deno.test("/metrics and /status: loopback only without adminToken (403 elsewhere); Bearer adminToken when set (401 otherwise)", async () => {
  const remote = {
    remoteAddr: { transport: "tcp", hostname: "203.0.113.9", port: 4000 },
    completed: Promise.resolve(),
  } as Deno.ServeHandlerInfo<Deno.NetAddr>;
  {
    await using open = await startTestServer();
    for (const route of ["/metrics", "/status"]) {
      const local = await fetch(`${open.url}${route}`);
      assert.equal(local.status, 200);
      await local.body?.cancel();
      const far = await open.handler(new Request(`http://x${route}`), remote);
      assert.equal(far.status, 403);
      assert.equal((await far.json()).error.code, "forbidden");
      // A forwarded request is not a loopback one.
      const proxied = await fetch(`${open.url}${route}`, {
        headers: { "x-forwarded-for": "203.0.113.9" },
      });
      assert.equal(proxied.status, 403);
      await proxied.body?.cancel();
    }
  }
  await using guarded = await startTestServer({ adminToken: ADMIN_TOKEN });
  for (const route of ["/metrics", "/status"]) {
    for (
      const headers of [{}, { authorization: "Bearer wrong-token-wrong-token" }]
    ) {
      const refused = await fetch(`${guarded.url}${route}`, { headers });
      assert.equal(refused.status, 401);
      assert.equal((await refused.json()).error.code, "unauthorized");
    }
    const allowed = await guarded.handler(
      new Request(`http://x${route}`, {
        headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
      }),
      remote,
    );
    assert.equal(allowed.status, 200);
    await allowed.body?.cancel();
  }
});

Deno.test("GET /status: an HTML page without external assets that shows connections and sessions", async () => {
  await using server = await startTestServer();
  await using client = await openClient(fastApp(server.url));
  const response = await fetch(`${server.url}/status`);
  assert.equal(response.status, 200);
  assert.match(response.headers.get("content-type")!, /^text\/html/);
  const html = await response.text();
  assert.match(html, /<html/);
  assert.ok(
    html.includes(`/${client.user.id}/todos`),
    "the session's realm is listed",
  );
  assert.doesNotMatch(html, /<(script|link|img)[^>]+(src|href)="https?:/);
});

Deno.test("GET /health: 200 {status: ok} after one KV read", async () => {
  await using server = await serveSync({
    port: 0,
    kv: ":memory:",
    auth: { allowAnonymous: true },
    logger: () => {},
  });
  const response = await fetch(`${server.url}/health`);
  assert.equal(response.status, 200);
  assert.deepEqual(await response.json(), { status: "ok" });
});
