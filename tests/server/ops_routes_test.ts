import assert from "node:assert/strict";
import { Prng, testSeed } from "../_helpers/prng.ts";
import { TestKv } from "../_helpers/test_kv.ts";
import { startTestServer } from "../_helpers/test_server.ts";

Deno.test("GET /health answers 503 with the store's error while every KV read fails, and 200 again once it answers", async () => {
  await using inner = await Deno.openKv(":memory:");
  const store = new TestKv(inner, {
    flaky: { random: new Prng(testSeed()), probability: 0 },
  });
  await using server = await startTestServer({ kv: store.kv });
  store.probability = 1;
  const failing = await fetch(`${server.url}/health`);
  assert.equal(failing.status, 503);
  const body = await failing.json();
  assert.equal(body.status, "unavailable");
  assert.equal(body.error.code, "store_unavailable");
  assert.equal(typeof body.error.message, "string");
  assert.ok(
    (store.failures["get"] ?? 0) >= 1,
    "the health check read the store",
  );
  store.probability = 0;
  const healthy = await fetch(`${server.url}/health`);
  assert.equal(healthy.status, 200);
  assert.deepEqual(await healthy.json(), { status: "ok" });
});

Deno.test("GET /health reads the store even when it returns nothing: a store that throws on get is unavailable", async () => {
  await using inner = await Deno.openKv(":memory:");
  let broken = false;
  const kv = new Proxy(inner, {
    get(target, property) {
      if (property === "get" && broken) {
        return () => Promise.reject(new Error("disk I/O error"));
      }
      const value = Reflect.get(target, property);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  await using server = await startTestServer({ kv });
  broken = true;
  const response = await fetch(`${server.url}/health`);
  assert.equal(response.status, 503);
  assert.deepEqual(await response.json(), {
    status: "unavailable",
    error: {
      code: "store_unavailable",
      message: "Cannot read the store: disk I/O error",
    },
  });
});
