import { linkAbort } from "../util/abort_link.ts";
import { readBounded } from "../util/read_bounded.ts";
import {
  type AsymmetricJwtAlgorithm,
  decodeJwt,
  type JwtClaims,
  verifyJwtSignature,
} from "./jwt.ts";
import type { Log } from "./log.ts";

/**
 * Verifies user tokens issued by an identity provider (Auth0, Cognito,
 * Firebase, Clerk, Keycloak …): RS256 or ES256 signatures checked against a
 * configured public key or the provider's JWKS, then `iss`, `aud`, `exp` and
 * `nbf` (docs/SERVER.md "Identity providers").
 */

/**
 * Tokens from an identity provider (`auth.jwt` of `serveSync`): a public key
 * or a JWKS URL (exactly one), and the claims the tokens must carry. The
 * user id is the token's `sub`.
 *
 * The algorithm comes from the key, never from the token's header alone: a
 * token whose header names another algorithm than its key's (an HS256 token
 * "signed" with the public key's bytes, `alg: "none"`, RS256 against an EC
 * key) is refused.
 *
 * @example Tokens from an Auth0 tenant
 * ```ts
 * import type { JwtProviderOptions } from "@tether/sync/server";
 *
 * const jwt: JwtProviderOptions = {
 *   jwksUrl: "https://example.eu.auth0.com/.well-known/jwks.json",
 *   issuer: "https://example.eu.auth0.com/",
 *   audience: "https://sync.example.com",
 * };
 * ```
 */
export interface JwtProviderOptions {
  /**
   * The provider's public key: a PEM string (`-----BEGIN PUBLIC KEY-----`,
   * SPKI) or a `JsonWebKey`; an RSA key (at least 2048 bits) verifies RS256
   * tokens, a P-256 key ES256 tokens. Give this or `jwksUrl`.
   *
   * @default {undefined}
   */
  publicKey?: string | JsonWebKey;
  /**
   * The provider's JWKS endpoint (`https://…/.well-known/jwks.json`). Keys
   * are fetched when first needed and cached for the response's `max-age`
   * (else 10 minutes); a token with an unknown `kid` triggers at most one
   * refetch per 10 seconds; a fetch gives up after 5 seconds. While the JWKS
   * cannot be fetched (down, slow, not a JWKS), JWT logins answer 503
   * `auth_unavailable` with `Retry-After`, and nothing else waits for it.
   * Give this or `publicKey`.
   *
   * @default {undefined}
   */
  jwksUrl?: string | URL;
  /**
   * When set, a token's `iss` must equal it.
   *
   * @default {undefined}
   */
  issuer?: string;
  /**
   * When set, a token's `aud` (a string or an array) must contain one of
   * these.
   *
   * @default {undefined}
   */
  audience?: string | string[];
  /**
   * How far the provider's clock may differ from the server's, in seconds:
   * a token is accepted until `exp` plus this and from `nbf` minus this.
   *
   * @default {30}
   */
  clockToleranceSec?: number;
}

/** `auth.jwt` checked and normalised (keys not imported yet). */
export interface ResolvedJwtProvider {
  /** The static key, when configured. */
  publicKey: string | JsonWebKey | undefined;
  /** The JWKS endpoint, when configured. */
  jwksUrl: URL | undefined;
  /** The required `iss`, if any. */
  issuer: string | undefined;
  /** The accepted audiences (one must be in `aud`), if any. */
  audience: readonly string[] | undefined;
  /** Clock tolerance, in milliseconds. */
  clockToleranceMs: number;
}

/** What {@linkcode JwtIdentityProvider.verify} found. */
export type JwtProviderCheck =
  | {
    ok: true;
    /** The verified claims; `sub` is not checked here. */
    claims: JwtClaims;
    /** `exp` plus the clock tolerance, in epoch milliseconds. */
    expiresAt: number;
  }
  | { ok: false; code: "bad_token" | "token_expired"; message: string }
  | {
    ok: false;
    code: "auth_unavailable";
    message: string;
    /** Seconds after which a retry may find the JWKS again. */
    retryAfterSec: number;
  };

