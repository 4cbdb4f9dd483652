/**
 * Realm paths as clients write them, checked then resolved for one user
 * (docs/ARCHITECTURE.md "Session flow on one connection").
 *
 * A path starts with `/` followed by segments, none empty, `.` or `..`, each a
 * run of any characters but `/`, white space and control characters (so a
 * JWT subject such as `auth0|5f…` or `ada@example.com` can be a segment). A
 * segment that is exactly `~` stands for the user's own id.
 */

/** Longest realm path accepted after `~` is replaced, in characters. */
export const MAX_REALM_PATH_LENGTH = 512;

// Everything but "/", white space and control characters: a segment must
// not hide a separator, and must read the same in a log line.
const SEGMENT = /^[^/\s\p{Cc}]+$/u;

/**
 * Returns whether `segment` may be one segment of a realm path: non-empty,
 * not `.` or `..`, with no `/`, white space or control character.
 */
export function isValidSegment(segment: string): boolean {
  return SEGMENT.test(segment) && segment !== "." && segment !== "..";
}

// Characters of a client's path quoted in an error: the path comes from the
// client (up to a megabyte) and the error goes back to it and to the log.
const QUOTED_CHARACTERS = 64;

/** `text` JSON-quoted, cut to its first characters when it is long. */
function quote(text: string): string {
  if (text.length <= QUOTED_CHARACTERS) return JSON.stringify(text);
  return `${
    JSON.stringify(text.slice(0, QUOTED_CHARACTERS))
  }… (${text.length} characters)`;
}

/** The result of {@linkcode resolveRealmPath}. */
export type ResolvedPath =
  | { ok: true; path: string }
  | { ok: false; reason: string };

/**
 * Checks a client's realm path and replaces each `~` segment with `userId`.
 * Nothing else is rewritten: `/a/./b` is refused rather than normalised, so a
 * realm has one spelling.
 */
export function resolveRealmPath(path: string, userId: string): ResolvedPath {
  if (!path.startsWith("/")) {
    return {
      ok: false,
      reason: `Path ${quote(path)} does not start with "/"`,
    };
  }
  const segments = path.slice(1).split("/");
  for (const segment of segments) {
    if (!isValidSegment(segment)) {
      return {
        ok: false,
        reason: `Path ${quote(path)} has an invalid segment ${
          quote(segment)
        } (segments are non-empty, not "." or "..", without "/", white space or control characters)`,
      };
    }
  }
  const resolved = "/" +
    segments.map((segment) => segment === "~" ? userId : segment).join("/");
  if (resolved.length > MAX_REALM_PATH_LENGTH) {
    return {
      ok: false,
      reason: `Path is longer than ${MAX_REALM_PATH_LENGTH} characters`,
    };
  }
  return { ok: true, path: resolved };
}
