/**
 * A TCP proxy between a client and a server that a test can turn into the
 * failures a network produces: a link that goes silent without closing (its
 * bytes lost, or held and delivered late), connections that are refused,
 * connections that drop, a slow link, bytes arriving in tiny pieces, a
 * server that moved to another port.
 *
 * It imports nothing from `src/`, so the conformance suite (public entry
 * points only) can use it as well as the e2e suite.
 *
 * @module
 */

/** Which way bytes travel through the proxy. */
export type Direction = "toServer" | "toClient";

/** One proxied connection. */
interface Link {
  client: Deno.TcpConn;
  server: Deno.TcpConn | undefined;
  silent: boolean;
  /** Only server→client bytes are swallowed. */
  deaf: boolean;
  /** Set while the link is stalled: resolves on release or close. */
  stalled: { promise: Promise<void>; resolve: () => void } | undefined;
  closed: boolean;
  pumps: Promise<void>[];
}

/** A chunk observer: called for each chunk forwarded (or swallowed). */
export type ChunkListener = (
  direction: Direction,
  bytes: number,
  forwarded: boolean,
) => void;

/**
 * A TCP proxy on 127.0.0.1, port 0, forwarding to `target`.
 *
 * - `silence()` makes every open connection swallow bytes both ways while
 *   staying open (a half-dead link); connections accepted later forward
 *   normally.
 * - `mode = "refuse"` closes new connections at once; `"blackhole"` accepts
 *   them and never forwards; `"forward"` (the default) forwards.
 * - `dropAll()` closes every open connection.
 * - `stall()` makes every open connection hold its bytes both ways (nothing
 *   is read or written) until `release()`, which delivers them late.
 * - `slices` writes bytes both ways in pieces of at most that many bytes,
 *   each after a turn of the event loop, so peers read partial frames.
 * - `retarget()` sends connections accepted from now on to a new address
 *   (a server restarted on another port).
 */
export class TcpProxy implements AsyncDisposable {
  #listener: Deno.TcpListener;
  #target: { hostname: string; port: number };
  #links = new Set<Link>();
  #acceptLoop: Promise<void>;
  #listeners = new Set<ChunkListener>();
  #connectionListeners = new Set<
    (event: "open" | "close" | "refused") => void
  >();
  /**
   * When set, server→client bytes trickle: at most `bytes` every `everyMs`
   * (a slow link, simulated with timers — never used to synchronise); with
   * `both`, client→server bytes too.
   */
  throttle: { bytes: number; everyMs: number; both?: boolean } | undefined;
  /**
   * When set, bytes both ways are written at most this many at a time, with
   * a turn of the event loop between pieces.
   */
  slices: number | undefined;
  /** What happens to connections accepted from now on. */
  mode: "forward" | "refuse" | "blackhole" = "forward";
  /** Connections accepted so far (including refused ones). */
  accepted = 0;

  /** @param target The server's address (a `SyncServer`'s `addr` will do). */
  constructor(target: { hostname: string; port: number }) {
    this.#target = target;
    this.#listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    this.#acceptLoop = this.#accept();
  }

