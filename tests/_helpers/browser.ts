/**
 * A real-browser harness: a page whose script is a TypeScript module of the
 * test's, bundled by `deno bundle --platform browser`, served on
 * 127.0.0.1:0 and opened in Debian's headless Chromium through
 * playwright-core.
 *
 * Using it from a test (see tests/browser/client_test.ts):
 *
 * ```ts ignore
 * await using browser = await openBrowserPage({
 *   entry: new URL("./todo_page.ts", import.meta.url), // imports ../../mod.ts
 *   title: "Todos",
 *   query: { server: server.url },          // the page reads location.search
 * });
 * const api = pageApi<TodoPage>(browser.page, "todoPage"); // globalThis.todoPage
 * await api.start(server.url);             // runs in the page, awaited here
 * await browser.screenshot("todos");       // <browser.dir>/todos.png
 * assert.deepEqual(browser.pageErrors, []);
 * ```
 *
 * - The entry module is the page's only script (`<script type="module">`);
 *   whatever it imports is bundled with it, so a page imports `mod.ts` as an
 *   application would import `@tether/sync`. It runs before the page's
 *   `load` event, so anything it puts on `globalThis` is there when
 *   `openBrowserPage` resolves. It uses no `Deno.`, and types the few DOM
 *   members it touches itself (no `lib="dom"` reference: in the test's type
 *   check the DOM library's stream types clash with Deno's); add it to
 *   `check:browser` in deno.json, which checks it against the DOM library.
 * - `pageApi()` calls the page's functions by name (`page.evaluate` with the
 *   arguments as JSON): a call waits for the function's promise, and
 *   `page.evaluate` has no timeout of its own, so every page function that
 *   waits must take a time limit (`AbortSignal.timeout` in the page).
 * - The page's origin is not the sync server's: the client reaches
 *   `POST /login` by CORS and `/sync` by WebSocket, as a deployed app does,
 *   and the sync server can stop and start again under a page that stays.
 * - Disposal closes the browser (its process ends), then the page server,
 *   then removes the temporary directory (bundle, screenshots). Set
 *   `TETHER_SCREENSHOT_DIR` to a directory to keep a copy of every
 *   screenshot there.
 * - Chromium must be at `/usr/bin/chromium` (`.ci/run` installs Debian's
 *   package when it is missing). playwright-core never downloads a browser
 *   here: every launch names the executable, and the package has no install
 *   script (so `PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD` has nothing to skip).
 *
 * Disposal leaves nothing behind (a browser left open fails the op and
 * resource sanitizers: its child process, signal handlers and timers), so
 * the browser tests run with the sanitizers on like every other test.
 */
import { type Browser, chromium, type Page } from "npm:playwright-core@1.65.2";

/** Where Debian's `chromium` package puts its launcher. */
export const CHROMIUM_PATH = "/usr/bin/chromium";

/** What {@linkcode openBrowserPage} serves. */
export interface BrowserPageOptions {
  /** The page's script: a browser module, bundled with what it imports. */
  entry: URL;
  /** The page's title. Default: "Tether browser test". */
  title?: string;
  /** HTML placed in `<body>` before the script runs. Default: empty. */
  body?: string;
  /** Query parameters of the page's URL (for the page to read). */
  query?: Record<string, string>;
  /** Bounds bundling and loading; Chromium's launch has its own 30 s. */
  signal?: AbortSignal;
}

/** An open page in headless Chromium; dispose it to close everything. */
export interface BrowserPage extends AsyncDisposable {
  /** The playwright page, for `evaluate`, `locator`, `screenshot`… */
  readonly page: Page;
  /** The browser (one per `openBrowserPage`). */
  readonly browser: Browser;
  /** The page's URL on the harness's own server. */
  readonly url: string;
  /** A temporary directory for this page (bundle, screenshots). */
  readonly dir: string;
  /** Uncaught errors in the page, as `name: message`, in order. */
  readonly pageErrors: string[];
  /** Console messages of the page, as `type: text`, in order. */
  readonly console: string[];
  /**
   * Saves a full-page PNG as `<dir>/<name>.png` (and into
   * `TETHER_SCREENSHOT_DIR` when that is set).
   *
   * @returns The path in `dir`.
   */
  screenshot(name: string): Promise<string>;
}

/**
 * Bundles `entry` for browsers with Deno's own bundler into `outFile`.
 *
 * @throws {Error} With the bundler's output when it fails.
 */
export async function bundleForBrowser(
  entry: URL,
  outFile: string,
  signal?: AbortSignal,
): Promise<void> {
  if (entry.protocol !== "file:") {
    throw new TypeError(
      `Cannot bundle: entry must be a file: URL, got ${entry}`,
    );
  }
  const command = new Deno.Command(Deno.execPath(), {
    args: [
      "bundle",
      "--quiet",
      "--platform",
      "browser",
      "--output",
      outFile,
      decodeURIComponent(entry.pathname),
    ],
    // Finds the repository's deno.json, whatever the test's directory.
    cwd: decodeURIComponent(new URL(".", entry).pathname),
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    ...(signal === undefined ? {} : { signal }),
  });
  const result = await command.output();
  if (!result.success) {
    const decoder = new TextDecoder();
    throw new Error(
      `deno bundle ${entry.pathname} failed (${result.code}):\n${
        decoder.decode(result.stdout)
      }${decoder.decode(result.stderr)}`,
    );
  }
}