/** Timing of the JWKS cache; the defaults are the contract's. */
export interface JwksTiming {
  /** Cache lifetime when the response has no `max-age`, in milliseconds. */
  defaultMaxAgeMs: number;
  /** Least time between two fetches (unknown `kid`, or after a failure), in milliseconds. */
  refetchIntervalMs: number;
  /** Time a fetch may take, in milliseconds. */
  fetchTimeoutMs: number;
}

/** The contract's timing: 10 minutes, 10 seconds, 5 seconds. */
export const DEFAULT_JWKS_TIMING: JwksTiming = {
  defaultMaxAgeMs: 10 * 60 * 1000,
  refetchIntervalMs: 10 * 1000,
  fetchTimeoutMs: 5 * 1000,
};

/** What the provider needs from its server. */
export interface JwtProviderContext {
  /** The clock, in epoch milliseconds. */
  now: () => number;
  /** Aborts when the server shuts down: fetches in flight give up. */
  signal: AbortSignal;
  /** Where fetch failures are reported. */
  log?: Log;
  /** JWKS cache timing. */
  timing?: JwksTiming;
}

// Bounds on what a JWKS endpoint can make the server hold.
const MAX_JWKS_BYTES = 1024 * 1024;
const MAX_JWKS_KEYS = 100;
// Cached keys are refetched at least daily whatever max-age says.
const MAX_CACHE_MS = 24 * 60 * 60 * 1000;
const MIN_RSA_BITS = 2048;

/**
 * Checks `auth.jwt` without importing anything (that is async; see
 * {@linkcode JwtIdentityProvider.open}).
 *
 * @throws {TypeError} Naming the bad field.
 */
export function resolveJwtProviderOptions(
  options: unknown,
): ResolvedJwtProvider {
  const fail = (message: string): never => {
    throw new TypeError(`Cannot serve: auth.jwt${message}`);
  };
  if (typeof options !== "object" || options === null) {
    return fail(" must be an object");
  }
  const jwt = options as Record<string, unknown>;
  const { publicKey, jwksUrl, issuer, audience } = jwt;
  if ((publicKey === undefined) === (jwksUrl === undefined)) {
    fail(" needs exactly one of publicKey and jwksUrl");
  }
  if (
    publicKey !== undefined && typeof publicKey !== "string" &&
    (typeof publicKey !== "object" || publicKey === null ||
      Array.isArray(publicKey))
  ) {
    fail(".publicKey must be a PEM string or a JsonWebKey");
  }
  let url: URL | undefined;
  if (jwksUrl !== undefined) {
    if (typeof jwksUrl !== "string" && !(jwksUrl instanceof URL)) {
      fail(".jwksUrl must be a URL");
    }
    try {
      url = new URL(jwksUrl as string | URL);
    } catch {
      fail(`.jwksUrl is not a URL: ${JSON.stringify(String(jwksUrl))}`);
    }
    if (url!.protocol !== "https:" && url!.protocol !== "http:") {
      fail(".jwksUrl must be an http: or https: URL");
    }
  }
  if (issuer !== undefined && (typeof issuer !== "string" || issuer === "")) {
    fail(".issuer must be a non-empty string");
  }
  let audiences: string[] | undefined;
  if (audience !== undefined) {
    audiences = typeof audience === "string" ? [audience] : [];
    if (typeof audience !== "string") {
      if (!Array.isArray(audience) || audience.length === 0) {
        fail(".audience must be a string or a non-empty array of strings");
      }
      for (const item of audience as unknown[]) {
        if (typeof item !== "string" || item === "") {
          fail(".audience must hold non-empty strings");
        }
        audiences.push(item as string);
      }
    } else if (audience === "") fail(".audience is empty");
  }
  const tolerance = jwt.clockToleranceSec ?? 30;
  if (
    typeof tolerance !== "number" || !Number.isFinite(tolerance) ||
    tolerance < 0 || tolerance > 3600
  ) {
    fail(
      `.clockToleranceSec must be a number of seconds in [0, 3600], got ${
        String(tolerance)
      }`,
    );
  }
  return {
    publicKey: publicKey as string | JsonWebKey | undefined,
    jwksUrl: url,
    issuer: issuer as string | undefined,
    audience: audiences,
    clockToleranceMs: (tolerance as number) * 1000,
  };
}

