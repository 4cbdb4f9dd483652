/**
 * A `Deno.Kv` seen through a timer: every `get`, `getMany` and atomic
 * `commit` the server makes is observed in `tether_kv_operation_seconds`.
 */

import type { KvOperation } from "../server_metrics.ts";

/** Where {@linkcode timeKv} reports each operation's duration in seconds. */
export type KvObserver = (op: KvOperation, seconds: number) => void;

/**
 * Returns `kv` with its reads and commits timed. Every other member is the
 * store's own, bound to it (Deno.Kv keeps its handle in a private field, so
 * methods must run on the real object). `list` is not timed: its pages are
 * fetched lazily while the caller iterates, and timing the iteration would
 * count the caller's own work.
 */
export function timeKv(kv: Deno.Kv, observe: KvObserver): Deno.Kv {
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
          return () => {
            const operation = target.atomic();
            // check/set/… return the operation itself, so an own `commit`
            // on it makes the chain's final commit() the timed one. No
            // Proxy: a commit per upload went through one for every call.
            const commit = operation.commit.bind(operation);
            operation.commit = () => timed("commit", commit);
            return operation;
          };
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
