/**
 * Base64url without padding (RFC 4648 §5), the alphabet JWTs use. Written
 * here rather than taken from a library: the server has no dependencies.
 */

const ALPHABET =
  "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
const VALUES = new Int16Array(128).fill(-1);
for (let index = 0; index < ALPHABET.length; index++) {
  VALUES[ALPHABET.charCodeAt(index)] = index;
}

/** Encodes bytes as base64url without padding. */
export function encodeBase64Url(bytes: Uint8Array): string {
  let result = "";
  let index = 0;
  for (; index + 2 < bytes.length; index += 3) {
    const triple = (bytes[index]! << 16) | (bytes[index + 1]! << 8) |
      bytes[index + 2]!;
    result += ALPHABET[triple >> 18]! + ALPHABET[(triple >> 12) & 63]! +
      ALPHABET[(triple >> 6) & 63]! + ALPHABET[triple & 63]!;
  }
  const rest = bytes.length - index;
  if (rest === 1) {
    const single = bytes[index]!;
    result += ALPHABET[single >> 2]! + ALPHABET[(single & 3) << 4]!;
  } else if (rest === 2) {
    const pair = (bytes[index]! << 8) | bytes[index + 1]!;
    result += ALPHABET[pair >> 10]! + ALPHABET[(pair >> 4) & 63]! +
      ALPHABET[(pair & 15) << 2]!;
  }
  return result;
}

/**
 * Decodes base64url without padding, or returns null when `text` is not
 * canonical base64url (a character outside the alphabet, padding, an
 * impossible length, or stray bits in the last character): a token that
 * could be spelled two ways must not verify under both spellings.
 */
export function decodeBase64Url(text: string): Uint8Array<ArrayBuffer> | null {
  const rest = text.length % 4;
  if (rest === 1) return null;
  const bytes = new Uint8Array(
    Math.floor(text.length / 4) * 3 + (rest === 0 ? 0 : rest - 1),
  );
  let out = 0;
  let index = 0;
  for (; index + 3 < text.length; index += 4) {
    const a = valueAt(text, index);
    const b = valueAt(text, index + 1);
    const c = valueAt(text, index + 2);
    const d = valueAt(text, index + 3);
    if ((a | b | c | d) < 0) return null;
    const triple = (a << 18) | (b << 12) | (c << 6) | d;
    bytes[out++] = triple >> 16;
    bytes[out++] = (triple >> 8) & 255;
    bytes[out++] = triple & 255;
  }
  if (rest === 2) {
    const a = valueAt(text, index);
    const b = valueAt(text, index + 1);
    if ((a | b) < 0 || (b & 15) !== 0) return null;
    bytes[out] = (a << 2) | (b >> 4);
  } else if (rest === 3) {
    const a = valueAt(text, index);
    const b = valueAt(text, index + 1);
    const c = valueAt(text, index + 2);
    if ((a | b | c) < 0 || (c & 3) !== 0) return null;
    bytes[out++] = (a << 2) | (b >> 4);
    bytes[out] = ((b & 15) << 4) | (c >> 2);
  }
  return bytes;
}

function valueAt(text: string, index: number): number {
  const code = text.charCodeAt(index);
  return code < 128 ? VALUES[code]! : -1;
}
