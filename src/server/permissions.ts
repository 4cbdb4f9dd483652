/**
 * The permission values with the default rule that grants them.
 */

/**
 * What a user may do with a realm: read and write it, only read it (uploads
 * get `write_not_allowed`), or nothing at all (BIND gets
 * `permission_denied`).
 *
 * @example
 * ```ts
 * import type { Permission } from "@tether/sync/server";
 *
 * const readOnly: Permission = "read";
 * ```
 */
export type Permission = "readwrite" | "read" | "none";

/**
 * Decides a user's access to a realm, once per BIND. `path` is the resolved
 * path: `~` segments are already replaced with `userId`. May be async (to
 * consult a database); a throw or rejection fails the session with
 * `session_failed` (try again).
 *
 * @example Own realms, plus a read-only shared one
 * ```ts
 * import { ownPathsOnly, type PermissionsFunction } from "@tether/sync/server";
 * import assert from "node:assert/strict";
 *
 * const permissions: PermissionsFunction = (userId, path) =>
 *   path === "/shared/news" ? "read" : ownPathsOnly(userId, path);
 * assert.equal(permissions("u1", "/shared/news"), "read");
 * assert.equal(permissions("u1", "/u1/todos"), "readwrite");
 * ```
 */
export type PermissionsFunction = (
  userId: string,
  path: string,
) => Permission | Promise<Permission>;

/**
 * The default policy: a user may read and write the realms under
 * `/<userId>/` and nothing else (not `/<userId>` itself).
 *
 * @param userId The authenticated user.
 * @param path The resolved realm path.
 * @returns `"readwrite"` for the user's own realms, else `"none"`.
 *
 * @example
 * ```ts
 * import { ownPathsOnly } from "@tether/sync/server";
 * import assert from "node:assert/strict";
 *
 * assert.equal(ownPathsOnly("alice", "/alice/todos"), "readwrite");
 * assert.equal(ownPathsOnly("alice", "/bob/todos"), "none");
 * ```
 */
export function ownPathsOnly(userId: string, path: string): Permission {
  return path.startsWith(`/${userId}/`) ? "readwrite" : "none";
}
