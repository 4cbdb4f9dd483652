/**
 * The server-side validation hook (`serveSync({ validateChangeset })`): the
 * way an app refuses uploaded writes on their content, one changeset at a
 * time, without ending the session (docs/SERVER.md "Validating writes").
 */

import type { UploadChangeset } from "../model/changeset.ts";
import type { Fields } from "../model/value.ts";

/**
 * One object's change in a changeset being validated, in the shape
 * `realm.changes()` delivers on a client.
 *
 * @example A change as the hook sees it
 * ```ts
 * import type { ChangeToValidate } from "@tether/sync/server";
 *
 * const change: ChangeToValidate = {
 *   type: "Task",
 *   id: "t1",
 *   op: "put",
 *   fields: { title: "Buy milk", done: false },
 * };
 * console.log(change.op);
 * ```
 */
export interface ChangeToValidate {
  /** The object's type name. */
  type: string;
  /** The object's id. */
  id: string;
  /** `"put"` (whole object), `"update"` (some fields) or `"delete"`. */
  op: "put" | "update" | "delete";
  /** The fields written; absent for a delete. */
  fields?: Fields;
}

/**
 * What `validateChangeset` is asked about: one uploaded transaction.
 *
 * @example Reading who wrote what where
 * ```ts
 * import type { ChangesetToValidate } from "@tether/sync/server";
 *
 * function describe({ userId, path, changes }: ChangesetToValidate): string {
 *   return `${userId} writes ${changes.length} objects in ${path}`;
 * }
 * console.log(describe({ userId: "alice", path: "/alice/todos", changes: [] }));
 * ```
 */
export interface ChangesetToValidate {
  /** The user who uploaded it. */
  userId: string;
  /** The resolved realm path. */
  path: string;
  /** The changeset's writes, one per object. */
  changes: ChangeToValidate[];
}

/**
 * Decides whether the server takes an uploaded changeset: `true` takes it,
 * `false` refuses it with `validation_failed` (the writer's receipt rejects
 * with `write_rejected`, its changes are reverted, and its session goes on);
 * a throw refuses it the same way and is logged.
 *
 * @example Refusing tasks without a title
 * ```ts
 * import { type ChangesetValidator, serveSync } from "@tether/sync/server";
 *
 * const validateChangeset: ChangesetValidator = ({ changes }) =>
 *   changes.every((change) =>
 *     change.type !== "Task" || change.op !== "put" ||
 *     typeof change.fields?.title === "string"
 *   );
 * await using _server = await serveSync({
 *   port: 0,
 *   kv: ":memory:",
 *   auth: { allowAnonymous: true },
 *   validateChangeset,
 *   logger: () => {},
 * });
 * ```
 */
export type ChangesetValidator = (
  changeset: ChangesetToValidate,
) => boolean | Promise<boolean>;

/** The changes of `changeset` in the shape the hook receives. */
export function changesToValidate(
  changeset: UploadChangeset,
): ChangeToValidate[] {
  return changeset.instructions.map((instruction) =>
    instruction.op === "delete"
      ? { type: instruction.type, id: instruction.id, op: "delete" }
      : {
        type: instruction.type,
        id: instruction.id,
        op: instruction.op,
        fields: instruction.fields ?? {},
      }
  );
}
