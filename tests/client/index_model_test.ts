// Field indexes against a scan of the store, through random local, remote
// and bootstrap-sized transactions (docs/PERFORMANCE.md "Index maintenance
// in bulk").
import assert from "node:assert/strict";
import { LocalRealm } from "../../src/client/local_realm.ts";
import { MemoryStorage } from "../../src/client/storage/memory.ts";
import type { Instruction } from "../../src/model/changeset.ts";
import { compileQuery } from "../../src/model/query.ts";
import type { Fields, Value } from "../../src/model/value.ts";
import type { DownloadMessage } from "../../src/protocol/messages.ts";
import { download, serverChangeset } from "../_helpers/changesets.ts";
import { Prng, testSeed } from "../_helpers/prng.ts";

// Every kind of the value order, with values a hash would confuse (0 and
// -0, 1 and 1n and "1") or that compare by content (bytes, dates,
// composites).
const VALUES: Value[] = [
  null,
  false,
  true,
  NaN,
  -Infinity,
  -1.5,
  -0,
  0,
  1,
  2,
  Infinity,
  -3n,
  1n,
  "",
  "1",
  "a",
  "b",
  new Uint8Array([]),
  new Uint8Array([1]),
  new Uint8Array([1, 2]),
  new Date(NaN),
  new Date(5),
  new Date(7),
  [],
  [1, "a"],
  [2],
  {},
  { a: 1 },
  { a: 1, b: [2] },
];

/** Range bounds per kind: each pair is (lower, upper) of one kind. */
const BOUNDS: [Value, Value][] = [
  [null, null],
  [false, true],
  [-1.5, 1],
  [-0, 0],
  [NaN, 2],
  [-3n, 1n],
  ["", "a"],
  [new Uint8Array([1]), new Uint8Array([1, 2])],
  [new Date(NaN), new Date(5)],
  [[], [1, "a"]],
  [{}, { a: 1 }],
];

/** A DOWNLOAD whose changesets end at `serverVersion`, one version each. */
function remote(
  serverVersion: number,
  changesets: { time: number; instructions: Instruction[] }[],
): DownloadMessage {
  return download(
    serverVersion,
    changesets.map(({ time, instructions }, i) =>
      serverChangeset(
        serverVersion - changesets.length + 1 + i,
        time,
        instructions,
      )
    ),
  );
}

