/**
 * What grew between two V8 heap snapshots of one process, by kind of
 * object: count and shallow bytes, divided by how many sessions were added
 * between them, with what holds each kind. For `deno task bench:sync --only
 * memory --heap-snapshots <dir>` (docs/PERFORMANCE.md "Memory").
 *
 * Run as `deno run -R bench/heap_diff.ts <before> <after> <added> [rows]`.
 */

interface HeapSnapshot {
  snapshot: {
    meta: {
      node_fields: string[];
      node_types: [string[], ...unknown[]];
      edge_fields: string[];
      edge_types: [string[], ...unknown[]];
    };
  };
  nodes: number[];
  edges: number[];
  strings: string[];
}

/** One kind's growth per added session, and who holds the new ones. */
export interface KindGrowth {
  kind: string;
  count: number;
  bytes: number;
  /** "holder kind.edge" → new objects of this kind held so, per session. */
  holders: Map<string, number>;
}

// Kinds whose names are contents rather than types (a string's text, a
// piece of code's source) are pooled under one name; scope and closure
// names lose their snapshot-local ids.
const POOLED: Record<string, string> = {
  "string": "(strings)",
  "concatenated string": "(strings)",
  "sliced string": "(strings)",
  "number": "(heap numbers)",
  "code": "(code)",
  "regexp": "(regexps)",
};

class Parsed {
  readonly ids: number[] = [];
  readonly kinds: string[] = [];
  readonly sizes: number[] = [];
  /** Per node, the first retainer's "kind.edge" (or none). */
  readonly holders: string[] = [];

  constructor(snapshot: HeapSnapshot) {
    const meta = snapshot.snapshot.meta;
    const nodeTypes = meta.node_types[0];
    const edgeTypes = meta.edge_types[0];
    const width = meta.node_fields.length;
    const typeAt = meta.node_fields.indexOf("type");
    const nameAt = meta.node_fields.indexOf("name");
    const idAt = meta.node_fields.indexOf("id");
    const sizeAt = meta.node_fields.indexOf("self_size");
    const edgeCountAt = meta.node_fields.indexOf("edge_count");
    const edgeWidth = meta.edge_fields.length;
    const edgeTypeAt = meta.edge_fields.indexOf("type");
    const edgeNameAt = meta.edge_fields.indexOf("name_or_index");
    const edgeToAt = meta.edge_fields.indexOf("to_node");
    const { nodes, edges, strings } = snapshot;
    for (let index = 0; index < nodes.length; index += width) {
      const type = nodeTypes[nodes[index + typeAt]!] ?? "?";
      const name = strings[nodes[index + nameAt]!] ?? "?";
      this.ids.push(nodes[index + idAt]!);
      this.sizes.push(nodes[index + sizeAt]!);
      this.kinds.push(
        POOLED[type] ??
          `${type} ${name.replace(/ @\d+/g, "").slice(0, 60)}`,
      );
      this.holders.push("");
    }
    let edge = 0;
    for (let node = 0; node < this.ids.length; node++) {
      const count = nodes[node * width + edgeCountAt]!;
      for (let k = 0; k < count; k++, edge += edgeWidth) {
        const edgeType = edgeTypes[edges[edge + edgeTypeAt]!] ?? "?";
        if (edgeType === "weak" || edgeType === "shortcut") continue;
        const to = edges[edge + edgeToAt]! / width;
        if (this.holders[to] !== "") continue;
        const nameOrIndex = edges[edge + edgeNameAt]!;
        const edgeName = edgeType === "element" || edgeType === "hidden"
          ? "[]"
          : strings[nameOrIndex] ?? "?";
        this.holders[to] = `${this.kinds[node]}.${edgeName}`;
      }
    }
  }
}

/** Growth from `before` to `after`, per added session, largest first. */
export function diff(
  before: Parsed,
  after: Parsed,
  added: number,
): KindGrowth[] {
  const growth = new Map<string, KindGrowth>();
  const entry = (kind: string) => {
    let found = growth.get(kind);
    if (found === undefined) {
      found = { kind, count: 0, bytes: 0, holders: new Map() };
      growth.set(kind, found);
    }
    return found;
  };
  const existed = new Set(before.ids);
  for (let node = 0; node < before.ids.length; node++) {
    const kind = entry(before.kinds[node]!);
    kind.count -= 1 / added;
    kind.bytes -= before.sizes[node]! / added;
  }
  for (let node = 0; node < after.ids.length; node++) {
    const kind = entry(after.kinds[node]!);
    kind.count += 1 / added;
    kind.bytes += after.sizes[node]! / added;
    if (!existed.has(after.ids[node]!)) {
      const holder = after.holders[node]!;
      kind.holders.set(holder, (kind.holders.get(holder) ?? 0) + 1 / added);
    }
  }
  return [...growth.values()].sort((a, b) =>
    Math.abs(b.bytes) - Math.abs(a.bytes)
  );
}

if (import.meta.main) {
  const [beforePath, afterPath, addedText, rowsText] = Deno.args;
  const added = Number(addedText);
  if (beforePath === undefined || afterPath === undefined || !(added > 0)) {
    throw new TypeError(
      "Usage: heap_diff.ts <before.heapsnapshot> <after.heapsnapshot> <added sessions> [rows]",
    );
  }
  const read = async (path: string) =>
    new Parsed(JSON.parse(await Deno.readTextFile(path)) as HeapSnapshot);
  const rows = diff(await read(beforePath), await read(afterPath), added);
  let total = 0;
  for (const row of rows) total += row.bytes;
  console.log(
    "| kind | objects per session | bytes per session | new ones held by (per session) |",
  );
  console.log("|---|---:|---:|---|");
  for (const row of rows.slice(0, Number(rowsText ?? 40))) {
    const holders = [...row.holders].sort((a, b) => b[1] - a[1])
      .filter(([, count]) => count >= 0.05).slice(0, 4)
      .map(([holder, count]) => `${holder || "(root)"} ×${count.toFixed(2)}`)
      .join("; ");
    console.log(
      `| ${row.kind} | ${row.count.toFixed(2)} | ${
        row.bytes.toFixed(0)
      } | ${holders} |`
        .replaceAll("\n", " "),
    );
  }
  console.log(`| (all ${rows.length} kinds) | | ${total.toFixed(0)} | |`);
}
