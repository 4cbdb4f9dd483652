/**
 * The `Task` realm the live-query and index benches share: 100,000 objects
 * in 1,000 buckets, their bootstrap as 100 DOWNLOADs of 1,000, and the
 * `--base <dir>` option that loads another checkout beside this one. Types
 * only from `src/`, so a bench that loads `src/` by URL measures the tree it
 * loads.
 *
 * @module
 */
import type { LocalRealm } from "../src/client/local_realm.ts";
import type { RealmStorage } from "../src/client/storage/storage.ts";
import type { Instruction } from "../src/model/changeset.ts";
import type { CompiledQuery } from "../src/model/query.ts";
import type { DownloadMessage } from "../src/protocol/messages.ts";

/** Objects in the realm. */
export const OBJECTS = 100_000;
/** Buckets (`bucket` values): 100 objects each. */
export const BUCKETS = 1_000;
/** Objects per bootstrap DOWNLOAD. */
export const BATCH = 1_000;

/** The fields of object `t${i}` (`n` unique, a permutation of `i`). */
export function taskFields(i: number): {
  title: string;
  bucket: number;
  n: number;
  even: boolean;
} {
  return {
    title: `task ${i}`,
    bucket: i % BUCKETS,
    n: (i * 7_919) % OBJECTS,
    even: i % 2 === 0,
  };
}

/**
 * A DOWNLOAD for session 1 of one changeset at `serverVersion`, stamped at
 * `time` by replica 99 (another client's).
 */
export function download(
  serverVersion: number,
  time: number,
  instructions: Instruction[],
): DownloadMessage {
  return {
    type: 0x43,
    sessionId: 1,
    serverVersion,
    lastIntegratedClientVersion: 0,
    downloadableBytes: 0,
    changesetBytes: 0,
    changesets: [{
      serverVersion,
      stamp: { time, counter: 0, node: 99 },
      instructions,
    }],
  };
}

/** The bootstrap: every object put, in DOWNLOADs of {@linkcode BATCH}. */
export function taskBootstrap(): DownloadMessage[] {
  const bootstrap: DownloadMessage[] = [];
  for (let start = 0; start < OBJECTS; start += BATCH) {
    const instructions: Instruction[] = [];
    for (let i = start; i < start + BATCH; i++) {
      instructions.push({
        op: "put",
        type: "Task",
        id: `t${i}`,
        fields: taskFields(i),
        stamp: null,
      });
    }
    bootstrap.push(download(start / BATCH + 1, 1_000, instructions));
  }
  return bootstrap;
}

/** What a bench runs of one checkout's `src/`. */
export interface RealmImplementation {
  /** Opens an empty realm on memory storage. */
  open(): Promise<LocalRealm>;
  compileQuery(query: unknown): CompiledQuery;
}

/** Loads {@linkcode RealmImplementation} from the checkout at `root`. */
export async function loadRealm(root: URL): Promise<RealmImplementation> {
  const local = await import(new URL("src/client/local_realm.ts", root).href);
  const memory = await import(
    new URL("src/client/storage/memory.ts", root).href
  );
  const query = await import(new URL("src/model/query.ts", root).href);
  return {
    open: () =>
      local.LocalRealm.open(
        new memory.MemoryStorage() as RealmStorage,
        () => 1_000,
      ),
    compileQuery: query.compileQuery,
  };
}

/** The value after `name` on the command line, if given. */
export function option(name: string): string | undefined {
  const at = Deno.args.indexOf(name);
  return at === -1 ? undefined : Deno.args[at + 1];
}

/**
 * This checkout's implementation as `this`, preceded by the one of the
 * checkout named by `--base <dir>` as `base` when given.
 */
export async function implementations<I>(
  load: (root: URL) => Promise<I>,
): Promise<[string, I][]> {
  const impls: [string, I][] = [
    ["this", await load(new URL("../", import.meta.url))],
  ];
  const base = option("--base");
  if (base !== undefined) {
    impls.unshift([
      "base",
      await load(new URL(`file://${base.replace(/\/?$/, "/")}`)),
    ]);
  }
  return impls;
}

/** The median of `values` (the upper one of an even count). */
export function median(values: readonly number[]): number {
  return [...values].sort((a, b) => a - b)[values.length >> 1]!;
}
