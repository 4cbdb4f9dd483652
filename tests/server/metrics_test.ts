import assert from "node:assert/strict";
import {
  escapeLabelValue,
  formatNumber,
  MetricsRegistry,
  PROMETHEUS_CONTENT_TYPE,
} from "../../src/server/metrics.ts";
import {
  KV_OPERATIONS,
  ServerMetrics,
  UPLOAD_ACK_BUCKETS,
} from "../../src/server/server_metrics.ts";
import { MessageType } from "../../src/protocol/messages.ts";

// A strict parser of the Prometheus text format (version 0.0.4), written
// from the format's description, independently of the renderer: it fails
// on anything a Prometheus server would reject or misread.

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

interface ParsedFamily {
  name: string;
  help: string;
  type: string;
  samples: Sample[];
}

function parseExposition(text: string): Map<string, ParsedFamily> {
  assert.ok(text.endsWith("\n"), "the exposition ends with a line feed");
  const families = new Map<string, ParsedFamily>();
  let current: ParsedFamily | null = null;
  const lines = text.slice(0, -1).split("\n");
  for (const [index, line] of lines.entries()) {
    const where = `line ${index + 1}: ${JSON.stringify(line)}`;
    if (line.startsWith("# HELP ")) {
      const match = /^# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$/.exec(line);
      assert.ok(match, where);
      assert.ok(!families.has(match[1]!), `family repeated: ${where}`);
      current = {
        name: match[1]!,
        help: unescape(match[2]!, false),
        type: "",
        samples: [],
      };
      families.set(current.name, current);
      continue;
    }
    if (line.startsWith("# TYPE ")) {
      const match =
        /^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped)$/
          .exec(line);
      assert.ok(match, where);
      assert.equal(match[1], current?.name, `TYPE follows its HELP: ${where}`);
      assert.equal(current!.samples.length, 0, `TYPE before samples: ${where}`);
      current!.type = match[2]!;
      continue;
    }
    assert.ok(!line.startsWith("#"), `unexpected comment: ${where}`);
    assert.ok(
      current !== null && current.type !== "",
      `sample before TYPE: ${where}`,
    );
    const sample = parseSample(line, where);
    const suffixes = current.type === "histogram"
      ? ["_bucket", "_sum", "_count"]
      : [""];
    assert.ok(
      suffixes.some((suffix) => sample.name === current!.name + suffix),
      `sample ${sample.name} outside its family ${current.name}`,
    );
    current.samples.push(sample);
  }
  return families;
}

function parseSample(line: string, where: string): Sample {
  const nameMatch = /^[a-zA-Z_:][a-zA-Z0-9_:]*/.exec(line);
  assert.ok(nameMatch, where);
  const name = nameMatch[0];
  let position = name.length;
  const labels: Record<string, string> = {};
  if (line[position] === "{") {
    position++;
    while (line[position] !== "}") {
      const labelMatch = /^([a-zA-Z_][a-zA-Z0-9_]*)="/.exec(
        line.slice(position),
      );
      assert.ok(labelMatch, `label name: ${where}`);
      position += labelMatch[0].length;
      let raw = "";
      for (;;) {
        const char = line[position];
        assert.ok(char !== undefined, `unterminated label value: ${where}`);
        if (char === '"') break;
        if (char === "\\") {
          raw += char + line[position + 1];
          position += 2;
        } else {
          raw += char;
          position++;
        }
      }
      position++;
      assert.ok(!(labelMatch[1]! in labels), `repeated label: ${where}`);
      labels[labelMatch[1]!] = unescape(raw, true);
      if (line[position] === ",") position++;
      else assert.equal(line[position], "}", where);
    }
    position++;
  }
  assert.equal(line[position], " ", `space before the value: ${where}`);
  const valueText = line.slice(position + 1);
  assert.match(
    valueText,
    /^(?:[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|[+-]Inf|NaN)$/,
    where,
  );
  const value = valueText === "+Inf"
    ? Infinity
    : valueText === "-Inf"
    ? -Infinity
    : Number(valueText);
  return { name, labels, value };
}

function unescape(text: string, isLabel: boolean): string {
  return text.replace(/\\(.)/g, (_, char: string) => {
    if (char === "n") return "\n";
    if (char === "\\") return "\\";
    if (char === '"' && isLabel) return '"';
    throw new Error(`bad escape \\${char} in ${JSON.stringify(text)}`);
  });
}

function sampleValue(
  family: ParsedFamily,
  name: string,
  labels: Record<string, string>,
): number {
  const found = family.samples.filter((sample) =>
    sample.name === name &&
    JSON.stringify(Object.entries(sample.labels).sort()) ===
      JSON.stringify(Object.entries(labels).sort())
  );
  assert.equal(found.length, 1, `${name} ${JSON.stringify(labels)}`);
  return found[0]!.value;
}

