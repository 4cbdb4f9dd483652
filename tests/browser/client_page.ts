/**
 * The browser side of client_test.ts: a page that syncs one realm with the
 * bundled client, shows its objects and connection state, and exposes
 * `globalThis.clientPage` for the test to drive.
 */
import {
  App,
  Credentials,
  type Fields,
  type Realm,
  type SyncSession,
} from "../../mod.ts";

/** One connection-state transition, as the page saw it. */
export interface SeenTransition {
  previous: string;
  current: string;
  /** The SyncError code behind a disconnection, if any. */
  errorCode?: string;
}

/** What the page offers the test (every wait takes a limit in ms). */
export interface ClientPage {
  /**
   * Logs in anonymously, opens `path` (not waiting for the download) and
   * follows it: download progress, connection states, changes.
   *
   * @returns The user id.
   */
  start(baseUrl: string, path: string): Promise<string>;
  /**
   * Waits for the download progress registered right after the realm
   * opened (`forCurrentlyOutstandingWork`) to complete.
   *
   * @returns Every progress estimate reported, in order.
   */
  downloadProgress(timeoutMs: number): Promise<number[]>;
  /** How many objects of `type` the realm holds. */
  count(type: string): number;
  /** Writes one object; resolves once committed locally (not uploaded). */
  put(type: string, id: string, fields: Fields): Promise<number>;
  /** Waits until the server acknowledged every local write. */
  waitForUpload(timeoutMs: number): Promise<void>;
  /** Local writes the server has not acknowledged yet. */
  pendingUploads(): number;
  /** Waits until the realm holds `type`/`id`, and returns its fields. */
  waitForObject(type: string, id: string, timeoutMs: number): Promise<Fields>;
  /** Every connection-state transition since `start`. */
  transitions(): SeenTransition[];
  /**
   * Waits until a transition at index `from` or later has `current ===
   * state`.
   *
   * @returns Its index.
   */
  waitForTransition(
    state: string,
    from: number,
    timeoutMs: number,
  ): Promise<number>;
  /** The session's reconnect count. */
  reconnects(): number;
  /** Closes the realm and the app. */
  close(): Promise<void>;
}

/**
 * The few DOM members this page uses, typed here rather than by a
 * `lib="dom"` reference: the test imports this file's types, and the DOM
 * library's stream types clash with Deno's in the test's type check.
 * `deno task check:browser` checks this file against the DOM library.
 */
interface PageElement {
  textContent: string | null;
  innerHTML: string;
  className: string;
}
const document = (globalThis as unknown as {
  document: {
    body: PageElement;
    getElementById(id: string): PageElement | null;
  };
}).document;

// The page's elements, filled in by render().
document.body.innerHTML = `
<style>
  body { font: 15px system-ui, sans-serif; margin: 24px; color: #1d2330; }
  h1 { font-size: 22px; margin: 0 0 12px; }
  h2 { font-size: 16px; margin: 20px 0 6px; }
  .state { padding: 2px 10px; border-radius: 10px; color: white; }
  .connected { background: #1f8f4e; }
  .connecting { background: #c98a00; }
  .disconnected { background: #b3322b; }
  progress { width: 240px; vertical-align: middle; }
  table { border-collapse: collapse; }
  td, th { border: 1px solid #ccd; padding: 3px 10px; text-align: left; }
  code { font-size: 13px; }
  li.gap { list-style: none; color: #667; }
</style>
<h1>Tether in Chromium</h1>
<p>Connection: <span id="state" class="state disconnected">disconnected</span>
 · realm <code id="path">–</code> · user <code id="user">–</code></p>
<p>Download: <span id="progress">–</span>
 · <span id="seeds">0</span> Seed objects
 · <span id="pending">0</span> writes waiting for upload</p>
<h2>Notes</h2>
<table><thead><tr><th>id</th><th>text</th><th>from</th></tr></thead>
<tbody id="notes"></tbody></table>
<h2>Connection log</h2>
<ol id="log"></ol>
`;

let app: App | undefined;
let realm: Realm | undefined;
let session: SyncSession | undefined;
let downloadDone: Promise<number[]> | undefined;
let lastEstimate: number | undefined;
const seen: SeenTransition[] = [];
const streams = new AbortController();
// Re-checked after every change and transition (see until()).
const watchers = new Set<() => void>();

function element(id: string): PageElement {
  const found = document.getElementById(id);
  if (found === null) throw new Error(`The page has no #${id}`);
  return found;
}

