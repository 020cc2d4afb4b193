/**
 * Incremental digests in the encodings the Java Sidecar uses (behaviour doc §4):
 * - MD5: standard base64 with padding ("1B2M2Y8AsgTpgAmY7PhCfg==" for empty input);
 * - XXHash32: seed 0, lowercase hex without zero padding ("2cc5d05" for empty input);
 * - XXH64: seed 0, 16 lowercase hex digits, as `xxhsum -H64` prints (the plane's integrity hash).
 */
import { createHash, hash } from "node:crypto";
import { closeSync, openSync, readSync } from "node:fs";
import { open } from "node:fs/promises";
import xxhash from "xxhash-wasm";
import { AgentError, throwIfAborted } from "../errors.js";
import type { SyncBudget } from "../fs/sync-budget.js";
import type { DigestAlgorithmName } from "../migration/types.js";
import { digestFileOffThread, INLINE_HASH_MAX_BYTES, startThreadAhead } from "./hash-pool.js";
import { encodeXxh32, encodeXxh64, XxhInPlace } from "./xxh-in-place.js";

const xx = await xxhash();

export interface Hasher {
  update(chunk: Uint8Array): void;
  /** The encoded digest; call once. */
  digest(): string;
}

export const DIGEST_ALGORITHMS: readonly DigestAlgorithmName[] = ["MD5", "XXHash32", "XXH64"];

/**
 * Parses a REST/API algorithm name case-insensitively ("md5", "XXHASH32").
 * Only MD5 and XXHash32 are accepted unless `allowInternal` admits XXH64.
 */
export function parseDigestAlgorithm(name: string, allowInternal = false): DigestAlgorithmName | undefined {
  const found = DIGEST_ALGORITHMS.find((a) => a.toLowerCase() === name.trim().toLowerCase());
  return found === "XXH64" && !allowInternal ? undefined : found;
}

export function createHasher(algorithm: DigestAlgorithmName): Hasher {
  switch (algorithm) {
    case "MD5": {
      const h = createHash("md5");
      return { update: (c) => void h.update(c), digest: () => h.digest("base64") };
    }
    case "XXHash32": {
      const h = xx.create32(0);
      return { update: (c) => void h.update(c), digest: () => encodeXxh32(h.digest()) };
    }
    case "XXH64": {
      const h = xx.create64(0n);
      return { update: (c) => void h.update(c), digest: () => encodeXxh64(h.digest()) };
    }
  }
}

/** XXH64 of bytes held whole, encoded as createHasher("XXH64") would: one call instead of a hasher. */
export function xxh64Of(data: Uint8Array): string {
  return encodeXxh64(xx.h64Raw(data, 0n));
}

/**
 * A whole-file digest that reads into a buffer of its own: begin(), then read into `buffer` and
 * update(bytesRead) as often as needed, then digest() — or finish(bytesRead) for the last bytes
 * and the digest at once. For synchronous use only (one file at a time), so that one buffer
 * serves every file. XXHash32 and XXH64 hash the bytes where they were read (xxh-in-place.ts);
 * MD5 hashes from the buffer with node:crypto, which copies nothing either.
 */
export interface ReadDigester {
  readonly buffer: Uint8Array;
  begin(): void;
  update(length: number): void;
  digest(): string;
  /** update(length), then digest(). */
  finish(length: number): string;
}

export function createReadDigester(algorithm: DigestAlgorithmName, capacity: number): ReadDigester {
  if (algorithm !== "MD5") {
    const inPlace = XxhInPlace.create(algorithm, capacity);
    if (inPlace) return inPlace;
  }
  const buffer = Buffer.allocUnsafeSlow(capacity);
  // Made at the first update(): a file read whole in one go is hashed by one crypto.hash call,
  // which saves the Hash object (~0.8 µs per file of a verification, on each side).
  let hasher: Hasher | undefined;
  const ensureHasher = () => (hasher ??= createHasher(algorithm));
  return {
    buffer,
    begin: () => void (hasher = undefined),
    update: (length) => ensureHasher().update(buffer.subarray(0, length)),
    digest: () => ensureHasher().digest(),
    finish: (length) => {
      if (hasher === undefined && algorithm === "MD5") return hash("md5", buffer.subarray(0, length), "base64");
      const h = ensureHasher();
      h.update(buffer.subarray(0, length));
      return h.digest();
    },
  };
}

