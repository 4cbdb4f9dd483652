// This module is browser compatible.

/**
 * The client's check of one local write, made before anything is
 * committed: the protocol's `checkWrite`, as the errors a `write()` throws.
 */

import type { UploadChangeset } from "../model/changeset.ts";
import { checkWrite } from "../protocol/write_check.ts";

export { MAX_WRITE_BYTES } from "../protocol/write_check.ts";

/**
 * Encodes a changeset the way it will be uploaded and decodes it back with
 * the protocol's default limits, so a write the server would refuse is
 * refused here, before anything is committed. Returns its encoded size.
 *
 * @throws {TypeError} For a value the encoder refuses.
 * @throws {RangeError} For a changeset over the cap or a decoder limit.
 */
export function checkEncodable(changeset: UploadChangeset): number {
  const check = checkWrite(changeset);
  if (check.ok) return check.bytes;
  const message = `Cannot write: ${check.message}`;
  const options = check.cause === undefined
    ? undefined
    : { cause: check.cause };
  throw check.stage === "encode"
    ? new TypeError(message, options)
    : new RangeError(message, options);
}
