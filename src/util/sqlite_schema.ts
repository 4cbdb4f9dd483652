// This module is browser compatible.

/**
 * A bounds-checked reader of an SQLite file's header and first page: which
 * tables it lists, so whoever opens a path with Deno KV (the client's store,
 * the server's) can refuse another application's SQLite database before
 * Deno KV adds its own tables to it.
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

/** Where {@linkcode sniffSqliteFile} reads from: a file at its start. */
export interface ByteSource {
  /** Reads into `buffer` from the current position: a count, or null at the end. */
  read(buffer: Uint8Array): Promise<number | null>;
}

/**
 * What a file's first page says it is: `"empty"` (no bytes: SQLite's empty
 * database), `"not_sqlite"` (bytes without an SQLite header), `"foreign"`
 * (an SQLite database whose first page lists tables, none of them Deno
 * KV's: `tables` names them), or `"sqlite"` (a Deno KV file, or an SQLite
 * file whose first page does not say: an empty schema, one larger than the
 * page, or a page still in the write-ahead log).
 */
export type SqliteFileKind =
  | { kind: "empty" }
  | { kind: "not_sqlite" }
  | { kind: "foreign"; tables: string[] }
  | { kind: "sqlite" };

/**
 * Reads the header and first page of a file from `source` (at most one
 * page, 64 KiB, however large the file) and says what it is.
 */
export async function sniffSqliteFile(
  source: ByteSource,
): Promise<SqliteFileKind> {
  const header = await readUpTo(source, FILE_HEADER);
  if (header.length === 0) return { kind: "empty" };
  if (!isSqliteHeader(header)) return { kind: "not_sqlite" };
  const pageSize = sqlitePageSize(header);
  if (pageSize === 0) return { kind: "sqlite" };
  const page = new Uint8Array(pageSize);
  page.set(header);
  page.set(await readUpTo(source, pageSize - header.length), header.length);
  const tables = sqliteTables(page);
  if (
    tables === undefined || tables.length === 0 ||
    tables.some((table) => DENO_KV_TABLES.has(table))
  ) {
    return { kind: "sqlite" };
  }
  return { kind: "foreign", tables };
}

/**
 * Why a `"foreign"` file is refused, for an error message: its first tables
 * (five at most), quoted.
 */
export function foreignSqliteReason(tables: readonly string[]): string {
  const names = tables.slice(0, 5).map((table) => JSON.stringify(table));
  const more = tables.length > 5 ? ", …" : "";
  return `it is an SQLite database of another kind (tables ${
    names.join(", ")
  }${more}), not a Deno KV file`;
}

/** Reads up to `length` bytes from the source's current position. */
async function readUpTo(
  source: ByteSource,
  length: number,
): Promise<Uint8Array> {
  const bytes = new Uint8Array(length);
  let filled = 0;
  // Each read returns at least one byte or null (end of file).
  while (filled < length) {
    const read = await source.read(bytes.subarray(filled));
    if (read === null || read === 0) break;
    filled += read;
  }
  return bytes.subarray(0, filled);
}

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
