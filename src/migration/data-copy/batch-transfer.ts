/**
 * Puts many small files in place over one ReadFiles stream, so that a table of thousands of
 * small SSTable components costs one round trip per batch instead of one per file.
 *
 *   peer.readFiles(batch) --data/trailer per file--> XXH64 + buffer in memory (each file <= 1 MiB)
 *        --> check size, mtime, hash --> temp name: write, mtime
 *        --> stream ended, writes done: `received` (the caller's next stream may start)
 *        --> syncFiles (one syncfs, fs/durable.ts) --> rename each
 *
 * A file of a staged directory (staging.ts) is written under its own name inside the staging
 * directory, which is renamed into place whole once all its files have settled: no rename here.
 *
 * The same guarantees as file-transfer.ts: a file is renamed into place only when complete,
 * checked against the source's hash and durable; durability comes per batch instead of one
 * fsync per file. (A syncfs every 128 files cost the small benchmark tree ~140 `sync` processes
 * per copy, ~0.4 s of CPU in their start-up alone: copies with a fresh destination agent took
 * 5.37-5.73 s, 4.39-4.64 s with a warm source; with one per batch 5.16-5.24 and 4.23-4.51 s.)
 *
 * Messages arrive in groups (one wire message packs many small files); while the SyncBudget
 * allows, each file is written synchronously as its group is read, with no promise of its own
 * (the event loop gets its turn after the group when the budget says it is due), else through
 * the thread pool, and once WRITES_IN_FLIGHT or more writes are pending after a group, the
 * stream waits for one (backpressure through the client window). Renames likewise. A promise
 * per file cost ~5 % of a small-tree copy into a fresh destination: 20 interleaved rounds,
 * medians 2.37 and 2.17 s against 2.48 and 2.31 s, destination CPU ~0.13 s less.
 *
 * Anything the batch cannot settle — a stream that fails, a per-file error other than NotFound
 * or Aborted, a corrupted file, a local write error — is handed back in `retry`, and the caller
 * gives each such file to downloadFile, whose retries and resume policy then apply.
 */
import { closeSync, futimesSync, openSync, rename, renameSync, rmSync, writeSync } from "node:fs";
import { open, rm } from "node:fs/promises";
import { promisify } from "node:util";
import { createHasher, type Hasher, xxh64Of } from "../../digest/digest.js";
import { AgentError, throwIfAborted } from "../../errors.js";
import { syncFiles } from "../../fs/durable.js";
import { exactSeconds } from "../../fs/mtime.js";
import { ParentCache } from "../../fs/parent-dir.js";
import { tempPathFor } from "../../fs/temp-name.js";
import type { BatchReadMessage, ReadFileTrailer } from "../peer.js";
import { abortable, ensureDirectory, type FileOutcome, type TransferContext, type TransferProgress } from "./file-transfer.js";
import type { SourceTarget } from "./plan.js";

/** Files no bigger than this may go in a batch (the source reads them whole, peer-service.ts). */
export const BATCH_FILE_MAX_BYTES = 1 << 20;
/** Files per ReadFiles call at most (the source accepts 4096). */
export const BATCH_MAX_FILES = 512;
/** Bytes per ReadFiles call at most, so that one batch does not serialize a large share of the work. */
export const BATCH_MAX_BYTES = 32 << 20;
const renameAsync = promisify(rename);

/** Files of one batch being written at once. */
const WRITES_IN_FLIGHT = 8;

export interface BatchResult {
  /** Files the batch settled. */
  readonly outcomes: Map<SourceTarget, FileOutcome>;
  /** Files to download one by one (downloadFile), in batch order. */
  readonly retry: SourceTarget[];
}

/** Whether a file goes in a batch rather than streaming alone (see planBatches). */
export function isBatchable(target: SourceTarget, resumeMinBytes: number): boolean {
  return target.entry.size <= BATCH_FILE_MAX_BYTES && target.entry.size < resumeMinBytes;
}

