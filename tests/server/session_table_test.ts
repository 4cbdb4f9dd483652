import assert from "node:assert/strict";
import type { Session } from "../../src/server/session.ts";
import { SessionTable } from "../../src/server/session_table.ts";

// The table only stores sessions; it never calls them.
function fakeSession(id: number): Session {
  return { id } as unknown as Session;
}

function noErrors(sessionId: number, error: unknown): never {
  throw new Error(`unexpected error in session ${sessionId}`, { cause: error });
}

Deno.test("SessionTable: binding, bound and unbinding ids are held; ended and released ones are not", () => {
  const table = new SessionTable(noErrors);
  const one = table.bind(1);
  const two = table.bind(2);
  const three = table.bind(3);
  assert.equal(table.held, 3);
  assert.equal(one.state, "binding");
  assert.equal(table.isBound(1), true);

  table.bound(one, fakeSession(1));
  assert.equal(one.state, "bound");
  table.unbinding(two);
  assert.equal(table.isHeld(2), true);
  assert.equal(table.isBound(2), false);
  assert.equal(table.held, 3);

  table.ended(three);
  assert.equal(table.held, 2);
  assert.equal(table.isHeld(3), false);
  assert.equal(table.get(3)?.state, "ended");

  table.released(three);
  assert.equal(table.get(3), undefined);
  assert.deepEqual(table.sessions().map((session) => session.id), [1]);
});

Deno.test("SessionTable: a BIND that completes while unbinding keeps the unbinding state for its queued UNBIND", () => {
  const table = new SessionTable(noErrors);
  const record = table.bind(7);
  table.unbinding(record);
  table.bound(record, fakeSession(7));
  assert.equal(record.state, "unbinding");
  assert.equal(table.held, 1);
  assert.equal(table.sessions().length, 1);
});

Deno.test("SessionTable: a refused id with no record becomes ended, so late messages for it are told apart from unknown ids", () => {
  const table = new SessionTable(noErrors);
  table.ended(5);
  assert.equal(table.get(5)?.state, "ended");
  assert.equal(table.held, 0);
});

Deno.test("SessionTable: a released id keeps its queue until idle, so a new BIND waits behind the old binding's messages", async () => {
  const table = new SessionTable(noErrors);
  const order: string[] = [];
  const record = table.bind(1);
  table.bound(record, fakeSession(1));
  const commit = Promise.withResolvers<void>();
  table.enqueue(record, async () => {
    await commit.promise;
    order.push("old upload");
  });
  table.detach(record);
  table.released(record);
  assert.equal(table.isHeld(1), false);
  assert.equal(table.get(1), record, "kept while its queue runs");

  const again = table.bind(1);
  assert.equal(again, record);
  assert.equal(again.state, "binding");
  const bound = table.enqueue(again, () => {
    order.push("new bind");
    return Promise.resolve();
  });
  commit.resolve();
  await bound;
  assert.deepEqual(order, ["old upload", "new bind"]);

  table.released(again);
  assert.equal(table.get(1), undefined, "forgotten once idle");
});

Deno.test("SessionTable: a step that throws is reported with its session id; later steps still run", async () => {
  const reported: [number, unknown][] = [];
  const table = new SessionTable((sessionId, error) =>
    reported.push([sessionId, error])
  );
  const record = table.bind(4);
  const failure = new Error("handler crashed");
  table.enqueue(record, () => Promise.reject(failure));
  let ran = false;
  await table.enqueue(record, () => {
    ran = true;
    return Promise.resolve();
  });
  assert.deepEqual(reported, [[4, failure]]);
  assert.equal(ran, true);
});

Deno.test("SessionTable: past 1024 ended ids the oldest is forgotten", () => {
  const table = new SessionTable(noErrors);
  for (let id = 1; id <= 1025; id++) table.ended(id);
  assert.equal(table.get(1), undefined);
  assert.equal(table.get(2)?.state, "ended");
  assert.equal(table.get(1025)?.state, "ended");
  // Ending an id again makes it the newest: id 2 outlives id 3 now.
  table.ended(2);
  table.ended(1026);
  assert.equal(table.get(3), undefined);
  assert.equal(table.get(2)?.state, "ended");
});
