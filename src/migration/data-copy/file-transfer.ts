/**
 * Puts one shortlisted entry in place (habit 6: temp name -> hash while writing -> verify -> rename).
 *
 *   peer.readFile(offset) --chunks--> SequentialWriter (O_DIRECT) --+--> XXH64 (prefix from disk first)
 *                                                                   |
 *   trailer: size, mtime, xxh64 of [0,size) ------------------------+--> compare --> commit: mtime, fsync
 *                                                                            --> rename over target
 *
 * Memory stays flat whatever the file size: each chunk (512 KiB from the source,
 * READ_CHUNK_BYTES) is copied into the writer's staging block and hashed, then dropped; nothing
 * is concatenated. Whether a temp file is continued or deleted is decided by the resume policy
 * in resume-store.ts.
 */
import { mkdirSync } from "node:fs";
import { mkdir, open, rename, rm } from "node:fs/promises";
import path from "node:path";
import type { SidecarClientConfig } from "../../config/schema.js";
import { createHasher, hashFileRange } from "../../digest/digest.js";
import { AgentError, throwIfAborted } from "../../errors.js";
import { setHandleMtimeMs, statOrUndefined } from "../../fs/mtime.js";
import { openSequentialWriter } from "../../fs/sequential-writer.js";
import type { SyncBudget } from "../../fs/sync-budget.js";
import { tempPathFor } from "../../fs/temp-name.js";
import type { Logger } from "../../log.js";
import type { ReadFileMessage, ReadFileTrailer, SourcePeer } from "../peer.js";
import { withRetries } from "../retry.js";
import type { SourceTarget } from "./plan.js";
import { isResumable, type ResumeStore } from "./resume-store.js";

export interface TransferContext {
  readonly peer: SourcePeer;
  /** Aborts every stream and wait of the task. */
  readonly signal: AbortSignal;
  readonly retry: SidecarClientConfig;
  readonly logger: Logger;
  readonly resume: ResumeStore;
  /** Files at least this large keep a resume record (see resume-store.ts). */
  readonly resumeMinBytes: number;
  /** Directories that received a rename; the download phase makes those renames durable at once at its end. */
  readonly touchedDirs: Set<string>;
  /** Directories known to exist in this pass (ensureDirectory), so each costs one mkdir. */
  readonly knownDirs: Set<string>;
  /** Whether small-file calls may run synchronously (sync-budget.ts); one per pass. */
  readonly budget: SyncBudget;
}

/** mkdir -p, once per directory and pass. */
export async function ensureDirectory(ctx: Pick<TransferContext, "knownDirs" | "budget">, dir: string): Promise<void> {
  if (ctx.knownDirs.has(dir)) return;
  await ctx.budget.run(
    () => mkdirSync(dir, { recursive: true }),
    () => mkdir(dir, { recursive: true }),
  );
  ctx.knownDirs.add(dir);
}

/** Where a transfer reports its bytes (OperationStatus). */
export interface TransferProgress {
  /** Bytes received from the source and written. */
  addTransferred(bytes: number): void;
  /** Bytes on disk for files not yet complete: +prefix on resume, -position when a temp is dropped or done. */
  adjustInFlight(bytes: number): void;
}

export type FileOutcome =
  /** Renamed into place with the source's bytes and mtime. */
  | { readonly kind: "downloaded"; readonly size: number; readonly resumedFrom: number }
  /** The source no longer has the file (NotFound); the next pass's CLEANING settles it. */
  | { readonly kind: "vanished" }
  /** The file changed at the source during the pass (Aborted); the next pass re-lists it. */
  | { readonly kind: "changed"; readonly reason: string };

/** Files at least this large are written around the page cache (O_DIRECT, fs/sequential-writer.ts). */
export const DIRECT_MIN_BYTES = 1 << 20;

/** An error raised by the peer's stream, as opposed to a local one. */
class PeerFailure extends Error {
  constructor(readonly error: AgentError) {
    super(error.message);
  }
}

/**
 * When to call a download's `nearEnd`: once at most `tailBytes` of the file are left, or more
 * where the link needs it. The next file's first byte takes about as long as this one's did (a
 * round trip plus the source's open and first read), so the tail grows to what arrives in 1.5×
 * that wait at this file's rate so far, up to `maxTailBytes`.
 */
export interface NearEnd {
  readonly tailBytes: number;
  readonly maxTailBytes?: number;
  readonly reached: () => void;
}

/** Bytes received before the rate is trusted to size the tail. */
const TAIL_RATE_SAMPLE_BYTES = 4 << 20;

/** The tail for a file whose first byte came `firstByteWaitMs` after its request, given `bytes` received in `ms` since. */
export function adaptiveTailBytes(nearEnd: NearEnd, firstByteWaitMs: number, bytes: number, ms: number): number {
  const max = Math.max(nearEnd.tailBytes, nearEnd.maxTailBytes ?? nearEnd.tailBytes);
  if (!(bytes >= TAIL_RATE_SAMPLE_BYTES && ms > 0 && firstByteWaitMs > 0)) return nearEnd.tailBytes;
  return Math.min(max, Math.max(nearEnd.tailBytes, Math.ceil((1.5 * bytes * firstByteWaitMs) / ms)));
}