/**
 * Splits files into those that stream alone, largest first, and batches of small ones: at most
 * BATCH_FILE_MAX_BYTES each, and below `resumeMinBytes` so that no file that could be resumed is
 * batched. Batches hold at most BATCH_MAX_FILES / BATCH_MAX_BYTES, and small files are spread
 * over at least `streams` batches so that the streams in flight share them.
 *
 * Small files are batched in the order given, which should be the listing's (the download phase
 * passes it): a listing names a directory's files together, so that a batch covers a few table
 * directories rather than a few files of hundreds, and each side resolves, creates and syncs a
 * directory once per batch (the source's path checker realpaths every directory a request
 * names, safe-path.ts).
 */
export function planBatches(
  files: readonly SourceTarget[],
  streams: number,
  resumeMinBytes: number,
): { readonly singles: SourceTarget[]; readonly batches: SourceTarget[][] } {
  const singles: SourceTarget[] = [];
  const small: SourceTarget[] = [];
  for (const t of files) (isBatchable(t, resumeMinBytes) ? small : singles).push(t);
  singles.sort((a, b) => b.entry.size - a.entry.size);
  const perBatch = Math.min(BATCH_MAX_FILES, Math.max(1, Math.ceil(small.length / Math.max(1, streams))));
  const batches: SourceTarget[][] = [];
  let current: SourceTarget[] = [];
  let bytes = 0;
  for (const t of small) {
    if (current.length > 0 && (current.length >= perBatch || bytes + t.entry.size > BATCH_MAX_BYTES)) {
      batches.push(current);
      current = [];
      bytes = 0;
    }
    current.push(t);
    bytes += t.entry.size;
  }
  if (current.length > 0) batches.push(current);
  return { singles, batches };
}

/** A file of the batch whose data came in several messages, while they arrive. */
interface Receiving {
  readonly chunks: Uint8Array[];
  bytes: number;
  readonly hasher: Hasher;
}

/**
 * Downloads one batch of small non-empty files (see planBatches). Resolves when every write it
 * started has finished and the written files are durable and in place.
 * `received` is called once the stream has ended (or broken) and every write has finished, before
 * the files are made durable: the caller may start another stream while this batch waits for the
 * disk.
 * @throws AgentError Cancelled when the signal aborts; every other failure ends up in `retry`.
 */
