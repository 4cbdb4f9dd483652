import assert from "node:assert/strict";
import type { LiveQueryUpdate } from "../../src/client/query_engine.ts";
import type { RealmObject } from "../../src/client/realm.ts";

/**
 * Applies a live-query change set to the previous result the way a UI
 * would (deletions from the highest, insertions from the lowest, then
 * modifications) and asserts it yields the new result.
 */
export function assertPatches<T>(
  previous: readonly RealmObject<T>[],
  update: LiveQueryUpdate<T>,
  label = "",
): void {
  const { objects, changes } = update;
  const rows = [...previous];
  for (
    const list of [changes.deletions, changes.insertions, changes.modifications]
  ) {
    for (let i = 1; i < list.length; i++) {
      assert.ok(
        list[i - 1]! < list[i]!,
        `${label}: indexes ascend and are unique`,
      );
    }
  }
  for (let i = changes.deletions.length - 1; i >= 0; i--) {
    const index = changes.deletions[i]!;
    assert.ok(
      index >= 0 && index < rows.length,
      `${label}: deletion ${index} in range`,
    );
    rows.splice(index, 1);
  }
  for (const index of changes.insertions) {
    assert.ok(
      index >= 0 && index <= rows.length,
      `${label}: insertion ${index} in range`,
    );
    rows.splice(index, 0, objects[index]!);
  }
  for (const index of changes.modifications) {
    assert.ok(
      index >= 0 && index < rows.length,
      `${label}: modification ${index} in range`,
    );
    assert.equal(
      rows[index]!.id,
      objects[index]!.id,
      `${label}: modified in place`,
    );
    rows[index] = objects[index]!;
  }
  assert.deepEqual(
    rows,
    objects,
    `${label}: the change set patches the previous result into the new one`,
  );
}
