/**
 * The browser side of durable_test.ts: a page that opens a durable app on
 * IndexedDB (`App.open({ storage: { indexedDb } })`), shows the saved user,
 * the realm's notes and its pending writes, and exposes
 * `globalThis.durablePage` for the test to drive across page reloads.
 */
import { App, Credentials, type Realm } from "../../mod.ts";

/** What the page shows, as data. */
export interface DurableState {
  userId: string;
  /** Whether the user came from storage rather than a login. */
  restored: boolean;
  /** Every note: id and text. */
  notes: { id: string; text: string }[];
  /** Client versions of `realm.pendingWrites()`. */
  pending: number[];
  connection: string;
}

/** What the page offers the test (every wait takes a limit in ms). */
export interface DurablePage {
  /**
   * Opens the app on IndexedDB `database`, restores its user (or logs in
   * anonymously) and opens `path` — without a server if need be.
   */
  open(baseUrl: string, database: string, path: string): Promise<DurableState>;
  /** Writes one note; resolves once committed to IndexedDB. */
  put(id: string, text: string): Promise<DurableState>;
  /** Waits for the receipts of every pending write. */
  waitForPending(timeoutMs: number): Promise<DurableState>;
  /** The current state. */
  state(): DurableState;
  /** Closes the realm and the app. */
  close(): Promise<void>;
}

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

document.body.innerHTML = `
<style>
  body { font: 15px system-ui, sans-serif; margin: 24px; color: #1d2330; }
  h1 { font-size: 22px; margin: 0 0 12px; }
  h2 { font-size: 16px; margin: 20px 0 6px; }
  .state { padding: 2px 10px; border-radius: 10px; color: white; }
  .connected { background: #1f8f4e; }
  .connecting { background: #c98a00; }
  .disconnected { background: #b3322b; }
  table { border-collapse: collapse; }
  td, th { border: 1px solid #ccd; padding: 3px 10px; text-align: left; }
  code { font-size: 13px; }
</style>
<h1>Tether on IndexedDB</h1>
<p>Connection: <span id="state" class="state disconnected">disconnected</span>
 · page load <code id="load">–</code></p>
<p>User <code id="user">–</code> (<span id="origin">–</span>)</p>
<h2>Notes</h2>
<table><thead><tr><th>id</th><th>text</th></tr></thead>
<tbody id="notes"></tbody></table>
<h2>Pending writes (<span id="count">0</span>)</h2>
<p id="pending">–</p>
`;

let app: App | undefined;
let realm: Realm | undefined;
let userId = "";
let restored = false;
const streams = new AbortController();

function element(id: string): PageElement {
  const found = document.getElementById(id);
  if (found === null) throw new Error(`The page has no #${id}`);
  return found;
}

function escape(text: string): string {
  return text.replace(/[&<>"]/g, (c) => `&#${c.charCodeAt(0)};`);
}

function state(): DurableState {
  if (realm === undefined) throw new Error("Call open() first");
  return {
    userId,
    restored,
    notes: realm.objects("Note").map(({ id, fields }) => ({
      id,
      text: String(fields.text),
    })).sort((a, b) => a.id < b.id ? -1 : 1),
    pending: realm.pendingWrites().map((receipt) => receipt.clientVersion),
    connection: realm.syncSession.connectionState,
  };
}

function render(): void {
  if (realm === undefined || realm.isClosed) return;
  const now = state();
  const badge = element("state");
  badge.textContent = now.connection;
  badge.className = `state ${now.connection}`;
  element("user").textContent = now.userId;
  element("origin").textContent = now.restored
    ? "restored from IndexedDB"
    : "new login";
  element("notes").innerHTML = now.notes.map(({ id, text }) =>
    `<tr><td>${escape(id)}</td><td>${escape(text)}</td></tr>`
  ).join("");
  element("count").textContent = String(now.pending.length);
  element("pending").textContent = now.pending.length === 0
    ? "none: the server acknowledged every write"
    : `client versions ${now.pending.join(", ")}`;
}

const api: DurablePage = {
  async open(baseUrl, database, path) {
    if (app !== undefined) throw new Error("Already open");
    element("load").textContent = new Date().toISOString();
    app = await App.open({
      baseUrl,
      storage: { indexedDb: database },
      reconnect: { minDelayMs: 50, maxDelayMs: 300 },
      connectTimeoutMs: 3_000,
      lingerMs: 100,
    });
    const saved = app.currentUser;
    restored = saved !== undefined;
    const user = saved ?? await app.logIn(Credentials.anonymous());
    userId = user.id;
    realm = await user.openRealm({ path });
    const signal = streams.signal;
    const follow = async (stream: ReadableStream<unknown>) => {
      try {
        for await (const _ of stream) render();
      } catch (error) {
        if (!signal.aborted) throw error;
      }
    };
    void follow(realm.changes({ signal }));
    void follow(realm.syncSession.connectionStateChanges({ signal }));
    render();
    return state();
  },

  async put(id, text) {
    if (realm === undefined) throw new Error("Call open() first");
    await realm.write((tx) => tx.put("Note", id, { text }));
    render();
    return state();
  },

  async waitForPending(timeoutMs) {
    if (realm === undefined) throw new Error("Call open() first");
    const signal = AbortSignal.timeout(timeoutMs);
    await Promise.all(
      realm.pendingWrites().map((receipt) => receipt.waitForUpload({ signal })),
    );
    render();
    return state();
  },

  state,

  async close() {
    streams.abort();
    await realm?.close();
    await app?.close();
  },
};

(globalThis as unknown as { durablePage: DurablePage }).durablePage = api;
