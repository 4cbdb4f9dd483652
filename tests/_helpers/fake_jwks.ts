/**
 * A fake identity provider's JWKS endpoint on 127.0.0.1 port 0, whose
 * answer a test switches and whose requests it counts. Imports nothing from
 * `src/`, so every suite can use it.
 *
 * @module
 */

import { bounded } from "./waits.ts";

/**
 * What the endpoint answers: `ok` its {@linkcode FakeJwks.keys} (with
 * {@linkcode FakeJwks.cacheControl}), `down` 503, `garbage` an HTML page,
 * `empty` a key set of no usable key, `held` nothing until
 * {@linkcode FakeJwks.release} (or disposal), then as `ok`.
 */
export type FakeJwksMode = "ok" | "down" | "garbage" | "empty" | "held";

/** See the module comment. */
export class FakeJwks implements AsyncDisposable {
  /** The keys an `ok` answer holds. */
  keys: JsonWebKey[] = [];
  /** What the next request is answered with. */
  mode: FakeJwksMode = "ok";
  /** The `cache-control` header of an `ok` answer (none when null). */
  cacheControl: string | null = null;
  /** Requests received so far, answered or not. */
  requests = 0;
  #reached = Promise.withResolvers<void>();
  #held = Promise.withResolvers<void>();
  #server: Deno.HttpServer<Deno.NetAddr>;

  constructor() {
    this.#server = Deno.serve(
      { port: 0, hostname: "127.0.0.1", onListen() {} },
      () => this.#answer(),
    );
  }

  /** The JWKS URL, for `auth.jwt.jwksUrl`. */
  get url(): string {
    return `http://127.0.0.1:${this.#server.addr.port}/.well-known/jwks.json`;
  }

  /** Resolves when a request has arrived in `held` mode, within one wait. */
  reached(): Promise<void> {
    const signal = bounded();
    return new Promise((resolve, reject) => {
      const onAbort = () => reject(new Error("the JWKS was never fetched"));
      signal.addEventListener("abort", onAbort, { once: true });
      this.#reached.promise.then(() => {
        signal.removeEventListener("abort", onAbort);
        resolve();
      });
    });
  }

  /** Lets requests held in `held` mode go on, answering as `ok`. */
  release(): void {
    this.#held.resolve();
  }

  async #answer(): Promise<Response> {
    this.requests++;
    if (this.mode === "held") {
      this.#reached.resolve();
      await this.#held.promise;
      return this.#keys();
    }
    switch (this.mode) {
      case "down":
        return new Response("unavailable", { status: 503 });
      case "garbage":
        return new Response("<html>not a jwks</html>", {
          headers: { "content-type": "text/html" },
        });
      case "empty":
        return Response.json({ keys: [{ kty: "oct", k: "AAAA" }] });
      case "ok":
        return this.#keys();
    }
  }

  #keys(): Response {
    const headers = new Headers();
    if (this.cacheControl !== null) {
      headers.set("cache-control", this.cacheControl);
    }
    return Response.json({ keys: this.keys }, { headers });
  }

  /** Releases held requests and closes the server. */
  async [Symbol.asyncDispose](): Promise<void> {
    this.#held.resolve();
    await this.#server.shutdown();
  }
}
