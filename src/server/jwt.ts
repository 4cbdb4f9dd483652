import { decodeBase64Url, encodeBase64Url } from "./base64url.ts";

/**
 * HS256 JSON Web Tokens (RFC 7519) over WebCrypto: just what the server
 * needs to sign its own tokens and verify its own and its users'. Claims
 * (expiry, subject) are checked by the caller; this file only proves that
 * the bytes were signed with the key.
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
  if (token.length > MAX_JWT_LENGTH) return { ok: false, reason: "malformed" };
  const parts = token.split(".");
  if (parts.length !== 3) return { ok: false, reason: "malformed" };
  const [headerText, payloadText, signatureText] = parts as [
    string,
    string,
    string,
  ];
  const header = parseSegment(headerText);
  const claims = parseSegment(payloadText);
  const signature = decodeBase64Url(signatureText);
  if (header === null || claims === null || signature === null) {
    return { ok: false, reason: "malformed" };
  }
  if (header.alg !== "HS256") {
    return { ok: false, reason: "unsupported_algorithm" };
  }
  const valid = await crypto.subtle.verify(
    "HMAC",
    key,
    signature,
    encoder.encode(`${headerText}.${payloadText}`),
  );
  return valid ? { ok: true, claims } : { ok: false, reason: "bad_signature" };
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