  /** The port the proxy listens on (127.0.0.1). */
  get port(): number {
    return (this.#listener.addr as Deno.NetAddr).port;
  }

  /** The proxy's http base URL. */
  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Connections currently open through the proxy. */
  get openConnections(): number {
    let n = 0;
    for (const link of this.#links) if (!link.closed) n++;
    return n;
  }

  /** Observes every chunk; returns an unsubscribe function. */
  onChunk(listener: ChunkListener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Observes connections opening, closing or refused; returns an unsubscribe function. */
  onConnection(
    listener: (event: "open" | "close" | "refused") => void,
  ): () => void {
    this.#connectionListeners.add(listener);
    return () => this.#connectionListeners.delete(listener);
  }

  /** Sends connections accepted from now on to `target` instead. */
  retarget(target: { hostname: string; port: number }): void {
    this.#target = target;
  }

  /**
   * Makes every open connection hold its bytes both ways, without closing
   * and without losing them, until {@linkcode release}.
   */
  stall(): void {
    for (const link of this.#links) {
      if (link.closed || link.stalled !== undefined) continue;
      let resolve = () => {};
      const promise = new Promise<void>((done) => resolve = done);
      link.stalled = { promise, resolve };
    }
  }

  /** Lets stalled connections deliver what they held, and go on. */
  release(): void {
    for (const link of this.#links) this.#release(link);
  }

  #release(link: Link): void {
    const stalled = link.stalled;
    link.stalled = undefined;
    stalled?.resolve();
  }

  /** Makes every open connection swallow bytes both ways, without closing. */
  silence(): void {
    for (const link of this.#links) link.silent = true;
  }

  /**
   * Makes every open connection swallow server→client bytes only: what the
   * client sends arrives, the answers never do.
   */
  deafen(): void {
    for (const link of this.#links) link.deaf = true;
  }

  /** Closes the connections that were silenced (the peer gave up on them). */
  dropSilent(): void {
    for (const link of this.#links) {
      if (link.silent || link.deaf) this.#close(link);
    }
  }

  /** Closes every open connection. */
  dropAll(): void {
    for (const link of this.#links) this.#close(link);
  }

  async #accept(): Promise<void> {
    for (;;) {
      let client: Deno.TcpConn;
      try {
        client = await this.#listener.accept();
      } catch {
        return;
      }
      this.accepted++;
      if (this.mode === "refuse") {
        client.close();
        for (const listener of this.#connectionListeners) listener("refused");
        continue;
      }
      const link: Link = {
        client,
        server: undefined,
        silent: this.mode === "blackhole",
        deaf: false,
        stalled: undefined,
        closed: false,
        pumps: [],
      };
      this.#links.add(link);
      for (const listener of this.#connectionListeners) listener("open");
      link.pumps.push(this.#start(link));
    }
  }

  async #start(link: Link): Promise<void> {
    try {
      link.server = await Deno.connect({
        hostname: this.#target.hostname,
        port: this.#target.port,
      });
    } catch {
      this.#close(link);
      return;
    }
    if (link.closed) {
      link.server.close();
      return;
    }
    await Promise.all([
      this.#pump(link, link.client, link.server, "toServer"),
      this.#pump(link, link.server, link.client, "toClient"),
    ]);
  }

  async #pump(
    link: Link,
    from: Deno.TcpConn,
    to: Deno.TcpConn,
    direction: Direction,
  ): Promise<void> {
    const buffer = new Uint8Array(64 * 1024);
    try {
      for (;;) {
        const n = await from.read(buffer);
        if (n === null) break;
        await this.#unstalled(link);
        if (link.closed) break;
        const forwarded = !link.silent &&
          !(link.deaf && direction === "toClient");
        for (const listener of this.#listeners) {
          listener(direction, n, forwarded);
        }
        if (!forwarded) continue;
        let offset = 0;
        while (offset < n) {
          await this.#unstalled(link);
          const throttle = direction === "toClient" || this.throttle?.both
            ? this.throttle
            : undefined;
          const slices = this.slices;
          let end = throttle === undefined
            ? n
            : Math.min(n, offset + throttle.bytes);
          if (slices !== undefined) end = Math.min(end, offset + slices);
          offset += await to.write(buffer.subarray(offset, end));
          if (throttle !== undefined && !link.closed) {
            await new Promise((resolve) =>
              setTimeout(resolve, throttle.everyMs)
            );
          } else if (slices !== undefined && !link.closed) {
            await new Promise((resolve) => setTimeout(resolve, 0));
          }
        }
      }
    } catch {
      // A closed socket on either side ends the pump.
    }
    this.#close(link);
  }

  /** Resolves once `link` is not stalled (released or closed). */
  async #unstalled(link: Link): Promise<void> {
    while (link.stalled !== undefined) await link.stalled.promise;
  }

  #close(link: Link): void {
    if (link.closed) return;
    link.closed = true;
    this.#release(link);
    try {
      link.client.close();
    } catch { /* already closed */ }
    try {
      link.server?.close();
    } catch { /* already closed */ }
    for (const listener of this.#connectionListeners) listener("close");
  }

  /** Closes the listener and every connection, and waits for the pumps. */
  async [Symbol.asyncDispose](): Promise<void> {
    this.#listener.close();
    await this.#acceptLoop;
    this.dropAll();
    await Promise.all([...this.#links].flatMap((link) => link.pumps));
  }
}
