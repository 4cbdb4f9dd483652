import type { Fields, Value } from "../model/value.ts";
import { DEFAULT_LIMITS } from "../protocol/limits.ts";
import { MAX_BIGINT_BYTES } from "../protocol/values.ts";
import { MAX_NAME_BYTES } from "./upload_validation.ts";

/**
 * The JSON form of realm values for the admin HTTP routes (docs/SERVER.md
 * "Server-side data access"): values JSON lacks travel as `{"$date": ISO}`,
 * `{"$bigint": "digits"}` and `{"$bytes": base64}`, and a write body
 * `{"changes": [{op, type, id, fields}]}` is checked with errors that name
 * the bad field.
 */

/**
 * A JSON value that is not what the admin routes expect; `field` names
 * where (`changes[2].fields.due`), and the route answers 400 with the
 * message.
 */
export class AdminJsonError extends Error {
  /** Where in the document the bad value is, e.g. `changes[0].fields.due`. */
  readonly field: string;

  /**
   * @param field Where the bad value is.
   * @param problem What is wrong with it (completes "<field> …").
   */
  constructor(field: string, problem: string) {
    super(`Invalid ${field}: ${problem}`);
    this.name = "AdminJsonError";
    this.field = field;
  }
}

/** One change of a write body, checked and decoded. */
export type AdminChange =
  | { op: "put" | "update"; type: string; id: string; fields: Fields }
  | { op: "delete"; type: string; id: string };

/** Options of {@linkcode parseWriteBody}. */
export interface ParseWriteBodyOptions {
  /**
   * Most changes in one body.
   *
   * @default {10000}
   */
  maxChanges?: number;
}

// Nesting of arrays and objects inside a field, as `isValue` allows.
const MAX_DEPTH = 32;
const TAGS = new Set(["$date", "$bigint", "$bytes", "$number", "$object"]);
const ISO_DATE =
  /^[+-]?\d{4,6}-\d{2}-\d{2}(?:T\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:\d{2}))?$/;
const BIGINT = /^-?(?:0|[1-9]\d*)$/;
// 2^2048 has 617 decimal digits.
const MAX_BIGINT_DIGITS = 617;

/**
 * Turns a realm value into JSON-ready data: `Date` → `{"$date": ISO}`
 * (`{"$date": null}` for an invalid date), `bigint` → `{"$bigint":
 * "digits"}`, `Uint8Array` → `{"$bytes": base64}`, NaN, ±Infinity and -0 →
 * `{"$number": "NaN" | "Infinity" | "-Infinity" | "-0"}`, and a plain
 * object whose only key is one of these tags → `{"$object": {…}}`, so that
 * every value survives {@linkcode decodeAdminValue} unchanged.
 */
export function encodeAdminValue(value: Value): unknown {
  switch (typeof value) {
    case "number":
      if (Number.isNaN(value)) return { $number: "NaN" };
      if (value === Infinity) return { $number: "Infinity" };
      if (value === -Infinity) return { $number: "-Infinity" };
      if (Object.is(value, -0)) return { $number: "-0" };
      return value;
    case "bigint":
      return { $bigint: value.toString() };
    case "string":
    case "boolean":
      return value;
  }
  if (value === null) return null;
  if (value instanceof Date) {
    return {
      $date: Number.isNaN(value.getTime()) ? null : value.toISOString(),
    };
  }
  if (value instanceof Uint8Array) return { $bytes: encodeBase64(value) };
  if (Array.isArray(value)) return value.map(encodeAdminValue);
  const out: Record<string, unknown> = {};
  const keys = Object.keys(value);
  for (const key of keys) {
    define(out, key, encodeAdminValue((value as Record<string, Value>)[key]!));
  }
  return keys.length === 1 && TAGS.has(keys[0]!) ? { $object: out } : out;
}

/** {@linkcode encodeAdminValue} for every field of an object. */
export function encodeAdminFields(fields: Fields): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const name of Object.keys(fields)) {
    define(out, name, encodeAdminValue(fields[name]!));
  }
  return out;
}

/**
 * Turns JSON data (as `JSON.parse` returns it) into a realm value, the
 * inverse of {@linkcode encodeAdminValue}.
 *
 * @param json The parsed JSON.
 * @param field Where it sits, for error messages.
 * @throws {AdminJsonError} For a malformed tag, nesting deeper than 32
 *   levels, or anything JSON.parse cannot have produced.
 */
export function decodeAdminValue(json: unknown, field: string): Value {
  return decode(json, field, MAX_DEPTH);
}

