/**
 * DOWNLOAD changeset blocks encoded once and sent by every session that
 * sends the same changesets (fan-out, docs/PERFORMANCE.md "Fan-out").
 *
 * Sessions at the same cursor read the same `HistoryItem` objects from their
 * realm's hub, so a batch built from the same changeset objects in the same
 * order encodes to the same block: the block is the last part of a DOWNLOAD
 * (docs/PROTOCOL.md §5) and does not depend on the header before it. A
 * session marks such a batch with {@linkcode shareBatch}; the frame writer
 * then encodes the header and copies the block instead of encoding every
 * changeset again for every session.
 */

import type { DownloadChangeset } from "../model/changeset.ts";
import { BlockWriter } from "../protocol/block.ts";
import { writeDownloadChangeset } from "../protocol/changesets.ts";
import { isSalted, writeVersionSalt } from "../protocol/encode.ts";
import {
  type DownloadMessage,
  MessageType,
  SALTED_DOWNLOAD_TAG,
} from "../protocol/messages.ts";
import { Writer, writeRaw, writeU8, writeVarUint } from "../protocol/writer.ts";

// The shared batch last built from a given first changeset; a batch with the
// same changeset objects in the same order reuses it (and so its block).
const batches = new WeakMap<DownloadChangeset, DownloadChangeset[]>();
// Encoded blocks of shared batches, made on the first send.
const blocks = new WeakMap<readonly DownloadChangeset[], Uint8Array>();
const blockWriter = new BlockWriter();
const blockFrame = new Writer(4 * 1024);

/**
 * Returns a batch equal to `changesets` that may share its encoded block
 * with other sessions: an earlier batch of the very same changeset objects
 * when there is one, else `changesets` itself. The batch returned is frozen:
 * the changesets it holds are the hub's, immutable once stored.
 *
 * @param changesets Stored changesets (from the hub), in version order.
 * @returns The batch to put into the DOWNLOAD.
 */
export function shareBatch(
  changesets: DownloadChangeset[],
): DownloadChangeset[] {
  const first = changesets[0];
  if (first === undefined) return changesets;
  const known = batches.get(first);
  if (known !== undefined && sameBatch(known, changesets)) return known;
  Object.freeze(changesets);
  batches.set(first, changesets);
  blocks.set(changesets, EMPTY);
  return changesets;
}

// Marks a shared batch whose block is not encoded yet.
const EMPTY = new Uint8Array(0);

function sameBatch(
  a: readonly DownloadChangeset[],
  b: readonly DownloadChangeset[],
): boolean {
  if (a.length !== b.length) return false;
  for (let index = 0; index < a.length; index++) {
    if (a[index] !== b[index]) return false;
  }
  return true;
}

/**
 * Encodes a DOWNLOAD whose batch came from {@linkcode shareBatch} into
 * `writer`, the block encoded once for every session; returns null for any
 * other message (encode it as usual). The frame is a view into `writer`,
 * valid until its next use; its header is what `encodeMessage` writes (the
 * salted form when the message has a salt).
 */
export function encodeSharedDownload(
  message: DownloadMessage,
  writer: Writer,
): Uint8Array<ArrayBuffer> | null {
  const changesets = message.changesets;
  let block = blocks.get(changesets);
  if (block === undefined) return null;
  if (block === EMPTY) {
    block = encodeBlock(changesets);
    blocks.set(changesets, block);
  }
  writer.reset();
  const salted = isSalted(message.serverVersionSalt);
  writeU8(writer, salted ? SALTED_DOWNLOAD_TAG : MessageType.Download);
  writeVarUint(writer, message.sessionId);
  writeVarUint(writer, message.serverVersion);
  if (salted) writeVersionSalt(writer, message.serverVersionSalt);
  writeVarUint(writer, message.lastIntegratedClientVersion);
  writeVarUint(writer, message.downloadableBytes);
  writeVarUint(writer, message.changesetBytes);
  writeRaw(writer, block);
  return writer.bytes.subarray(0, writer.pos);
}

/** The changeset block of a DOWNLOAD holding `changesets` (§5). */
function encodeBlock(changesets: readonly DownloadChangeset[]): Uint8Array {
  blockFrame.reset();
  try {
    blockWriter.begin(blockFrame);
    writeVarUint(blockWriter.out, changesets.length);
    for (let index = 0; index < changesets.length; index++) {
      writeDownloadChangeset(blockWriter, changesets[index]!);
    }
    blockWriter.end();
    return blockFrame.finish();
  } finally {
    blockWriter.release();
  }
}
