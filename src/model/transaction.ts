// This module is browser compatible.

import type { Instruction } from "./changeset.ts";
import {
  defineField,
  type Fields,
  isValue,
  storedValue,
  wellFormed,
} from "./value.ts";

interface PendingWrite {
  op: "put" | "update" | "delete";
  type: string;
  id: string;
  fields: Fields | null;
}

function objectKey(type: string, id: string): string {
  return `${type.length}:${type}${id}`;
}

/**
 * Longest type name or object id, in bytes of UTF-8: they become storage
 * keys on the server, which refuses longer ones (docs/SERVER.md). Checked
 * on write, so such a write is refused before it is committed rather than
 * ending the session when it is uploaded.
 */
export const MAX_NAME_BYTES = 512;

const encoder = new TextEncoder();

/** Checks a type name or id; returns it as it is stored. */
function checkName(what: string, method: string, value: unknown): string {
  if (typeof value !== "string" || value.length === 0) {
    throw new TypeError(
      `Cannot ${method}: ${what} must be a non-empty string, got ${
        typeof value === "string" ? '""' : typeof value
      }`,
    );
  }
  // Every UTF-16 unit is at most 3 bytes of UTF-8: short names are not
  // encoded.
  if (value.length * 3 > MAX_NAME_BYTES) {
    const bytes = encoder.encode(value).length;
    if (bytes > MAX_NAME_BYTES) {
      throw new RangeError(
        `Cannot ${method}: ${what} is ${bytes} bytes of UTF-8, longer than ${MAX_NAME_BYTES}`,
      );
    }
  }
  return wellFormed(value);
}

function copyFields(method: string, fields: unknown): Fields {
  if (
    fields === null || typeof fields !== "object" || Array.isArray(fields) ||
    (Object.getPrototypeOf(fields) !== Object.prototype &&
      Object.getPrototypeOf(fields) !== null)
  ) {
    throw new TypeError(`Cannot ${method}: fields must be a plain object`);
  }
  const copy: Fields = {};
  for (const name of Object.keys(fields)) {
    const value = (fields as Record<string, unknown>)[name];
    if (!isValue(value)) {
      throw new TypeError(
        `Cannot ${method}: field ${
          JSON.stringify(name)
        } holds a value a realm cannot store (${describe(value)})`,
      );
    }
    defineField(copy, wellFormed(name), storedValue(value));
  }
  return copy;
}

function describe(value: unknown): string {
  if (value === undefined) return "undefined";
  if (typeof value === "function") return "a function";
  if (typeof value === "symbol") return "a symbol";
  if (typeof value === "object" && value !== null) {
    const name = Object.getPrototypeOf(value)?.constructor?.name;
    return name ? `a ${name}, or something inside it` : "an object";
  }
  return typeof value;
}

let pending: TransactionWrites | undefined;

/**
 * The writes of one transaction and their folding (internal: the realm makes
 * one per write and hands its `transaction` to the callback).
 */
export class TransactionWrites {
  #writes = new Map<string, PendingWrite>();
  #exists: (type: string, id: string) => boolean;
  #open = true;

  /** The public face handed to the write callback. */
  readonly transaction: Transaction;

  /** @param exists Whether an object exists before this transaction. */
  constructor(exists: (type: string, id: string) => boolean) {
    this.#exists = exists;
    pending = this;
    try {
      this.transaction = new Transaction(exists);
    } finally {
      pending = undefined;
    }
  }

  /** See `Transaction.put`. */
  put(type: string, id: string, fields: Fields): void {
    this.#checkOpen("put");
    type = checkName("type", "put", type);
    id = checkName("id", "put", id);
    const copy = copyFields("put", fields);
    this.#writes.set(objectKey(type, id), {
      op: "put",
      type,
      id,
      fields: copy,
    });
  }

  /** See `Transaction.update`. */
  update(type: string, id: string, fields: Fields): void {
    this.#checkOpen("update");
    type = checkName("type", "update", type);
    id = checkName("id", "update", id);
    const copy = copyFields("update", fields);
    const key = objectKey(type, id);
    const earlier = this.#writes.get(key);
    if (
      earlier?.op === "delete" ||
      (earlier === undefined && !this.#exists(type, id))
    ) {
      throw new TypeError(
        `Cannot update: ${type} ${JSON.stringify(id)} does not exist`,
      );
    }
    if (earlier === undefined) {
      this.#writes.set(key, { op: "update", type, id, fields: copy });
      return;
    }
    for (const name of Object.keys(copy)) {
      defineField(earlier.fields!, name, copy[name]!);
    }
  }

  /** See `Transaction.delete`. */
  delete(type: string, id: string): void {
    this.#checkOpen("delete");
    type = checkName("type", "delete", type);
    id = checkName("id", "delete", id);
    this.#writes.set(objectKey(type, id), {
      op: "delete",
      type,
      id,
      fields: null,
    });
  }

  /**
   * Ends the transaction and returns its folded instructions, one per
   * object, in the order each object was first written.
   */
  finish(): Instruction[] {
    this.#open = false;
    const instructions: Instruction[] = [];
    for (const write of this.#writes.values()) {
      instructions.push({
        op: write.op,
        type: write.type,
        id: write.id,
        fields: write.fields,
        stamp: null,
      });
    }
    this.#writes.clear();
    return instructions;
  }

  #checkOpen(method: string): void {
    if (!this.#open) {
      throw new TypeError(
        `Cannot ${method}: the transaction has ended (use tx only inside the write callback)`,
      );
    }
  }
}

