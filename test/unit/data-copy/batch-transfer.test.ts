import { mkdir, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { AgentError } from "../../../src/errors.js";
import { mtimeMsOf } from "../../../src/fs/mtime.js";
import { tempPathFor } from "../../../src/fs/temp-name.js";
import { BATCH_FILE_MAX_BYTES, downloadBatch, planBatches } from "../../../src/migration/data-copy/batch-transfer.js";
import { OperationStatus } from "../../../src/migration/data-copy/operation-status.js";
import { mapSourceEntries, type SourceTarget } from "../../../src/migration/data-copy/plan.js";
import { collectListing } from "../../../src/migration/peer.js";
import { makePair, transferContext, type TreeSpec } from "./fakes.js";

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0)) await c();
});

/** Twelve small SSTable components in two tables, sizes 1 KiB … 60 KiB. */
const SPEC: TreeSpec = Object.fromEntries(
  Array.from({ length: 12 }, (_, i) => [`data0/ks/t${i % 2}/nb-${i}-big-Data.db`, { size: 1024 + i * 5000, seed: i + 1 }]),
);

async function setupPair(spec: TreeSpec = SPEC) {
  const pair = await makePair(spec);
  cleanups.push(pair.cleanup);
  const targets = [...mapSourceEntries(pair.dest.roots, await collectListing(pair.peer.listFiles())).values()]
    .filter((t) => t.entry.fileType === "FILE")
    .sort((a, b) => b.entry.size - a.entry.size);
  const controller = new AbortController();
  const ctx = transferContext(pair, { resumeMinBytes: 4 << 20, signal: controller.signal });
  const status = new OperationStatus(0);
  return { ...pair, targets, ctx, controller, status };
}

async function expectExact(target: SourceTarget, sourceRoot: string) {
  const rel = target.entry.fileUrl.split("/files/data/0/")[1]!;
  const got = await readFile(target.absPath);
  expect(got.equals(await readFile(path.join(sourceRoot, "data0", rel))), rel).toBe(true);
  expect(mtimeMsOf(await stat(target.absPath, { bigint: true }))).toBe(target.entry.lastModifiedTime);
  await expect(stat(tempPathFor(target.absPath))).rejects.toThrow();
}

const fakeTarget = (size: number): SourceTarget =>
  ({ entry: { fileUrl: `/f${size}`, size, lastModifiedTime: 1, fileType: "FILE" }, absPath: `/x/f${size}` }) as unknown as SourceTarget;

describe("planBatches", () => {
  it("streams big or resumable files alone and spreads small ones over the streams", () => {
    const files = [fakeTarget(BATCH_FILE_MAX_BYTES + 1), ...Array.from({ length: 10 }, (_, i) => fakeTarget(100 + i)), fakeTarget(BATCH_FILE_MAX_BYTES)];
    const { singles, batches } = planBatches(files, 4, 4 << 20);
    expect(singles.map((t) => t.entry.size)).toEqual([BATCH_FILE_MAX_BYTES + 1]);
    expect(batches.map((b) => b.length)).toEqual([3, 3, 3, 2]);
    expect(batches.flat()).toHaveLength(11);
  });

  it("never batches a file that the resume policy would keep a record for", () => {
    const { singles, batches } = planBatches([fakeTarget(5000), fakeTarget(4000), fakeTarget(10)], 2, 4096);
    expect(singles.map((t) => t.entry.size)).toEqual([5000]);
    expect(batches.flat().map((t) => t.entry.size)).toEqual([4000, 10]);
  });

  it("batches small files in the order given (the listing's: by directory), and streams the others largest first", () => {
    const at = (absPath: string, size: number) => ({ entry: { fileUrl: absPath, size, lastModifiedTime: 1, fileType: "FILE" }, absPath }) as unknown as SourceTarget;
    const big = BATCH_FILE_MAX_BYTES + 1;
    const files = [at("/d/t1/a", 600), at("/d/t1/b", 800), at("/d/t1/big", big), at("/d/t1/c", 500), at("/d/t2/a", 700), at("/d/t2/b", 900), at("/d/t2/bigger", big + 1), at("/d/t2/c", 400)];
    const { singles, batches } = planBatches(files, 2, 4 << 20);
    expect(singles.map((t) => t.absPath)).toEqual(["/d/t2/bigger", "/d/t1/big"]);
    expect(batches.map((b) => b.map((t) => t.absPath))).toEqual([
      ["/d/t1/a", "/d/t1/b", "/d/t1/c"],
      ["/d/t2/a", "/d/t2/b", "/d/t2/c"],
    ]);
  });

  it("caps a batch at 512 files", () => {
    const { batches } = planBatches(Array.from({ length: 1100 }, () => fakeTarget(10)), 1, 4 << 20);
    expect(batches.map((b) => b.length)).toEqual([512, 512, 76]);
  });
});

