/**
 * The digest half of a files verification (behaviour doc §4, step 3), run on the destination:
 *
 *   files ──┬── source: DigestFiles streams (few large batches, maxConcurrency at the source) ──┐
 *           │        retryable per-file or stream faults → backoff → re-request those URLs     ├─ pair by fileUrl → verdict
 *           └── local: maxConcurrency hashers, each file read once ────────────────────────────┘
 *
 * Both sides run at the same time, so the verification takes about as long as the slower side
 * hashing its own copy once. Verdicts (Java rules):
 * - the source could not give a digest after retries → SOURCE_ERROR (digestVerificationFailures);
 * - the local file could not be read → LOCAL_ERROR (digestMismatches);
 * - the encoded strings differ → MISMATCH (digestMismatches); equal → MATCH (filesMatched).
 */
import { setImmediate as yieldToEventLoop } from "node:timers/promises";
import type { SidecarClientConfig } from "../../config/schema.js";
import { digestFile } from "../../digest/digest.js";
import { AgentError, throwIfAborted } from "../../errors.js";
import { SyncBudget } from "../../fs/sync-budget.js";
import type { SourcePeer } from "../peer.js";
import { backoffDelayMs, sleep } from "../retry.js";
import type { DigestAlgorithmName, FileEntry } from "../types.js";
import type { MatchedFile } from "./compare.js";

/** One file to digest on both sides. */
export interface DigestWork {
  readonly fileUrl: string;
  /** The destination's copy. */
  readonly absPath: string;
  /** Its size in the destination's listing (sizes the read buffer; the whole file is hashed whatever it says). */
  readonly size?: number;
}

export type DigestVerdict =
  | { readonly kind: "MATCH"; readonly fileUrl: string; readonly digest: string }
  | { readonly kind: "MISMATCH"; readonly fileUrl: string; readonly localDigest: string; readonly sourceDigest: string }
  | { readonly kind: "LOCAL_ERROR"; readonly fileUrl: string; readonly error: AgentError }
  | { readonly kind: "SOURCE_ERROR"; readonly fileUrl: string; readonly error: AgentError };

export interface DigestComparisonOptions {
  readonly peer: SourcePeer;
  readonly algorithm: DigestAlgorithmName;
  readonly files: readonly DigestWork[];
  /** Files hashed at once at the source (per stream) and, separately, locally. */
  readonly maxConcurrency: number;
  /** Backoff for transient source faults; maxRetries re-requests per file at most. */
  readonly retry: SidecarClientConfig;
  readonly signal: AbortSignal;
  /** Called once per file, as soon as both sides are known. */
  readonly onVerdict: (verdict: DigestVerdict) => void;
  /** Called before each backoff wait with the number of files to re-request. */
  readonly onRetry?: (files: number, attempt: number, delayMs: number, lastError: AgentError) => void;
  /** Upper bound on the fileUrl bytes of one DigestFiles request (default 1 MiB, well under gRPC's 4 MiB). */
  readonly batchBytes?: number;
}

const DEFAULT_BATCH_BYTES = 8 << 20;
/**
 * Local hashing gives the event loop a turn at least this often (ms), on top of its SyncBudget's
 * slices: the DigestFiles requests to the source flow through HTTP/2 windows that this loop
 * must acknowledge, and with a turn only every slice a 1 MiB request took most of a second to
 * reach the source, which sat idle meanwhile.
 */
const EVENT_LOOP_TURN_MS = 1;
/** Per-URL overhead of a repeated string field (tag + length varint). */
const URL_OVERHEAD_BYTES = 4;

type Side = { readonly digest: string } | { readonly error: AgentError };

/**
 * Digests every file on both sides and reports one verdict per file.
 * Resolves when every file has a verdict; rejects with Cancelled when the signal aborts (no
 * further verdicts are reported then, and no further source requests are made).
 */
export async function compareDigests(options: DigestComparisonOptions): Promise<void> {
  const { files, signal } = options;
  if (files.length === 0) return;
  // One side failing unexpectedly stops the other one too.
  const inner = new AbortController();
  const abortInner = () => inner.abort(signal.reason);
  if (signal.aborted) abortInner();
  else signal.addEventListener("abort", abortInner, { once: true });

  const localSide = new Map<string, Side>();
  const sourceSide = new Map<string, Side>();
  const pending = new Set(files.map((f) => f.fileUrl));
  const judge = (fileUrl: string) => {
    const local = localSide.get(fileUrl);
    const source = sourceSide.get(fileUrl);
    if (local === undefined || source === undefined || inner.signal.aborted) return;
    localSide.delete(fileUrl);
    sourceSide.delete(fileUrl);
    pending.delete(fileUrl);
    options.onVerdict(verdictOf(fileUrl, local, source));
  };

  // Local hashing holds the event loop in slices, and the first DigestFiles request (up to
  // 1 MiB of URLs) reaches the source through HTTP/2 windows this loop acknowledges: started
  // together, the source sat idle for ~150 ms of a 2 s verification. So the local side starts
  // once the source has answered or failed; it finishes well before the source anyway.
  let sourceAnswered!: () => void;
  const answered = new Promise<void>((resolve) => (sourceAnswered = resolve));
  try {
    await Promise.all([
      answered.then(() =>
        hashLocally(files, options.algorithm, options.maxConcurrency, inner.signal, (fileUrl, side) => {
          localSide.set(fileUrl, side);
          judge(fileUrl);
        }),
      ),
      digestAtSource({ ...options, signal: inner.signal }, sourceAnswered, (fileUrl, side) => {
        sourceSide.set(fileUrl, side);
        judge(fileUrl);
      }).finally(sourceAnswered),
    ]).catch((err: unknown) => {
      inner.abort(err);
      throw err;
    });
    throwIfAborted(signal);
    // Unreachable by construction (both sides report every file), kept so no file goes uncounted.
    for (const fileUrl of pending) {
      options.onVerdict({ kind: "SOURCE_ERROR", fileUrl, error: new AgentError("Internal", "no digest was obtained") });
    }
  } finally {
    signal.removeEventListener("abort", abortInner);
  }
}

