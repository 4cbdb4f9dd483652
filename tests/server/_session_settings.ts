/**
 * The server settings part of a `SessionInit` that the session tests and
 * `bench/fanout_server_micro.ts` give a `Session` built by hand: protocol
 * limits at their defaults, no validation hook, no log.
 */
import type { SessionInit } from "../../src/server/session_init.ts";

/** Those settings, for a session that lives as long as `lifetime`. */
export function sessionSettings(lifetime: AbortSignal): Pick<
  SessionInit,
  | "validateChangeset"
  | "maxMessageBytes"
  | "downloadBatchBytes"
  | "highWaterBytes"
  | "lifetime"
  | "commitSignal"
  | "log"
> {
  return {
    validateChangeset: undefined,
    maxMessageBytes: 16 * 1024 * 1024,
    downloadBatchBytes: 64 * 1024,
    highWaterBytes: 1024 * 1024,
    lifetime,
    commitSignal: lifetime,
    log: () => {},
  };
}
