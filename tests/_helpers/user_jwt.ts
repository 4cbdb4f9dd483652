/**
 * Signs HS256 JWTs the way an app's own auth service would, for tests of
 * `Credentials.jwt`: written with WebCrypto, independently of the server's
 * own signer and verifier, and importing nothing from
 * `src/`, so the conformance suite can use it.
 *
 * @module
 */

/** Signs `claims` with `secret` (HS256); see the file comment. */
export async function signUserJwt(
  secret: string,
  claims: Record<string, unknown>,
): Promise<string> {
  const encode = (bytes: Uint8Array) =>
    btoa(String.fromCharCode(...bytes)).replaceAll("+", "-").replaceAll(
      "/",
      "_",
    )
      .replace(/=+$/, "");
  const text = (value: unknown) =>
    encode(new TextEncoder().encode(JSON.stringify(value)));
  const body = `${text({ alg: "HS256", typ: "JWT" })}.${text(claims)}`;
  const key = await crypto.subtle.importKey(
    "raw",
    new TextEncoder().encode(secret),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
  const signature = new Uint8Array(
    await crypto.subtle.sign("HMAC", key, new TextEncoder().encode(body)),
  );
  return `${body}.${encode(signature)}`;
}

/** Seconds since the epoch, as JWT `exp` wants them. */
export function epochSeconds(offsetMs = 0): number {
  return Math.floor((Date.now() + offsetMs) / 1000);
}
