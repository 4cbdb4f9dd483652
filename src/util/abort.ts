// This module is browser compatible.

// Abort-signal helpers: one listener per wait, removed on every path.

/**
 * A `TypeError` naming `what` when `signal` is given but is not an
 * `AbortSignal` (a caller's mistake that would otherwise surface as
 * "addEventListener is not a function", or not at all), else undefined.
 */
export function badSignal(
  signal: unknown,
  what: string,
): TypeError | undefined {
  if (signal === undefined || signal instanceof AbortSignal) return undefined;
  return new TypeError(
    `${what}: signal must be an AbortSignal, got ${
      signal === null ? "null" : typeof signal
    }`,
  );
}

/**
 * Registers `onAbort` to run once when `signal` aborts and returns a function
 * that unregisters it. An absent signal registers nothing.
 *
 * Does not run `onAbort` for a signal that is already aborted: callers check
 * `signal.aborted` first (the recipe every waiting API follows).
 */
export function onAbort(
  signal: AbortSignal | undefined,
  onAbort: (reason: unknown) => void,
): () => void {
  if (signal === undefined) return () => {};
  let registered = true;
  const unregister = () => {
    if (!registered) return;
    registered = false;
    signal.removeEventListener("abort", listener);
  };
  // Unregisters on every path (the abort too), so a caller counting
  // listeners sees exactly one add and one remove per wait.
  const listener = () => {
    unregister();
    onAbort(signal.reason);
  };
  signal.addEventListener("abort", listener, { once: true });
  return unregister;
}

/**
 * Waits for `promise`, or rejects with `signal.reason` (unchanged) as soon as
 * `signal` aborts, whichever comes first; the abort listener is removed on
 * every path. An already-aborted signal rejects at once.
 *
 * The caller remains responsible for undoing whatever `promise` stands for
 * (removing a waiter from its queue); use {@linkcode onAbort} when that needs
 * to happen on abort.
 */
export function abortable<T>(
  promise: Promise<T>,
  signal: AbortSignal | undefined,
): Promise<T> {
  if (signal === undefined) return promise;
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const remove = onAbort(signal, reject);
    promise.then(
      (value) => {
        remove();
        resolve(value);
      },
      (reason) => {
        remove();
        reject(reason);
      },
    );
  });
}
