/**
 * The benchmark corpora (issue #3, item 7), built by one deterministic,
 * seeded generator so every codec, every run and the size test see the same
 * messages.
 *
 * - `small-upload`: one UPLOAD changeset of 5 instructions.
 * - `medium-changeset`: one UPLOAD changeset of 100 field writes over 10
 *   objects (10 instructions × 10 fields).
 * - `download-batch`: one DOWNLOAD of 200 changesets × 50 instructions,
 *   about 2% deletes, over a working set of objects that repeat.
 * - `bootstrap`: one DOWNLOAD of a snapshot: 10,000 objects × 8 fields (the
 *   same 8 for every object of a type), each
 *   put with its own stamp.
 *
 * Field values follow the mix: ~20-character strings (about one in
 * four with non-ASCII characters, some astral), floats, integers, booleans,
 * null, 32-byte `Uint8Array`s and dates. Object ids are UUID-shaped strings,
 * as clients that create objects offline use.
 *
 * @module
 */

import type { Instruction } from "../src/model/changeset.ts";
import type { Hlc } from "../src/model/hlc.ts";
import type { Fields, Value } from "../src/model/value.ts";
import {
  type DownloadMessage,
  MessageType,
  type UploadMessage,
} from "../src/protocol/messages.ts";
import { Prng } from "../tests/_helpers/prng.ts";

/** The seed every corpus is generated from. */
export const CORPUS_SEED = 0x7e7e3;

/** The corpus names, in the order the bench reports them. */
export const CORPUS_NAMES = [
  "small-upload",
  "medium-changeset",
  "download-batch",
  "bootstrap",
] as const;

/** One of {@linkcode CORPUS_NAMES}. */
export type CorpusName = typeof CORPUS_NAMES[number];

/** A corpus: its name and the one message it consists of. */
export interface Corpus {
  name: CorpusName;
  message: UploadMessage | DownloadMessage;
}

const WORDS = [
  "buy",
  "milk",
  "call",
  "review",
  "draft",
  "report",
  "garden",
  "invoice",
  "meeting",
  "plan",
  "trip",
  "notes",
  "fix",
  "bug",
  "release",
  "ticket",
  "budget",
  "email",
];
const NON_ASCII_WORDS = [
  "café",
  "naïve",
  "Zürich",
  "señor",
  "façade",
  "東京",
  "Ελλάδα",
  "привет",
  "🌍",
  "🚀 go",
];
const TYPES = ["Task", "Project", "Comment"];
/** Each type's fields and the kind of value each holds. */
const SCHEMA: Record<string, readonly (readonly [string, FieldKind])[]> = {
  Task: [
    ["title", "string"],
    ["note", "string"],
    ["done", "boolean"],
    ["priority", "integer"],
    ["estimate", "float"],
    ["checksum", "bytes"],
    ["dueAt", "date"],
    ["parent", "null"],
    ["assignee", "string"],
    ["points", "integer"],
  ],
  Project: [
    ["name", "string"],
    ["description", "string"],
    ["archived", "boolean"],
    ["budget", "float"],
    ["members", "integer"],
    ["key", "bytes"],
    ["createdAt", "date"],
    ["owner", "null"],
    ["color", "string"],
    ["rank", "float"],
  ],
  Comment: [
    ["body", "string"],
    ["author", "string"],
    ["edited", "boolean"],
    ["likes", "integer"],
    ["score", "float"],
    ["signature", "bytes"],
    ["postedAt", "date"],
    ["replyTo", "null"],
    ["lang", "string"],
    ["order", "integer"],
  ],
};

type FieldKind =
  | "string"
  | "boolean"
  | "integer"
  | "float"
  | "bytes"
  | "date"
  | "null";

/** Builds every corpus from {@linkcode CORPUS_SEED}. */
export function buildCorpora(seed: number = CORPUS_SEED): Corpus[] {
  return CORPUS_NAMES.map((name, index) => ({
    name,
    message: buildCorpus(name, new CorpusGenerator(seed + index)),
  }));
}

/**
 * A DOWNLOAD of `changesets` × `instructionsPerChangeset` history
 * instructions, generated like `download-batch`: the frames the
 * compression bench measures.
 */
export function buildDownloadBatch(
  changesets: number,
  instructionsPerChangeset: number,
  seed: number = CORPUS_SEED,
): DownloadMessage {
  return new CorpusGenerator(seed).downloadBatch(
    changesets,
    instructionsPerChangeset,
    0.02,
  );
}

function buildCorpus(
  name: CorpusName,
  generator: CorpusGenerator,
): UploadMessage | DownloadMessage {
  switch (name) {
    case "small-upload":
      return generator.upload(5, 3);
    case "medium-changeset":
      return generator.upload(10, 10);
    case "download-batch":
      return generator.downloadBatch(200, 50, 0.02);
    case "bootstrap":
      return generator.bootstrap(10_000, 8);
  }
}

/**
 * A copy of `text` stored flat. Strings built by concatenation are ropes in
 * V8 until first flattened; strings an app gets from user input, JSON or a
 * decoder are flat, so the corpora use flat strings too.
 */
function flat(text: string): string {
  return JSON.parse(JSON.stringify(text));
}

class CorpusGenerator {
  #random: Prng;
  #time = Date.UTC(2026, 0, 15, 9, 30);

  constructor(seed: number) {
    this.#random = new Prng(seed);
  }

  /** One UPLOAD with one changeset of `objects` instructions. */
  upload(objects: number, fieldsPerObject: number): UploadMessage {
    const instructions: Instruction[] = [];
    for (let index = 0; index < objects; index++) {
      const type = this.#random.pick(TYPES);
      instructions.push({
        op: index % 2 === 0 ? "put" : "update",
        type,
        id: this.#uuid(),
        fields: this.#fields(type, fieldsPerObject),
        stamp: null,
      });
    }
    return {
      type: MessageType.Upload,
      sessionId: 1,
      changesets: [{
        clientVersion: 42,
        baseServerVersion: 1_234,
        stamp: this.#stamp(this.#node()),
        instructions,
      }],
    };
  }

