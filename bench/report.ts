/**
 * Turns the output of `deno bench --json bench/codec_bench.ts` into the
 * tables in docs/PERFORMANCE.md: time per iteration of each bench with its
 * speed-up over `json` and `msgpackr` in the same group, then the encoded
 * size of each corpus. It also checks issue #3's bar and says which ratios
 * miss it.
 *
 * ```sh
 * deno bench -A --json > bench.json              # every bench file in bench/
 * deno run -A bench/report.ts bench.json         # or pipe the JSON in on stdin
 * ```
 *
 * With the compression bench in the same run it also prints the compression
 * table.
 *
 * Exits with status 1 when a ratio misses the bar, so it can gate a script.
 *
 * @module
 */

import { compressFrame } from "../src/protocol/compression.ts";
import { encodeMessage } from "../src/protocol/encode.ts";
import { COMPRESSION_FRAMES } from "./_compression_frames.ts";
import { buildCorpora, CORPUS_NAMES, type CorpusName } from "./_corpora.ts";
import { jsonEncode, msgpackrEncode } from "./_baselines.ts";

/** One bench result as `deno bench --json` prints it (times in ns). */
interface BenchRecord {
  group: string;
  name: string;
  results: { ok?: { avg: number } }[];
}

/** What issue #3 asks of `tether` in each corpus. */
const BAR: Record<CorpusName, { overJson: number; overMsgpackr: number }> = {
  "small-upload": { overJson: 2, overMsgpackr: 1.5 },
  "medium-changeset": { overJson: 4, overMsgpackr: 1.5 },
  "download-batch": { overJson: 4, overMsgpackr: 1.5 },
  "bootstrap": { overJson: 2, overMsgpackr: 1.5 },
};
const CODECS = ["json", "msgpackr", "tether"] as const;

function formatTime(nanoseconds: number): string {
  if (nanoseconds >= 1e6) return `${(nanoseconds / 1e6).toFixed(2)} ms`;
  if (nanoseconds >= 1e3) return `${(nanoseconds / 1e3).toFixed(2)} µs`;
  return `${nanoseconds.toFixed(0)} ns`;
}

function formatBytes(bytes: number): string {
  return bytes.toLocaleString("en-US");
}

async function readInput(): Promise<string> {
  const path = Deno.args[0];
  if (path !== undefined && path !== "-") return await Deno.readTextFile(path);
  return await new Response(Deno.stdin.readable).text();
}

const report = JSON.parse(await readInput()) as {
  runtime?: string;
  cpu?: string;
  benches: BenchRecord[];
};
const times = new Map<string, number>();
for (const bench of report.benches) {
  const average = bench.results[0]?.ok?.avg;
  if (average !== undefined) times.set(`${bench.group}|${bench.name}`, average);
}

const misses: string[] = [];
const lines: string[] = [];
lines.push(`Runtime: ${report.runtime ?? "?"}, CPU: ${report.cpu ?? "?"}`, "");
lines.push(
  "| group | bench | time/iter | json ÷ this | msgpackr ÷ this |",
  "| --- | --- | ---: | ---: | ---: |",
);
for (const corpus of CORPUS_NAMES) {
  for (const direction of ["encode", "decode"]) {
    const group = `${corpus}/${direction}`;
    const json = times.get(`${group}|json`);
    const msgpackr = times.get(`${group}|msgpackr`);
    for (const codec of CODECS) {
      const time = times.get(`${group}|${codec}`);
      if (time === undefined || json === undefined || msgpackr === undefined) {
        misses.push(`${group}/${codec}: no result`);
        continue;
      }
      const overJson = json / time;
      const overMsgpackr = msgpackr / time;
      lines.push(
        `| ${group} | ${codec} | ${formatTime(time)} | ${
          overJson.toFixed(2)
        }× | ${overMsgpackr.toFixed(2)}× |`,
      );
      if (codec !== "tether") continue;
      const bar = BAR[corpus];
      if (overJson < bar.overJson) {
        misses.push(
          `${group}: tether is ${
            overJson.toFixed(2)
          }× json, bar ${bar.overJson}×`,
        );
      }
      if (overMsgpackr < bar.overMsgpackr) {
        misses.push(
          `${group}: tether is ${
            overMsgpackr.toFixed(2)
          }× msgpackr, bar ${bar.overMsgpackr}×`,
        );
      }
    }
  }
}

