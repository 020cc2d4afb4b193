/**
 * The source side of the peer plane: livemigration.v1.PeerService as a Connect-style
 * ServiceImpl, mounted on grpc-js by definition.ts. Every RPC picks the instance from the
 * call's :authority (ctx.requestHeader "host") and requires a source instance (NOT_FOUND
 * otherwise). ReadFile and DigestFiles also refuse a COMPLETED instance (FAILED_PRECONDITION)
 * and count against the shared RequestLimiter (max_concurrent_file_requests).
 */
import { closeSync, fstatSync, readSync } from "node:fs";
import { open, type FileHandle } from "node:fs/promises";
import { setImmediate as setImmediatePromise } from "node:timers/promises";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import { DigestAlgorithm } from "../../gen/livemigration/v1/common_pb.js";
import {
  type DigestFilesResponse,
  type PeerService,
  type PeerServiceListFilesResponseSchema,
  type ReadFileResponse,
  type ReadFilesPiece,
  type ReadFilesResponse,
} from "../../gen/livemigration/v1/peer_pb.js";
import { createHasher, digestFile, digestOpenFileSync, type Hasher, SYNC_DIGEST_MAX_BYTES, xxh64Of } from "../digest/digest.js";
import { AgentError, throwIfAborted } from "../errors.js";
import { walkRoots } from "../fs/list.js";
import { mtimeMsOf } from "../fs/mtime.js";
import { openReadableFileSync, type ReadableFile, type RealDirCache, resolveFileUrl, resolveReadableFile } from "../fs/safe-path.js";
import { SyncBudget } from "../fs/sync-budget.js";
import type { InstanceContext, InstanceRegistry } from "../instance/registry.js";
import { requireNotCompleted, requireSource } from "../migration/guards.js";
import type { DigestResult, ReadFileRequest } from "../migration/peer.js";
import type { RequestLimiter } from "../migration/request-limiter.js";
import type { DigestAlgorithmName } from "../migration/types.js";
import { allocChunk, trimChunk } from "./codec.js";
import {
  fromDigestAlgorithm,
  fromReadFileRequest,
  toDigestFilesResponse,
  toInstanceFile,
  toReadFileData,
  toReadFileTrailer,
  toReadFilesPiece,
  toReadFilesResponse,
} from "./wire.js";

/**
 * Bytes per ReadFile data message (512 KiB), well under the 64 MiB message limit. The
 * destination's grpc-js assembles each message from 16 KiB HTTP/2 frames into one buffer and
 * keeps up to two per stream (main.ts); halving them from 1 MiB lowered the large copy's
 * destination peak by ~10 MB at the same speed. Copies of the large benchmark tree into fresh
 * destinations, interleaved (twenty-seventh session, `npm run ab --profile large`): behind the
 * 10 ms delay proxy, eight rounds, 9.60 s against 9.95 (faster in four), destination CPU 5.79 s
 * against 6.80, peak 177 (168-188) MB against 188 (180-194), and in an earlier set of six 11.01
 * s against 11.07, 179 (171-195) MB against 193 (188-203); on loopback, two sets of six and
 * eight rounds, 7.95 and 8.72 s against 8.43 and 8.32 (within the machine's swings), peak 180
 * and 174 MB against 185 and 184. 256 KiB lowered the peak a little more (175 MB) but cost the
 * source CPU and was slower behind the proxy (12.9 s).
 */
export const READ_CHUNK_BYTES = 512 << 10;
/** Files per ReadFiles request at most. */
export const READ_FILES_MAX_FILES = 4096;
/** A ReadFiles stream reads at most this many files ahead of the one it sends… */
const READ_AHEAD_FILES = 16;
/** …and at most this many of their bytes (each file counts its size, up to one chunk). */
const READ_AHEAD_BYTES = 4 << 20;
/**
 * A ReadFiles message packs ready files until it carries this much data (a file bigger than
 * this still goes whole, in one message). The receiving grpc-js assembles every message into one
 * buffer and keeps up to two of them per stream (main.ts): at 256 KiB fewer survive into V8's
 * old generation than at 1 MiB, so a copy of the small benchmark tree into a fresh destination
 * took 3-4 mark-compacts instead of 4-5 and 0.3-0.4 s less destination CPU (3.9-5.2 s against
 * 4.3-5.8 s), and was faster in 8 of 10 interleaved rounds (4.1-6.0 s against 4.4-5.9 s).
 * 128 and 512 KiB measured like 256.
 */
