/**
 * The contract of DESIGN.md "Metrics, status and health" and "Auth
 * providers" through the public entry points only: `/metrics` parsed
 * strictly, counters after known traffic, who may see the operator routes,
 * `/status`, `/health` with a failing store, and identity-provider tokens
 * (PEM and JWK keys, claims, forged algorithms, the JWKS cache and outage).
 *
 * @module
 */
import assert from "node:assert/strict";
import { Credentials, SyncError } from "../../mod.ts";
import { createSyncHandler, serveSync } from "../../server.ts";
import { fastApp, openClient, openDownloaded } from "./_helpers.ts";
import { startTestServer } from "../_helpers/test_server.ts";
import { TcpProxy } from "../_helpers/tcp_proxy.ts";
import { signUserJwt, epochSeconds } from "../_helpers/user_jwt.ts";
import { bounded } from "../_helpers/waits.ts";

const ADMIN_TOKEN = "an-admin-token-of-some-length";

// ---------------------------------------------------------------------------
// A strict reader of the Prometheus text format (version 0.0.4).

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

interface MetricFamily {
  name: string;
  type: string;
  help: string;
  samples: Sample[];
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const TYPES = new Set(["counter", "gauge", "histogram", "summary", "untyped"]);

function parseValue(raw: string, line: string): number {
  if (raw === "+Inf") return Infinity;
  if (raw === "-Inf") return -Infinity;
  if (raw === "NaN") return NaN;
  assert.match(
    raw,
    /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/,
    `not a number: ${line}`,
  );
  return Number(raw);
}

/** Parses `{a="x",b="y"}` (the braces' content) strictly. */
function parseLabels(text: string, line: string): Record<string, string> {
  const labels: Record<string, string> = {};
  let rest = text;
  while (rest !== "") {
    const match = /^([^=]+)="((?:[^"\\\n]|\\[\\"n])*)"(,|$)/.exec(rest);
    assert.ok(match !== null, `bad label syntax: ${line}`);
    const [whole, name, value] = match;
    assert.match(name!, LABEL_NAME, `bad label name: ${line}`);
    assert.ok(!(name! in labels), `label ${name} twice: ${line}`);
    labels[name!] = value!.replace(
      /\\(.)/g,
      (_, char: string) => char === "n" ? "\n" : char,
    );
    rest = rest.slice(whole.length);
  }
  return labels;
}

/**
 * Parses an exposition, asserting: a trailing newline; `# HELP` and `# TYPE`
 * once per family and before its samples; a family's samples together;
 * valid names, labels and values; no series twice; and, per histogram
 * series, ascending `le` buckets that are cumulative and end in `+Inf`
 * equal to `_count`, with `_sum` present.
 */
function parseExposition(text: string): Map<string, MetricFamily> {
  assert.ok(text.endsWith("\n"), "the exposition ends with a line feed");
  const families = new Map<string, MetricFamily>();
  const finished = new Set<string>();
  const seen = new Set<string>();
  let current: MetricFamily | undefined;
  const familyOf = (name: string): MetricFamily => {
    let family = families.get(name);
    if (family === undefined) {
      assert.ok(!finished.has(name), `${name}: family split in two`);
      if (current !== undefined) finished.add(current.name);
      family = { name, type: "", help: "", samples: [] };
      families.set(name, family);
      current = family;
    }
    assert.equal(current, family, `${name}: family split in two`);
    return family;
  };
  for (const line of text.slice(0, -1).split("\n")) {
    if (line.startsWith("#")) {
      const meta = /^# (HELP|TYPE) (\S+) (.*)$/.exec(line);
      if (meta === null) continue; // a plain comment
      const [, kind, name, rest] = meta;
      assert.match(name!, METRIC_NAME, `bad metric name: ${line}`);
      const family = familyOf(name!);
      assert.equal(family.samples.length, 0, `${kind} after samples: ${line}`);
      if (kind === "HELP") {
        assert.equal(family.help, "", `HELP twice: ${line}`);
        assert.ok(rest !== "", `empty HELP: ${line}`);
        family.help = rest!;
      } else {
        assert.equal(family.type, "", `TYPE twice: ${line}`);
        assert.ok(TYPES.has(rest!), `unknown TYPE: ${line}`);
        family.type = rest!;
      }
      continue;
    }
    assert.ok(line !== "", "no blank line inside the exposition");
    const match = /^([^\s{]+)(?:\{(.*)\})? (\S+)( -?\d+)?$/.exec(line);
    assert.ok(match !== null, `not a sample line: ${line}`);
    const [, name, labelText, raw] = match;
    assert.match(name!, METRIC_NAME, `bad metric name: ${line}`);
    const base = current !== undefined && current.type === "histogram"
      ? name!.replace(/_(bucket|sum|count)$/, "")
      : name!;
    const family = families.get(base);
    assert.ok(family !== undefined, `${name}: sample without HELP/TYPE`);
    assert.equal(family, current, `${name}: family split in two`);
    assert.ok(family.help !== "", `${name}: no # HELP before it`);
    assert.ok(family.type !== "", `${name}: no # TYPE before it`);
    const labels = parseLabels(labelText ?? "", line);
    const series = `${name}${JSON.stringify(Object.entries(labels).sort())}`;
    assert.ok(!seen.has(series), `series twice: ${line}`);
    seen.add(series);
    const value = parseValue(raw!, line);
    if (family.type === "counter") {
      assert.ok(value >= 0, `negative counter: ${line}`);
    }
    family.samples.push({ name: name!, labels, value });
  }
  for (const family of families.values()) {
    assert.ok(family.help !== "" && family.type !== "", `${family.name}`);
    if (family.type === "histogram") checkHistogram(family);
  }
  return families;
}

function checkHistogram(family: MetricFamily): void {
  const series = new Map<
    string,
    { buckets: Sample[]; sum?: number; count?: number }
  >();
  for (const sample of family.samples) {
    const { le, ...rest } = sample.labels;
    const key = JSON.stringify(Object.entries(rest).sort());
    const entry = series.get(key) ?? { buckets: [] };
    series.set(key, entry);
    if (sample.name === `${family.name}_bucket`) {
      assert.ok(le !== undefined, `${family.name}_bucket without le`);
      entry.buckets.push(sample);
    } else {
      assert.equal(le, undefined, `${sample.name} with le`);
      if (sample.name === `${family.name}_sum`) entry.sum = sample.value;
      else if (sample.name === `${family.name}_count`) {
        entry.count = sample.value;
      } else assert.fail(`${sample.name} in histogram ${family.name}`);
    }
  }
  assert.ok(series.size > 0, `${family.name} has no series`);
  for (const [key, entry] of series) {
    const where = `${family.name}${key}`;
    assert.ok(entry.buckets.length > 0, `${where}: no buckets`);
    const bounds = entry.buckets.map((bucket) =>
      parseValue(bucket.labels.le!, where)
    );
    assert.equal(bounds.at(-1), Infinity, `${where}: last bucket is +Inf`);
    for (let index = 1; index < bounds.length; index++) {
      assert.ok(bounds[index]! > bounds[index - 1]!, `${where}: le ascends`);
      assert.ok(
        entry.buckets[index]!.value >= entry.buckets[index - 1]!.value,
        `${where}: buckets are cumulative`,
      );
    }
    assert.ok(entry.sum !== undefined, `${where}: _sum present`);
    assert.ok(entry.count !== undefined, `${where}: _count present`);
    assert.equal(
      entry.buckets.at(-1)!.value,
      entry.count,
      `${where}: +Inf bucket equals _count`,
    );
  }
}

/** The value of one series (labels must match exactly), or undefined. */
function find(
  families: Map<string, MetricFamily>,
  name: string,
  labels: Record<string, string> = {},
): number | undefined {
  const base = name.replace(/_(bucket|sum|count)$/, "");
  const family = families.get(name) ?? families.get(base);
  const wanted = JSON.stringify(Object.entries(labels).sort());
  return family?.samples.find((sample) =>
    sample.name === name &&
    JSON.stringify(Object.entries(sample.labels).sort()) === wanted
  )?.value;
}

function get(
  families: Map<string, MetricFamily>,
  name: string,
  labels: Record<string, string> = {},
): number {
  const value = find(families, name, labels);
  assert.ok(value !== undefined, `no series ${name}${JSON.stringify(labels)}`);
  return value;
}

async function scrape(
  url: string,
  headers: HeadersInit = {},
): Promise<Map<string, MetricFamily>> {
  const response = await fetch(`${url}/metrics`, { headers });
  assert.equal(response.status, 200);
  assert.match(
    response.headers.get("content-type")!,
    /^text\/plain; version=0\.0\.4(;|$)/,
  );
  return parseExposition(await response.text());
}

/** Every family DESIGN.md names, with its type and label names. */
const FAMILIES: Array<[string, string, string[]]> = [
  ["tether_connections", "gauge", []],
  ["tether_sessions", "gauge", []],
  ["tether_realms", "gauge", []],
  ["tether_changesets_integrated_total", "counter", []],
  ["tether_bytes_received_total", "counter", []],
  ["tether_bytes_sent_total", "counter", []],
  ["tether_messages_received_total", "counter", ["type"]],
  ["tether_messages_sent_total", "counter", ["type"]],
  ["tether_errors_total", "counter", ["code"]],
  ["tether_client_resets_total", "counter", []],
  ["tether_rejected_writes_total", "counter", []],
  ["tether_upload_ack_seconds", "histogram", []],
  ["tether_bootstrap_seconds", "histogram", []],
  ["tether_kv_operation_seconds", "histogram", ["op"]],
];

// ---------------------------------------------------------------------------
// Metrics

Deno.test("GET /metrics: strict Prometheus text with every family DESIGN.md names, its type and labels, labelled series at 0 from the start", async () => {
  await using server = await startTestServer();
  const families = await scrape(server.url);
  for (const [name, type, labelNames] of FAMILIES) {
    const family = families.get(name);
    assert.ok(family !== undefined, `${name} is exported`);
    assert.equal(family.type, type, `${name} is a ${type}`);
    assert.ok(family.samples.length > 0, `${name} has a series from the start`);
    for (const sample of family.samples) {
      assert.deepEqual(
        Object.keys(sample.labels).filter((label) => label !== "le").sort(),
        labelNames,
        `${sample.name} labels`,
      );
      // The store is read and written at start (signing key, lock): only
      // the protocol's counters are still at 0.
      if (type !== "gauge" && name !== "tether_kv_operation_seconds") {
        assert.equal(sample.value, 0, sample.name);
      }
    }
  }
  // The labelled series a dashboard queries first exist before any traffic.
  for (const type of ["handshake", "bind", "upload"]) {
    assert.equal(
      get(families, "tether_messages_received_total", { type }),
      0,
      type,
    );
  }
  for (const type of ["handshake_reply", "download", "error"]) {
    assert.equal(get(families, "tether_messages_sent_total", { type }), 0);
  }
  for (
    const code of [
      "protocol_violation",
      "bad_token",
      "permission_denied",
      "client_reset_required",
      "internal_server_error",
    ]
  ) {
    assert.equal(get(families, "tether_errors_total", { code }), 0, code);
  }
  for (const op of ["get", "get_many", "list", "commit"]) {
    assert.equal(
      typeof get(families, "tether_kv_operation_seconds_count", { op }),
      "number",
      op,
    );
  }
  assert.equal(get(families, "tether_connections"), 0);
  assert.equal(get(families, "tether_sessions"), 0);
  assert.equal(get(families, "tether_realms"), 0);
});

Deno.test("GET /metrics: counters move by exactly the traffic of a client's sync; gauges and byte totals agree with server.stats()", async () => {
  await using server = await startTestServer();
  const before = await scrape(server.url);
  await using client = await openClient(fastApp(server.url));
  for (let index = 0; index < 3; index++) {
    const receipt = await client.realm.write((tx) =>
      tx.put("Task", `t${index}`, { index })
    );
    await receipt.waitForUpload({ signal: bounded() });
  }
  const after = await scrape(server.url);
  const delta = (name: string, labels: Record<string, string> = {}) =>
    get(after, name, labels) - (find(before, name, labels) ?? 0);
  assert.equal(delta("tether_changesets_integrated_total"), 3);
  assert.equal(
    delta("tether_messages_received_total", { type: "handshake" }),
    1,
  );
  assert.equal(delta("tether_messages_received_total", { type: "bind" }), 1);
  assert.equal(delta("tether_messages_received_total", { type: "upload" }), 3);
  assert.equal(
    delta("tether_messages_sent_total", { type: "handshake_reply" }),
    1,
  );
  assert.equal(delta("tether_upload_ack_seconds_count"), 3);
  assert.equal(delta("tether_bootstrap_seconds_count"), 1);
  assert.equal(delta("tether_rejected_writes_total"), 0);
  assert.equal(delta("tether_client_resets_total"), 0);
  for (const sample of after.get("tether_errors_total")!.samples) {
    assert.equal(sample.value, 0, `no error sent: ${sample.labels.code}`);
  }
  const stats = server.stats();
  assert.equal(get(after, "tether_connections"), stats.connections);
  assert.equal(get(after, "tether_connections"), 1);
  assert.equal(get(after, "tether_sessions"), 1);
  assert.equal(get(after, "tether_realms"), 1);
  assert.equal(get(after, "tether_bytes_received_total"), stats.bytesIn);
  assert.equal(get(after, "tether_bytes_sent_total"), stats.bytesOut);
  assert.equal(get(after, "tether_realms"), stats.realms);
  assert.equal(get(after, "tether_sessions"), stats.sessions);
  assert.equal(
    get(after, "tether_changesets_integrated_total"),
    stats.changesetsIntegrated,
  );
  // The realm closes: the session and the realm leave the gauges.
  await client.realm.close();
  await server.waitForLog(
    (record) => record.event === "session_unbound",
    bounded(),
  );
  const closed = await scrape(server.url);
  assert.equal(get(closed, "tether_sessions"), 0);
  assert.equal(get(closed, "tether_realms"), 0);
  assert.equal(server.stats().realms, 0);
});

Deno.test("GET /metrics: tether_errors_total{code}, tether_rejected_writes_total and tether_client_resets_total count exactly what was refused", async () => {
  await using stack = new AsyncDisposableStack();
  const secret = "operating-auth-secret-operating-auth";
  const first = stack.use(
    await startTestServer({
      auth: { jwtSecret: secret, allowAnonymous: true },
      validateChangeset: ({ changes }) =>
        changes.every((change) => change.id !== "bad"),
    }),
  );
  const proxy = stack.use(new TcpProxy(first.addr));
  const app = stack.use(fastApp(proxy.url));
  // A JWT user: its server's successor knows the secret, so it logs in
  // again there by itself.
  const user = await app.logIn(
    Credentials.jwt(
      await signUserJwt(secret, { sub: "alice", exp: epochSeconds(3_600_000) }),
    ),
  );
  const realm = stack.use(await openDownloaded(user, "/~/todos"));
  const before = await scrape(first.url);
  // Two refused writes; uploads of a session are answered in order, so once
  // the good one is acknowledged both REJECTs have been written.
  await realm.write((tx) => tx.put("Task", "bad", { n: 1 }));
  await realm.write((tx) => tx.update("Task", "bad", { n: 2 }));
  await (await realm.write((tx) => tx.put("Task", "good", {})))
    .waitForUpload({ signal: bounded() });
  // A realm of another user: permission_denied, once.
  await assert.rejects(
    user.openRealm({
      path: "/someone-else/todos",
      waitForDownload: true,
      signal: bounded(),
    }),
    (error: unknown) =>
      error instanceof SyncError && error.code === "permission_denied",
  );
  const after = await scrape(first.url);
  const delta = (name: string, labels: Record<string, string> = {}) =>
    get(after, name, labels) - get(before, name, labels);
  assert.equal(delta("tether_rejected_writes_total"), 2);
  assert.equal(delta("tether_errors_total", { code: "permission_denied" }), 1);
  assert.equal(delta("tether_changesets_integrated_total"), 1);
  assert.equal(delta("tether_client_resets_total"), 0);

  // The client's server is replaced by one with a wiped store: its next
  // BIND cannot continue and is told to reset, once.
  const second = stack.use(
    await startTestServer({ auth: { jwtSecret: secret, allowAnonymous: true } }),
  );
  const fresh = await scrape(second.url);
  assert.equal(get(fresh, "tether_client_resets_total"), 0);
  const states = realm.syncSession.connectionStateChanges({
    signal: bounded(),
  });
  realm.syncSession.pause();
  proxy.retarget(second.addr);
  proxy.dropAll();
  realm.syncSession.resume();
  for await (const change of states) {
    if (change.error?.code === "client_reset") break;
  }
  await realm.syncSession.waitForDownload({ signal: bounded() });
  const reset = await scrape(second.url);
  assert.equal(get(reset, "tether_client_resets_total"), 1);
  assert.equal(
    get(reset, "tether_errors_total", { code: "client_reset_required" }),
    1,
  );
});

// ---------------------------------------------------------------------------
// Access to /metrics and /status

const LOOPBACK = {
  remoteAddr: { transport: "tcp", hostname: "127.0.0.1", port: 4000 },
  completed: Promise.resolve(),
} as Deno.ServeHandlerInfo<Deno.NetAddr>;
const LOOPBACK_V6 = {
  remoteAddr: { transport: "tcp", hostname: "::1", port: 4000 },
  completed: Promise.resolve(),
} as Deno.ServeHandlerInfo<Deno.NetAddr>;
const REMOTE = {
  remoteAddr: { transport: "tcp", hostname: "203.0.113.9", port: 4000 },
  completed: Promise.resolve(),
} as Deno.ServeHandlerInfo<Deno.NetAddr>;

async function statusOf(response: Response): Promise<number> {
  await response.body?.cancel();
  return response.status;
}

Deno.test("createSyncHandler() without adminToken: /metrics and /status to loopback peers only (403 forbidden to others and without handler info); /health to all", async () => {
  await using handler = await createSyncHandler({
    kv: ":memory:",
    auth: { allowAnonymous: true },
    prefix: "/api/sync",
    logger: () => {},
  });
  for (const route of ["/metrics", "/status"]) {
    const request = () => new Request(`http://app/api/sync${route}`);
    assert.equal(await statusOf(await handler.fetch(request(), LOOPBACK)), 200);
    assert.equal(
      await statusOf(await handler.fetch(request(), LOOPBACK_V6)),
      200,
    );
    for (const info of [REMOTE, undefined]) {
      const refused = await handler.fetch(request(), info);
      assert.equal(refused.status, 403, `${route} ${info?.remoteAddr}`);
      const body = await refused.json();
      assert.equal(body.error.code, "forbidden");
      assert.equal(typeof body.error.message, "string");
    }
  }
  const health = await handler.fetch(
    new Request("http://app/api/sync/health"),
    REMOTE,
  );
  assert.equal(health.status, 200);
  assert.deepEqual(await health.json(), { status: "ok" });
});

Deno.test("createSyncHandler() with adminToken: /metrics and /status answer 401 (WWW-Authenticate: Bearer) without or with a wrong or non-Bearer token, from loopback too; 200 with it from anywhere", async () => {
  await using handler = await createSyncHandler({
    kv: ":memory:",
    auth: { allowAnonymous: true },
    adminToken: ADMIN_TOKEN,
    logger: () => {},
  });
  for (const route of ["/metrics", "/status"]) {
    for (
      const authorization of [
        undefined,
        "Bearer wrong-token-wrong-token",
        `Bearer ${ADMIN_TOKEN}x`,
        `Basic ${btoa(`admin:${ADMIN_TOKEN}`)}`,
        ADMIN_TOKEN,
        "Bearer",
      ]
    ) {
      const headers: HeadersInit = authorization === undefined
        ? {}
        : { authorization };
      for (const info of [LOOPBACK, REMOTE]) {
        const refused = await handler.fetch(
          new Request(`http://app${route}`, { headers }),
          info,
        );
        assert.equal(refused.status, 401, `${route} ${authorization}`);
        assert.match(refused.headers.get("www-authenticate")!, /^Bearer/);
        assert.equal((await refused.json()).error.code, "unauthorized");
      }
    }
    for (const scheme of ["Bearer", "bearer"]) {
      const allowed = await handler.fetch(
        new Request(`http://app${route}`, {
          headers: { authorization: `${scheme} ${ADMIN_TOKEN}` },
        }),
        REMOTE,
      );
      assert.equal(await statusOf(allowed), 200, `${route} ${scheme}`);
    }
  }
});

// ---------------------------------------------------------------------------
// /status

Deno.test("GET /status: HTML listing live connections and the sessions of each realm, refreshing itself", async () => {
  await using server = await startTestServer();
  await using alice = await openClient(fastApp(server.url), "/~/todos");
  await using bob = await openClient(fastApp(server.url), "/~/notes");
  const response = await fetch(`${server.url}/status`);
  assert.equal(response.status, 200);
  assert.match(response.headers.get("content-type")!, /^text\/html/);
  const html = await response.text();
  assert.match(html, /^<!doctype html>/i);
  for (const path of [`/${alice.user.id}/todos`, `/${bob.user.id}/notes`]) {
    assert.ok(html.includes(path), `${path} is listed`);
  }
  assert.ok(html.includes(alice.user.id) && html.includes(bob.user.id));
  // Two connections and two sessions, as stats() counts them.
  assert.equal(server.stats().connections, 2);
  assert.match(html, /Connections\s*<[^>]*>\s*2\s*</);
  assert.match(html, /Sessions\s*<[^>]*>\s*2\s*</);
  assert.match(html, /http-equiv="refresh"/);
  assert.doesNotMatch(html, /<(script|link|img)[^>]+(src|href)="https?:/);
});

// ---------------------------------------------------------------------------
// /health

Deno.test("GET /health: 200 {status: ok}; 503 {status: unavailable, error: {code, message}} when the store passed in fails, while /metrics still answers", async () => {
  const kv = await Deno.openKv(":memory:");
  let kvOpen = true;
  try {
    await using server = await serveSync({
      port: 0,
      kv,
      auth: { allowAnonymous: true },
      logger: () => {},
    });
    const ok = await fetch(`${server.url}/health`);
    assert.equal(ok.status, 200);
    assert.match(ok.headers.get("content-type")!, /^application\/json/);
    assert.deepEqual(await ok.json(), { status: "ok" });
    kv.close();
    kvOpen = false;
    const failed = await fetch(`${server.url}/health`);
    assert.equal(failed.status, 503);
    assert.match(failed.headers.get("content-type")!, /^application\/json/);
    const body = await failed.json();
    assert.deepEqual(Object.keys(body).sort(), ["error", "status"]);
    assert.equal(body.status, "unavailable");
    assert.deepEqual(Object.keys(body.error).sort(), ["code", "message"]);
    assert.equal(typeof body.error.code, "string");
    assert.match(body.error.code, /^[a-z]+(_[a-z]+)*$/);
    assert.equal(typeof body.error.message, "string");
    assert.ok(body.error.message.length > 0);
    assert.equal(await statusOf(await fetch(`${server.url}/metrics`)), 200);
  } finally {
    if (kvOpen) kv.close();
  }
});