const READ_BYTES = 1 << 20;
/**
 * A budgeted whole-file digest reads a file expected to be at most this big on the main thread,
 * with synchronous calls, while its SyncBudget allows; a bigger one goes to the hash pool.
 * 1 MiB, like the source's synchronous reads of batched files: a trip to a pool thread costs the
 * event loop ~0.2 ms on the reference VM (postMessage and the reply's wake-up), as much as
 * reading and hashing a 1 MiB file with XXHash32. With 128 KiB, the 228 files of 128 KiB-1 MiB
 * of the small benchmark tree (39 % of its bytes) each took that trip on both sides; with
 * 1 MiB, warm XXHash32 verifications took 1.8-2.2 s instead of 2.1-2.4 s (two interleaved sets
 * of four), with less CPU on both agents, and MD5 ones (1.7 ms of hashing per MiB) were no slower.
 */
export const SYNC_DIGEST_MAX_BYTES = 1 << 20;

export interface DigestFileOptions {
  /** Digest bytes [0, end) only (default: the whole file). */
  readonly end?: number;
  readonly signal?: AbortSignal;
  /**
   * For a stream of whole-file digests: a file of up to SYNC_DIGEST_MAX_BYTES is read with
   * synchronous calls while this budget allows (sync-budget.ts), through the thread pool
   * otherwise; a bigger one (or one of unknown size) is read and hashed on a hash-pool thread
   * (hash-pool.ts), off the event loop and in parallel with other big files.
   */
  readonly budget?: SyncBudget;
  /** The size the caller expects (from a listing or a stat); picks how the file is read, nothing else. */
  readonly sizeHint?: number;
}

/**
 * Digests bytes [0, end) of a file (default: the whole file). The content read is what is
 * hashed whatever `sizeHint` says: a file that grew or shrank is read to its actual end.
 * @throws AgentError NotFound if the file is missing, Cancelled if the signal aborts.
 */
export async function digestFile(path: string, algorithm: DigestAlgorithmName, options: DigestFileOptions = {}): Promise<string> {
  const { end, signal, budget, sizeHint } = options;
  if (budget !== undefined && end === undefined) {
    if (sizeHint === undefined || sizeHint > SYNC_DIGEST_MAX_BYTES) return digestFileOffThread(path, algorithm, { signal, sizeHint });
    if (budget.fast) {
      throwIfAborted(signal);
      const started = performance.now();
      let ioMs: number | undefined;
      let digest: string;
      try {
        // The digest is taken before the charge, which may yield: the digester is shared.
        ({ digest, ioMs } = hashWholeSync(path, syncDigester(algorithm)));
      } finally {
        // Only the filesystem calls are charged: hashing costs the same however the bytes were read.
        await budget.charge(ioMs === undefined ? started : performance.now() - ioMs);
      }
      return digest;
    }
  }
  const hasher = createHasher(algorithm);
  await hashFileRange(path, [hasher], 0, end, signal, sizeHint);
  return hasher.digest();
}

/**
 * The main thread's digesters for hashOpenFileSync, one per algorithm: it fills and hashes the
 * buffer without yielding, so that one buffer serves every file. One byte over
 * SYNC_DIGEST_MAX_BYTES: the read that finds the end of a file of the largest expected size must
 * not be one of length 0.
 */
const syncDigesters = new Map<DigestAlgorithmName, ReadDigester>();

function syncDigester(algorithm: DigestAlgorithmName): ReadDigester {
  let digester = syncDigesters.get(algorithm);
  if (!digester) syncDigesters.set(algorithm, (digester = createReadDigester(algorithm, SYNC_DIGEST_MAX_BYTES + 1)));
  return digester;
}

/**
 * Digests a whole file with synchronous calls (open, read until a read comes back short, close).
 * @returns the digest, and the milliseconds spent in filesystem calls.
 */
function hashWholeSync(path: string, digester: ReadDigester): { digest: string; ioMs: number } {
  const started = performance.now();
  let fd: number;
  try {
    fd = openSync(path, "r");
  } catch (err) {
    throw AgentError.from(err);
  }
  let hashed: { digest: string; hashingMs: number };
  try {
    hashed = hashOpenFileSync(fd, digester);
  } finally {
    closeSync(fd);
  }
  return { digest: hashed.digest, ioMs: performance.now() - started - hashed.hashingMs };
}

/**
 * Digests a small file through a descriptor the caller opened and closes (e.g. from
 * openReadableFileSync), with synchronous reads from its current position to its end: for a
 * stream of whole-file digests while its SyncBudget is fast.
 * @returns the digest, and the milliseconds spent hashing (to leave out of the budget's charge).
 */
