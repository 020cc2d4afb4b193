/**
 * The DOWNLOADING phase of one iteration: directories first (parents before children), then
 * empty files, then files with at most min(`maxConcurrency`, STREAMS_MAX) streams in flight: a
 * stream carries one large file (largest first, at most LARGE_STREAMS_MAX of them at once) or a
 * batch of small ones (in listing order). A batch gives its stream up once its bytes are
 * written, so the next one streams while it waits for its syncfs (tens to ~200 ms each on the
 * reference machine, ~0.5 s of each stream's time over the small benchmark tree) and renames its
 * files; it takes a stream again to retry a file alone.
 *
 * Counting (OperationStatus): a directory, an empty file or a downloaded file adds to
 * filesDownloaded (a file's size also to bytesDownloaded); a failed one adds to
 * downloadFailures, and so does a file that changed at the source during the pass (Aborted).
 * A file that vanished at the source (NotFound) counts in neither: it is not a failure of the
 * iteration, and the next pass's CLEANING and listing settle it. Work cut short by a cancel
 * counts in neither either.
 *
 * A file that still fails with a transient fault (Unavailable, DeadlineExceeded) after its
 * retries means the source is down or saturated: the phase then stops early instead of
 * spending the retry budget on every remaining file; the transfers in flight stop (their temp
 * files stay for resuming) and the rest is not attempted. The task's next iteration, after its
 * backoff, picks everything up again.
 */
import { setMaxListeners } from "node:events";
import { AgentError } from "../../errors.js";
import { syncDirectories } from "../../fs/durable.js";
import { setMtimeMs, setMtimeMsSync } from "../../fs/mtime.js";
import type { OperationStatus } from "./operation-status.js";
import type { SourceTarget } from "./plan.js";
import { downloadBatch, planBatches } from "./batch-transfer.js";
import { createEmptyFile, downloadFile, ensureDirectory, type FileOutcome, type TransferContext } from "./file-transfer.js";
import { DirectoryStaging } from "./staging.js";

export interface DownloadSummary {
  readonly failures: { readonly fileUrl: string; readonly reason: string }[];
  readonly vanished: number;
  /** Bytes continued from temp files instead of transferred. */
  readonly resumedBytes: number;
  /** Set when a persistent transient fault stopped the phase early. */
  readonly stoppedEarly: boolean;
}

const SOURCE_DOWN_CODES: ReadonlySet<string> = new Set(["Unavailable", "DeadlineExceeded"]);

/**
 * Streams at once, at most, whatever maxConcurrency allows (it is an upper bound). The
 * destination's CPU is the bottleneck, with small files and large ones alike: every stream
 * beyond what keeps it busy only holds data that waits (up to a 16 MiB HTTP/2 window each, see
 * LARGE_STREAMS_MAX) and makes V8 promote and collect more. Copies of the small benchmark tree
 * (~17,700 files) into a freshly started destination, interleaved, at maxConcurrency 10:
 * 10 streams 4.4-7.3 s (destination CPU 4.5-6.8 s), 6 streams 5.3-6.8 s, 4 streams 4.3-6.8 s
 * (3.9-6.0 s), 2 streams 4.2-5.7 s; each round, 4 was at or below 10.
 */
export const STREAMS_MAX = 4;
/**
 * Large files streamed at once, at most, not counting their last LARGE_TAIL_BYTES; each also
 * takes one of the stream slots, and batches of small files use the rest.
 *
 * One is enough, and each more costs memory. The destination is the bottleneck (in a ~10 s
 * copy of the large benchmark tree its main thread spends ~6.5 s of CPU and waits 4-6 s for
 * its previous O_DIRECT block write, fs/sequential-writer.ts), so a large stream spends most
 * of its time paused with its whole HTTP/2 stream window (16 MiB, plane/client.ts) buffered at
 * the destination: Node acknowledges connection-level bytes as they arrive, so only the stream
 * window bounds what a paused stream holds. Buffers that wait that long outlive V8's young
 * generation and are freed only by the next mark-compact. Fresh agents, one copy of the 4 GiB
 * benchmark tree each (destination peak RSS, wall, destination CPU): 4 streams 243-265 MB,
 * 10.5-12.4 s, 8.0-9.1 s; 1 stream (tail 4 MiB) 179-187 MB, 9.7-10.1 s, 6.2-6.3 s. (Ten
 * streams, earlier: 15-20 s.)
 */
