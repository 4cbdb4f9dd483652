import {
  JwtIdentityProvider,
  type ResolvedJwtProvider,
} from "./identity_provider.ts";
import {
  decodeJwt,
  importHmacKey,
  type JwtClaims,
  signJwt,
  verifyJwt,
} from "./jwt.ts";
import type { Log } from "./log.ts";
import { signingKeyKey } from "./storage/keys.ts";
import { isValidSegment } from "./realm_path.ts";
import { delay } from "../util/delay.ts";
import { backoffDelayMs, retryKv, type RetryOptions } from "./storage/retry.ts";
import type { ServerKv } from "./storage/kv_store.ts";

/**
 * Access and refresh tokens (docs/ARCHITECTURE.md "POST /login"): HS256 JWTs
 * signed with the server's own key, which is generated once and kept in KV
 * so tokens survive restarts and every process sharing the store accepts
 * them. The handshake also accepts a user JWT signed with `auth.jwtSecret`
 * or by the identity provider of `auth.jwt`.
 */

/** How a user logged in; carried in tokens so a disabled provider's tokens stop working. */
export type LoginProvider = "anonymous" | "jwt";

/** What `POST /login` answers. */
export interface LoginResult {
  /** The user id (the token's `sub`). */
  userId: string;
  /** Goes in the HANDSHAKE (and REFRESH) message. */
  accessToken: string;
  /** When the access token expires, in epoch milliseconds. */
  accessTokenExpiresAt: number;
  /** Goes in a later `POST /login` with `provider: "refresh"`. */
  refreshToken: string;
}

/**
 * A token's verdict. `internal_server_error` (retryable) is a user JWT that
 * cannot be checked now because the identity provider's keys cannot be
 * fetched.
 */
export type TokenCheck =
  | TokenAccepted
  | TokenRefused
  | { ok: false; code: "internal_server_error"; message: string };

/** A token that {@linkcode TokenAuthority} accepted. */
export interface TokenAccepted {
  ok: true;
  userId: string;
  provider: LoginProvider;
  /** Epoch milliseconds after which the token is void. */
  expiresAt: number;
}

/** A token that {@linkcode TokenAuthority} refused. */
export interface TokenRefused {
  ok: false;
  code: "bad_token" | "token_expired";
  message: string;
}

/**
 * A user JWT's verdict: {@linkcode TokenCheck}, or `auth_unavailable` while
 * the identity provider's keys cannot be fetched (`POST /login` answers 503
 * with it).
 */
export type UserTokenCheck =
  | TokenAccepted
  | TokenRefused
  | {
    ok: false;
    code: "auth_unavailable";
    message: string;
    /** Seconds after which trying again may succeed. */
    retryAfterSec: number;
  };

/** The token settings `serveSync` resolves from its `auth` option. */
export interface TokenSettings {
  jwtSecret: string | Uint8Array<ArrayBuffer> | undefined;
  allowAnonymous: boolean;
  accessTokenTtlMs: number;
  refreshTokenTtlMs: number;
  now: () => number;
  /** `auth.jwt`, resolved: tokens of an identity provider. */
  jwt?: ResolvedJwtProvider | undefined;
  /** Where an identity provider reports JWKS fetches. */
  log?: Log;
}

const MAX_USER_ID_LENGTH = 256;
// Tolerance for an `nbf` set by an issuer whose clock runs a little ahead.
const NOT_BEFORE_LEEWAY_MS = 30_000;

/**
 * Returns whether `userId` can be a user id: 1–256 characters that form a
 * valid realm path segment (no `/`, white space or control character; not
 * `.` or `..`), and not `~`. User ids become path segments (the default
 * permissions give `/<userId>/…`), so a `/` in one could reach into another
 * user's realms; `~` is excluded because a `~` segment means "my id".
 */
export function isValidUserId(userId: string): boolean {
  return userId.length <= MAX_USER_ID_LENGTH && isValidSegment(userId) &&
    userId !== "~";
}

/** Signs and checks the tokens of one server. */
export class TokenAuthority {
  #serverKey: CryptoKey;
  #userKey: CryptoKey | null;
  #provider: JwtIdentityProvider | null;
  #settings: TokenSettings;

