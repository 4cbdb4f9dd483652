/**
 * Realm paths as clients write them (ARCHITECTURE.md "Session flow"): they
 * start with `/`, and are made of segments of `[A-Za-z0-9_.~-]`, none empty,
 * `.` or `..`. A segment that is exactly `~` stands for the user's own id.
 */

/** Longest realm path accepted after `~` is replaced, in characters. */
export const MAX_REALM_PATH_LENGTH = 512;

const SEGMENT = /^[A-Za-z0-9_.~-]+$/;

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
      reason: `Path ${JSON.stringify(path)} does not start with "/"`,
    };
  }
  const segments = path.slice(1).split("/");
  for (const segment of segments) {
    if (
      !SEGMENT.test(segment) || segment === "." || segment === ".."
    ) {
      return {
        ok: false,
        reason: `Path ${JSON.stringify(path)} has an invalid segment ${
          JSON.stringify(segment)
        } (segments are non-empty runs of A-Z a-z 0-9 _ . ~ -, not "." or "..")`,
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