lines.push(
  "",
  "Encoding into a buffer of its own (`encodeMessage(message)`, no writer):",
  "",
  "| group | bench | time/iter | json ÷ this | msgpackr ÷ this |",
  "| --- | --- | ---: | ---: | ---: |",
);
for (const corpus of CORPUS_NAMES) {
  const time = times.get(`${corpus}/encode-copy|tether`);
  const json = times.get(`${corpus}/encode-copy|json`);
  const msgpackr = times.get(`${corpus}/encode-copy|msgpackr`);
  if (time === undefined || json === undefined || msgpackr === undefined) {
    continue;
  }
  lines.push(
    `| ${corpus}/encode-copy | tether | ${formatTime(time)} | ${
      (json / time).toFixed(2)
    }× | ${(msgpackr / time).toFixed(2)}× |`,
  );
}

lines.push(
  "",
  "| corpus | json bytes | msgpackr bytes | tether bytes | tether ÷ json | tether ÷ msgpackr |",
  "| --- | ---: | ---: | ---: | ---: | ---: |",
);
for (const { name, message } of buildCorpora()) {
  const json = jsonEncode(message).length;
  const msgpackr = msgpackrEncode(message).length;
  const tether = encodeMessage(message).length;
  lines.push(
    `| ${name} | ${formatBytes(json)} | ${formatBytes(msgpackr)} | ${
      formatBytes(tether)
    } | ${(tether / json).toFixed(3)} | ${(tether / msgpackr).toFixed(3)} |`,
  );
  if (tether > json / 2) {
    misses.push(
      `${name}: tether size ${tether} is over half of json's ${json}`,
    );
  }
}

if (times.has(`compression/${COMPRESSION_FRAMES[0]!.label}|deflate`)) {
  lines.push(
    "",
    "Compression of DOWNLOAD frames (changesets × instructions): sizes, time to",
    "deflate and inflate, and the time the bytes saved take to send at 10 and",
    "100 Mbit/s (compression pays in time where that exceeds deflate + inflate):",
    "",
    "| frame | bytes | deflated | saved | deflate | inflate | saved at 10 Mbit/s | saved at 100 Mbit/s |",
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
  );
  for (const { label, message } of COMPRESSION_FRAMES) {
    const frame = encodeMessage(message);
    const deflated = await compressFrame(frame, { threshold: 0 });
    const deflateTime = times.get(`compression/${label}|deflate`);
    const inflateTime = times.get(`compression/${label}|inflate`);
    if (deflateTime === undefined || inflateTime === undefined) continue;
    // compressFrame gives the frame back when deflating saves under 1/16.
    const compressed = deflated !== frame;
    const saved = frame.length - deflated.length;
    const sendTime = (megabits: number) => (saved * 8 / megabits) * 1e3;
    lines.push(
      `| ${label} | ${formatBytes(frame.length)} | ${
        compressed ? formatBytes(deflated.length) : "(not worth it)"
      } | ${(saved / frame.length * 100).toFixed(0)}% | ${
        formatTime(deflateTime)
      } | ${compressed ? formatTime(inflateTime) : "—"} | ${
        formatTime(sendTime(10))
      } | ${formatTime(sendTime(100))} |`,
    );
  }
}

console.log(lines.join("\n"));
if (misses.length > 0) {
  console.log(`\nBelow the bar:\n- ${misses.join("\n- ")}`);
  Deno.exit(1);
}
console.log("\nEvery ratio meets the bar.");
