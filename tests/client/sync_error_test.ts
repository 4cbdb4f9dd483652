import assert from "node:assert/strict";
import { SyncError, syncErrorFromWire } from "../../src/client/sync_error.ts";
import {
  ERROR_CODES,
  errorCodeNumber,
} from "../../src/protocol/error_codes.ts";

Deno.test("SyncError takes isFatal and willRetry from the error table", () => {
  for (const name of Object.keys(ERROR_CODES) as (keyof typeof ERROR_CODES)[]) {
    const error = new SyncError(name, "detail");
    assert.equal(error.name, "SyncError");
    assert.equal(error.code, name);
    assert.equal(error.message, "detail");
    assert.equal(error.isFatal, ERROR_CODES[name].isFatal);
    assert.equal(
      error.willRetry,
      ERROR_CODES[name].tryAgain && !ERROR_CODES[name].isFatal,
    );
  }
  const cause = new Error("under");
  const error = new SyncError("connection_lost", "x", {
    cause,
    willRetry: false,
  });
  assert.equal(error.cause, cause);
  assert.equal(error.willRetry, false);
  assert.throws(() => new SyncError("nonsense" as never, "x"), TypeError);
});

Deno.test("syncErrorFromWire() names known codes and maps unknown ones by their try-again flag", () => {
  const denied = syncErrorFromWire(
    errorCodeNumber("permission_denied"),
    false,
    "no",
  );
  assert.deepEqual([
    denied.code,
    denied.message,
    denied.isFatal,
    denied.willRetry,
  ], ["permission_denied", "no", true, false]);
  const busy = syncErrorFromWire(
    errorCodeNumber("session_failed"),
    true,
    "busy",
  );
  assert.deepEqual([busy.code, busy.isFatal, busy.willRetry], [
    "session_failed",
    false,
    true,
  ]);
  const unknownRetry = syncErrorFromWire(999, true, "later");
  assert.deepEqual([unknownRetry.code, unknownRetry.message], [
    "internal_server_error",
    "Unknown server error 999: later",
  ]);
  assert.equal(
    syncErrorFromWire(998, false, "never").code,
    "protocol_violation",
  );
});
