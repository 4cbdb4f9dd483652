/**
 * The `json` baseline codec: `JSON.stringify` + `TextEncoder`, `TextDecoder`
 * + `JSON.parse`. JSON has no byte arrays, dates, bigints, `-0`, `NaN` or
 * infinities, so a replacer writes each as a one-key tagged object
 * (`{"$bytes": base64}`, `{"$date": ms}`, `{"$bigint": "digits"}`,
 * `{"$number": "-0"}`) and a reviver turns them back. (A user object with
 * such a key would be misread; the corpora have none, and the round-trip
 * check before timing would catch one.)
 *
 * @module
 */

import type { Message } from "../src/protocol/messages.ts";

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder();

type Base64Bytes = Uint8Array & { toBase64(): string };
const fromBase64 = (Uint8Array as unknown as {
  fromBase64(text: string): Uint8Array;
}).fromBase64;

function replacer(this: Record<string, unknown>, key: string, value: unknown) {
  // `Date.prototype.toJSON` has already run, so look at the raw property.
  const raw = this[key];
  switch (typeof raw) {
    case "number":
      if (Number.isFinite(raw) && !Object.is(raw, -0)) return raw;
      return { $number: Object.is(raw, -0) ? "-0" : String(raw) };
    case "bigint":
      return { $bigint: raw.toString() };
    case "object":
      if (raw instanceof Uint8Array) {
        return { $bytes: (raw as Base64Bytes).toBase64() };
      }
      if (raw instanceof Date) {
        const time = raw.getTime();
        return { $date: Number.isNaN(time) ? "NaN" : time };
      }
  }
  return value;
}

function reviver(_key: string, value: unknown): unknown {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    return value;
  }
  const tagged = value as Record<string, unknown>;
  if ("$bytes" in tagged) return fromBase64(tagged.$bytes as string);
  if ("$date" in tagged) return new Date(Number(tagged.$date));
  if ("$bigint" in tagged) return BigInt(tagged.$bigint as string);
  if ("$number" in tagged) return Number(tagged.$number);
  return value;
}

/** Encodes a message as UTF-8 JSON with tagged non-JSON values. */
export function jsonEncode(message: Message): Uint8Array {
  return textEncoder.encode(JSON.stringify(message, replacer));
}

/** Decodes what {@linkcode jsonEncode} wrote. */
export function jsonDecode(bytes: Uint8Array): Message {
  return JSON.parse(textDecoder.decode(bytes), reviver) as Message;
}