  /**
   * Use {@linkcode TokenAuthority.open}, which loads the server key.
   *
   * @param serverKey The server's own HMAC key.
   * @param userKey The key for user JWTs, or null when JWT login is off.
   * @param settings Lifetimes, enabled providers and the clock.
   * @param provider Verifies identity-provider tokens, when `auth.jwt` is set.
   */
  constructor(
    serverKey: CryptoKey,
    userKey: CryptoKey | null,
    settings: TokenSettings,
    provider: JwtIdentityProvider | null = null,
  ) {
    this.#serverKey = serverKey;
    this.#userKey = userKey;
    this.#provider = provider;
    this.#settings = settings;
  }

  /**
   * Loads the server's signing key from KV, creating it if this is the first
   * server on the store (two processes racing both end with the winner's).
   */
  static async open(
    kv: ServerKv,
    settings: TokenSettings,
    retry: RetryOptions,
  ): Promise<TokenAuthority> {
    let raw: Uint8Array<ArrayBuffer> | null = null;
    for (let attempt = 1; raw === null; attempt++) {
      const entry = await retryKv(
        () => kv.get<Uint8Array<ArrayBuffer>>(signingKeyKey()),
        retry,
      );
      if (entry.value !== null) {
        raw = entry.value;
        break;
      }
      const fresh = crypto.getRandomValues(new Uint8Array(32));
      const result = await retryKv(
        () => kv.atomic().check(entry).set(signingKeyKey(), fresh).commit(),
        retry,
      );
      if (result.ok) raw = fresh;
      else await delay(backoffDelayMs(attempt), retry.signal);
    }
    const serverKey = await importHmacKey(raw);
    const userKey = settings.jwtSecret === undefined
      ? null
      : await importHmacKey(settings.jwtSecret);
    const provider = settings.jwt === undefined
      ? null
      : await JwtIdentityProvider.open(settings.jwt, {
        now: settings.now,
        signal: retry.signal,
        ...(settings.log === undefined ? {} : { log: settings.log }),
      });
    return new TokenAuthority(serverKey, userKey, settings, provider);
  }

  /** Whether anonymous login is enabled. */
  get allowsAnonymous(): boolean {
    return this.#settings.allowAnonymous;
  }

  /** Whether JWT login is enabled (`jwtSecret` or `jwt` is configured). */
  get allowsJwt(): boolean {
    return this.#userKey !== null || this.#provider !== null;
  }

