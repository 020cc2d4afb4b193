import { afterEach, expect, it } from "vitest";
import { AgentError } from "../../../src/errors.js";
import { downloadShortlist, LARGE_STREAMS_MAX } from "../../../src/migration/data-copy/download.js";
import { mapSourceEntries } from "../../../src/migration/data-copy/plan.js";
import { collectListing } from "../../../src/migration/peer.js";
import { downloadingStatus, makePair, migratedTree, transferContext, type FakePeerFaults } from "./fakes.js";

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0)) await c();
});

/** The fake peer's window for large files, which caps a large file's tail (download.ts). */
const LARGE_TAIL_MAX_BYTES = 16 << 20;

/**
 * Six large files and 30 small ones, downloaded at maxConcurrency 10. A large file's tail grows
 * with its first-byte wait up to the peer's largeFileWindowBytes, so each file's first 4 MiB are
 * before any tail it can have: the peer counts a stream as holding a large place while more than
 * that is left.
 */
async function downloadTree(faults: FakePeerFaults) {
  const spec: Record<string, { size: number; seed: number }> = {};
  for (let i = 0; i < 6; i++) spec[`data0/ks/t/nb-${i}-big-Data.db`] = { size: LARGE_TAIL_MAX_BYTES + (4 << 20) + i, seed: i };
  for (let i = 0; i < 30; i++) spec[`data1/ks/t/nb-${i}-big-Index.db`] = { size: 1000 + i, seed: 100 + i };
  const pair = await makePair(spec);
  cleanups.push(pair.cleanup);
  pair.peer.faults = faults;
  pair.peer.chunkSize = 1 << 20;
  pair.peer.largeFileWindowBytes = LARGE_TAIL_MAX_BYTES;
  pair.peer.farBytes = LARGE_TAIL_MAX_BYTES;
  const listing = await collectListing(pair.peer.listFiles());
  const targets = [...mapSourceEntries(pair.dest.roots, listing).values()];
  // Files of 100 KiB and more stream alone (and resume); the 1 KiB ones go in batches.
  const ctx = transferContext(pair, { resumeMinBytes: 100 * 1024 });
  const totalBytes = listing.reduce((sum, e) => sum + Math.max(0, e.size), 0);
  const status = downloadingStatus(totalBytes, listing.length, targets.length);
  const summary = await downloadShortlist(ctx, status, targets, 10);
  return { ...pair, summary };
}

it(`keeps at most ${LARGE_STREAMS_MAX} large stream(s) short of the last ${LARGE_TAIL_MAX_BYTES >> 20} MiB whatever maxConcurrency allows, opens the next within that tail, small batches beside them, all exact`, async () => {
  const { summary, peer, dstRoot, srcRoot } = await downloadTree({ chunkDelayMs: 10 });
  expect(summary.failures).toEqual([]);
  expect(peer.readFileCalls.length).toBe(36); // every file read once, alone or in a batch
  expect(peer.maxReadFilesFar).toBe(LARGE_STREAMS_MAX);
  // A stream in its tail no longer holds a large place: the next file's stream opened beside it.
  expect(peer.maxReadFilesOpen).toBeGreaterThan(LARGE_STREAMS_MAX);
  expect(peer.readFilesCalls).toBeGreaterThan(0);
  expect(await migratedTree(dstRoot)).toEqual(await migratedTree(srcRoot));
});

it("a large file that fails within its tail resumes where it stopped, still one large stream short of its tail at a time, and the copy ends exact", async () => {
  const failing = "nb-2-big-Data.db";
  const { summary, peer, dstRoot, srcRoot } = await downloadTree({
    chunkDelayMs: 5,
    // 19 of its 21 messages sent: within the last 4 MiB, within any tail.
    failAfter: { fileUrlEndsWith: failing, chunks: 19, error: () => new AgentError("Unavailable", "connection reset") },
  });
  expect(summary.failures).toEqual([]);
  const calls = peer.readFileCalls.filter((r) => r.fileUrl.endsWith(failing));
  expect(calls.map((r) => r.offset)).toEqual([0, 19 << 20]);
  expect(peer.maxReadFilesFar).toBe(LARGE_STREAMS_MAX);
  expect(await migratedTree(dstRoot)).toEqual(await migratedTree(srcRoot));
});
