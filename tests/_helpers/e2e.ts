import { App, type AppOptions } from "../../src/client/app.ts";
import { Credentials } from "../../src/client/credentials.ts";
import type { LogRecord } from "../../src/client/log.ts";
import type { User } from "../../src/client/user.ts";
import {
  decompressFrame,
  isCompressedFrame,
} from "../../src/protocol/compression.ts";
import { decodeMessage } from "../../src/protocol/decode.ts";
import type { ServerMessage } from "../../src/protocol/messages.ts";

/** Options for client apps in end-to-end tests: small, fast timeouts. */
export function fastOptions(baseUrl: string): AppOptions {
  return {
    baseUrl,
    reconnect: { minDelayMs: 20, maxDelayMs: 200 },
    keepalive: { pingIntervalMs: 1_000, readTimeoutMs: 5_000 },
    connectTimeoutMs: 3_000,
    lingerMs: 100,
    progressIntervalMs: 0,
  };
}

/** An app with fast options and an anonymous user. */
export async function anonymousClient(
  baseUrl: string,
  options: Partial<AppOptions> = {},
): Promise<{ app: App; user: User; logs: LogRecord[] }> {
  const logs: LogRecord[] = [];
  const app = new App({
    ...fastOptions(baseUrl),
    logger: (record) => logs.push(record),
    ...options,
  });
  try {
    const user = await app.logIn(Credentials.anonymous());
    return { app, user, logs };
  } catch (error) {
    await app.close();
    throw error;
  }
}

/** A frame a {@linkcode RecordingWebSocket} saw. */
export interface SeenFrame {
  direction: "in" | "out";
  /** Bytes on the wire. */
  bytes: number;
  message: ServerMessage | ReturnType<typeof decodeMessage>;
}

/**
 * A WebSocket subclass (the App's `WebSocket` seam) that decodes and keeps
 * every frame in both directions, so tests can compute exact progress
 * figures from what really crossed the wire.
 */
export function recordingWebSocket(): {
  WebSocket: typeof WebSocket;
  frames: SeenFrame[];
  sockets: WebSocket[];
  /**
   * Resolves once `count` frames match `predicate` (counting those seen
   * already); rejects with the signal's reason.
   */
  waitFor(
    predicate: (frame: SeenFrame) => boolean,
    count: number,
    signal: AbortSignal,
  ): Promise<void>;
  /** Resolves once every compressed frame seen so far is recorded. */
  settled(): Promise<void>;
} {
  const frames: SeenFrame[] = [];
  const sockets: WebSocket[] = [];
  const watchers = new Set<() => void>();
  // Compressed frames are recorded once inflated; frames behind one wait,
  // so `frames` keeps the order they crossed the wire in.
  let pending: Promise<void> = Promise.resolve();
  let inflating = 0;
  const record = (frame: SeenFrame) => {
    frames.push(frame);
    for (const watcher of [...watchers]) watcher();
  };
  class RecordingWebSocket extends WebSocket {
    constructor(
      url: string | URL,
      protocols?: ConstructorParameters<typeof WebSocket>[1],
    ) {
      super(url, protocols);
      sockets.push(this);
      this.addEventListener("message", (event) => {
        recordFrame("in", new Uint8Array(event.data as ArrayBuffer).slice());
      });
    }
    override send(
      data: string | ArrayBufferLike | Blob | ArrayBufferView,
    ): void {
      recordFrame("out", (data as Uint8Array).slice());
      super.send(data);
    }
  }
  const recordFrame = (direction: "in" | "out", bytes: Uint8Array) => {
    if (!isCompressedFrame(bytes) && inflating === 0) {
      record({
        direction,
        bytes: bytes.byteLength,
        message: decodeMessage(bytes),
      });
      return;
    }
    inflating++;
    pending = pending.then(async () => {
      const inflated = await decompressFrame(bytes);
      record({
        direction,
        bytes: bytes.byteLength,
        message: decodeMessage(inflated),
      });
      inflating--;
    });
  };
  const waitFor = (
    predicate: (frame: SeenFrame) => boolean,
    count: number,
    signal: AbortSignal,
  ) =>
    new Promise<void>((resolve, reject) => {
      const check = () => {
        if (frames.filter(predicate).length < count) return false;
        watchers.delete(check);
        signal.removeEventListener("abort", abort);
        resolve();
        return true;
      };
      const abort = () => {
        watchers.delete(check);
        reject(signal.reason);
      };
      if (signal.aborted) return reject(signal.reason);
      if (check()) return;
      watchers.add(check);
      signal.addEventListener("abort", abort, { once: true });
    });
  return {
    WebSocket: RecordingWebSocket,
    frames,
    sockets,
    waitFor,
    settled: () => pending,
  };
}

/** Collects a stream's values until it ends (bounded by the signal). */
export async function collect<T>(
  stream: ReadableStream<T>,
  limit = 100_000,
): Promise<T[]> {
  const values: T[] = [];
  for await (const value of stream) {
    values.push(value);
    if (values.length >= limit) break;
  }
  return values;
}
