import assert from "node:assert/strict";
import {
  KvLockedError,
  lockKvPath,
} from "../../../src/server/storage/kv_lock.ts";

Deno.test("lockKvPath() refuses a held path until the holder releases it", async () => {
  const directory = await Deno.makeTempDir();
  try {
    const path = `${directory}/sync.kv`;
    const held = await lockKvPath(path);
    assert.equal(held.path, `${path}.lock`);
    assert.equal((await Deno.readTextFile(held.path)).trim(), String(Deno.pid));
    await assert.rejects(() => lockKvPath(path), KvLockedError);
    held.release();
    held.release();
    const again = await lockKvPath(path);
    again.release();
  } finally {
    await Deno.remove(directory, { recursive: true });
  }
});

Deno.test("lockKvPath() follows the file: a hard link or a symlink to a held store is refused", async () => {
  const directory = await Deno.makeTempDir();
  try {
    const path = `${directory}/sync.kv`;
    const held = await lockKvPath(path);
    await Deno.link(path, `${directory}/hard.kv`);
    await Deno.symlink(path, `${directory}/soft.kv`);
    await assert.rejects(
      () => lockKvPath(`${directory}/hard.kv`),
      KvLockedError,
    );
    await assert.rejects(
      () => lockKvPath(`${directory}/soft.kv`),
      KvLockedError,
    );
    held.release();
    const again = await lockKvPath(`${directory}/hard.kv`);
    again.release();
  } finally {
    await Deno.remove(directory, { recursive: true });
  }
});