export const PACK_BYTES = 256 << 10;
/**
 * ReadFiles reads files up to this size whole, synchronously while that stays cheap
 * (sync-budget.ts): 1 MiB, the largest file a destination batches, ~0.1-0.3 ms from the page
 * cache. A bigger limit than one would think: the asynchronous path costs six thread-pool hops
 * per file (realpath, stat, open, read, stat, close), and on the reference VM each hop cost the
 * event loop ~0.2 ms.
 */
const SYNC_READ_MAX_BYTES = 1 << 20;
/** Listing entries per ListFiles message. */
export const LIST_BATCH_ENTRIES = 1000;
/** Digest results per DigestFiles message at most (~100 bytes each). */
const DIGEST_PACK_RESULTS = 1024;
/** How long one DigestFiles file waits for a limiter permit before it is reported Unavailable (ms). */
export const DEFAULT_DIGEST_PERMIT_WAIT_MS = 5_000;
/** Poll interval while a DigestFiles file waits for a permit (ms). */
const PERMIT_POLL_MS = 25;

export interface PeerServiceOptions {
  readonly registry: InstanceRegistry;
  /** Shared with the REST file route: one permit per ReadFile stream, one per file being digested. */
  readonly limiter: RequestLimiter;
  /** Bounded wait for a permit per DigestFiles file, in ms (default 5000). */
  readonly digestPermitWaitMs?: number;
}

/** Builds the PeerService implementation over the agent's instances. */
export function createPeerService(options: PeerServiceOptions): ServiceImpl<typeof PeerService> {
  const { registry, limiter } = options;
  const permitWaitMs = options.digestPermitWaitMs ?? DEFAULT_DIGEST_PERMIT_WAIT_MS;

  const sourceOf = async (ctx: HandlerContext): Promise<InstanceContext> => {
    const instance = await registry.resolve(ctx.requestHeader.get("host") ?? undefined);
    requireSource(instance);
    return instance;
  };

  return {
    async *listFiles(request, ctx): AsyncGenerator<MessageInitShape<typeof PeerServiceListFilesResponseSchema>> {
      const instance = await sourceOf(ctx);
      // Each batch goes out as soon as the walk has found it.
      if (request.digestAlgorithm === DigestAlgorithm.UNSPECIFIED) {
        for await (const batch of walkRoots(instance.roots, instance.exclusions, LIST_BATCH_ENTRIES)) {
          throwIfAborted(ctx.signal);
          yield { files: batch.map(toInstanceFile) };
        }
        return;
      }
      // A verification's listing reads file contents: DigestFiles's rules.
      const digestAlgorithm = fromDigestAlgorithm(request.digestAlgorithm);
      await requireNotCompleted(instance);
      const release = limiter.acquire();
      try {
        for await (const batch of walkRoots(instance.roots, instance.exclusions, LIST_BATCH_ENTRIES, { digestAlgorithm })) {
          throwIfAborted(ctx.signal);
          yield { files: batch.map(toInstanceFile), digests: batch.map((entry) => entry.digest ?? "") };
        }
      } finally {
        release();
      }
    },

    async *readFile(request, ctx): AsyncGenerator<ReadFileResponse> {
      const instance = await sourceOf(ctx);
      await requireNotCompleted(instance);
      const release = limiter.acquire();
      try {
        yield* readFileChunks(instance, fromReadFileRequest(request), ctx.signal);
      } finally {
        release();
      }
    },

    async *readFiles(request, ctx): AsyncGenerator<ReadFilesResponse> {
      const instance = await sourceOf(ctx);
      await requireNotCompleted(instance);
      if (request.files.length > READ_FILES_MAX_FILES) {
        throw new AgentError("InvalidArgument", `at most ${READ_FILES_MAX_FILES} files per ReadFiles request, got ${request.files.length}`);
      }
      const release = limiter.acquire();
      try {
        yield* readFilesAhead(instance, request.files.map(fromReadFileRequest), ctx.signal);
      } finally {
        release();
      }
    },

    async *digestFiles(request, ctx): AsyncGenerator<DigestFilesResponse> {
      const instance = await sourceOf(ctx);
      await requireNotCompleted(instance);
      const algorithm = fromDigestAlgorithm(request.algorithm);
      if (request.maxConcurrency < 1) {
        throw new AgentError("InvalidArgument", `max_concurrency must be >= 1, got ${request.maxConcurrency}`);
      }
      const concurrency = Math.min(request.maxConcurrency, limiter.limit, Math.max(1, request.fileUrls.length));
      for await (const results of digestAll(instance, algorithm, request.fileUrls, concurrency, limiter, permitWaitMs, ctx.signal)) {
        yield toDigestFilesResponse(results);
      }
    },
  };
}