  /** One DOWNLOAD of history: updates to a working set, a few deletes. */
  downloadBatch(
    changesetCount: number,
    instructionsPerChangeset: number,
    deleteShare: number,
  ): DownloadMessage {
    const objects = Array.from({ length: 400 }, () => ({
      type: this.#random.pick(TYPES),
      id: this.#uuid(),
    }));
    const nodes = Array.from({ length: 8 }, () => this.#node());
    const changesets = [];
    for (let version = 0; version < changesetCount; version++) {
      const instructions: Instruction[] = [];
      for (let index = 0; index < instructionsPerChangeset; index++) {
        const { type, id } = this.#random.pick(objects);
        const roll = this.#random.next();
        if (roll < deleteShare) {
          instructions.push({
            op: "delete",
            type,
            id,
            fields: null,
            stamp: null,
          });
        } else {
          instructions.push({
            op: roll < 0.2 ? "put" : "update",
            type,
            id,
            fields: this.#fields(type, 1 + this.#random.int(4)),
            stamp: null,
          });
        }
      }
      changesets.push({
        serverVersion: 5_000 + version,
        stamp: this.#stamp(this.#random.pick(nodes)),
        instructions,
      });
    }
    return {
      type: MessageType.Download,
      sessionId: 3,
      serverVersion: 5_000 + changesetCount - 1,
      lastIntegratedClientVersion: 17,
      downloadableBytes: 123_456,
      changesetBytes: 65_432,
      changesets,
    };
  }

  /** One DOWNLOAD of a snapshot: every object put with its own stamp. */
  bootstrap(objectCount: number, fieldsPerObject: number): DownloadMessage {
    const nodes = Array.from({ length: 50 }, () => this.#node());
    const instructions: Instruction[] = [];
    for (let index = 0; index < objectCount; index++) {
      const type = this.#random.pick(TYPES);
      instructions.push({
        op: "put",
        type,
        id: this.#uuid(),
        fields: this.#fields(type, fieldsPerObject, true),
        stamp: this.#stamp(this.#random.pick(nodes)),
      });
    }
    return {
      type: MessageType.Download,
      sessionId: 1,
      serverVersion: 0,
      lastIntegratedClientVersion: 0,
      downloadableBytes: 9_876_543,
      changesetBytes: 61_234,
      changesets: [{
        serverVersion: 20_000,
        stamp: this.#stamp(this.#random.pick(nodes)),
        instructions,
      }],
    };
  }

  /**
   * `count` fields of `type` with fresh values: a run of the schema from a
   * random field, as an update writes some of an object's fields; with
   * `whole`, the first `count` fields, as every stored object of a type has
   * the same ones.
   */
  #fields(type: string, count: number, whole = false): Fields {
    const schema = SCHEMA[type]!;
    const fields: Fields = {};
    const start = whole || count >= schema.length
      ? 0
      : this.#random.int(schema.length);
    for (let index = 0; index < count; index++) {
      const [name, kind] = schema[(start + index) % schema.length]!;
      fields[name] = this.#value(kind);
    }
    return fields;
  }

  #value(kind: FieldKind): Value {
    const random = this.#random;
    switch (kind) {
      case "string":
        return this.#text();
      case "boolean":
        return random.next() < 0.5;
      case "integer":
        return random.next() < 0.5 ? random.int(100) : random.int(1_000_000);
      case "float":
        return (random.next() - 0.2) * 10_000;
      case "bytes": {
        const bytes = new Uint8Array(32);
        for (let index = 0; index < 32; index++) bytes[index] = random.int(256);
        return bytes;
      }
      case "date":
        return new Date(this.#time + random.int(365 * 86_400_000));
      case "null":
        return null;
    }
  }

  /** About 20 characters of words; one string in four has non-ASCII. */
  #text(): string {
    const random = this.#random;
    const withNonAscii = random.next() < 0.25;
    let text = "";
    while (text.length < 16) {
      const word = withNonAscii && random.next() < 0.3
        ? random.pick(NON_ASCII_WORDS)
        : random.pick(WORDS);
      text = text === "" ? word : `${text} ${word}`;
    }
    return flat(text);
  }

  #uuid(): string {
    const hex = (digits: number) => {
      let out = "";
      for (let index = 0; index < digits; index++) {
        out += this.#random.int(16).toString(16);
      }
      return out;
    };
    return flat(
      `${hex(8)}-${hex(4)}-4${hex(3)}-${
        (8 + this.#random.int(4)).toString(16)
      }${hex(3)}-${hex(12)}`,
    );
  }

  #node(): number {
    return 1 + this.#random.int(2 ** 48 - 1);
  }

  #stamp(node: number): Hlc {
    this.#time += 1 + this.#random.int(5_000);
    return { time: this.#time, counter: this.#random.int(4), node };
  }
}

/**
 * Iterations and warm-up per corpus, fixed rather than left to the harness,
 * so every run times each bench over the same long stretch: with automatic
 * counts a bench of a few microseconds was timed over a few milliseconds and
 * its ratio moved by 10% between runs.
 */
export const BENCH_ITERATIONS: Record<
  CorpusName,
  { n: number; warmup: number }
> = {
  "small-upload": { n: 200_000, warmup: 50_000 },
  "medium-changeset": { n: 50_000, warmup: 10_000 },
  "download-batch": { n: 200, warmup: 50 },
  "bootstrap": { n: 100, warmup: 20 },
};
