import { readdir, readFile, rm, stat, utimes, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { AgentError } from "../../../src/errors.js";
import { mtimeMsOf } from "../../../src/fs/mtime.js";
import { tempPathFor } from "../../../src/fs/temp-name.js";
import { SyncBudget } from "../../../src/fs/sync-budget.js";
import { adaptiveTailBytes, ensureDirectory, createEmptyFile, downloadFile } from "../../../src/migration/data-copy/file-transfer.js";
import { mapSourceEntries, type SourceTarget } from "../../../src/migration/data-copy/plan.js";
import { collectListing } from "../../../src/migration/peer.js";
import { downloadingStatus, FAST_RETRY, makePair, pseudoRandom, transferContext } from "./fakes.js";

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0)) await c();
});

const SIZE = 300 * 1024 + 17;
const REL = "ks/t/nb-1-big-Data.db";

async function setup(options: { resumeMinBytes?: number } = {}) {
  const pair = await makePair({ [`data0/${REL}`]: { size: SIZE, seed: 7 }, "data0/ks/t/nb-1-big-TOC.txt": "" });
  cleanups.push(pair.cleanup);
  const listing = await collectListing(pair.peer.listFiles());
  const targets = mapSourceEntries(pair.dest.roots, listing);
  const target = [...targets.values()].find((t) => t.entry.fileUrl.endsWith("Data.db"))!;
  const controller = new AbortController();
  const ctx = transferContext(pair, { resumeMinBytes: options.resumeMinBytes ?? 0, signal: controller.signal });
  const resume = ctx.resume;
  const status = downloadingStatus(SIZE, listing.length, 1);
  const sourcePath = path.join(pair.srcRoot, "data0", REL);
  const sourceBytes = await readFile(sourcePath);
  return { ...pair, ctx, controller, status, target, targets, resume, sourcePath, sourceBytes };
}

async function expectExactCopy(target: SourceTarget, sourceBytes: Buffer) {
  const got = await readFile(target.absPath);
  expect(got.equals(sourceBytes)).toBe(true);
  const st = await stat(target.absPath, { bigint: true });
  expect(mtimeMsOf(st)).toBe(target.entry.lastModifiedTime);
  await expect(stat(tempPathFor(target.absPath))).rejects.toThrow();
}

