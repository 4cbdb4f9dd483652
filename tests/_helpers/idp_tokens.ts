/**
 * Keys and RS256 / ES256 tokens made the way an identity provider makes
 * them: WebCrypto directly, independently of the server's verifier, and
 * importing nothing from `src/`, so the conformance suite can use them.
 *
 * @module
 */

/** A key pair of either algorithm. */
export type KeyPair = { privateKey: CryptoKey; publicKey: CryptoKey };

/** Base64url without padding, as JWTs use it. */
export function base64url(bytes: Uint8Array): string {
  let binary = "";
  for (const byte of bytes) binary += String.fromCharCode(byte);
  return btoa(binary).replaceAll("+", "-").replaceAll("/", "_").replace(
    /=+$/,
    "",
  );
}

/** One JWT part: `value` as JSON, base64url-encoded. */
export const jwtPart = (value: unknown): string =>
  base64url(new TextEncoder().encode(JSON.stringify(value)));

/** A 2048-bit RSA pair for RS256. */
export function rsaPair(): Promise<KeyPair> {
  return crypto.subtle.generateKey(
    {
      name: "RSASSA-PKCS1-v1_5",
      modulusLength: 2048,
      publicExponent: new Uint8Array([1, 0, 1]),
      hash: "SHA-256",
    },
    true,
    ["sign", "verify"],
  ) as Promise<KeyPair>;
}

/** A P-256 pair for ES256. */
export function ecPair(): Promise<KeyPair> {
  return crypto.subtle.generateKey(
    { name: "ECDSA", namedCurve: "P-256" },
    true,
    ["sign", "verify"],
  ) as Promise<KeyPair>;
}

/** Signs with the private key's own algorithm (RS256 or ES256). */
export async function signToken(
  header: Record<string, unknown>,
  claims: Record<string, unknown>,
  privateKey: CryptoKey,
): Promise<string> {
  const body = `${jwtPart(header)}.${jwtPart(claims)}`;
  const algorithm = privateKey.algorithm.name === "ECDSA"
    ? { name: "ECDSA", hash: "SHA-256" }
    : { name: "RSASSA-PKCS1-v1_5" };
  const signature = await crypto.subtle.sign(
    algorithm,
    privateKey,
    new TextEncoder().encode(body),
  );
  return `${body}.${base64url(new Uint8Array(signature))}`;
}

/** The public key as a PEM (SPKI) string. */
export async function spkiPem(publicKey: CryptoKey): Promise<string> {
  const der = new Uint8Array(await crypto.subtle.exportKey("spki", publicKey));
  let binary = "";
  for (const byte of der) binary += String.fromCharCode(byte);
  const lines = btoa(binary).match(/.{1,64}/g)!.join("\n");
  return `-----BEGIN PUBLIC KEY-----\n${lines}\n-----END PUBLIC KEY-----\n`;
}

/** The public key as a JsonWebKey, with `extra` members (`kid`, `alg`…). */
export async function publicJwk(
  publicKey: CryptoKey,
  extra: Record<string, unknown> = {},
): Promise<JsonWebKey> {
  return { ...(await crypto.subtle.exportKey("jwk", publicKey)), ...extra };
}
