/**
 * Clients that leave at the worst moment, or say things in the wrong order:
 * whatever they do, the connection's state is freed (stats back to zero,
 * realm hubs and their watches gone) and other clients are not affected.
 */
import assert from "node:assert/strict";
import { errorCodeNumber } from "../../src/protocol/error_codes.ts";
import { MessageType } from "../../src/protocol/messages.ts";
import type { LogRecord } from "../../server.ts";
import { put, upload } from "../_helpers/changesets.ts";
import { ProtocolClient } from "../_helpers/protocol_client.ts";
import { startTestServer, type TestServer } from "../_helpers/test_server.ts";

async function connect(
  test: TestServer,
  accessToken: string,
): Promise<ProtocolClient> {
  const client = await ProtocolClient.connect(test.url);
  await client.handshake(accessToken);
  return client;
}

/** Waits until `count` connections have logged connection_closed. */
async function waitForClosedConnections(
  test: TestServer,
  count: number,
): Promise<void> {
  const signal = AbortSignal.timeout(3000);
  const closed = (record: LogRecord) => record.event === "connection_closed";
  for (let step = 0; step < count; step++) {
    const seen = test.logs.filter(closed).length;
    if (seen >= count) return;
    await test.waitForLog(
      (record) => closed(record) && test.logs.filter(closed).length >= count,
      signal,
    );
  }
}

Deno.test("a permissions() callback that never settles holds neither its connection, nor other sessions, nor shutdown", async () => {
  const asked = Promise.withResolvers<void>();
  const test = await startTestServer({
    shutdownTimeoutMs: 3000,
    permissions: (userId, path) => {
      if (path === `/${userId}/stuck`) {
        asked.resolve();
        return new Promise(() => {});
      }
      return "readwrite";
    },
  });
  try {
    const login = await test.login();
    const client = await connect(test, login.accessToken);
    client.send({
      type: MessageType.Bind,
      sessionId: 1,
      path: "/~/stuck",
      clientIdentity: null,
      downloadCursor: 0,
      uploadCursor: 0,
    });
    await asked.promise;
    // Another session on the same socket is not held up.
    await client.bind(2, "/~/fine");
    await client.expect(MessageType.Download);
    client.send({
      type: MessageType.Upload,
      sessionId: 2,
      changesets: [upload(1, [put("T", "a", {})])],
    });
    assert.equal(
      (await client.expect(MessageType.Download)).lastIntegratedClientVersion,
      1,
    );
    // The client leaves while its first BIND still waits for permissions:
    // the connection is gone and no longer counts against maxConnections.
    await client.close();
    await waitForClosedConnections(test, 1);
    assert.equal(test.server.stats().connections, 0);
    assert.equal(test.server.stats().sessions, 0);
    assert.equal(test.server.stats().realms, 0);

    // Shutdown with such a BIND pending finishes without the deadline.
    const second = await connect(test, login.accessToken);
    second.send({
      type: MessageType.Bind,
      sessionId: 1,
      path: "/~/stuck",
      clientIdentity: null,
      downloadCursor: 0,
      uploadCursor: 0,
    });
    second.send({ type: MessageType.Ping, timestamp: 1 });
    await second.expect(MessageType.Pong);
    await test.server.shutdown();
    assert.equal((await second.closed).code, 1001);
    assert.deepEqual(
      test.logs.filter((record) => record.event === "shutdown_forced"),
      [],
    );
  } finally {
    await test.server.shutdown();
  }
});