describe("downloadFile", () => {
  it("copies bytes and the millisecond mtime, and leaves no temp file or record", async () => {
    const s = await setup();
    const outcome = await downloadFile(s.ctx, s.target, s.status);
    expect(outcome).toEqual({ kind: "downloaded", size: SIZE, resumedFrom: 0 });
    await expectExactCopy(s.target, s.sourceBytes);
    expect(s.peer.readFileCalls).toHaveLength(1);
    expect(s.peer.readFileCalls[0]).toMatchObject({ offset: 0, expectedSize: SIZE, expectedLastModifiedTime: s.target.entry.lastModifiedTime });
    expect(s.status.view().bytesTransferred).toBe(SIZE);
    expect(await s.resume.get(s.target.absPath)).toBeUndefined();
    expect(s.ctx.touchedDirs).toEqual(new Set([path.dirname(s.target.absPath)]));
  });

  it("calls nearEnd once, when at most tailBytes of the file are left to receive", async () => {
    const s = await setup();
    const tailBytes = 100 * 1024;
    const sentAtCalls: number[] = [];
    await downloadFile(s.ctx, s.target, s.status, { tailBytes, reached: () => sentAtCalls.push(s.peer.bytesSent) });
    expect(sentAtCalls).toHaveLength(1);
    // Right after the chunk (64 KiB) that crossed into the tail.
    expect(sentAtCalls[0]).toBeGreaterThanOrEqual(SIZE - tailBytes);
    expect(sentAtCalls[0]).toBeLessThan(SIZE - tailBytes + s.peer.chunkSize);
    await expectExactCopy(s.target, s.sourceBytes);
  });

  it("calls nearEnd before the request for a file no larger than tailBytes", async () => {
    const s = await setup();
    const sentAtCalls: number[] = [];
    const requestsAtCalls: number[] = [];
    await downloadFile(s.ctx, s.target, s.status, {
      tailBytes: SIZE,
      reached: () => {
        sentAtCalls.push(s.peer.bytesSent);
        requestsAtCalls.push(s.peer.readFileCalls.length);
      },
    });
    expect(sentAtCalls).toEqual([0]);
    expect(requestsAtCalls).toEqual([0]);
    await expectExactCopy(s.target, s.sourceBytes);
  });

  it("resumes from a partial temp file when the record matches, moving fewer bytes", async () => {
    const s = await setup();
    const prefix = 128 * 1024 + 5;
    await (await import("node:fs/promises")).mkdir(path.dirname(s.target.absPath), { recursive: true });
    await writeFile(tempPathFor(s.target.absPath), s.sourceBytes.subarray(0, prefix));
    await s.resume.put({ target: s.target.absPath, fileUrl: s.target.entry.fileUrl, size: SIZE, lastModifiedTime: s.target.entry.lastModifiedTime });
    const outcome = await downloadFile(s.ctx, s.target, s.status);
    expect(outcome).toEqual({ kind: "downloaded", size: SIZE, resumedFrom: prefix });
    expect(s.peer.readFileCalls.map((c) => c.offset)).toEqual([prefix]);
    expect(s.peer.bytesSent).toBe(SIZE - prefix);
    expect(s.status.view().bytesTransferred).toBe(SIZE - prefix);
    await expectExactCopy(s.target, s.sourceBytes);
  });

  it("does not resume without a matching record", async () => {
    const s = await setup();
    await (await import("node:fs/promises")).mkdir(path.dirname(s.target.absPath), { recursive: true });
    await writeFile(tempPathFor(s.target.absPath), s.sourceBytes.subarray(0, 1000));
    await s.resume.put({ target: s.target.absPath, fileUrl: s.target.entry.fileUrl, size: SIZE, lastModifiedTime: 1 });
    await downloadFile(s.ctx, s.target, s.status);
    expect(s.peer.readFileCalls.map((c) => c.offset)).toEqual([0]);
    await expectExactCopy(s.target, s.sourceBytes);
  });

  it("detects a corrupted resumed prefix by the whole-file hash and restarts from 0", async () => {
    const s = await setup();
    const bad = Buffer.from(s.sourceBytes.subarray(0, 4096));
    bad[100]! ^= 0xff;
    await (await import("node:fs/promises")).mkdir(path.dirname(s.target.absPath), { recursive: true });
    await writeFile(tempPathFor(s.target.absPath), bad);
    await s.resume.put({ target: s.target.absPath, fileUrl: s.target.entry.fileUrl, size: SIZE, lastModifiedTime: s.target.entry.lastModifiedTime });
    await downloadFile(s.ctx, s.target, s.status);
    expect(s.peer.readFileCalls.map((c) => c.offset)).toEqual([4096, 0]);
    await expectExactCopy(s.target, s.sourceBytes);
  });

  it("a flipped byte in one chunk is a DataLoss: the temp is dropped and the file retried to an exact copy", async () => {
    const s = await setup();
    s.peer.faults = { corrupt: { fileUrlEndsWith: "Data.db", chunk: 3 } };
    await downloadFile(s.ctx, s.target, s.status);
    expect(s.peer.readFileCalls.map((c) => c.offset)).toEqual([0, 0]);
    await expectExactCopy(s.target, s.sourceBytes);
    expect(s.status.view().bytesTransferred).toBe(2 * SIZE);
  });

  it("fails with DataLoss when every attempt is corrupted, and keeps no temp file", async () => {
    const s = await setup();
    s.peer.faults = { corrupt: { fileUrlEndsWith: "Data.db", chunk: 0, times: 100 } };
    const err = await downloadFile(s.ctx, s.target, s.status).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AgentError);
    expect((err as AgentError).code).toBe("DataLoss");
    expect((err as AgentError).message).toMatch(/XXH64 mismatch/);
    expect(s.peer.readFileCalls).toHaveLength(FAST_RETRY.maxRetries + 1);
    await expect(stat(tempPathFor(s.target.absPath))).rejects.toThrow();
    await expect(stat(s.target.absPath)).rejects.toThrow();
  });

  it("resumes after a transient fault mid-stream", async () => {
    const s = await setup();
    s.peer.faults = { failAfter: { fileUrlEndsWith: "Data.db", chunks: 2, error: () => new AgentError("Unavailable", "connection reset") } };
    await downloadFile(s.ctx, s.target, s.status);
    expect(s.peer.readFileCalls.map((c) => c.offset)).toEqual([0, 2 * s.peer.chunkSize]);
    expect(s.peer.bytesSent).toBe(SIZE);
    await expectExactCopy(s.target, s.sourceBytes);
  });

  it("restarts a small file (below resumeMinBytes) from 0 after a transient fault", async () => {
    const s = await setup({ resumeMinBytes: SIZE + 1 });
    s.peer.faults = { failAfter: { fileUrlEndsWith: "Data.db", chunks: 2, error: () => new AgentError("Unavailable", "reset") } };
    await downloadFile(s.ctx, s.target, s.status);
    expect(s.peer.readFileCalls.map((c) => c.offset)).toEqual([0, 0]);
    await expectExactCopy(s.target, s.sourceBytes);
    expect(await readdir(s.resume.dir).catch(() => [])).toEqual([]);
  });

  it("Aborted mid-stream (file changed at the source): temp and record removed, no retry, counted as changed", async () => {
    const s = await setup();
    s.peer.faults = { failAfter: { fileUrlEndsWith: "Data.db", chunks: 2, error: () => new AgentError("Aborted", "file changed") } };
    const outcome = await downloadFile(s.ctx, s.target, s.status);
    expect(outcome).toEqual({ kind: "changed", reason: "file changed" });
    expect(s.peer.readFileCalls).toHaveLength(1);
    await expect(stat(tempPathFor(s.target.absPath))).rejects.toThrow();
    await expect(stat(s.target.absPath)).rejects.toThrow();
    expect(await s.resume.get(s.target.absPath)).toBeUndefined();
  });

  it("a file re-timed at the source after listing is reported as changed", async () => {
    const s = await setup();
    await utimes(s.sourcePath, new Date(), new Date());
    const outcome = await downloadFile(s.ctx, s.target, s.status);
    expect(outcome.kind).toBe("changed");
    await expect(stat(s.target.absPath)).rejects.toThrow();
  });

  it("a file that vanished at the source is not an error", async () => {
    const s = await setup();
    await rm(s.sourcePath);
    expect(await downloadFile(s.ctx, s.target, s.status)).toEqual({ kind: "vanished" });
    await expect(stat(tempPathFor(s.target.absPath))).rejects.toThrow();
  });

  it("gives up on a persistent transient fault and keeps the temp file for resuming", async () => {
    const s = await setup();
    s.peer.faults = { failAfter: { fileUrlEndsWith: "Data.db", chunks: 1, error: () => new AgentError("Unavailable", "down"), times: 100 } };
    await expect(downloadFile(s.ctx, s.target, s.status)).rejects.toMatchObject({ code: "Unavailable" });
    expect((await stat(tempPathFor(s.target.absPath))).size).toBeGreaterThan(0);
    await expect(stat(s.target.absPath)).rejects.toThrow();
  });

  for (const ignoreSignal of [false, true]) {
    it(`cancel stops within a second and leaves no file under the real name${ignoreSignal ? " (peer ignores the signal)" : ""}`, async () => {
      const s = await setup();
      s.peer.faults = { chunkDelayMs: 40, ignoreSignal };
      const running = downloadFile(s.ctx, s.target, s.status);
      await new Promise((r) => setTimeout(r, 130));
      const t0 = Date.now();
      s.controller.abort();
      await expect(running).rejects.toMatchObject({ code: "Cancelled" });
      expect(Date.now() - t0).toBeLessThan(1000);
      await expect(stat(s.target.absPath)).rejects.toThrow();
      const temp = await stat(tempPathFor(s.target.absPath));
      expect(temp.size).toBeGreaterThan(0);
      expect(temp.size).toBeLessThan(SIZE);
    });
  }
});

