/**
 * Reading a child process's output (or stdin) line by line, each read
 * bounded, for tests that talk to a process of their own.
 */

/** Splits a byte stream into lines (without their `\n`). */
export async function* linesOf(
  stream: ReadableStream<Uint8Array>,
): AsyncGenerator<string> {
  let pending = "";
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    pending += chunk;
    let newline;
    while ((newline = pending.indexOf("\n")) >= 0) {
      yield pending.slice(0, newline);
      pending = pending.slice(newline + 1);
    }
  }
  if (pending !== "") yield pending;
}

/**
 * Reads lines until `predicate` matches one and returns it; every line read
 * goes into `seen`, for the failure message. At most 100 lines.
 */
export async function readUntil(
  lines: AsyncIterator<string>,
  predicate: (line: string) => boolean,
  seen: string[],
): Promise<string> {
  for (let count = 0; count < 100; count++) {
    const { done, value } = await lines.next();
    if (done) {
      throw new Error(`Output ended without a match:\n${seen.join("\n")}`);
    }
    seen.push(value);
    if (predicate(value)) return value;
  }
  throw new Error("No match within 100 lines");
}
