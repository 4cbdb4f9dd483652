// The memory an idle bound session costs the server, measured in a server
// process of its own (tests/server/_memory_server.ts) so that the client
// sockets and this test's own objects are not counted. Heap sizes after a
// full GC do not depend on how busy the machine is, so this is not a timing.
// The server stores in a KV file, whose data lives outside the heap: with
// `":memory:"` each session's client identity record would be counted too.

import assert from "node:assert/strict";
import { MessageType } from "../../src/protocol/messages.ts";
import { linesOf, readUntil } from "../_helpers/lines.ts";
import { ProtocolClient } from "../_helpers/protocol_client.ts";

/**
 * SERVER.md's documented bound ("Memory"): 1,361 B measured, so a session
 * that again held a linked abort signal or a parked pump while idle fails.
 */
const BOUND_BYTES_PER_SESSION = 2 * 1024;
const CONNECTIONS = 4;
const SESSIONS_PER_CONNECTION = 200;
const REALMS = 4;

Deno.test("an idle bound session costs the server less than the bound SERVER.md documents", async () => {
  const directory = await Deno.makeTempDir({
    prefix: "tether-session-memory-",
  });
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-net",
      "--allow-read",
      "--allow-write",
      "--unstable-kv",
      "--v8-flags=--expose-gc",
      new URL("./_memory_server.ts", import.meta.url).pathname,
      `${directory}/sync.kv`,
    ],
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const input = child.stdin.getWriter();
  const output = linesOf(child.stdout);
  const seen: string[] = [];
  const nextLine = () => readUntil(output, () => true, seen);
  const encoder = new TextEncoder();
  const clients: ProtocolClient[] = [];
  try {
    const url = await nextLine();
    const measure = async () => {
      await input.write(encoder.encode("measure\n"));
      const [heap, sessions] = (await nextLine()).split(" ").map(Number);
      return { heap: heap!, sessions: sessions! };
    };
    const login = await fetch(`${url}/login`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ provider: "anonymous" }),
    });
    const { accessToken } = await login.json();
    let sessionId = 1;
    const bindOne = async (client: ProtocolClient) => {
      await client.bind(sessionId, `/~/realm-${sessionId % REALMS}`);
      await client.expect(MessageType.Download);
      sessionId++;
    };
    for (let index = 0; index < CONNECTIONS; index++) {
      const client = await ProtocolClient.connect(url);
      clients.push(client);
      await client.handshake(accessToken);
      // The first session per socket and realm pays for what every later
      // one shares (the realm's watch and cache, code warming up).
      await bindOne(client);
    }
    const before = await measure();
    assert.equal(before.sessions, CONNECTIONS);
    for (const client of clients) {
      for (let count = 1; count < SESSIONS_PER_CONNECTION; count++) {
        await bindOne(client);
      }
    }
    const after = await measure();
    const added = CONNECTIONS * (SESSIONS_PER_CONNECTION - 1);
    assert.equal(after.sessions, CONNECTIONS + added);
    const perSession = (after.heap - before.heap) / added;
    if (Deno.env.get("TETHER_PRINT_FIGURES")) {
      console.log(
        `${added} idle sessions: ${after.heap - before.heap} B of heap, ${
          perSession.toFixed(0)
        } B each`,
      );
    }
    assert.ok(
      perSession < BOUND_BYTES_PER_SESSION,
      `${perSession.toFixed(0)} B per idle session`,
    );
  } finally {
    for (const client of clients) await client.close();
    await input.write(encoder.encode("quit\n")).catch(() => {});
    await input.close().catch(() => {});
    for await (const line of { [Symbol.asyncIterator]: () => output }) {
      seen.push(line);
    }
    await child.status;
    await Deno.remove(directory, { recursive: true });
  }
});
