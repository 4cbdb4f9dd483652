import { decodeBase64Url, encodeBase64Url } from "./base64url.ts";

/**
 * JSON Web Tokens (RFC 7519) over WebCrypto: HS256 signing and verifying for
 * the server's own tokens, and RS256 / ES256 signature checks for tokens of
 * an identity provider. Claims (expiry, subject) are checked by the caller;
 * this file only proves that the bytes were signed with the key.
 */

/** The claims of a token: any JSON object. */
export type JwtClaims = Record<string, unknown>;

/** Why {@linkcode verifyJwt} refused a token. */
export type JwtFailure =
  | "malformed"
  | "unsupported_algorithm"
  | "bad_signature";

/** The outcome of {@linkcode verifyJwt}. */
export type JwtVerification =
  | { ok: true; claims: JwtClaims }
  | { ok: false; reason: JwtFailure };

const HEADER = encodeBase64Url(
  new TextEncoder().encode(JSON.stringify({ alg: "HS256", typ: "JWT" })),
);
const encoder = new TextEncoder();
// fatal: a token whose segments are not UTF-8 is malformed, not "repaired".
const decoder = new TextDecoder("utf-8", { fatal: true });

/** The algorithms of identity-provider keys (RFC 7518 §3.3, §3.4). */
export type AsymmetricJwtAlgorithm = "RS256" | "ES256";

/** A compact JWT split into its parts, signature not yet checked. */
export interface DecodedJwt {
  /** The JOSE header. */
  header: JwtClaims;
  /** The claims. */
  claims: JwtClaims;
  /** The bytes the signature covers: `<header>.<payload>` as sent. */
  signingInput: Uint8Array<ArrayBuffer>;
  /** The signature bytes. */
  signature: Uint8Array<ArrayBuffer>;
}

/** Longest token accepted, in characters; longer ones are malformed. */
export const MAX_JWT_LENGTH = 8192;

/** Imports an HMAC-SHA-256 key from a secret string or raw bytes. */
export function importHmacKey(
  secret: string | Uint8Array<ArrayBuffer>,
): Promise<CryptoKey> {
  const raw = typeof secret === "string" ? encoder.encode(secret) : secret;
  return crypto.subtle.importKey(
    "raw",
    raw,
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign", "verify"],
  );
}

/** Signs `claims` as a compact HS256 JWT. */
export async function signJwt(
  claims: JwtClaims,
  key: CryptoKey,
): Promise<string> {
  const payload = encodeBase64Url(encoder.encode(JSON.stringify(claims)));
  const signingInput = `${HEADER}.${payload}`;
  const signature = await crypto.subtle.sign(
    "HMAC",
    key,
    encoder.encode(signingInput),
  );
  return `${signingInput}.${encodeBase64Url(new Uint8Array(signature))}`;
}

/**
 * Verifies a compact JWT's HS256 signature (in constant time, through
 * WebCrypto) and returns its claims. Only `alg: "HS256"` is accepted, so a
 * token cannot talk its way into `alg: "none"`.
 */
export async function verifyJwt(
  token: string,
  key: CryptoKey,
): Promise<JwtVerification> {
  const decoded = decodeJwt(token);
  if (decoded === null) return { ok: false, reason: "malformed" };
  if (decoded.header.alg !== "HS256") {
    return { ok: false, reason: "unsupported_algorithm" };
  }
  const valid = await crypto.subtle.verify(
    "HMAC",
    key,
    decoded.signature,
    decoded.signingInput,
  );
  return valid
    ? { ok: true, claims: decoded.claims }
    : { ok: false, reason: "bad_signature" };
}

/**
 * Splits a compact JWT into header, claims and signature; null when it is
 * longer than {@linkcode MAX_JWT_LENGTH}, has not three segments, or a
 * segment is not base64url JSON (header and claims must be objects).
 */
export function decodeJwt(token: string): DecodedJwt | null {
  if (token.length > MAX_JWT_LENGTH) return null;
  const parts = token.split(".");
  if (parts.length !== 3) return null;
  const [headerText, payloadText, signatureText] = parts as [
    string,
    string,
    string,
  ];
  const header = parseSegment(headerText);
  const claims = parseSegment(payloadText);
  const signature = decodeBase64Url(signatureText);
  if (header === null || claims === null || signature === null) return null;
  return {
    header,
    claims,
    signingInput: encoder.encode(`${headerText}.${payloadText}`),
    signature,
  };
}

/**
 * Checks a decoded token's signature with an RS256 (RSASSA-PKCS1-v1_5,
 * SHA-256) or ES256 (ECDSA P-256, SHA-256) public key. The algorithm is the
 * key's, chosen by the caller; the token's header is not consulted, so a
 * token cannot pick a weaker one. An ES256 signature is the 64-byte `r || s`
 * of RFC 7518 §3.4 (what WebCrypto verifies); any other length is refused.
 */
export async function verifyJwtSignature(
  decoded: DecodedJwt,
  key: CryptoKey,
  algorithm: AsymmetricJwtAlgorithm,
): Promise<boolean> {
  if (algorithm === "ES256") {
    if (decoded.signature.length !== 64) return false;
    return await crypto.subtle.verify(
      { name: "ECDSA", hash: "SHA-256" },
      key,
      decoded.signature,
      decoded.signingInput,
    );
  }
  return await crypto.subtle.verify(
    "RSASSA-PKCS1-v1_5",
    key,
    decoded.signature,
    decoded.signingInput,
  );
}

function parseSegment(text: string): JwtClaims | null {
  const bytes = decodeBase64Url(text);
  if (bytes === null) return null;
  try {
    const value: unknown = JSON.parse(decoder.decode(bytes));
    return typeof value === "object" && value !== null && !Array.isArray(value)
      ? value as JwtClaims
      : null;
  } catch {
    return null;
  }
}
