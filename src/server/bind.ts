/**
 * Handling one BIND, from the realm path to a `Session` ready to start
 * (`docs/ARCHITECTURE.md` "Session flow on one connection").
 */

import { type BindMessage, MessageType } from "../protocol/messages.ts";
import type { Permission } from "./permissions.ts";
import type { RealmHub } from "./realm_hub.ts";
import { resolveRealmPath } from "./realm_path.ts";
import type { ServerContext } from "./server_context.ts";
import { Session } from "./session.ts";
import type { SessionTransport } from "./session_init.ts";
import { SessionError } from "./session_error.ts";
import { readVersionMeta } from "./storage/history.ts";
import { allocateIdentity, readIdentity } from "./storage/identities.ts";
import { firstRejectionAfter, pruneRejections } from "./storage/rejections.ts";
import { abortable } from "../util/abort.ts";

/** What a BIND needs from its connection. */
export interface BindContext {
  server: ServerContext;
  /** The authenticated user. */
  userId: string;
  /** The protocol version the connection negotiated. */
  protocolVersion: number;
  /** Aborts when the socket has closed: the bind then gives up quietly. */
  gone: AbortSignal;
  /** Sends IDENT on the socket. */
  send: SessionTransport["send"];
  /** The new session's link to the connection. */
  transport: SessionTransport;
}

/**
 * How a BIND ended: a session (not started), a session-scoped error to send
 * (with the resolved path once known), or nothing because the connection
 * closed meanwhile.
 */
export type BindOutcome =
  | { ok: true; session: Session }
  | { ok: false; error: SessionError; path?: string }
  | null;

/**
 * Resolves the path, asks the permissions callback, then opens the session
 * against storage (identity, cursor checks), sending IDENT when the client
 * had no identity. The realm's hub is held by the session it returns and
 * released on every other outcome.
 */
export async function bindSession(
  message: BindMessage,
  context: BindContext,
): Promise<BindOutcome> {
  const { server, userId, gone } = context;
  const resolved = resolveRealmPath(message.path, userId);
  if (!resolved.ok) {
    return {
      ok: false,
      error: new SessionError(
        "invalid_path",
        `Cannot bind: ${resolved.reason}`,
      ),
    };
  }
  const path = resolved.path;
  let permission: Permission;
  try {
    permission = await abortable(
      Promise.resolve().then(() => server.settings.permissions(userId, path)),
      gone,
    );
  } catch (error) {
    if (gone.aborted) return null;
    return {
      ok: false,
      error: new SessionError(
        "session_failed",
        "Cannot bind: the permission check failed",
        { cause: error },
      ),
      path,
    };
  }
  if (permission !== "readwrite" && permission !== "read") {
    return {
      ok: false,
      error: new SessionError(
        "permission_denied",
        `Cannot bind: user ${JSON.stringify(userId)} may not access ${
          JSON.stringify(path)
        }`,
      ),
      path,
    };
  }
  if (gone.aborted) return null;
  const hub = server.registry.acquire(path);
  let session: Session;
  try {
    session = await openSession(message, path, permission, hub, context);
  } catch (error) {
    server.registry.release(hub);
    return {
      ok: false,
      error: error instanceof SessionError ? error : new SessionError(
        "session_failed",
        "Cannot bind: storage failed",
        { cause: error },
      ),
      path,
    };
  }
  if (gone.aborted) {
    server.registry.release(hub);
    return null;
  }
  return { ok: true, session };
}

