import assert from "node:assert/strict";
import {
  createConsoleLogger,
  formatLogRecordJson,
  type LogRecord,
} from "../../src/server/log.ts";

/** Runs `fn` with console.log/warn/error collected instead of printed. */
function captured(fn: () => void): Array<[string, string]> {
  const lines: Array<[string, string]> = [];
  const saved = { log: console.log, warn: console.warn, error: console.error };
  console.log = (line: string) => lines.push(["log", line]);
  console.warn = (line: string) => lines.push(["warn", line]);
  console.error = (line: string) => lines.push(["error", line]);
  try {
    fn();
  } finally {
    Object.assign(console, saved);
  }
  return lines;
}

const record = (level: LogRecord["level"], extra: Partial<LogRecord> = {}) => ({
  time: Date.UTC(2026, 0, 1),
  level,
  event: `${level}_event`,
  message: `a ${level} record`,
  ...extra,
});

Deno.test("createConsoleLogger() prints the level asked for and above", () => {
  const levels = ["debug", "info", "warn", "error"] as const;
  for (const [index, least] of levels.entries()) {
    const logger = createConsoleLogger({ level: least });
    const lines = captured(() => {
      for (const level of levels) logger(record(level));
    });
    assert.deepEqual(
      lines.map(([, line]) => line.split(" ")[2]),
      levels.slice(index).map((level) => `${level}_event:`),
    );
  }
  // The default is info, pretty.
  const lines = captured(() => {
    const logger = createConsoleLogger();
    logger(record("debug"));
    logger(record("warn", { connection: 3, code: "bad_token" }));
  });
  assert.deepEqual(lines, [[
    "warn",
    "2026-01-01T00:00:00.000Z warn warn_event: a warn record connection=3 code=bad_token",
  ]]);
});

Deno.test("createConsoleLogger({ format: 'json' }) prints one JSON object per line on stdout", () => {
  const logger = createConsoleLogger({ level: "debug", format: "json" });
  const lines = captured(() => {
    logger(record("error", {
      userId: "al\nice",
      path: "/alice/todos",
      error: new RangeError("line one\nline two"),
    }));
    logger(record("info", { error: "a string" }));
  });
  assert.equal(lines.length, 2);
  for (const [stream, line] of lines) {
    assert.equal(stream, "log");
    assert.ok(!line.includes("\n"));
  }
  assert.deepEqual(JSON.parse(lines[0]![1]), {
    time: "2026-01-01T00:00:00.000Z",
    level: "error",
    event: "error_event",
    message: "a error record",
    userId: "al\nice",
    path: "/alice/todos",
    error: "line one\nline two",
    errorName: "RangeError",
  });
  assert.equal(JSON.parse(lines[1]![1]).error, "a string");
  assert.equal(
    formatLogRecordJson(record("info")),
    '{"time":"2026-01-01T00:00:00.000Z","level":"info","event":"info_event","message":"a info record"}',
  );
});

Deno.test("createConsoleLogger() refuses unknown levels and formats", () => {
  assert.throws(
    () => createConsoleLogger({ level: "verbose" as "info" }),
    new TypeError(
      'Unknown log level "verbose"; use debug, info, warn or error',
    ),
  );
  assert.throws(
    () => createConsoleLogger({ format: "xml" as "json" }),
    new TypeError('Unknown log format "xml"; use pretty or json'),
  );
});