describe("adaptiveTailBytes", () => {
  const MiB = 1 << 20;
  const nearEnd = { tailBytes: 4 * MiB, maxTailBytes: 16 * MiB, reached: () => undefined };
  // 700 MB/s: 70 MB in 100 ms.
  const rate = [70_000_000, 100] as const;

  it("keeps tailBytes until 4 MiB have arrived, or without a measured wait", () => {
    expect(adaptiveTailBytes(nearEnd, 12, 4 * MiB - 1, 5)).toBe(4 * MiB);
    expect(adaptiveTailBytes(nearEnd, 0, ...rate)).toBe(4 * MiB);
    expect(adaptiveTailBytes(nearEnd, 12, 70_000_000, 0)).toBe(4 * MiB);
  });

  it("covers 1.5 first-byte waits at the file's rate, between tailBytes and maxTailBytes", () => {
    // Loopback: a 3 ms wait needs 3.15 MB, under the floor.
    expect(adaptiveTailBytes(nearEnd, 3, ...rate)).toBe(4 * MiB);
    // A 10 ms round trip plus the source's open: 12 ms needs 12.6 MB.
    expect(adaptiveTailBytes(nearEnd, 12, ...rate)).toBe(12_600_000);
    expect(adaptiveTailBytes(nearEnd, 30, ...rate)).toBe(16 * MiB);
    // No maxTailBytes: the tail never grows.
    expect(adaptiveTailBytes({ tailBytes: 4 * MiB, reached: () => undefined }, 30, ...rate)).toBe(4 * MiB);
  });
});

describe("empty files and directories", () => {
  it("creates an empty file with the source mtime and a directory", async () => {
    const s = await setup();
    const toc = [...s.targets.values()].find((t) => t.entry.fileUrl.endsWith("TOC.txt"))!;
    await createEmptyFile(s.ctx, toc);
    const st = await stat(toc.absPath, { bigint: true });
    expect(st.size).toBe(0n);
    expect(mtimeMsOf(st)).toBe(toc.entry.lastModifiedTime);
    const dir = [...s.targets.values()].find((t) => t.entry.fileType === "DIRECTORY")!;
    await ensureDirectory({ knownDirs: new Set(), budget: new SyncBudget() }, dir.absPath);
    expect((await stat(dir.absPath)).isDirectory()).toBe(true);
  });
});

it("pseudoRandom is deterministic", () => {
  expect(pseudoRandom(16, 3).equals(pseudoRandom(16, 3))).toBe(true);
});