/**
 * The verdict on a file whose digest both listings carry (a verification lists both sides with
 * its algorithm, fs/list.ts), by the same rules as compareDigests; undefined when either lacks
 * one (a bigger file, a symlink, a failed read), for compareDigests to digest on both sides.
 */
export function judgeListedDigest(file: MatchedFile<FileEntry>): DigestVerdict | undefined {
  const { local, source } = file;
  if (local.digest === undefined || source.digest === undefined) return undefined;
  return verdictOf(local.fileUrl, { digest: local.digest }, { digest: source.digest });
}

function verdictOf(fileUrl: string, local: Side, source: Side): DigestVerdict {
  if ("error" in source) return { kind: "SOURCE_ERROR", fileUrl, error: source.error };
  if ("error" in local) return { kind: "LOCAL_ERROR", fileUrl, error: local.error };
  if (local.digest === source.digest) return { kind: "MATCH", fileUrl, digest: local.digest };
  return { kind: "MISMATCH", fileUrl, localDigest: local.digest, sourceDigest: source.digest };
}

/**
 * Hashes the destination's copies, `concurrency` at a time, each file read once (digest.ts:
 * small files synchronously while that stays cheap, one SyncBudget for the whole run).
 */
async function hashLocally(
  files: readonly DigestWork[],
  algorithm: DigestAlgorithmName,
  concurrency: number,
  signal: AbortSignal,
  report: (fileUrl: string, side: Side) => void,
): Promise<void> {
  const budget = new SyncBudget();
  let turnStart = performance.now();
  let next = 0;
  const worker = async () => {
    while (next < files.length) {
      throwIfAborted(signal);
      const file = files[next++]!;
      let side: Side;
      try {
        side = { digest: await digestFile(file.absPath, algorithm, { signal, budget, sizeHint: file.size }) };
      } catch (err) {
        throwIfAborted(signal);
        side = { error: AgentError.from(err) };
      }
      report(file.fileUrl, side);
      if (performance.now() - turnStart >= EVENT_LOOP_TURN_MS) {
        await yieldToEventLoop();
        turnStart = performance.now();
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(concurrency, files.length)) }, worker));
}

/**
 * Gets the source's digests over as few DigestFiles streams as the batch size allows, one
 * stream at a time, calling `onAnswer` on every message and every stream failure. Retryable
 * failures (a per-file error, a broken stream, a stream that ends without some files) are
 * collected and re-requested after a backoff, up to retry.maxRetries times; every other
 * failure, or the last one, is reported as the file's error.
 */
async function digestAtSource(
  options: DigestComparisonOptions,
  onAnswer: () => void,
  report: (fileUrl: string, side: Side) => void,
): Promise<void> {
  const { peer, algorithm, maxConcurrency, retry, signal } = options;
  let todo: readonly string[] = options.files.map((f) => f.fileUrl);
  for (let attempt = 0; todo.length > 0; attempt++) {
    const lastAttempt = attempt >= retry.maxRetries;
    const again: string[] = [];
    let lastError: AgentError | undefined;
    const fail = (fileUrl: string, error: AgentError) => {
      if (error.retryable && !lastAttempt) {
        again.push(fileUrl);
        lastError = error;
      } else {
        report(fileUrl, { error });
      }
    };
    for (const batch of batches(todo, options.batchBytes ?? DEFAULT_BATCH_BYTES)) {
      throwIfAborted(signal);
      const waiting = new Set(batch);
      try {
        for await (const result of peer.digestFiles(algorithm, batch, maxConcurrency, signal)) {
          onAnswer();
          throwIfAborted(signal);
          if (!waiting.delete(result.fileUrl)) continue; // not asked for, or a duplicate
          if (result.error !== undefined) fail(result.fileUrl, result.error);
          else if (result.digest === undefined) fail(result.fileUrl, new AgentError("Internal", "the source sent neither a digest nor an error"));
          else report(result.fileUrl, { digest: result.digest });
        }
        const missing = new AgentError("Unavailable", "the source's digest stream ended without this file");
        for (const fileUrl of waiting) fail(fileUrl, missing);
      } catch (err) {
        onAnswer();
        throwIfAborted(signal);
        const error = AgentError.from(err);
        for (const fileUrl of waiting) fail(fileUrl, error);
      }
    }
    if (again.length > 0) {
      const delay = backoffDelayMs(attempt + 1, retry);
      options.onRetry?.(again.length, attempt + 1, delay, lastError!);
      await sleep(delay, signal);
    }
    todo = again;
  }
}

/** Splits URLs into consecutive batches of at most `maxBytes` of URL text (at least one URL each). */
export function batches(fileUrls: readonly string[], maxBytes: number): string[][] {
  const out: string[][] = [];
  let current: string[] = [];
  let bytes = 0;
  for (const url of fileUrls) {
    const size = Buffer.byteLength(url) + URL_OVERHEAD_BYTES;
    if (current.length > 0 && bytes + size > maxBytes) {
      out.push(current);
      current = [];
      bytes = 0;
    }
    current.push(url);
    bytes += size;
  }
  if (current.length > 0) out.push(current);
  return out;
}
