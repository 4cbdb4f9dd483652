/**
 * Runs the todo example: an embedded sync server (anonymous login; every
 * user may read and write `/shared/todos`, other paths only their own),
 * the page bundled by `deno bundle --platform browser`, and a small HTTP
 * server for the page; prints the URL to open (in two tabs to see them
 * sync).
 *
 * Run it with `deno task example:todo` (`--help` for the options).
 *
 * @module
 */
import { ownPathsOnly, serveSync } from "@tether/sync/server";

const USAGE = `Usage: deno task example:todo [options]

Serves the todo example: a sync server and the page, on 127.0.0.1.

Options:
  --port <n>      the page's port (default 8080; 0 picks a free one)
  --kv <path>     the sync server's Deno KV file (default: in memory, so the
                  server forgets the list when it stops)
  -h, --help      show this help
`;

interface Options {
  port: number;
  kv: string;
}

function parseArgs(args: string[]): Options | "help" | string {
  const options: Options = { port: 8080, kv: ":memory:" };
  for (let index = 0; index < args.length; index++) {
    const arg = args[index]!;
    if (arg === "-h" || arg === "--help") return "help";
    if (arg === "--") continue;
    if (arg === "--port" || arg === "--kv") {
      const value = args[++index];
      if (value === undefined) return `${arg} wants a value`;
      if (arg === "--kv") {
        options.kv = value;
        continue;
      }
      const port = Number(value);
      if (!Number.isInteger(port) || port < 0 || port > 65_535) {
        return `--port wants a port number, got ${JSON.stringify(value)}`;
      }
      options.port = port;
    } else {
      return `Unknown option ${JSON.stringify(arg)}`;
    }
  }
  return options;
}

/** Bundles page.ts for browsers with Deno's own bundler. */
async function bundlePage(): Promise<Uint8Array<ArrayBuffer>> {
  const dir = await Deno.makeTempDir({ prefix: "tether-todo-" });
  try {
    const outFile = `${dir}/page.js`;
    const entry = new URL("./page.ts", import.meta.url);
    const result = await new Deno.Command(Deno.execPath(), {
      args: [
        "bundle",
        "--quiet",
        "--platform",
        "browser",
        "--output",
        outFile,
        decodeURIComponent(entry.pathname),
      ],
      cwd: decodeURIComponent(new URL(".", entry).pathname),
      stdin: "null",
    }).output();
    if (!result.success) {
      throw new Error(
        `deno bundle failed:\n${new TextDecoder().decode(result.stderr)}`,
      );
    }
    return await Deno.readFile(outFile);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>Tether todos</title>
</head>
<body>
<script type="module" src="/page.js"></script>
</body>
</html>
`;

async function main(): Promise<number> {
  const options = parseArgs(Deno.args);
  if (options === "help") {
    console.log(USAGE);
    return 0;
  }
  if (typeof options === "string") {
    console.error(`${options}\n\n${USAGE}`);
    return 2;
  }
  const script = await bundlePage();
  await using sync = await serveSync({
    port: 0,
    hostname: "127.0.0.1",
    kv: options.kv,
    auth: { allowAnonymous: true },
    // The shared list is everyone's; any other path only its owner's.
    permissions: (userId, path) =>
      path === "/shared/todos" ? "readwrite" : ownPathsOnly(userId, path),
    logger: () => {},
  });
  await using pages = Deno.serve(
    { hostname: "127.0.0.1", port: options.port, onListen: () => {} },
    (request) => {
      const { pathname } = new URL(request.url);
      if (pathname === "/") {
        return new Response(PAGE, {
          headers: { "content-type": "text/html; charset=utf-8" },
        });
      }
      if (pathname === "/page.js") {
        return new Response(script, {
          headers: { "content-type": "text/javascript; charset=utf-8" },
        });
      }
      return new Response("Not found", { status: 404 });
    },
  );
  const url = `http://127.0.0.1:${pages.addr.port}/?server=${
    encodeURIComponent(sync.url)
  }`;
  console.log(`Sync server: ${sync.url}`);
  console.log(`Todo list:   ${url}`);
  console.log("Open it in two tabs; Ctrl-C stops both servers.");
  const stop = Promise.withResolvers<void>();
  const onSignal = () => stop.resolve();
  Deno.addSignalListener("SIGINT", onSignal);
  try {
    await stop.promise;
  } finally {
    Deno.removeSignalListener("SIGINT", onSignal);
  }
  return 0;
}

if (import.meta.main) Deno.exit(await main());
