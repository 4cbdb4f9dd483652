/**
 * A sync server in a child process on a KV file that tests copy and restore
 * (`_reset_server.ts`), for the client reset tests: `ServerProcess`,
 * `copyStore` and the user `alice` those servers accept.
 */
import { Credentials } from "../../mod.ts";
import { linesOf, readUntil } from "../_helpers/lines.ts";
import { epochSeconds, signUserJwt } from "../_helpers/user_jwt.ts";

const SERVER = new URL("./_reset_server.ts", import.meta.url).pathname;
const SECRET = "client-reset-test-secret";
/** Waits that span a server restart (a process start under load). */
export const RESTART_MS = 30_000;

/** The server child process on one KV file. */
export class ServerProcess {
  readonly port: number;
  #child: Deno.ChildProcess;
  #stdin: WritableStreamDefaultWriter<Uint8Array>;
  #drained: Promise<void>;

  private constructor(
    port: number,
    child: Deno.ChildProcess,
    stdin: WritableStreamDefaultWriter<Uint8Array>,
    drained: Promise<void>,
  ) {
    this.port = port;
    this.#child = child;
    this.#stdin = stdin;
    this.#drained = drained;
  }

  /**
   * Starts a server on `kvPath` and `port` (0: any). A port just freed by
   * a killed server may still be taken for a moment: a start that exits
   * before listening is tried again, a bounded number of times.
   */
  static async start(kvPath: string, port: number): Promise<ServerProcess> {
    let failure: unknown;
    for (let attempt = 0; attempt < 20; attempt++) {
      const child = new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          "--unstable-kv",
          SERVER,
          kvPath,
          String(port),
          SECRET,
        ],
        stdin: "piped",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      const stdin = child.stdin.getWriter();
      const lines = linesOf(child.stdout);
      const seen: string[] = [];
      const stderr = new Response(child.stderr).text();
      try {
        const line = await readUntil(
          lines,
          (l) => l.startsWith("listening "),
          seen,
        );
        const url = new URL(line.slice("listening ".length));
        const drained = (async () => {
          for await (const _ of { [Symbol.asyncIterator]: () => lines }) {
            // Drained so the child never blocks on a full pipe.
          }
          await stderr;
        })();
        return new ServerProcess(Number(url.port), child, stdin, drained);
      } catch (error) {
        failure = new Error(`${error}; stderr: ${await stderr}`);
        await stdin.close().catch(() => {});
        await child.status;
      }
    }
    throw failure;
  }

  /** Kills the server as a crash would (SIGKILL). */
  async kill(): Promise<void> {
    try {
      this.#child.kill("SIGKILL");
    } catch {
      // Already exited.
    }
    await this.#child.status;
    await this.#stdin.close().catch(() => {});
    await this.#drained;
  }
}

/** Copies the KV file (and its write-ahead log) of one store to another. */
export async function copyStore(from: string, to: string): Promise<void> {
  await Deno.mkdir(to, { recursive: true });
  for await (const entry of Deno.readDir(from)) {
    if (/^sync\.kv(-wal|-shm)?$/.test(entry.name)) {
      await Deno.copyFile(`${from}/${entry.name}`, `${to}/${entry.name}`);
    }
  }
}

/** A JWT login of user alice, valid for an hour. */
export async function alice(): Promise<Credentials> {
  return Credentials.jwt(
    await signUserJwt(SECRET, { sub: "alice", exp: epochSeconds(3_600_000) }),
  );
}
