// The soak engine's own sequencing (tests/soak/_engine.ts): the queue of
// operations on the server process and the restore fault, whose restore
// must be over before the checks read the server, and quiescence, which
// must outlast the client resets that restore causes.

import assert from "node:assert/strict";
import {
  type FaultContext,
  FAULTS,
  ServerQueue,
  settleSessions,
  type SettlingSession,
} from "./_engine.ts";
import { Prng } from "../_helpers/prng.ts";

Deno.test("ServerQueue.idle() waits for an operation queued while an earlier one runs, and only then resolves", async () => {
  const queue = new ServerQueue();
  const held = Promise.withResolvers<void>();
  const order: string[] = [];
  const first = queue.run(async () => {
    await held.promise;
    order.push("first");
  });
  // Queued from a reaction to the first one's end: after `idle` began.
  const second = first.then(() =>
    queue.run(async () => {
      await Promise.resolve();
      order.push("second");
    })
  );
  const idle = queue.idle().then(() => order.push("idle"));
  held.resolve();
  await idle;
  assert.deepEqual(order, ["first", "second", "idle"]);
  await second;
});

Deno.test("ServerQueue: a failed operation fails those queued after it and idle(), and they do not run", async () => {
  const queue = new ServerQueue();
  const failure = new Error("the server did not start");
  let ran = false;
  const failed = queue.run(() => Promise.reject(failure));
  const after = queue.run(() => Promise.resolve(void (ran = true)));
  await assert.rejects(failed, (error) => error === failure);
  await assert.rejects(after, (error) => error === failure);
  await assert.rejects(queue.idle(), (error) => error === failure);
  assert.equal(ran, false);
});

Deno.test("restore fault: healed while its copy still waits behind another server operation, the restore is queued at once, behind the copy, not once the copy is taken", async () => {
  const queue = new ServerQueue();
  // An earlier operation (another restore, say) still running.
  const earlier = Promise.withResolvers<void>();
  const order: string[] = [];
  void queue.run(async () => {
    await earlier.promise;
    order.push("earlier");
  });
  const context: FaultContext = {
    random: new Prng(7),
    client: undefined as unknown as FaultContext["client"],
    killServer: () => Promise.reject(new Error("not in this test")),
    backupServer: () => ({
      taken: queue.run(() => Promise.resolve(void order.push("copy"))),
      restore: () =>
        queue.run(async () => {
          await Promise.resolve();
          order.push("restore");
        }),
    }),
    poisonNextWrite: () => {},
  };
  const restoreFault = FAULTS.find((fault) => fault.kind === "restore")!;
  const { fault } = restoreFault.start(context);
  // The fault's time is up before its copy was taken.
  const healed = fault.heal();
  // Queued at once: what is queued right after healing includes it (and
  // so does what quiescence waits for).
  const queued = queue.queued().then(() => order.push("queued"));
  earlier.resolve();
  await queued;
  assert.deepEqual(order, ["earlier", "copy", "restore", "queued"]);
  await healed;
  // Healing again (at quiescence) restores nothing more.
  await fault.heal();
  await queue.idle();
  assert.deepEqual(order, ["earlier", "copy", "restore", "queued"]);
});

/**
 * A session over a shared pretend server: an upload wait stores what it
 * has pending, a download wait takes what the server holds — after a
 * client reset first, when one is due (the session meets a restored
 * server), which leaves what it recovered pending.
 */
class FakeSession implements SettlingSession {
  readonly held = new Set<string>();
  #pending: string[] = [];
  #resets = 0;
  #resetsDue: number;

  constructor(
    readonly name: string,
    readonly server: Set<string>,
    resetsDue = 0,
  ) {
    this.#resetsDue = resetsDue;
  }

  waitForUpload(): Promise<void> {
    for (const change of this.#pending) this.server.add(change);
    this.#pending = [];
    return Promise.resolve();
  }

  waitForDownload(): Promise<void> {
    if (this.#resetsDue > 0) {
      this.#resetsDue--;
      this.#resets++;
      this.#pending.push(`${this.name}: recovered ${this.#resets}`);
    }
    for (const change of this.server) this.held.add(change);
    return Promise.resolve();
  }

  stats(): ReturnType<SettlingSession["stats"]> {
    return { clientResets: this.#resets } as unknown as ReturnType<
      SettlingSession["stats"]
    >;
  }
}

Deno.test("settleSessions: a client that resets during its download wait has what it recovered stored and downloaded by every client before it resolves", async () => {
  const server = new Set<string>();
  const sessions = [
    new FakeSession("c0", server, 1),
    new FakeSession("c1", server),
  ];
  const rounds = await settleSessions(sessions, new AbortController().signal);
  assert.equal(rounds, 2);
  assert.deepEqual([...server], ["c0: recovered 1"]);
  for (const session of sessions) {
    assert.deepEqual([...session.held], ["c0: recovered 1"], session.name);
  }
});

Deno.test("settleSessions: without resets one round; clients that keep resetting make it throw after its bound", async () => {
  const quiet = new Set<string>();
  assert.equal(
    await settleSessions(
      [new FakeSession("c0", quiet), new FakeSession("c1", quiet)],
      new AbortController().signal,
    ),
    1,
  );
  const server = new Set<string>();
  await assert.rejects(
    settleSessions(
      [new FakeSession("c0", server, 100)],
      new AbortController().signal,
    ),
    /clients still reset after 5 rounds/,
  );
});
