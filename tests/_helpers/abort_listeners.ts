/**
 * Counts the abort listeners registered on a signal, so a test can check
 * that a scope linked to a long-lived signal leaves nothing on it. Imports
 * nothing from `src/`.
 *
 * @module
 */

/**
 * Starts counting the abort listeners registered on `signal` through its own
 * add/removeEventListener (a listener added twice counts once, as the
 * platform dedupes it). A `once` listener that fires is not seen leaving,
 * so a count of zero after an abort means it was removed explicitly.
 *
 * @returns The number registered now; `added` is how many adds were seen.
 */
export function countAbortListeners(
  signal: AbortSignal,
): { (): number; readonly added: number } {
  const registered = new Set<unknown>();
  const count = Object.assign(() => registered.size, { added: 0 });
  const add = signal.addEventListener.bind(signal);
  const remove = signal.removeEventListener.bind(signal);
  signal.addEventListener = ((...args: Parameters<typeof add>) => {
    if (args[0] === "abort") {
      registered.add(args[1]);
      count.added++;
    }
    return add(...args);
  }) as typeof signal.addEventListener;
  signal.removeEventListener = ((...args: Parameters<typeof remove>) => {
    if (args[0] === "abort") registered.delete(args[1]);
    return remove(...args);
  }) as typeof signal.removeEventListener;
  return count;
}
