import { afterEach, expect, it } from "vitest";
import { SyncBudget } from "../../../src/fs/sync-budget.js";
import { silentLogger } from "../../../src/log.js";
import { downloadShortlist, LARGE_STREAMS_MAX, LARGE_TAIL_BYTES } from "../../../src/migration/data-copy/download.js";
import type { TransferContext } from "../../../src/migration/data-copy/file-transfer.js";
import { OperationStatus } from "../../../src/migration/data-copy/operation-status.js";
import { mapSourceEntries } from "../../../src/migration/data-copy/plan.js";
import { ResumeStore } from "../../../src/migration/data-copy/resume-store.js";
import { FAST_RETRY, makePair, migratedTree } from "./fakes.js";

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0)) await c();
});

it(`keeps at most ${LARGE_STREAMS_MAX} large stream(s) short of the last ${LARGE_TAIL_BYTES >> 20} MiB whatever maxConcurrency allows, opens the next within that tail, small batches beside them, all exact`, async () => {
  const spec: Record<string, { size: number; seed: number }> = {};
  // Large: their first 4 MiB come before their tail.
  for (let i = 0; i < 6; i++) spec[`data0/ks/t/nb-${i}-big-Data.db`] = { size: LARGE_TAIL_BYTES + (4 << 20) + i, seed: i };
  for (let i = 0; i < 30; i++) spec[`data1/ks/t/nb-${i}-big-Index.db`] = { size: 1000 + i, seed: 100 + i };
  const pair = await makePair(spec);
  cleanups.push(pair.cleanup);
  pair.peer.faults = { chunkDelayMs: 10 };
  pair.peer.chunkSize = 1 << 20;
  pair.peer.farBytes = LARGE_TAIL_BYTES;
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
  expect(pair.peer.readFileCalls.length).toBe(36); // every file read once, alone or in a batch
  expect(pair.peer.maxReadFilesFar).toBe(LARGE_STREAMS_MAX);
  // A stream in its tail no longer holds a large place: the next file's stream opened beside it.
  expect(pair.peer.maxReadFilesOpen).toBeGreaterThan(LARGE_STREAMS_MAX);
  expect(pair.peer.readFilesCalls).toBeGreaterThan(0);
  expect(await migratedTree(pair.dstRoot)).toEqual(await migratedTree(pair.srcRoot));
});
