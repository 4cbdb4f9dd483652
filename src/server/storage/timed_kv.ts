/**
 * A `Deno.Kv` seen through a timer: every `get`, `getMany` and atomic
 * `commit` the server makes is observed in `tether_kv_operation_seconds`.
 */

import type { KvOperation } from "../server_metrics.ts";
import type { ServerKv } from "./kv_store.ts";

/** Where {@linkcode timeKv} reports each operation's duration in seconds. */
export type KvObserver = (op: KvOperation, seconds: number) => void;

/**
 * Returns `kv` with its reads and commits timed. Every other member is the
 * store's own, bound to it (Deno.Kv keeps its handle in a private field, so
 * methods must run on the real object). `list` is not timed: its pages are
 * fetched lazily while the caller iterates, and timing the iteration would
 * count the caller's own work.
 */
export function timeKv(kv: ServerKv, observe: KvObserver): ServerKv {
  const timed = <T>(op: KvOperation, run: () => Promise<T>): Promise<T> => {
    const started = performance.now();
    const result = run();
    const done = () => observe(op, (performance.now() - started) / 1000);
    result.then(done, done);
    return result;
  };
  const bound = new Map<PropertyKey, unknown>();
  return new Proxy(kv, {
    get(target, property) {
      switch (property) {
        case "get":
          return (
            key: Deno.KvKey,
            options?: { consistency?: Deno.KvConsistencyLevel },
          ) => timed("get", () => target.get(key, options));
        case "getMany":
          return (
            keys: Deno.KvKey[],
            options?: { consistency?: Deno.KvConsistencyLevel },
          ) => timed("get_many", () => target.getMany(keys, options));
        case "atomic":
          return () => new TimedAtomic(target.atomic(), timed);
      }
      const value = Reflect.get(target, property, target);
      if (typeof value !== "function") return value;
      let method = bound.get(property);
      if (method === undefined) {
        method = value.bind(target);
        bound.set(property, method);
      }
      return method;
    },
  });
}

/**
 * An atomic operation whose `commit` is timed. A class forwarding each
 * member, not a Proxy: every upload's commit builds one, and each check or
 * set went through a trap and a fresh closure. The operation is not
 * changed in place, as a store passed in may wrap it in its own way.
 */
class TimedAtomic implements Deno.AtomicOperation {
  #inner: Deno.AtomicOperation;
  #timed: <T>(op: KvOperation, run: () => Promise<T>) => Promise<T>;

  constructor(
    inner: Deno.AtomicOperation,
    timed: <T>(op: KvOperation, run: () => Promise<T>) => Promise<T>,
  ) {
    this.#inner = inner;
    this.#timed = timed;
  }

  check(...checks: Deno.AtomicCheck[]): this {
    this.#inner.check(...checks);
    return this;
  }

  mutate(...mutations: Deno.KvMutation[]): this {
    this.#inner.mutate(...mutations);
    return this;
  }

  sum(key: Deno.KvKey, n: bigint): this {
    this.#inner.sum(key, n);
    return this;
  }

  min(key: Deno.KvKey, n: bigint): this {
    this.#inner.min(key, n);
    return this;
  }

  max(key: Deno.KvKey, n: bigint): this {
    this.#inner.max(key, n);
    return this;
  }

  set(
    key: Deno.KvKey,
    value: unknown,
    options?: { expireIn?: number },
  ): this {
    this.#inner.set(key, value, options);
    return this;
  }

  delete(key: Deno.KvKey): this {
    this.#inner.delete(key);
    return this;
  }

  enqueue(
    value: unknown,
    options?: {
      delay?: number;
      keysIfUndelivered?: Deno.KvKey[];
      backoffSchedule?: number[];
    },
  ): this {
    this.#inner.enqueue(value, options);
    return this;
  }

  commit(): Promise<Deno.KvCommitResult | Deno.KvCommitError> {
    const inner = this.#inner;
    return this.#timed("commit", () => inner.commit());
  }
}
