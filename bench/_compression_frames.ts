/**
 * The DOWNLOAD frames the compression bench and report measure, smallest
 * first. The label is the number of changesets × instructions.
 *
 * @module
 */

import type { DownloadMessage } from "../src/protocol/messages.ts";
import { buildDownloadBatch } from "./_corpora.ts";

/** One measured frame. */
export interface CompressionFrame {
  label: string;
  message: DownloadMessage;
}

const SHAPES: readonly [number, number][] = [
  [1, 2],
  [1, 5],
  [1, 10],
  [1, 25],
  [1, 50],
  [2, 50],
  [3, 50],
  [4, 50],
  [6, 50],
  [8, 50],
  [12, 50],
  [20, 50],
  [50, 50],
  [200, 50],
];

/** The frames, built once from the corpus seed. */
export const COMPRESSION_FRAMES: readonly CompressionFrame[] = SHAPES.map((
  [changesets, instructions],
) => ({
  label: `${changesets}x${instructions}`,
  message: buildDownloadBatch(changesets, instructions),
}));
