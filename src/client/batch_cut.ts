// This module is browser compatible.

/**
 * Cutting a batch of objects that enters a windowed live-query result to
 * the ones the result can keep, before entries are made for them.
 */

import type { CompiledQuery, KeyedRow, Row } from "../model/query.ts";
import { selectFirstAgainst } from "../util/sorted_arrays.ts";
import type { Scanned } from "./live_scan.ts";

/** Moves the entering records (no `old`) after the others, in place. */
export function enteringLast(records: Scanned[]): void {
  let held = 0;
  for (let i = 0; i < records.length; i++) {
    const item = records[i]!;
    if (item.old === undefined) continue;
    records[i] = records[held]!;
    records[held++] = item;
  }
}

/**
 * Reorders `rows[from..]` so that its first `count` are the first of them
 * in query order, comparing their fields with one extracted key per round
 * of the selection (extracting every row's keys would allocate per row).
 */
export function selectBest(
  rows: Row[],
  from: number,
  count: number,
  compiled: CompiledQuery,
): void {
  selectFirstAgainst(
    rows,
    from,
    count,
    (row): KeyedRow => ({ id: row.id, keys: compiled.keysOf(row.fields) }),
    (row, pivot) => compiled.compareToKeyed(row.id, row.fields, pivot),
  );
}
