/**
 * Incremental digests in the encodings the Java Sidecar uses (behaviour doc §4):
 * - MD5: standard base64 with padding ("1B2M2Y8AsgTpgAmY7PhCfg==" for empty input);
 * - XXHash32: seed 0, lowercase hex without zero padding ("2cc5d05" for empty input);
 * - XXH64: seed 0, 16 lowercase hex digits, as `xxhsum -H64` prints (the plane's integrity hash).
 */
import { createHash } from "node:crypto";
import { closeSync, openSync, readSync } from "node:fs";
import { open } from "node:fs/promises";
import xxhash from "xxhash-wasm";
import { AgentError, throwIfAborted } from "../errors.js";
import type { SyncBudget } from "../fs/sync-budget.js";
import type { DigestAlgorithmName } from "../migration/types.js";

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
      return { update: (c) => void h.update(c), digest: () => h.digest().toString(16) };
    }
    case "XXH64": {
      const h = xx.create64(0n);
      return { update: (c) => void h.update(c), digest: () => h.digest().toString(16).padStart(16, "0") };
    }
  }
}

const READ_BYTES = 1 << 20;
/**
 * digestFile reads a file expected to be at most this big whole, with synchronous calls, while
 * its SyncBudget allows; bigger files go through the thread pool a chunk at a time, where a
 * round trip per MiB costs little against hashing it.
 */
export const SYNC_DIGEST_MAX_BYTES = 1 << 20;

export interface DigestFileOptions {
  /** Digest bytes [0, end) only (default: the whole file). */
  readonly end?: number;
  readonly signal?: AbortSignal;
  /**
   * Lets a small whole-file digest run synchronously (sync-budget.ts): one budget per stream
   * of files, never shared by streams that run at the same time.
   */
  readonly budget?: SyncBudget;
  /** The size the caller expects (from a listing or a stat); only picks the read strategy and buffer size. */
  readonly sizeHint?: number;
}

/**
 * Digests bytes [0, end) of a file (default: the whole file). The content read is what is
 * hashed whatever `sizeHint` says: a file that grew or shrank is read to its actual end.
 * @throws AgentError NotFound if the file is missing, Cancelled if the signal aborts.
 */
export async function digestFile(path: string, algorithm: DigestAlgorithmName, options: DigestFileOptions = {}): Promise<string> {
  const { end, signal, budget, sizeHint } = options;
  const hasher = createHasher(algorithm);
  if (budget?.fast && end === undefined && sizeHint !== undefined && sizeHint <= SYNC_DIGEST_MAX_BYTES) {
    throwIfAborted(signal);
    // Only the filesystem calls are charged: hashing is CPU work however the file was read.
    const started = performance.now();
    let tail: Buffer;
    try {
      tail = readWholeSync(path, sizeHint, hasher);
    } finally {
      await budget.charge(started);
    }
    hasher.update(tail);
  } else {
    await hashFileRange(path, [hasher], 0, end, signal, sizeHint);
  }
  return hasher.digest();
}

/**
 * Reads a whole file with synchronous calls (open, read until a read returns 0, close) into a
 * buffer of the expected size, and returns what the hasher has not been fed yet: all of it
 * unless the file is bigger than expected, when each full buffer goes to the hasher first.
 */
function readWholeSync(path: string, sizeHint: number, hasher: Hasher): Buffer {
  let fd: number;
  try {
    fd = openSync(path, "r");
  } catch (err) {
    throw AgentError.from(err);
  }
  try {
    // One byte over the expected size: the read that finds the end must not be one of length 0.
    const buffer = Buffer.allocUnsafe(Math.max(0, sizeHint) + 1);
    let length = 0;
    for (;;) {
      if (length === buffer.length) {
        hasher.update(buffer);
        length = 0;
      }
      const bytesRead = readSync(fd, buffer, length, buffer.length - length, null);
      if (bytesRead === 0) return buffer.subarray(0, length);
      length += bytesRead;
    }
  } catch (err) {
    throw AgentError.from(err);
  } finally {
    closeSync(fd);
  }
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
