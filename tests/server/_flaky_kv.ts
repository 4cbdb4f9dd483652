/**
 * A `Deno.Kv` whose calls fail now and then the way a local file held by
 * another handle, or a busy KV Connect endpoint, does: `get`, `getMany`,
 * `list` (on its first read), `watch`, and atomic commits throw
 * `TypeError("database is locked")` with the given probability, drawn from a
 * seeded generator. `failures` counts the errors thrown.
 */
import type { Prng } from "../_helpers/prng.ts";

/** See the file comment. */
export class FlakyKv {
  /** The wrapped store, to pass to `serveSync`. */
  readonly kv: Deno.Kv;
  /** Errors thrown so far, by call. */
  readonly failures: Record<string, number> = {};
  /** Probability that a call fails; 0 turns the flakiness off. */
  probability: number;
  #random: Prng;

  /**
   * @param inner The real store (the test owns and closes it).
   * @param random Decides which calls fail.
   * @param probability Probability that a call fails.
   */
  constructor(inner: Deno.Kv, random: Prng, probability: number) {
    this.#random = random;
    this.probability = probability;
    this.kv = new Proxy(inner, {
      get: (target, property) => {
        const value = Reflect.get(target, property);
        if (typeof value !== "function") return value;
        switch (property) {
          case "get":
          case "getMany":
            return (...args: unknown[]) =>
              this.#fails(property)
                ? Promise.reject(this.#error())
                : value.apply(target, args);
          case "watch":
            return (...args: unknown[]) => {
              if (this.#fails("watch")) throw this.#error();
              return value.apply(target, args);
            };
          case "list":
            return (...args: unknown[]) =>
              this.#list(value.apply(target, args));
          case "atomic":
            return () => this.#atomic(target.atomic());
          default:
            return value.bind(target);
        }
      },
    });
  }

  #fails(call: string): boolean {
    if (this.probability === 0 || this.#random.next() >= this.probability) {
      return false;
    }
    this.failures[call] = (this.failures[call] ?? 0) + 1;
    return true;
  }

  #error(): TypeError {
    return new TypeError("database is locked");
  }

  #list(iterator: Deno.KvListIterator<unknown>): Deno.KvListIterator<unknown> {
    const fails = () => this.#fails("list");
    const error = () => this.#error();
    const wrapped = (async function* () {
      if (fails()) throw error();
      yield* iterator;
    })();
    Object.defineProperty(wrapped, "cursor", { get: () => iterator.cursor });
    return wrapped as unknown as Deno.KvListIterator<unknown>;
  }

  #atomic(operation: Deno.AtomicOperation): Deno.AtomicOperation {
    const wrapper: Deno.AtomicOperation = new Proxy(operation, {
      get: (inner, name) => {
        if (name === "commit") {
          return () =>
            this.#fails("commit")
              ? Promise.reject(this.#error())
              : inner.commit();
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
}