/**
 * Downloads one non-empty FILE entry to its local path. Transient faults and corrupted streams
 * are retried with `ctx.retry` backoff.
 *
 * `nearEnd.reached` is called once, as soon as at most the tail of the file is left to receive
 * (at once for a file no bigger than `tailBytes`): the caller may start the next file's stream
 * then, so that its request, round trip and setup overlap this one's last bytes and commit. A
 * retry after that (rare: a transient fault) streams without calling it again.
 * @throws AgentError on a failure that retries did not cure (the file counts as a download
 * failure), Cancelled when the task's signal aborts.
 */
export async function downloadFile(
  ctx: TransferContext,
  target: SourceTarget,
  progress: TransferProgress,
  nearEnd?: NearEnd,
): Promise<FileOutcome> {
  const { entry, absPath } = target;
  const temp = tempPathFor(absPath);
  const keepsRecord = entry.size >= ctx.resumeMinBytes;
  // Bytes of this file currently counted as in flight.
  let position = 0;
  const moveTo = (p: number) => {
    progress.adjustInFlight(p - position);
    position = p;
  };
  let tailReached = false;
  // This attempt's stream: when it was requested, and when and where its first data came.
  let requestedAt = 0;
  let firstDataAt = 0;
  let firstDataPosition = 0;
  const checkTail = () => {
    if (tailReached || !nearEnd) return;
    const tail =
      firstDataAt === 0
        ? nearEnd.tailBytes
        : adaptiveTailBytes(nearEnd, firstDataAt - requestedAt, position - firstDataPosition, performance.now() - firstDataAt);
    if (entry.size - position <= tail) {
      tailReached = true;
      nearEnd.reached();
    }
  };
  // Resume records are an optimization: failing to read or write one never fails the file.
  const forgetRecord = async () => {
    if (!keepsRecord) return;
    await ctx.resume
      .delete(absPath)
      .catch((err: unknown) => ctx.logger.warn({ err: (err as Error).message }, "cannot delete resume record"));
  };
  const dropTemp = async () => {
    moveTo(0);
    await rm(temp, { force: true, recursive: true });
    await forgetRecord();
  };

  const attempt = async (): Promise<FileOutcome> => {
    await ensureDirectory(ctx, path.dirname(absPath));
    let offset = 0;
    const existing = await statOrUndefined(temp);
    if (existing) {
      const record = keepsRecord ? await ctx.resume.get(absPath) : undefined;
      if (existing.isFile() && isResumable(record, Number(existing.size), entry)) offset = Number(existing.size);
      else await rm(temp, { force: true, recursive: true });
    }
    if (offset === 0 && keepsRecord) {
      await ctx.resume
        .put({ target: absPath, fileUrl: entry.fileUrl, size: entry.size, lastModifiedTime: entry.lastModifiedTime })
        .catch((err: unknown) => ctx.logger.warn({ err: (err as Error).message }, "cannot write resume record"));
    }
    const hasher = createHasher("XXH64");
    const writer = await openSequentialWriter(temp, { keepBytes: offset, direct: entry.size >= DIRECT_MIN_BYTES });
    let trailer: ReadFileTrailer | undefined;
    let committed = false;
    try {
      // O_DIRECT resumes at a block boundary, at most DIRECT_ALIGN bytes before the temp's end.
      offset = writer.position;
      if (offset > 0) {
        await hashFileRange(temp, [hasher], 0, offset, ctx.signal);
        ctx.logger.debug({ file: entry.fileUrl, offset }, "resuming download");
      }
      moveTo(offset);
      firstDataAt = 0;
      checkTail();
      requestedAt = performance.now();
      const stream = ctx.peer.readFile(
        { fileUrl: entry.fileUrl, offset, expectedSize: entry.size, expectedLastModifiedTime: entry.lastModifiedTime },
        ctx.signal,
      );
      const messages = abortable(stream, ctx.signal);
      try {
        for (;;) {
          const next = await messages.next();
          if (next.done) break;
          const message: ReadFileMessage = next.value;
          if ("trailer" in message) {
            trailer = message.trailer;
            continue;
          }
          const data = message.data;
          if (firstDataAt === 0) {
            firstDataAt = performance.now();
            firstDataPosition = position;
          }
          if (trailer) throw new AgentError("DataLoss", `data after the trailer for ${entry.fileUrl}`);
          if (position + data.byteLength > entry.size) {
            throw new AgentError("DataLoss", `source sent more than the listed ${entry.size} bytes of ${entry.fileUrl}`);
          }
          // The writer copies the chunk (or queues it) before its first wait; hashing the same
          // read-only bytes meanwhile overlaps the previous block's write.
          const written = writer.write(data);
          hasher.update(data);
          await written;
          position += data.byteLength;
          progress.addTransferred(data.byteLength);
          checkTail();
        }
      } finally {
        messages.close();
      }
      if (!trailer) throw new AgentError("Unavailable", `stream of ${entry.fileUrl} ended without a trailer`);
      if (trailer.size !== entry.size || trailer.lastModifiedTime !== entry.lastModifiedTime) {
        throw new PeerFailure(new AgentError("Aborted", `${entry.fileUrl} changed at the source during the transfer`));
      }
      if (position !== entry.size) {
        throw new AgentError("DataLoss", `stream of ${entry.fileUrl} ended at byte ${position} of ${entry.size}`);
      }
      const digest = hasher.digest();
      if (digest !== trailer.xxh64) {
        throw new AgentError("DataLoss", `XXH64 mismatch for ${entry.fileUrl}: wrote ${digest}, source has ${trailer.xxh64}`);
      }
      // Data, size and mtime are durable before the rename.
      await writer.commit(entry.lastModifiedTime);
      committed = true;
    } finally {
      // An interrupted download keeps every byte it received, for resuming (resume-store.ts).
      if (!committed) await writer.flush().catch(() => undefined);
      await writer.close();
    }
    throwIfAborted(ctx.signal);
    await rename(temp, absPath);
    await forgetRecord();
    ctx.touchedDirs.add(path.dirname(absPath));
    moveTo(0);
    return { kind: "downloaded", size: entry.size, resumedFrom: offset };
  };

  try {
    return await withRetries(
      async () => {
        try {
          return await attempt();
        } catch (err) {
          if (ctx.signal.aborted) throw AgentError.from(err);
          const fromPeer = err instanceof PeerFailure;
          const error = fromPeer ? err.error : AgentError.from(err);
          if (fromPeer && error.code === "NotFound") {
            await dropTemp();
            return { kind: "vanished" };
          }
          if (fromPeer && error.code === "Aborted") {
            await dropTemp();
            return { kind: "changed", reason: error.message };
          }
          // A corrupted stream taints the whole temp file: its prefix cannot be trusted either.
          if (error.code === "DataLoss") await dropTemp();
          throw error;
        }
      },
      ctx.retry,
      {
        signal: ctx.signal,
        onRetry: (err, n, delayMs) =>
          // Corruption in transit is worth an operator's attention; other retries are routine.
          ctx.logger[err.code === "DataLoss" ? "warn" : "debug"](
            { file: entry.fileUrl, code: err.code, err: err.message, delayMs },
            `retry ${n}/${ctx.retry.maxRetries} of ${entry.fileUrl}`,
          ),
      },
    );
  } finally {
    moveTo(0);
  }
}