/** A key that verifies tokens, with the one algorithm it allows. */
interface ProviderKey {
  kid: string | undefined;
  algorithm: AsymmetricJwtAlgorithm;
  key: CryptoKey;
}

/** Why a JWKS could not be used; becomes `auth_unavailable`. */
class JwksUnavailable extends Error {
  override name = "JwksUnavailable";
}

/**
 * Verifies identity-provider tokens for one server: a static key, or a JWKS
 * cache that fetches on demand.
 */
export class JwtIdentityProvider {
  #settings: ResolvedJwtProvider;
  #context: JwtProviderContext;
  #timing: JwksTiming;
  #keys: ProviderKey[] = [];
  #expiresAt = -Infinity;
  #lastFetchAt = -Infinity;
  #lastFailure: string | null = null;
  #fetching: Promise<void> | null = null;

  /**
   * Use {@linkcode JwtIdentityProvider.open}, which imports a static key.
   *
   * @param settings The resolved `auth.jwt`.
   * @param context Clock, lifetime signal and log.
   * @param staticKey The imported `publicKey`, when configured.
   */
  constructor(
    settings: ResolvedJwtProvider,
    context: JwtProviderContext,
    staticKey: ProviderKey | null,
  ) {
    this.#settings = settings;
    this.#context = context;
    this.#timing = context.timing ?? DEFAULT_JWKS_TIMING;
    if (staticKey !== null) {
      this.#keys = [staticKey];
      this.#expiresAt = Infinity;
    }
  }

  /**
   * Imports the static key, if any (no JWKS is fetched before a token needs
   * it).
   *
   * @throws {TypeError} When `publicKey` is not an RSA (≥ 2048 bits) or
   *   P-256 public key.
   */
  static async open(
    settings: ResolvedJwtProvider,
    context: JwtProviderContext,
  ): Promise<JwtIdentityProvider> {
    const staticKey = settings.publicKey === undefined
      ? null
      : await importPublicKey(settings.publicKey, undefined).catch(
        (error: unknown) => {
          throw new TypeError(
            `Cannot serve: auth.jwt.publicKey ${
              error instanceof Error ? error.message : String(error)
            }`,
          );
        },
      );
    return new JwtIdentityProvider(settings, context, staticKey);
  }

  /**
   * Verifies a token's signature with the provider's key, then its `iss`,
   * `aud`, `exp` and `nbf`. Never throws: a JWKS that cannot be fetched is
   * `auth_unavailable`.
   */
  async verify(token: string): Promise<JwtProviderCheck> {
    const decoded = decodeJwt(token);
    if (decoded === null) return badToken("Token is malformed");
    const { header } = decoded;
    const alg = header.alg;
    if (alg !== "RS256" && alg !== "ES256") {
      return badToken(
        `Token's alg ${
          JSON.stringify(alg) ?? "(none)"
        } is not accepted; the identity provider's key is RS256 or ES256`,
      );
    }
    if (header.kid !== undefined && typeof header.kid !== "string") {
      return badToken("Token's kid is not a string");
    }
    const kid = header.kid as string | undefined;
    let candidates: ProviderKey[];
    try {
      if (this.#context.now() >= this.#expiresAt) await this.#refresh();
      candidates = this.#select(kid);
      if (
        candidates.length === 0 && kid !== undefined &&
        this.#settings.jwksUrl !== undefined
      ) {
        if (this.#mayFetch()) {
          // A new kid is how providers announce a rotated key.
          await this.#refresh();
          candidates = this.#select(kid);
        } else if (this.#lastFailure !== null) {
          // The key may well exist; the provider cannot be asked just now.
          throw new JwksUnavailable(this.#lastFailure);
        }
      }
    } catch (error) {
      if (!(error instanceof JwksUnavailable)) throw error;
      return this.#unavailable(error.message);
    }
    if (candidates.length === 0) {
      return badToken(
        kid === undefined
          ? "Token has no kid and no key of the identity provider matches"
          : `Token's key id ${
            JSON.stringify(kid)
          } is not one of the identity provider's keys`,
      );
    }
    const matching = candidates.filter((key) => key.algorithm === alg);
    if (matching.length === 0) {
      return badToken(
        `Token's alg ${alg} does not match its key (${
          candidates[0]!.algorithm
        })`,
      );
    }
    let valid = false;
    for (const key of matching) {
      if (await verifyJwtSignature(decoded, key.key, key.algorithm)) {
        valid = true;
        break;
      }
    }
    if (!valid) return badToken("Token is badly signed");
    return this.#checkClaims(decoded.claims);
  }

  #select(kid: string | undefined): ProviderKey[] {
    // A static key is the only key, whatever kid the token names.
    if (kid === undefined || this.#settings.jwksUrl === undefined) {
      return this.#keys;
    }
    const named = this.#keys.filter((key) => key.kid === kid);
    // A JWKS whose keys carry no kid leaves the choice to the signature.
    return named.length > 0
      ? named
      : this.#keys.filter((key) => key.kid === undefined);
  }

  #mayFetch(): boolean {
    return this.#context.now() - this.#lastFetchAt >=
      this.#timing.refetchIntervalMs;
  }

