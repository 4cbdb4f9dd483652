// The in-memory store behind `kv: ":memory:"` (src/server/storage/memory_kv.ts)
// against Deno KV itself: the same random operations on both give the same
// entries, orders, check results and errors; plus what Deno KV cannot be
// compared on (fair reads, close, watch).
import assert from "node:assert/strict";
import { MemoryKv } from "../../../src/server/storage/memory_kv.ts";
import type { ServerKv } from "../../../src/server/storage/kv_store.ts";
import { Prng } from "../../_helpers/prng.ts";

const PARTS: Deno.KvKeyPart[] = [
  "",
  "a",
  "a\u0000",
  "ab",
  "b",
  "é",
  "z",
  "\u{1F600}",
  "\uFFFD",
  0,
  -0,
  1,
  -1,
  1.5,
  2 ** 53,
  -(2 ** 60),
  Infinity,
  -Infinity,
  NaN,
  0n,
  1n,
  -1n,
  65536n,
  -65536n,
  2n ** 80n,
  -(2n ** 80n),
  true,
  false,
  new Uint8Array([]),
  new Uint8Array([0]),
  new Uint8Array([0, 0]),
  new Uint8Array([1]),
  new Uint8Array([255]),
];

function randomKey(next: () => number): Deno.KvKey {
  const length = 1 + Math.floor(next() * 3);
  return Array.from(
    { length },
    () => PARTS[Math.floor(next() * PARTS.length)]!,
  );
}

function randomValue(next: () => number): unknown {
  switch (Math.floor(next() * 5)) {
    case 0:
      return Math.floor(next() * 100);
    case 1:
      return { text: "v".repeat(Math.floor(next() * 10)), at: new Date(0) };
    case 2:
      return new Uint8Array([1, 2, Math.floor(next() * 256)]);
    case 3:
      return {
        list: [next() < 0.5, -0, null, "s", new Uint8Array([7])],
        nested: { n: Math.floor(next() * 10), missing: undefined },
      };
    default:
      return new Deno.KvU64(BigInt(Math.floor(next() * 1000)));
  }
}

/** What a listing returns, without versionstamps (each store has its own). */
async function listed(
  kv: ServerKv,
  selector: Deno.KvListSelector,
  options: Deno.KvListOptions,
): Promise<unknown> {
  try {
    const entries = [];
    const iterator = kv.list(selector, options);
    for await (const entry of iterator) {
      entries.push([entry.key, entry.value]);
    }
    return { entries, exhausted: iterator.cursor === "" };
  } catch (error) {
    return { error: (error as Error).constructor.name };
  }
}

async function outcome(run: () => Promise<unknown>): Promise<unknown> {
  try {
    return await run();
  } catch (error) {
    // The kind, not the message: Deno's wording is not the contract.
    return { error: (error as Error).constructor.name };
  }
}

Deno.test("MemoryKv gives what Deno KV gives for the same random operations: entries, key order, listings, checks and errors", async () => {
  await using real = await Deno.openKv(":memory:");
  const memory = new MemoryKv();
  try {
    const stores: ServerKv[] = [real, memory];
    for (let seed = 1; seed <= 4; seed++) {
      const random = new Prng(seed);
      const next = () => random.next();
      // The versionstamp each store last gave each key, for checks.
      const stamps = [new Map<string, string>(), new Map<string, string>()];
      for (let step = 0; step < 300; step++) {
        const key = randomKey(next);
        const other = randomKey(next);
        const name = Deno.inspect(key);
        const choice = next();
        if (choice < 0.45) {
          const value = randomValue(next);
          const fresh = next() < 0.5;
          const results = await Promise.all(
            stores.map((kv, i) =>
              outcome(async () => {
                const operation = kv.atomic();
                operation.check({
                  key,
                  versionstamp: fresh ? null : stamps[i]!.get(name) ?? null,
                });
                const result = await operation.set(key, value).delete(other)
                  .commit();
                if (result.ok) {
                  stamps[i]!.set(name, result.versionstamp);
                  stamps[i]!.delete(Deno.inspect(other));
                }
                return result.ok;
              })
            ),
          );
          assert.deepEqual(results[1], results[0], `step ${step}: set ${name}`);
        } else if (choice < 0.55) {
          const n = BigInt(Math.floor(next() * 50));
          const kind = (["sum", "min", "max"] as const)[
            Math.floor(next() * 3)
          ]!;
          const results = await Promise.all(
            stores.map((kv, i) =>
              outcome(async () => {
                const result = await kv.atomic()[kind](key, n).commit();
                if (result.ok) stamps[i]!.set(name, result.versionstamp);
                return result.ok;
              })
            ),
          );
          assert.deepEqual(results[1], results[0], `step ${step}: ${kind}`);
        } else if (choice < 0.7) {
          const results = await Promise.all(
            stores.map((kv) =>
              outcome(async () =>
                (await kv.getMany([key, other])).map((entry) => [
                  entry.key,
                  entry.value,
                  entry.versionstamp === null,
                ])
              )
            ),
          );
          assert.deepEqual(results[1], results[0], `step ${step}: get ${name}`);
        } else {
          const selectors: Deno.KvListSelector[] = [
            { prefix: key.slice(0, 1) },
            { prefix: [] },
            { start: key, end: other },
            { prefix: key.slice(0, 1), start: key },
            { prefix: key.slice(0, 1), end: key },
          ];
          const selector = selectors[Math.floor(next() * selectors.length)]!;
          const options: Deno.KvListOptions = {
            reverse: next() < 0.5,
            batchSize: 1 + Math.floor(next() * 7),
          };
          if (next() < 0.5) options.limit = 1 + Math.floor(next() * 20);
          const results = await Promise.all(
            stores.map((kv) => listed(kv, selector, options)),
          );
          assert.deepEqual(
            results[1],
            results[0],
            `step ${step}: list ${Deno.inspect(selector)} ${
              Deno.inspect(options)
            }`,
          );
        }
      }
    }
    // Everything, in both stores' order.
    assert.deepEqual(
      await listed(memory, { prefix: [] }, {}),
      await listed(real, { prefix: [] }, {}),
    );
  } finally {
    memory.close();
  }
});