async function openSession(
  message: BindMessage,
  path: string,
  permission: Permission,
  hub: RealmHub,
  context: BindContext,
): Promise<Session> {
  const { kv, retry, settings } = context.server;
  const started = performance.now();
  const head = await hub.refreshHead();
  let identity = message.clientIdentity;
  let lastIntegratedClientVersion = 0;
  let settledClientVersion = 0;
  // Version 2 clients reset when the server cannot continue their history;
  // version 1 clients get the error they always got.
  const cannotContinue = (detail: string) =>
    context.protocolVersion >= 2
      ? new SessionError(
        "client_reset_required",
        `Cannot bind: ${detail}; the client must reset`,
      )
      : new SessionError("bad_client_identity", `Cannot bind: ${detail}`);
  if (identity === null) {
    identity = await allocateIdentity(kv, path, retry);
  } else {
    const record = await readIdentity(kv, path, identity, retry);
    if (record === null) {
      throw cannotContinue(
        `client identity ${identity.id} is unknown in this realm or its salt is wrong`,
      );
    }
    lastIntegratedClientVersion = record.lastClientVersion;
    settledClientVersion = record.lastClientVersion;
    if (
      context.protocolVersion >= 2 &&
      message.uploadCursor > record.lastClientVersion
    ) {
      throw cannotContinue(
        `upload cursor ${message.uploadCursor} is ahead of what the server recorded for client identity ${identity.id} (${record.lastClientVersion}); the server's data is older than this client's`,
      );
    }
    // Only an identity that ever had a changeset refused has refusals to
    // prune: the others skip the KV list.
    if (
      context.protocolVersion >= 2 && message.uploadCursor > 0 &&
      record.rejected === true
    ) {
      await pruneRejections(
        kv,
        path,
        identity.id,
        message.uploadCursor,
        retry,
      );
    }
    if (
      context.protocolVersion >= 2 && record.rejected === true &&
      record.lastClientVersion > message.uploadCursor
    ) {
      // A refusal the client may not have heard of (its REJECT lost with a
      // connection): acknowledge only what comes before it, so the client
      // uploads it again and is refused again — with the revert, which
      // needs the changeset — before any DOWNLOAD acknowledges it.
      const refused = await firstRejectionAfter(
        kv,
        path,
        identity.id,
        message.uploadCursor,
        retry,
      );
      if (refused !== null) lastIntegratedClientVersion = refused - 1;
    }
  }
  if (message.downloadCursor > head.version) {
    throw context.protocolVersion >= 2
      ? cannotContinue(
        `download cursor ${message.downloadCursor} is ahead of the server's history (${head.version})`,
      )
      : new SessionError(
        "bad_client_identity",
        `Cannot bind: download cursor ${message.downloadCursor} is ahead of the server's history (${head.version}); the local realm belongs to other server data`,
      );
  }
  // Bytes are null when that version was compacted away: the session
  // bootstraps. Its salt is kept, so the check below still holds.
  const cursor = await readVersionMeta(kv, path, message.downloadCursor, retry);
  // A cursor on a version this realm numbered alike but salted otherwise
  // belongs to another history: the server was restored from a copy older
  // than that version and has committed others under its number since.
  // Salt 0 on either side (a client or an entry older than salts) is not
  // checked.
  const clientSalt = message.downloadCursorSalt ?? 0;
  if (
    context.protocolVersion >= 2 && clientSalt !== 0 && cursor.salt !== 0 &&
    clientSalt !== cursor.salt
  ) {
    throw cannotContinue(
      `download cursor ${message.downloadCursor} names a version of another history of this realm (the server was restored from an older copy and has committed other changesets under that number since)`,
    );
  }
  if (message.clientIdentity === null) {
    context.send({
      type: MessageType.Ident,
      sessionId: message.sessionId,
      clientIdentity: identity,
    });
  }
  return new Session({
    id: message.sessionId,
    path,
    userId: context.userId,
    identity,
    permission,
    hub,
    transport: context.transport,
    downloadCursor: message.downloadCursor,
    cursorSalt: cursor.salt || clientSalt,
    cursorBytes: cursor.cumulativeBytes,
    lastIntegratedClientVersion,
    settledClientVersion,
    protocolVersion: context.protocolVersion,
    validateChangeset: settings.validateChangeset,
    maxMessageBytes: settings.maxMessageBytes,
    downloadBatchBytes: settings.downloadBatchBytes,
    highWaterBytes: settings.sendBufferBytes,
    lifetime: context.server.lifetime,
    commitSignal: context.server.commitSignal,
    log: context.server.log,
    onCaughtUp: () =>
      context.server.metrics.bootstrap.observe(
        (performance.now() - started) / 1000,
      ),
  });
}
