/**
 * A WebSocket subclass (the App's `WebSocket` seam) whose inbound frames the
 * test hands to the client one at a time: after `hold()`, every frame that
 * arrives waits in a queue until `releaseOne()` (or `releaseAll()`), so a
 * test decides exactly when the client sees each message — a slow link, or a
 * server whose answer never comes, on a clock the test drives.
 */

interface Queued {
  socket: WebSocket;
  data: unknown;
}

/** The seam and its controls; see the file comment. */
export interface PacedWebSocket {
  /** Pass as the App's `WebSocket` option. */
  WebSocket: typeof WebSocket;
  /** From now on, inbound frames wait for `releaseOne()`. */
  hold(): void;
  /** Frames waiting. */
  readonly queued: number;
  /** Resolves once a frame is waiting; rejects with the signal's reason. */
  next(signal: AbortSignal): Promise<void>;
  /** The oldest waiting frame's data, if any. */
  peek(): unknown;
  /** Delivers the oldest waiting frame (synchronously). */
  releaseOne(): void;
  /** Delivers every waiting frame and stops holding. */
  releaseAll(): void;
}

/** Creates a {@linkcode PacedWebSocket}. */
export function pacedWebSocket(): PacedWebSocket {
  let holding = false;
  const queue: Queued[] = [];
  const watchers = new Set<() => void>();
  const released = new WeakSet<Event>();
  class Paced extends WebSocket {
    constructor(
      url: string | URL,
      protocols?: ConstructorParameters<typeof WebSocket>[1],
    ) {
      super(url, protocols);
      // Registered before the client's own listener, so it runs first.
      this.addEventListener("message", (event) => {
        if (!holding || released.has(event)) return;
        event.stopImmediatePropagation();
        queue.push({ socket: this, data: event.data });
        for (const watcher of [...watchers]) watcher();
      });
    }
  }
  const releaseOne = () => {
    const item = queue.shift();
    if (item === undefined) throw new Error("No frame is waiting");
    const event = new MessageEvent("message", { data: item.data });
    released.add(event);
    item.socket.dispatchEvent(event);
  };
  return {
    WebSocket: Paced,
    hold() {
      holding = true;
    },
    get queued() {
      return queue.length;
    },
    next(signal) {
      if (queue.length > 0) return Promise.resolve();
      if (signal.aborted) return Promise.reject(signal.reason);
      return new Promise((resolve, reject) => {
        const watcher = () => {
          watchers.delete(watcher);
          signal.removeEventListener("abort", onAbort);
          resolve();
        };
        const onAbort = () => {
          watchers.delete(watcher);
          reject(signal.reason);
        };
        watchers.add(watcher);
        signal.addEventListener("abort", onAbort, { once: true });
      });
    },
    peek() {
      return queue[0]?.data;
    },
    releaseOne,
    releaseAll() {
      holding = false;
      while (queue.length > 0) releaseOne();
    },
  };
}
