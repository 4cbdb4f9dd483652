/**
 * The platform costs the codec's design rests on (docs/PERFORMANCE.md,
 * "Why the codec is shaped as it is"), measured on their own so the claims
 * can be checked on any machine. Each group compares two ways of doing the
 * same work; the first bench of a group is its baseline.
 *
 * @module
 */

import { StringTable } from "../src/protocol/string_table.ts";

let sink = 0;
const COUNT = 1_000;

// Strings like the corpora's: ~20 characters, one in four non-ASCII.
const words = [
  "buy",
  "milk",
  "call",
  "review",
  "draft",
  "plan",
  "café",
  "東京",
];
const texts: string[] = [];
for (let index = 0; index < COUNT; index++) {
  let text = "";
  for (let word = 0; text.length < 16; word++) {
    const pool = index % 4 === 0 ? words.length : 6;
    text += (text ? " " : "") + words[(index * 7 + word * 3) % pool]!;
  }
  texts.push(JSON.parse(JSON.stringify(text)));
}
const encoder = new TextEncoder();
const encoded = texts.map((text) => encoder.encode(text));
const section = new Uint8Array(
  encoded.reduce((sum, bytes) => sum + bytes.length, 0),
);
const offsets: number[] = [];
{
  let at = 0;
  for (const bytes of encoded) {
    offsets.push(at);
    section.set(bytes, at);
    at += bytes.length;
  }
  offsets.push(at);
}
const fatal = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const replacing = new TextDecoder("utf-8", { ignoreBOM: true });
const output = new Uint8Array(section.length * 3);

Deno.bench("one Uint8Array(32) each", {
  group: "byte values ×1000",
  baseline: true,
}, () => {
  for (let index = 0; index < COUNT; index++) {
    sink += new Uint8Array(32).length;
  }
});
Deno.bench("one view each into a shared buffer", {
  group: "byte values ×1000",
}, () => {
  for (let index = 0; index < COUNT; index++) {
    sink += section.subarray(index, index + 32).length;
  }
});

Deno.bench("TextDecoder per string", {
  group: "decode 1000 strings",
  baseline: true,
}, () => {
  for (let index = 0; index < COUNT; index++) {
    sink += fatal.decode(section.subarray(offsets[index], offsets[index + 1]))
      .length;
  }
});
Deno.bench("one TextDecoder call, then slice", {
  group: "decode 1000 strings",
}, () => {
  const all = replacing.decode(section);
  let at = 0;
  for (let index = 0; index < COUNT; index++) {
    const units = texts[index]!.length;
    sink += all.slice(at, at + units).length;
    at += units;
  }
});

Deno.bench("fatal", { group: "TextDecoder, 22 KB", baseline: true }, () => {
  sink += fatal.decode(section).length;
});
Deno.bench("replacing, then look for U+FFFD", {
  group: "TextDecoder, 22 KB",
}, () => {
  const text = replacing.decode(section);
  sink += text.indexOf("\ufffd") === -1 ? text.length : 0;
});

Deno.bench("encodeInto per string", {
  group: "encode 1000 strings",
  baseline: true,
}, () => {
  let at = 0;
  for (let index = 0; index < COUNT; index++) {
    at += encoder.encodeInto(texts[index]!, output.subarray(at)).written;
  }
  sink += at;
});
Deno.bench("concatenate, then one encodeInto", {
  group: "encode 1000 strings",
}, () => {
  let all = "";
  for (let index = 0; index < COUNT; index++) all += texts[index]!;
  sink += encoder.encodeInto(all, output).written;
});

const objects = Array.from({ length: COUNT }, (_, index) => ({
  title: texts[index]!,
  done: index % 2 === 0,
  priority: index % 5,
  estimate: index * 1.5,
  dueAt: new Date(index),
  parent: null,
  assignee: texts[(index + 1) % COUNT]!,
  points: index,
}));
Deno.bench("Object.keys, then object[key]", {
  group: "read 1000 objects of 8 fields",
  baseline: true,
}, () => {
  for (const object of objects) {
    const record = object as Record<string, unknown>;
    for (const key of Object.keys(record)) {
      if (record[key] !== undefined) sink++;
    }
  }
});
Deno.bench("for…in, then object[key]", {
  group: "read 1000 objects of 8 fields",
}, () => {
  for (const object of objects) {
    const record = object as Record<string, unknown>;
    for (const key in record) {
      if (record[key] !== undefined) sink++;
    }
  }
});

// The strings a small message interns: a few names and ids, most new.
const names = ["Task", "title", "done", "priority", "note", "points", "order"];
const references: string[] = [];
for (let index = 0; index < 25; index++) {
  references.push(
    index % 3 === 0 ? crypto.randomUUID() : names[index % names.length]!,
  );
}
const map = new Map<string, number>();
const table = new StringTable();
Deno.bench("Map, cleared per message", {
  group: "intern 25 strings per message",
  baseline: true,
}, () => {
  for (const text of references) {
    const index = map.get(text);
    if (index === undefined) map.set(text, map.size);
    else sink += index;
  }
  map.clear();
});
Deno.bench("StringTable, reset per message", {
  group: "intern 25 strings per message",
}, () => {
  for (const text of references) sink += table.lookupOrAdd(text);
  table.reset();
});

globalThis.addEventListener("unload", () => {
  if (sink === -1) console.log(sink);
});
