/** Millisecond-exact file times. */
import { statSync, utimesSync, type BigIntStats } from "node:fs";
import { stat, utimes, type FileHandle } from "node:fs/promises";

/**
 * Sets a path's mtime (and atime) so that it reads back as exactly `mtimeMs` milliseconds.
 * Node converts fractional seconds to a timespec through a double, which truncates about half
 * of all millisecond values to the millisecond below; aiming at the middle of the millisecond
 * makes the truncation harmless.
 */
export async function setMtimeMs(path: string, mtimeMs: number): Promise<void> {
  const seconds = exactSeconds(mtimeMs);
  await utimes(path, seconds, seconds);
}

/** setMtimeMs with a synchronous call (sync-budget.ts). */
export function setMtimeMsSync(path: string, mtimeMs: number): void {
  const seconds = exactSeconds(mtimeMs);
  utimesSync(path, seconds, seconds);
}

/** setMtimeMs on an open file (futimes: no path lookup). */
export async function setHandleMtimeMs(handle: FileHandle, mtimeMs: number): Promise<void> {
  const seconds = exactSeconds(mtimeMs);
  await handle.utimes(seconds, seconds);
}

/** The seconds value to pass to utimes/futimes so that the mtime reads back as `mtimeMs` (see setMtimeMs). */
export function exactSeconds(mtimeMs: number): number {
  return (mtimeMs + 0.5) / 1000;
}

/** mtime in whole epoch milliseconds, truncated like Java's FileTime.toMillis(). */
export function mtimeMsOf(stats: { mtimeNs: bigint }): number {
  return Number(stats.mtimeNs / 1_000_000n);
}

/** stat() with bigint times; returns undefined when the path does not exist. */
export async function statOrUndefined(path: string) {
  try {
    return await stat(path, { bigint: true });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT" || (err as NodeJS.ErrnoException).code === "ENOTDIR") return undefined;
    throw err;
  }
}

/**
 * statOrUndefined with a synchronous call (sync-budget.ts). A missing path is answered without
 * an exception (throwIfNoEntry): a first pass into an empty destination asks for every path.
 */
export function statOrUndefinedSync(path: string): BigIntStats | undefined {
  try {
    return statSync(path, { bigint: true, throwIfNoEntry: false });
  } catch (err) {
    // throwIfNoEntry covers ENOENT only; a file where a directory was expected is missing too.
    if ((err as NodeJS.ErrnoException).code === "ENOTDIR") return undefined;
    throw err;
  }
}