function decode(json: unknown, field: string, depth: number): Value {
  switch (typeof json) {
    case "string":
      // What a client could not download is refused here, where the
      // field's whole path is known (server_realm.ts checks it again).
      if (json.length > DEFAULT_LIMITS.maxStringBytes) {
        throw new AdminJsonError(
          field,
          `is a string of ${json.length} UTF-16 units, more than a realm stores (${DEFAULT_LIMITS.maxStringBytes})`,
        );
      }
      return json;
    case "boolean":
      return json;
    case "number":
      if (!Number.isFinite(json)) {
        throw new AdminJsonError(field, "is not a finite number");
      }
      return json;
    case "object":
      break;
    default:
      throw new AdminJsonError(field, `is ${typeof json}, not JSON`);
  }
  if (json === null) return null;
  if (depth <= 0) {
    throw new AdminJsonError(field, `nests deeper than ${MAX_DEPTH} levels`);
  }
  if (Array.isArray(json)) {
    const out: Value[] = [];
    for (let index = 0; index < json.length; index++) {
      out.push(decode(json[index], `${field}[${index}]`, depth - 1));
    }
    return out;
  }
  const record = json as Record<string, unknown>;
  const keys = Object.keys(record);
  if (keys.length === 1 && keys[0]!.startsWith("$")) {
    const tag = keys[0]!;
    const inner = record[tag];
    const at = `${field}.${tag}`;
    switch (tag) {
      case "$date": {
        if (inner === null) return new Date(NaN);
        if (typeof inner !== "string" || !ISO_DATE.test(inner)) {
          throw new AdminJsonError(
            at,
            "must be an ISO 8601 date-time string such as 2026-01-31T12:00:00.000Z",
          );
        }
        const time = Date.parse(inner);
        if (!Number.isFinite(time)) {
          throw new AdminJsonError(at, `${JSON.stringify(inner)} is no date`);
        }
        return new Date(time);
      }
      case "$bigint": {
        if (
          typeof inner !== "string" || !BIGINT.test(inner) ||
          inner.length > MAX_BIGINT_DIGITS + 1
        ) {
          throw new AdminJsonError(
            at,
            "must be a string of decimal digits, with an optional leading -",
          );
        }
        const value = BigInt(inner);
        const magnitude = value < 0n ? -value : value;
        if (magnitude.toString(16).length > MAX_BIGINT_BYTES * 2) {
          throw new AdminJsonError(
            at,
            `is larger than a realm stores (${MAX_BIGINT_BYTES} bytes)`,
          );
        }
        return value;
      }
      case "$bytes": {
        if (typeof inner !== "string" || !isBase64(inner)) {
          throw new AdminJsonError(at, "must be a base64 string");
        }
        const bytes = decodeBase64(inner);
        if (bytes.length > DEFAULT_LIMITS.maxBytesLength) {
          throw new AdminJsonError(
            at,
            `holds ${bytes.length} bytes, more than a realm stores (${DEFAULT_LIMITS.maxBytesLength})`,
          );
        }
        return bytes;
      }
      case "$number": {
        switch (inner) {
          case "NaN":
            return NaN;
          case "Infinity":
            return Infinity;
          case "-Infinity":
            return -Infinity;
          case "-0":
            return -0;
        }
        throw new AdminJsonError(
          at,
          'must be "NaN", "Infinity", "-Infinity" or "-0"',
        );
      }
      case "$object": {
        if (
          typeof inner !== "object" || inner === null || Array.isArray(inner)
        ) {
          throw new AdminJsonError(at, "must be an object");
        }
        return decodeObject(inner as Record<string, unknown>, at, depth);
      }
      default:
        throw new AdminJsonError(
          field,
          `has the unknown tag ${
            JSON.stringify(tag)
          } ($date, $bigint, $bytes, $number or $object; wrap a plain object whose only key starts with $ in {"$object": …})`,
        );
    }
  }
  return decodeObject(record, field, depth);
}

function decodeObject(
  record: Record<string, unknown>,
  field: string,
  depth: number,
): { [key: string]: Value } {
  const out: { [key: string]: Value } = {};
  for (const key of Object.keys(record)) {
    define(out, key, decode(record[key], fieldPath(field, key), depth - 1));
  }
  return out;
}

/**
 * Checks and decodes a write body, `{"changes": [{"op": "put" | "update" |
 * "delete", "type", "id", "fields"}]}`: `fields` is an object for `put`
 * and `update` and absent for `delete`; type names and ids are non-empty
 * strings of at most 512 bytes of UTF-8.
 *
 * @param body The parsed JSON body.
 * @param options Limits.
 * @returns The changes, values decoded.
 * @throws {AdminJsonError} Naming the first bad field.
 */
