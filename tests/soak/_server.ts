/**
 * The soak's sync server, in a process of its own so the soak can SIGKILL it
 * and start it again on the same KV file (`tests/soak/_engine.ts`).
 *
 * Usage: `deno run -A --unstable-kv _server.ts <kv file> <realm path>`.
 * Prints `listening <url> <head>` once it serves (`head` is the realm's
 * history head version at start), then answers each `stats` line on stdin
 * with `stats <changesetsIntegrated> <head>` and each `history` line with
 * `history <stored> <first> <repeated> <poisoned>` (see `auditHistory`), and
 * shuts down cleanly on `quit` (or the end of its input), printing
 * `stopped`. Errors the server logs go to stderr.
 *
 * It refuses, through `validateChangeset`, every changeset that sets a field
 * named {@linkcode POISON_FIELD}: the soak's "rejected" writes.
 */
import { serveSync } from "../../server.ts";
import { historyKey } from "../../src/server/storage/keys.ts";
import {
  type HistoryEntry,
  readHistory,
} from "../../src/server/storage/history.ts";
import { linesOf } from "../_helpers/lines.ts";
import { POISON_FIELD } from "./_poison.ts";

const [kvPath, realmPath] = Deno.args;
if (kvPath === undefined || realmPath === undefined) {
  throw new TypeError("Usage: _server.ts <kv file> <realm path>");
}

await using server = await serveSync({
  port: 0,
  hostname: "127.0.0.1",
  kv: kvPath,
  auth: { allowAnonymous: true },
  // Every soak client writes the one shared realm.
  permissions: () => "readwrite",
  validateChangeset: ({ changes }) =>
    !changes.some((change) => change.fields?.[POISON_FIELD] !== undefined),
  logger: (record) => {
    if (record.level === "error") console.error(JSON.stringify(record));
  },
});
// A second handle on the same file, for reading the realm's head: the key
// layout is docs/SERVER.md "Storage". The server's lock is a flock, which
// SQLite's own locking (fcntl) does not see, so this handle is harmless.
using kv = await Deno.openKv(kvPath);
const head = async (): Promise<number> => {
  const entry = await kv.get<{ version: number }>([
    "tether",
    "realm",
    realmPath,
    "head",
  ]);
  return entry.value?.version ?? 0;
};

/**
 * Reads the realm's stored history (what compaction left of it): how many
 * changesets are stored, the first stored version, how many repeat an upload
 * already stored (the same client identity and client version: one upload
 * integrated twice), and how many set the poison field (a refused write
 * stored after all).
 */
async function auditHistory(): Promise<string> {
  let first: number | undefined;
  for await (
    const entry of kv.list<HistoryEntry>({
      prefix: historyKey(realmPath!),
    }, { limit: 1 })
  ) first = entry.key.at(-1) as number;
  const last = await head();
  const uploads = new Set<string>();
  let stored = 0, repeated = 0, poisoned = 0;
  // Nothing aborts the audit: a KV read that keeps failing ends its retries.
  const signal = new AbortController().signal;
  for (let from = first ?? last + 1; from <= last;) {
    const { items } = await readHistory(kv, realmPath!, from, last, 1 << 20, {
      signal,
    });
    // Compacted under us: what is left is audited from the new first one.
    if (items.length === 0) break;
    for (const item of items) {
      stored++;
      const upload = `${item.identity}/${item.clientVersion}`;
      if (uploads.has(upload)) repeated++;
      uploads.add(upload);
      if (
        item.changeset.instructions.some((instruction) =>
          instruction.fields?.[POISON_FIELD] !== undefined
        )
      ) poisoned++;
    }
    from = items.at(-1)!.version + 1;
  }
  return `history ${stored} ${first ?? 0} ${repeated} ${poisoned}`;
}

console.log(`listening ${server.url} ${await head()}`);

for await (const command of linesOf(Deno.stdin.readable)) {
  if (command.trim() === "quit") break;
  if (command.trim() === "stats") {
    console.log(`stats ${server.stats().changesetsIntegrated} ${await head()}`);
  }
  if (command.trim() === "history") console.log(await auditHistory());
}
await server.shutdown();
console.log("stopped");
