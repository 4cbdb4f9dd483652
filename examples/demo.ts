/**
 * Tether in one terminal: an embedded sync server on a local Deno KV in a
 * temporary folder, a writer client that creates ~20,000 objects, and a
 * reader client that bootstraps them with a live progress bar. Then the
 * reader is paused and resumed, the server is restarted under both clients,
 * and a summary is printed. Everything it created is removed at the end (and
 * on Ctrl-C) unless `--keep-data` is given.
 *
 * Run it with `deno task demo` (or `npx -y deno@2.9.6 task demo` on a
 * machine with only Node and npm); `--help` lists the options.
 *
 * @module
 */

import {
  App,
  type AppOptions,
  type ConnectionStateChange,
  Credentials,
  type LogRecord,
  type Progress,
  type Realm,
} from "@tether/sync";
import { serveSync, type SyncServer } from "@tether/sync/server";

const USAGE = `Usage: deno task demo [options]

Runs a sync server and two clients in this process and shows what the
client API reports: progress, connection states, pause/resume, and a server
restart.

Options:
  --objects <n>   how many objects the writer creates (default 20000)
  --keep-data     keep the server's data folder and print where it is
  --verbose       print the server's and the clients' log records
  -h, --help      show this help
`;

/** Set on Ctrl-C: the interrupt handler cleans up and exits. */
let interrupted = false;

interface DemoOptions {
  objects: number;
  keepData: boolean;
  verbose: boolean;
}

function parseArgs(args: string[]): DemoOptions | "help" | string {
  const options: DemoOptions = {
    objects: 20_000,
    keepData: false,
    verbose: false,
  };
  for (let index = 0; index < args.length; index++) {
    const arg = args[index]!;
    if (arg === "-h" || arg === "--help") return "help";
    // `deno task demo -- --verbose` passes the `--` on: nothing to separate.
    if (arg === "--") continue;
    if (arg === "--keep-data") options.keepData = true;
    else if (arg === "--verbose") options.verbose = true;
    else if (arg === "--objects" || arg.startsWith("--objects=")) {
      const value = arg === "--objects"
        ? args[++index]
        : arg.slice("--objects=".length);
      const objects = Number(value);
      if (!Number.isInteger(objects) || objects < 1 || objects > 1_000_000) {
        return `--objects wants a whole number from 1 to 1000000, got ${
          JSON.stringify(value)
        }`;
      }
      options.objects = objects;
    } else {
      return `Unknown option ${JSON.stringify(arg)}`;
    }
  }
  return options;
}

// ----- output -----

const encoder = new TextEncoder();
const isTerminal = Deno.stdout.isTerminal();
const started = performance.now();
let barShown = false;

function write(text: string, force = false): void {
  // After Ctrl-C only the interrupt handler speaks.
  if (interrupted && !force) return;
  Deno.stdout.writeSync(encoder.encode(text));
}

function line(text = "", force = false): void {
  if (interrupted && !force) return;
  if (barShown) {
    write("\n", force);
    barShown = false;
  }
  write(`${text}\n`, force);
}

function step(title: string, text: string): void {
  line();
  line(`▸ ${title.padEnd(9)}${text}`);
}

function detail(who: string, text: string): void {
  line(`  ${who.padEnd(9)} ${text}`);
}

function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
  return `${(bytes / 1024 / 1024).toFixed(2)} MB`;
}

function formatCount(count: number): string {
  return count.toLocaleString("en-US");
}

