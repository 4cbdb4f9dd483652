// This module is browser compatible.

/**
 * A queue that runs asynchronous tasks one at a time, in call order, each
 * returning its own result, and that refuses new tasks once closed: the
 * shape a store needs so a commit never overlaps a load and nothing runs
 * after the store released its file or database.
 *
 * A task that fails rejects its own promise only; the tasks after it run.
 */
export class ClosableQueue {
  #tail: Promise<unknown> = Promise.resolve();
  #closed = false;

  /** True once {@linkcode ClosableQueue.close} was called. */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Runs `task` after every task queued before it.
   *
   * @param what What the task does, for the error once closed
   *   ("Cannot `what`: the storage is closed").
   */
  run<T>(what: string, task: () => Promise<T>): Promise<T> {
    if (this.#closed) {
      return Promise.reject(
        new TypeError(`Cannot ${what}: the storage is closed`),
      );
    }
    const result = this.#tail.then(task);
    this.#tail = result.catch(() => {});
    return result;
  }

  /**
   * Refuses new tasks, then runs `last` once every queued task has finished.
   * Later calls wait for the same end without running `last` again.
   */
  close(last: () => void | Promise<void>): Promise<void> {
    if (this.#closed) return this.#tail.then(() => {});
    this.#closed = true;
    const done = this.#tail.then(last);
    this.#tail = done.catch(() => {});
    return done;
  }
}