Deno.test("MemoryKv pages a listing with cursors as Deno KV does, forwards and in reverse", async () => {
  await using real = await Deno.openKv(":memory:");
  const memory = new MemoryKv();
  try {
    for (const kv of [real, memory] as ServerKv[]) {
      const operation = kv.atomic();
      for (let i = 0; i < 25; i++) operation.set(["page", i], i);
      operation.set(["page"], "own key, outside its prefix");
      assert.equal((await operation.commit()).ok, true);
    }
    for (const reverse of [false, true]) {
      const pages: number[][][] = [];
      for (const kv of [real, memory] as ServerKv[]) {
        const seen: number[][] = [];
        let cursor: string | undefined;
        for (let round = 0; round < 10; round++) {
          const iterator = kv.list<number>({ prefix: ["page"] }, {
            limit: 7,
            reverse,
            ...(cursor === undefined ? {} : { cursor }),
          });
          const page: number[] = [];
          for await (const entry of iterator) page.push(entry.value);
          seen.push(page);
          if (iterator.cursor === "") break;
          cursor = iterator.cursor;
        }
        pages.push(seen);
      }
      assert.deepEqual(pages[1], pages[0], reverse ? "reverse" : "forwards");
      assert.equal(pages[1]!.flat().length, 25);
    }
  } finally {
    memory.close();
  }
});

Deno.test("MemoryKv keeps Deno KV's limits: key and value size, checks, mutations, getMany ranges", async () => {
  await using real = await Deno.openKv(":memory:");
  const memory = new MemoryKv();
  try {
    const attempts: [string, (kv: ServerKv) => Promise<unknown>][] = [
      ["long key", (kv) => kv.atomic().set(["k".repeat(3000)], 1).commit()],
      [
        "large bytes",
        (kv) => kv.atomic().set(["v"], new Uint8Array(70_000)).commit(),
      ],
      [
        "large string",
        (kv) => kv.atomic().set(["v"], "x".repeat(70_000)).commit(),
      ],
      [
        "large object",
        (kv) =>
          kv.atomic().set(["v"], { bytes: new Uint8Array(70_000) }).commit(),
      ],
      ["101 checks", (kv) => {
        const operation = kv.atomic();
        for (let i = 0; i < 101; i++) {
          operation.check({ key: ["c", i], versionstamp: null });
        }
        return operation.commit();
      }],
      ["1001 mutations", (kv) => {
        const operation = kv.atomic();
        for (let i = 0; i < 1001; i++) operation.set(["m", i], i);
        return operation.commit();
      }],
      [
        "11 keys",
        (kv) => kv.getMany(Array.from({ length: 11 }, (_, i) => ["g", i])),
      ],
      ["object part", (kv) => kv.get([{} as unknown as Deno.KvKeyPart])],
      ["sum on a number", async (kv) => {
        await kv.atomic().set(["n"], 1).commit();
        return kv.atomic().sum(["n"], 1n).commit();
      }],
    ];
    for (const [name, attempt] of attempts) {
      const errors = [];
      for (const kv of [real, memory] as ServerKv[]) {
        errors.push(await attempt(kv).then(() => null, (error) => error));
      }
      assert.ok(errors[0] instanceof TypeError, `${name}: Deno KV refuses it`);
      assert.ok(errors[1] instanceof TypeError, `${name}: ${errors[1]}`);
    }
    // The failed sum changed nothing.
    assert.equal((await memory.get(["n"])).value, 1);
  } finally {
    memory.close();
  }
});

