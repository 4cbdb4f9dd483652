// This module is browser compatible.

/**
 * One session's inbound work (its BIND, the server's messages) run one task
 * after the other, counting the tasks not yet finished so that the session
 * can handle a message at once when nothing is ahead of it.
 */
export class InboundQueue {
  #tail: Promise<void> = Promise.resolve();
  #pending = 0;
  #onError: (error: unknown) => void;
  #onAnswerHandled: () => void;

  /**
   * @param onError Told what a task threw (the queue goes on).
   * @param onAnswerHandled Told when a task pushed as an answer finished.
   */
  constructor(onError: (error: unknown) => void, onAnswerHandled: () => void) {
    this.#onError = onError;
    this.#onAnswerHandled = onAnswerHandled;
  }

  /** Whether every task pushed so far has finished. */
  get idle(): boolean {
    return this.#pending === 0;
  }

  /**
   * Runs `task` once every task pushed before it has finished.
   *
   * @param answer Whether it handles a server message (then
   *   `onAnswerHandled` runs after it, even when it threw).
   */
  push(task: () => Promise<void>, answer: boolean): void {
    this.#pending++;
    this.#tail = this.#tail
      .then(task)
      .catch(this.#onError)
      .then(answer ? this.#answerDone : this.#done);
  }

  // One function each rather than a closure per task.
  #done = (): void => {
    this.#pending--;
  };

  #answerDone = (): void => {
    this.#pending--;
    this.#onAnswerHandled();
  };
}
