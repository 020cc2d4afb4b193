/**
 * A full garbage collection on request, for the moment the agent knows that a large block of
 * memory has just become garbage and nothing needs it soon (the O_DIRECT staging pool once a
 * copy is over, fs/sequential-writer.ts).
 *
 * Why ask: V8 collects when the program allocates, not when it idles. An agent that had just
 * copied the 4 GiB benchmark tree still held all of its 174-183 MiB twelve seconds later, and
 * an agent between two migration passes may idle for hours beside Cassandra.
 *
 * `gc` exists only with --expose-gc; setting the flag at run time exposes it to contexts
 * created afterwards, hence the one new context. A collection holds the main thread ~1 ms per
 * MB of live heap (main.ts): ~25 ms after a copy of the large benchmark tree, more while a pass
 * holds a listing of millions of files.
 */
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";

let gc: (() => void) | undefined;

/** Runs a full, blocking garbage collection of this thread's heap. */
export function collectGarbage(): void {
  if (!gc) {
    setFlagsFromString("--expose-gc");
    gc = runInNewContext("gc") as () => void;
  }
  gc();
}