Deno.test("MetricsRegistry.render() writes families the Prometheus format parses back, escaping help and label values", () => {
  const registry = new MetricsRegistry();
  const requests = registry.counter(
    "demo_requests_total",
    'Requests by path; a "quoted" help\\with a backslash\nand a line feed.',
    ["path", "method"],
  );
  const tricky = 'a "quote", a \\ backslash,\na line feed, {braces} and é';
  requests.labels(tricky, "GET").inc();
  requests.labels(tricky, "GET").inc(2);
  requests.labels("/plain", "POST").inc(0.5);
  let level = 7;
  registry.gauge("demo_level", "A collected gauge.", { collect: () => level });
  const set = registry.gauge("demo_set", "A gauge set by code.", {
    labelNames: ["shard"],
  });
  set.labels("a").set(-3);
  set.labels("b").set(Infinity);
  const latency = registry.histogram(
    "demo_latency_seconds",
    "A histogram.",
    [0.1, 0.5, 1],
    ["op"],
  );
  for (const value of [0.05, 0.1, 0.2, 0.7, 5, 5]) {
    latency.labels("read").observe(value);
  }
  latency.labels("write");
  level = 9;

  const families = parseExposition(registry.render());
  assert.deepEqual([...families.keys()], [
    "demo_requests_total",
    "demo_level",
    "demo_set",
    "demo_latency_seconds",
  ]);
  const counter = families.get("demo_requests_total")!;
  assert.equal(counter.type, "counter");
  assert.equal(
    counter.help,
    'Requests by path; a "quoted" help\\with a backslash\nand a line feed.',
  );
  assert.equal(
    sampleValue(counter, "demo_requests_total", {
      path: tricky,
      method: "GET",
    }),
    3,
  );
  assert.equal(
    sampleValue(counter, "demo_requests_total", {
      path: "/plain",
      method: "POST",
    }),
    0.5,
  );
  assert.equal(families.get("demo_level")!.type, "gauge");
  assert.equal(sampleValue(families.get("demo_level")!, "demo_level", {}), 9);
  assert.equal(
    sampleValue(families.get("demo_set")!, "demo_set", { shard: "a" }),
    -3,
  );
  assert.equal(
    sampleValue(families.get("demo_set")!, "demo_set", { shard: "b" }),
    Infinity,
  );

  const histogram = families.get("demo_latency_seconds")!;
  assert.equal(histogram.type, "histogram");
  const bucket = (op: string, le: string) =>
    sampleValue(histogram, "demo_latency_seconds_bucket", { op, le });
  // Cumulative, an observation equal to a bound counts in that bucket.
  assert.deepEqual(
    ["0.1", "0.5", "1", "+Inf"].map((le) => bucket("read", le)),
    [2, 3, 4, 6],
  );
  assert.equal(
    sampleValue(histogram, "demo_latency_seconds_count", { op: "read" }),
    6,
  );
  assert.ok(
    Math.abs(
      sampleValue(histogram, "demo_latency_seconds_sum", { op: "read" }) -
        11.05,
    ) < 1e-9,
  );
  assert.deepEqual(
    ["0.1", "0.5", "1", "+Inf"].map((le) => bucket("write", le)),
    [0, 0, 0, 0],
  );
  assert.equal(
    sampleValue(histogram, "demo_latency_seconds_count", { op: "write" }),
    0,
  );
});

Deno.test("MetricsRegistry refuses names, labels and buckets Prometheus would not accept", () => {
  const registry = new MetricsRegistry();
  assert.throws(
    () => registry.counter("2bad", "x"),
    new TypeError('Invalid metric name "2bad"'),
  );
  assert.throws(
    () => registry.counter("ok_total", "x", ["bad-label"]),
    new TypeError('Invalid label name "bad-label" on ok_total'),
  );
  assert.throws(
    () => registry.counter("ok_total", "x", ["__reserved"]),
    new TypeError('Invalid label name "__reserved" on ok_total'),
  );
  assert.throws(
    () => registry.histogram("h_seconds", "x", [1, 0.5]),
    new TypeError("h_seconds: bucket bounds must be finite and increasing"),
  );
  assert.throws(
    () => registry.histogram("h_seconds", "x", [1], ["le"]),
    new TypeError('h_seconds: "le" is reserved in a histogram'),
  );
  const family = registry.counter("once_total", "x", ["a"]);
  assert.throws(
    () => registry.counter("once_total", "x"),
    new TypeError("Metric once_total is already registered"),
  );
  assert.throws(
    () => family.labels("a", "b"),
    new TypeError("once_total takes 1 label value(s), got 2"),
  );
  assert.equal(family.labels("x"), family.labels("x"), "children are reused");
  assert.equal(escapeLabelValue('\\"\n'), '\\\\\\"\\n');
  assert.deepEqual(
    [NaN, Infinity, -Infinity, 0, 1.5, 1e21].map(formatNumber),
    ["NaN", "+Inf", "-Inf", "0", "1.5", "1e+21"],
  );
  assert.equal(
    PROMETHEUS_CONTENT_TYPE,
    "text/plain; version=0.0.4; charset=utf-8",
  );
});

