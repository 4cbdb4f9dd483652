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
import { writeDownloadHeader } from "../protocol/encode.ts";
import type { DownloadMessage } from "../protocol/messages.ts";
import { Writer, writeRaw, writeVarUint } from "../protocol/writer.ts";

// The shared batch last built from a given first changeset; a batch with the
// same changeset objects in the same order reuses it (and so its block).
const batches = new WeakMap<DownloadChangeset, DownloadChangeset[]>();
/**
 * A shared batch's encoded block (made on its first send), and the last
 * header sent with it: the sessions of a fan-out often send the very same
 * DOWNLOAD (their clients number their sessions alike, and are equally
 * caught up), so the whole frame is kept once a header repeats.
 */
interface SharedBlock {
  block: Uint8Array;
  // The whole frame of the header below, once that header came twice.
  frame: Uint8Array<ArrayBuffer> | null;
  sessionId: number;
  serverVersion: number;
  salt: number | undefined;
  acknowledged: number;
  downloadableBytes: number;
  changesetBytes: number;
}

// The shared state of each batch from shareBatch.
const blocks = new WeakMap<readonly DownloadChangeset[], SharedBlock>();
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
  blocks.set(changesets, {
    block: EMPTY,
    frame: null,
    // No header yet: session ids are never negative.
    sessionId: -1,
    serverVersion: 0,
    salt: undefined,
    acknowledged: 0,
    downloadableBytes: 0,
    changesetBytes: 0,
  });
  return changesets;
}

// The shared batch of all the changesets of an array of history items.
const itemBatches = new WeakMap<
  readonly { changeset: DownloadChangeset }[],
  DownloadChangeset[]
>();

/**
 * {@linkcode shareBatch} of every changeset of `items`, built once per
 * array: the sessions of a fan-out at the same cursor are handed the same
 * array of history items by their hub (`RealmHub.readCached`), and so need
 * not build the batch each.
 *
 * @param items Stored history items (from the hub), in version order.
 * @returns The batch to put into the DOWNLOAD.
 */
export function shareItems(
  items: readonly { changeset: DownloadChangeset }[],
): DownloadChangeset[] {
  let batch = itemBatches.get(items);
  if (batch === undefined) {
    batch = shareBatch(items.map((item) => item.changeset));
    itemBatches.set(items, batch);
  }
  return batch;
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
 * valid until its next use, or a frame kept for the batch when the same
 * header was sent with it just before (either way not to be written to);
 * its header is what `encodeMessage` writes (the salted form when the
 * message has a salt).
 */
export function encodeSharedDownload(
  message: DownloadMessage,
  writer: Writer,
): Uint8Array<ArrayBuffer> | null {
  const changesets = message.changesets;
  const shared = blocks.get(changesets);
  if (shared === undefined) return null;
  const repeated = shared.sessionId === message.sessionId &&
    shared.serverVersion === message.serverVersion &&
    shared.salt === message.serverVersionSalt &&
    shared.acknowledged === message.lastIntegratedClientVersion &&
    shared.downloadableBytes === message.downloadableBytes &&
    shared.changesetBytes === message.changesetBytes;
  if (repeated && shared.frame !== null) return shared.frame;
  if (!repeated) {
    shared.frame = null;
    shared.sessionId = message.sessionId;
    shared.serverVersion = message.serverVersion;
    shared.salt = message.serverVersionSalt;
    shared.acknowledged = message.lastIntegratedClientVersion;
    shared.downloadableBytes = message.downloadableBytes;
    shared.changesetBytes = message.changesetBytes;
  }
  if (shared.block === EMPTY) shared.block = encodeBlock(changesets);
  writer.reset();
  writeDownloadHeader(writer, message);
  writeRaw(writer, shared.block);
  const view = writer.bytes.subarray(0, writer.pos);
  if (!repeated) return view;
  // The header came twice in a row: keep the frame, and the block as its
  // tail rather than beside it. On an ArrayBuffer of its own, as the
  // writer's frames are: `slice()` of a small view makes a typed array in
  // V8's heap, which Deno's `WebSocket.send` took longer with in two of
  // three profiles (docs/PERFORMANCE.md "Fan-out: the server's part").
  const frame = new Uint8Array(new ArrayBuffer(view.length));
  frame.set(view);
  shared.block = frame.subarray(frame.length - shared.block.length);
  shared.frame = frame;
  return frame;
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