export function parseWriteBody(
  body: unknown,
  options: ParseWriteBodyOptions = {},
): AdminChange[] {
  const maxChanges = options.maxChanges ?? 10_000;
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    throw new AdminJsonError("body", 'must be an object {"changes": [...]}');
  }
  const record = body as Record<string, unknown>;
  for (const key of Object.keys(record)) {
    if (key !== "changes") {
      throw new AdminJsonError(
        fieldPath("body", key),
        'is not expected; the body is {"changes": [...]}',
      );
    }
  }
  const changes = record.changes;
  if (!Array.isArray(changes)) {
    throw new AdminJsonError("changes", "must be an array");
  }
  if (changes.length === 0) {
    throw new AdminJsonError("changes", "is empty");
  }
  if (changes.length > maxChanges) {
    throw new AdminJsonError(
      "changes",
      `holds ${changes.length} changes; at most ${maxChanges} go in one write`,
    );
  }
  return changes.map((change, index) =>
    parseChange(change, `changes[${index}]`)
  );
}

function parseChange(change: unknown, at: string): AdminChange {
  if (typeof change !== "object" || change === null || Array.isArray(change)) {
    throw new AdminJsonError(at, "must be an object {op, type, id, fields}");
  }
  const record = change as Record<string, unknown>;
  for (const key of Object.keys(record)) {
    if (key !== "op" && key !== "type" && key !== "id" && key !== "fields") {
      throw new AdminJsonError(
        fieldPath(at, key),
        "is not expected (op, type, id, fields)",
      );
    }
  }
  const { op } = record;
  if (op !== "put" && op !== "update" && op !== "delete") {
    throw new AdminJsonError(
      `${at}.op`,
      'must be "put", "update" or "delete"',
    );
  }
  const type = name(record.type, `${at}.type`);
  const id = name(record.id, `${at}.id`);
  if (op === "delete") {
    if (record.fields !== undefined) {
      throw new AdminJsonError(`${at}.fields`, "is not expected on a delete");
    }
    return { op, type, id };
  }
  const fields = record.fields;
  if (typeof fields !== "object" || fields === null || Array.isArray(fields)) {
    throw new AdminJsonError(`${at}.fields`, `must be an object for ${op}`);
  }
  const decoded: Fields = {};
  for (const key of Object.keys(fields)) {
    const where = fieldPath(`${at}.fields`, key);
    define(
      decoded,
      key,
      decode((fields as Record<string, unknown>)[key], where, MAX_DEPTH),
    );
  }
  return { op, type, id, fields: decoded };
}

function name(value: unknown, at: string): string {
  if (typeof value !== "string" || value === "") {
    throw new AdminJsonError(at, "must be a non-empty string");
  }
  if (new TextEncoder().encode(value).length > MAX_NAME_BYTES) {
    throw new AdminJsonError(
      at,
      `is longer than ${MAX_NAME_BYTES} bytes of UTF-8`,
    );
  }
  return value;
}

/** `parent.key`, or `parent["key"]` for a key that is not an identifier. */
function fieldPath(parent: string, key: string): string {
  return /^[A-Za-z_$][A-Za-z0-9_$]*$/.test(key)
    ? `${parent}.${key}`
    : `${parent}[${JSON.stringify(key)}]`;
}

// `out[key] = value` would call the __proto__ setter for a "__proto__" key.
function define(out: object, key: string, value: unknown): void {
  Object.defineProperty(out, key, {
    value,
    enumerable: true,
    writable: true,
    configurable: true,
  });
}

function encodeBase64(bytes: Uint8Array): string {
  let binary = "";
  // Chunks keep String.fromCharCode's argument count bounded.
  for (let offset = 0; offset < bytes.length; offset += 0x8000) {
    binary += String.fromCharCode(...bytes.subarray(offset, offset + 0x8000));
  }
  return btoa(binary);
}

/**
 * Whether `text` is standard base64, padded or not. A loop, not a regular
 * expression: a repeated group over megabytes of text overflowed the
 * regular expression engine's stack, and the route answered 500.
 */
function isBase64(text: string): boolean {
  let end = text.length;
  while (end > 0 && text.length - end < 2 && text.charCodeAt(end - 1) === 61) {
    end--;
  }
  const padded = end < text.length;
  if (padded ? text.length % 4 !== 0 : end % 4 === 1) return false;
  for (let index = 0; index < end; index++) {
    const code = text.charCodeAt(index);
    const ok = (code >= 65 && code <= 90) || (code >= 97 && code <= 122) ||
      (code >= 48 && code <= 57) || code === 43 || code === 47;
    if (!ok) return false;
  }
  return true;
}

function decodeBase64(text: string): Uint8Array<ArrayBuffer> {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let index = 0; index < binary.length; index++) {
    bytes[index] = binary.charCodeAt(index);
  }
  return bytes;
}
