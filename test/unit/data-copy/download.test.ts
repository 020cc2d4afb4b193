import { afterEach, expect, it } from "vitest";
import { SyncBudget } from "../../../src/fs/sync-budget.js";
import { silentLogger } from "../../../src/log.js";
import { downloadShortlist, LARGE_STREAMS_MAX } from "../../../src/migration/data-copy/download.js";
import type { TransferContext } from "../../../src/migration/data-copy/file-transfer.js";
import { OperationStatus } from "../../../src/migration/data-copy/operation-status.js";
import { mapSourceEntries } from "../../../src/migration/data-copy/plan.js";
import { ResumeStore } from "../../../src/migration/data-copy/resume-store.js";
import { FAST_RETRY, makePair, migratedTree } from "./fakes.js";

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0)) await c();
});

it(`streams at most ${LARGE_STREAMS_MAX} large files at once whatever maxConcurrency allows, small batches beside them, all exact`, async () => {
  const spec: Record<string, { size: number; seed: number }> = {};
  for (let i = 0; i < 10; i++) spec[`data0/ks/t/nb-${i}-big-Data.db`] = { size: 200 * 1024 + i, seed: i };
  for (let i = 0; i < 30; i++) spec[`data1/ks/t/nb-${i}-big-Index.db`] = { size: 1000 + i, seed: 100 + i };
  const pair = await makePair(spec);
  cleanups.push(pair.cleanup);
  pair.peer.faults = { chunkDelayMs: 5 };
  const listing = await pair.peer.listFiles();
  const targets = [...mapSourceEntries(pair.dest.roots, listing).values()];
  const ctx: TransferContext = {
    peer: pair.peer,
    signal: new AbortController().signal,
    retry: FAST_RETRY,
    logger: silentLogger,
    resume: new ResumeStore(pair.dest.config.stagingDir),
    // Files of 100 KiB and more stream alone; the 1 KiB ones go in batches.
    resumeMinBytes: 100 * 1024,
    touchedDirs: new Set(),
    knownDirs: new Set(),
    budget: new SyncBudget(),
  };
  const status = new OperationStatus(0);
  const totalBytes = listing.reduce((sum, e) => sum + Math.max(0, e.size), 0);
  status.toCleaning(totalBytes, listing.length);
  status.toPreparing();
  status.toDownloading(totalBytes, targets.length);

  const summary = await downloadShortlist(ctx, status, targets, 10);

  expect(summary.failures).toEqual([]);
  expect(pair.peer.readFileCalls.length).toBe(40); // every file read once, alone or in a batch
  expect(pair.peer.maxReadFilesOpen).toBe(LARGE_STREAMS_MAX);
  expect(pair.peer.readFilesCalls).toBeGreaterThan(0);
  expect(await migratedTree(pair.dstRoot)).toEqual(await migratedTree(pair.srcRoot));
});
