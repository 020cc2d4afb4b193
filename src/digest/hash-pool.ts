/**
 * Whole-file digests on a few worker threads (hash-worker.ts), shared by the whole process.
 *
 * Why: hashing a big file costs milliseconds per MiB (MD5 ~1.5 ms). On the main thread that
 * holds the event loop and hashes a stream's big files one after the other; on a pool thread it
 * runs beside the plane's streams and beside other big files, reading synchronously in chunks
 * that are still in the CPU's cache when hashed. Small files stay on the main thread (digest.ts):
 * handing one to a thread costs more than reading it there.
 *
 * - Jobs submitted in one turn of the microtask queue go to the workers in one message each:
 *   each job to an idle thread, else to a new one while there are fewer than POOL_THREADS, else
 *   to the one with the least outstanding work (in bytes, at least MIN_JOB_COST_BYTES per file).
 * - Cancelling: the caller's AbortSignal sets a flag shared with the workers, checked before a
 *   job starts and between two reads, so an abandoned large file stops within one chunk.
 * - Threads start when needed, never keep the process alive (unref'd while they have no job),
 *   and exit after POOL_IDLE_MS without one. A thread that dies fails its outstanding jobs
 *   (Internal) and is replaced by the next submission.
 * - A verification's listing hashes its first big files itself (digest.ts, digestsWhileListing)
 *   and starts a thread ahead (startThreadAhead) once it leaves the rest to the pool.
 */
import os from "node:os";
import { Worker } from "node:worker_threads";
import { AgentError, throwIfAborted } from "../errors.js";
import type { DigestAlgorithmName } from "../migration/types.js";
import type { HashJob, HashOutcome } from "./hash-worker.js";

/**
 * Worker threads: one per spare core, at least one and at most four (each costs ~20 MB of
 * resident memory while it lives; more would not help a stream bounded by
 * max_concurrent_file_requests).
 */
const POOL_THREADS = Math.max(1, Math.min(4, os.availableParallelism() - 1));
/** A thread with no job for this long (ms) exits, giving its memory back; the next job starts a new one. */
const POOL_IDLE_MS = 10_000;
/**
 * Files of at most this size may be hashed on the caller's thread by a listing
 * (digestsWhileListing): at MD5's ~1.5 ms per MiB one holds the event loop ~25 ms at most.
 */
export const INLINE_HASH_MAX_BYTES = 16 << 20;
/** What a job counts for in balancing: its expected size, but at least this (per-file costs). */
const MIN_JOB_COST_BYTES = 64 << 10;

interface Pending {
  readonly resolve: (digest: string) => void;
  readonly reject: (err: unknown) => void;
  readonly signal: AbortSignal | undefined;
  readonly cost: number;
}

class HashThread {
  /** Bytes of the jobs sent or queued and not answered yet (MIN_JOB_COST_BYTES at least each). */
  outstanding = 0;
  private readonly worker = startWorker();
  private readonly pending = new Map<number, Pending>();
  private queued: HashJob[] = [];
  private idleTimer: NodeJS.Timeout | undefined;
  private gone = false;

  /** `onGone` runs once, when the thread exits for any reason; the pool then forgets it. */
  constructor(private readonly onGone: (thread: HashThread) => void) {
    this.worker.unref();
    this.worker.on("message", (outcome: HashOutcome) => this.settle(outcome));
    this.worker.on("error", (err) => this.fail(new AgentError("Internal", `hash worker failed: ${err.message}`, { cause: err })));
    this.worker.on("exit", (code) => this.fail(new AgentError("Internal", `hash worker exited with code ${code}`)));
    this.retireWhenIdle(); // a thread started ahead of its jobs (startThreadAhead) that gets none
  }

  submit(job: HashJob, pending: Pending): void {
    if (this.pending.size === 0) {
      clearTimeout(this.idleTimer);
      this.worker.ref();
    }
    this.queued.push(job);
    this.pending.set(job.id, pending);
    this.outstanding += pending.cost;
  }

  /** Sends the queued jobs in one message. */
  flush(): void {
    if (this.queued.length === 0 || this.gone) return;
    this.worker.postMessage(this.queued);
    this.queued = [];
  }

  private settle(outcome: HashOutcome): void {
    const job = this.pending.get(outcome.id);
    if (!job) return;
    this.pending.delete(outcome.id);
    this.outstanding -= job.cost;
    if ("digest" in outcome) job.resolve(outcome.digest);
    else if ("cancelled" in outcome) job.reject(cancellation(job.signal));
    else job.reject(AgentError.from(Object.assign(new Error(outcome.error.message), { code: outcome.error.code })));
    if (this.pending.size === 0) {
      this.worker.unref();
      this.retireWhenIdle();
    }
  }

