/**
 * Durability for many small files at once.
 *
 * One fsync per file costs a journal commit each: on the reference machine ~1.3 ms per small
 * file, more than writing it. syncFiles makes a whole batch of just-written files durable with
 * one syncfs(2) of their filesystem instead, through coreutils' `sync -f` (Node has no binding),
 * about 2.5 ms per batch. syncfs writes back and waits for every dirty page and inode of the
 * filesystem and flushes the device cache, so each file is exactly as durable as after its own
 * fsync. Where `sync -f` is missing or fails, every file is fsynced instead.
 */
import { execFile } from "node:child_process";
import { open } from "node:fs/promises";
import path from "node:path";
import pLimit from "p-limit";

/** Whether `sync -f` worked so far: undefined until tried, false after a failure. */
let syncfsWorks: boolean | undefined;

/** fsyncs per fallback batch at once (the thread pool has 4 threads). */
const FSYNC_PARALLELISM = 4;

/**
 * Makes `files` durable: data, size and times, as fsync would.
 * @throws the fs error when a fallback fsync fails.
 */
export async function syncFiles(files: readonly string[]): Promise<void> {
  if (files.length === 0) return;
  if (syncfsWorks !== false) {
    const ok = await syncFileSystemsOf(new Set(files.map((file) => path.dirname(file))));
    if (syncfsWorks === undefined) syncfsWorks = ok;
    if (ok) return;
  }
  const limit = pLimit(FSYNC_PARALLELISM);
  await Promise.all(
    files.map((file) =>
      limit(async () => {
        const handle = await open(file, "r");
        try {
          await handle.sync();
        } finally {
          await handle.close();
        }
      }),
    ),
  );
}

/**
 * syncfs(2) of the filesystems holding `dirs`, through one `sync -f` (a filesystem already
 * synced costs little the second time); false when that failed.
 */
function syncFileSystemsOf(dirs: ReadonlySet<string>): Promise<boolean> {
  return new Promise((resolve) => {
    execFile("sync", ["-f", "--", ...dirs], { timeout: 120_000 }, (err) => resolve(err === null));
  });
}
