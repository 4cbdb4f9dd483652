// This module is browser compatible.

/**
 * How a session carries out a client reset, from the server's
 * `client_reset_required` to the local state replaced by the server's
 * (docs/CLIENT.md "Client reset"); the session is seen through the
 * {@linkcode ResetHost} it implements.
 */

import type { ClientReset } from "./client_reset.ts";
import type { LocalRealm } from "./local_realm.ts";
import type { Realm } from "./realm.ts";
import { SyncError } from "./sync_error.ts";

/** What a client reset needs from its session. */
export interface ResetHost {
  /** The realm path. */
  readonly path: string;
  /** The reset's options and staging state. */
  readonly reset: ClientReset;
  /** The local copy. */
  readonly local: LocalRealm;
  /** The realm `hook` receives (read-only for onBefore), if it is open. */
  realm(hook: "onBefore" | "onAfter"): Realm | undefined;
  /** Puts the session in "error" for good. */
  fail(error: SyncError): void;
  /** Leaves the binding (without UNBIND). */
  leave(): void;
  /** Reports the reset: a change to "disconnected" carrying `error`. */
  report(error: SyncError): void;
  /** Binds again (staging the server's state) if the session is live. */
  rebind(): void;
  /** Rejects the receipt of a write the reset dropped. */
  dropped(clientVersion: number, error: SyncError): void;
  /** Everything at or below `acknowledged` is settled; uploads restart. */
  settled(acknowledged: number): void;
  /** Writes a log record. */
  log(level: "info" | "warn" | "error", event: string, message: string): void;
}

/**
 * The server cannot continue this realm's history: fail (`manual`), or
 * leave the binding, tell the user (`onBefore`, a connection-state change
 * with `client_reset`) and bind again with no identity to stage the
 * server's state.
 */
export async function beginClientReset(
  host: ResetHost,
  serverError: SyncError,
): Promise<void> {
  const mode = host.reset.mode;
  if (mode === "manual") {
    host.fail(
      new SyncError(
        "client_reset_required",
        `${serverError.message} (clientReset mode "manual")`,
        { isFatal: true, willRetry: false, cause: serverError },
      ),
    );
    return;
  }
  const error = new SyncError(
    "client_reset",
    `The server cannot continue the local history of ${host.path}; resetting it (${mode}): ${serverError.message}`,
    { cause: serverError },
  );
  host.leave();
  host.reset.begin();
  host.report(error);
  await callHook(host, "onBefore", () => {
    const realm = host.realm("onBefore");
    if (realm !== undefined) return host.reset.onBefore?.(realm);
  });
  host.rebind();
}

/** The staging download caught up: replace the local state with it. */
export async function finishClientReset(host: ResetHost): Promise<void> {
  const staged = host.reset.finish();
  const mode = host.reset.mode === "manual" ? "recover" : host.reset.mode;
  const result = await host.local.reset({
    staged: staged.store,
    identity: staged.identity,
    downloadCursor: staged.downloadCursor,
    downloadCursorSalt: staged.downloadCursorSalt,
    mode,
  });
  for (const version of result.discarded) {
    host.dropped(
      version,
      new SyncError(
        "client_reset",
        `Write ${version} to ${host.path} was dropped by a client reset (discard)`,
      ),
    );
  }
  host.settled(result.acknowledged);
  host.log(
    "info",
    "session_client_reset",
    `Reset ${host.path}: ${result.recovered.length} writes re-applied, ${result.synthesized.length} synthesized, ${result.discarded.length} dropped`,
  );
  const counts = {
    recovered: result.recovered.length +
      (result.synthesized.length > 0 ? 1 : 0),
    discarded: result.discarded.length,
  };
  await callHook(host, "onAfter", () => {
    const realm = host.realm("onAfter");
    if (realm !== undefined) return host.reset.onAfter?.(realm, counts);
  });
}

/** Runs a hook; one that throws is logged and the reset goes on. */
async function callHook(
  host: ResetHost,
  name: string,
  call: () => void | Promise<void>,
): Promise<void> {
  try {
    await call();
  } catch (error) {
    host.log(
      "error",
      "session_callback",
      `clientReset.${name} threw: ${
        error instanceof Error ? error.message : String(error)
      }`,
    );
  }
}