  #unavailable(message: string): JwtProviderCheck {
    const waitMs = this.#lastFetchAt + this.#timing.refetchIntervalMs -
      this.#context.now();
    return {
      ok: false,
      code: "auth_unavailable",
      message: `Cannot verify the token: ${message}`,
      retryAfterSec: Math.max(1, Math.ceil(waitMs / 1000)),
    };
  }

  /**
   * Fetches the JWKS, one fetch at a time and at most one per refetch
   * interval; throws {@linkcode JwksUnavailable} when the fetch fails, or
   * when none is allowed yet and the cached keys have expired.
   */
  async #refresh(): Promise<void> {
    if (this.#fetching === null) {
      if (!this.#mayFetch()) {
        // Within the interval after a failure (or a fetch that just
        // succeeded): answer from what is known, without touching the net.
        if (this.#context.now() < this.#expiresAt) return;
        throw new JwksUnavailable(
          this.#lastFailure ?? "the identity provider's keys have expired",
        );
      }
      this.#lastFetchAt = this.#context.now();
      this.#fetching = this.#fetchKeys().finally(() => this.#fetching = null);
    }
    await this.#fetching;
  }

  async #fetchKeys(): Promise<void> {
    const url = this.#settings.jwksUrl!;
    let result: { keys: ProviderKey[]; maxAgeMs: number | undefined };
    try {
      result = await fetchJwks(
        url,
        this.#timing.fetchTimeoutMs,
        this.#context.signal,
      );
    } catch (error) {
      const message = `the JWKS at ${url.href} cannot be used (${
        error instanceof Error ? error.message : String(error)
      })`;
      this.#lastFailure = message;
      this.#context.log?.(
        "warn",
        "jwks_fetch_failed",
        `Cannot fetch the identity provider's keys: ${message}`,
        { error },
      );
      // Cached keys still within their lifetime stay in use for tokens
      // that name them; keys past it are not trusted (a rotated-out key
      // may be rotated out because it leaked).
      throw new JwksUnavailable(message);
    }
    const fetchedAt = this.#context.now();
    this.#keys = result.keys;
    this.#lastFailure = null;
    // At least the refetch interval: a `max-age=0` would otherwise leave the
    // keys expired while no new fetch is allowed yet.
    this.#expiresAt = fetchedAt + Math.max(
      this.#timing.refetchIntervalMs,
      Math.min(result.maxAgeMs ?? this.#timing.defaultMaxAgeMs, MAX_CACHE_MS),
    );
    this.#context.log?.(
      "debug",
      "jwks_fetched",
      `Fetched ${result.keys.length} identity provider key(s) from ${url.href}`,
    );
  }

  #checkClaims(claims: JwtClaims): JwtProviderCheck {
    const now = this.#context.now();
    const tolerance = this.#settings.clockToleranceMs;
    if (typeof claims.exp !== "number" || !Number.isFinite(claims.exp)) {
      return badToken("Token has no exp");
    }
    const expiresAt = claims.exp * 1000 + tolerance;
    if (expiresAt <= now) {
      return { ok: false, code: "token_expired", message: "Token has expired" };
    }
    if (claims.nbf !== undefined) {
      if (typeof claims.nbf !== "number" || !Number.isFinite(claims.nbf)) {
        return badToken("Token's nbf is not a number");
      }
      if (claims.nbf * 1000 > now + tolerance) {
        return badToken("Token is not yet valid");
      }
    }
    const { issuer, audience } = this.#settings;
    if (issuer !== undefined && claims.iss !== issuer) {
      return badToken(
        `Token's iss ${
          JSON.stringify(claims.iss) ?? "(none)"
        } is not the expected issuer`,
      );
    }
    if (audience !== undefined) {
      const aud = claims.aud;
      const given = typeof aud === "string"
        ? [aud]
        : Array.isArray(aud)
        ? aud.filter((item): item is string => typeof item === "string")
        : [];
      if (!given.some((item) => audience.includes(item))) {
        return badToken("Token's aud does not name this server's audience");
      }
    }
    return { ok: true, claims, expiresAt };
  }
}