export async function downloadBatch(
  ctx: TransferContext,
  batch: readonly SourceTarget[],
  progress: TransferProgress,
  received?: () => void,
): Promise<BatchResult> {
  const outcomes = new Map<SourceTarget, FileOutcome>();
  const retry = new Set<SourceTarget>();
  const receiving = new Map<number, Receiving>();
  const writes = new Set<Promise<void>>();
  /** Files written under their temp names, not yet durable nor renamed. */
  const written: SourceTarget[] = [];
  const parents = new ParentCache();
  /** The event loop's turn that a synchronous write found due (SyncBudget.charge), awaited after the group. */
  let turn: Promise<void> | undefined;

  const settle = (target: SourceTarget, outcome: FileOutcome) => outcomes.set(target, outcome);
  const handBack = (target: SourceTarget, reason: string, level: "debug" | "warn" = "debug") => {
    ctx.logger[level]({ file: target.entry.fileUrl, err: reason }, "batched transfer failed; retrying the file alone");
    retry.add(target);
  };
  /** A file's last message has arrived: checks it against its trailer, then starts writing it. */
  const complete = (target: SourceTarget, chunks: readonly Uint8Array[], bytes: number, digest: string, trailer: ReadFileTrailer) => {
    if (trailer.size !== target.entry.size || trailer.lastModifiedTime !== target.entry.lastModifiedTime) {
      settle(target, { kind: "changed", reason: `${target.entry.fileUrl} changed at the source during the transfer` });
      return;
    }
    if (bytes !== target.entry.size || digest !== trailer.xxh64) {
      // Corruption in transit is worth an operator's attention.
      handBack(target, `XXH64 mismatch for ${target.entry.fileUrl}: received ${bytes} bytes hashing to ${digest}, source has ${trailer.xxh64}`, "warn");
      return;
    }
    const dir = parents.of(target.absPath);
    if (ctx.budget.fast && ctx.knownDirs.has(dir)) {
      // The usual case, written here and now, without a promise of its own (see the header).
      const started = performance.now();
      try {
        writeTempSync(target, chunks);
        written.push(target);
      } catch (err) {
        if (!ctx.signal.aborted) handBack(target, AgentError.from(err).message, "warn");
      }
      const due = ctx.budget.charge(started);
      turn ??= due;
      return;
    }
    const write: Promise<void> = writeTemp(ctx, target, dir, chunks).then(
      () => void written.push(target),
      (err: unknown) => {
        if (!ctx.signal.aborted) handBack(target, AgentError.from(err).message, "warn");
      },
    );
    writes.add(write);
    void write.finally(() => writes.delete(write));
  };

  const stream = ctx.peer.readFiles(
    batch.map((t) => ({ fileUrl: t.entry.fileUrl, offset: 0, expectedSize: t.entry.size, expectedLastModifiedTime: t.entry.lastModifiedTime })),
    ctx.signal,
  );
  const groups = abortable(stream, ctx.signal);
  try {
    for (;;) {
      let next: IteratorResult<readonly BatchReadMessage[]>;
      try {
        next = await groups.next();
      } catch (err) {
        if (ctx.signal.aborted) throw err;
        // The stream broke: whatever it did not settle is retried file by file.
        ctx.logger.debug({ err: (err as Error).message, files: batch.length }, "ReadFiles stream failed");
        break;
      }
      if (next.done) break;
      const group = next.value;
      for (let m = 0; m < group.length; m++) {
        const message = group[m]!;
        const target = batch[message.index]!;
        if (outcomes.has(target) || retry.has(target)) {
          handBack(target, `ReadFiles sent more for ${target.entry.fileUrl} after it ended`, "warn");
          continue;
        }
        if ("error" in message) {
          receiving.delete(message.index);
          const { error } = message;
          if (error.code === "NotFound") settle(target, { kind: "vanished" });
          else if (error.code === "Aborted") settle(target, { kind: "changed", reason: error.message });
          else handBack(target, error.message);
          continue;
        }
        let file = receiving.get(message.index);
        if ("data" in message) {
          const { data } = message;
          const after = group[m + 1];
          if (!file && after?.index === message.index && "trailer" in after) {
            // The usual case: the whole file in one message, its trailer right behind it.
            m++;
            progress.addTransferred(data.byteLength);
            complete(target, [data], data.byteLength, xxh64Of(data), after.trailer);
            continue;
          }
          if (!file) {
            file = { chunks: [], bytes: 0, hasher: createHasher("XXH64") };
            receiving.set(message.index, file);
          }
          file.bytes += data.byteLength;
          if (file.bytes > target.entry.size) {
            receiving.delete(message.index);
            handBack(target, `source sent more than the listed ${target.entry.size} bytes of ${target.entry.fileUrl}`, "warn");
            continue;
          }
          file.chunks.push(data);
          file.hasher.update(data);
          progress.addTransferred(data.byteLength);
          continue;
        }
        receiving.delete(message.index);
        if (file) complete(target, file.chunks, file.bytes, file.hasher.digest(), message.trailer);
        else complete(target, [], 0, xxh64Of(EMPTY), message.trailer);
      }
      if (turn) {
        await turn;
        turn = undefined;
      }
      if (writes.size >= WRITES_IN_FLIGHT) await Promise.race(writes);
    }
  } finally {
    groups.close();
    await Promise.all(writes);
    if (ctx.signal.aborted) {
      // Cancelled before they were durable, so never renamed: the temp files go.
      await Promise.all(written.map((t) => rm(writePathOf(t), { force: true }).catch(() => undefined)));
    }
  }
  throwIfAborted(ctx.signal);
  received?.();
  await putInPlace(ctx, written, parents, settle, handBack);
  throwIfAborted(ctx.signal);
  // Files the stream never finished (it broke, or it ended early).
  for (const target of batch) {
    if (!outcomes.has(target) && !retry.has(target)) retry.add(target);
  }
  return { outcomes, retry: batch.filter((t) => retry.has(t)) };
}

const EMPTY = new Uint8Array(0);

/** Where a batched file is written: its temp name, or its own name inside a staging directory. */
function writePathOf(target: SourceTarget): string {
  return target.staged ? target.absPath : tempPathFor(target.absPath);
}

/**
 * Makes the written files of a batch durable at once, then renames each temp file into place;
 * either way each is then settled "downloaded". If they cannot be made durable, every one goes
 * back for a retry alone.
 */