  private retireWhenIdle(): void {
    this.idleTimer = setTimeout(() => this.fail(new AgentError("Internal", "hash worker retired")), POOL_IDLE_MS).unref();
  }

  /** The thread goes (idle for POOL_IDLE_MS, crashed, exited): its unanswered jobs fail with `err`. */
  private fail(err: AgentError): void {
    if (this.gone) return;
    this.gone = true;
    clearTimeout(this.idleTimer);
    this.onGone(this);
    for (const job of this.pending.values()) job.reject(err);
    this.pending.clear();
    void this.worker.terminate();
  }
}

function cancellation(signal: AbortSignal | undefined): AgentError {
  try {
    throwIfAborted(signal);
  } catch (err) {
    return AgentError.from(err);
  }
  return new AgentError("Cancelled", "digest cancelled");
}

/**
 * The worker, from the compiled hash-worker.js; when this module runs from TypeScript source
 * (tests, `node --import tsx`), from hash-worker.ts through tsx, which only development installs have.
 */
function startWorker(): Worker {
  const fromSource = import.meta.url.endsWith(".ts");
  const script = new URL(fromSource ? "./hash-worker.ts" : "./hash-worker.js", import.meta.url);
  if (!fromSource) return new Worker(script);
  const tsxApi = import.meta.resolve("tsx/esm/api");
  const bootstrap = `import(${JSON.stringify(tsxApi)}).then((tsx) => { tsx.register(); return import(${JSON.stringify(script.href)}); })`;
  return new Worker(bootstrap, { eval: true });
}

/** Abort flags shared with the workers, one per signal. */
const abortFlags = new WeakMap<AbortSignal, Int32Array>();
const NEVER_ABORTED = new Int32Array(new SharedArrayBuffer(4));

function abortFlagOf(signal: AbortSignal | undefined): Int32Array {
  if (signal === undefined) return NEVER_ABORTED;
  let flag = abortFlags.get(signal);
  if (flag === undefined) {
    const created = new Int32Array(new SharedArrayBuffer(4));
    signal.addEventListener("abort", () => Atomics.store(created, 0, 1), { once: true });
    abortFlags.set(signal, (flag = created));
  }
  return flag;
}

const threads: (HashThread | undefined)[] = Array.from({ length: POOL_THREADS }, () => undefined);
let nextId = 1;
let flushScheduled = false;

function forget(thread: HashThread): void {
  const index = threads.indexOf(thread);
  if (index >= 0) threads[index] = undefined;
}

/** An idle thread if there is one, else a new one while the pool has room, else the least busy. */
function threadForNextJob(): HashThread {
  let best: HashThread | undefined;
  for (const thread of threads) {
    if (thread !== undefined && (best === undefined || thread.outstanding < best.outstanding)) best = thread;
  }
  if (best !== undefined && best.outstanding === 0) return best;
  const free = threads.indexOf(undefined);
  if (free >= 0) return (threads[free] = new HashThread(forget));
  return best!;
}

function flush(): void {
  flushScheduled = false;
  for (const thread of threads) thread?.flush();
}

/**
 * Starts a thread now if the pool has none, for jobs about to come: a thread takes ~50 ms to
 * take its first job. It retires after POOL_IDLE_MS if none comes.
 */
export function startThreadAhead(): void {
  if (hashPoolThreads() === 0) threads[0] = new HashThread(forget);
}

/** Pool threads running now (for tests and diagnostics). */
export function hashPoolThreads(): number {
  return threads.filter((thread) => thread !== undefined).length;
}

/**
 * Digests a whole file on a pool thread (read to its actual end; `sizeHint`, from a listing or
 * a stat, only sizes the buffer and balances the threads).
 * @throws AgentError from the file's errno (NotFound, PermissionDenied, ...), Cancelled when
 * the signal aborts, Internal if the worker dies.
 */
export function digestFileOffThread(
  path: string,
  algorithm: DigestAlgorithmName,
  options: { readonly signal?: AbortSignal; readonly sizeHint?: number } = {},
): Promise<string> {
  const { signal, sizeHint = 0 } = options;
  try {
    throwIfAborted(signal);
  } catch (err) {
    return Promise.reject(err);
  }
  const id = nextId++;
  const result = new Promise<string>((resolve, reject) => {
    const cost = Math.max(MIN_JOB_COST_BYTES, sizeHint);
    threadForNextJob().submit({ id, path, algorithm, sizeHint, abortFlag: abortFlagOf(signal) }, { resolve, reject, signal, cost });
  });
  if (!flushScheduled) {
    flushScheduled = true;
    queueMicrotask(flush);
  }
  return result;
}
