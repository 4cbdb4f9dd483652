import type { ThroughputRates } from "./throughput.ts";

/**
 * The `/status` page (docs/SERVER.md "Status page"): one self-contained
 * HTML document rendered from a snapshot, with inline CSS and a few lines
 * of inline script that re-fetch the page and swap its content, so it
 * refreshes itself without a build step or any external asset.
 */

/** One bound session, as the status page lists it. */
export interface StatusSession {
  /** The realm path (user-controlled: escaped when rendered). */
  realm: string;
  /** The connection's number within this server. */
  connection: number;
  /** The session id on that connection. */
  session: number;
  /** The authenticated user (user-controlled: escaped when rendered). */
  userId: string;
  /** The session's state, e.g. `"bootstrapping"`, `"live"`, `"unbinding"`. */
  state: string;
  /** Bytes waiting to be sent to this session's client. */
  pendingBytes: number;
}

/** What the status page shows, taken at one instant. */
export interface StatusSnapshot {
  /** When the snapshot was taken, in epoch milliseconds. */
  time: number;
  /** When the server started, in epoch milliseconds. */
  startedAt: number;
  /** The package version. */
  version: string;
  /** Open WebSocket connections. */
  connections: number;
  /** Bound sessions. */
  sessions: number;
  /** Realms with sessions in this process. */
  realms: number;
  /** Totals since start. */
  totals: { bytesIn: number; bytesOut: number; changesets: number };
  /** Rates over the last few seconds. */
  throughput: ThroughputRates;
  /** Every bound session (the page shows the largest backlogs first). */
  sessionList: StatusSession[];
}

/** Options of {@linkcode renderStatusPage}. */
export interface StatusPageOptions {
  /**
   * Seconds between refreshes.
   *
   * @default {2}
   */
  refreshSeconds?: number;
  /**
   * Most session rows shown; the rest are counted.
   *
   * @default {500}
   */
  maxSessionRows?: number;
}

/** The `Content-Type` of the page. */
export const STATUS_PAGE_CONTENT_TYPE = "text/html; charset=utf-8";

/**
 * Renders the status page. Every string from the snapshot is HTML-escaped;
 * the page loads nothing from elsewhere.
 */