function escape(text: string): string {
  return text.replace(/[&<>"]/g, (c) => `&#${c.charCodeAt(0)};`);
}

function render(): void {
  const state = session?.connectionState ?? "disconnected";
  const badge = element("state");
  badge.textContent = state;
  badge.className = `state ${state}`;
  if (lastEstimate !== undefined) {
    element("progress").innerHTML = `<progress max="1" value="${lastEstimate}">
      </progress> ${Math.round(lastEstimate * 100)}%`;
  }
  if (realm === undefined || realm.isClosed) return;
  element("seeds").textContent = String(realm.objects("Seed").length);
  element("pending").textContent = String(
    session?.stats().pendingUploadChangesets ?? 0,
  );
  element("notes").innerHTML = realm.objects("Note").map(({ id, fields }) =>
    `<tr>${
      [id, String(fields.text), String(fields.from)]
        .map((text) => `<td>${escape(text)}</td>`).join("")
    }</tr>`
  ).join("");
  element("log").innerHTML = logItems().join("");
}

/** The first 4 and last 6 transitions, numbered, retries between elided. */
function logItems(): string[] {
  const item = (change: SeenTransition, index: number) =>
    `<li value="${index + 1}">${change.previous} → ${change.current}${
      change.errorCode === undefined ? "" : ` (${escape(change.errorCode)})`
    }</li>`;
  if (seen.length <= 10) return seen.map(item);
  return [
    ...seen.slice(0, 4).map(item),
    `<li class="gap">… ${seen.length - 10} more</li>`,
    ...seen.slice(-6).map((change, at) => item(change, seen.length - 6 + at)),
  ];
}

function changed(): void {
  render();
  for (const watcher of [...watchers]) watcher();
}

/** Resolves with `check()`'s first defined result, re-checked on change. */
function until<T>(
  check: () => T | undefined,
  timeoutMs: number,
  what: string,
): Promise<T> {
  const now = check();
  if (now !== undefined) return Promise.resolve(now);
  return new Promise((resolve, reject) => {
    const watcher = () => {
      const value = check();
      if (value === undefined) return;
      finish();
      resolve(value);
    };
    const timer = setTimeout(() => {
      finish();
      reject(new Error(`Timed out after ${timeoutMs} ms waiting for ${what}`));
    }, timeoutMs);
    const finish = () => {
      clearTimeout(timer);
      watchers.delete(watcher);
    };
    watchers.add(watcher);
  });
}

function opened(): { realm: Realm; session: SyncSession } {
  if (realm === undefined || session === undefined) {
    throw new Error("Call start() first");
  }
  return { realm, session };
}

async function follow<T>(
  stream: ReadableStream<T>,
  each: (value: T) => void,
): Promise<void> {
  try {
    for await (const value of stream) {
      each(value);
      changed();
    }
  } catch (error) {
    if (!streams.signal.aborted) throw error;
  }
}

const api: ClientPage = {
  async start(baseUrl, path) {
    if (app !== undefined) throw new Error("Already started");
    app = new App({
      baseUrl,
      // Short delays: the test restarts the server and waits for the retry.
      reconnect: { minDelayMs: 50, maxDelayMs: 300 },
      connectTimeoutMs: 3_000,
      lingerMs: 100,
      progressIntervalMs: 0,
    });
    const user = await app.logIn(Credentials.anonymous());
    realm = await user.openRealm({ path });
    session = realm.syncSession;
    const signal = streams.signal;
    // Registered before anything else can run, so it covers the whole
    // bootstrap of the realm.
    const estimates: number[] = [];
    downloadDone = follow(
      session.getProgressStream("download", "forCurrentlyOutstandingWork", {
        signal,
      }),
      (progress) => {
        estimates.push(progress.progressEstimate);
        lastEstimate = progress.progressEstimate;
      },
    ).then(() => estimates);
    void follow(session.connectionStateChanges({ signal }), (change) => {
      seen.push({
        previous: change.previous,
        current: change.current,
        ...(change.error === undefined ? {} : { errorCode: change.error.code }),
      });
    });
    void follow(realm.changes({ signal }), () => {});
    element("path").textContent = path;
    element("user").textContent = user.id;
    changed();
    return user.id;
  },

  async downloadProgress(timeoutMs) {
    opened();
    const done = downloadDone!;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`Download not complete in ${timeoutMs} ms`)),
        timeoutMs,
      );
    });
    try {
      return await Promise.race([done, timeout]);
    } finally {
      clearTimeout(timer);
    }
  },

  count(type) {
    return opened().realm.objects(type).length;
  },

  async put(type, id, fields) {
    const receipt = await opened().realm.write((tx) =>
      tx.put(type, id, fields)
    );
    changed();
    return receipt.clientVersion;
  },

  async waitForUpload(timeoutMs) {
    await opened().session.waitForUpload({
      signal: AbortSignal.timeout(timeoutMs),
    });
    changed();
  },

  pendingUploads() {
    return opened().session.stats().pendingUploadChangesets;
  },

  waitForObject(type, id, timeoutMs) {
    const { realm } = opened();
    return until(() => realm.get(type, id), timeoutMs, `${type} ${id}`);
  },

  transitions() {
    return [...seen];
  },

  waitForTransition(state, from, timeoutMs) {
    return until(
      () => {
        const index = seen.findIndex((change, at) =>
          at >= from && change.current === state
        );
        return index === -1 ? undefined : index;
      },
      timeoutMs,
      `the connection state "${state}" (from transition ${from})`,
    );
  },

  reconnects() {
    return opened().session.stats().reconnects;
  },

  async close() {
    streams.abort();
    await realm?.close();
    await app?.close();
    render();
  },
};

(globalThis as unknown as { clientPage: ClientPage }).clientPage = api;
