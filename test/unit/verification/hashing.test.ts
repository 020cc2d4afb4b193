/**
 * The whole-file digests a verification makes on each side (digest.ts with a SyncBudget):
 * small files synchronously on the main thread, big ones on the hash pool (hash-pool.ts).
 * Both paths must hash exactly the file's bytes, whatever the size hint says, and fail and
 * cancel like the thread-pool path. A verification's listing hashes its first big files itself,
 * up to a budget, and starts a pool thread ahead for the rest; the first describe runs before any
 * thread exists.
 */
import { closeSync, openSync } from "node:fs";
import { appendFile, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  createHasher,
  digestFile,
  digestOpenFileSync,
  digestsWhileListing,
  LISTING_INLINE_HASH_MS,
  SYNC_DIGEST_MAX_BYTES,
} from "../../../src/digest/digest.js";
import { digestFileOffThread, hashPoolThreads, INLINE_HASH_MAX_BYTES } from "../../../src/digest/hash-pool.js";
import { SyncBudget } from "../../../src/fs/sync-budget.js";
import { AgentError } from "../../../src/errors.js";
import type { DigestAlgorithmName } from "../../../src/migration/types.js";

const ALGORITHMS: readonly DigestAlgorithmName[] = ["MD5", "XXHash32", "XXH64"];

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "lm-hashing-"));
});
afterAll(async () => rm(dir, { recursive: true, force: true }));

function expected(algorithm: DigestAlgorithmName, bytes: Buffer): string {
  const h = createHasher(algorithm);
  h.update(bytes);
  return h.digest();
}

function bytesOf(size: number, seed: number): Buffer {
  const b = Buffer.allocUnsafe(size);
  for (let i = 0; i < size; i++) b[i] = (i * 31 + seed) & 0xff;
  return b;
}

async function file(name: string, bytes: Buffer): Promise<string> {
  const p = path.join(dir, name);
  await writeFile(p, bytes);
  return p;
}

async function codeOf(promise: Promise<unknown>): Promise<string | undefined> {
  try {
    await promise;
    return undefined;
  } catch (err) {
    expect(err).toBeInstanceOf(AgentError);
    return (err as AgentError).code;
  }
}

// First in the file: it needs a pool that has never had a thread.
describe("a listing's own digests of big files", () => {
  it("are taken up to its budget, whatever the pool runs; a big file left to the pool starts a thread for it", async () => {
    expect(hashPoolThreads()).toBe(0);
    expect(digestsWhileListing(SYNC_DIGEST_MAX_BYTES, LISTING_INLINE_HASH_MS)).toBe(true);
    expect(digestsWhileListing(SYNC_DIGEST_MAX_BYTES + 1, 0)).toBe(true);
    expect(digestsWhileListing(INLINE_HASH_MAX_BYTES, LISTING_INLINE_HASH_MS - 1)).toBe(true);
    expect(digestsWhileListing(SYNC_DIGEST_MAX_BYTES + 1, 5, 5)).toBe(false);
    expect(hashPoolThreads()).toBe(1);
    expect(digestsWhileListing(INLINE_HASH_MAX_BYTES + 1, 0)).toBe(false);
    expect(digestsWhileListing(SYNC_DIGEST_MAX_BYTES + 1, LISTING_INLINE_HASH_MS)).toBe(false);
    // With a thread running, a listing under its budget still digests its big files itself.
    expect(digestsWhileListing(SYNC_DIGEST_MAX_BYTES + 1, 0)).toBe(true);
    expect(hashPoolThreads()).toBe(1);
    // A big file digested through an open descriptor: the digest of all its bytes.
    const bytes = bytesOf(3 * SYNC_DIGEST_MAX_BYTES + 5, 11);
    const fd = openSync(await file("cold-big", bytes), "r");
    try {
      expect(digestOpenFileSync(fd, "MD5").digest).toBe(expected("MD5", bytes));
    } finally {
      closeSync(fd);
    }
  });
});

