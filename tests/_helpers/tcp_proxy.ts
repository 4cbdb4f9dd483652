/**
 * A TCP proxy on 127.0.0.1:0 in front of a server, for fault tests. It can
 * make the connections open now go silent (nothing forwarded either way,
 * nothing closed: a half-dead link, as after a NAT drop) while new
 * connections work, or cut every connection. Dispose it with `await using`.
 */
export class TcpProxy implements AsyncDisposable {
  readonly port: number;
  #listener: Deno.TcpListener;
  #target: { hostname: string; port: number };
  #connections = new Set<Deno.Conn>();
  #pipes = new Set<Promise<void>>();
  #silent = new Set<Deno.Conn>();
  #resume: (() => void)[] = [];
  #accepting: Promise<void>;
  /** Number of connections accepted so far. */
  accepted = 0;

  constructor(target: { hostname: string; port: number }) {
    this.#target = target;
    this.#listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    this.port = (this.#listener.addr as Deno.NetAddr).port;
    this.#accepting = this.#accept();
  }

  /** The proxy's base URL. */
  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /**
   * Stops forwarding bytes on the connections open now (they stay open)
   * until `resume()`; later connections are not affected.
   */
  silence(): void {
    for (const conn of this.#connections) this.#silent.add(conn);
  }

  /** Forwards bytes again on silenced connections. */
  resume(): void {
    this.#silent.clear();
    for (const resume of this.#resume.splice(0)) resume();
  }

  /** Closes every open connection (the network dropped). */
  cut(): void {
    for (const conn of this.#connections) {
      try {
        conn.close();
      } catch {
        // Already closed.
      }
    }
    this.#connections.clear();
  }

  async #accept(): Promise<void> {
    for (;;) {
      let client: Deno.Conn;
      try {
        client = await this.#listener.accept();
      } catch {
        return;
      }
      this.accepted++;
      let upstream: Deno.Conn;
      try {
        upstream = await Deno.connect(this.#target);
      } catch {
        client.close();
        continue;
      }
      this.#connections.add(client);
      this.#connections.add(upstream);
      const pair = Promise.all([
        this.#pipe(client, upstream),
        this.#pipe(upstream, client),
      ]).then(() => {});
      this.#pipes.add(pair);
      pair.then(() => this.#pipes.delete(pair));
    }
  }

  async #pipe(from: Deno.Conn, to: Deno.Conn): Promise<void> {
    const buffer = new Uint8Array(64 * 1024);
    try {
      for (;;) {
        const read = await from.read(buffer);
        if (read === null) break;
        while (this.#silent.has(from)) {
          await new Promise<void>((resolve) => this.#resume.push(resolve));
        }
        if (!this.#connections.has(to)) break;
        let written = 0;
        while (written < read) {
          written += await to.write(buffer.subarray(written, read));
        }
      }
    } catch {
      // One side closed.
    } finally {
      for (const conn of [from, to]) {
        if (this.#connections.delete(conn)) {
          try {
            conn.close();
          } catch {
            // Already closed.
          }
        }
      }
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.#listener.close();
    this.resume();
    this.cut();
    await this.#accepting;
    await Promise.all([...this.#pipes]);
  }
}
