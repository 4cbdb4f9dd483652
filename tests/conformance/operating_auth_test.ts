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
import { FakeJwks } from "../_helpers/fake_jwks.ts";
import { epochSeconds, signUserJwt } from "../_helpers/user_jwt.ts";
import { bounded } from "../_helpers/waits.ts";
import {
  base64url,
  ecPair,
  jwtPart as encodePart,
  type KeyPair,
  publicJwk,
  rsaPair,
  signToken,
  spkiPem,
} from "../_helpers/idp_tokens.ts";

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

// The reader above must refuse what Prometheus refuses, or the tests that
// use it prove nothing.
Deno.test("the strict exposition reader of this file refuses malformed text", () => {
  const histogram = (lines: string[]) =>
    ["# HELP h_seconds h", "# TYPE h_seconds histogram", ...lines, ""].join(
      "\n",
    );
  const good = histogram([
    'h_seconds_bucket{le="0.1"} 1',
    'h_seconds_bucket{le="+Inf"} 2',
    "h_seconds_sum 0.3",
    "h_seconds_count 2",
  ]);
  assert.equal(parseExposition(good).get("h_seconds")?.samples.length, 4);
  const bad: Array<[string, string]> = [
    ["no trailing newline", good.slice(0, -1)],
    ["sample without TYPE", "# HELP c_total c\nc_total 1\n"],
    ["sample without HELP", "# TYPE c_total counter\nc_total 1\n"],
    [
      "TYPE after samples",
      "# HELP c_total c\n# TYPE c_total counter\nc_total 1\n# TYPE c_total counter\n",
    ],
    [
      "family split",
      '# HELP a a\n# TYPE a gauge\na 1\n# HELP b b\n# TYPE b gauge\nb 1\na{x="1"} 2\n',
    ],
    ["bad label", '# HELP a a\n# TYPE a gauge\na{1x="1"} 1\n'],
    ["unquoted label", "# HELP a a\n# TYPE a gauge\na{x=1} 1\n"],
    ["bad value", "# HELP a a\n# TYPE a gauge\na one\n"],
    [
      "negative counter",
      "# HELP c_total c\n# TYPE c_total counter\nc_total -1\n",
    ],
    [
      "not cumulative",
      histogram([
        'h_seconds_bucket{le="0.1"} 2',
        'h_seconds_bucket{le="+Inf"} 1',
        "h_seconds_sum 0.3",
        "h_seconds_count 1",
      ]),
    ],
    [
      "+Inf is not _count",
      histogram([
        'h_seconds_bucket{le="+Inf"} 2',
        "h_seconds_sum 0.3",
        "h_seconds_count 3",
      ]),
    ],
    [
      "no +Inf",
      histogram([
        'h_seconds_bucket{le="0.1"} 2',
        "h_seconds_sum 0.3",
        "h_seconds_count 2",
      ]),
    ],
    [
      "no _sum",
      histogram(['h_seconds_bucket{le="+Inf"} 2', "h_seconds_count 2"]),
    ],
  ];
  for (const [name, text] of bad) {
    assert.throws(() => parseExposition(text), assert.AssertionError, name);
  }
});

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
      permissions: (userId, path) =>
        path.startsWith(`/${userId}/`)
          ? "readwrite"
          : path.startsWith("/public/")
          ? "read"
          : "none",
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
  // A write to a realm the user may only read: refused, the session goes on.
  {
    await using shared = await openDownloaded(user, "/public/news");
    const refused = await shared.write((tx) => tx.put("News", "n", {}));
    await assert.rejects(
      refused.waitForUpload({ signal: bounded() }),
      (error: unknown) =>
        error instanceof SyncError && error.code === "write_rejected",
    );
  }
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
  assert.equal(delta("tether_rejected_writes_total"), 3);
  assert.equal(delta("tether_messages_sent_total", { type: "reject" }), 3);
  assert.equal(delta("tether_errors_total", { code: "permission_denied" }), 1);
  assert.equal(delta("tether_messages_sent_total", { type: "error" }), 1);
  for (const sample of after.get("tether_errors_total")!.samples) {
    if (sample.labels.code === "permission_denied") continue;
    assert.equal(
      sample.value,
      get(before, "tether_errors_total", sample.labels),
      `no ${sample.labels.code} sent`,
    );
  }
  assert.equal(delta("tether_changesets_integrated_total"), 1);
  assert.equal(delta("tether_client_resets_total"), 0);

  // The client's server is replaced by one with a wiped store: its next
  // BIND cannot continue and is told to reset, once.
  const second = stack.use(
    await startTestServer({
      auth: { jwtSecret: secret, allowAnonymous: true },
    }),
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

Deno.test("tether_realms and server.stats().realms count the realms open in this process: those with sessions, and one a server-side changes() feed holds while it runs", async () => {
  await using server = await startTestServer();
  const realm = server.realm("/backend/jobs");
  await realm.write((tx) => tx.put("Job", "j1", {}));
  // A write alone leaves nothing open.
  assert.equal(server.stats().realms, 0);
  assert.equal(get(await scrape(server.url), "tether_realms"), 0);
  const stop = new AbortController();
  const feed = realm.changes({ since: 0, signal: stop.signal })
    [Symbol.asyncIterator]();
  try {
    assert.equal((await feed.next()).value?.version, 1);
    await using _client = await openClient(fastApp(server.url));
    assert.equal(server.stats().realms, 2);
    assert.equal(get(await scrape(server.url), "tether_realms"), 2);
    assert.equal(get(await scrape(server.url), "tether_sessions"), 1);
  } finally {
    stop.abort();
    await feed.return?.();
  }
  await server.waitForLog(
    (record) => record.event === "connection_closed",
    bounded(),
  );
  assert.equal(server.stats().realms, 0);
  assert.equal(get(await scrape(server.url), "tether_realms"), 0);
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
const MAPPED_LOOPBACK = {
  remoteAddr: { transport: "tcp", hostname: "::ffff:127.0.0.1", port: 4000 },
  completed: Promise.resolve(),
} as Deno.ServeHandlerInfo<Deno.NetAddr>;
const MAPPED_REMOTE = {
  remoteAddr: { transport: "tcp", hostname: "::ffff:203.0.113.9", port: 4000 },
  completed: Promise.resolve(),
} as Deno.ServeHandlerInfo<Deno.NetAddr>;
const REMOTE_V6 = {
  remoteAddr: { transport: "tcp", hostname: "2001:db8::1", port: 4000 },
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
    for (const info of [LOOPBACK_V6, MAPPED_LOOPBACK]) {
      assert.equal(await statusOf(await handler.fetch(request(), info)), 200);
    }
    const forwarded: Record<string, string>[] = [
      { "x-forwarded-for": "203.0.113.9" },
      { forwarded: "for=203.0.113.9" },
    ];
    for (
      const [info, headers] of [
        [REMOTE, {}],
        [REMOTE_V6, {}],
        [MAPPED_REMOTE, {}],
        [undefined, {}],
        // A reverse proxy on this machine connects from loopback for others.
        [LOOPBACK, forwarded[0]!],
        [LOOPBACK, forwarded[1]!],
      ] as Array<[Deno.ServeHandlerInfo | undefined, Record<string, string>]>
    ) {
      const refused = await handler.fetch(
        new Request(`http://app/api/sync${route}`, { headers }),
        info,
      );
      assert.equal(
        refused.status,
        403,
        `${route} ${JSON.stringify(info?.remoteAddr)} ${
          JSON.stringify(headers)
        }`,
      );
      const body = await refused.json();
      assert.equal(body.error.code, "forbidden");
      assert.equal(typeof body.error.message, "string");
    }
  }
  // Other methods: 405 with Allow.
  for (const route of ["/metrics", "/status", "/health"]) {
    const wrong = await handler.fetch(
      new Request(`http://app/api/sync${route}`, { method: "POST" }),
      LOOPBACK,
    );
    assert.equal(wrong.status, 405, route);
    assert.match(wrong.headers.get("allow")!, /GET/);
    assert.equal((await wrong.json()).error.code, "method_not_allowed");
  }
  // Outside the prefix: 404.
  const outside = await handler.fetch(
    new Request("http://app/metrics"),
    LOOPBACK,
  );
  assert.equal(outside.status, 404);
  await outside.body?.cancel();
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

Deno.test("serveSync() and createSyncHandler() refuse an adminToken shorter than 16 characters or with white space, naming adminToken", async () => {
  for (const adminToken of ["short", "", "a token with spaces in it", 42]) {
    const options = {
      kv: ":memory:",
      auth: { allowAnonymous: true },
      // deno-lint-ignore no-explicit-any
      adminToken: adminToken as any,
      logger: () => {},
    };
    const isNamed = (error: unknown) =>
      error instanceof TypeError && /adminToken/.test(error.message);
    await assert.rejects(serveSync({ port: 0, ...options }), isNamed);
    await assert.rejects(createSyncHandler(options), isNamed);
  }
});

// ---------------------------------------------------------------------------
// /status

Deno.test("GET /status: HTML with live connections, sessions per realm with their state, and a refresh", async () => {
  await using server = await startTestServer({
    permissions: (userId, path) =>
      path === "/shared/board" || path.startsWith(`/${userId}/`)
        ? "readwrite"
        : "none",
  });
  await using alice = await openClient(fastApp(server.url), "/shared/board");
  await using bob = await openClient(fastApp(server.url), "/shared/board");
  await using carol = await openClient(fastApp(server.url), "/~/notes");
  const response = await fetch(`${server.url}/status`);
  assert.equal(response.status, 200);
  assert.match(response.headers.get("content-type")!, /^text\/html/);
  const html = await response.text();
  assert.match(html, /^<!doctype html>/i);
  const text = html.replace(/<[^>]*>/g, " ").replace(/\s+/g, " ");
  // Three connections, three sessions, two realms, as stats() counts them.
  assert.deepEqual(
    [server.stats().connections, server.stats().sessions],
    [3, 3],
  );
  assert.match(text, /Connections 3 /);
  assert.match(text, /Sessions 3 /);
  assert.match(text, /Realms 2 /);
  // The realm table: each realm with its session count.
  assert.match(text, /\/shared\/board 2 /);
  assert.match(text, new RegExp(`/${carol.user.id}/notes 1 `));
  // The session table: one row per session, each user, with its state.
  for (const client of [alice, bob, carol]) {
    assert.ok(text.includes(client.user.id), "each session's user is listed");
  }
  assert.equal(text.match(/ live /g)?.length, 3, "three live sessions");
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
    const before = await scrape(server.url);
    const ok = await fetch(`${server.url}/health`);
    assert.equal(ok.status, 200);
    assert.match(ok.headers.get("content-type")!, /^application\/json/);
    assert.deepEqual(await ok.json(), { status: "ok" });
    // One KV read, nothing else.
    const after = await scrape(server.url);
    for (const op of ["get", "get_many", "list", "commit"]) {
      const name = "tether_kv_operation_seconds_count";
      assert.equal(
        get(after, name, { op }) - get(before, name, { op }),
        op === "get" ? 1 : 0,
        op,
      );
    }
    kv.close();
    kvOpen = false;
    const failed = await fetch(`${server.url}/health`);
    assert.equal(failed.status, 503);
    assert.match(failed.headers.get("content-type")!, /^application\/json/);
    const body = await failed.json();
    assert.deepEqual(Object.keys(body).sort(), ["error", "status"]);
    assert.equal(body.status, "unavailable");
    assert.deepEqual(Object.keys(body.error).sort(), ["code", "message"]);
    assert.equal(body.error.code, "store_unavailable");
    assert.equal(typeof body.error.message, "string");
    assert.ok(body.error.message.length > 0);
    assert.equal(await statusOf(await fetch(`${server.url}/metrics`)), 200);
  } finally {
    if (kvOpen) kv.close();
  }
});

// ---------------------------------------------------------------------------
// Auth providers. Keys and tokens come from idp_tokens.ts, made the way an
// identity provider would, independently of the server's verifier.

/** An HS256 token whose HMAC secret is `secret`. */
async function signHs256(
  claims: Record<string, unknown>,
  secret: Uint8Array<ArrayBuffer>,
): Promise<string> {
  const body = `${encodePart({ alg: "HS256", typ: "JWT" })}.${
    encodePart(claims)
  }`;
  const key = await crypto.subtle.importKey(
    "raw",
    secret,
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
  const signature = await crypto.subtle.sign(
    "HMAC",
    key,
    new TextEncoder().encode(body),
  );
  return `${body}.${base64url(new Uint8Array(signature))}`;
}

// A fixed instant for servers given `now`: tokens are judged against it.
const NOW = 1_900_000_000_000;
const NOW_SEC = NOW / 1000;
const ISSUER = "https://issuer.test/";

const claimsAt = (
  seconds: number,
  extra: Record<string, unknown> = {},
) => ({
  sub: "alice",
  iss: ISSUER,
  aud: "tether",
  iat: seconds,
  exp: seconds + 600,
  ...extra,
});

/** What `POST /login` answered. */
interface LoginAnswer {
  status: number;
  headers: Headers;
  // deno-lint-ignore no-explicit-any
  body: any;
}

async function postLogin(baseUrl: string, body: unknown): Promise<LoginAnswer> {
  const response = await fetch(`${baseUrl}/login`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
    signal: bounded(),
  });
  return {
    status: response.status,
    headers: response.headers,
    body: await response.json(),
  };
}

const jwtLogin = (baseUrl: string, token: string) =>
  postLogin(baseUrl, { provider: "jwt", token });

function assertRefused(answer: LoginAnswer, message?: RegExp): void {
  assert.equal(answer.status, 401, JSON.stringify(answer.body));
  assert.equal(answer.body.error.code, "login_failed");
  if (message !== undefined) assert.match(answer.body.error.message, message);
}

function assertLoggedIn(answer: LoginAnswer, userId = "alice"): void {
  assert.equal(answer.status, 200, JSON.stringify(answer.body));
  assert.equal(answer.body.userId, userId);
}

/** A clock a test moves, for `serveSync({ now })`. */
class TestClock {
  time = NOW;
  now = () => this.time;
}

Deno.test("auth.jwt.publicKey: RS256 and ES256 tokens log in through App.logIn(Credentials.jwt) with a PEM (SPKI) key and with a JsonWebKey; the user is the token's sub and syncs", async () => {
  const rsa = await rsaPair();
  const ec = await ecPair();
  const cases: Array<[string, string | JsonWebKey, KeyPair]> = [
    ["RS256 PEM", await spkiPem(rsa.publicKey), rsa],
    ["RS256 JWK", await publicJwk(rsa.publicKey), rsa],
    ["ES256 PEM", await spkiPem(ec.publicKey), ec],
    ["ES256 JWK", await publicJwk(ec.publicKey), ec],
  ];
  for (const [name, publicKey, pair] of cases) {
    await using server = await serveSync({
      port: 0,
      kv: ":memory:",
      auth: { jwt: { publicKey, issuer: ISSUER, audience: "tether" } },
      logger: () => {},
    });
    const alg = pair === rsa ? "RS256" : "ES256";
    const other = pair === rsa ? ec : rsa;
    const now = Math.floor(Date.now() / 1000);
    const token = await signToken(
      { alg, typ: "JWT" },
      claimsAt(now, { sub: `user-${alg}` }),
      pair.privateKey,
    );
    await using app = fastApp(server.url);
    const user = await app.logIn(Credentials.jwt(token), { signal: bounded() });
    assert.equal(user.id, `user-${alg}`, name);
    await using realm = await openDownloaded(user, "/~/todos");
    await (await realm.write((tx) => tx.put("Task", "t", { name })))
      .waitForUpload({ signal: bounded() });
    assert.deepEqual(
      await server.realm(`/user-${alg}/todos`).get("Task", "t"),
      {
        name,
      },
    );
    // The other key type's token, even with this alg in its header, fails.
    const otherAlg = alg === "RS256" ? "ES256" : "RS256";
    for (const header of [{ alg: otherAlg }, { alg }]) {
      const forged = await signToken(header, claimsAt(now), other.privateKey);
      await assert.rejects(
        app.logIn(Credentials.jwt(forged), { signal: bounded() }),
        (error: unknown) =>
          error instanceof SyncError && error.code === "login_failed" &&
          !error.willRetry,
        `${name}: ${JSON.stringify(header)} signed by the other key`,
      );
    }
  }
});

Deno.test("auth.jwt: iss must equal issuer, aud (string or array) must name one of audience, exp and nbf judged with clockToleranceSec against the server's clock", async () => {
  const ec = await ecPair();
  const clock = new TestClock();
  const publicKey = await publicJwk(ec.publicKey);
  await using server = await serveSync({
    port: 0,
    kv: ":memory:",
    auth: {
      jwt: {
        publicKey,
        issuer: ISSUER,
        audience: ["tether", "tether-staging"],
        // clockToleranceSec: its default, 30 s.
      },
    },
    now: clock.now,
    logger: () => {},
  });
  const login = async (claims: Record<string, unknown>) =>
    await jwtLogin(
      server.url,
      await signToken({ alg: "ES256" }, claims, ec.privateKey),
    );
  const base = claimsAt(NOW_SEC);
  assertLoggedIn(await login(base));
  assertLoggedIn(await login({ ...base, aud: "tether-staging" }));
  assertLoggedIn(await login({ ...base, aud: ["someone-else", "tether"] }));
  assertRefused(await login({ ...base, aud: "someone-else" }), /aud/);
  assertRefused(await login({ ...base, aud: ["a", "b"] }), /aud/);
  assertRefused(await login({ ...base, aud: [] }), /aud/);
  assertRefused(await login({ ...base, aud: undefined }), /aud/);
  assertRefused(await login({ ...base, iss: "https://evil.test/" }), /iss/);
  assertRefused(await login({ ...base, iss: undefined }), /iss/);
  // exp: 20 s ago is within the 30 s tolerance, 31 s ago is not.
  assertLoggedIn(await login({ ...base, exp: NOW_SEC - 20 }));
  const expired = await login({ ...base, exp: NOW_SEC - 31 });
  assertRefused(expired, /expired/);
  assertRefused(await login({ ...base, exp: undefined }));
  // nbf: 20 s ahead is within the tolerance, 40 s ahead is not.
  assertLoggedIn(await login({ ...base, nbf: NOW_SEC + 20 }));
  assertRefused(await login({ ...base, nbf: NOW_SEC + 40 }));
  // The same token, judged later by the server's clock.
  const token = await signToken(
    { alg: "ES256" },
    { ...base, exp: NOW_SEC + 60 },
    ec.privateKey,
  );
  assertLoggedIn(await jwtLogin(server.url, token));
  clock.time = NOW + 89_000;
  assertLoggedIn(await jwtLogin(server.url, token));
  clock.time = NOW + 91_000;
  assertRefused(await jwtLogin(server.url, token), /expired/);

  // The sub is the user id, so it must be one (docs/SERVER.md "User ids").
  assertLoggedIn(
    await login({ ...base, sub: "auth0|5f7c8ec7c33c6c004bbafe82" }),
    "auth0|5f7c8ec7c33c6c004bbafe82",
  );
  assertLoggedIn(
    await login({ ...base, sub: "ada@example.com" }),
    "ada@example.com",
  );
  for (const sub of [undefined, "", "a/b", "~", "..", "x".repeat(257), 42]) {
    // The refusal states the rule the server applies.
    assertRefused(
      await login({ ...base, sub }),
      /sub is not a valid user id \(1-256 characters without "\/", white space or control characters, and not "\.", "\.\." or "~"\)/,
    );
  }

  // With a tolerance of 5 s, a token is refused 5 s after it expires.
  const strictClock = new TestClock();
  await using strict = await serveSync({
    port: 0,
    kv: ":memory:",
    auth: { jwt: { publicKey, clockToleranceSec: 5 } },
    now: strictClock.now,
    logger: () => {},
  });
  const shortLived = await signToken(
    { alg: "ES256" },
    { sub: "bob", exp: NOW_SEC + 1 },
    ec.privateKey,
  );
  strictClock.time = NOW + 5_999;
  assertLoggedIn(await jwtLogin(strict.url, shortLived), "bob");
  strictClock.time = NOW + 6_000;
  assertRefused(await jwtLogin(strict.url, shortLived), /expired/);
});

Deno.test("auth.jwt: the algorithm comes from the key: alg none, HS256 signed with the public key's bytes, RS256 on an EC key, a tampered or unsigned token are refused with 401 login_failed", async () => {
  const rsa = await rsaPair();
  const pem = await spkiPem(rsa.publicKey);
  const der = new Uint8Array(
    await crypto.subtle.exportKey("spki", rsa.publicKey),
  );
  const jwk = await publicJwk(rsa.publicKey);
  const now = Math.floor(Date.now() / 1000);
  const claims = claimsAt(now);
  for (const publicKey of [pem, jwk]) {
    // With and without an HS256 secret next to the provider.
    for (const jwtSecret of [undefined, "an app secret that is not the key"]) {
      await using server = await serveSync({
        port: 0,
        kv: ":memory:",
        auth: jwtSecret === undefined
          ? { jwt: { publicKey } }
          : { jwt: { publicKey }, jwtSecret },
        logger: () => {},
      });
      const where = `${typeof publicKey} key, secret ${
        jwtSecret !== undefined
      }`;
      const good = await signToken({ alg: "RS256" }, claims, rsa.privateKey);
      assertLoggedIn(await jwtLogin(server.url, good));
      if (jwtSecret !== undefined) {
        // The app's own HS256 tokens go to the secret.
        const own = await signHs256(
          { sub: "carol", exp: now + 600 },
          new TextEncoder().encode(jwtSecret),
        );
        assertLoggedIn(await jwtLogin(server.url, own), "carol");
      }
      const [header, payload, signature] = good.split(".");
      const forgeries: Array<[string, string]> = [
        [
          "alg none",
          `${encodePart({ alg: "none", typ: "JWT" })}.${payload}.`,
        ],
        [
          "alg None with the real signature",
          `${encodePart({ alg: "None" })}.${payload}.${signature}`,
        ],
        [
          "HS256 keyed with the PEM text",
          await signHs256(claims, new TextEncoder().encode(pem)),
        ],
        ["HS256 keyed with the DER bytes", await signHs256(claims, der)],
        [
          "HS256 keyed with the JWK's n",
          await signHs256(claims, new TextEncoder().encode(jwk.n!)),
        ],
        [
          "ES256 header on the RSA signature",
          `${encodePart({ alg: "ES256" })}.${payload}.${signature}`,
        ],
        [
          "PS256 header",
          `${encodePart({ alg: "PS256" })}.${payload}.${signature}`,
        ],
        [
          "tampered payload",
          `${header}.${encodePart({ ...claims, sub: "mallory" })}.${signature}`,
        ],
        ["no signature", `${header}.${payload}.`],
        ["two parts", `${header}.${payload}`],
      ];
      for (const [name, token] of forgeries) {
        const answer = await jwtLogin(server.url, token);
        assert.equal(answer.status, 401, `${where}: ${name}`);
        assert.equal(
          answer.body.error.code,
          "login_failed",
          `${where}: ${name}`,
        );
      }
    }
  }
});

Deno.test("serveSync() refuses auth options that cannot work (no way to log in, bad auth.jwt fields) with a TypeError naming the field", async () => {
  for (const auth of [{}, { allowAnonymous: false }, { jwtSecret: "" }]) {
    await assert.rejects(
      serveSync({ port: 0, kv: ":memory:", auth, logger: () => {} }),
      (error: unknown) =>
        error instanceof TypeError && /auth/.test(error.message),
      JSON.stringify(auth),
    );
  }
  const rsa = await rsaPair();
  const pem = await spkiPem(rsa.publicKey);
  const cases: Array<[unknown, RegExp]> = [
    [{}, /auth\.jwt/],
    [{ publicKey: pem, jwksUrl: "https://x.test/jwks.json" }, /auth\.jwt/],
    [{ jwksUrl: "not a url" }, /auth\.jwt\.jwksUrl/],
    [{ jwksUrl: "ftp://x.test/jwks.json" }, /auth\.jwt\.jwksUrl/],
    [{ publicKey: pem, clockToleranceSec: -1 }, /clockToleranceSec/],
    [{ publicKey: pem, clockToleranceSec: "30" }, /clockToleranceSec/],
    [{ publicKey: pem, audience: [] }, /auth\.jwt\.audience/],
    [{ publicKey: pem, issuer: "" }, /auth\.jwt\.issuer/],
    [{ publicKey: "not a key" }, /auth\.jwt\.publicKey/],
    [{ publicKey: { kty: "oct", k: "AAAA" } }, /auth\.jwt\.publicKey/],
    [
      { publicKey: await publicJwk(rsa.privateKey) },
      /auth\.jwt\.publicKey.*private/,
    ],
  ];
  for (const [jwt, message] of cases) {
    await assert.rejects(
      serveSync({
        port: 0,
        kv: ":memory:",
        // deno-lint-ignore no-explicit-any
        auth: { jwt: jwt as any },
        logger: () => {},
      }),
      (error: unknown) =>
        error instanceof TypeError && message.test(error.message),
      JSON.stringify(jwt),
    );
  }
});

Deno.test("auth.jwt.jwksUrl: keys fetched when first needed, cached for max-age (else 10 minutes), an unknown kid refetches at most once per 10 s, concurrent logins share one fetch", async () => {
  await using jwks = new FakeJwks();
  const first = await rsaPair();
  const second = await ecPair();
  jwks.keys = [await publicJwk(first.publicKey, { kid: "k1", use: "sig" })];
  const clock = new TestClock();
  await using server = await serveSync({
    port: 0,
    kv: ":memory:",
    auth: { jwt: { jwksUrl: jwks.url, issuer: ISSUER }, allowAnonymous: true },
    now: clock.now,
    logger: () => {},
  });
  assert.equal(jwks.requests, 0, "nothing fetched before a token needs it");
  const k1 = await signToken(
    { alg: "RS256", kid: "k1" },
    claimsAt(NOW_SEC, { exp: NOW_SEC + 3 * 86_400 }),
    first.privateKey,
  );
  const answers = await Promise.all(
    Array.from({ length: 5 }, () => jwtLogin(server.url, k1)),
  );
  for (const answer of answers) assertLoggedIn(answer);
  assert.equal(jwks.requests, 1, "concurrent first logins share one fetch");
  // No max-age: cached for 10 minutes.
  clock.time = NOW + 10 * 60_000 - 1_000;
  assertLoggedIn(await jwtLogin(server.url, k1));
  assert.equal(jwks.requests, 1);
  clock.time = NOW + 10 * 60_000;
  jwks.cacheControl = "public, max-age=120";
  assertLoggedIn(await jwtLogin(server.url, k1));
  assert.equal(jwks.requests, 2, "refetched once the 10 minutes are up");
  // This answer said max-age=120.
  const fetchedAt = clock.time;
  clock.time = fetchedAt + 119_000;
  assertLoggedIn(await jwtLogin(server.url, k1));
  assert.equal(jwks.requests, 2);
  clock.time = fetchedAt + 120_000;
  assertLoggedIn(await jwtLogin(server.url, k1));
  assert.equal(jwks.requests, 3, "refetched after max-age");

  // A rotated key: its kid is unknown, so the JWKS is fetched again (once,
  // however many logins ask), and not again within 10 s. (The last fetch
  // was just now: 10 s pass first.)
  clock.time += 10_000;
  const k2 = await signToken(
    { alg: "ES256", kid: "k2" },
    claimsAt(NOW_SEC, { sub: "bob", exp: NOW_SEC + 3600 }),
    second.privateKey,
  );
  const refused = await Promise.all(
    Array.from({ length: 3 }, () => jwtLogin(server.url, k2)),
  );
  for (const answer of refused) assertRefused(answer, /k2/);
  assert.equal(jwks.requests, 4, "one refetch for an unknown kid");
  jwks.keys = [
    ...jwks.keys,
    await publicJwk(second.publicKey, { kid: "k2" }),
  ];
  clock.time += 9_000;
  assertRefused(await jwtLogin(server.url, k2), /k2/);
  assert.equal(jwks.requests, 4, "no refetch within 10 s");
  assertLoggedIn(await jwtLogin(server.url, k1));
  assert.equal(jwks.requests, 4);
  clock.time += 1_000;
  assertLoggedIn(await jwtLogin(server.url, k2), "bob");
  assert.equal(jwks.requests, 5, "the rotated key, 10 s later");
  assertLoggedIn(await jwtLogin(server.url, k2), "bob");
  assertLoggedIn(await jwtLogin(server.url, k1));
  assert.equal(jwks.requests, 5);

  // max-age is bounded: at least 10 s, at most a day (docs/SERVER.md).
  jwks.cacheControl = "max-age=0";
  clock.time += 120_000;
  assertLoggedIn(await jwtLogin(server.url, k1));
  assert.equal(jwks.requests, 6);
  clock.time += 9_999;
  assertLoggedIn(await jwtLogin(server.url, k1));
  assert.equal(jwks.requests, 6, "max-age=0 still caches for 10 s");
  jwks.cacheControl = "max-age=8640000";
  clock.time += 1;
  assertLoggedIn(await jwtLogin(server.url, k1));
  assert.equal(jwks.requests, 7);
  clock.time += 24 * 3_600_000 - 1;
  assertLoggedIn(await jwtLogin(server.url, k1));
  assert.equal(jwks.requests, 7);
  clock.time += 1;
  assertLoggedIn(await jwtLogin(server.url, k1));
  assert.equal(jwks.requests, 8, "refetched after a day whatever max-age says");
});

Deno.test("auth.jwt.jwksUrl unreachable: JWT logins answer 503 auth_unavailable with Retry-After (App.logIn: a retryable SyncError) while anonymous and refresh logins and open sessions keep working; logins recover with the JWKS", async () => {
  await using jwks = new FakeJwks();
  const pair = await rsaPair();
  jwks.keys = [await publicJwk(pair.publicKey, { kid: "k1" })];
  const clock = new TestClock();
  clock.time = Date.now();
  const nowSec = Math.floor(clock.time / 1000);
  await using server = await serveSync({
    port: 0,
    kv: ":memory:",
    auth: { jwt: { jwksUrl: new URL(jwks.url) }, allowAnonymous: true },
    now: clock.now,
    logger: () => {},
  });
  const token = await signToken(
    { alg: "RS256", kid: "k1" },
    { sub: "alice", exp: nowSec + 7200 },
    pair.privateKey,
  );
  // Down from the start: nothing to fall back on.
  jwks.mode = "down";
  const never = await jwtLogin(server.url, token);
  assert.equal(never.status, 503);
  assert.equal(never.body.error.code, "auth_unavailable");
  assert.equal(jwks.requests, 1);
  jwks.mode = "ok";
  clock.time += 10_000;
  // A JWT user and an anonymous one sync before the provider goes away.
  await using jwtApp = fastApp(server.url);
  const alice = await jwtApp.logIn(Credentials.jwt(token), {
    signal: bounded(),
  });
  await using aliceRealm = await openDownloaded(alice, "/~/todos");
  await using anonymous = await openClient(fastApp(server.url));
  const firstLogin = await jwtLogin(server.url, token);
  assertLoggedIn(firstLogin);
  assert.equal(jwks.requests, 2);
  // A token naming an unknown key while the JWKS is down cannot be judged
  // (503); tokens of the cached keys still can.
  clock.time += 10_000;
  jwks.mode = "down";
  const rotated = await signToken(
    { alg: "RS256", kid: "k9" },
    { sub: "alice", exp: nowSec + 7200 },
    pair.privateKey,
  );
  const unknownKid = await jwtLogin(server.url, rotated);
  assert.equal(unknownKid.status, 503);
  assert.equal(unknownKid.body.error.code, "auth_unavailable");
  assert.equal(jwks.requests, 3);
  assertLoggedIn(await jwtLogin(server.url, token));
  assert.equal(jwks.requests, 3);

  for (const mode of ["down", "garbage"] as const) {
    jwks.mode = mode;
    // The cached keys expire (10 minutes): the next JWT login must fetch.
    clock.time += 10 * 60_000;
    const unavailable = await jwtLogin(server.url, token);
    assert.equal(unavailable.status, 503, mode);
    assert.deepEqual(Object.keys(unavailable.body), ["error"]);
    assert.equal(unavailable.body.error.code, "auth_unavailable");
    assert.equal(typeof unavailable.body.error.message, "string");
    const retryAfter = Number(unavailable.headers.get("retry-after"));
    assert.ok(
      Number.isInteger(retryAfter) && retryAfter >= 1 && retryAfter <= 10,
      `Retry-After: ${unavailable.headers.get("retry-after")}`,
    );
    // No token is let through because its key could not be checked, and
    // within 10 s the provider is not asked again.
    const requests: number = jwks.requests;
    assert.equal((await jwtLogin(server.url, token)).status, 503);
    assert.equal(jwks.requests, requests);
    // The client sees a transient failure, not a refusal.
    await using app = fastApp(server.url);
    await assert.rejects(
      app.logIn(Credentials.jwt(token), { signal: bounded() }),
      (error: unknown) =>
        error instanceof SyncError && error.code === "connection_lost" &&
        error.willRetry && !error.isFatal && /503/.test(error.message),
    );
    // Everything else goes on.
    assertLoggedIn(
      await postLogin(server.url, {
        provider: "refresh",
        refreshToken: firstLogin.body.refreshToken,
      }),
    );
    assert.equal(
      (await postLogin(server.url, { provider: "anonymous" })).status,
      200,
    );
    await (await aliceRealm.write((tx) => tx.put("Task", mode, {})))
      .waitForUpload({ signal: bounded() });
    await (await anonymous.realm.write((tx) => tx.put("Task", mode, {})))
      .waitForUpload({ signal: bounded() });
    assert.equal(
      (await fetch(`${server.url}/health`).then((r) => r.json())).status,
      "ok",
    );
    // Back 10 s later: JWT logins work again.
    jwks.mode = "ok";
    clock.time += 10_000;
    assertLoggedIn(await jwtLogin(server.url, token));
  }
});

Deno.test("auth.jwt.jwksUrl slow: a JWT login waiting for the JWKS holds up no anonymous login, refresh or sync, and shutdown does not wait for it", async () => {
  await using jwks = new FakeJwks();
  const pair = await ecPair();
  jwks.keys = [await publicJwk(pair.publicKey, { kid: "k1" })];
  jwks.mode = "held";
  const server = await serveSync({
    port: 0,
    kv: ":memory:",
    auth: { jwt: { jwksUrl: jwks.url }, allowAnonymous: true },
    logger: () => {},
  });
  try {
    const token = await signToken(
      { alg: "ES256", kid: "k1" },
      { sub: "alice", exp: Math.floor(Date.now() / 1000) + 600 },
      pair.privateKey,
    );
    let settled = false;
    const waiting = jwtLogin(server.url, token).finally(() => settled = true);
    await jwks.reached();
    // Meanwhile everything else is answered.
    await using client = await openClient(fastApp(server.url));
    await (await client.realm.write((tx) => tx.put("Task", "t", {})))
      .waitForUpload({ signal: bounded() });
    const anonymous = await postLogin(server.url, { provider: "anonymous" });
    assert.equal(anonymous.status, 200);
    assertLoggedIn(
      await postLogin(server.url, {
        provider: "refresh",
        refreshToken: anonymous.body.refreshToken,
      }),
      anonymous.body.userId,
    );
    assert.equal(settled, false, "the JWT login still waits for the JWKS");
    // A second JWT login joins the fetch in flight: one request.
    const second = jwtLogin(server.url, token);
    // App.logIn waiting on it: an abort rejects with the signal's reason
    // and leaves no user; two concurrent logins of one user share a User.
    await using app = fastApp(server.url);
    const aborter = new AbortController();
    const aborted = app.logIn(Credentials.jwt(token), {
      signal: aborter.signal,
    });
    const reason = new Error("the user gave up");
    aborter.abort(reason);
    await assert.rejects(aborted, (error: unknown) => error === reason);
    assert.equal(app.currentUser, undefined);
    const both = Promise.all([
      app.logIn(Credentials.jwt(token), { signal: bounded() }),
      app.logIn(Credentials.jwt(token), { signal: bounded() }),
    ]);
    jwks.release();
    assertLoggedIn(await waiting);
    assertLoggedIn(await second);
    const [one, two] = await both;
    assert.equal(one, two, "one User for one user id");
    assert.equal(one.id, "alice");
    assert.deepEqual(app.allUsers, [one]);
    assert.equal(jwks.requests, 1);
  } finally {
    await server.shutdown();
  }

  // Shutdown with a fetch in flight: the login is answered, shutdown ends.
  await using held = new FakeJwks();
  held.keys = jwks.keys;
  held.mode = "held";
  const stopping = await serveSync({
    port: 0,
    kv: ":memory:",
    auth: { jwt: { jwksUrl: held.url } },
    logger: () => {},
  });
  const token = await signToken(
    { alg: "ES256", kid: "k1" },
    { sub: "alice", exp: Math.floor(Date.now() / 1000) + 600 },
    pair.privateKey,
  );
  const pending = fetch(`${stopping.url}/login`, {
    method: "POST",
    body: JSON.stringify({ provider: "jwt", token }),
    signal: bounded(),
  });
  await held.reached();
  await stopping.shutdown();
  const answer = await pending.then(
    async (response) => ({
      status: response.status,
      body: await response.json(),
    }),
    (error: unknown) => ({ status: 0, body: String(error) }),
  );
  assert.equal(answer.status, 503, JSON.stringify(answer));
  assert.equal(answer.body.error.code, "auth_unavailable");
  assert.equal(held.requests, 1);
});

Deno.test("POST /login: exact answers of the HTTP surface table: 200 tokens (access token for 30 minutes by the server's clock), 400 bad_request, 401/403 login_failed, 204 preflight, 405 other methods", async () => {
  const secret = "login-surface-secret-login-surface";
  const clock = new TestClock();
  await using server = await serveSync({
    port: 0,
    kv: ":memory:",
    auth: { jwtSecret: secret },
    now: clock.now,
    logger: () => {},
  });
  const token = await signHs256(
    { sub: "alice", exp: NOW_SEC + 600 },
    new TextEncoder().encode(secret),
  );
  const ok = await jwtLogin(server.url, token);
  assertLoggedIn(ok);
  assert.deepEqual(Object.keys(ok.body).sort(), [
    "accessToken",
    "accessTokenExpiresAt",
    "refreshToken",
    "userId",
  ]);
  assert.equal(ok.body.accessTokenExpiresAt, NOW + 30 * 60_000);
  assert.equal(ok.headers.get("access-control-allow-origin"), "*");
  const refreshed = await postLogin(server.url, {
    provider: "refresh",
    refreshToken: ok.body.refreshToken,
  });
  assertLoggedIn(refreshed);

  const raw = async (body: string) => {
    const response = await fetch(`${server.url}/login`, {
      method: "POST",
      body,
    });
    return { status: response.status, body: await response.json() };
  };
  for (
    const body of [
      "not json",
      "[]",
      "null",
      JSON.stringify({ provider: "password", user: "a" }),
      JSON.stringify({ provider: "jwt" }),
      JSON.stringify({ provider: "jwt", token: 42 }),
      JSON.stringify({ provider: "refresh" }),
      JSON.stringify({ provider: "jwt", token: "x".repeat(70 * 1024) }),
    ]
  ) {
    const answer = await raw(body);
    assert.equal(answer.status, 400, body.slice(0, 60));
    assert.equal(answer.body.error.code, "bad_request");
  }
  const refusals: Array<[unknown, number]> = [
    [{ provider: "anonymous" }, 403],
    [{ provider: "jwt", token: "a.b.c" }, 401],
    [{
      provider: "jwt",
      token: await signHs256(
        { sub: "alice", exp: NOW_SEC - 1 },
        new TextEncoder().encode(secret),
      ),
    }, 401],
    [{ provider: "refresh", refreshToken: "garbage" }, 401],
    [{ provider: "refresh", refreshToken: ok.body.accessToken }, 401],
  ];
  for (const [body, status] of refusals) {
    const answer = await postLogin(server.url, body);
    assert.equal(answer.status, status, JSON.stringify(body));
    assert.equal(answer.body.error.code, "login_failed");
    assert.equal(typeof answer.body.error.message, "string");
  }
  const preflight = await fetch(`${server.url}/login`, { method: "OPTIONS" });
  await preflight.body?.cancel();
  assert.equal(preflight.status, 204);
  assert.equal(preflight.headers.get("access-control-allow-origin"), "*");
  assert.match(preflight.headers.get("access-control-allow-methods")!, /POST/);
  const wrongMethod = await fetch(`${server.url}/login`);
  assert.equal(wrongMethod.status, 405);
  assert.match(wrongMethod.headers.get("allow")!, /POST/);
  assert.equal((await wrongMethod.json()).error.code, "method_not_allowed");

  // A server without JWT login refuses JWTs with 403.
  await using anonymousOnly = await startTestServer();
  const disabled = await jwtLogin(anonymousOnly.url, token);
  assert.equal(disabled.status, 403);
  assert.equal(disabled.body.error.code, "login_failed");
});

Deno.test("App with a JWT user: while the server cannot fetch the JWKS, the user's login again (its refresh token refused) is a retried connection_lost, not a logout; once the JWKS is back the session syncs", async () => {
  await using stack = new AsyncDisposableStack();
  const jwks = stack.use(new FakeJwks());
  const pair = await rsaPair();
  jwks.keys = [await publicJwk(pair.publicKey, { kid: "k1" })];
  const options = {
    port: 0,
    kv: ":memory:",
    auth: { jwt: { jwksUrl: jwks.url } },
    logger: () => {},
  };
  const first = stack.use(await serveSync(options));
  const proxy = stack.use(new TcpProxy(first.addr));
  const app = stack.use(fastApp(proxy.url));
  const token = await signToken(
    { alg: "RS256", kid: "k1" },
    { sub: "alice", exp: Math.floor(Date.now() / 1000) + 3600 },
    pair.privateKey,
  );
  const user = await app.logIn(Credentials.jwt(token), { signal: bounded() });
  const realm = stack.use(await openDownloaded(user, "/~/todos"));
  // The server is replaced by one on another store (its tokens are not the
  // old server's) whose identity provider cannot be reached.
  const clock = new TestClock();
  clock.time = Date.now();
  const second = stack.use(await serveSync({ ...options, now: clock.now }));
  jwks.mode = "down";
  const states = realm.syncSession.connectionStateChanges({
    signal: bounded(),
  });
  proxy.retarget(second.addr);
  proxy.dropAll();
  let unavailable: SyncError | undefined;
  for await (const change of states) {
    if (
      change.retry?.lastError.message.includes("auth_unavailable") ||
      change.retry?.lastError.message.includes("503")
    ) {
      unavailable = change.retry.lastError;
      break;
    }
  }
  assert.ok(unavailable !== undefined);
  assert.equal(unavailable.code, "connection_lost");
  assert.equal(unavailable.willRetry, true);
  assert.notEqual(realm.syncSession.state, "error");
  assert.equal(app.currentUser, user, "the user is still logged in");
  // The provider is back (and 10 s have passed for the server): a retry
  // asked for by hand logs in and syncs.
  jwks.mode = "ok";
  clock.time += 10_000;
  realm.syncSession.pause();
  realm.syncSession.resume();
  const receipt = await realm.write((tx) => tx.put("Task", "after", {}));
  await receipt.waitForUpload({ signal: bounded() });
  assert.deepEqual(
    await second.realm("/alice/todos").get("Task", "after"),
    {},
  );
});
