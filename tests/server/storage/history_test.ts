import assert from "node:assert/strict";
import {
  type CommittedState,
  type GroupSettled,
  integrateChangesets,
  integrateGroup,
  readHead,
  readHistory,
  UnknownIdentityError,
} from "../../../src/server/storage/history.ts";
import { allocateIdentity } from "../../../src/server/storage/identities.ts";
import {
  blobKey,
  historyKey,
  identityKey,
} from "../../../src/server/storage/keys.ts";
import { PART_BYTES } from "../../../src/server/storage/chunks.ts";
import { put, update, upload } from "../../_helpers/changesets.ts";

const retry = () => ({ signal: AbortSignal.timeout(10_000) });

Deno.test("integrateChangesets() numbers changesets 1, 2, 3 and skips re-uploads", async () => {
  await using kv = await Deno.openKv(":memory:");
  const identity = await allocateIdentity(kv, "/r", retry());
  const first = await integrateChangesets(kv, "/r", identity, [
    upload(1, [put("T", "a", { n: 1 })]),
    upload(2, [update("T", "a", { n: 2 })]),
  ], retry());
  assert.deepEqual(first.integrated.map((item) => item.version), [1, 2]);
  assert.equal(first.lastIntegratedClientVersion, 2);
  const again = await integrateChangesets(kv, "/r", identity, [
    upload(2, [update("T", "a", { n: 2 })]),
    upload(3, [update("T", "a", { n: 3 })]),
  ], retry());
  assert.deepEqual(again.integrated.map((item) => item.clientVersion), [3]);
  assert.deepEqual(await readHead(kv, "/r", retry()), {
    version: 3,
    bytes: again.integrated[0]!.cumulativeBytes,
  });
  const read = await readHistory(kv, "/r", 1, 3, 1 << 20, retry());
  assert.deepEqual(read.items.map((item) => item.changeset.serverVersion), [
    1,
    2,
    3,
  ]);
  assert.deepEqual(read.items[2]!.changeset.instructions, [
    update("T", "a", { n: 3 }),
  ]);
});

Deno.test("integrateChangesets() refuses an identity the realm never issued", async () => {
  await using kv = await Deno.openKv(":memory:");
  const identity = await allocateIdentity(kv, "/r", retry());
  await assert.rejects(
    () => integrateChangesets(kv, "/other", identity, [upload(1, [])], retry()),
    UnknownIdentityError,
  );
  await assert.rejects(
    () =>
      integrateChangesets(kv, "/r", {
        id: identity.id,
        salt: identity.salt + 1,
      }, [
        upload(1, []),
      ], retry()),
    UnknownIdentityError,
  );
});

Deno.test("concurrent integrations on one KV never assign a version twice or lose a changeset", async () => {
  await using kv = await Deno.openKv(":memory:");
  const writers = await Promise.all(
    Array.from({ length: 6 }, () => allocateIdentity(kv, "/r", retry())),
  );
  assert.equal(new Set(writers.map((identity) => identity.id)).size, 6);
  await Promise.all(writers.map(async (identity, writer) => {
    for (let clientVersion = 1; clientVersion <= 15; clientVersion++) {
      await integrateChangesets(kv, "/r", identity, [
        upload(clientVersion, [put("T", `${writer}-${clientVersion}`, {})]),
      ], retry());
    }
  }));
  const head = await readHead(kv, "/r", retry());
  assert.equal(head.version, 90);
  const read = await readHistory(kv, "/r", 1, 90, 1 << 24, retry());
  assert.deepEqual(
    read.items.map((item) => item.version),
    Array.from({ length: 90 }, (_, index) => index + 1),
  );
  const ids = new Set(
    read.items.map((item) => item.changeset.instructions[0]!.id),
  );
  assert.equal(ids.size, 90);
  assert.equal(read.items.at(-1)!.cumulativeBytes, head.bytes);
});

