import assert from "node:assert/strict";
import { parse } from "npm:parse5@7.1.2";
import {
  escapeHtml,
  formatBytes,
  renderStatusPage,
  type StatusSession,
  type StatusSnapshot,
} from "../../src/server/status_page.ts";
import { ThroughputMeter } from "../../src/server/throughput.ts";

// parse5 parses the page as a browser would, so these tests see the text a
// reader sees and the elements a browser would build (or run).

type Node = {
  nodeName: string;
  tagName?: string;
  value?: string;
  attrs?: { name: string; value: string }[];
  childNodes?: Node[];
  content?: Node;
};

function all(node: Node, predicate: (node: Node) => boolean): Node[] {
  const found: Node[] = [];
  const visit = (current: Node) => {
    if (predicate(current)) found.push(current);
    for (const child of current.childNodes ?? []) visit(child);
    if (current.content !== undefined) visit(current.content);
  };
  visit(node);
  return found;
}

function textOf(node: Node): string {
  if (node.nodeName === "#text") return node.value ?? "";
  return (node.childNodes ?? []).map(textOf).join("");
}

function byId(root: Node, id: string): Node {
  const [found] = all(
    root,
    (node) =>
      node.attrs?.some((a) => a.name === "id" && a.value === id) ?? false,
  );
  assert.ok(found, `#${id}`);
  return found;
}

function rows(root: Node, tableId: string): string[][] {
  const body = all(byId(root, tableId), (node) => node.tagName === "tbody")[0]!;
  return all(body, (node) => node.tagName === "tr").map((row) =>
    all(row, (node) => node.tagName === "td").map(textOf)
  );
}

const hostile =
  `<script>alert("x")</script>&amp;"' onmouseover=alert(1) <img src=x onerror=alert(2)>`;

function snapshot(sessionList: StatusSession[]): StatusSnapshot {
  return {
    time: Date.UTC(2026, 11, 7, 1, 0, 0),
    startedAt: Date.UTC(2026, 11, 7, 1, 0, 0) - 3_723_000,
    version: "0.1.0",
    connections: 3,
    sessions: sessionList.length,
    realms: new Set(sessionList.map((s) => s.realm)).size,
    totals: { bytesIn: 10_000, bytesOut: 2_000_000, changesets: 42 },
    throughput: {
      bytesIn: 1500,
      bytesOut: 2_500_000,
      messagesIn: 12,
      messagesOut: 3.5,
      changesets: 0.5,
    },
    sessionList,
  };
}

Deno.test("renderStatusPage() shows connections, sessions per realm with state and pending bytes, and throughput", () => {
  const html = renderStatusPage(snapshot([
    {
      realm: "/alice/todos",
      connection: 1,
      session: 1,
      userId: "alice",
      state: "live",
      pendingBytes: 0,
    },
    {
      realm: "/alice/notes",
      connection: 1,
      session: 2,
      userId: "alice",
      state: "bootstrapping",
      pendingBytes: 250_000,
    },
    {
      realm: "/alice/todos",
      connection: 2,
      session: 1,
      userId: "alice",
      state: "live",
      pendingBytes: 1_200,
    },
  ]));
  const root = parse(html) as unknown as Node;
  assert.equal(textOf(byId(root, "connections")), "3");
  assert.equal(textOf(byId(root, "sessions")), "3");
  assert.equal(textOf(byId(root, "realms")), "2");
  assert.deepEqual(rows(root, "realm-table"), [
    ["/alice/notes", "1", "250 kB"],
    ["/alice/todos", "2", "1.2 kB"],
  ]);
  assert.deepEqual(rows(root, "session-table"), [
    ["/alice/notes", "alice", "1", "2", "bootstrapping", "250 kB"],
    ["/alice/todos", "alice", "2", "1", "live", "1.2 kB"],
    ["/alice/todos", "alice", "1", "1", "live", "0 B"],
  ]);
  const text = textOf(root);
  assert.match(text, /In1\.5 kB\/s12 msg\/s/);
  assert.match(text, /Out2\.5 MB\/s3\.5 msg\/s/);
  assert.match(text, /Changesets0\.5\/s42 in all/);
  assert.match(text, /up 1h 2m/);
  assert.match(text, /updated 2026-12-07T01:00:00\.000Z/);
});

