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
 * (the test suite's temporary trees) it cannot see, but it can see their effect: after the wait
 * for its own, it creates PROBE_FILES files, and if each took more than SLOW_CREATE_US (20-70 µs on
 * a settled filesystem here, 630-940 µs in the six minutes after 300,000 deletions), it waits the
 * whole 6 minutes, not knowing when they happened. Only once: probing until creates were fast
 * did not work. Each probe's creates took the inodes it had been slowed by, so the probes got
 * faster before 6 minutes (754, 746, 586, 438, 421, 278, 206, 95 µs, 20 s apart), while creates in
 * a new directory elsewhere right after were as slow as ever (492-758 µs). And probes that deleted
 * their files got slower and slower (43, 149, 278, 366, 477, 674 µs). The probe's files are kept
 * for the run's cleanup.
 */
import { closeSync, existsSync, openSync } from "node:fs";
import { mkdir, mkdtemp, readFile, stat, writeFile } from "node:fs/promises";
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

/** Files the create probe makes (and removes): few enough to leave no trace of their own. */
export const PROBE_FILES = 1000;
/** Time per create above which the filesystem is still passing over recent deletions. */
export const SLOW_CREATE_US = 150;

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
 * Microseconds that creating an empty file takes, over `files` synchronous creates in a new
 * directory under `dir`, which is left in place (see the module comment). Wall time: the kernel's
 * share of a create is all CPU, and this process's CPU times are counted in scheduler ticks (4 ms
 * here), too coarse for a probe of a few tens of ms.
 */
export async function createCostUs(dir: string, files = PROBE_FILES): Promise<number> {
  await mkdir(dir, { recursive: true });
  const probe = await mkdtemp(path.join(dir, "create-probe-"));
  const started = performance.now();
  for (let i = 0; i < files; i++) closeSync(openSync(path.join(probe, `f${i}`), "w"));
  return ((performance.now() - started) * 1000) / files;
}

export interface SettleOptions {
  /** Where deletions are recorded per filesystem (recordDeletion); the system's temporary directory by default. */
  readonly sharedDir?: string;
  /**
   * Where the create probes leave their files, on the work directory's filesystem, for the
   * caller to delete with its own cleanup; `<workDir>/create-probes` by default.
   */
  readonly probeDir?: string;
  /** createCostUs unless set (tests); called with probeDir. */
  readonly probe?: (dir: string) => Promise<number>;
  /** DELETION_SETTLE_MS unless set (tests): the wait after a slow probe. */
  readonly slowCreateWaitMs?: number;
  /** onExt4WithoutJournal unless set (tests): whether the filesystem of `dir` needs settling. */
  readonly needsSettling?: (dir: string) => Promise<boolean>;
}

/**
 * On ext4 without a journal: waits until the last large deletion recorded for `workDir`
 * (lastLargeDeletion) is {@link DELETION_SETTLE_MS} old; then, if creating files there is still
 * slow (someone else deleted many files), that long again. Returns the milliseconds slept.
 */
export async function settleDeletions(workDir: string, log: (line: string) => void, options: SettleOptions = {}): Promise<number> {
  const { sharedDir = os.tmpdir(), probe = createCostUs, slowCreateWaitMs = DELETION_SETTLE_MS } = options;
  if (!(await (options.needsSettling ?? onExt4WithoutJournal)(workDir))) return 0;
  let waited = 0;
  const last = await lastLargeDeletion(workDir, sharedDir);
  const waitMs = last === undefined ? 0 : last.at + DELETION_SETTLE_MS - Date.now();
  if (last !== undefined && waitMs > 0) {
    log(
      `ext4 without a journal: waiting ${(waitMs / 1000).toFixed(0)} s, until the ~${last.files} files deleted ${((Date.now() - last.at) / 1000).toFixed(0)} s ago ` +
        "no longer slow down creating files (test/bench/settle.ts)",
    );
    await sleep(waitMs);
    waited += waitMs;
  }
  const costUs = await probe(options.probeDir ?? path.join(workDir, "create-probes"));
  if (costUs > SLOW_CREATE_US) {
    log(
      `ext4 without a journal: creating a file takes ${costUs.toFixed(0)} µs (over ${SLOW_CREATE_US}): files were deleted in the last 6 minutes, ` +
        `not by this benchmark; waiting ${(slowCreateWaitMs / 1000).toFixed(0)} s (test/bench/settle.ts)`,
    );
    await sleep(slowCreateWaitMs);
    waited += slowCreateWaitMs;
  }
  return waited;
}