/** @throws AgentError Aborted when the open file is not the one the caller listed. */
function checkUnchangedSinceListing(request: ReadFileRequest, size: number, mtime: number): void {
  if (
    (request.expectedSize !== -1 && request.expectedSize !== size) ||
    (request.expectedLastModifiedTime !== -1 && request.expectedLastModifiedTime !== mtime)
  ) {
    throw new AgentError("Aborted", `file changed since listing: ${request.fileUrl}`);
  }
}

function changedDuringRead(fileUrl: string): AgentError {
  return new AgentError("Aborted", `file changed during read: ${fileUrl}`);
}

/**
 * The messages of one ReadFile: data chunks from `offset`, then the trailer with the XXH64 of
 * the whole file. Everything is read through one open descriptor, so the bytes come from one
 * inode even if the path is replaced meanwhile; in-place changes (append, truncate, rewrite
 * that moves the mtime) show in the descriptor's fstat after the last chunk.
 * @throws AgentError Aborted "file changed since listing: <url>" / "file changed during read: <url>",
 * OutOfRange (offset past the end), InvalidArgument (negative offset), the path checker's errors.
 */
async function* readFileChunks(
  instance: InstanceContext,
  request: ReadFileRequest,
  signal: AbortSignal,
): AsyncGenerator<ReadFileResponse> {
  const { fileUrl, offset } = request;
  if (!Number.isSafeInteger(offset) || offset < 0) throw new AgentError("InvalidArgument", `invalid offset ${offset} for ${fileUrl}`);
  const file = await resolveReadableFile(resolveFileUrl(instance.roots, fileUrl), instance.exclusions);
  let handle: FileHandle;
  try {
    handle = await open(file.realPath, "r");
  } catch (err) {
    throw AgentError.from(err);
  }
  try {
    // The descriptor's own attributes are the baseline: the path may have been replaced since the check.
    const before = await handle.stat({ bigint: true });
    const size = Number(before.size);
    const mtime = mtimeMsOf(before);
    checkUnchangedSinceListing(request, size, mtime);
    if (offset > size) throw new AgentError("OutOfRange", `offset ${offset} is past the end of ${fileUrl} (${size} bytes)`);

    const hasher = createHasher("XXH64");
    if (offset > 0) await hashPrefix(handle, hasher, offset, signal, fileUrl);
    const fd = handle.fd;
    // Chunks are read synchronously while that stays cheap (sync-budget.ts): from the page cache
    // a 1 MiB read takes ~0.1-0.3 ms, about what handing it to the thread pool costs the event
    // loop alone, and the pool thread's wake-up and copy come on top. Large copies of the
    // benchmark tree, interleaved against reads through the pool: source CPU 3.2-3.8 s against
    // 3.3-4.0 s (eight rounds), copies within noise (median 5.79 against 5.88 s).
    const budget = new SyncBudget();
    let position = offset;
    while (position < size) {
      throwIfAborted(signal);
      // A fresh buffer per chunk: grpc-js may serialize a buffered message after we read the next one.
      const chunk = allocChunk(Math.min(READ_CHUNK_BYTES, size - position));
      const at = position;
      const bytesRead = await budget.run(
        () => readSync(fd, chunk, 0, chunk.length, at),
        async () => (await handle.read(chunk, 0, chunk.length, at)).bytesRead,
      );
      if (bytesRead === 0) throw changedDuringRead(fileUrl);
      const data = trimChunk(chunk, bytesRead);
      hasher.update(data);
      position += bytesRead;
      yield toReadFileData(data);
    }
    const after = await handle.stat({ bigint: true });
    if (Number(after.size) !== size || mtimeMsOf(after) !== mtime) throw changedDuringRead(fileUrl);
    yield toReadFileTrailer({ xxh64: hasher.digest(), size, lastModifiedTime: mtime });
  } finally {
    await handle.close();
  }
}

