/**
 * The server's log: one record per event, handed to a `logger` callback
 * (tests pass a collector) or printed one line each.
 */

/**
 * How much a record matters: `debug` for routine events (connections,
 * sessions, logins), `info` for lifecycle and client errors, `warn` for
 * retries and failed sessions, `error` for server faults.
 *
 * @example Dropping routine records
 * ```ts
 * import { consoleLogger, type Logger, type LogLevel } from "@tether/sync/server";
 *
 * const shown: LogLevel[] = ["info", "warn", "error"];
 * const logger: Logger = (record) => {
 *   if (shown.includes(record.level)) consoleLogger(record);
 * };
 * logger({ time: 0, level: "debug", event: "login", message: "not printed" });
 * ```
 */
export type LogLevel = "debug" | "info" | "warn" | "error";

/**
 * One thing that happened in the server. Every error the server sends a
 * client is logged once, as `error_sent` with its `code`.
 *
 * @example Collecting records in a test
 * ```ts
 * import { type LogRecord, serveSync } from "@tether/sync/server";
 * import assert from "node:assert/strict";
 *
 * const records: LogRecord[] = [];
 * const server = await serveSync({
 *   port: 0,
 *   kv: ":memory:",
 *   auth: { allowAnonymous: true },
 *   logger: (record) => records.push(record),
 * });
 * await server.shutdown();
 * assert.deepEqual(records.map((record) => record.event), [
 *   "listening",
 *   "shutting_down",
 *   "stopped",
 * ]);
 * ```
 */
export interface LogRecord {
  /** Epoch milliseconds. */
  time: number;
  /** How much the record matters. */
  level: LogLevel;
  /** A stable snake_case name, e.g. `"connection_opened"`, `"error_sent"`. */
  event: string;
  /** Human-readable detail. */
  message: string;
  /** The connection's number within this server, when there is one. */
  connection?: number;
  /** The session id, when the event concerns one session. */
  session?: number;
  /** The authenticated user, when known. */
  userId?: string;
  /** The resolved realm path, when the event concerns a realm. */
  path?: string;
  /** The sync error code sent, for `error_sent`. */
  code?: string;
  /** The underlying error, for failures. */
  error?: unknown;
}

/**
 * Receives every log record. A logger that throws is ignored for that
 * record.
 *
 * @example Only warnings and errors, as JSON lines
 * ```ts
 * import type { Logger } from "@tether/sync/server";
 *
 * const logger: Logger = (record) => {
 *   if (record.level === "warn" || record.level === "error") {
 *     console.error(JSON.stringify({ ...record, error: String(record.error) }));
 *   }
 * };
 * logger({ time: 0, level: "debug", event: "login", message: "quiet" });
 * ```
 */
export type Logger = (record: LogRecord) => void;

/**
 * The default logger: prints a record as one line (time, level, event, the
 * message, then the context as `key=value` pairs) with `console.log`,
 * `console.warn` or `console.error` by level.
 *
 * @param record The record to print.
 * @returns Nothing.
 *
 * @example One line per record
 * ```ts
 * import { consoleLogger } from "@tether/sync/server";
 *
 * consoleLogger({
 *   time: Date.UTC(2026, 0, 1),
 *   level: "info",
 *   event: "listening",
 *   message: "Tether sync server listening on http://127.0.0.1:8080",
 * });
 * // 2026-01-01T00:00:00.000Z info listening: Tether sync server listening on http://127.0.0.1:8080
 * ```
 */
export function consoleLogger(record: LogRecord): void {
  let line = `${
    new Date(record.time).toISOString()
  } ${record.level} ${record.event}: ${record.message}`;
  if (record.connection !== undefined) {
    line += ` connection=${record.connection}`;
  }
  if (record.session !== undefined) line += ` session=${record.session}`;
  if (record.userId !== undefined) line += ` user=${record.userId}`;
  if (record.path !== undefined) line += ` path=${record.path}`;
  if (record.code !== undefined) line += ` code=${record.code}`;
  if (record.error !== undefined) {
    const error = record.error;
    line += ` error=${
      JSON.stringify(error instanceof Error ? error.message : String(error))
    }`;
  }
  if (record.level === "error") console.error(line);
  else if (record.level === "warn") console.warn(line);
  else console.log(line);
}