/**
 * The writes of one {@linkcode Realm.write} call. They become one changeset
 * with one stamp; several writes to one object are folded into one
 * instruction before commit (put then update → put with the merged fields;
 * anything then delete → delete; delete then put → put; update then update →
 * one update).
 *
 * Values are checked and copied when written: changing an object after
 * passing it in does not change what the realm stores. Strings are stored
 * as UTF-8, so a lone surrogate (half of an emoji cut by `slice`) becomes
 * U+FFFD when written, in type names, ids, field names and values alike:
 * the realm reads back what its store and every other replica hold.
 *
 * @example Folding writes to one object
 * ```ts
 * import { App, Credentials } from "@tether/sync";
 * import { serveSync } from "@tether/sync/server";
 * import assert from "node:assert/strict";
 *
 * await using server = await serveSync({
 *   port: 0,
 *   kv: ":memory:",
 *   auth: { allowAnonymous: true },
 *   logger: () => {},
 * });
 * await using app = new App({ baseUrl: server.url });
 * const user = await app.logIn(Credentials.anonymous());
 * await using realm = await user.openRealm({ path: "/~/tasks" });
 * const receipt = await realm.write((tx) => {
 *   tx.put("Task", "t1", { title: "Buy milk", done: false });
 *   tx.update("Task", "t1", { done: true });
 * });
 * assert.equal(receipt.clientVersion, 1);
 * assert.deepEqual(realm.get("Task", "t1"), { title: "Buy milk", done: true });
 * ```
 */
export class Transaction {
  #writes: TransactionWrites;

  /**
   * Transactions are created by {@linkcode Realm.write}; there is no use in
   * creating one yourself.
   *
   * @param exists Whether an object exists in the realm before this
   *   transaction (for `update` of a missing object).
   */
  constructor(exists: (type: string, id: string) => boolean) {
    this.#writes = pending ?? new TransactionWrites(exists);
  }

  /**
   * Creates the object, or replaces it whole (fields not listed are
   * removed).
   *
   * @param type The object's type name, e.g. `"Task"`.
   * @param id The object's id within its type.
   * @param fields Its fields; values are checked and copied.
   * @throws {TypeError} For an empty type or id, a field value a realm cannot
   *   store, or a transaction that has already ended.
   * @throws {RangeError} For a type or id longer than 512 bytes of UTF-8.
   */
  put(type: string, id: string, fields: Fields): void {
    this.#writes.put(type, id, fields);
  }

  /**
   * Sets some fields of an existing object, leaving the others.
   *
   * @param type The object's type name.
   * @param id The object's id.
   * @param fields The fields to set; values are checked and copied.
   * @throws {TypeError} If the object does not exist (in the realm, or
   *   earlier in this transaction), for a value a realm cannot store, or a
   *   transaction that has already ended.
   * @throws {RangeError} For a type or id longer than 512 bytes of UTF-8.
   */
  update(type: string, id: string, fields: Fields): void {
    this.#writes.update(type, id, fields);
  }

  /**
   * Removes the object. Deleting an object that does not exist is allowed
   * (it also removes writes to it that have not arrived yet from older
   * clients).
   *
   * @param type The object's type name.
   * @param id The object's id.
   * @throws {TypeError} For an empty type or id, or a transaction that has
   *   already ended.
   * @throws {RangeError} For a type or id longer than 512 bytes of UTF-8.
   */
  delete(type: string, id: string): void {
    this.#writes.delete(type, id);
  }
}