async function putInPlace(
  ctx: TransferContext,
  group: readonly SourceTarget[],
  parents: ParentCache,
  settle: (target: SourceTarget, outcome: FileOutcome) => void,
  handBack: (target: SourceTarget, reason: string, level?: "debug" | "warn") => void,
): Promise<void> {
  if (group.length === 0) return;
  const temps = group.map(writePathOf);
  try {
    await syncFiles(temps);
  } catch (err) {
    await Promise.all(temps.map((temp) => rm(temp, { force: true }).catch(() => undefined)));
    for (const t of group) handBack(t, `cannot make the written file durable: ${(err as Error).message}`, "warn");
    return;
  }
  for (const [i, target] of group.entries()) {
    if (target.staged) {
      settle(target, { kind: "downloaded", size: target.entry.size, resumedFrom: 0 });
      continue;
    }
    const temp = temps[i]!;
    try {
      if (ctx.budget.fast) {
        // No promise per file while renames are cheap: the event loop's turn only when due.
        const started = performance.now();
        try {
          renameSync(temp, target.absPath);
        } finally {
          const turn = ctx.budget.charge(started);
          if (turn) await turn;
        }
      } else {
        await renameAsync(temp, target.absPath);
      }
      ctx.touchedDirs.add(parents.of(target.absPath));
      settle(target, { kind: "downloaded", size: target.entry.size, resumedFrom: 0 });
    } catch (err) {
      await rm(temp, { force: true }).catch(() => undefined);
      handBack(target, AgentError.from(err).message, "warn");
    }
  }
}

/**
 * Writes a checked file under its temp name (writePathOf), in `dir`, and gives it the source mtime;
 * putInPlace makes it durable and renames it. The whole file (create, write, mtime, close) is
 * one synchronous call while ctx.budget allows: a page-cache write of a small file, judged slow
 * or not as a whole.
 */
async function writeTemp(ctx: TransferContext, target: SourceTarget, dir: string, chunks: readonly Uint8Array[]): Promise<void> {
  if (!ctx.knownDirs.has(dir)) await ensureDirectory(ctx, dir);
  const temp = writePathOf(target);
  const seconds = exactSeconds(target.entry.lastModifiedTime);
  try {
    await ctx.budget.run(
      () => writeFileSyncWithTime(temp, chunks, seconds),
      () => writeFileWithTime(temp, chunks, seconds),
    );
  } catch (err) {
    await rm(temp, { force: true, recursive: true }).catch(() => undefined);
    throw err;
  }
}

/** writeTemp with synchronous calls, for a directory known to exist; a file it fails to write is removed. */
function writeTempSync(target: SourceTarget, chunks: readonly Uint8Array[]): void {
  const temp = writePathOf(target);
  try {
    writeFileSyncWithTime(temp, chunks, exactSeconds(target.entry.lastModifiedTime));
  } catch (err) {
    try {
      rmSync(temp, { force: true, recursive: true });
    } catch {
      // Left for the next pass's CLEANING, like any temp file without a resume record.
    }
    throw err;
  }
}

/** Creates or truncates `file` ("w": batched files are small enough never to be resumed), writes `chunks`, sets its times. */
function writeFileSyncWithTime(file: string, chunks: readonly Uint8Array[], seconds: number): void {
  const fd = openSync(file, "w", 0o644);
  try {
    let position = 0;
    for (const chunk of chunks) {
      for (let done = 0; done < chunk.byteLength; ) done += writeSync(fd, chunk, done, chunk.byteLength - done, position + done);
      position += chunk.byteLength;
    }
    futimesSync(fd, seconds, seconds);
  } finally {
    closeSync(fd);
  }
}

/** writeFileSyncWithTime through the thread pool. */
async function writeFileWithTime(file: string, chunks: readonly Uint8Array[], seconds: number): Promise<void> {
  const handle = await open(file, "w", 0o644);
  try {
    let position = 0;
    for (const chunk of chunks) {
      for (let done = 0; done < chunk.byteLength; ) {
        done += (await handle.write(chunk, done, chunk.byteLength - done, position + done)).bytesWritten;
      }
      position += chunk.byteLength;
    }
    await handle.utimes(seconds, seconds);
  } finally {
    await handle.close();
  }
}