  /** Issues an access and a refresh token for `userId`. */
  async issue(userId: string, provider: LoginProvider): Promise<LoginResult> {
    const now = this.#settings.now();
    const accessTokenExpiresAt = now + this.#settings.accessTokenTtlMs;
    // NumericDate may be fractional (RFC 7519 §2), which keeps millisecond
    // lifetimes exact; tests rely on sub-second ones.
    const accessToken = await signJwt({
      sub: userId,
      typ: "access",
      prv: provider,
      iat: now / 1000,
      exp: accessTokenExpiresAt / 1000,
    }, this.#serverKey);
    const refreshToken = await signJwt({
      sub: userId,
      typ: "refresh",
      prv: provider,
      iat: now / 1000,
      exp: (now + this.#settings.refreshTokenTtlMs) / 1000,
      jti: crypto.randomUUID(),
    }, this.#serverKey);
    return { userId, accessToken, accessTokenExpiresAt, refreshToken };
  }

  /**
   * Checks a token presented in a HANDSHAKE or REFRESH: an access token from
   * `POST /login`, or a user JWT (`auth.jwtSecret` or `auth.jwt`).
   */
  async verifyAccess(token: string): Promise<TokenCheck> {
    if (token === "") {
      return { ok: false, code: "bad_token", message: "No access token" };
    }
    const own = await verifyJwt(token, this.#serverKey);
    if (own.ok) return this.#checkOwn(own.claims, "access");
    const user = await this.verifyUserJwt(token);
    // The wire has no auth_unavailable; internal_server_error is the
    // retryable connection error that says "not you, try again later".
    return user.ok || user.code !== "auth_unavailable" ? user : {
      ok: false,
      code: "internal_server_error",
      message: user.message,
    };
  }

  /** Checks a refresh token from an earlier login. */
  async verifyRefresh(token: string): Promise<TokenCheck> {
    const own = await verifyJwt(token, this.#serverKey);
    if (!own.ok) {
      return {
        ok: false,
        code: "bad_token",
        message: "Refresh token is malformed or badly signed",
      };
    }
    return this.#checkOwn(own.claims, "refresh");
  }

  /**
   * Checks a user JWT: HS256 with `auth.jwtSecret`, or RS256 / ES256 from
   * the identity provider of `auth.jwt` (the token's `alg` picks which of
   * the two configured verifiers looks at it; each then insists on its own
   * algorithm).
   */
  async verifyUserJwt(token: string): Promise<UserTokenCheck> {
    if (
      this.#provider !== null &&
      (this.#userKey === null || decodeJwt(token)?.header.alg !== "HS256")
    ) {
      const result = await this.#provider.verify(token);
      if (!result.ok) return result;
      return this.#userFromClaims(result.claims, result.expiresAt);
    }
    if (this.#userKey === null) {
      return {
        ok: false,
        code: "bad_token",
        message: "Token is malformed or badly signed",
      };
    }
    const verified = await verifyJwt(token, this.#userKey);
    if (!verified.ok) {
      return {
        ok: false,
        code: "bad_token",
        message: verified.reason === "malformed"
          ? "Token is malformed"
          : verified.reason === "unsupported_algorithm"
          ? "Token is not signed with HS256"
          : "Token is badly signed",
      };
    }
    const claims = verified.claims;
    const checked = this.#checkTimes(claims);
    if (!checked.ok) return checked;
    return this.#userFromClaims(claims, checked.expiresAt);
  }

  #userFromClaims(claims: JwtClaims, expiresAt: number): UserTokenCheck {
    if (typeof claims.sub !== "string" || !isValidUserId(claims.sub)) {
      return {
        ok: false,
        code: "bad_token",
        // The rule of docs/SERVER.md "User ids": ids such as
        // "auth0|5f7c…" or "ada@example.com" are valid.
        message:
          'Token\'s sub is not a valid user id (1-256 characters without "/", white space or control characters, and not ".", ".." or "~")',
      };
    }
    return { ok: true, userId: claims.sub, provider: "jwt", expiresAt };
  }

  #checkOwn(claims: JwtClaims, kind: "access" | "refresh"): TokenCheck {
    if (claims.typ !== kind) {
      return {
        ok: false,
        code: "bad_token",
        message: `Token is not ${
          kind === "access" ? "an access" : "a refresh"
        } token`,
      };
    }
    const checked = this.#checkTimes(claims);
    if (!checked.ok) return checked;
    const provider = claims.prv;
    if (
      typeof claims.sub !== "string" ||
      (provider !== "anonymous" && provider !== "jwt")
    ) {
      return { ok: false, code: "bad_token", message: "Token is malformed" };
    }
    if (provider === "anonymous" ? !this.allowsAnonymous : !this.allowsJwt) {
      return {
        ok: false,
        code: "bad_token",
        message: `Login provider ${JSON.stringify(provider)} is disabled`,
      };
    }
    return {
      ok: true,
      userId: claims.sub,
      provider,
      expiresAt: checked.expiresAt,
    };
  }

  #checkTimes(
    claims: JwtClaims,
  ):
    | { ok: true; expiresAt: number }
    | { ok: false; code: "bad_token" | "token_expired"; message: string } {
    const now = this.#settings.now();
    if (typeof claims.exp !== "number" || !Number.isFinite(claims.exp)) {
      return { ok: false, code: "bad_token", message: "Token has no exp" };
    }
    const expiresAt = claims.exp * 1000;
    if (expiresAt <= now) {
      return { ok: false, code: "token_expired", message: "Token has expired" };
    }
    if (
      claims.nbf !== undefined &&
      (typeof claims.nbf !== "number" ||
        claims.nbf * 1000 > now + NOT_BEFORE_LEEWAY_MS)
    ) {
      return {
        ok: false,
        code: "bad_token",
        message: "Token is not yet valid",
      };
    }
    return { ok: true, expiresAt };
  }
}
