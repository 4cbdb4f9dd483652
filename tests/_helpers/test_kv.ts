/**
 * A `Deno.Kv` wrapper that lets a test misbehave the server's storage in
 * the ways a real backend does, while the sockets (and PONGs) stay alive.
 *
 * - `hold(kind)` holds the **next** commit or `list` until the test lets it
 *   go, so a client can leave at an exact point (mid-upload, mid-BIND,
 *   mid-bootstrap).
 * - `stall(kind, match)` holds **every** commit, or every `get` of a key
 *   `match` accepts, until released: work the server retries or repeats
 *   meanwhile is held too, so the stall lasts exactly as long as the test
 *   says (a stuck backend).
 * - `flaky: { random, probability }` makes `get`, `getMany`, `list` (on its
 *   first read), `watch` and commits throw `TypeError("database is
 *   locked")` with that probability, drawn from a seeded generator, the way
 *   a local file held by another handle, or a busy KV Connect endpoint,
 *   does; `failures` counts the errors thrown.
 * - `openWatches` counts the `watch` streams open, so a test can see that a
 *   realm's watch was cancelled without waiting for shutdown.
 *
 * @module
 */
import type { Prng } from "./prng.ts";

/** Calls that `hold()` can hold (the next one only). */
export type HeldCall = "commit" | "list";

/** A held call: `reached` resolves when the server makes it; `release()` lets it run. */
export interface Hold {
  reached: Promise<void>;
  release(): void;
}

/** Calls that `stall()` can hold (every one until released). */
export type StalledCall = "commit" | "get";

/** A stall: `reached` resolves once a call was held; `release()` ends it. */
export interface Stall {
  reached: Promise<void>;
  /** Calls held so far. */
  readonly held: number;
  release(): void;
}

/** Random failures; see the file comment. */
export interface Flakiness {
  /** Decides which calls fail. */
  random: Prng;
  /** Probability that a call fails; 0 turns the flakiness off. */
  probability: number;
}

interface PendingHold extends Hold {
  gate: Promise<void>;
  arrive(): void;
}

interface ActiveStall {
  kind: StalledCall;
  match: (key: Deno.KvKey) => boolean;
  reached: PromiseWithResolvers<void>;
  gate: PromiseWithResolvers<void>;
  held: number;
}

/** See the file comment. */
export class TestKv {
  /** The wrapped store, to pass to `serveSync`. */
  readonly kv: Deno.Kv;
  /** `watch` streams opened and not yet cancelled or ended. */
  openWatches = 0;
  /** Errors thrown so far by `flaky` and `failNext`, by call. */
  readonly failures: Record<string, number> = {};
  #failNext = new Set<string>();
  /**
   * Probability that a call fails (with `flaky` given); 0 turns the
   * flakiness off.
   */
  probability: number;
  #random: Prng | undefined;
  #holds: Record<HeldCall, PendingHold | null> = { commit: null, list: null };
  #released = new Set<() => void>();
  #stalls = new Set<ActiveStall>();