export function renderStatusPage(
  snapshot: StatusSnapshot,
  options: StatusPageOptions = {},
): string {
  const refreshSeconds = options.refreshSeconds ?? 2;
  const maxRows = options.maxSessionRows ?? 500;
  const byRealm = new Map<string, { sessions: number; pending: number }>();
  for (const session of snapshot.sessionList) {
    const entry = byRealm.get(session.realm) ?? { sessions: 0, pending: 0 };
    entry.sessions++;
    entry.pending += session.pendingBytes;
    byRealm.set(session.realm, entry);
  }
  const realms = [...byRealm].sort((a, b) =>
    b[1].pending - a[1].pending || compare(a[0], b[0])
  );
  const sessions = [...snapshot.sessionList].sort((a, b) =>
    b.pendingBytes - a.pendingBytes || compare(a.realm, b.realm) ||
    a.connection - b.connection || a.session - b.session
  );
  const shown = sessions.slice(0, maxRows);
  const rate = snapshot.throughput;
  const uptime = formatDuration(snapshot.time - snapshot.startedAt);

  const realmRows = realms.length === 0
    ? `<tr><td colspan="3" class="empty">No realm has a session</td></tr>`
    : realms.slice(0, maxRows).map(([path, entry]) =>
      `<tr><td class="path">${
        escapeHtml(path)
      }</td><td class="n">${entry.sessions}</td><td class="n">${
        formatBytes(entry.pending)
      }</td></tr>`
    ).join("\n");
  const sessionRows = shown.length === 0
    ? `<tr><td colspan="6" class="empty">No session is bound</td></tr>`
    : shown.map((session) =>
      `<tr><td class="path">${escapeHtml(session.realm)}</td><td>${
        escapeHtml(session.userId)
      }</td><td class="n">${session.connection}</td><td class="n">${session.session}</td><td><span class="state state-${
        cssToken(session.state)
      }">${escapeHtml(session.state)}</span></td><td class="n">${
        formatBytes(session.pendingBytes)
      }</td></tr>`
    ).join("\n");
  const more = sessions.length > shown.length
    ? `<p class="more">… and ${
      sessions.length - shown.length
    } more sessions with smaller backlogs</p>`
    : "";

  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>Tether status</title>
<noscript><meta http-equiv="refresh" content="${refreshSeconds}"></noscript>
<style>
:root { color-scheme: light dark; --muted: #777; --line: #8884; --accent: #2a7; }
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5rem; }
h1 { font-size: 1.3rem; margin: 0 0 .25rem; }
h2 { font-size: 1rem; margin: 1.5rem 0 .5rem; }
.meta, .more, .empty { color: var(--muted); }
.cards { display: flex; flex-wrap: wrap; gap: .75rem; margin-top: 1rem; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: .5rem .9rem; min-width: 9rem; }
.card b { display: block; font-size: 1.4rem; font-variant-numeric: tabular-nums; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .25rem .6rem; border-bottom: 1px solid var(--line); }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
td.path { font-family: ui-monospace, monospace; word-break: break-all; }
.state { border-radius: 3px; padding: 0 .35rem; background: #8882; }
.state-live { background: #2a73; }
.state-bootstrapping, .state-catching_up { background: #e903; }
#updated.stale { color: #d33; }
</style>
</head>
<body>
<main id="status">
<h1>Tether sync server</h1>
<p class="meta">Version ${
    escapeHtml(snapshot.version)
  } · up ${uptime} · <span id="updated">updated ${
    escapeHtml(new Date(snapshot.time).toISOString())
  }</span></p>
<div class="cards">
<div class="card">Connections<b id="connections">${snapshot.connections}</b></div>
<div class="card">Sessions<b id="sessions">${snapshot.sessions}</b></div>
<div class="card">Realms<b id="realms">${snapshot.realms}</b></div>
<div class="card">In<b>${formatBytes(rate.bytesIn)}/s</b>${
    formatCount(rate.messagesIn)
  } msg/s</div>
<div class="card">Out<b>${formatBytes(rate.bytesOut)}/s</b>${
    formatCount(rate.messagesOut)
  } msg/s</div>
<div class="card">Changesets<b>${
    formatCount(rate.changesets)
  }/s</b>${snapshot.totals.changesets} in all</div>
</div>
<h2>Realms</h2>
<table id="realm-table">
<thead><tr><th>Path</th><th class="n">Sessions</th><th class="n">Pending</th></tr></thead>
<tbody>
${realmRows}
</tbody>
</table>
<h2>Sessions</h2>
<table id="session-table">
<thead><tr><th>Realm</th><th>User</th><th class="n">Connection</th><th class="n">Session</th><th>State</th><th class="n">Pending</th></tr></thead>
<tbody>
${sessionRows}
</tbody>
</table>
${more}
</main>
<script>
// Re-fetches this page and swaps its content; on failure the timestamp
// turns red and the next tick tries again.
(() => {
  const everyMs = ${refreshSeconds * 1000};
  const tick = async () => {
    try {
      const response = await fetch(location.href, { cache: "no-store" });
      if (!response.ok) throw new Error(String(response.status));
      const page = new DOMParser().parseFromString(await response.text(), "text/html");
      const fresh = page.getElementById("status");
      if (fresh) document.getElementById("status").replaceWith(fresh);
    } catch {
      document.getElementById("updated")?.classList.add("stale");
    }
    setTimeout(tick, everyMs);
  };
  setTimeout(tick, everyMs);
})();
</script>
</body>
</html>
`;
}

/** Escapes text for HTML content and quoted attribute values. */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (char) => ENTITIES[char]!);
}

const ENTITIES: Record<string, string> = {
  "&": "&amp;",
  "<": "&lt;",
  ">": "&gt;",
  '"': "&quot;",
  "'": "&#39;",
};

function cssToken(text: string): string {
  return text.replace(/[^a-z0-9_-]/gi, "_");
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** `1.5 MB` style, decimal units. */
export function formatBytes(bytes: number): string {
  if (!Number.isFinite(bytes) || bytes < 1000) {
    return `${Number.isFinite(bytes) ? Math.round(bytes) : 0} B`;
  }
  const units = ["kB", "MB", "GB", "TB"];
  let value = bytes / 1000;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit++;
  }
  return `${value < 10 ? value.toFixed(1) : Math.round(value)} ${units[unit]}`;
}

function formatCount(value: number): string {
  return value < 10 ? value.toFixed(1) : String(Math.round(value));
}

function formatDuration(ms: number): string {
  const seconds = Math.max(0, Math.floor(ms / 1000));
  const days = Math.floor(seconds / 86_400);
  const hours = Math.floor(seconds / 3600) % 24;
  const minutes = Math.floor(seconds / 60) % 60;
  if (days > 0) return `${days}d ${hours}h`;
  if (hours > 0) return `${hours}h ${minutes}m`;
  return `${minutes}m ${seconds % 60}s`;
}