/**
 * How {@linkcode createConsoleLogger} prints: `pretty` is
 * {@linkcode consoleLogger}'s one line per record; `json` is one JSON object
 * per line on stdout (`time` as an ISO string, `error` as its message), for
 * log collectors.
 *
 * @example
 * ```ts
 * import type { LogFormat } from "@tether/sync/server";
 *
 * const format: LogFormat = "json";
 * console.log(format);
 * ```
 */
export type LogFormat = "pretty" | "json";

/** The levels in increasing order of importance. */
const LEVEL_RANK: Record<LogLevel, number> = {
  debug: 0,
  info: 1,
  warn: 2,
  error: 3,
};

/**
 * Options of {@linkcode createConsoleLogger}.
 *
 * @example Warnings and errors only, as JSON
 * ```ts
 * import type { ConsoleLoggerOptions } from "@tether/sync/server";
 *
 * const options: ConsoleLoggerOptions = { level: "warn", format: "json" };
 * console.log(options.level);
 * ```
 */
export interface ConsoleLoggerOptions {
  /**
   * The least important level printed.
   *
   * @default {"info"}
   */
  level?: LogLevel;
  /**
   * Lines for people or for machines.
   *
   * @default {"pretty"}
   */
  format?: LogFormat;
}

/**
 * Returns a logger that prints records of `level` and above, as
 * {@linkcode consoleLogger} does (`pretty`) or as one JSON object per line
 * (`json`). What the command line's `--log-level` and `--log-format` use.
 *
 * @param options Level and format.
 * @returns The logger.
 * @throws {TypeError} For an unknown level or format.
 *
 * @example Only what matters, one JSON object per line
 * ```ts
 * import { createConsoleLogger, serveSync } from "@tether/sync/server";
 *
 * await using _server = await serveSync({
 *   port: 0,
 *   kv: ":memory:",
 *   auth: { allowAnonymous: true },
 *   logger: createConsoleLogger({ level: "warn", format: "json" }),
 * });
 * ```
 */
export function createConsoleLogger(
  options: ConsoleLoggerOptions = {},
): Logger {
  const level = options.level ?? "info";
  const format = options.format ?? "pretty";
  if (!Object.hasOwn(LEVEL_RANK, level)) {
    throw new TypeError(
      `Unknown log level ${
        JSON.stringify(level)
      }; use debug, info, warn or error`,
    );
  }
  if (format !== "pretty" && format !== "json") {
    throw new TypeError(
      `Unknown log format ${JSON.stringify(format)}; use pretty or json`,
    );
  }
  const least = LEVEL_RANK[level];
  return (record) => {
    if (LEVEL_RANK[record.level] < least) return;
    if (format === "pretty") consoleLogger(record);
    else console.log(formatLogRecordJson(record));
  };
}

/**
 * One record as one line of JSON: `time` as an ISO string, the other fields
 * as they are, `error` as its message (and `errorName` for an `Error`).
 *
 * @param record The record.
 * @returns A single line of JSON (no line feed inside).
 *
 * @example
 * ```ts
 * import { formatLogRecordJson } from "@tether/sync/server";
 * import assert from "node:assert/strict";
 *
 * assert.equal(
 *   formatLogRecordJson({ time: 0, level: "info", event: "stopped", message: "Stopped" }),
 *   '{"time":"1970-01-01T00:00:00.000Z","level":"info","event":"stopped","message":"Stopped"}',
 * );
 * ```
 */
export function formatLogRecordJson(record: LogRecord): string {
  const { time, error, ...rest } = record;
  const line: Record<string, unknown> = {
    time: new Date(time).toISOString(),
    ...rest,
  };
  if (error !== undefined) {
    if (error instanceof Error) {
      line.error = error.message;
      line.errorName = error.name;
    } else line.error = String(error);
  }
  return JSON.stringify(line);
}

/** Writes records with the current time filled in. */
export type Log = (
  level: LogLevel,
  event: string,
  message: string,
  context?: Omit<LogRecord, "time" | "level" | "event" | "message">,
) => void;

/** Wraps a logger so callers need not fill in the time or guard throws. */
export function createLog(logger: Logger, now: () => number): Log {
  return (level, event, message, context) => {
    try {
      logger({ time: now(), level, event, message, ...context });
    } catch {
      // A logger that throws must not take a connection down with it.
    }
  };
}
