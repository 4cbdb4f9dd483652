// This module is browser compatible.

// An abort signal that follows other signals for one scope and lets go of them when the scope ends.

/** A signal that follows its sources until {@linkcode AbortLink.dispose}. */
export interface AbortLink {
  /**
   * Aborts with the reason of the first source that aborts, or at once with
   * the reason of the first source already aborted. Never aborts once the
   * link is disposed.
   */
  readonly signal: AbortSignal;
  /**
   * Removes the listeners the link holds on its sources, so nothing of the
   * scope stays reachable from them; safe to call more than once.
   */
  dispose(): void;
}

/**
 * Links a new signal to `sources` (absent ones are skipped) for one scope:
 * a request, a fetch, a commit. Dispose it in `finally`.
 *
 * Why not `AbortSignal.any`: a signal it returns is held by every source for
 * as long as anything listens to it (runtimes must keep it alive while it can
 * still fire), and otherwise it is only let go of by the garbage collector;
 * linking to a long-lived signal (the server's lifetime) once per request
 * then leaves work for the collector, or, when some callee never removes its
 * listener, a leak for the source's whole life. A link holds one listener on
 * each source and removes it on dispose or on the first abort, so the source
 * ends up exactly as it was (docs/PERFORMANCE.md "Linked signals").
 */
export function linkAbort(
  sources: readonly (AbortSignal | undefined)[],
): AbortLink {
  const controller = new AbortController();
  const present = sources.filter((source) => source !== undefined);
  const aborted = present.find((source) => source.aborted);
  if (aborted !== undefined) {
    controller.abort(aborted.reason);
    return { signal: controller.signal, dispose: () => {} };
  }
  let linked = true;
  const dispose = () => {
    if (!linked) return;
    linked = false;
    for (const source of present) {
      source.removeEventListener("abort", onSourceAbort);
    }
  };
  // One listener for every source: the first abort wins, and the link lets
  // go of all its sources before its own listeners run.
  const onSourceAbort = (event: Event) => {
    dispose();
    controller.abort((event.currentTarget as AbortSignal).reason);
  };
  for (const source of present) {
    source.addEventListener("abort", onSourceAbort, { once: true });
  }
  return { signal: controller.signal, dispose };
}