  /**
   * @param inner The real store (the test owns and closes it).
   * @param options `flaky` makes calls fail at random.
   */
  constructor(inner: Deno.Kv, options: { flaky?: Flakiness } = {}) {
    this.#random = options.flaky?.random;
    this.probability = options.flaky?.probability ?? 0;
    this.kv = new Proxy(inner, {
      get: (target, property) => {
        switch (property) {
          case "atomic":
            return () => this.#atomic(target.atomic());
          case "get":
            return async (
              key: Deno.KvKey,
              options?: { consistency?: Deno.KvConsistencyLevel },
            ) => {
              if (this.#fails("get")) throw this.#error();
              if (this.#stalls.size > 0) await this.#pass("get", key);
              return await target.get(key, options);
            };
          case "getMany":
            return (...args: Parameters<Deno.Kv["getMany"]>) =>
              this.#fails("getMany")
                ? Promise.reject(this.#error())
                : target.getMany(...args);
          case "list":
            return (
              selector: Deno.KvListSelector,
              options?: Deno.KvListOptions,
            ) => this.#list(target, selector, options);
          case "watch":
            return (keys: Deno.KvKey[], options?: { raw?: boolean }) =>
              this.#watch(target, keys, options);
        }
        const value = Reflect.get(target, property);
        return typeof value === "function" ? value.bind(target) : value;
      },
    });
  }

  /** Holds the next call of `kind` until `release()`. */
  hold(kind: HeldCall): Hold {
    const reached = Promise.withResolvers<void>();
    const gate = Promise.withResolvers<void>();
    const hold: PendingHold = {
      reached: reached.promise,
      gate: gate.promise,
      release: () => {
        this.#released.delete(gate.resolve);
        gate.resolve();
      },
      arrive: () => reached.resolve(),
    };
    this.#released.add(gate.resolve);
    this.#holds[kind] = hold;
    return hold;
  }

  /** Holds every call of `kind` (of a key `match` accepts) until released. */
  stall(
    kind: StalledCall,
    match: (key: Deno.KvKey) => boolean = () => true,
  ): Stall {
    const active: ActiveStall = {
      kind,
      match,
      reached: Promise.withResolvers<void>(),
      gate: Promise.withResolvers<void>(),
      held: 0,
    };
    this.#stalls.add(active);
    return {
      reached: active.reached.promise,
      get held() {
        return active.held;
      },
      release: () => {
        this.#stalls.delete(active);
        active.gate.resolve();
      },
    };
  }

  /** Lets every held call go and ends every stall (for `finally`). */
  releaseAll(): void {
    for (const release of this.#released) release();
    this.#released.clear();
    for (const active of this.#stalls) active.gate.resolve();
    this.#stalls.clear();
  }

  /**
   * Makes the next `get`, `getMany`, `list` or `commit` (as `call` says)
   * fail as `flaky` would, whatever the draw: a test that counts on each
   * kind of call failing at least once does not depend on how many of them
   * its timing happened to make.
   */
  failNext(call: "get" | "getMany" | "list" | "commit"): void {
    this.#failNext.add(call);
  }

  #fails(call: string): boolean {
    if (this.#failNext.delete(call)) {
      this.failures[call] = (this.failures[call] ?? 0) + 1;
      return true;
    }
    if (
      this.#random === undefined || this.probability === 0 ||
      this.#random.next() >= this.probability
    ) {
      return false;
    }
    this.failures[call] = (this.failures[call] ?? 0) + 1;
    return true;
  }

  #error(): TypeError {
    return new TypeError("database is locked");
  }

  /** Takes the pending hold of `kind`, if any: its gate, now reached. */
  #take(kind: HeldCall): Promise<void> | null {
    const hold = this.#holds[kind];
    if (hold === null) return null;
    this.#holds[kind] = null;
    hold.arrive();
    return hold.gate;
  }

  /** Waits out every stall of `kind` that applies to `key` (null: any). */
  async #pass(kind: StalledCall, key: Deno.KvKey | null): Promise<void> {
    for (const active of [...this.#stalls]) {
      if (active.kind !== kind) continue;
      if (key !== null && !active.match(key)) continue;
      active.held++;
      active.reached.resolve();
      await active.gate.promise;
    }
  }

  #atomic(operation: Deno.AtomicOperation): Deno.AtomicOperation {
    const wrapper: Deno.AtomicOperation = new Proxy(operation, {
      get: (inner, name) => {
        if (name === "commit") {
          return () => {
            // Drawn at call time, as the seeded failure pattern assumes.
            if (this.#fails("commit")) return Promise.reject(this.#error());
            return this.#commit(inner);
          };
        }
        const value = Reflect.get(inner, name);
        if (typeof value !== "function") return value;
        return (...args: unknown[]) => {
          const result = value.apply(inner, args);
          return result === inner ? wrapper : result;
        };
      },
    });
    return wrapper;
  }

  async #commit(
    inner: Deno.AtomicOperation,
  ): Promise<Deno.KvCommitResult | Deno.KvCommitError> {
    const gate = this.#take("commit");
    if (gate !== null) await gate;
    if (this.#stalls.size > 0) await this.#pass("commit", null);
    return await inner.commit();
  }

  #list(
    target: Deno.Kv,
    selector: Deno.KvListSelector,
    options?: Deno.KvListOptions,
  ): Deno.KvListIterator<unknown> {
    const gate = this.#take("list");
    const iterator = target.list(selector, options);
    if (gate === null && this.#random === undefined) return iterator;
    const fails = () => this.#fails("list");
    const error = () => this.#error();
    const wrapped = (async function* () {
      if (gate !== null) await gate;
      if (fails()) throw error();
      yield* iterator;
    })();
    // Callers read the cursor after iterating.
    Object.defineProperty(wrapped, "cursor", { get: () => iterator.cursor });
    return wrapped as unknown as Deno.KvListIterator<unknown>;
  }

  #watch(
    target: Deno.Kv,
    keys: Deno.KvKey[],
    options?: { raw?: boolean },
  ): ReadableStream<Deno.KvEntryMaybe<unknown>[]> {
    if (this.#fails("watch")) throw this.#error();
    const reader = target.watch(keys, options).getReader();
    this.openWatches++;
    let open = true;
    const done = () => {
      if (open) this.openWatches--;
      open = false;
    };
    return new ReadableStream({
      async pull(controller) {
        const next = await reader.read();
        if (next.done) {
          done();
          controller.close();
        } else {
          controller.enqueue(next.value);
        }
      },
      async cancel(reason) {
        done();
        await reader.cancel(reason);
      },
    });
  }
}