Deno.test("renderStatusPage() escapes realm paths, user ids and states, and loads nothing from elsewhere", () => {
  const html = renderStatusPage(snapshot([
    {
      realm: `/${hostile}`,
      connection: 1,
      session: 1,
      userId: hostile,
      state: hostile,
      pendingBytes: 5,
    },
  ]));
  const root = parse(html) as unknown as Node;
  // The text comes back exactly as given, as text.
  assert.deepEqual(rows(root, "session-table"), [
    [`/${hostile}`, hostile, "1", "1", hostile, "5 B"],
  ]);
  assert.deepEqual(rows(root, "realm-table"), [[`/${hostile}`, "1", "5 B"]]);
  // Only the page's own script, no element the hostile text tried to add,
  // and no attribute but the page's own.
  const scripts = all(root, (node) => node.tagName === "script");
  assert.equal(scripts.length, 1);
  assert.equal(all(root, (node) => node.tagName === "img").length, 0);
  const attributes = new Set(
    all(root, (node) => (node.attrs?.length ?? 0) > 0).flatMap((node) =>
      node.attrs!.map((attr) => attr.name)
    ),
  );
  assert.deepEqual(
    [...attributes].sort(),
    ["charset", "class", "content", "id", "lang", "name"],
  );
  // Self-contained: nothing fetched from another origin, no stylesheet or
  // script file, and it refreshes itself.
  const benign = renderStatusPage(snapshot([]));
  assert.doesNotMatch(benign, /\b(?:src|href)=|@import|url\(|https?:/);
  assert.match(html, /fetch\(location\.href/);
  assert.match(
    html,
    /<noscript><meta http-equiv="refresh" content="2"><\/noscript>/,
  );
  assert.equal(
    escapeHtml(`<a href="x">'&'</a>`),
    "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;",
  );
});

Deno.test("renderStatusPage() caps the session rows, biggest backlogs first, and says how many more there are", () => {
  const sessions: StatusSession[] = Array.from({ length: 30 }, (_, index) => ({
    realm: `/u${index % 3}/r`,
    connection: index,
    session: 1,
    userId: `u${index % 3}`,
    state: "live",
    pendingBytes: index * 10,
  }));
  const html = renderStatusPage(snapshot(sessions), {
    maxSessionRows: 5,
    refreshSeconds: 7,
  });
  const root = parse(html) as unknown as Node;
  const shown = rows(root, "session-table");
  assert.equal(shown.length, 5);
  assert.deepEqual(shown.map((row) => row[2]), ["29", "28", "27", "26", "25"]);
  assert.match(textOf(root), /… and 25 more sessions with smaller backlogs/);
  assert.match(html, /content="7"/);
  assert.match(html, /const everyMs = 7000;/);
  const empty = parse(renderStatusPage(snapshot([]))) as unknown as Node;
  assert.deepEqual(rows(empty, "session-table"), [["No session is bound"]]);
  assert.deepEqual(rows(empty, "realm-table"), [["No realm has a session"]]);
});

Deno.test("formatBytes() uses decimal units", () => {
  assert.deepEqual(
    [0, 999, 1000, 1500, 99_999, 1_000_000, 2.5e9, 7e12, 9e15].map(formatBytes),
    [
      "0 B",
      "999 B",
      "1.0 kB",
      "1.5 kB",
      "100 kB",
      "1.0 MB",
      "2.5 GB",
      "7.0 TB",
      "9000 TB",
    ],
  );
});

Deno.test("ThroughputMeter averages rates over its window from cumulative totals", () => {
  const meter = new ThroughputMeter(10_000);
  const totals = (n: number) => ({
    bytesIn: n * 100,
    bytesOut: n * 1000,
    messagesIn: n,
    messagesOut: n * 2,
    changesets: n / 2,
  });
  assert.deepEqual(meter.sample(0, totals(0)), {
    bytesIn: 0,
    bytesOut: 0,
    messagesIn: 0,
    messagesOut: 0,
    changesets: 0,
  });
  assert.deepEqual(meter.sample(2_000, totals(10)), {
    bytesIn: 500,
    bytesOut: 5000,
    messagesIn: 5,
    messagesOut: 10,
    changesets: 2.5,
  });
  // After a long idle spell the window forgets the busy start.
  meter.sample(20_000, totals(10));
  assert.equal(meter.sample(30_000, totals(10)).bytesIn, 0);
  assert.equal(meter.sample(31_000, totals(20)).messagesIn, 10 / 11);
  assert.throws(() => meter.sample(1, totals(0)), RangeError);
});
