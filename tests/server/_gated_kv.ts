/**
 * A `Deno.Kv` wrapper for tests that need the server stopped at an exact
 * point: `hold("commit")` makes the next atomic commit wait until the test
 * lets it go (so a client can leave mid-upload or mid-BIND), `hold("list")`
 * does the same for the next `list` (mid-bootstrap). It also counts the
 * `watch` streams open, so a test can see that a realm's watch was
 * cancelled without waiting for shutdown.
 */

/** Calls that can be held. */
export type GatedCall = "commit" | "list";

/** A held call: `reached` resolves when the server makes it; `release()` lets it run. */
export interface Hold {
  reached: Promise<void>;
  release(): void;
}

/** See the file comment. */
export class GatedKv {
  /** The wrapped store, to pass to `serveSync`. */
  readonly kv: Deno.Kv;
  /** `watch` streams opened and not yet cancelled or ended. */
  openWatches = 0;
  #holds: Record<GatedCall, Hold & { gate: Promise<void> } | null> = {
    commit: null,
    list: null,
  };
  #released = new Set<() => void>();

  /** @param inner The real store (the test owns and closes it). */
  constructor(inner: Deno.Kv) {
    this.kv = new Proxy(inner, {
      get: (target, property) => {
        if (property === "atomic") {
          return () => this.#atomic(target.atomic());
        }
        if (property === "list") {
          return (
            selector: Deno.KvListSelector,
            options?: Deno.KvListOptions,
          ) => this.#list(target, selector, options);
        }
        if (property === "watch") {
          return (keys: Deno.KvKey[], options?: { raw?: boolean }) =>
            this.#watch(target, keys, options);
        }
        const value = Reflect.get(target, property);
        return typeof value === "function" ? value.bind(target) : value;
      },
    });
  }

  /** Holds the next call of `kind` until `release()`. */
  hold(kind: GatedCall): Hold {
    const reached = Promise.withResolvers<void>();
    const gate = Promise.withResolvers<void>();
    const hold = {
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

  /** Lets every held call go (for `finally`). */
  releaseAll(): void {
    for (const release of this.#released) release();
    this.#released.clear();
  }

  #take(kind: GatedCall): Promise<void> | null {
    const hold = this.#holds[kind] as
      | (Hold & { gate: Promise<void>; arrive(): void })
      | null;
    if (hold === null) return null;
    this.#holds[kind] = null;
    hold.arrive();
    return hold.gate;
  }

  #atomic(operation: Deno.AtomicOperation): Deno.AtomicOperation {
    const wrapper: Deno.AtomicOperation = new Proxy(operation, {
      get: (inner, name) => {
        if (name === "commit") {
          return async () => {
            const gate = this.#take("commit");
            if (gate !== null) await gate;
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

  #list(
    target: Deno.Kv,
    selector: Deno.KvListSelector,
    options?: Deno.KvListOptions,
  ): Deno.KvListIterator<unknown> {
    const gate = this.#take("list");
    const iterator = target.list(selector, options);
    if (gate === null) return iterator;
    const held = (async function* () {
      await gate;
      yield* iterator;
    })();
    // Callers read the cursor after iterating.
    Object.defineProperty(held, "cursor", { get: () => iterator.cursor });
    return held as unknown as Deno.KvListIterator<unknown>;
  }

  #watch(
    target: Deno.Kv,
    keys: Deno.KvKey[],
    options?: { raw?: boolean },
  ): ReadableStream<Deno.KvEntryMaybe<unknown>[]> {
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
