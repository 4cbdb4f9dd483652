import assert from "node:assert/strict";
import {
  type Transaction,
  TransactionWrites,
} from "../../src/client/transaction.ts";

function run(
  fn: (tx: Transaction) => void,
  existing: string[] = [],
) {
  const writes = new TransactionWrites((type, id) =>
    existing.includes(`${type}/${id}`)
  );
  fn(writes.transaction);
  return writes.finish().map(({ op, type, id, fields }) => ({
    op,
    type,
    id,
    fields,
  }));
}

Deno.test("Transaction folds put then update into one put with merged fields", () => {
  assert.deepEqual(
    run((tx) => {
      tx.put("Task", "a", { title: "x", done: false });
      tx.update("Task", "a", { done: true });
    }),
    [{ op: "put", type: "Task", id: "a", fields: { title: "x", done: true } }],
  );
});

Deno.test("Transaction folds anything then delete into a delete", () => {
  assert.deepEqual(
    run((tx) => {
      tx.put("Task", "a", { title: "x" });
      tx.update("Task", "a", { done: true });
      tx.delete("Task", "a");
    }),
    [{ op: "delete", type: "Task", id: "a", fields: null }],
  );
});

Deno.test("Transaction folds delete then put into a put", () => {
  assert.deepEqual(
    run((tx) => {
      tx.delete("Task", "a");
      tx.put("Task", "a", { title: "again" });
    }, ["Task/a"]),
    [{ op: "put", type: "Task", id: "a", fields: { title: "again" } }],
  );
});

Deno.test("Transaction folds update then update into one update", () => {
  assert.deepEqual(
    run((tx) => {
      tx.update("Task", "a", { x: 1, y: 1 });
      tx.update("Task", "a", { y: 2, z: 3 });
    }, ["Task/a"]),
    [{ op: "update", type: "Task", id: "a", fields: { x: 1, y: 2, z: 3 } }],
  );
});

Deno.test("Transaction folds update then put into the put (it replaces the object)", () => {
  assert.deepEqual(
    run((tx) => {
      tx.update("Task", "a", { x: 1 });
      tx.put("Task", "a", { y: 2 });
    }, ["Task/a"]),
    [{ op: "put", type: "Task", id: "a", fields: { y: 2 } }],
  );
});

Deno.test("Transaction.update() of an object that does not exist throws TypeError", () => {
  assert.throws(
    () => run((tx) => tx.update("Task", "missing", { x: 1 })),
    {
      name: "TypeError",
      message: 'Cannot update: Task "missing" does not exist',
    },
  );
  assert.throws(
    () =>
      run((tx) => {
        tx.delete("Task", "a");
        tx.update("Task", "a", { x: 1 });
      }, ["Task/a"]),
    TypeError,
  );
});

Deno.test("Transaction keeps objects apart by type and id, one instruction each", () => {
  const instructions = run((tx) => {
    tx.put("ab", "c", { n: 1 });
    tx.put("a", "bc", { n: 2 });
    tx.put("Task", "a", { n: 3 });
    tx.put("Task", "a", { n: 4 });
  });
  assert.deepEqual(instructions.map((i) => [i.type, i.id, i.fields]), [
    ["ab", "c", { n: 1 }],
    ["a", "bc", { n: 2 }],
    ["Task", "a", { n: 4 }],
  ]);
});

Deno.test("Transaction validates values and copies them on write", () => {
  const date = new Date(5);
  const bytes = new Uint8Array([1, 2]);
  const nested = { list: [1, 2] };
  const instructions = run((tx) => {
    tx.put("T", "a", { date, bytes, nested });
  });
  date.setTime(99);
  bytes[0] = 9;
  nested.list.push(3);
  const fields = instructions[0]!.fields!;
  assert.equal((fields.date as Date).getTime(), 5);
  assert.deepEqual(fields.bytes, new Uint8Array([1, 2]));
  assert.deepEqual(fields.nested, { list: [1, 2] });
  for (const bad of [undefined, () => 1, Symbol("s"), new Map(), [1, , 3]]) {
    assert.throws(
      () => run((tx) => tx.put("T", "a", { bad } as never)),
      TypeError,
    );
  }
  assert.throws(() => run((tx) => tx.put("", "a", {})), TypeError);
  assert.throws(() => run((tx) => tx.put("T", "", {})), TypeError);
  assert.throws(() => run((tx) => tx.put("T", "a", [] as never)), TypeError);
});

Deno.test("Transaction refuses writes after it ended", () => {
  let kept: Transaction | undefined;
  run((tx) => {
    kept = tx;
  });
  assert.throws(() => kept!.put("T", "a", {}), {
    name: "TypeError",
    message:
      "Cannot put: the transaction has ended (use tx only inside the write callback)",
  });
});