describe("budgeted whole-file digests", () => {
  // Empty, tiny, exactly the synchronous limit, one byte over (hash pool), several pool chunks.
  const sizes = [0, 1, 4096, SYNC_DIGEST_MAX_BYTES, SYNC_DIGEST_MAX_BYTES + 1, 3 * SYNC_DIGEST_MAX_BYTES + 17, 1 << 20];

  it("hash exactly the file's bytes on both paths, for every algorithm", async () => {
    const budget = new SyncBudget();
    for (const [i, size] of sizes.entries()) {
      const bytes = bytesOf(size, i);
      const p = await file(`f${i}`, bytes);
      for (const algorithm of ALGORITHMS) {
        expect(await digestFile(p, algorithm, { budget, sizeHint: size }), `${algorithm} ${size}`).toBe(expected(algorithm, bytes));
      }
    }
  });

  it("read a file to its actual end when the hint is wrong either way", async () => {
    const budget = new SyncBudget();
    const cases: [actual: number, hint: number][] = [
      [10_000, 100], // grew, still small
      [SYNC_DIGEST_MAX_BYTES * 3, 100], // grew past the synchronous buffer: hashed a buffer at a time
      [100, 10_000], // shrank
      [SYNC_DIGEST_MAX_BYTES * 2, SYNC_DIGEST_MAX_BYTES * 8], // big, hint bigger
      [5, SYNC_DIGEST_MAX_BYTES * 2], // sent to the pool, but tiny
    ];
    for (const [i, [actual, hint]] of cases.entries()) {
      const bytes = bytesOf(actual, 100 + i);
      const p = await file(`hint${i}`, bytes);
      expect(await digestFile(p, "MD5", { budget, sizeHint: hint }), `${actual} hinted ${hint}`).toBe(expected("MD5", bytes));
    }
  });

  it("give the same digests as the thread-pool path, for a file appended to between two digests", async () => {
    const p = await file("appended", bytesOf(50_000, 7));
    const budget = new SyncBudget();
    expect(await digestFile(p, "XXHash32", { budget, sizeHint: 50_000 })).toBe(await digestFile(p, "XXHash32"));
    await appendFile(p, bytesOf(SYNC_DIGEST_MAX_BYTES, 8));
    expect(await digestFile(p, "XXHash32", { budget, sizeHint: 50_000 })).toBe(await digestFile(p, "XXHash32"));
  });

  it("fail with the file's error on both paths: NotFound, and a directory", async () => {
    const budget = new SyncBudget();
    const missing = path.join(dir, "missing");
    expect(await codeOf(digestFile(missing, "MD5", { budget, sizeHint: 10 }))).toBe("NotFound");
    expect(await codeOf(digestFile(missing, "MD5", { budget, sizeHint: SYNC_DIGEST_MAX_BYTES * 2 }))).toBe("NotFound");
    const sub = path.join(dir, "a-directory");
    await mkdir(sub, { recursive: true });
    expect(await codeOf(digestFile(sub, "MD5", { budget, sizeHint: 10 }))).toBeDefined();
    expect(await codeOf(digestFile(sub, "MD5", { budget, sizeHint: SYNC_DIGEST_MAX_BYTES * 2 }))).toBeDefined();
  });

  it("reject with Cancelled on an aborted signal, without reading", async () => {
    const abort = new AbortController();
    abort.abort(new AgentError("Cancelled", "stop"));
    const p = await file("never", bytesOf(10, 1));
    const budget = new SyncBudget();
    expect(await codeOf(digestFile(p, "MD5", { budget, sizeHint: 10, signal: abort.signal }))).toBe("Cancelled");
    expect(await codeOf(digestFile(p, "MD5", { budget, sizeHint: SYNC_DIGEST_MAX_BYTES * 2, signal: abort.signal }))).toBe("Cancelled");
  });
});

describe("hash pool", () => {
  it("stops a big file within a chunk once its signal aborts, and keeps serving other jobs", async () => {
    const small = bytesOf(1000, 5);
    const smallFile = await file("small", small);
    // A job first, so that the thread is up and the big file's reads are under way at the abort.
    expect(await digestFileOffThread(smallFile, "XXHash32", { sizeHint: 1000 })).toBe(expected("XXHash32", small));
    const big = await file("big", Buffer.alloc(256 << 20, 3));
    const abort = new AbortController();
    const started = performance.now();
    const digest = digestFileOffThread(big, "MD5", { signal: abort.signal, sizeHint: 256 << 20 });
    setTimeout(() => abort.abort(new AgentError("Cancelled", "stop")), 50);
    expect(await codeOf(digest)).toBe("Cancelled");
    // MD5 of 256 MiB takes ~0.4 s; the job ends within a chunk of the abort.
    expect(performance.now() - started).toBeLessThan(250);
    expect(await digestFileOffThread(smallFile, "XXHash32", { sizeHint: 1000 })).toBe(expected("XXHash32", small));
  });

  it("answers many jobs at once, each with its own file's digest", async () => {
    const files = await Promise.all(Array.from({ length: 40 }, async (_, i) => ({ bytes: bytesOf(1000 + i * 7919, i), name: `many${i}` })));
    const paths = await Promise.all(files.map((f) => file(f.name, f.bytes)));
    const digests = await Promise.all(paths.map((p, i) => digestFileOffThread(p, "MD5", { sizeHint: files[i]!.bytes.length })));
    expect(digests).toEqual(files.map((f) => expected("MD5", f.bytes)));
  });
});
