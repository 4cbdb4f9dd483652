/**
 * What the alternated A/B benches share (`fanout_cpu.ts`,
 * `fanout_server_cpu.ts`, `fanout_server_micro.ts`): reading an option, the
 * median, and the line that compares "this" checkout with "base".
 */

/** The value after `name` on the command line, if given. */
export function option(name: string): string | undefined {
  const at = Deno.args.indexOf(name);
  return at < 0 ? undefined : Deno.args[at + 1];
}

/** The median (the upper one of an even count). */
export function median(values: readonly number[]): number {
  const sorted = values.toSorted((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

/**
 * One line per figure: each label's median and minimum over its pairs, and
 * when a "base" was measured beside "this", in how many pairs "this" was
 * lower and the median of the per-pair ratios.
 */
export function printPairs(
  figures: readonly (readonly [string, ReadonlyMap<string, number[]>])[],
  digits: number,
): void {
  for (const [name, byLabel] of figures) {
    const parts = [...byLabel].map(([label, values]) =>
      `${label} ${median(values).toFixed(digits)} (min ${
        Math.min(...values).toFixed(digits)
      })`
    );
    const a = byLabel.get("this")!;
    const b = byLabel.get("base");
    if (b !== undefined) {
      const lower = a.filter((value, k) => value < b[k]!).length;
      const ratio = median(a.map((value, k) => value / b[k]!));
      parts.push(
        `this lower in ${lower} of ${a.length} pairs, median ratio ${
          ratio.toFixed(3)
        }`,
      );
    }
    console.log(`${name}: ${parts.join("; ")}`);
  }
}
