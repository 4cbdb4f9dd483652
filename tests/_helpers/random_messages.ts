/**
 * Random protocol messages for the property and fuzz tests, from a seeded
 * generator, with every value kind and its edge cases. Also `wellFormed()`,
 * the value a message decodes to (lone surrogates become U+FFFD).
 */

import type { Instruction } from "../../src/model/changeset.ts";
import type { Hlc } from "../../src/model/hlc.ts";
import type { Fields, Value } from "../../src/model/value.ts";
import { type Message, MessageType } from "../../src/protocol/messages.ts";
import type { Prng } from "./prng.ts";

const EDGE_NUMBERS = [
  0,
  -0,
  1,
  -1,
  127,
  128,
  -128,
  255,
  256,
  0.5,
  -1.5,
  Math.PI,
  NaN,
  Infinity,
  -Infinity,
  Number.MAX_SAFE_INTEGER,
  Number.MIN_SAFE_INTEGER,
  Number.MAX_SAFE_INTEGER + 1,
  -Number.MAX_SAFE_INTEGER - 2,
  2 ** 31,
  2 ** 32,
  2 ** 53,
  Number.MAX_VALUE,
  Number.MIN_VALUE,
  -Number.MIN_VALUE,
  Number.EPSILON,
];
const EDGE_BIGINTS = [
  0n,
  1n,
  -1n,
  255n,
  256n,
  -256n,
  2n ** 63n - 1n,
  -(2n ** 63n),
  2n ** 64n,
  -(2n ** 64n) - 1n,
  2n ** 200n + 12345n,
  -(2n ** 2047n),
];
const EDGE_STRINGS = [
  "",
  "a",
  "Buy milk",
  "héllo wörld",
  "東京タワー",
  "🌍🚀",
  "a\u{10ffff}z",
  "\ufeffstarts with a BOM",
  "nul\u0000inside",
  "lone \ud800 high",
  "lone \udc00 low",
  "\udbff",
  "pair split? \ud83c",
  "x".repeat(300),
  "é".repeat(200),
  "2f1c9a0e-5b7d-4e23-9c41-7d0b8e6f1a35",
  "2F1C9A0E-5B7D-4E23-9C41-7D0B8E6F1A35",
  "2f1c9a0e-5b7d-4e23-9c41-7d0b8e6f1a3g",
  "2f1c9a0e_5b7d-4e23-9c41-7d0b8e6f1a35",
  "__proto__",
  "constructor",
  "0",
];
const EDGE_DATES = [0, -1, 1, 8.64e15, -8.64e15, NaN, 1_767_225_600_000];
const NAMES = [
  "title",
  "done",
  "n",
  "__proto__",
  "",
  "0",
  "7",
  "🌍",
  "toString",
  "x".repeat(40),
];
const TYPES = ["Task", "Note", "T", "", "名前"];

/** Options for {@linkcode randomMessage}. */
export interface RandomOptions {
  /** Largest nesting depth of generated values. */
  maxDepth?: number;
  /** Most instructions per changeset. */
  maxInstructions?: number;
}

/** A random message of any type. */
export function randomMessage(
  random: Prng,
  options: RandomOptions = {},
): Message {
  const generator = new MessageGenerator(random, options);
  return generator.message();
}

/** What `message` decodes to: every string made well-formed. */
export function wellFormed<T>(message: T): T {
  return normalize(message) as T;
}

function normalize(value: unknown): unknown {
  if (typeof value === "string") return value.toWellFormed();
  if (value === null || typeof value !== "object") return value;
  if (value instanceof Uint8Array || value instanceof Date) return value;
  if (Array.isArray(value)) return value.map(normalize);
  const copy: Record<string, unknown> = {};
  for (const key of Object.keys(value)) {
    Object.defineProperty(copy, key.toWellFormed(), {
      value: normalize((value as Record<string, unknown>)[key]),
      enumerable: true,
      writable: true,
      configurable: true,
    });
  }
  return copy;
}

class MessageGenerator {
  #random: Prng;
  #maxDepth: number;
  #maxInstructions: number;

  constructor(random: Prng, options: RandomOptions) {
    this.#random = random;
    this.#maxDepth = options.maxDepth ?? 4;
    this.#maxInstructions = options.maxInstructions ?? 6;
  }

