// This module is browser compatible.

/**
 * Runs a function once in a microtask however often it is asked for before
 * then: what a burst of calls in one turn wants done once, after the turn.
 */
export class MicrotaskOnce {
  #run: () => void;
  #scheduled = false;

  /** @param run What to run. */
  constructor(run: () => void) {
    this.#run = run;
  }

  /** Runs `run` in a microtask, unless it is already scheduled. */
  schedule(): void {
    if (this.#scheduled) return;
    this.#scheduled = true;
    queueMicrotask(this.#fire);
  }

  #fire = (): void => {
    this.#scheduled = false;
    this.#run();
  };
}