function badToken(message: string): JwtProviderCheck {
  return { ok: false, code: "bad_token", message };
}

/**
 * Fetches and imports a JWKS; throws when it cannot be fetched within
 * `timeoutMs`, is larger than 1 MiB, is not a JWKS, or holds no usable
 * RS256 or ES256 signing key.
 */
async function fetchJwks(
  url: URL,
  timeoutMs: number,
  lifetime: AbortSignal,
): Promise<{ keys: ProviderKey[]; maxAgeMs: number | undefined }> {
  lifetime.throwIfAborted();
  const timeout = new AbortController();
  const timer = setTimeout(
    () => timeout.abort(new Error(`no answer within ${timeoutMs} ms`)),
    timeoutMs,
  );
  // Linked for this fetch only: the lifetime outlives it (docs/PERFORMANCE.md).
  const link = linkAbort([lifetime, timeout.signal]);
  const signal = link.signal;
  try {
    let response: Response;
    try {
      response = await fetch(url, {
        signal,
        headers: { accept: "application/json" },
        redirect: "follow",
      });
    } catch (error) {
      throw signal.aborted ? signal.reason : error;
    }
    if (!response.ok) {
      await response.body?.cancel();
      throw new Error(`the server answered ${response.status}`);
    }
    const text = await readText(response, signal);
    let document: unknown;
    try {
      document = JSON.parse(text);
    } catch {
      throw new Error("the answer is not JSON");
    }
    const list = typeof document === "object" && document !== null
      ? (document as { keys?: unknown }).keys
      : undefined;
    if (!Array.isArray(list)) throw new Error('the answer has no "keys" array');
    const keys: ProviderKey[] = [];
    for (const jwk of list.slice(0, MAX_JWKS_KEYS)) {
      if (typeof jwk !== "object" || jwk === null) continue;
      const entry = jwk as JsonWebKey & { kid?: unknown; use?: unknown };
      // Encryption keys and keys of other algorithms are not for tokens.
      if (entry.use !== undefined && entry.use !== "sig") continue;
      const kid = typeof entry.kid === "string" ? entry.kid : undefined;
      try {
        keys.push(await importPublicKey(entry, kid));
      } catch {
        // One key the server cannot use does not spoil the others.
      }
    }
    if (keys.length === 0) {
      throw new Error("the answer holds no RS256 or ES256 signing key");
    }
    return {
      keys,
      maxAgeMs: maxAgeMs(response.headers.get("cache-control")),
    };
  } finally {
    clearTimeout(timer);
    link.dispose();
  }
}

async function readText(
  response: Response,
  signal: AbortSignal,
): Promise<string> {
  const bytes = await readBounded(response.body, MAX_JWKS_BYTES, signal);
  if (bytes === null) {
    throw new Error(`the answer is larger than ${MAX_JWKS_BYTES} bytes`);
  }
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw new Error("the answer is not UTF-8");
  }
}

/** The `max-age` of a Cache-Control header, in milliseconds. */
function maxAgeMs(header: string | null): number | undefined {
  if (header === null) return undefined;
  const match = /(?:^|,)\s*max-age\s*=\s*"?(\d{1,10})"?\s*(?:,|$)/i.exec(
    header,
  );
  return match === null ? undefined : Number(match[1]) * 1000;
}