  message(): Message {
    const random = this.#random;
    switch (random.int(15)) {
      case 0:
        return {
          type: MessageType.Handshake,
          minVersion: this.#uint(),
          maxVersion: this.#uint(),
          accessToken: this.#string(),
        };
      case 1:
        return {
          type: MessageType.Bind,
          sessionId: this.#uint(),
          path: this.#string(),
          clientIdentity: random.next() < 0.5
            ? null
            : { id: this.#uint(), salt: this.#uint() },
          downloadCursor: this.#uint(),
          uploadCursor: this.#uint(),
        };
      case 2:
      case 3:
        return {
          type: MessageType.Upload,
          sessionId: this.#uint(),
          changesets: this.#list(3, () => ({
            clientVersion: this.#uint(),
            baseServerVersion: this.#uint(),
            stamp: this.#stamp(),
            instructions: this.#instructions(),
          })),
        };
      case 4:
        return random.next() < 0.5
          ? {
            type: MessageType.Mark,
            sessionId: this.#uint(),
            requestId: this.#uint(),
          }
          : {
            type: MessageType.UploadTooLarge,
            sessionId: this.#uint(),
            clientVersion: this.#uint(),
            changesetBytes: this.#uint(),
            objects: this.#list(3, () => ({
              type: this.#string(),
              id: this.#string(),
            })),
          };
      case 5:
        return { type: MessageType.Unbind, sessionId: this.#uint() };
      case 6:
        return { type: MessageType.Ping, timestamp: this.#number() };
      case 7:
        return random.next() < 0.5
          ? { type: MessageType.Refresh, accessToken: this.#string() }
          : {
            type: MessageType.Received,
            receivedBytes: this.#uint(),
            timeoutMs: this.#uint(),
          };
      case 8:
        return {
          type: MessageType.HandshakeReply,
          version: this.#uint(),
          userId: this.#string(),
          maxMessageBytes: this.#uint(),
        };
      case 9:
        return {
          type: MessageType.Ident,
          sessionId: this.#uint(),
          clientIdentity: { id: this.#uint(), salt: this.#uint() },
        };
      case 10:
      case 11:
        return {
          type: MessageType.Download,
          sessionId: this.#uint(),
          serverVersion: this.#uint(),
          lastIntegratedClientVersion: this.#uint(),
          downloadableBytes: this.#uint(),
          changesetBytes: this.#uint(),
          changesets: this.#list(3, () => ({
            serverVersion: this.#uint(),
            stamp: this.#stamp(),
            instructions: this.#instructions(),
          })),
        };
      case 12:
        return random.next() < 0.5
          ? {
            type: MessageType.MarkReply,
            sessionId: this.#uint(),
            requestId: this.#uint(),
          }
          : random.next() < 0.5
          ? { type: MessageType.Unbound, sessionId: this.#uint() }
          : { type: MessageType.Pong, timestamp: this.#number() };
      case 13:
        return {
          type: MessageType.Reject,
          sessionId: this.#uint(),
          clientVersion: this.#uint(),
          code: this.#uint(),
          message: this.#string(),
          revert: this.#list(2, () => ({
            serverVersion: this.#uint(),
            stamp: this.#stamp(),
            instructions: this.#instructions(),
          })),
        };
      default:
        return {
          type: MessageType.Error,
          sessionId: random.next() < 0.3 ? null : this.#uint(),
          code: this.#uint(),
          tryAgain: random.next() < 0.5,
          message: this.#string(),
        };
    }
  }

  #list<T>(max: number, make: () => T): T[] {
    return Array.from({ length: this.#random.int(max + 1) }, make);
  }

  #uint(): number {
    const random = this.#random;
    switch (random.int(4)) {
      case 0:
        return random.int(128);
      case 1:
        return random.int(1 << 20);
      case 2:
        return random.int(2 ** 32) * 2 ** 21 + random.int(2 ** 21);
      default:
        return random.pick([0, 127, 128, 2 ** 31, 2 ** 53 - 1]);
    }
  }

  #stamp(): Hlc {
    const random = this.#random;
    return {
      time: random.next() < 0.2
        ? random.pick([0, 2 ** 48 - 1])
        : 1_767_225_600_000 + random.int(1e9),
      counter: random.next() < 0.2 ? random.pick([0, 0xffff]) : random.int(9),
      node: random.next() < 0.2
        ? random.pick([0, 2 ** 48 - 1])
        : random.int(2 ** 32) * 2 ** 16 + random.int(2 ** 16),
    };
  }

  #instructions(): Instruction[] {
    const random = this.#random;
    const count = random.int(this.#maxInstructions + 1);
    const instructions: Instruction[] = [];
    for (let index = 0; index < count; index++) {
      const op = random.pick(["put", "update", "delete"] as const);
      // Reuse the previous type and field names often, so SAME_TYPE and
      // SAME_FIELDS are exercised.
      const previous = instructions[index - 1];
      const type = previous !== undefined && random.next() < 0.5
        ? previous.type
        : random.pick(TYPES);
      instructions.push({
        op,
        type,
        id: random.next() < 0.3 ? this.#uuid() : this.#id(),
        fields: op === "delete" ? null : this.#fields(previous?.fields ?? null),
        stamp: random.next() < 0.3 ? this.#stamp() : null,
      });
    }
    return instructions;
  }

  #uuid(): string {
    let hex = "";
    for (let index = 0; index < 32; index++) {
      hex += this.#random.int(16).toString(16);
    }
    return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${
      hex.slice(16, 20)
    }-${hex.slice(20)}`;
  }

  #id(): string {
    const random = this.#random;
    return random.next() < 0.5 ? `id-${random.int(20)}` : this.#string();
  }

  #fields(previous: Fields | null): Fields {
    const random = this.#random;
    const fields: Fields = {};
    const names = previous !== null && random.next() < 0.5
      ? Object.keys(previous)
      : this.#list(
        5,
        () => random.next() < 0.7 ? random.pick(NAMES) : this.#string(),
      );
    for (const name of names) {
      define(fields, name, this.#value(this.#maxDepth));
    }
    return fields;
  }

  #number(): number {
    const random = this.#random;
    switch (random.int(4)) {
      case 0:
        return random.pick(EDGE_NUMBERS);
      case 1:
        return random.int(1000) - 500;
      case 2:
        return (random.next() - 0.5) * 1e12;
      default:
        return (random.int(2 ** 32) - 2 ** 31) * 2 ** 21;
    }
  }

  #string(): string {
    const random = this.#random;
    if (random.next() < 0.4) return random.pick(EDGE_STRINGS);
    let text = "";
    const length = random.int(24);
    for (let index = 0; index < length; index++) {
      const roll = random.next();
      text += roll < 0.6
        ? String.fromCharCode(32 + random.int(95))
        : roll < 0.8
        ? String.fromCharCode(0x80 + random.int(0x780))
        : roll < 0.9
        ? String.fromCodePoint(0x10000 + random.int(0x100000))
        : String.fromCharCode(random.int(0x10000));
    }
    return text;
  }

  #value(depth: number): Value {
    const random = this.#random;
    switch (random.int(depth > 0 ? 11 : 9)) {
      case 0:
        return null;
      case 1:
        return random.next() < 0.5;
      case 2:
      case 3:
        return this.#number();
      case 4:
        return random.next() < 0.5
          ? random.pick(EDGE_BIGINTS)
          : BigInt(random.int(2 ** 32)) * BigInt(random.int(2 ** 32)) *
            (random.next() < 0.5 ? -1n : 1n);
      case 5:
        return this.#string();
      case 6: {
        const bytes = new Uint8Array(random.int(40));
        for (let index = 0; index < bytes.length; index++) {
          bytes[index] = random.int(256);
        }
        return bytes;
      }
      case 7:
        return new Date(
          random.next() < 0.5
            ? random.pick(EDGE_DATES)
            : random.int(2 ** 32) * 1000 - 2 ** 40,
        );
      case 8:
        return random.next() < 0.5 ? "" : random.int(128);
      case 9:
        return this.#list(4, () => this.#value(depth - 1));
      default: {
        const object: { [key: string]: Value } = {};
        for (const key of this.#list(4, () => random.pick(NAMES))) {
          define(object, key, this.#value(depth - 1));
        }
        return object;
      }
    }
  }
}

function define(record: { [key: string]: Value }, key: string, value: Value) {
  Object.defineProperty(record, key, {
    value,
    enumerable: true,
    writable: true,
    configurable: true,
  });
}
