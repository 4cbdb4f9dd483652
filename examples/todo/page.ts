/**
 * The todo list's browser page: one shared realm driven by `realm.watch`
 * (filter all / open / done, sorted by creation time), add / toggle /
 * delete, a connection badge and upload/download progress bars, stored in
 * IndexedDB through `App.open` (the saved user and the list survive a
 * reload, also offline). Bundled with `deno bundle --platform browser` by serve.ts and
 * by tests/browser/todo_test.ts; it reads the sync server's URL from
 * `?server=` and puts a small API on `globalThis.todoPage` for the test.
 *
 * @module
 */
import {
  App,
  Credentials,
  type LiveQueryUpdate,
  type Progress,
  type Realm,
  SyncError,
  type SyncSession,
  type Where,
} from "../../mod.ts";

/** A todo as stored in the realm. */
export interface Todo {
  title: string;
  done: boolean;
  /** `Date.now()` when added: the list's order. */
  createdAt: number;
}

/** Which todos the list shows. */
export type Filter = "all" | "open" | "done";

/** The realm every user of the example shares (see serve.ts's rule). */
export const TODO_PATH = "/shared/todos";

/** What the page offers a test (the UI itself is driven by clicks). */
export interface TodoPage {
  /** Resolves once the page has logged in and opened the realm. */
  ready(timeoutMs: number): Promise<string>;
  /** The titles shown, in order, with their done flags. */
  shown(): { title: string; done: boolean }[];
  /** The session's connection state. */
  connectionState(): string;
  /** Local writes the server has not acknowledged yet. */
  pendingUploads(): number;
  /** Closes the realm and the app (streams end). */
  close(): Promise<void>;
}

/**
 * The few DOM members this page uses, typed here rather than by a
 * `lib="dom"` reference (see tests/_helpers/browser.ts).
 */
interface PageElement {
  textContent: string | null;
  innerHTML: string;
  className: string;
  value: string;
  checked: boolean;
  dataset: Record<string, string | undefined>;
  readonly children: ArrayLike<PageElement>;
  append(...nodes: PageElement[]): void;
  insertBefore(node: PageElement, before: PageElement | null): void;
  remove(): void;
  querySelector(selector: string): PageElement | null;
  setAttribute(name: string, value: string): void;
  addEventListener(
    type: string,
    listener: (event: { preventDefault(): void }) => void,
  ): void;
}
const page = globalThis as unknown as {
  document: {
    body: PageElement;
    getElementById(id: string): PageElement | null;
    createElement(tag: string): PageElement;
  };
  location: { search: string };
  todoPage: TodoPage;
};
const document = page.document;

document.body.innerHTML = `
<style>
  body { font: 15px system-ui, sans-serif; margin: 24px auto; max-width: 560px; color: #1d2330; }
  h1 { font-size: 24px; margin: 0 0 8px; }
  .bar { display: flex; gap: 12px; align-items: center; margin: 6px 0; font-size: 13px; }
  .state { padding: 2px 10px; border-radius: 10px; color: white; }
  .connected { background: #1f8f4e; }
  .connecting { background: #c98a00; }
  .disconnected { background: #b3322b; }
  progress { width: 120px; }
  form { display: flex; gap: 8px; margin: 14px 0 8px; }
  form input { flex: 1; font: inherit; padding: 6px 8px; }
  button { font: inherit; }
  .filters button.on { font-weight: bold; text-decoration: underline; }
  ul { list-style: none; padding: 0; }
  li { display: flex; gap: 10px; align-items: center; padding: 6px 4px; border-bottom: 1px solid #e3e6ee; }
  li .title { flex: 1; }
  li.done .title { text-decoration: line-through; color: #8a90a0; }
  li button { border: none; background: none; color: #b3322b; cursor: pointer; }
  #empty { color: #8a90a0; }
</style>
<h1>Todos</h1>
<div class="bar">
  <span id="state" class="state disconnected">disconnected</span>
  <span>upload <progress id="up" max="1" value="1"></progress></span>
  <span>download <progress id="down" max="1" value="1"></progress></span>
  <span id="pending"></span>
  <span id="store"></span>
</div>
<form id="add">
  <input id="title" placeholder="What needs doing?" autocomplete="off">
  <button type="submit">Add</button>
</form>
<div class="bar filters">
  <button id="filter-all" class="on">All</button>
  <button id="filter-open">Open</button>
  <button id="filter-done">Done</button>
  <span id="counts"></span>
</div>
<ul id="list"></ul>
<p id="empty">Nothing here.</p>
`;

function element(id: string): PageElement {
  const found = document.getElementById(id);
  if (found === null) throw new Error(`The page has no #${id}`);
  return found;
}

const WHERE: Record<Filter, Where<Todo>> = {
  all: {},
  open: { done: false },
  done: { done: true },
};

let realm: Realm | undefined;
let session: SyncSession | undefined;
let app: App | undefined;
/** Ends every stream when the page closes. */
const life = new AbortController();
/** Ends the list's live query when the filter changes. */
let listWatch = new AbortController();
let filter: Filter = "all";

/** One `<li>` for a todo; its checkbox and button write to the realm. */
function todoItem(id: string, todo: Todo): PageElement {
  const item = document.createElement("li");
  item.dataset.id = id;
  const box = document.createElement("input");
  box.setAttribute("type", "checkbox");
  box.addEventListener("change", () => {
    void realm?.write((tx) => tx.update("Todo", id, { done: box.checked }));
  });
  const title = document.createElement("span");
  title.className = "title";
  const remove = document.createElement("button");
  remove.textContent = "✕";
  remove.setAttribute("title", "Delete");
  remove.addEventListener("click", () => {
    void realm?.write((tx) => tx.delete("Todo", id));
  });
  item.append(box, title, remove);
  fillItem(item, todo);
  return item;
}

