/**
 * A harness for `Connection` tests: a client that records what it is told,
 * a token source, a connection over fake sockets and a fake clock, and the
 * steps that open, bind and advance it.
 *
 * @module
 */
import { DEFAULT_RECONNECT } from "../../src/client/backoff.ts";
import {
  type AccessToken,
  Connection,
  type ConnectionClient,
  type ConnectionOptions,
  type RetryInfo,
  type SessionChannel,
} from "../../src/client/connection.ts";
import { DEFAULT_KEEPALIVE } from "../../src/client/keepalive.ts";
import type { SyncError } from "../../src/client/sync_error.ts";
import {
  MessageType,
  type ServerMessage,
} from "../../src/protocol/messages.ts";
import { FakeClock } from "./fake_clock.ts";
import { FakeSockets } from "./fake_socket.ts";

/** Lets pending promise callbacks run (no timers are involved). */
export function flush(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

/** A connection client that records the events it is told, as strings. */
export class RecordingClient implements ConnectionClient {
  events: string[] = [];
  channel: SessionChannel | undefined;
  messages: ServerMessage[] = [];
  retries: RetryInfo[] = [];
  errors: SyncError[] = [];
  #start: number;

  constructor(start: number) {
    this.#start = start;
  }

  connectionConnecting(): void {
    this.events.push("connecting");
    this.channel = undefined;
  }
  connectionOpened(channel: SessionChannel): void {
    this.events.push(`opened ${channel.sessionId}`);
    this.channel = channel;
  }
  connectionMessage(message: ServerMessage): void {
    this.messages.push(message);
  }
  connectionLost(
    error: SyncError | undefined,
    retry: RetryInfo | undefined,
  ): void {
    this.channel = undefined;
    if (error) this.errors.push(error);
    if (retry) this.retries.push(retry);
    this.events.push(
      `lost ${error?.code} retry ${retry?.attempt} in ${
        retry ? retry.nextAttemptAt - this.#start : "-"
      }`,
    );
  }
  connectionFailed(error: SyncError): void {
    this.errors.push(error);
    this.events.push(`failed ${error.code}`);
  }
}

/** A token source that counts what it issues and can be told to fail. */
export class Tokens {
  issued = 0;
  freshRequests = 0;
  failWith: unknown;
  expiresInMs: number | undefined = undefined;
  clock: FakeClock;
  constructor(clock: FakeClock) {
    this.clock = clock;
  }
  accessToken(fresh: boolean): Promise<AccessToken> {
    if (fresh) this.freshRequests++;
    if (this.failWith !== undefined) return Promise.reject(this.failWith);
    if (fresh || this.issued === 0) this.issued++;
    const now = this.clock.now();
    return Promise.resolve({
      token: `token-${this.issued}`,
      expiresAt: this.expiresInMs === undefined
        ? undefined
        : now + this.expiresInMs,
      obtainedAt: now,
    });
  }
}

/**
 * A connection over fake sockets and a fake clock with short test timings
 * (`overrides` win), its tokens, and a maker of recording clients.
 */
export function setup(overrides: Partial<ConnectionOptions> = {}) {
  const clock = new FakeClock();
  const sockets = new FakeSockets();
  const tokens = new Tokens(clock);
  const connection = new Connection({
    url: "ws://test/sync",
    WebSocket: sockets.WebSocket,
    clock,
    random: () => 0.5,
    reconnect: { ...DEFAULT_RECONNECT, minDelayMs: 1_000, maxDelayMs: 8_000 },
    keepalive: {
      ...DEFAULT_KEEPALIVE,
      pingIntervalMs: 1_000,
      readTimeoutMs: 3_000,
    },
    connectTimeoutMs: 5_000,
    lingerMs: 2_000,
    tokens: {
      accessToken: (fresh) => tokens.accessToken(fresh),
    },
    ...overrides,
  });
  const client = () => new RecordingClient(clock.now());
  return { clock, sockets, tokens, connection, client };
}

/** Moves the clock to the scheduled retry and lets the dial start. */
export async function advanceToRetry(
  test: ReturnType<typeof setup>,
  client: RecordingClient,
): Promise<void> {
  test.clock.advance(client.retries.at(-1)!.nextAttemptAt - test.clock.now());
  await flush();
}

/** Moves the clock while the server answers every second. */
export function advanceAlive(
  test: ReturnType<typeof setup>,
  socket: { receive(message: ServerMessage): number },
  ms: number,
): void {
  for (let elapsed = 0; elapsed < ms; elapsed += 500) {
    test.clock.advance(Math.min(500, ms - elapsed));
    socket.receive({ type: MessageType.Pong, timestamp: test.clock.now() });
  }
}

/** Attaches `client` and opens its socket (no handshake reply yet). */
export async function openSocket(
  test: ReturnType<typeof setup>,
  client: RecordingClient,
) {
  test.connection.attach(client);
  await flush();
  const socket = test.sockets.last;
  socket.open();
  return socket;
}

/**
 * Like {@linkcode openSocket}, with a client that binds the moment its
 * channel opens, as a session does.
 */
export function openBinding(
  test: ReturnType<typeof setup>,
  client: RecordingClient,
) {
  client.connectionOpened = (channel) => {
    client.channel = channel;
    channel.send({
      type: MessageType.Bind,
      sessionId: channel.sessionId,
      path: "/~/notes",
      clientIdentity: null,
      downloadCursor: 0,
      uploadCursor: 0,
    });
  };
  return openSocket(test, client);
}

/** Attaches `client` and opens its socket with the handshake accepted. */
export async function connect(
  setupResult: ReturnType<typeof setup>,
  client: RecordingClient,
) {
  const socket = await openSocket(setupResult, client);
  socket.acceptHandshake();
  return socket;
}
