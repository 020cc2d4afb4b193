/**
 * How downloadShortlist shares its streams between batches of small files: a batch gives up its
 * stream once its bytes are written, while it waits for them to be durable, and takes one again
 * to retry a file alone. syncFiles is gated here so that "waiting to be durable" lasts as long
 * as the test needs; everything else (the fake source's reads, the writes, the renames) is real.
 */
import { access, mkdir, readdir } from "node:fs/promises";
import path from "node:path";
import { afterEach, expect, it, vi } from "vitest";
import { BATCH_MAX_FILES } from "../../../src/migration/data-copy/batch-transfer.js";
import { downloadShortlist } from "../../../src/migration/data-copy/download.js";
import { mapSourceEntries } from "../../../src/migration/data-copy/plan.js";
import { collectListing } from "../../../src/migration/peer.js";
import { downloadingStatus, makePair, migratedTree, transferContext, type FakePeerFaults, type TreeSpec } from "./fakes.js";

/** syncFiles waits for `open()`; `calls` counts the batches that asked for durability. */
const durability = vi.hoisted(() => {
  const gate = { calls: 0, open: () => {}, opened: Promise.resolve() };
  return {
    gate,
    close() {
      gate.calls = 0;
      gate.opened = new Promise<void>((resolve) => (gate.open = resolve));
    },
  };
});

vi.mock("../../../src/fs/durable.js", async (importOriginal) => {
  const real = await importOriginal<typeof import("../../../src/fs/durable.js")>();
  return {
    ...real,
    syncFiles: async (files: readonly string[]) => {
      durability.gate.calls++;
      await durability.gate.opened;
      return real.syncFiles(files);
    },
  };
});

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  durability.gate.open();
  for (const c of cleanups.splice(0)) await c();
});

/** Two full batches and a part of one: 2 × BATCH_MAX_FILES + 76 files of 200 bytes in one table. */
const FILES = 2 * BATCH_MAX_FILES + 76;
const SPEC: TreeSpec = Object.fromEntries(
  Array.from({ length: FILES }, (_, i) => [`data0/ks/t/nb-${i}-big-Index.db`, { size: 200, seed: i + 1 }]),
);

/**
 * Starts downloadShortlist of the whole tree at maxConcurrency 1 (one stream); does not wait for
 * it. With `tableDirExists`, data0/ks/t is created first and only the files are shortlisted, so
 * they go under temp names; else the new table directory is staged (staging.ts).
 */
async function startDownload(faults: FakePeerFaults = {}, options: { tableDirExists?: boolean } = {}) {
  const pair = await makePair(SPEC);
  cleanups.push(pair.cleanup);
  pair.peer.faults = faults;
  const listing = await collectListing(pair.peer.listFiles());
  let targets = [...mapSourceEntries(pair.dest.roots, listing).values()];
  if (options.tableDirExists) {
    await mkdir(path.join(pair.dstRoot, "data0/ks/t"), { recursive: true });
    targets = targets.filter((t) => t.entry.fileType === "FILE");
  }
  const ctx = transferContext(pair, { resumeMinBytes: 100 * 1024 });
  const totalBytes = listing.reduce((sum, e) => sum + Math.max(0, e.size), 0);
  const status = downloadingStatus(totalBytes, listing.length, targets.length);
  return { ...pair, status, done: downloadShortlist(ctx, status, targets, 1) };
}

it("hands a batch's stream to the next batch while its files wait to be made durable, and renames none before they are", async () => {
  durability.close();
  const { peer, dstRoot, srcRoot, done } = await startDownload({}, { tableDirExists: true });
  // With one stream, the third batch can only start if the first two gave theirs up.
  await vi.waitFor(() => expect([peer.readFilesCalls, durability.gate.calls]).toEqual([3, 3]), { timeout: 10_000 });
  expect(peer.maxStreamsOpen).toBe(1);
  const names = await readdir(path.join(dstRoot, "data0/ks/t"));
  expect(names.length).toBe(FILES);
  expect(names.filter((name) => name.endsWith("-Index.db"))).toEqual([]); // every one still under its temp name
  durability.gate.open();
  const summary = await done;
  expect(summary.failures).toEqual([]);
  expect(await migratedTree(dstRoot)).toEqual(await migratedTree(srcRoot));
});

it("fills a new table directory under its staging name and renames it into place once every file is durable", async () => {
  durability.close();
  const { peer, dstRoot, srcRoot, done } = await startDownload();
  await vi.waitFor(() => expect([peer.readFilesCalls, durability.gate.calls]).toEqual([3, 3]), { timeout: 10_000 });
  // Every file is written under its own name, in a directory no listing looks into.
  expect(await readdir(path.join(dstRoot, "data0/ks"))).toEqual([".lm-sidecar.t.partial"]);
  const staged = await readdir(path.join(dstRoot, "data0/ks/.lm-sidecar.t.partial"));
  expect(staged.length).toBe(FILES);
  expect(staged.filter((name) => !name.endsWith("-Index.db"))).toEqual([]);
  durability.gate.open();
  const summary = await done;
  expect(summary.failures).toEqual([]);
  expect(await readdir(path.join(dstRoot, "data0/ks"))).toEqual(["t"]);
  expect(await migratedTree(dstRoot)).toEqual(await migratedTree(srcRoot));
});

it("a file handed back by a batch is retried alone once a stream is free again, never beyond the stream limit", async () => {
  durability.close();
  durability.gate.open();
  const corrupted = "nb-7-big-Index.db";
  const { peer, status, dstRoot, srcRoot, done } = await startDownload({ corrupt: { fileUrlEndsWith: corrupted, chunk: 0 } });
  const summary = await done;
  expect(summary.failures).toEqual([]);
  expect(peer.readFilesCalls).toBe(3);
  // Read in its batch (corrupted in transit), then alone.
  expect(peer.readFileCalls.filter((r) => r.fileUrl.endsWith(`/${corrupted}`)).length).toBe(2);
  expect(peer.maxStreamsOpen).toBe(1);
  expect(status.view().filesDownloaded).toBe(FILES + 2); // and the directories data0/ks, data0/ks/t
  await access(path.join(dstRoot, "data0/ks/t", corrupted));
  expect(await migratedTree(dstRoot)).toEqual(await migratedTree(srcRoot));
});
