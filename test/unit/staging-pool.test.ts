// The O_DIRECT staging pool gives its memory back once idle (src/fs/sequential-writer.ts). In a
// file of its own: the pool is module state, and a fresh module means no timer of another test.
import { randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, expect, it, vi } from "vitest";
import { BLOCK_BYTES, openSequentialWriter, stagingPoolBytes } from "../../src/fs/sequential-writer.js";

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "lm-staging-pool-"));
  vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout"] });
});
afterAll(async () => {
  vi.useRealTimers();
  await rm(dir, { recursive: true, force: true });
});

/** Writes `data` to `name` through a direct writer and closes it. */
async function writeFileThroughPool(name: string, data: Buffer): Promise<void> {
  const writer = await openSequentialWriter(path.join(dir, name), { keepBytes: 0, direct: true });
  try {
    await writer.write(data);
    await writer.commit(Date.now());
  } finally {
    await writer.close();
  }
}

it("releases the staging memory after two idle seconds, and a later writer reserves it again", async () => {
  expect(stagingPoolBytes()).toBe(0);
  await writeFileThroughPool("a", randomBytes(2 * BLOCK_BYTES + 1));
  const reserved = stagingPoolBytes();
  expect(reserved).toBe(16 * BLOCK_BYTES);

  vi.advanceTimersByTime(1_999);
  expect(stagingPoolBytes()).toBe(reserved);
  // A writer within the idle time takes a block again: the countdown starts over when it is back.
  await writeFileThroughPool("b", randomBytes(100));
  vi.advanceTimersByTime(1_999);
  expect(stagingPoolBytes()).toBe(reserved);
  vi.advanceTimersByTime(1);
  expect(stagingPoolBytes()).toBe(0);

  const data = randomBytes(BLOCK_BYTES + 4_097);
  await writeFileThroughPool("c", data);
  expect(stagingPoolBytes()).toBe(reserved);
  expect((await readFile(path.join(dir, "c"))).equals(data)).toBe(true);
});

it("never releases it while a writer holds a block", async () => {
  const writer = await openSequentialWriter(path.join(dir, "held"), { keepBytes: 0, direct: true });
  try {
    const data = randomBytes(3 * BLOCK_BYTES);
    await writer.write(data.subarray(0, BLOCK_BYTES + 10));
    vi.advanceTimersByTime(60_000);
    expect(stagingPoolBytes()).toBe(16 * BLOCK_BYTES);
    await writer.write(data.subarray(BLOCK_BYTES + 10));
    await writer.commit(Date.now());
    expect((await readFile(path.join(dir, "held"))).equals(data)).toBe(true);
  } finally {
    await writer.close();
  }
});
