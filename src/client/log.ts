// This module is browser compatible.

import type { SyncError } from "./sync_error.ts";

/**
 * One line for the `logger` hook: a lifecycle step, a state change, a retry
 * or an error. Tether logs one record per change, never one per retry tick,
 * so an offline client does not flood the log.
 *
 * @example Printing records
 * ```ts
 * import type { LogRecord } from "@tether/sync";
 *
 * const logger = (record: LogRecord) => {
 *   if (record.level !== "debug") console.error(`[${record.event}] ${record.message}`);
 * };
 * logger({ level: "info", event: "connection_state", message: "connected", time: Date.now() });
 * ```
 */
export interface LogRecord {
  /** How much it matters. */
  level: "debug" | "info" | "warn" | "error";
  /**
   * What happened, e.g. `"connection_state"`, `"connection_retry"`,
   * `"session_error"`, `"token_refresh"`.
   */
  event: string;
  /** A sentence for humans. */
  message: string;
  /** When, in epoch milliseconds (from the app's clock). */
  time: number;
  /** The realm path, for session events. */
  path?: string;
  /** The error behind the event, if any. */
  error?: SyncError;
}

/**
 * Receives {@linkcode LogRecord}s. It must not throw; what it throws is
 * ignored.
 *
 * @example Warnings and errors to the console
 * ```ts
 * import type { Logger } from "@tether/sync";
 *
 * const logger: Logger = (record) => {
 *   if (record.level === "warn" || record.level === "error") console.warn(record.message);
 * };
 * logger({ level: "debug", event: "x", message: "ignored", time: 0 });
 * ```
 */
export type Logger = (record: LogRecord) => void;

/** Calls a logger, if any, shielding the caller from its exceptions. */
export function emitLog(
  logger: Logger | undefined,
  record: LogRecord,
): void {
  if (logger === undefined) return;
  try {
    logger(record);
  } catch {
    // A broken logger must not break syncing.
  }
}