Deno.test("integrateChangesets() with the state a process committed last: concurrent processes (each its own state) never assign a version twice or lose a changeset, and a stale state is read again", async () => {
  await using kv = await Deno.openKv(":memory:");
  const writers = await Promise.all(
    Array.from({ length: 6 }, () => allocateIdentity(kv, "/r", retry())),
  );
  // Three "processes", two writers each, every process with one state.
  const states: CommittedState[] = Array.from({ length: 3 }, () => ({
    head: null,
    identities: new Map(),
  }));
  await Promise.all(writers.map(async (identity, writer) => {
    for (let clientVersion = 1; clientVersion <= 15; clientVersion++) {
      const result = await integrateChangesets(
        kv,
        "/r",
        identity,
        [
          upload(clientVersion, [put("T", `${writer}-${clientVersion}`, {})]),
        ],
        retry(),
        states[writer % 3],
      );
      assert.equal(result.lastIntegratedClientVersion, clientVersion);
      assert.equal(result.integrated.length, 1);
    }
  }));
  const head = await readHead(kv, "/r", retry());
  assert.equal(head.version, 90);
  const read = await readHistory(kv, "/r", 1, 90, 1 << 24, retry());
  assert.deepEqual(
    read.items.map((item) => item.version),
    Array.from({ length: 90 }, (_, index) => index + 1),
  );
  assert.equal(
    new Set(read.items.map((item) => item.changeset.instructions[0]!.id))
      .size,
    90,
  );
  assert.equal(read.items.at(-1)!.cumulativeBytes, head.bytes);
  // A re-upload checked against a stale state is still only acknowledged.
  const stale: CommittedState = { head: null, identities: new Map() };
  const first = writers[0]!;
  await integrateChangesets(
    kv,
    "/r",
    first,
    [
      upload(16, [put("T", "x", {})]),
    ],
    retry(),
    stale,
  );
  await integrateChangesets(kv, "/r", first, [
    upload(17, [put("T", "y", {})]),
  ], retry());
  const again = await integrateChangesets(
    kv,
    "/r",
    first,
    [
      upload(17, [put("T", "y", {})]),
      upload(18, [put("T", "z", {})]),
    ],
    retry(),
    stale,
  );
  assert.deepEqual(again.integrated.map((item) => item.version), [93]);
  assert.equal(again.integrated[0]!.clientVersion, 18);
  assert.equal((await readHead(kv, "/r", retry())).version, 93);
});

Deno.test("changesets larger than a KV value, or than an atomic operation, are chunked and read back whole", async () => {
  await using kv = await Deno.openKv(":memory:");
  const identity = await allocateIdentity(kv, "/r", retry());
  const medium = new Uint8Array(200_000).map((_, index) => index % 251);
  const large = new Uint8Array(1_500_000).map((_, index) => index % 241);
  const result = await integrateChangesets(kv, "/r", identity, [
    upload(1, [put("File", "medium", { data: medium })]),
    upload(2, [put("File", "small", { data: "tiny" })]),
    upload(3, [put("File", "large", { data: large })]),
  ], retry());
  assert.deepEqual(result.integrated.map((item) => item.version), [1, 2, 3]);
  const entry = await kv.get<{
    changeset: { blob: string | null; parts: number; size: number };
  }>(historyKey("/r", 3));
  const stored = entry.value!.changeset;
  assert.ok(stored.blob !== null);
  // More parts than one atomic operation may write: staged first.
  assert.equal(stored.parts, Math.ceil(stored.size / PART_BYTES));
  assert.ok(stored.parts > 13);
  let parts = 0;
  for await (const _ of kv.list({ prefix: blobKey("/r", stored.blob) })) {
    parts++;
  }
  assert.equal(parts, stored.parts);
  const read = await readHistory(kv, "/r", 1, 3, 1 << 24, retry());
  assert.deepEqual(
    read.items.map((item) => item.changeset.instructions[0]!.fields),
    [
      { data: medium },
      { data: "tiny" },
      { data: large },
    ],
  );
});

Deno.test("readHistory() stops before the byte budget, reads a lone large entry, and reports a gap", async () => {
  await using kv = await Deno.openKv(":memory:");
  const identity = await allocateIdentity(kv, "/r", retry());
  await integrateChangesets(kv, "/r", identity, [
    upload(1, [put("T", "a", { text: "x".repeat(1000) })]),
    upload(2, [put("T", "b", { text: "x".repeat(1000) })]),
    upload(3, [put("T", "c", { text: "x".repeat(5000) })]),
  ], retry());
  const two = await readHistory(kv, "/r", 1, 3, 2100, retry());
  assert.deepEqual(two.items.map((item) => item.version), [1, 2]);
  const alone = await readHistory(kv, "/r", 3, 3, 100, retry());
  assert.deepEqual(alone.items.map((item) => item.version), [3]);
  await kv.delete(historyKey("/r", 1));
  assert.deepEqual(await readHistory(kv, "/r", 1, 3, 1 << 20, retry()), {
    items: [],
    gap: true,
  });
});

Deno.test("integrateGroup() commits several identities' uploads in one atomic operation, in order, each identity once; a changeset sent twice is stored once; an unknown identity fails alone", async () => {
  await using kv = await Deno.openKv(":memory:");
  const a = await allocateIdentity(kv, "/r", retry());
  const b = await allocateIdentity(kv, "/r", retry());
  const stranger = { id: b.id, salt: b.salt + 1 };
  const committed: CommittedState = { head: null, identities: new Map() };
  const reports: GroupSettled[] = [];
  const outcomes = await integrateGroup(
    kv,
    "/r",
    [
      { identity: a, changesets: [upload(1, [put("T", "a1", {})])] },
      { identity: b, changesets: [upload(1, [put("T", "b1", {})])] },
      { identity: stranger, changesets: [upload(7, [put("T", "x", {})])] },
      {
        identity: a,
        changesets: [
          upload(1, [put("T", "a1", {})]),
          upload(2, [put("T", "a2", {})]),
        ],
      },
    ],
    retry(),
    committed,
    (settled) => reports.push(settled),
  );
  assert.deepEqual(
    outcomes.map((outcome) =>
      outcome.ok
        ? [
          outcome.result.lastIntegratedClientVersion,
          outcome.result.integrated.map((item) => item.version),
        ]
        : outcome.error instanceof UnknownIdentityError
    ),
    [[1, [1]], [1, [2]], true, [2, [3]]],
  );
  // One commit settled every upload, in upload order.
  assert.deepEqual(
    reports.map((settled) => settled.map(({ index }) => index)),
    [[0, 1, 2, 3]],
  );
  const entries = await Promise.all(
    [1, 2, 3].map((version) => kv.get(historyKey("/r", version))),
  );
  assert.equal(new Set(entries.map((entry) => entry.versionstamp)).size, 1);
  assert.equal((await kv.get(historyKey("/r", 4))).value, null);
  assert.deepEqual(
    (await kv.get(identityKey("/r", a.id))).value,
    { salt: a.salt, lastClientVersion: 2 },
  );
  assert.deepEqual(
    (await kv.get(identityKey("/r", b.id))).value,
    { salt: b.salt, lastClientVersion: 1 },
  );
  assert.equal(committed.head?.value.version, 3);
  assert.equal(committed.identities.size, 2);
});