/** One file of a ReadFiles stream, read ahead of its turn. */
interface ReadAhead {
  /** The messages read so far: the whole file unless `rest` is set. */
  readonly head: ReadFileResponse[];
  /** The open remainder of a file bigger than one chunk, streamed when its turn comes. */
  readonly rest?: AsyncGenerator<ReadFileResponse>;
  /** What ended the file early (after the messages in `head`). */
  readonly error?: AgentError;
}

/** Reads a file's messages up to its trailer, or up to one chunk of data for a bigger file. */
async function readAhead(file: AsyncGenerator<ReadFileResponse>): Promise<ReadAhead> {
  const head: ReadFileResponse[] = [];
  let bytes = 0;
  try {
    for (;;) {
      const next = await file.next();
      if (next.done) return { head };
      head.push(next.value);
      if (next.value.payload.case === "data") {
        bytes += next.value.payload.value.byteLength;
        if (bytes >= READ_CHUNK_BYTES) return { head, rest: file };
      }
    }
  } catch (err) {
    return { head, error: AgentError.from(err) };
  }
}

/**
 * A small file read whole with synchronous calls (sync-budget.ts): the same checks, errors and
 * messages as readFileChunks from offset 0, without a thread-pool round trip per call, nor a
 * promise per file (readFilesAhead charges the budget). Never throws: a failure is the result's
 * error. Small-tree copies, two sets of ten interleaved rounds against an async function per
 * file: source CPU 0.99-1.04 s against 1.05-1.14 s, copies 2.39-2.43 s against 2.48-2.49 (medians).
 */
function readWholeSync(instance: InstanceContext, request: ReadFileRequest, realDirs: RealDirCache): ReadAhead {
  const { fileUrl } = request;
  try {
    const { fd, size, lastModifiedTime: mtime } = openReadableFileSync(resolveFileUrl(instance.roots, fileUrl), instance.exclusions, realDirs);
    try {
      checkUnchangedSinceListing(request, size, mtime);
      const data = Buffer.allocUnsafe(size);
      for (let position = 0; position < size; ) {
        const bytesRead = readSync(fd, data, position, size - position, position);
        if (bytesRead === 0) throw changedDuringRead(fileUrl);
        position += bytesRead;
      }
      const after = fstatSync(fd, { bigint: true });
      if (Number(after.size) !== size || mtimeMsOf(after) !== mtime) throw changedDuringRead(fileUrl);
      // One call for bytes held whole: no hasher object per file (~0.3 µs each, 17,700 per small-tree copy).
      const trailer = toReadFileTrailer({ xxh64: xxh64Of(data), size, lastModifiedTime: mtime });
      return { head: size > 0 ? [toReadFileData(data), trailer] : [trailer] };
    } finally {
      closeSync(fd);
    }
  } catch (err) {
    return { head: [], error: AgentError.from(err) };
  }
}

/**
 * The messages of a ReadFiles stream: each file's ReadFile messages (or its error) in request
 * order, while up to READ_AHEAD_FILES following files (READ_AHEAD_BYTES) are already being read,
 * so small files cost no round trip of their own. Files that are ready are packed into one
 * message up to PACK_BYTES of data; a message goes out as soon as the next file is not ready
 * yet, so packing never delays a byte. Files still open ahead when the stream ends early are
 * closed before this generator returns.
 */
