// Conformance: the App `logger` option — undefined by default (nothing is
// printed), and when given it receives lifecycle, error and retry records,
// one per change rather than one per retry tick (LESSONS row 30).

import assert from "node:assert/strict";
import type { LogRecord } from "../../mod.ts";
import { TcpProxy } from "../_helpers/tcp_proxy.ts";
import {
  fastApp,
  openClient,
  proxiedClient,
  recordConnectionStates,
} from "./_helpers.ts";
import { bounded } from "../_helpers/waits.ts";
import { startTestServer } from "../_helpers/test_server.ts";

Deno.test("App logger: by default the client prints nothing, also through connection losses and retries", async () => {
  await using server = await startTestServer();
  await using proxy = new TcpProxy(server.addr);
  const printed: unknown[][] = [];
  const methods = ["log", "info", "warn", "error", "debug"] as const;
  const saved = methods.map((m) => console[m]);
  for (const m of methods) {
    console[m] = (...args: unknown[]) => printed.push(args);
  }
  try {
    await using client = await openClient(fastApp(proxy.url));
    const { realm } = client;
    await using states = recordConnectionStates(realm.syncSession);
    proxy.mode = "refuse";
    proxy.dropAll();
    await states.until((s) => (s.retry?.attempt ?? 0) >= 3);
    proxy.mode = "forward";
    await states.until((s) => s.current === "connected");
    await realm.write((tx) => tx.put("T", "x", {}));
    await realm.syncSession.waitForUpload({ signal: bounded() });
  } finally {
    methods.forEach((m, i) => console[m] = saved[i]!);
  }
  assert.deepEqual(printed, []);
});

Deno.test("App logger receives lifecycle, error and retry records, one per state change, never a flood", async () => {
  const records: LogRecord[] = [];
  await using client = await proxiedClient({
    app: {
      reconnect: { minDelayMs: 1, maxDelayMs: 2 },
      logger: (record) => records.push(record),
    },
  });
  const { proxy, realm } = client;
  assert.ok(records.length > 0, "lifecycle records");
  for (const record of records) {
    assert.equal(typeof record.message, "string");
    assert.equal(typeof record.event, "string");
    assert.ok(["debug", "info", "warn", "error"].includes(record.level));
  }
  await using states = recordConnectionStates(realm.syncSession);
  const before = records.length;
  proxy.mode = "refuse";
  proxy.dropAll();
  await states.until((s) => (s.retry?.attempt ?? 0) >= 20);
  proxy.mode = "forward";
  await states.until((s) => s.current === "connected");
  const during = records.slice(before);
  assert.ok(
    during.some((r) => r.error !== undefined),
    "the error that caused the loss is logged",
  );
  // One record per change (of the connection, or of this session), never
  // a flood: at most one warning per failed attempt.
  const losses = states.items.filter((s) => s.current === "disconnected");
  const warnings = during.filter((r) =>
    r.level === "warn" || r.level === "error"
  );
  assert.ok(warnings.length >= 1);
  assert.ok(
    warnings.length <= losses.length + 2,
    `${warnings.length} warnings for ${losses.length} losses`,
  );
  assert.ok(
    during.length <= 2 * states.items.length + 5,
    `${during.length} records for ${states.items.length} state changes`,
  );
});