Deno.test("Indexes, randomized: indexed queries (eq, in, every range operator, each kind) give what a scan gives, and examine only matches, through local, remote and bootstrap-sized transactions", async () => {
  const seed = testSeed();
  const prng = new Prng(seed);
  const realm = await LocalRealm.open(new MemoryStorage(), () => 1_000);
  const engine = realm.queries;
  engine.ensureIndexes({ T: ["v"] });
  const pick = () => structuredClone(prng.pick(VALUES));
  // Fields of a new or replaced object: `v` absent now and then, `w` (the
  // second index, added later) and `x` (never indexed) too.
  const some = (): Fields => {
    const fields: Fields = {};
    if (prng.int(8) !== 0) fields.v = pick();
    if (prng.int(4) !== 0) fields.w = pick();
    if (prng.int(2) === 0) fields.x = prng.int(3);
    return fields;
  };
  const idOf = (pool: number) => `o${prng.int(pool)}`;
  let serverVersion = 0;
  let time = 10_000;
  const check = (label: string) => {
    for (const field of engine.indexedFields("T")) {
      const wheres: unknown[] = [];
      for (const value of VALUES) wheres.push({ [field]: { eq: value } });
      wheres.push({ [field]: { in: [pick(), pick(), pick()] } });
      for (const [lower, upper] of BOUNDS) {
        wheres.push(
          { [field]: { gte: lower, lte: upper } },
          { [field]: { gt: lower, lt: upper } },
          { [field]: { gt: lower } },
          { [field]: { lte: upper } },
        );
      }
      // The other conditions check each candidate, not the index.
      wheres.push({ [field]: { gte: -1.5 }, x: 1 });
      for (const where of wheres) {
        const indexed = compileQuery({ where });
        // Under $or no index applies: a scan of the type.
        const scanned = compileQuery({ where: { $or: [where] } });
        const before = engine.examined;
        const got = engine.query("T", indexed).map((entry) => entry.id);
        const examined = engine.examined - before;
        const want = engine.query("T", scanned).map((entry) => entry.id);
        const text = `seed ${seed}, ${label}: ${
          Deno.inspect(where, { compact: true, breakLength: Infinity })
        }`;
        assert.deepEqual(got, want, text);
        assert.equal(engine.count("T", indexed), want.length, text);
        // One condition: every candidate matches (no scan, no stale id).
        // Not with `x` (candidates are those of the range), nor with `in`
        // holding null: the null candidates include objects without the
        // field, which `eq: null` matches and `in` does not.
        const condition = (where as Record<string, Record<string, unknown>>)[
          field
        ]!;
        if (
          !Object.hasOwn(where as object, "x") &&
          !(Array.isArray(condition.in) && condition.in.includes(null))
        ) {
          assert.equal(examined, want.length, `${text}: examined`);
        }
      }
    }
  };
  for (let step = 0; step < 60; step++) {
    const roll = prng.int(10);
    if (step === 20) {
      // An index added over objects present.
      engine.ensureIndexes({ T: ["w"] });
    }
    if (roll < 2) {
      // A bootstrap-sized DOWNLOAD: many objects, most of them new; two
      // changesets, the second touching some objects of the first again.
      const first: Instruction[] = [];
      const second: Instruction[] = [];
      const base = 1_000 + step * 1_000;
      const count = 100 + prng.int(400);
      for (let i = 0; i < count; i++) {
        first.push({
          op: "put",
          type: "T",
          id: prng.int(10) === 0 ? idOf(200) : `b${base + i}`,
          fields: some(),
          stamp: null,
        });
      }
      const seen = new Set(first.map((i) => i.id));
      for (const id of [...seen].slice(0, 20)) {
        const op = prng.pick(["put", "update", "delete"] as const);
        second.push({
          op,
          type: "T",
          id,
          fields: op === "delete"
            ? null
            : op === "put"
            ? some()
            : { v: pick() },
          stamp: null,
        });
      }
      serverVersion += 2;
      time += 10;
      await realm.integrate(remote(serverVersion, [
        { time: time - 5, instructions: dedupe(first) },
        { time, instructions: second },
      ]));
    } else if (roll < 6) {
      // A remote transaction of a few objects.
      const instructions: Instruction[] = [];
      for (let i = 0; i < 1 + prng.int(4); i++) {
        const op = prng.pick(["put", "update", "update", "delete"] as const);
        instructions.push({
          op,
          type: "T",
          id: idOf(200),
          fields: op === "delete"
            ? null
            : op === "put"
            ? some()
            : prng.int(2) === 0
            ? { v: pick() }
            : { w: pick(), x: prng.int(3) },
          stamp: null,
        });
      }
      serverVersion++;
      time += 10;
      await realm.integrate(
        remote(serverVersion, [{ time, instructions: dedupe(instructions) }]),
      );
    } else {
      // A local transaction: puts, updates that move an object to another
      // value (of any kind), deletes.
      const ops: [string, number][] = [];
      for (let i = 0; i < 1 + prng.int(4); i++) {
        ops.push([idOf(200), prng.int(4)]);
      }
      await realm.write((tx) => {
        const gone = new Set<string>();
        for (const [id, op] of ops) {
          const exists = !gone.has(id) && realm.get("T", id) !== undefined;
          if (op === 0 || !exists) {
            tx.put("T", id, some());
            gone.delete(id);
          } else if (op === 1) {
            tx.delete("T", id);
            gone.add(id);
          } else {
            tx.update("T", id, { v: pick() });
          }
        }
      });
    }
    // Lookups after some transactions only: changes pile up between them.
    if (prng.int(3) === 0 || step === 59) check(`step ${step}`);
  }
  await realm.close();
});

/** Keeps the last instruction of each object (one per changeset). */
function dedupe(instructions: Instruction[]): Instruction[] {
  const last = new Map<string, Instruction>();
  for (const instruction of instructions) {
    last.delete(instruction.id);
    last.set(instruction.id, instruction);
  }
  return [...last.values()];
}