async function* readFilesAhead(
  instance: InstanceContext,
  requests: readonly ReadFileRequest[],
  signal: AbortSignal,
): AsyncGenerator<ReadFilesResponse> {
  /** Files read or being read ahead: `read` once known (at once for a file read synchronously). */
  const pending: { index: number; cost: number; file: Promise<ReadAhead> | undefined; read: ReadAhead | undefined }[] = [];
  const budget = new SyncBudget();
  const realDirs: RealDirCache = new Map();
  /** The event loop's turn that the synchronous reads found due (SyncBudget.charge), awaited before the next file goes out. */
  let turn: Promise<void> | undefined;
  let nextIndex = 0;
  let aheadBytes = 0;
  const fill = () => {
    while (nextIndex < requests.length && pending.length < READ_AHEAD_FILES && (pending.length === 0 || aheadBytes < READ_AHEAD_BYTES)) {
      const request = requests[nextIndex]!;
      const cost = request.expectedSize < 0 ? READ_CHUNK_BYTES : Math.min(request.expectedSize, READ_CHUNK_BYTES);
      if (budget.fast && request.offset === 0 && request.expectedSize >= 0 && request.expectedSize <= SYNC_READ_MAX_BYTES) {
        // No promise per file while reads are cheap.
        const started = performance.now();
        const read = readWholeSync(instance, request, realDirs);
        const due = budget.charge(started);
        turn ??= due;
        pending.push({ index: nextIndex, cost, file: undefined, read });
      } else {
        const entry: (typeof pending)[number] = { index: nextIndex, cost, file: readAhead(readFileChunks(instance, request, signal)), read: undefined };
        void entry.file!.then((read) => (entry.read = read));
        pending.push(entry);
      }
      aheadBytes += cost;
      nextIndex++;
    }
  };
  let pieces: ReadFilesPiece[] = [];
  let packedBytes = 0;
  const add = (index: number, message: ReadFileResponse | AgentError) => {
    const piece = toReadFilesPiece(index, message, pieces.at(-1));
    if (!piece) return;
    pieces.push(piece);
    packedBytes += piece.data.byteLength;
  };
  // Whether the next file is read by the time pending I/O callbacks have run; false at the end
  // of the request.
  const nextIsReady = async (): Promise<boolean> => {
    const next = pending[0];
    if (!next) return false;
    if (next.read) return true;
    return Promise.race([next.file!.then(() => true), setImmediatePromise(false)]);
  };
  const take = (): ReadFilesResponse => {
    const response = toReadFilesResponse(pieces);
    pieces = [];
    packedBytes = 0;
    return response;
  };
  try {
    fill();
    while (pending.length > 0) {
      if (turn) {
        await turn;
        turn = undefined;
      }
      const { index, cost, file, read } = pending.shift()!;
      const { head, rest, error } = read ?? (await file!);
      aheadBytes -= cost;
      fill();
      throwIfAborted(signal);
      for (const message of head) add(index, message);
      if (error) add(index, error);
      if (rest) {
        yield take();
        try {
          for await (const message of rest) {
            add(index, message);
            yield take();
          }
        } catch (err) {
          throwIfAborted(signal);
          add(index, AgentError.from(err));
        }
      }
      // A file read synchronously is ready without waiting for anything.
      const nextReadNow = pending[0]?.read !== undefined;
      if (pieces.length > 0 && (packedBytes >= PACK_BYTES || !(nextReadNow || (await nextIsReady())))) yield take();
    }
  } finally {
    await Promise.all(pending.map(({ file, read }) => (read ? Promise.resolve(read) : file!).then((f) => f.rest?.return(undefined)).catch(() => undefined)));
  }
}

/** Feeds bytes [0, end) of an open file to the hasher (the part of a resumed file not sent). */
async function hashPrefix(handle: FileHandle, hasher: Hasher, end: number, signal: AbortSignal, fileUrl: string): Promise<void> {
  const buffer = Buffer.allocUnsafe(Math.min(READ_CHUNK_BYTES, end));
  let position = 0;
  while (position < end) {
    throwIfAborted(signal);
    const { bytesRead } = await handle.read(buffer, 0, Math.min(buffer.length, end - position), position);
    if (bytesRead === 0) throw changedDuringRead(fileUrl);
    hasher.update(buffer.subarray(0, bytesRead));
    position += bytesRead;
  }
}

/**
 * Takes a limiter permit, polling every 25 ms for up to `waitMs` while the limiter is full.
 * @throws AgentError Unavailable (the busy message) after the wait, Cancelled on abort.
 */
async function acquirePermit(limiter: RequestLimiter, waitMs: number, signal: AbortSignal): Promise<() => void> {
  const deadline = Date.now() + waitMs;
  for (;;) {
    throwIfAborted(signal);
    try {
      return limiter.acquire();
    } catch (err) {
      if (!(err instanceof AgentError) || err.code !== "Unavailable" || Date.now() >= deadline) throw err;
    }
    await new Promise<void>((resolve) => {
      const timer = setTimeout(done, PERMIT_POLL_MS);
      function done() {
        clearTimeout(timer);
        signal.removeEventListener("abort", done);
        resolve();
      }
      signal.addEventListener("abort", done, { once: true });
    });
  }
}

