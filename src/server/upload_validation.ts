import type { UploadChangeset } from "../model/changeset.ts";
import { isValidHlc } from "../model/hlc.ts";
import { findRepeatedObject } from "../model/object_store.ts";
import { MAX_NAME_BYTES } from "../model/transaction.ts";
import {
  keyBytes,
  keyPartBytes,
  MAX_KEY_BYTES,
  objectKey,
} from "./storage/keys.ts";
import { utf8Length } from "../util/utf8_length.ts";

/**
 * What the server refuses in an UPLOAD with `bad_changeset`
 * (docs/ARCHITECTURE.md "Data model"; docs/SERVER.md lists the rules).
 */

/**
 * Longest type name or object id accepted, in UTF-8 bytes (the clients'
 * transactions refuse longer ones on write).
 */
export { MAX_NAME_BYTES };

/**
 * Returns why an upload's changesets are invalid, or null when they are
 * fine: client versions must be positive and increasing, stamps in range,
 * instructions must carry no stamp of their own (the changeset's stamp is
 * the transaction's), touch each object at most once, and name types and
 * ids of at most {@linkcode MAX_NAME_BYTES} bytes that, with the path of
 * `realm`, make a snapshot record's key Deno KV can store.
 */
export function findInvalidUpload(
  changesets: readonly UploadChangeset[],
  realm: string,
): string | null {
  // Room a snapshot record's key leaves for its type name and object id.
  const room = MAX_KEY_BYTES - keyBytes(objectKey(realm));
  let previous = 0;
  for (const changeset of changesets) {
    const { clientVersion } = changeset;
    if (!Number.isSafeInteger(clientVersion) || clientVersion <= previous) {
      return `client version ${clientVersion} does not follow ${previous}`;
    }
    previous = clientVersion;
    if (!isValidHlc(changeset.stamp)) {
      return `changeset ${clientVersion} has a stamp out of range`;
    }
    for (const instruction of changeset.instructions) {
      if (instruction.stamp !== null) {
        return `changeset ${clientVersion} has an instruction with its own stamp`;
      }
      if (
        utf8Length(instruction.type) > MAX_NAME_BYTES ||
        utf8Length(instruction.id) > MAX_NAME_BYTES
      ) {
        return `changeset ${clientVersion} has a type name or object id longer than ${MAX_NAME_BYTES} bytes`;
      }
      // Measured only when the bound of three bytes per unit does not fit.
      if (
        4 + 3 * (instruction.type.length + instruction.id.length) > room &&
        keyPartBytes(instruction.type) + keyPartBytes(instruction.id) > room
      ) {
        return `changeset ${clientVersion} names an object whose storage key, with the realm path, is longer than ${MAX_KEY_BYTES} bytes`;
      }
    }
    const repeated = findRepeatedObject(changeset.instructions);
    if (repeated !== null) return `changeset ${clientVersion}: ${repeated}`;
  }
  return null;
}