function elapsed(since: number): string {
  const ms = performance.now() - since;
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(2)} s`;
}

/** A progress bar: redrawn in place on a terminal, in 25% steps elsewhere. */
function progressBar(label: string): (p: Progress) => void {
  let lastQuarter = -1;
  return (p) => {
    const percent = Math.floor(p.progressEstimate * 100);
    const width = 30;
    const filled = Math.round(p.progressEstimate * width);
    const bar = `[${"█".repeat(filled)}${" ".repeat(width - filled)}] ${
      String(percent).padStart(3)
    }%`;
    const figures = `${formatBytes(p.transferredBytes)} / ${
      formatBytes(p.transferableBytes)
    }`;
    if (isTerminal) {
      write(`\r  ${label.padEnd(9)} ${bar}  ${figures}   `);
      barShown = true;
      if (p.isTransferComplete) line();
    } else {
      const quarter = Math.floor(p.progressEstimate * 4);
      if (quarter !== lastQuarter) {
        lastQuarter = quarter;
        line(`  ${label.padEnd(9)} ${bar}  ${figures}`);
      }
    }
  };
}

function describeChange(change: ConnectionStateChange): string {
  let text = `connection ${change.previous} → ${change.current}`;
  const notes: string[] = [];
  if (change.error) notes.push(change.error.code);
  if (change.retry) {
    const inMs = Math.max(0, change.retry.nextAttemptAt - Date.now());
    notes.push(`retry ${change.retry.attempt} in ${inMs} ms`);
  }
  if (notes.length > 0) text += ` (${notes.join("; ")})`;
  return text;
}

/** Prints every connection-state change of a realm's session until aborted. */
function printStates(
  who: string,
  realm: Realm,
  signal: AbortSignal,
): Promise<void> {
  return (async () => {
    try {
      for await (
        const change of realm.syncSession.connectionStateChanges({ signal })
      ) {
        detail(who, describeChange(change));
      }
    } catch (error) {
      detail(who, `session failed: ${(error as Error).message}`);
    }
  })();
}

// ----- the demo -----

async function main(options: DemoOptions): Promise<void> {
  const dataDir = await Deno.makeTempDir({ prefix: "tether-demo-" });
  const kvPath = `${dataDir}/sync.kv`;
  const lifetime = new AbortController();
  const apps: App[] = [];
  let server: SyncServer | undefined;
  let cleaning: Promise<void> | undefined;

  const cleanUp = () =>
    cleaning ??= (async () => {
      lifetime.abort();
      for (const app of apps) await app.close().catch(() => {});
      await server?.shutdown().catch(() => {});
      if (options.keepData) {
        line(`Data kept in ${dataDir}`);
      } else {
        await Deno.remove(dataDir, { recursive: true }).catch(() => {});
      }
    })();
  const onInterrupt = () => {
    if (interrupted) return;
    interrupted = true;
    line("", true);
    line("Interrupted; cleaning up…", true);
    cleanUp().finally(() => {
      line(
        options.keepData
          ? `Stopped. Data kept in ${dataDir}`
          : "Temporary data removed. Stopped.",
        true,
      );
      Deno.exit(130);
    });
  };
  const signals: Deno.Signal[] = Deno.build.os === "windows"
    ? ["SIGINT"]
    : ["SIGINT", "SIGTERM"];
  for (const signal of signals) Deno.addSignalListener(signal, onInterrupt);

  const serverLogger = options.verbose
    ? (record: { level: string; event: string; message: string }) =>
      line(`    [server ${record.level}] ${record.event}: ${record.message}`)
    : () => {};
  const clientLogger = (who: string) =>
    options.verbose
      ? (record: LogRecord) =>
        line(`    [${who} ${record.level}] ${record.event}: ${record.message}`)
      : undefined;
  const startServer = (port: number) =>
    serveSync({
      port,
      hostname: "127.0.0.1",
      kv: kvPath,
      auth: { allowAnonymous: true },
      // Everyone may use the shared demo realm; other paths stay private.
      permissions: (userId, path) =>
        path.startsWith("/demo/") || path.startsWith(`/${userId}/`)
          ? "readwrite"
          : "none",
      logger: serverLogger,
    });
  const clientOptions = (who: string, baseUrl: string): AppOptions => {
    const logger = clientLogger(who);
    return {
      baseUrl,
      // Quick retries and pings, so the restart and the RTT show within
      // seconds.
      reconnect: { minDelayMs: 200, maxDelayMs: 2_000 },
      keepalive: { pingIntervalMs: 500, readTimeoutMs: 10_000 },
      ...(logger === undefined ? {} : { logger }),
    };
  };

  try {
    line(
      `Tether demo: ${
        formatCount(options.objects)
      } objects, one server, two clients`,
    );

    server = await startServer(0);
    const port = server.addr.port;
    step("Server", `listening on ${server.url} (Deno KV in ${dataDir})`);

    // --- Writer: writes offline-first, then uploads with a progress bar.
    const writerApp = new App(clientOptions("writer", server.url));
    apps.push(writerApp);
    const writerUser = await writerApp.logIn(Credentials.anonymous());
    const writer = await writerUser.openRealm({
      path: "/demo/catalog",
      waitForDownload: true,
    });
    const writerStates = printStates("writer", writer, lifetime.signal);
    step(
      "Writer",
      `logged in as ${writerUser.id.slice(0, 8)}…; writing ${
        formatCount(options.objects)
      } objects`,
    );
    writer.syncSession.pause();
    detail("writer", "paused: the writes commit locally, nothing is sent yet");
    const writeStarted = performance.now();
    const perTransaction = 1_000;
    let transactions = 0;
    for (let first = 0; first < options.objects; first += perTransaction) {
      const last = Math.min(options.objects, first + perTransaction);
      await writer.write((tx) => {
        for (let index = first; index < last; index++) {
          tx.put("Item", `item-${index}`, {
            name: `Item number ${index}`,
            price: Math.round(index * 7.31) / 100,
            stock: index % 97,
            tags: ["demo", index % 2 === 0 ? "even" : "odd"],
            updatedAt: new Date(1_700_000_000_000 + index * 1000),
          });
        }
      });
      transactions++;
    }
    const pending = writer.syncSession.stats();
    detail(
      "writer",
      `${formatCount(transactions)} transactions committed locally in ${
        elapsed(writeStarted)
      }; ` +
        `${formatCount(pending.pendingUploadChangesets)} changesets (${
          formatBytes(pending.pendingUploadBytes)
        }) waiting`,
    );
    const uploadStarted = performance.now();
    const uploadBar = progressBar("upload");
    const upload = (async () => {
      for await (
        const p of writer.syncSession.getProgressStream(
          "upload",
          "forCurrentlyOutstandingWork",
          {
            signal: AbortSignal.any([
              lifetime.signal,
              AbortSignal.timeout(60_000),
            ]),
          },
        )
      ) uploadBar(p);
    })();
    writer.syncSession.resume();
    await upload;
    await writer.syncSession.waitForUpload({
      signal: AbortSignal.timeout(60_000),
    });
    detail(
      "writer",
      `everything acknowledged by the server in ${elapsed(uploadStarted)}`,
    );

    // --- Reader: bootstraps the realm from scratch with a progress bar.
    const readerApp = new App(clientOptions("reader", server.url));
    apps.push(readerApp);
    const readerUser = await readerApp.logIn(Credentials.anonymous());
    step(
      "Reader",
      `logged in as ${
        readerUser.id.slice(0, 8)
      }…; opening /demo/catalog with an empty local copy`,
    );
    const bootstrapStarted = performance.now();
    const reader = await readerUser.openRealm({ path: "/demo/catalog" });
    const readerStates = printStates("reader", reader, lifetime.signal);
    const downloadBar = progressBar("download");
    for await (
      const p of reader.syncSession.getProgressStream(
        "download",
        "forCurrentlyOutstandingWork",
        {
          signal: AbortSignal.any([
            lifetime.signal,
            AbortSignal.timeout(60_000),
          ]),
        },
      )
    ) downloadBar(p);
    await reader.syncSession.waitForDownload({
      signal: AbortSignal.timeout(60_000),
    });
    const bootstrapped = reader.objects("Item").length;
    detail(
      "reader",
      `bootstrapped ${formatCount(bootstrapped)} objects in ${
        elapsed(bootstrapStarted)
      }`,
    );
    if (bootstrapped !== options.objects) {
      throw new Error(
        `The reader has ${bootstrapped} objects, expected ${options.objects}`,
      );
    }

    // --- Pause and resume: the paused reader receives nothing, then
    // catches up.
    step(
      "Pause",
      "reader paused; the writer changes the price of every 20th item meanwhile",
    );
    let remoteChanges = 0;
    const counting = (async () => {
      for await (const change of reader.changes({ signal: lifetime.signal })) {
        if (change.origin === "remote") remoteChanges += change.changes.length;
      }
    })();
    reader.syncSession.pause();
    detail(
      "reader",
      `state ${reader.syncSession.state}, connection ${reader.syncSession.connectionState}`,
    );
    const updated: string[] = [];
    await writer.write((tx) => {
      for (let index = 0; index < options.objects; index += 20) {
        tx.update("Item", `item-${index}`, { price: 0.99 });
        updated.push(`item-${index}`);
      }
    });
    await writer.syncSession.waitForUpload({
      signal: AbortSignal.timeout(30_000),
    });
    detail(
      "writer",
      `${formatCount(updated.length)} updates acknowledged by the server`,
    );
    detail("reader", `changes received while paused: ${remoteChanges}`);
    step("Resume", "reader resumed");
    const resumeStarted = performance.now();
    reader.syncSession.resume();
    await reader.syncSession.waitForDownload({
      signal: AbortSignal.timeout(30_000),
    });
    detail(
      "reader",
      `caught up: ${formatCount(remoteChanges)} changes in ${
        elapsed(resumeStarted)
      }`,
    );
    if (
      remoteChanges !== updated.length ||
      reader.get("Item", updated[0]!)?.price !== 0.99
    ) {
      throw new Error("The reader did not catch up after resume");
    }

    // --- Restart the server under both clients.
    step("Restart", "shutting the server down; both connections drop");
    const lostBoth = Promise.all([writer, reader].map((realm) =>
      (async () => {
        for await (
          const change of realm.syncSession.connectionStateChanges({
            signal: AbortSignal.timeout(10_000),
          })
        ) {
          if (change.current === "disconnected") return;
        }
      })()
    ));
    await server.shutdown();
    server = undefined;
    await lostBoth;
    server = await startServer(port);
    step("Server", `back on ${server.url}, same data`);
    const comeback = performance.now();
    await writer.write((tx) =>
      tx.put("Item", "after-restart", {
        name: "Written after the restart",
        price: 1,
        stock: 1,
        tags: [],
        updatedAt: new Date(),
      })
    );
    await writer.syncSession.waitForUpload({
      signal: AbortSignal.timeout(30_000),
    });
    await reader.syncSession.waitForDownload({
      signal: AbortSignal.timeout(30_000),
    });
    if (reader.get("Item", "after-restart") === undefined) {
      throw new Error(
        "The reader did not receive the write made after the restart",
      );
    }
    detail(
      "reader",
      `back in sync ${
        elapsed(comeback)
      } after the restart: it has the writer's new object`,
    );

    // --- Summary.
    const readerStats = reader.syncSession.stats();
    const writerStats = writer.syncSession.stats();
    // Measured from PING to PONG in whole milliseconds: on a loopback it
    // is below one.
    const rtt = (ms: number | undefined) =>
      ms === undefined ? "n/a" : ms === 0 ? "< 1 ms" : `${ms} ms`;
    step("Summary", "");
    detail(
      "objects",
      `${formatCount(reader.objects("Item").length)} in the reader, ${
        formatCount(writer.objects("Item").length)
      } in the writer`,
    );
    detail(
      "sent",
      `writer ${formatBytes(writerStats.bytesSent)} (${
        transactions + 2
      } transactions)`,
    );
    detail("received", `reader ${formatBytes(readerStats.bytesReceived)}`);
    detail(
      "RTT",
      `reader ${rtt(readerStats.rttMs)}, writer ${rtt(writerStats.rttMs)}`,
    );
    detail(
      "reconnect",
      `reader ${readerStats.reconnects}, writer ${writerStats.reconnects}`,
    );
    detail("time", elapsed(started));
    lifetime.abort();
    await Promise.all([writerStates, readerStates, counting]);
    await reader.close();
    await writer.close();
  } finally {
    await cleanUp();
    for (const signal of signals) {
      Deno.removeSignalListener(signal, onInterrupt);
    }
  }
  if (!options.keepData) line("Temporary data removed. Done.");
}

if (import.meta.main) {
  const parsed = parseArgs(Deno.args);
  if (parsed === "help") {
    write(USAGE);
  } else if (typeof parsed === "string") {
    Deno.stderr.writeSync(encoder.encode(`${parsed}\n\n${USAGE}`));
    Deno.exit(2);
  } else {
    try {
      await main(parsed);
    } catch (error) {
      // Closing everything on Ctrl-C makes pending calls reject; the
      // interrupt handler reports and exits once the data is removed.
      if (interrupted) await new Promise(() => {});
      line();
      Deno.stderr.writeSync(
        encoder.encode(`Demo failed: ${(error as Error).stack ?? error}\n`),
      );
      Deno.exit(1);
    }
  }
}
