import { App, type AppOptions } from "../../src/client/app.ts";
import type { Progress } from "../../src/client/progress.ts";
import { Credentials } from "../../src/client/credentials.ts";
import {
  type ClientMessage,
  MessageType,
  type ServerMessage,
} from "../../src/protocol/messages.ts";
import type { DownloadChangeset } from "../../src/model/changeset.ts";
import { FakeClock } from "./fake_clock.ts";
import { FakeSockets, type FakeWebSocket } from "./fake_socket.ts";

/** Lets pending promise callbacks run (no timers are involved). */
export function flush(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

/** A login body as the client sent it. */
export type LoginRequest = Record<string, unknown>;

/**
 * An App whose network is scripted by the test: `fetch` answers `/login`
 * from `login`, sockets are {@linkcode FakeSockets}, time is a
 * {@linkcode FakeClock}. For deterministic tests of the session state
 * machine; behaviour against the real server is tested over real sockets.
 */
export function scriptedApp(options: Partial<AppOptions> = {}) {
  const clock = new FakeClock();
  const sockets = new FakeSockets();
  const logins: LoginRequest[] = [];
  let userCounter = 0;
  const script = {
    /** Answers one login; the default issues tokens for user "u<n>". */
    login: (body: LoginRequest): Response => {
      const userId = body.provider === "anonymous"
        ? `u${++userCounter}`
        : "jwt-user";
      return Response.json({
        userId: body.provider === "refresh" ? "u1" : userId,
        accessToken: `access-${logins.length}`,
        accessTokenExpiresAt: clock.now() + 30 * 60_000,
        refreshToken: `refresh-${logins.length}`,
      });
    },
  };
  const fetch = (async (_url: string | URL | Request, init?: RequestInit) => {
    const body = JSON.parse(String(init?.body)) as LoginRequest;
    logins.push(body);
    return await Promise.resolve(script.login(body));
  }) as typeof globalThis.fetch;
  const app = new App({
    baseUrl: "http://sync.test",
    WebSocket: sockets.WebSocket,
    fetch,
    clock,
    random: () => 0.5,
    progressIntervalMs: 0,
    reconnect: { minDelayMs: 1_000, maxDelayMs: 8_000 },
    keepalive: { pingIntervalMs: 10_000, readTimeoutMs: 30_000 },
    connectTimeoutMs: 5_000,
    lingerMs: 1_000,
    ...options,
  });
  return { app, clock, sockets, logins, script };
}

/** Opens the last socket and accepts the handshake. */
export async function acceptConnection(
  sockets: FakeSockets,
  maxMessageBytes?: number,
): Promise<FakeWebSocket> {
  await flush();
  const socket = sockets.last;
  if (socket.readyState === 0) socket.open();
  socket.acceptHandshake(maxMessageBytes);
  await flush();
  return socket;
}

/** The session id of the last BIND for `path` on `socket`. */
export function boundSession(socket: FakeWebSocket, path: string): number {
  const bind = socket.sentOf(MessageType.Bind).filter((b) => b.path === path)
    .at(-1);
  if (bind === undefined) throw new Error(`No BIND for ${path}`);
  return bind.sessionId;
}

/**
 * Logs in anonymously, opens the realm at `path` and brings its session to
 * bound and identified on the next socket (MARKs left unanswered).
 */
export async function openBoundRealm(
  app: App,
  sockets: FakeSockets,
  path: string,
) {
  const user = await app.logIn(Credentials.anonymous());
  const realm = await user.openRealm({ path });
  const socket = await acceptConnection(sockets);
  const sessionId = boundSession(socket, path);
  await ident(socket, path);
  return { user, realm, socket, sessionId };
}

/** Sends IDENT to the last BIND for `path` that had no identity. */
export async function ident(
  socket: FakeWebSocket,
  path: string,
  id = 1,
): Promise<number> {
  const sessionId = boundSession(socket, path);
  const size = socket.receive({
    type: MessageType.Ident,
    sessionId,
    clientIdentity: { id, salt: 1234 },
  });
  await flush();
  return size;
}

/** Answers every MARK sent on `socket` not answered yet. */
export async function answerMarks(socket: FakeWebSocket): Promise<number> {
  const answered = socket as unknown as { answered?: Set<string> };
  answered.answered ??= new Set();
  let count = 0;
  for (const mark of socket.sentOf(MessageType.Mark)) {
    const key = `${mark.sessionId}:${mark.requestId}`;
    if (answered.answered.has(key)) continue;
    answered.answered.add(key);
    socket.receive({
      type: MessageType.MarkReply,
      sessionId: mark.sessionId,
      requestId: mark.requestId,
    });
    count++;
  }
  await flush();
  return count;
}

/** Sends a DOWNLOAD; returns its frame size. */
export async function download(
  socket: FakeWebSocket,
  sessionId: number,
  fields: {
    serverVersion?: number;
    ack?: number;
    downloadableBytes?: number;
    changesetBytes?: number;
    changesets?: DownloadChangeset[];
  } = {},
): Promise<number> {
  const message: ServerMessage = {
    type: MessageType.Download,
    sessionId,
    serverVersion: fields.serverVersion ?? 0,
    lastIntegratedClientVersion: fields.ack ?? 0,
    downloadableBytes: fields.downloadableBytes ?? 0,
    changesetBytes: fields.changesetBytes ?? 0,
    changesets: fields.changesets ?? [],
  };
  const size = socket.receive(message);
  await flush();
  return size;
}

/** A remote changeset putting `count` objects of type "R". */
export function remoteChangeset(
  serverVersion: number,
  count: number,
  prefix = "r",
): DownloadChangeset {
  return {
    serverVersion,
    stamp: { time: 1_000 + serverVersion, counter: 0, node: 424242 },
    instructions: Array.from({ length: count }, (_, index) => ({
      op: "put" as const,
      type: "R",
      id: `${prefix}${serverVersion}-${index}`,
      fields: { index, text: "some remote text" },
      stamp: null,
    })),
  };
}

/** Every message of the given types sent for `sessionId`. */
export function sentFor(
  socket: FakeWebSocket,
  sessionId: number,
): ClientMessage[] {
  return socket.sent.filter((message) =>
    "sessionId" in message && message.sessionId === sessionId
  );
}

/** One progress report: transferred, transferable, estimate. */
export type ProgressEvent = [number, number, number];

/** A progress callback that keeps every report it gets. */
export function recorder() {
  const events: ProgressEvent[] = [];
  const callback = (_t: number, _T: number, p: Progress) =>
    events.push([p.transferredBytes, p.transferableBytes, p.progressEstimate]);
  return { events, callback };
}

/**
 * A scripted app with the realm `/~/a` open and its session bound and
 * identified (MARKs left unanswered).
 */
export async function openBound(
  options: Parameters<typeof scriptedApp>[0] = {},
) {
  const scripted = scriptedApp(options);
  const bound = await openBoundRealm(scripted.app, scripted.sockets, "/~/a");
  return { ...scripted, ...bound, session: bound.realm.syncSession };
}
