/**
 * One thread of the hash pool (hash-pool.ts): digests whole files with synchronous reads of up
 * to READ_CHUNK_BYTES, off the main thread.
 *
 * Protocol: the pool posts `HashJob[]`; the worker answers each job with one `HashOutcome`
 * message as soon as the job ends (jobs are big files: a message per file costs little). A job
 * whose abort flag is set (before it starts or between two reads) ends as `cancelled`.
 * The pool imports only this module's types: evaluating it outside a worker would fail.
 */
import { closeSync, openSync, readSync } from "node:fs";
import { parentPort } from "node:worker_threads";
import type { DigestAlgorithmName } from "../migration/types.js";
import { createReadDigester, type ReadDigester } from "./digest.js";

export interface HashJob {
  readonly id: number;
  readonly path: string;
  readonly algorithm: DigestAlgorithmName;
  /** The size the caller expects: sizes the read buffer, never limits what is read. */
  readonly sizeHint: number;
  /** Shared with the pool: non-zero once the job's caller gave up. */
  readonly abortFlag: Int32Array;
}

export type HashOutcome =
  | { readonly id: number; readonly digest: string }
  | { readonly id: number; readonly cancelled: true }
  | { readonly id: number; readonly error: { readonly code: string | undefined; readonly message: string } };

/** Bytes per read: small enough that a chunk is still in the CPU's cache when it is hashed. */
const READ_CHUNK_BYTES = 256 << 10;

class Cancelled extends Error {}

/** This thread's digesters, one per algorithm: jobs run one at a time, so one buffer each serves them all. */
const digesters = new Map<DigestAlgorithmName, ReadDigester>();

/** Digests a whole file: reads until a read returns 0. */
function hashFile(job: HashJob, digester: ReadDigester): string {
  const fd = openSync(job.path, "r");
  try {
    const { buffer } = digester;
    digester.begin();
    for (;;) {
      if (Atomics.load(job.abortFlag, 0) !== 0) throw new Cancelled();
      const bytesRead = readSync(fd, buffer, 0, buffer.length, null);
      if (bytesRead === 0) return digester.digest();
      digester.update(bytesRead);
    }
  } finally {
    closeSync(fd);
  }
}

function run(job: HashJob): HashOutcome {
  if (Atomics.load(job.abortFlag, 0) !== 0) return { id: job.id, cancelled: true };
  try {
    let digester = digesters.get(job.algorithm);
    if (!digester) digesters.set(job.algorithm, (digester = createReadDigester(job.algorithm, READ_CHUNK_BYTES)));
    return { id: job.id, digest: hashFile(job, digester) };
  } catch (err) {
    if (err instanceof Cancelled) return { id: job.id, cancelled: true };
    const e = err as NodeJS.ErrnoException;
    return { id: job.id, error: { code: e.code, message: e.message ?? String(err) } };
  }
}

const port = parentPort!;
port.on("message", (jobs: HashJob[]) => {
  for (const job of jobs) port.postMessage(run(job));
});