/**
 * Digest of one file; failures become the result's error (never thrown). While `budget` allows
 * (sync-budget.ts) the file is checked and opened in one step (openReadableFileSync) and, if
 * small, hashed through that descriptor synchronously; a big one goes to the hash pool (digest.ts).
 */
async function digestOne(
  instance: InstanceContext,
  algorithm: DigestAlgorithmName,
  fileUrl: string,
  limiter: RequestLimiter,
  permitWaitMs: number,
  budget: SyncBudget,
  realDirs: RealDirCache,
  signal: AbortSignal,
): Promise<DigestResult> {
  try {
    const resolved = resolveFileUrl(instance.roots, fileUrl);
    const release = await acquirePermit(limiter, permitWaitMs, signal);
    try {
      let file: ReadableFile;
      if (budget.fast) {
        const started = performance.now();
        let hashed: { digest: string; hashingMs: number } | undefined;
        try {
          const opened = openReadableFileSync(resolved, instance.exclusions, realDirs);
          try {
            if (opened.size <= SYNC_DIGEST_MAX_BYTES) hashed = digestOpenFileSync(opened.fd, algorithm);
          } finally {
            closeSync(opened.fd);
          }
          file = opened;
        } finally {
          // Only the filesystem calls are charged: hashing costs the same however the bytes were read.
          await budget.charge(started + (hashed?.hashingMs ?? 0));
        }
        if (hashed) return { fileUrl, digest: hashed.digest };
      } else {
        file = await resolveReadableFile(resolved, instance.exclusions);
      }
      return { fileUrl, digest: await digestFile(file.realPath, algorithm, { signal, budget, sizeHint: file.size }) };
    } finally {
      release();
    }
  } catch (err) {
    return { fileUrl, error: AgentError.from(err) };
  }
}

/**
 * Digests `fileUrls` with at most `concurrency` files in flight, yielding results in completion
 * order, one per URL, packed: each yield takes every result ready by then (up to
 * DIGEST_PACK_RESULTS); small files synchronously while the stream's SyncBudget allows, big
 * ones on the hash pool (digest.ts). Stops starting new files once `signal` aborts; when the
 * consumer stops early, in-flight files are aborted and awaited, so no permit outlives the generator.
 */
async function* digestAll(
  instance: InstanceContext,
  algorithm: DigestAlgorithmName,
  fileUrls: readonly string[],
  concurrency: number,
  limiter: RequestLimiter,
  permitWaitMs: number,
  signal: AbortSignal,
): AsyncGenerator<DigestResult[]> {
  const stop = new AbortController();
  const onAbort = () => stop.abort(signal.reason);
  signal.addEventListener("abort", onAbort, { once: true });
  const ready: DigestResult[] = [];
  let wake: (() => void) | undefined;
  const budget = new SyncBudget();
  const realDirs: RealDirCache = new Map();
  let next = 0;
  const worker = async () => {
    while (next < fileUrls.length && !stop.signal.aborted) {
      const fileUrl = fileUrls[next++]!;
      const result = await digestOne(instance, algorithm, fileUrl, limiter, permitWaitMs, budget, realDirs, stop.signal);
      if (stop.signal.aborted) return;
      ready.push(result);
      wake?.();
    }
  };
  const workers = Promise.all(Array.from({ length: concurrency }, worker));
  try {
    for (let delivered = 0; delivered < fileUrls.length; ) {
      if (ready.length === 0) {
        await new Promise<void>((resolve) => {
          const done = () => {
            stop.signal.removeEventListener("abort", done);
            wake = undefined;
            resolve();
          };
          wake = done;
          stop.signal.addEventListener("abort", done, { once: true });
        });
        throwIfAborted(stop.signal);
        // The workers that are mid-file finish theirs within this turn of the event loop
        // (small files hash synchronously): one turn packs their results into this message.
        if (delivered + ready.length < fileUrls.length) await setImmediatePromise();
        throwIfAborted(stop.signal);
        continue;
      }
      const results = ready.splice(0, DIGEST_PACK_RESULTS);
      delivered += results.length;
      yield results;
    }
  } finally {
    stop.abort(new AgentError("Cancelled", "digest stream ended"));
    signal.removeEventListener("abort", onAbort);
    await workers;
  }
}