export const LARGE_STREAMS_MAX = 1;
/**
 * A large file gives up its large-stream place when at most this many of its bytes are left to
 * receive (file-transfer.ts, nearEnd), and a file this small never takes one: the next file's
 * request, round trip and setup then overlap the last bytes and the commit (fsync, rename) of
 * the one before. Without this overlap one stream lost ~2.7 s over the benchmark's ~100 large
 * files behind a 10 ms round trip (13.3 s against 10.6 s on loopback); with it, 11.4-12.9 s against
 * 9.6-10.5 s. Larger tails cost memory (8 MiB: 191-201 MB peak in the runs above).
 */
export const LARGE_TAIL_BYTES = 4 << 20;
/*
 * The tail grows with the link (file-transfer.ts, adaptiveTailBytes) up to one stream window of
 * large files (SourcePeer.largeFileWindowBytes: 16 MiB, up to 20 MiB on a slow link): at
 * ~700 MB/s, 4 MiB covers ~6 ms, less than a 10 ms round trip. Behind the benchmark's 10 ms delay
 * proxy first bytes came 14-32 ms after their request, so most tails reached the cap.
 * - Fresh agents, 12 interleaved copies of the large tree, 16 MiB window: 7.56-8.13 s against
 *   7.77-8.44 s with a fixed 4 MiB (faster in 11 rounds of 12), destination peak 156-170 MB
 *   against 154-168 MB; a 32 MiB cap did no better (7.59-7.83 s), more than the window being of
 *   no use. On loopback (waits of 3-6 ms, tails of 4-7 MiB): 5.69-5.70 s against 5.50-5.92 s.
 * - With the 32 MiB window of a slow link, eight interleaved rounds behind the proxy: a 32 MiB
 *   cap 6.13-7.43 s (median 6.64) against 6.25-7.30 s (6.86) with 16, faster in seven. (The
 *   slow link's window is 20 MiB since: client.ts, bulkWindowBytes.)
 */