export function digestOpenFileSync(fd: number, algorithm: DigestAlgorithmName): { digest: string; hashingMs: number } {
  return hashOpenFileSync(fd, syncDigester(algorithm));
}

/**
 * Inline hashing of big files (over SYNC_DIGEST_MAX_BYTES, reads included, in ms) that one
 * listing may do (digestsWhileListing); its other big files are left to the pool.
 */
export const LISTING_INLINE_HASH_MS = 100;

/**
 * Whether a walk that lists and digests at once (fs/list.ts) digests a regular file of `size`
 * bytes itself, having spent `inlineMs` on big files so far: always up to SYNC_DIGEST_MAX_BYTES;
 * a bigger one up to INLINE_HASH_MAX_BYTES while `inlineMs` is under `budgetMs`.
 * The rest is left for the caller's separate digests, after the listing, on the hash pool, which
 * starts a thread for them now.
 *
 * Why a budget per listing: the few big files of a tree of small ones (commit log segments,
 * the odd 1-8 MiB Data.db) are then digested while both walks run, and the verification needs
 * no separate digest step. The pool used to decide instead, process-wide: no big file inline
 * once a thread was running, which it was for 10 s after any verification that had hashed
 * 100 ms of them. Fresh agents, five verifications 1 s apart (MD5, XXHash32, MD5, XXHash32,
 * MD5), three rounds, the small benchmark tree: the second MD5 took 0.66-0.75 s instead of
 * 0.83-0.91, the third 0.70-0.73 instead of 0.73-0.79, the second XXHash32 0.41-0.44 instead of
 * 0.42-0.56; the first MD5, all inline either way, 0.82-0.88 s both (test/bench/FINDINGS.md).
 */
export function digestsWhileListing(size: number, inlineMs: number, budgetMs = LISTING_INLINE_HASH_MS): boolean {
  if (size <= SYNC_DIGEST_MAX_BYTES) return true;
  if (size <= INLINE_HASH_MAX_BYTES && inlineMs < budgetMs) return true;
  startThreadAhead();
  return false;
}

/**
 * Digests an open file (the digester begun here) from its current position to its end, reading
 * into the digester's buffer without yielding.
 * @returns the digest, the milliseconds spent hashing, and the bytes hashed.
 */
function hashOpenFileSync(fd: number, digester: ReadDigester): { digest: string; hashingMs: number; bytes: number } {
  let hashingMs = 0;
  const { buffer } = digester;
  digester.begin();
  let length = 0;
  let bytes = 0;
  try {
    for (;;) {
      if (length === buffer.length) {
        const hashStart = performance.now();
        digester.update(length);
        hashingMs += performance.now() - hashStart;
        bytes += length;
        length = 0;
      }
      const want = buffer.length - length;
      const bytesRead = readSync(fd, buffer, length, want, null);
      length += bytesRead;
      // A regular file's read comes back short only at its end: no read of length 0 to confirm it.
      if (bytesRead < want) break;
    }
  } catch (err) {
    throw AgentError.from(err);
  }
  const hashStart = performance.now();
  const digest = digester.finish(length);
  return { digest, hashingMs: hashingMs + performance.now() - hashStart, bytes: bytes + length };
}

/**
 * Feeds bytes [start, end) of a file to every hasher (end: EOF when undefined), reading up to
 * 1 MiB at a time into one buffer sized to the range, or to `sizeHint` when the end is unknown.
 */
export async function hashFileRange(
  path: string,
  hashers: readonly Hasher[],
  start: number,
  end: number | undefined,
  signal?: AbortSignal,
  sizeHint?: number,
): Promise<void> {
  let handle;
  try {
    handle = await open(path, "r");
  } catch (err) {
    throw AgentError.from(err);
  }
  try {
    // Sized to the range, or to the hint, when known: most SSTable components are far smaller
    // than 1 MiB. One byte over the hint, so that the read that finds the end is not one of length 0.
    const expected = end !== undefined ? end - start : sizeHint !== undefined ? sizeHint - start + 1 : READ_BYTES;
    const buffer = Buffer.allocUnsafe(Math.max(1, Math.min(READ_BYTES, expected)));
    let position = start;
    for (;;) {
      throwIfAborted(signal);
      const want = end === undefined ? buffer.length : Math.min(buffer.length, end - position);
      if (want <= 0) break;
      const { bytesRead } = await handle.read(buffer, 0, want, position);
      if (bytesRead === 0) break;
      const view = buffer.subarray(0, bytesRead);
      for (const h of hashers) h.update(view);
      position += bytesRead;
    }
  } finally {
    await handle.close();
  }
}