const RSA = { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" } as const;
const EC = { name: "ECDSA", namedCurve: "P-256" } as const;

/**
 * Imports a PEM (SPKI) or JWK public key as a verification key; the key's
 * type decides the algorithm. Throws an `Error` whose message completes
 * "publicKey …".
 */
async function importPublicKey(
  input: string | JsonWebKey,
  kid: string | undefined,
): Promise<ProviderKey> {
  if (typeof input === "string") return await importPem(input, kid);
  const jwk = input as JsonWebKey & { kid?: unknown };
  if (jwk.d !== undefined) {
    throw new Error("is a private key; give the public key");
  }
  if (jwk.kty === "RSA") {
    if (jwk.alg !== undefined && jwk.alg !== "RS256") {
      throw new Error(`is for ${JSON.stringify(jwk.alg)}, not RS256`);
    }
    if (typeof jwk.n !== "string" || typeof jwk.e !== "string") {
      throw new Error("is an RSA JsonWebKey without n and e");
    }
    // Only the public parts: key_ops or ext in the JWK must not decide
    // what the imported key may do.
    const key = await crypto.subtle.importKey(
      "jwk",
      { kty: "RSA", n: jwk.n, e: jwk.e },
      RSA,
      false,
      ["verify"],
    );
    return { kid, algorithm: "RS256", key: checkRsaSize(key) };
  }
  if (jwk.kty === "EC") {
    if (jwk.crv !== "P-256") {
      throw new Error(`is on curve ${JSON.stringify(jwk.crv)}, not P-256`);
    }
    if (jwk.alg !== undefined && jwk.alg !== "ES256") {
      throw new Error(`is for ${JSON.stringify(jwk.alg)}, not ES256`);
    }
    if (typeof jwk.x !== "string" || typeof jwk.y !== "string") {
      throw new Error("is an EC JsonWebKey without x and y");
    }
    const key = await crypto.subtle.importKey(
      "jwk",
      { kty: "EC", crv: "P-256", x: jwk.x, y: jwk.y },
      EC,
      false,
      ["verify"],
    );
    return { kid, algorithm: "ES256", key };
  }
  throw new Error(
    `has kty ${
      JSON.stringify(jwk.kty) ?? "(none)"
    }; only RSA and EC (P-256) public keys verify tokens`,
  );
}

async function importPem(
  pem: string,
  kid: string | undefined,
): Promise<ProviderKey> {
  const match = /-----BEGIN ([A-Z0-9 ]+)-----([\s\S]*?)-----END \1-----/.exec(
    pem,
  );
  if (match === null) {
    throw new Error("is not PEM (-----BEGIN PUBLIC KEY-----)");
  }
  const label = match[1]!;
  if (label.includes("PRIVATE")) {
    throw new Error("is a private key; give the public key");
  }
  if (label === "RSA PUBLIC KEY") {
    throw new Error(
      "is PKCS#1 (BEGIN RSA PUBLIC KEY); convert it to SPKI (BEGIN PUBLIC KEY)",
    );
  }
  if (label !== "PUBLIC KEY") {
    throw new Error(`is a ${label}; give the SPKI public key`);
  }
  let der: Uint8Array<ArrayBuffer>;
  try {
    const binary = atob(match[2]!.replace(/\s+/g, ""));
    der = Uint8Array.from(binary, (char) => char.charCodeAt(0));
  } catch {
    throw new Error("is not valid base64 inside its PEM armour");
  }
  // The key's own algorithm identifier decides: WebCrypto refuses to import
  // an EC key as RSA and the reverse.
  try {
    const key = await crypto.subtle.importKey("spki", der, RSA, false, [
      "verify",
    ]);
    return { kid, algorithm: "RS256", key: checkRsaSize(key) };
  } catch (error) {
    if (error instanceof RangeError) throw error;
  }
  try {
    const key = await crypto.subtle.importKey("spki", der, EC, false, [
      "verify",
    ]);
    return { kid, algorithm: "ES256", key };
  } catch {
    throw new Error("is neither an RSA nor a P-256 public key");
  }
}

function checkRsaSize(key: CryptoKey): CryptoKey {
  const bits = (key.algorithm as RsaHashedKeyAlgorithm).modulusLength;
  if (bits < MIN_RSA_BITS) {
    throw new RangeError(
      `is an RSA key of ${bits} bits; at least ${MIN_RSA_BITS} are required`,
    );
  }
  return key;
}