/** Runs the phase to the end (or until the signal aborts); every started transfer has stopped when it resolves. */
export async function downloadShortlist(
  ctx: TransferContext,
  status: OperationStatus,
  shortlist: readonly SourceTarget[],
  maxConcurrency: number,
): Promise<DownloadSummary> {
  const failures: { fileUrl: string; reason: string }[] = [];
  let vanished = 0;
  let resumedBytes = 0;
  let stoppedEarly = false;
  // The phase's own signal: aborted by the task's signal, or by a persistent transient fault.
  const phase = new AbortController();
  // Every transfer in flight listens on it (nextOrAbort): maxConcurrency listeners is expected.
  setMaxListeners(0, phase.signal);
  const onTaskAbort = () => phase.abort(ctx.signal.reason);
  if (ctx.signal.aborted) onTaskAbort();
  else ctx.signal.addEventListener("abort", onTaskAbort, { once: true });
  const phaseCtx: TransferContext = { ...ctx, signal: phase.signal };
  const fail = (t: SourceTarget, err: unknown) => {
    const error = AgentError.from(err);
    if (phase.signal.aborted) return;
    status.incrementDownloadFailures();
    failures.push({ fileUrl: t.entry.fileUrl, reason: error.message });
    ctx.logger.warn({ file: t.entry.fileUrl, code: error.code, err: error.message }, "download failed");
    if (SOURCE_DOWN_CODES.has(error.code)) {
      stoppedEarly = true;
      ctx.logger.warn("stopping the download phase: the source keeps failing after retries");
      phase.abort(new AgentError("Cancelled", "download phase stopped"));
    }
  };

  // New table directories of small files fill under a staging name (staging.ts).
  const staging = new DirectoryStaging(shortlist, ctx.resumeMinBytes, (dir, err) => fail(dir, err));
  if (staging.size > 0) ctx.logger.debug({ directories: staging.size }, "new directories fill under staging names");
  // One pass, in the shortlist's (listing) order: a directory comes before its contents, and
  // small files stay grouped by directory for their batches. This planning runs while nothing
  // else can (the source waits for the first request): sorting and filtering the small tree's
  // shortlist three times took ~35 ms of it.
  const dirs: SourceTarget[] = [];
  const empties: SourceTarget[] = [];
  const files: SourceTarget[] = [];
  for (const t of shortlist) {
    if (t.entry.fileType === "DIRECTORY") dirs.push(t);
    else if (t.entry.size === 0) empties.push(staging.targetFor(t));
    else files.push(staging.targetFor(t));
  }

  try {
    for (const t of dirs) {
      if (phase.signal.aborted) break;
      try {
        // Its mtime is set by syncDirectoryTimes, once everything below it is in place.
        await ensureDirectory(phaseCtx, staging.directoryPath(t));
        status.incrementFilesDownloaded();
      } catch (err) {
        fail(t, err);
      }
    }
    for (const t of empties) {
      if (phase.signal.aborted) break;
      try {
        await createEmptyFile(phaseCtx, t);
        status.incrementFilesDownloaded();
      } catch (err) {
        fail(t, err);
      }
      staging.settled(phaseCtx, t);
    }
    const record = (t: SourceTarget, outcome: FileOutcome) => {
      switch (outcome.kind) {
        case "downloaded":
          status.incrementFilesDownloaded();
          status.addBytesDownloaded(outcome.size);
          resumedBytes += outcome.resumedFrom;
          break;
        case "vanished":
          vanished++;
          ctx.logger.info({ file: t.entry.fileUrl }, "file vanished at the source; the next pass cleans it");
          break;
        case "changed":
          fail(t, new AgentError("Aborted", outcome.reason));
          break;
      }
      staging.settled(phaseCtx, t);
    };
    const downloadAlone = async (t: SourceTarget, nearEnd?: () => void) => {
      if (phase.signal.aborted) return;
      try {
        record(t, await downloadFile(phaseCtx, t, status, nearEnd && { tailBytes: LARGE_TAIL_BYTES, maxTailBytes: ctx.peer.largeFileWindowBytes, reached: nearEnd }));
      } catch (err) {
        fail(t, err);
        staging.settled(phaseCtx, t);
      }
    };
    const downloadMany = async (batch: readonly SourceTarget[], slot: StreamSlot) => {
      if (phase.signal.aborted) return;
      let result;
      try {
        // Its stream done, the batch lets the next one start while it makes its files durable.
        result = await downloadBatch(phaseCtx, batch, status, slot.release);
      } catch (err) {
        for (const t of batch) {
          fail(t, err);
          staging.settled(phaseCtx, t);
        }
        return;
      }
      for (const [t, outcome] of result.outcomes) record(t, outcome);
      if (result.retry.length === 0) return;
      await slot.reacquire();
      for (const t of result.retry) await downloadAlone(t);
    };
    // Large files stream alone, largest first; small ones go in batches (batch-transfer.ts).
    const streams = Math.min(maxConcurrency, STREAMS_MAX);
    const { singles, batches } = planBatches(files, streams, ctx.resumeMinBytes);
    await runStreams(
      singles.map((t) => (slot: StreamSlot) => downloadAlone(t, slot.nearEnd)),
      batches.map((batch) => (slot: StreamSlot) => downloadMany(batch, slot)),
      streams,
      Math.min(streams, LARGE_STREAMS_MAX),
    );
  } finally {
    ctx.signal.removeEventListener("abort", onTaskAbort);
    await staging.published();
    await makeRenamesDurable(ctx);
  }
  return { failures, vanished, resumedBytes, stoppedEarly };
}

/**
 * A job's hold on one of runStreams' stream slots. A job holds its slot from its start until it
 * settles, unless it lets go earlier.
 */
