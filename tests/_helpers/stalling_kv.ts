/**
 * A `Deno.Kv` wrapper that stalls the server the way a stuck storage backend
 * would, while its sockets (and PONGs) stay alive: `stall("commit")` holds
 * every atomic commit, `stall("get", match)` every `get` of a matching key,
 * until `release()`. Unlike `tests/server/_gated_kv.ts` (which holds the
 * next call only), work the server retries or repeats meanwhile is held
 * too, so the stall lasts exactly as long as the test says.
 */

/** Calls that can be stalled. */
export type StalledCall = "commit" | "get";

/** A stall: `reached` resolves once a call was held; `release()` ends it. */
export interface Stall {
  reached: Promise<void>;
  /** Calls held so far. */
  readonly held: number;
  release(): void;
}

interface ActiveStall {
  kind: StalledCall;
  match: (key: Deno.KvKey) => boolean;
  reached: PromiseWithResolvers<void>;
  gate: PromiseWithResolvers<void>;
  held: number;
}

/** See the file comment. */
export class StallingKv {
  /** The wrapped store, to pass to `serveSync`. */
  readonly kv: Deno.Kv;
  #stalls = new Set<ActiveStall>();

  /** @param inner The real store (the test owns and closes it). */
  constructor(inner: Deno.Kv) {
    this.kv = new Proxy(inner, {
      get: (target, property) => {
        if (property === "atomic") {
          return () => this.#atomic(target.atomic());
        }
        if (property === "get") {
          return async (key: Deno.KvKey, options?: object) => {
            await this.#pass("get", key);
            return await target.get(key, options);
          };
        }
        const value = Reflect.get(target, property);
        return typeof value === "function" ? value.bind(target) : value;
      },
    });
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

  /** Ends every stall (for `finally`). */
  releaseAll(): void {
    for (const active of this.#stalls) active.gate.resolve();
    this.#stalls.clear();
  }

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
          return async () => {
            await this.#pass("commit", null);
            return await inner.commit();
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
}