// The plane packs ~1 MiB of small files per message, each whole with its trailer; a file whose
// data comes in several messages takes downloadBatch's other path.
describe.each([
  { groupFiles: 1, chunkSize: 64 * 1024, shape: "one file per message group, each in one data message" },
  { groupFiles: 5, chunkSize: 64 * 1024, shape: "five files per message group, each in one data message" },
  { groupFiles: 5, chunkSize: 16 * 1024, shape: "five files per message group, most in several data messages" },
])("downloadBatch ($shape)", ({ groupFiles, chunkSize }) => {
  const setup = async () => {
    const s = await setupPair();
    s.peer.groupFiles = groupFiles;
    s.peer.chunkSize = chunkSize;
    return s;
  };

  it("puts every file in place over one ReadFiles call, exact in bytes and mtime", async () => {
    const s = await setup();
    const result = await downloadBatch(s.ctx, s.targets, s.status);
    expect(result.retry).toEqual([]);
    expect([...result.outcomes.values()].every((o) => o.kind === "downloaded")).toBe(true);
    expect(s.peer.readFilesCalls).toBe(1);
    for (const t of s.targets) await expectExact(t, s.srcRoot);
    const total = s.targets.reduce((n, t) => n + t.entry.size, 0);
    expect(s.status.view().bytesTransferred).toBe(total);
    expect(s.ctx.touchedDirs.size).toBe(2);
  });

  it("hands a file corrupted in transit back for a retry alone, and writes nothing under its name", async () => {
    const s = await setup();
    s.peer.faults = { corrupt: { fileUrlEndsWith: "nb-5-big-Data.db", chunk: 0 } };
    const result = await downloadBatch(s.ctx, s.targets, s.status);
    expect(result.retry.map((t) => t.entry.fileUrl)).toEqual([expect.stringMatching(/nb-5-big-Data.db$/)]);
    const corrupted = result.retry[0]!;
    await expect(stat(corrupted.absPath)).rejects.toThrow();
    await expect(stat(tempPathFor(corrupted.absPath))).rejects.toThrow();
    expect(result.outcomes.size).toBe(s.targets.length - 1);
  });

  it("settles a vanished file as vanished and a changed one as changed, and goes on", async () => {
    const s = await setup();
    const [first, second] = [s.targets[0]!, s.targets[1]!];
    const rel = (t: SourceTarget) => path.join(s.srcRoot, "data0", t.entry.fileUrl.split("/files/data/0/")[1]!);
    await rm(rel(first));
    await writeFile(rel(second), "changed");
    const result = await downloadBatch(s.ctx, s.targets, s.status);
    expect(result.outcomes.get(first)).toEqual({ kind: "vanished" });
    expect(result.outcomes.get(second)?.kind).toBe("changed");
    expect(result.retry).toEqual([]);
    for (const t of s.targets.slice(2)) await expectExact(t, s.srcRoot);
  });

  it("hands back every unfinished file when the stream breaks", async () => {
    const s = await setup();
    s.peer.faults = { failAfter: { fileUrlEndsWith: "nb-6-big-Data.db", chunks: 0, error: () => new AgentError("Unavailable", "connection reset") } };
    const result = await downloadBatch(s.ctx, s.targets, s.status);
    const brokenAt = s.targets.findIndex((t) => t.entry.fileUrl.endsWith("nb-6-big-Data.db"));
    expect(result.retry).toEqual(s.targets.slice(brokenAt));
    for (const t of s.targets.slice(0, brokenAt)) await expectExact(t, s.srcRoot);
  });

  it("hands a file it cannot write back for a retry alone, removes what it left, and goes on", async () => {
    const s = await setup();
    // Its temp name taken by a non-empty directory: creating the file fails (EISDIR), whether it
    // is written synchronously (its directory already made for an earlier file) or through the pool.
    const blocked = s.targets[3]!;
    const ahead = s.targets.slice(0, 3).filter((t) => path.dirname(t.absPath) === path.dirname(blocked.absPath));
    expect(ahead.length).toBeGreaterThan(0);
    await mkdir(tempPathFor(blocked.absPath), { recursive: true });
    await writeFile(path.join(tempPathFor(blocked.absPath), "occupant"), "x");
    const result = await downloadBatch(s.ctx, s.targets, s.status);
    expect(result.retry).toEqual([blocked]);
    expect(result.outcomes.has(blocked)).toBe(false);
    await expect(stat(tempPathFor(blocked.absPath))).rejects.toThrow();
    await expect(stat(blocked.absPath)).rejects.toThrow();
    for (const t of s.targets.filter((t) => t !== blocked)) await expectExact(t, s.srcRoot);
  });

  it("overwrites a stale temp file of a small file", async () => {
    const s = await setup();
    const t = s.targets[3]!;
    await mkdir(path.dirname(t.absPath), { recursive: true });
    await writeFile(tempPathFor(t.absPath), Buffer.alloc(t.entry.size + 100, 1));
    await downloadBatch(s.ctx, s.targets, s.status);
    await expectExact(t, s.srcRoot);
    expect((await readdir(path.dirname(t.absPath))).filter((n) => n.endsWith(".partial"))).toEqual([]);
  });

  it("rejects with Cancelled when the task is cancelled, leaving no temp files", async () => {
    const s = await setup();
    s.peer.faults = { chunkDelayMs: 20 };
    const run = downloadBatch(s.ctx, s.targets, s.status);
    setTimeout(() => s.controller.abort(new AgentError("Cancelled", "cancelled")), 50);
    await expect(run).rejects.toMatchObject({ code: "Cancelled" });
    for (const dir of new Set(s.targets.map((t) => path.dirname(t.absPath)))) {
      const names = await readdir(dir).catch(() => []);
      expect(names.filter((n) => n.endsWith(".partial"))).toEqual([]);
    }
  });
});
