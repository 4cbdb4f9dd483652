// This module is browser compatible.

/**
 * Options of {@linkcode Credentials.jwt}.
 *
 * @example Fetching a new JWT from your auth service
 * ```ts
 * import { Credentials, type JwtCredentialsOptions } from "@tether/sync";
 *
 * const options: JwtCredentialsOptions = {
 *   refreshToken: async () => {
 *     // e.g. (await fetch("/my-auth/token")).text()
 *     return await Promise.resolve("eyJhbGciOi…");
 *   },
 * };
 * const credentials = Credentials.jwt("eyJhbGciOi…", options);
 * console.log(credentials.provider);
 * ```
 */
export interface JwtCredentialsOptions {
  /**
   * Returns a new JWT for the same user when the server no longer accepts
   * the one given (it expired). Called only when the refresh token from the
   * login was refused too; a thrown error or a JWT the server refuses ends
   * the sessions with `login_failed`.
   */
  refreshToken?: () => string | Promise<string>;
  /** Same as `refreshToken` (the name used in the design brief). */
  refresh?: () => string | Promise<string>;
}

/** The login request bodies of `POST /login` (docs/ARCHITECTURE.md). */
export type LoginBody =
  | { provider: "anonymous" }
  | { provider: "jwt"; token: string }
  | { provider: "refresh"; refreshToken: string };

/** What credentials hold: the provider, the JWT and its refresh callback. */
class CredentialsState {
  readonly provider: "anonymous" | "jwt";
  token: string | undefined;
  readonly refresh: (() => string | Promise<string>) | undefined;

  constructor(
    provider: "anonymous" | "jwt",
    token?: string,
    refresh?: () => string | Promise<string>,
  ) {
    this.provider = provider;
    this.token = token;
    this.refresh = refresh;
  }
}

// Credentials come from the application, so the client finds their state
// by the public object; only this module can read it.
const states = new WeakMap<Credentials, CredentialsState>();
let pending: CredentialsState | undefined;

function make(state: CredentialsState): Credentials {
  pending = state;
  try {
    return new Credentials();
  } finally {
    pending = undefined;
  }
}

function stateOf(credentials: Credentials): CredentialsState {
  const state = states.get(credentials);
  if (state === undefined) {
    throw new TypeError(
      "Cannot log in: credentials must come from Credentials.anonymous() or Credentials.jwt(token)",
    );
  }
  return state;
}

/** The `POST /login` body for these credentials (internal). */
export function credentialsBody(credentials: Credentials): LoginBody {
  const state = stateOf(credentials);
  return state.provider === "anonymous"
    ? { provider: "anonymous" }
    : { provider: "jwt", token: state.token! };
}

/**
 * Asks the JWT refresh callback for a new token and keeps it; resolves
 * false when there is no callback or it returned the same token (internal).
 */
export async function renewJwt(credentials: Credentials): Promise<boolean> {
  const state = stateOf(credentials);
  const refresh = state.refresh;
  if (refresh === undefined) return false;
  const token = await refresh();
  if (typeof token !== "string" || token.length === 0) {
    throw new TypeError("refreshToken returned no token");
  }
  if (token === state.token) return false;
  state.token = token;
  return true;
}

/**
 * What a user logs in with: anonymously (the server must allow it; each
 * login is a new user) or with a JWT signed with the server's
 * `auth.jwtSecret`, whose `sub` is the user id.
 *
 * @example Both kinds
 * ```ts
 * import { Credentials } from "@tether/sync";
 * import assert from "node:assert/strict";
 *
 * assert.equal(Credentials.anonymous().provider, "anonymous");
 * const jwt = Credentials.jwt("eyJhbGciOi…", { refreshToken: () => fetchNewToken() });
 * assert.equal(jwt.provider, "jwt");
 *
 * function fetchNewToken(): Promise<string> {
 *   return Promise.resolve("eyJhbGciOi…");
 * }
 * ```
 */
export class Credentials {
  /** `"anonymous"` or `"jwt"`. */
  readonly provider: "anonymous" | "jwt";

  /**
   * Use {@linkcode Credentials.anonymous} or {@linkcode Credentials.jwt};
   * this constructor throws.
   *
   * @throws {TypeError} Always, when called directly.
   */
  constructor() {
    if (pending === undefined) {
      throw new TypeError(
        "Cannot construct Credentials: use Credentials.anonymous() or Credentials.jwt(token)",
      );
    }
    this.provider = pending.provider;
    states.set(this, pending);
  }

  /**
   * Anonymous login: `POST /login {"provider":"anonymous"}` gives a new
   * user id each time.
   *
   * @returns Anonymous credentials.
   */
  static anonymous(): Credentials {
    return make(new CredentialsState("anonymous"));
  }

  /**
   * Login with a JWT signed by your auth service with the server's
   * `auth.jwtSecret` (HS256; `sub` is the user id; `exp` honoured).
   *
   * @param token The JWT.
   * @param options `refreshToken`: a callback returning a new JWT, for when
   *   this one expires during a long session.
   * @returns JWT credentials.
   * @throws {TypeError} For an empty token or a refresh option that is not a
   *   function.
   */
  static jwt(token: string, options: JwtCredentialsOptions = {}): Credentials {
    if (typeof token !== "string" || token.length === 0) {
      throw new TypeError(
        "Cannot create credentials: token must be a non-empty string",
      );
    }
    const refresh = options.refreshToken ?? options.refresh;
    if (refresh !== undefined && typeof refresh !== "function") {
      throw new TypeError(
        "Cannot create credentials: refreshToken must be a function",
      );
    }
    return make(new CredentialsState("jwt", token, refresh));
  }
}
