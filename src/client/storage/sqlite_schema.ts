// This module is browser compatible.

/**
 * Reads the table names an SQLite file lists on its first page, so a Deno KV
 * store refuses another application's SQLite database before Deno KV would
 * add its own tables to it.
 */

const MAGIC = "SQLite format 3\0";
/** Bytes of the file header, before page 1's b-tree header. */
const FILE_HEADER = 100;
const LEAF_TABLE_PAGE = 0x0d;

/** The tables Deno KV creates in its SQLite file. */
export const DENO_KV_TABLES: ReadonlySet<string> = new Set([
  "migration_state",
  "data_version",
  "kv",
  "queue",
  "queue_running",
]);

/** Whether `bytes` (a file's start) is an SQLite file's header. */
export function isSqliteHeader(bytes: Uint8Array): boolean {
  if (bytes.length < FILE_HEADER) return false;
  for (let index = 0; index < MAGIC.length; index++) {
    if (bytes[index] !== MAGIC.charCodeAt(index)) return false;
  }
  return true;
}

/** The page size an SQLite header declares (0 for a bad one). */
export function sqlitePageSize(header: Uint8Array): number {
  const size = (header[16]! << 8) | header[17]!;
  if (size === 1) return 65_536;
  // A power of two from 512 to 32,768.
  return size >= 512 && size <= 32_768 && (size & (size - 1)) === 0 ? size : 0;
}

/**
 * The names of the tables listed on page 1 (the schema table's root) of an
 * SQLite file, given its first page; undefined when the bytes are not an
 * SQLite file or the schema does not fit on page 1 (too many entries to
 * list here), so nothing can be said. Every read is bounds-checked.
 */
export function sqliteTables(page: Uint8Array): string[] | undefined {
  if (!isSqliteHeader(page)) return undefined;
  const pageSize = sqlitePageSize(page);
  if (pageSize === 0 || page.length < pageSize) return undefined;
  const decoder = textDecoder(page[59]!);
  if (decoder === undefined) return undefined;
  const view = new DataView(page.buffer, page.byteOffset, pageSize);
  if (page[FILE_HEADER] !== LEAF_TABLE_PAGE) return undefined;
  const cells = view.getUint16(FILE_HEADER + 3);
  const pointers = FILE_HEADER + 8;
  if (pointers + 2 * cells > pageSize) return undefined;
  const tables: string[] = [];
  for (let cell = 0; cell < cells; cell++) {
    const columns = recordColumns(
      page,
      pageSize,
      view.getUint16(pointers + 2 * cell),
      2,
    );
    if (columns === undefined) return undefined;
    const [type, name] = columns;
    if (type === undefined || name === undefined) return undefined;
    if (decoder.decode(type) === "table") tables.push(decoder.decode(name));
  }
  return tables;
}

function textDecoder(encoding: number): TextDecoder | undefined {
  // Header offset 56 is a big-endian 32-bit number: 1, 2 or 3.
  if (encoding === 1) return new TextDecoder("utf-8");
  if (encoding === 2) return new TextDecoder("utf-16le");
  if (encoding === 3) return new TextDecoder("utf-16be");
  return undefined;
}

/** A varint at `offset` (at most 9 bytes), or undefined past `end`. */
function varint(
  bytes: Uint8Array,
  offset: number,
  end: number,
): { value: number; next: number } | undefined {
  let value = 0;
  for (let index = 0; index < 9; index++) {
    if (offset + index >= end) return undefined;
    const byte = bytes[offset + index]!;
    if (index === 8) return { value: value * 256 + byte, next: offset + 9 };
    value = value * 128 + (byte & 0x7f);
    if ((byte & 0x80) === 0) return { value, next: offset + index + 1 };
  }
  return undefined;
}

/**
 * The first `count` text or blob columns of the record in the table leaf
 * cell at `offset`; undefined when they are not all text on this page.
 */
function recordColumns(
  page: Uint8Array,
  end: number,
  offset: number,
  count: number,
): (Uint8Array | undefined)[] | undefined {
  const payloadSize = varint(page, offset, end);
  if (payloadSize === undefined) return undefined;
  const rowid = varint(page, payloadSize.next, end);
  if (rowid === undefined) return undefined;
  const start = rowid.next;
  const headerSize = varint(page, start, end);
  if (headerSize === undefined) return undefined;
  const headerEnd = start + headerSize.value;
  if (headerEnd > end) return undefined;
  const columns: (Uint8Array | undefined)[] = [];
  let at = headerSize.next;
  let body = headerEnd;
  while (columns.length < count && at < headerEnd) {
    const serial = varint(page, at, headerEnd);
    if (serial === undefined) return undefined;
    at = serial.next;
    const type = serial.value;
    if (type < 13 || type % 2 === 0) return undefined;
    const length = (type - 13) / 2;
    if (body + length > end) return undefined;
    columns.push(page.subarray(body, body + length));
    body += length;
  }
  return columns.length === count ? columns : undefined;
}
