/**
 * Keeps a filesystem's memory of the benchmark's own deletions out of its measurements.
 *
 * ext4 without a journal (a common VM root filesystem) avoids reusing an inode for 60 s after its
 * deletion, and for 6 min while its inode-table block is dirty (fs/ext4/ialloc.c: find_inode_bit →
 * recently_deleted, RECENTCY_MIN and RECENTCY_DIRTY). Each file created meanwhile scans past every
 * such inode of its block group, and the creates themselves keep those blocks dirty. After the
 * benchmark deleted 20,000-file trees (regenerating the dataset, or the previous run's cleanup),
 * tens of thousands of creates cost seconds of kernel CPU each, charged to whichever tool copied
 * first: in the first repetition that was always lm-sidecar (4.1-7.8 s instead of 1.9-2.6 s).
 *
 * So the benchmark rewrites its dataset in place rather than regenerating it, records when it does
 * delete trees, and before measuring waits until the last deletion is 6 min old. The record is kept
 * in the work directory and, per filesystem, in the system's temporary directory, so that a run
 * also waits for another profile's cleanup on the same filesystem (a large-profile run started
 * right after a small-profile one measured rsync's first large copy at 8.2 s instead of ~5).
 * Filesystems with a journal never apply the rule, and never wait. Deletions by other processes
 * (the test suite's temporary trees) it cannot see.
 */
import { existsSync } from "node:fs";
import { readFile, stat, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";

/** The kernel's RECENTCY_MIN + RECENTCY_DIRTY (360 s), one more for its whole-second dtime, one for clock skew. */
export const DELETION_SETTLE_MS = 362_000;

/**
 * Fewer deleted files than this cost nothing measurable: the large profile deletes ~2,500 (~400 per
 * tree), so a create scans at most a few hundred of them, against ~140,000 after small-profile runs.
 */
export const SETTLE_MIN_FILES = 10_000;

const MARKER = "last-deletion.json";

interface Deletion {
  /** Epoch ms. */
  readonly at: number;
  readonly files: number;
}

/** Where deletions are also recorded per filesystem: `sharedDir`, one file per device. */
async function sharedMarker(workDir: string, sharedDir: string): Promise<string> {
  const { dev } = await stat(workDir);
  return path.join(sharedDir, `lm-bench-last-deletion-dev${dev}.json`);
}

/**
 * Notes that about `files` files under `workDir` were deleted just now: in `workDir`, and, if that
 * many matter (SETTLE_MIN_FILES), for its filesystem in `sharedDir` (default: the system's
 * temporary directory), where a smaller deletion must not replace a large one's record.
 */
export async function recordDeletion(workDir: string, files: number, sharedDir = os.tmpdir()): Promise<void> {
  const record = JSON.stringify({ at: Date.now(), files } satisfies Deletion) + "\n";
  await writeFile(path.join(workDir, MARKER), record);
  if (files >= SETTLE_MIN_FILES) await writeFile(await sharedMarker(workDir, sharedDir), record);
}

/**
 * The latest recorded deletion of at least SETTLE_MIN_FILES files that matters to `workDir`: its
 * own, or any other on its filesystem. Undefined when there is none.
 */
export async function lastLargeDeletion(workDir: string, sharedDir = os.tmpdir()): Promise<Deletion | undefined> {
  const read = async (file: string): Promise<Deletion | undefined> => {
    try {
      const parsed = JSON.parse(await readFile(file, "utf8")) as Partial<Deletion>;
      return typeof parsed.at === "number" && typeof parsed.files === "number" && parsed.files >= SETTLE_MIN_FILES
        ? { at: parsed.at, files: parsed.files }
        : undefined;
    } catch {
      return undefined;
    }
  };
  const own = await read(path.join(workDir, MARKER));
  const shared = await sharedMarker(workDir, sharedDir).then(read, () => undefined);
  if (own === undefined || shared === undefined) return own ?? shared;
  return shared.at > own.at ? shared : own;
}

/**
 * True when `dir` is on ext4 without a journal: its mount in /proc/self/mountinfo is ext4 and the
 * device has no /proc/fs/jbd2 entry. False wherever that cannot be told (not Linux, no /proc).
 */
export async function onExt4WithoutJournal(dir: string): Promise<boolean> {
  try {
    const { dev } = await stat(dir);
    const majorMinor = `${Math.floor(dev / 256) & 0xfff}:${(dev & 0xff) | (Math.floor(dev / 4096) & ~0xff)}`;
    const mounts = (await readFile("/proc/self/mountinfo", "utf8")).split("\n").map((line) => line.split(" "));
    // mountinfo: id parent major:minor root mountpoint options [optional fields] - fstype source superoptions
    const mount = mounts.find((f) => f[2] === majorMinor);
    if (!mount || mount[mount.indexOf("-") + 1] !== "ext4") return false;
    const uevent = await readFile(`/sys/dev/block/${majorMinor}/uevent`, "utf8");
    const devName = /^DEVNAME=(.+)$/m.exec(uevent)?.[1];
    return devName !== undefined && !existsSync(`/proc/fs/jbd2/${devName.replaceAll("/", "!")}-8`);
  } catch {
    return false;
  }
}

/**
 * Waits until the last large deletion recorded for `workDir` (lastLargeDeletion) is
 * {@link DELETION_SETTLE_MS} old, when the filesystem needs it. Returns the milliseconds waited.
 */
export async function settleDeletions(workDir: string, log: (line: string) => void, sharedDir = os.tmpdir()): Promise<number> {
  const last = await lastLargeDeletion(workDir, sharedDir);
  if (last === undefined) return 0;
  const waitMs = last.at + DELETION_SETTLE_MS - Date.now();
  if (!(waitMs > 0) || !(await onExt4WithoutJournal(workDir))) return 0;
  log(
    `ext4 without a journal: waiting ${(waitMs / 1000).toFixed(0)} s, until the ~${last.files} files deleted ${((Date.now() - last.at) / 1000).toFixed(0)} s ago ` +
      "no longer slow down creating files (test/bench/settle.ts)",
  );
  await sleep(waitMs);
  return waitMs;
}