Deno.test("ServerMetrics exports every family of the contract, with HELP, TYPE and counts by type, code and op", () => {
  const live = { connections: 2, sessions: 5, realms: 3 };
  const metrics = new ServerMetrics({
    connections: () => live.connections,
    sessions: () => live.sessions,
    realms: () => live.realms,
  });
  metrics.received(MessageType.Upload, 100);
  metrics.received(MessageType.Upload, 50);
  metrics.received(MessageType.Handshake, 20);
  metrics.received(0x3f, 7); // a type the server does not know
  metrics.sent(MessageType.Download, 1000);
  metrics.sent(MessageType.HandshakeReply, 10);
  metrics.changesetsIntegrated.inc(4);
  metrics.error("bad_changeset");
  metrics.error("bad_changeset");
  metrics.clientResets.inc();
  metrics.rejectedWrites.inc(2);
  metrics.uploadAck.observe(0.02);
  metrics.bootstrap.observe(3);
  metrics.kvOperation("commit").observe(0.004);
  live.sessions = 6;

  const families = parseExposition(metrics.render());
  const expected: Record<string, string> = {
    tether_connections: "gauge",
    tether_sessions: "gauge",
    tether_realms: "gauge",
    tether_changesets_integrated_total: "counter",
    tether_bytes_received_total: "counter",
    tether_bytes_sent_total: "counter",
    tether_messages_received_total: "counter",
    tether_messages_sent_total: "counter",
    tether_errors_total: "counter",
    tether_client_resets_total: "counter",
    tether_rejected_writes_total: "counter",
    tether_upload_ack_seconds: "histogram",
    tether_bootstrap_seconds: "histogram",
    tether_kv_operation_seconds: "histogram",
  };
  assert.deepEqual(
    Object.fromEntries([...families.values()].map((f) => [f.name, f.type])),
    expected,
  );
  for (const family of families.values()) {
    assert.ok(family.help.length > 0, `${family.name} has help`);
  }
  const value = (name: string, labels: Record<string, string> = {}) => {
    const family = families.get(name.replace(/_(bucket|sum|count)$/, "")) ??
      families.get(name)!;
    return sampleValue(family, name, labels);
  };
  assert.equal(value("tether_connections"), 2);
  assert.equal(value("tether_sessions"), 6, "gauges are read at scrape time");
  assert.equal(value("tether_realms"), 3);
  assert.equal(value("tether_bytes_received_total"), 177);
  assert.equal(value("tether_bytes_sent_total"), 1010);
  assert.equal(value("tether_messages_received_total", { type: "upload" }), 2);
  assert.equal(
    value("tether_messages_received_total", { type: "handshake" }),
    1,
  );
  assert.equal(value("tether_messages_received_total", { type: "unknown" }), 1);
  assert.equal(value("tether_messages_received_total", { type: "mark" }), 0);
  assert.equal(value("tether_messages_sent_total", { type: "download" }), 1);
  assert.equal(
    value("tether_messages_sent_total", { type: "handshake_reply" }),
    1,
  );
  assert.equal(value("tether_changesets_integrated_total"), 4);
  assert.equal(value("tether_errors_total", { code: "bad_changeset" }), 2);
  assert.equal(value("tether_errors_total", { code: "bad_token" }), 0);
  assert.ok(
    !families.get("tether_errors_total")!.samples.some((sample) =>
      sample.labels.code === "read_timeout"
    ),
    "codes only clients raise are not listed",
  );
  assert.equal(value("tether_client_resets_total"), 1);
  assert.equal(value("tether_rejected_writes_total"), 2);
  assert.equal(
    value("tether_upload_ack_seconds_bucket", { le: "0.01" }),
    0,
  );
  assert.equal(
    value("tether_upload_ack_seconds_bucket", { le: "0.025" }),
    1,
  );
  assert.equal(value("tether_upload_ack_seconds_bucket", { le: "+Inf" }), 1);
  assert.equal(
    families.get("tether_upload_ack_seconds")!.samples.filter((sample) =>
      sample.name.endsWith("_bucket")
    ).length,
    UPLOAD_ACK_BUCKETS.length + 1,
  );
  assert.equal(value("tether_bootstrap_seconds_count"), 1);
  assert.equal(value("tether_bootstrap_seconds_sum"), 3);
  for (const op of KV_OPERATIONS) {
    assert.equal(
      value("tether_kv_operation_seconds_count", { op }),
      op === "commit" ? 1 : 0,
    );
  }
});