/**
 * Bundles the entry, serves it in a page on 127.0.0.1:0, launches headless
 * Chromium and loads the page; see the file comment.
 *
 * @throws {Error} When Chromium is missing, bundling fails or the page does
 *   not load; everything opened so far is closed first.
 */
export async function openBrowserPage(
  options: BrowserPageOptions,
): Promise<BrowserPage> {
  await checkChromium();
  await using stack = new AsyncDisposableStack();
  const dir = await Deno.makeTempDir({ prefix: "tether-browser-" });
  stack.defer(() => Deno.remove(dir, { recursive: true }));

  const bundlePath = `${dir}/page.js`;
  await bundleForBrowser(options.entry, bundlePath, options.signal);
  const script = await Deno.readFile(bundlePath);
  const html = pageHtml(options.title ?? "Tether browser test", options.body);

  const server = serveFiles(html, script);
  stack.defer(() => server.shutdown());
  const query = new URLSearchParams(options.query ?? {}).toString();
  const url = `http://127.0.0.1:${server.addr.port}/${
    query === "" ? "" : `?${query}`
  }`;

  const browser = await chromium.launch({
    executablePath: CHROMIUM_PATH,
    // CI runs as root, where Chromium's sandbox cannot start.
    chromiumSandbox: false,
    // /dev/shm is small in containers; Chromium then crashes on big pages.
    args: ["--disable-dev-shm-usage"],
    timeout: 30_000,
  });
  stack.defer(() => browser.close());
  // An explicit context, so a test can open a second tab of the same
  // origin (same IndexedDB, same Web Locks) with `page.context().newPage()`.
  const context = await browser.newContext({
    viewport: { width: 900, height: 700 },
  });
  const page = await context.newPage();
  page.setDefaultTimeout(10_000);
  const pageErrors: string[] = [];
  const consoleLines: string[] = [];
  page.on("pageerror", (error) => {
    pageErrors.push(`${error.name}: ${error.message}`);
  });
  page.on("crash", () => pageErrors.push("crash: the page crashed"));
  page.on("console", (message) => {
    consoleLines.push(`${message.type()}: ${message.text()}`);
  });
  options.signal?.throwIfAborted();
  const response = await page.goto(url, { waitUntil: "load" });
  if (response === null || !response.ok()) {
    throw new Error(`The test page did not load: ${response?.status()}`);
  }
  if (pageErrors.length > 0) {
    throw new Error(`The test page failed: ${pageErrors.join("; ")}`);
  }

  const owned = stack.move();
  return {
    page,
    browser,
    url,
    dir,
    pageErrors,
    console: consoleLines,
    async screenshot(name) {
      if (!/^[\w.-]+$/.test(name)) {
        throw new TypeError(
          `Cannot save screenshot: name must be letters, digits, _ . -: ${name}`,
        );
      }
      const path = `${dir}/${name}.png`;
      await page.screenshot({ path, fullPage: true });
      const keep = Deno.env.get("TETHER_SCREENSHOT_DIR");
      if (keep !== undefined && keep !== "") {
        await Deno.mkdir(keep, { recursive: true });
        await Deno.copyFile(path, `${keep}/${name}.png`);
      }
      return path;
    },
    [Symbol.asyncDispose]: () => owned.disposeAsync(),
  };
}

/** The remote form of a page's API: every method returns a promise. */
export type PageApi<T> = {
  [K in keyof T]: T[K] extends (...args: infer A) => infer R
    ? (...args: A) => Promise<Awaited<R>>
    : never;
};

/**
 * Calls the functions of the object the page put on `globalThis[name]`.
 * Arguments and results cross as JSON-like values (playwright serializes
 * them); a function that throws makes the call reject with its message.
 */
export function pageApi<T extends object>(
  page: Page,
  name: string,
): PageApi<T> {
  return new Proxy({} as PageApi<T>, {
    get(_target, method) {
      if (typeof method !== "string") return undefined;
      return (...args: unknown[]) =>
        page.evaluate(
          ([global, key, values]) => {
            const api = (globalThis as unknown as Record<
              string,
              Record<string, (...args: unknown[]) => unknown> | undefined
            >)[global];
            const fn = api?.[key];
            if (typeof fn !== "function") {
              throw new TypeError(`The page has no ${global}.${key}()`);
            }
            return fn.apply(api, values);
          },
          [name, method, args] as const,
        );
    },
  });
}

async function checkChromium(): Promise<void> {
  try {
    await Deno.stat(CHROMIUM_PATH);
  } catch {
    throw new Error(
      `Chromium not found at ${CHROMIUM_PATH}: the browser tests need ` +
        "Debian's package (apt-get install -y chromium, as .ci/run does)",
    );
  }
}

function pageHtml(title: string, body = ""): string {
  const escaped = title.replace(/[&<>"]/g, (c) => `&#${c.charCodeAt(0)};`);
  // The data: icon keeps Chromium from asking for /favicon.ico.
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<link rel="icon" href="data:,">
<title>${escaped}</title>
</head>
<body>
${body}
<script type="module" src="/page.js"></script>
</body>
</html>
`;
}

/** Serves the page at `/` and its script at `/page.js`, nothing else. */
function serveFiles(
  html: string,
  script: Uint8Array<ArrayBuffer>,
): Deno.HttpServer<Deno.NetAddr> {
  return Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    (request) => {
      const { pathname } = new URL(request.url);
      if (pathname === "/") {
        return new Response(html, {
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
}