/** A peer stream read with a cancel that wins at once, even over a peer that ignores it. */
export interface AbortableStream<T> {
  /**
   * The next message.
   * @throws AgentError Cancelled as soon as the signal aborts; a PeerFailure when the stream fails.
   */
  next(): Promise<IteratorResult<T>>;
  /** Stops listening to the signal, and cancels the stream unless it ended. Call once, always. */
  close(): void;
}

/**
 * Wraps a peer stream; one abort listener serves every message. (Racing each next() against
 * one long-lived abort promise would leak: every race leaves a reaction on that promise that
 * holds its message, up to 512 KiB, until the stream ends.)
 */
export function abortable<T>(stream: AsyncIterable<T>, signal: AbortSignal): AbortableStream<T> {
  const iterator = stream[Symbol.asyncIterator]();
  /** Rejects the next() in progress, if any. */
  let rejectPending: ((err: AgentError) => void) | undefined;
  const onAbort = () => rejectPending?.(new AgentError("Cancelled", "operation cancelled"));
  signal.addEventListener("abort", onAbort, { once: true });
  let ended = false;
  return {
    next() {
      return new Promise<IteratorResult<T>>((resolve, reject) => {
        throwIfAborted(signal); // inside the executor: becomes the rejection
        rejectPending = reject;
        iterator.next().then(
          (result) => {
            rejectPending = undefined;
            if (result.done) ended = true;
            resolve(result);
          },
          (err: unknown) => {
            rejectPending = undefined;
            // After an abort won, this rejection has no one left to tell.
            reject(new PeerFailure(AgentError.from(err, "Unavailable")));
          },
        );
      });
    },
    close() {
      signal.removeEventListener("abort", onAbort);
      // The source sees a cancel when this side stopped early.
      if (!ended) void iterator.return?.().catch(() => undefined);
    },
  };
}

/** Creates an empty FILE entry with the source's mtime (temp name, then rename; no transfer). */
export async function createEmptyFile(ctx: Pick<TransferContext, "touchedDirs" | "knownDirs" | "budget">, target: SourceTarget): Promise<void> {
  await ensureDirectory(ctx, path.dirname(target.absPath));
  const temp = tempPathFor(target.absPath);
  const handle = await open(temp, "w", 0o644);
  try {
    await setHandleMtimeMs(handle, target.entry.lastModifiedTime);
  } finally {
    await handle.close();
  }
  await rename(temp, target.absPath);
  ctx.touchedDirs.add(path.dirname(target.absPath));
}

