import { randomBytes } from "node:crypto";
import { closeSync, constants, openSync } from "node:fs";
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { mtimeMsOf } from "../../src/fs/mtime.js";
import { BLOCK_BYTES, DIRECT_ALIGN, openSequentialWriter, type SequentialWriter } from "../../src/fs/sequential-writer.js";

let dir: string;
/** Whether the test directory's filesystem accepts O_DIRECT (ext4 does; tmpfs may not). */
let directWorks: boolean;

beforeAll(async () => {
  const probeDir = await mkdtemp(path.join(os.tmpdir(), "lm-writer-probe-"));
  try {
    closeSync(openSync(path.join(probeDir, "p"), constants.O_WRONLY | constants.O_CREAT | constants.O_DIRECT));
    directWorks = true;
  } catch {
    directWorks = false;
  }
  await rm(probeDir, { recursive: true, force: true });
});

afterEach(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

async function tempFile(): Promise<string> {
  dir = await mkdtemp(path.join(os.tmpdir(), "lm-writer-"));
  return path.join(dir, "f.tmp");
}

/** Writes `data` in pieces of the given sizes, cycling through them. */
async function writeInPieces(writer: SequentialWriter, data: Buffer, sizes: readonly number[]): Promise<void> {
  for (let offset = 0, i = 0; offset < data.length; i++) {
    const n = Math.min(sizes[i % sizes.length]!, data.length - offset);
    await writer.write(data.subarray(offset, offset + n));
    offset += n;
  }
}

const MTIME_MS = 1_700_000_123_457;

describe("openSequentialWriter", () => {
  for (const direct of [true, false]) {
    it(`writes exact bytes, size and mtime across block boundaries (direct ${direct})`, async () => {
      const file = await tempFile();
      const data = randomBytes(3 * BLOCK_BYTES + 12_345);
      const writer = await openSequentialWriter(file, { keepBytes: 0, direct });
      expect(writer.direct).toBe(direct && directWorks);
      try {
        await writeInPieces(writer, data, [1, 65_536, BLOCK_BYTES, 777_777, BLOCK_BYTES - 1]);
        expect(writer.position).toBe(data.length);
        await writer.commit(MTIME_MS);
      } finally {
        await writer.close();
      }
      expect((await readFile(file)).equals(data)).toBe(true);
      const st = await stat(file, { bigint: true });
      expect(mtimeMsOf(st)).toBe(MTIME_MS);
    });
  }

  it("an empty commit leaves an empty file", async () => {
    const file = await tempFile();
    const writer = await openSequentialWriter(file, { keepBytes: 0, direct: true });
    await writer.commit(MTIME_MS);
    await writer.close();
    expect((await stat(file)).size).toBe(0);
  });

  it("truncates an existing file when keepBytes is 0", async () => {
    const file = await tempFile();
    await writeFile(file, randomBytes(5 * DIRECT_ALIGN));
    const data = randomBytes(100);
    const writer = await openSequentialWriter(file, { keepBytes: 0, direct: true });
    await writer.write(data);
    await writer.commit(MTIME_MS);
    await writer.close();
    expect((await readFile(file)).equals(data)).toBe(true);
  });

  it("resumes from a kept prefix; O_DIRECT rounds the start down to a block boundary and truncates there", async () => {
    const file = await tempFile();
    const data = randomBytes(2 * BLOCK_BYTES + 999);
    const kept = 3 * DIRECT_ALIGN + 100;
    await writeFile(file, data.subarray(0, kept));
    const writer = await openSequentialWriter(file, { keepBytes: kept, direct: true });
    const start = writer.direct ? 3 * DIRECT_ALIGN : kept;
    expect(writer.position).toBe(start);
    expect((await stat(file)).size).toBe(start);
    await writeInPieces(writer, data.subarray(start), [300_000]);
    await writer.commit(MTIME_MS);
    await writer.close();
    expect((await readFile(file)).equals(data)).toBe(true);
  });

  it("flush() puts every staged byte on disk and writing continues after it", async () => {
    const file = await tempFile();
    const data = randomBytes(BLOCK_BYTES + 5_000);
    const writer = await openSequentialWriter(file, { keepBytes: 0, direct: true });
    await writer.write(data.subarray(0, 10_001));
    await writer.flush();
    expect((await readFile(file)).equals(data.subarray(0, 10_001))).toBe(true);
    await writer.write(data.subarray(10_001));
    await writer.flush();
    expect((await readFile(file)).equals(data)).toBe(true);
    await writer.commit(MTIME_MS);
    await writer.close();
    expect((await readFile(file)).equals(data)).toBe(true);
  });

  it("more writers than aligned blocks: every file is still exact (extra ones write through the page cache)", async () => {
    await tempFile();
    const files = Array.from({ length: 40 }, (_, i) => path.join(dir, `f${i}`));
    const data = files.map(() => randomBytes(2 * BLOCK_BYTES + 4_321));
    const writers = await Promise.all(files.map((file) => openSequentialWriter(file, { keepBytes: 0, direct: true })));
    await Promise.all(
      writers.map(async (writer, i) => {
        await writeInPieces(writer, data[i]!, [BLOCK_BYTES / 2 + 3]);
        await writer.commit(MTIME_MS);
        await writer.close();
      }),
    );
    for (const [i, file] of files.entries()) expect((await readFile(file)).equals(data[i]!)).toBe(true);
    // The blocks went back to the pool: a new writer gets one.
    const again = await openSequentialWriter(path.join(dir, "again"), { keepBytes: 0, direct: true });
    expect(again.direct).toBe(directWorks);
    await again.close();
  });

  it("a failed block write (ENOSPC from /dev/full) surfaces at the next write or at commit", async () => {
    const writer = await openSequentialWriter("/dev/full", { keepBytes: 0, direct: true });
    expect(writer.direct).toBe(false);
    try {
      const writing = (async () => {
        for (let i = 0; i < 4; i++) await writer.write(Buffer.alloc(BLOCK_BYTES));
        await writer.commit(MTIME_MS);
      })();
      await expect(writing).rejects.toMatchObject({ code: "ENOSPC" });
    } finally {
      await writer.close();
    }
  });

  it("open errors are the fs error; writing after close is refused", async () => {
    const file = await tempFile();
    await expect(openSequentialWriter(dir, { keepBytes: 0, direct: true })).rejects.toMatchObject({ code: "EISDIR" });
    const writer = await openSequentialWriter(file, { keepBytes: 0, direct: true });
    await writer.close();
    await writer.close();
    await expect(writer.write(Buffer.alloc(10))).rejects.toThrow("closed");
  });
});
