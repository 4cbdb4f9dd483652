/**
 * What linking one short-lived signal per request to a long-lived one (the
 * server's lifetime) leaves on the heap once the requests are over, with
 * `AbortSignal.any` and with `linkAbort` (docs/PERFORMANCE.md "Linked
 * signals"). Each way runs in its own process; the heap is read after full
 * GCs with turns of the event loop between them, so finalizers have run.
 *
 * Run as `deno run -A --v8-flags=--expose-gc bench/abort_link_memory.ts [links]`.
 */

import { linkAbort } from "../src/util/abort_link.ts";

const WAYS = {
  // Nothing listens to the linked signal.
  "any": (lifetime: AbortSignal, own: AbortSignal) => {
    AbortSignal.any([lifetime, own]).throwIfAborted();
  },
  // A callee listens while it works and removes its listener.
  "any, listener removed": (lifetime: AbortSignal, own: AbortSignal) => {
    const signal = AbortSignal.any([lifetime, own]);
    const listener = () => {};
    signal.addEventListener("abort", listener, { once: true });
    signal.removeEventListener("abort", listener);
  },
  // A callee leaves its listener behind (a fetch polyfill, a library).
  "any, listener left": (lifetime: AbortSignal, own: AbortSignal) => {
    AbortSignal.any([lifetime, own]).addEventListener("abort", () => {}, {
      once: true,
    });
  },
  "linkAbort": (lifetime: AbortSignal, own: AbortSignal) => {
    const link = linkAbort([lifetime, own]);
    link.dispose();
  },
  "linkAbort, listener left": (lifetime: AbortSignal, own: AbortSignal) => {
    const link = linkAbort([lifetime, own]);
    try {
      link.signal.addEventListener("abort", () => {}, { once: true });
    } finally {
      link.dispose();
    }
  },
} as const;
type Way = keyof typeof WAYS;

const collect = (globalThis as { gc?: () => void }).gc;
if (collect === undefined) {
  throw new Error("Run with --v8-flags=--expose-gc");
}
const turn = () => new Promise((resolve) => setTimeout(resolve, 0));

async function settle(): Promise<number> {
  for (let index = 0; index < 4; index++) {
    collect!();
    await turn();
  }
  collect!();
  return Deno.memoryUsage().heapUsed;
}

async function run(way: Way, links: number): Promise<string> {
  const lifetime = new AbortController();
  const link = WAYS[way];
  const chunk = async () => {
    for (let index = 0; index < links; index++) {
      link(lifetime.signal, new AbortController().signal);
      if (index % 1000 === 999) await turn();
    }
  };
  await chunk(); // warm-up: sets and code reach their steady size
  const before = await settle();
  const rounds = 3;
  const started = performance.now();
  for (let round = 0; round < rounds; round++) await chunk();
  const nsPerLink = (performance.now() - started) * 1e6 / (rounds * links);
  const after = await settle();
  const bytes = (after - before) / (rounds * links);
  return `${way.padEnd(26)} ${bytes.toFixed(1).padStart(8)} B ${
    nsPerLink.toFixed(0).padStart(7)
  } ns`;
}

if (Deno.args[0] === "--way") {
  console.log(await run(Deno.args[1] as Way, Number(Deno.args[2])));
} else {
  const links = Number(Deno.args[0] ?? 50_000);
  console.log(
    `${links} × 3 links to one long-lived signal; per link: heap kept, time`,
  );
  for (const way of Object.keys(WAYS)) {
    const { stdout } = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--v8-flags=--expose-gc",
        import.meta.filename!,
        "--way",
        way,
        String(links),
      ],
      stderr: "inherit",
    }).output();
    console.log(new TextDecoder().decode(stdout).trimEnd());
  }
}