Deno.test("integrateGroup(): a group larger than one atomic operation commits in parts, each upload settled by the commit holding its last changeset; a part that fails acknowledges none of the uploads it held", async () => {
  await using inner = await Deno.openKv(":memory:");
  let commits = 0;
  let armed = false;
  // Once armed, the second commit fails for good (not a transient error).
  const kv = new Proxy(inner, {
    get(target, property) {
      if (property === "atomic") {
        return () => {
          const operation = target.atomic();
          const wrapper: Deno.AtomicOperation = new Proxy(operation, {
            get(op, name) {
              if (name === "commit") {
                return () =>
                  armed && ++commits === 2
                    ? Promise.reject(new Error("disk full"))
                    : op.commit();
              }
              const value = Reflect.get(op, name);
              if (typeof value !== "function") return value;
              return (...args: unknown[]) => {
                const result = value.apply(op, args);
                return result === op ? wrapper : result;
              };
            },
          });
          return wrapper;
        };
      }
      const value = Reflect.get(target, property);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  const writers = [];
  for (let index = 0; index < 3; index++) {
    writers.push(await allocateIdentity(kv, "/r", retry()));
  }
  armed = true;
  const many = (writer: number) =>
    Array.from(
      { length: 300 },
      (_, index) => upload(index + 1, [put("T", `${writer}-${index}`, {})]),
    );
  const reports: number[][] = [];
  const outcomes = await integrateGroup(
    kv,
    "/r",
    writers.map((identity, writer) => ({
      identity,
      changesets: many(writer),
    })),
    retry(),
    undefined,
    (settled) => reports.push(settled.map(({ index }) => index)),
  );
  assert.equal(commits, 2);
  assert.ok(outcomes[0]!.ok);
  assert.equal(outcomes[0]!.result.lastIntegratedClientVersion, 300);
  assert.deepEqual(
    outcomes[0]!.result.integrated.map((item) => item.version),
    Array.from({ length: 300 }, (_, index) => index + 1),
  );
  for (const outcome of outcomes.slice(1)) {
    assert.ok(!outcome.ok);
    assert.equal((outcome.error as Error).message, "disk full");
  }
  assert.deepEqual(reports, [[0], [1, 2]]);
  // The first part (all of writer 0, the start of writer 1) is stored; a
  // re-upload of writer 1 finds that start and stores only the rest.
  const head = await readHead(kv, "/r", retry());
  assert.equal(head.version, 500);
  const again = await integrateChangesets(
    kv,
    "/r",
    writers[1]!,
    many(1),
    retry(),
  );
  assert.deepEqual(
    again.integrated.map((item) => item.clientVersion),
    Array.from({ length: 100 }, (_, index) => index + 201),
  );
});

Deno.test("integrateGroup() checks at most 9 identities per atomic operation (10 checks with the head), so a group of 12 writers commits in two parts", async () => {
  await using kv = await Deno.openKv(":memory:");
  const writers = [];
  for (let index = 0; index < 12; index++) {
    writers.push(await allocateIdentity(kv, "/r", retry()));
  }
  const reports: number[][] = [];
  const outcomes = await integrateGroup(
    kv,
    "/r",
    writers.map((identity, writer) => ({
      identity,
      changesets: [upload(1, [put("T", `${writer}`, {})])],
    })),
    retry(),
    undefined,
    (settled) => reports.push(settled.map(({ index }) => index)),
  );
  assert.ok(outcomes.every((outcome) => outcome.ok));
  assert.deepEqual(reports, [
    [0, 1, 2, 3, 4, 5, 6, 7, 8],
    [9, 10, 11],
  ]);
  const stamps = await Promise.all(
    Array.from(
      { length: 12 },
      async (_, index) =>
        (await kv.get(historyKey("/r", index + 1))).versionstamp,
    ),
  );
  assert.equal(new Set(stamps.slice(0, 9)).size, 1);
  assert.equal(new Set(stamps.slice(9)).size, 1);
  assert.notEqual(stamps[0], stamps[9]);
});
