/**
 * When to call the filesystem synchronously.
 *
 * A metadata call or a small read served from the kernel's caches takes a few µs done
 * synchronously, against tens of µs through libuv's 4-thread pool (a promise, a queue, a thread
 * hop and a wake-up each way). Over tens of thousands of small SSTable components that
 * difference decides the run time: listing 20,000 files takes ~0.1 s synchronously and ~0.7 s
 * through the pool on the reference machine.
 *
 * A SyncBudget lets one walk or one stream run such calls synchronously while they stay cheap:
 * after every SLICE_MS of synchronous work the event loop gets a turn, and once a quarter of the
 * last WINDOW_CALLS calls took over SLOW_CALL_MS each (cold metadata, a slow disk) the budget
 * goes async for ASYNC_FIRST_MS, then tries synchronous calls again; each time the next window
 * is slow as well, the async period doubles (up to ASYNC_MAX_MS), so a slow disk stalls the
 * event loop for one window of calls per period at most. A few slow calls are not enough: on a
 * busy machine any call may be preempted or meet a GC pause. Going back to synchronous calls
 * matters on a busy 2-core host: there a burst of preemptions used to switch a whole download
 * pass to the pool for good (small-tree copy, destination CPU: 7.9-8.7 s with that, 7.2-7.5 s
 * with a budget that never went async).
 * Calls that can block for long by nature (fsync) never go through it.
 */
import { setImmediate as yieldToEventLoop } from "node:timers/promises";

/** Longest stretch of synchronous calls before the event loop gets a turn, in ms. */
const SLICE_MS = 10;
/** A call slower than this (ms) waited for the disk, or was preempted. */
const SLOW_CALL_MS = 1;
/** Calls per judgement: if a quarter of them were slow, the disk is slow. */
const WINDOW_CALLS = 20;
/** The first async period after a slow window, in ms; it doubles while windows stay slow. */
export const ASYNC_FIRST_MS = 500;
/** The longest async period, in ms. */
export const ASYNC_MAX_MS = 30_000;

export interface SyncBudgetOptions {
  /** ASYNC_FIRST_MS unless set (tests shorten it). */
  readonly asyncFirstMs?: number;
  /** ASYNC_MAX_MS unless set. */
  readonly asyncMaxMs?: number;
}

export class SyncBudget {
  /** Until when calls go async (performance.now() ms); 0 while synchronous. */
  private asyncUntil = 0;
  private readonly asyncFirstMs: number;
  private readonly asyncMaxMs: number;
  /** The next async period, doubled by every slow window that follows one. */
  private asyncPeriodMs: number;
  private sliceStart = performance.now();
  private windowCalls = 0;
  private slowCalls = 0;

  constructor(options: SyncBudgetOptions = {}) {
    this.asyncFirstMs = options.asyncFirstMs ?? ASYNC_FIRST_MS;
    this.asyncMaxMs = options.asyncMaxMs ?? ASYNC_MAX_MS;
    this.asyncPeriodMs = this.asyncFirstMs;
  }

  /** True while synchronous calls are cheap (or are being tried again after an async period). */
  get fast(): boolean {
    if (this.asyncUntil === 0) return true;
    if (performance.now() < this.asyncUntil) return false;
    // The period is over: try synchronous calls again, judged by a fresh window.
    this.asyncUntil = 0;
    this.windowCalls = 0;
    this.slowCalls = 0;
    this.sliceStart = performance.now();
    return true;
  }

  /**
   * Runs `syncCall` synchronously while the budget is fast, else `asyncCall`. Either way the
   * result (or error) comes back as a promise, so callers have one code path. Small-file work
   * makes this call tens of thousands of times per pass: it allocates one promise per call, and
   * a second only when the event loop's turn is due.
   */
  run<T>(syncCall: () => T, asyncCall: () => Promise<T>): Promise<T> {
    if (!this.fast) return asyncCall();
    const started = performance.now();
    let result: T;
    try {
      result = syncCall();
    } catch (err) {
      const turn = this.charge(started);
      return turn ? turn.then(() => Promise.reject(err as Error)) : Promise.reject(err as Error);
    }
    const turn = this.charge(started);
    return turn ? turn.then(() => result) : Promise.resolve(result);
  }

  /**
   * Accounts for synchronous work started at `started` (performance.now()) while `fast`.
   * Returns a promise to await when the event loop's turn is due, else undefined (awaiting
   * undefined is fine too).
   */
  charge(started: number): Promise<void> | undefined {
    const now = performance.now();
    if (now - started > SLOW_CALL_MS) this.slowCalls++;
    if (++this.windowCalls >= WINDOW_CALLS) {
      if (this.slowCalls * 4 >= this.windowCalls) {
        this.asyncUntil = now + this.asyncPeriodMs;
        this.asyncPeriodMs = Math.min(2 * this.asyncPeriodMs, this.asyncMaxMs);
      } else {
        this.asyncPeriodMs = this.asyncFirstMs;
      }
      this.windowCalls = 0;
      this.slowCalls = 0;
    }
    if (now - this.sliceStart < SLICE_MS) return undefined;
    return yieldToEventLoop().then(() => {
      this.sliceStart = performance.now();
    });
  }
}
