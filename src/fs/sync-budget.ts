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
 * switches to async for good, so a slow disk stalls the agent for a few slices at most. A few
 * slow calls are not enough: on a busy machine any call may be preempted or meet a GC pause.
 * Calls that can block for long by nature (fsync) never go through it.
 */
import { setImmediate as yieldToEventLoop } from "node:timers/promises";

/** Longest stretch of synchronous calls before the event loop gets a turn, in ms. */
const SLICE_MS = 10;
/** A call slower than this (ms) waited for the disk, or was preempted. */
const SLOW_CALL_MS = 1;
/** Calls per judgement: if a quarter of them were slow, the disk is slow. */
const WINDOW_CALLS = 20;

export class SyncBudget {
  private sync = true;
  private sliceStart = performance.now();
  private windowCalls = 0;
  private slowCalls = 0;

  /** True while synchronous calls are still cheap. */
  get fast(): boolean {
    return this.sync;
  }

  /**
   * Runs `syncCall` synchronously while the budget is fast, else `asyncCall`. Either way the
   * result (or error) comes back as a promise, so callers have one code path.
   */
  async run<T>(syncCall: () => T, asyncCall: () => Promise<T>): Promise<T> {
    if (!this.sync) return asyncCall();
    const started = performance.now();
    try {
      return syncCall();
    } finally {
      await this.charge(started);
    }
  }

  /**
   * Accounts for synchronous work started at `started` (performance.now()) while `fast`; may
   * give the event loop a turn.
   */
  async charge(started: number): Promise<void> {
    const now = performance.now();
    if (now - started > SLOW_CALL_MS) this.slowCalls++;
    if (++this.windowCalls >= WINDOW_CALLS) {
      if (this.slowCalls * 4 >= this.windowCalls) this.sync = false;
      this.windowCalls = 0;
      this.slowCalls = 0;
    }
    if (now - this.sliceStart < SLICE_MS) return;
    await yieldToEventLoop();
    this.sliceStart = performance.now();
  }
}