function fillItem(item: PageElement, todo: Todo): void {
  item.className = todo.done ? "done" : "";
  item.dataset.title = todo.title;
  item.querySelector("input")!.checked = todo.done;
  item.querySelector(".title")!.textContent = todo.title;
}

/**
 * Patches the list with one live-query update: deletions (indexes into the
 * previous result) from the back, then insertions and modifications
 * (indexes into the new one) from the front, so the DOM follows the
 * result without being rebuilt.
 */
function patchList({ objects, changes }: LiveQueryUpdate<Todo>): void {
  const list = element("list");
  const items = () => list.children;
  for (const index of [...changes.deletions].sort((a, b) => b - a)) {
    items()[index]!.remove();
  }
  for (const index of [...changes.insertions].sort((a, b) => a - b)) {
    const { id, fields } = objects[index]!;
    list.insertBefore(todoItem(id, fields), items()[index] ?? null);
  }
  for (const index of changes.modifications) {
    fillItem(items()[index]!, objects[index]!.fields);
  }
  element("empty").textContent = objects.length === 0 ? "Nothing here." : "";
  renderCounts();
}

function renderCounts(): void {
  if (realm === undefined || realm.isClosed) return;
  const open = realm.count<Todo>("Todo", { where: { done: false } });
  const done = realm.count<Todo>("Todo", { where: { done: true } });
  element("counts").textContent = `${open} open · ${done} done`;
  const pending = session?.stats().pendingUploadChangesets ?? 0;
  element("pending").textContent = pending === 0
    ? ""
    : `${pending} change${pending === 1 ? "" : "s"} not uploaded`;
}

/** (Re)starts the list's live query for the current filter. */
function watchList(): void {
  if (realm === undefined) return;
  listWatch.abort();
  listWatch = new AbortController();
  element("list").innerHTML = "";
  const updates = realm.watch<Todo>("Todo", {
    where: WHERE[filter],
    sort: [["createdAt", "asc"], ["title", "asc"]],
    signal: AbortSignal.any([life.signal, listWatch.signal]),
  });
  void follow(updates, patchList);
}

async function follow<T>(
  stream: ReadableStream<T>,
  each: (value: T) => void,
): Promise<void> {
  try {
    for await (const value of stream) each(value);
  } catch (error) {
    if (!life.signal.aborted) console.error(error);
  }
}

function showProgress(id: string, progress: Progress): void {
  element(id).value = String(progress.progressEstimate);
  renderCounts();
}

async function start(): Promise<string> {
  const server = new URLSearchParams(page.location.search).get("server");
  if (server === null) throw new Error("Open the page with ?server=<url>");
  const options = {
    baseUrl: server,
    reconnect: { minDelayMs: 100, maxDelayMs: 2_000 },
    progressIntervalMs: 0,
  };
  // The first tab owns the offline store (IndexedDB): the saved user, the
  // list and its pending writes survive reloads, also with the server down.
  // A second tab of the same origin is refused that store (one writer per
  // store), so it syncs from memory instead and still sees everything live.
  try {
    app = await App.open({ ...options, storage: { indexedDb: "tether-todo" } });
    element("store").textContent = "offline store: IndexedDB";
  } catch (error) {
    if (!(error instanceof SyncError && error.code === "storage_locked")) {
      throw error;
    }
    app = new App(options);
    element("store").textContent = "another tab holds the offline store";
  }
  const user = app.currentUser ?? await app.logIn(Credentials.anonymous());
  realm = await user.openRealm({
    path: TODO_PATH,
    indexes: { Todo: ["done"] },
  });
  session = realm.syncSession;
  const signal = life.signal;
  void follow(session.connectionStateChanges({ signal }), ({ current }) => {
    const badge = element("state");
    badge.textContent = current;
    badge.className = `state ${current}`;
    renderCounts();
  });
  for (const direction of ["upload", "download"] as const) {
    void follow(
      session.getProgressStream(direction, "reportIndefinitely", { signal }),
      (progress) =>
        showProgress(direction === "upload" ? "up" : "down", progress),
    );
  }
  for (const name of ["all", "open", "done"] as const) {
    element(`filter-${name}`).addEventListener("click", () => {
      element(`filter-${filter}`).className = "";
      filter = name;
      element(`filter-${name}`).className = "on";
      watchList();
    });
  }
  element("add").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = element("title");
    const title = input.value.trim();
    if (title === "" || realm === undefined) return;
    input.value = "";
    void realm.write((tx) =>
      tx.put("Todo", crypto.randomUUID(), {
        title,
        done: false,
        createdAt: Date.now(),
      })
    );
  });
  watchList();
  return user.id;
}

const started = start();
started.catch((error) => console.error(error));

page.todoPage = {
  async ready(timeoutMs) {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`Not started in ${timeoutMs} ms`)),
        timeoutMs,
      );
    });
    try {
      return await Promise.race([started, timeout]);
    } finally {
      clearTimeout(timer);
    }
  },
  shown() {
    return Array.from(element("list").children, (item) => ({
      title: item.dataset.title ?? "",
      done: item.className === "done",
    }));
  },
  connectionState() {
    return session?.connectionState ?? "disconnected";
  },
  pendingUploads() {
    return session?.stats().pendingUploadChangesets ?? 0;
  },
  async close() {
    life.abort();
    await realm?.close();
    await app?.close();
  },
};