Deno.test("MemoryKv's reads and commits let the event loop turn when they go on without a pause", async () => {
  const kv = new MemoryKv();
  try {
    await kv.atomic().set(["k"], 1).commit();
    let fired = false;
    const timer = setTimeout(() => fired = true, 0);
    // Reads that resolved at once would starve the timer: this loop would
    // reach its bound with `fired` false.
    let reads = 0;
    while (!fired && reads < 5_000_000) {
      await kv.get(["k"]);
      reads++;
    }
    clearTimeout(timer);
    assert.ok(fired, `the timer never ran in ${reads} reads`);
    // The listing path too.
    fired = false;
    const again = setTimeout(() => fired = true, 0);
    const operation = kv.atomic();
    for (let i = 0; i < 500; i++) operation.set(["l", i], i);
    await operation.commit();
    let pages = 0;
    while (!fired && pages < 2_000_000) {
      for await (const _ of kv.list({ prefix: ["l"] }, { batchSize: 500 })) {
        break;
      }
      pages++;
    }
    clearTimeout(again);
    assert.ok(fired, `the timer never ran in ${pages} listings`);
    // And commits.
    fired = false;
    const third = setTimeout(() => fired = true, 0);
    let commits = 0;
    while (!fired && commits < 2_000_000) {
      await kv.atomic().set(["c"], commits).commit();
      commits++;
    }
    clearTimeout(third);
    assert.ok(fired, `the timer never ran in ${commits} commits`);
  } finally {
    kv.close();
  }
});

Deno.test("MemoryKv lets a WebSocket message through a chain of operations that never pauses", async () => {
  // What the turns are for: a session's socket is read while another
  // session's long chain of reads goes on (a timer firing is only a proxy).
  const kv = new MemoryKv();
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    (request) => {
      const { socket, response } = Deno.upgradeWebSocket(request);
      socket.onmessage = (event) => socket.send(event.data);
      return response;
    },
  );
  const socket = new WebSocket(`ws://127.0.0.1:${server.addr.port}`);
  try {
    await new Promise((resolve) => socket.onopen = resolve);
    await kv.atomic().set(["k"], 1).commit();
    let echoed = false;
    socket.onmessage = () => echoed = true;
    socket.send("ping");
    // Bounded by reads, not time: about 2 s of reads on a slow machine,
    // where the echo takes a few slices of 8 ms.
    let reads = 0;
    while (!echoed && reads < 3_000_000) {
      await kv.get(["k"]);
      reads++;
    }
    assert.ok(echoed, `the echo never arrived in ${reads} reads`);
  } finally {
    kv.close();
    const closed = new Promise((resolve) => socket.onclose = resolve);
    socket.close();
    await closed;
    await server.shutdown();
  }
});

Deno.test("MemoryKv copies values in and out, and a closed store refuses calls and ends its watches", async () => {
  const kv = new MemoryKv();
  const value = { list: [1, 2], bytes: new Uint8Array([1]) };
  await kv.atomic().set(["v"], value).commit();
  value.list.push(3);
  value.bytes[0] = 9;
  const first = await kv.get<typeof value>(["v"]);
  assert.deepEqual(first.value, { list: [1, 2], bytes: new Uint8Array([1]) });
  first.value!.list.push(4);
  assert.deepEqual((await kv.get<typeof value>(["v"])).value!.list, [1, 2]);

  const reader = kv.watch([["w"], ["v"]]).getReader();
  const initial = await reader.read();
  assert.deepEqual(initial.value?.map((entry) => entry.value), [null, {
    list: [1, 2],
    bytes: new Uint8Array([1]),
  }]);
  const pending = reader.read();
  await kv.atomic().set(["unwatched"], 1).commit();
  await kv.atomic().set(["w"], "now").commit();
  const changed = await pending;
  assert.deepEqual(changed.value?.map((entry) => entry.value)[0], "now");
  const last = reader.read();
  kv.close();
  assert.deepEqual(await last, { done: true, value: undefined });
  await assert.rejects(kv.get(["v"]), Deno.errors.BadResource);
  await assert.rejects(
    kv.atomic().set(["v"], 1).commit(),
    Deno.errors.BadResource,
  );
});