interface StreamSlot {
  /** A large job is within its tail: its large place goes to the next large job (any number of calls). */
  readonly nearEnd: () => void;
  /** The job has stopped streaming for now (its slot goes to the next job; any number of calls). */
  readonly release: () => void;
  /** The job needs a stream again: resolves once it holds a slot, before any job not yet started takes one. */
  readonly reacquire: () => Promise<void>;
}

/**
 * Runs every job, each one stream: at most `slots` at once, of which at most `largeSlots` from
 * `large` that have not yet called their `nearEnd`. A free slot goes first to a job that
 * reacquires it, then to the next large job while a large slot is free, else to the next small
 * one, so large files start first and small batches fill the slots they leave. Resolves once
 * every job has settled. Jobs must not reject (download failures are counted by the jobs
 * themselves).
 */
function runStreams(
  large: readonly ((slot: StreamSlot) => Promise<void>)[],
  small: readonly ((slot: StreamSlot) => Promise<void>)[],
  slots: number,
  largeSlots: number,
): Promise<void> {
  return new Promise((resolve) => {
    let running = 0;
    let runningLarge = 0;
    /** Jobs started and not yet settled. */
    let unsettled = 0;
    let nextLarge = 0;
    let nextSmall = 0;
    /** Jobs waiting to hold a slot again, each given one by calling it. */
    const reacquiring: (() => void)[] = [];
    const startMore = () => {
      while (running < slots) {
        const waiter = reacquiring.shift();
        if (waiter) {
          running++;
          waiter();
          continue;
        }
        const isLarge = nextLarge < large.length && runningLarge < largeSlots;
        if (!isLarge && nextSmall === small.length) break;
        running++;
        unsettled++;
        let holdsSlot = true;
        let holdsLargeSlot = isLarge;
        if (isLarge) runningLarge++;
        const nearEnd = () => {
          if (!holdsLargeSlot) return;
          holdsLargeSlot = false;
          runningLarge--;
          startMore();
        };
        const release = () => {
          if (!holdsSlot) return;
          holdsSlot = false;
          running--;
          if (holdsLargeSlot) {
            holdsLargeSlot = false;
            runningLarge--;
          }
          startMore();
        };
        const reacquire = () =>
          holdsSlot
            ? Promise.resolve()
            : new Promise<void>((held) => {
                reacquiring.push(() => {
                  holdsSlot = true;
                  held();
                });
                startMore();
              });
        const settle = () => {
          unsettled--;
          if (holdsSlot) release();
          else startMore();
        };
        const job = isLarge ? large[nextLarge++]! : small[nextSmall++]!;
        job({ nearEnd, release, reacquire }).then(settle, settle);
      }
      if (unsettled === 0) resolve();
    };
    startMore();
  });
}

/**
 * Makes the renames of the pass durable: every directory that received one, at once
 * (fs/durable.ts). A failure is logged: the files themselves are already durable.
 */
async function makeRenamesDurable(ctx: Pick<TransferContext, "touchedDirs" | "logger">): Promise<void> {
  const dirs = [...ctx.touchedDirs];
  ctx.touchedDirs.clear();
  try {
    await syncDirectories(dirs);
  } catch (err) {
    ctx.logger.warn({ dirs: dirs.length, err: (err as Error).message }, "cannot fsync the directories that received files");
  }
}

/**
 * Gives local directories their source mtimes, after every change below them of this pass, with
 * synchronous calls while ctx.budget allows (a few µs each against a thread-pool hop).
 * Best effort (verification ignores directory mtimes): failures are logged, not counted.
 */
export async function syncDirectoryTimes(
  ctx: Pick<TransferContext, "logger" | "signal" | "budget">,
  sources: Iterable<SourceTarget>,
): Promise<void> {
  for (const t of sources) {
    if (ctx.signal.aborted) return;
    if (t.entry.fileType !== "DIRECTORY") continue;
    try {
      await ctx.budget.run(
        () => setMtimeMsSync(t.absPath, t.entry.lastModifiedTime),
        () => setMtimeMs(t.absPath, t.entry.lastModifiedTime),
      );
    } catch (err) {
      ctx.logger.debug({ dir: t.absPath, err: (err as Error).message }, "cannot set directory mtime");
    }
  }
}
