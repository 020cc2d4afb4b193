/**
 * Incremental digests in the encodings the Java Sidecar uses (behaviour doc §4):
 * - MD5: standard base64 with padding ("1B2M2Y8AsgTpgAmY7PhCfg==" for empty input);
 * - XXHash32: seed 0, lowercase hex without zero padding ("2cc5d05" for empty input);
 * - XXH64: seed 0, 16 lowercase hex digits, as `xxhsum -H64` prints (the plane's integrity hash).
 */
import { createHash } from "node:crypto";
import { open } from "node:fs/promises";
import xxhash from "xxhash-wasm";
import { AgentError, throwIfAborted } from "../errors.js";
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
 * Digests bytes [0, end) of a file, reading 1 MiB at a time (default: the whole file).
 * @throws AgentError NotFound if the file is missing, Cancelled if the signal aborts.
 */
export async function digestFile(
  path: string,
  algorithm: DigestAlgorithmName,
  options: { end?: number; signal?: AbortSignal } = {},
): Promise<string> {
  const hasher = createHasher(algorithm);
  await hashFileRange(path, [hasher], 0, options.end, options.signal);
  return hasher.digest();
}

/** Feeds bytes [start, end) of a file to every hasher (end: EOF when undefined). */
export async function hashFileRange(
  path: string,
  hashers: readonly Hasher[],
  start: number,
  end: number | undefined,
  signal?: AbortSignal,
): Promise<void> {
  let handle;
  try {
    handle = await open(path, "r");
  } catch (err) {
    throw AgentError.from(err);
  }
  try {
    // Sized to the range when it is known: most SSTable components are far smaller than 1 MiB.
    const buffer = Buffer.allocUnsafe(end === undefined ? READ_BYTES : Math.max(1, Math.min(READ_BYTES, end - start)));
    let position = start;
    for (;;) {
      throwIfAborted(signal);
      const want = end === undefined ? READ_BYTES : Math.min(READ_BYTES, end - position);
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
