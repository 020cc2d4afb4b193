/**
 * Walks an instance's migrated roots into FileEntry listings (Java: CassandraInstanceFiles).
 *
 * - Roots in migrationRoots() order, each depth-first pre-order; the root itself is not listed;
 *   a configured root that does not exist is skipped.
 * - Directories matched by dirs_to_exclude are skipped with their subtree; files matched by
 *   files_to_exclude are skipped; download temp files are skipped (and reported).
 * - Symlinks are never traversed; their attributes are those of the target.
 * - A path that vanishes during the walk (compaction on a live source) is left out instead of
 *   failing the listing. Other IO errors reject with an AgentError.
 * - With a digest algorithm (a verification's listing), each regular file is opened instead of
 *   stat'ed, and its size, mtime and digest all come from that one descriptor: one path lookup
 *   per file where a listing followed by digests took two. Files of up to SYNC_DIGEST_MAX_BYTES
 *   are digested, and the first bigger ones up to a budget per listing (digestsWhileListing).
 *   Files left without a digest (the other big ones, symlinks, unreadable ones, any file met
 *   while the budget is slow) are for the caller to digest separately.
 */
import { closeSync, fstatSync, openSync, readdirSync, statSync, type BigIntStats, type Dirent } from "node:fs";
import { readdir, stat } from "node:fs/promises";
import path from "node:path";
import { AgentError } from "../errors.js";
import { digestOpenFileSync, digestsWhileListing, LISTING_INLINE_HASH_MS, SYNC_DIGEST_MAX_BYTES } from "../digest/digest.js";
import { childFileUrl, type MigrationRoot, rootFileUrl } from "../instance/directories.js";
import type { DigestAlgorithmName, FileEntry } from "../migration/types.js";
import type { Exclusions } from "./exclude.js";
import { mtimeMsOf } from "./mtime.js";
import { OPEN_CHECKED } from "./safe-path.js";
import { SyncBudget } from "./sync-budget.js";
import { isTempName } from "./temp-name.js";

export interface LocalEntry extends FileEntry {
  readonly root: MigrationRoot;
  /** POSIX path relative to the root. */
  readonly relPath: string;
  readonly absPath: string;
}

export interface Listing {
  readonly entries: LocalEntry[];
  /** Sum of FILE sizes in bytes. */
  readonly totalSize: number;
  /**
   * Download temp files and staging directories found (absolute paths, temp-name.ts); never
   * part of `entries`, and a staging directory's contents are not walked.
   */
  readonly temps: string[];
}

const STAT_PARALLELISM = 32;
function vanished(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException).code;
  return code === "ENOENT" || code === "ENOTDIR";
}

export interface WalkOptions {
  /** Receives the download temp files and staging directories found (absolute paths); they are never listed. */
  readonly temps?: string[];
  /** Synchronous readdir/stat while the metadata is cached (sync-budget.ts); tests pass their own. */
  readonly budget?: SyncBudget;
  /** Digest small regular files as they are listed (see the header), in this algorithm. */
  readonly digestAlgorithm?: DigestAlgorithmName;
  /** The listing's budget for hashing big files itself (digestsWhileListing); LISTING_INLINE_HASH_MS unless set (tests). */
  readonly inlineHashMs?: number;
}

/** Lists every migratable file and directory under `roots`. */
export async function listRoots(
  roots: readonly MigrationRoot[],
  exclusions: Exclusions,
  options: Pick<WalkOptions, "digestAlgorithm"> = {},
): Promise<Listing> {
  const entries: LocalEntry[] = [];
  const temps: string[] = [];
  let totalSize = 0;
  for await (const batch of walkRoots(roots, exclusions, WALK_BATCH_ENTRIES, { ...options, temps })) {
    for (const entry of batch) {
      entries.push(entry);
      if (entry.fileType === "FILE") totalSize += entry.size;
    }
  }
  return { entries, totalSize, temps };
}

/** Entries per batch of listRoots's walk. */
const WALK_BATCH_ENTRIES = 1000;

/**
 * The walk of listRoots, as it goes: entries in listing order, `batchEntries` at a time (the
 * last batch may be shorter). A peer's listing is sent batch by batch while the walk goes on,
 * so that the destination decodes while the source still walks, and the source holds one
 * batch instead of the whole tree (the entries then die young: a whole small-tree listing kept
 * until the end cost the source ~75 ms of GC per listing). Download temp files and staging directories go to `temps`.
 *
 * Depth-first with an explicit stack of directories rather than a recursive generator
 * (`yield*` per directory), and the per-entry work in plain functions (statEntriesSync,
 * statEntriesAsync): TurboFan compiles an async generator at a high cost, and a fresh
 * destination agent compiled the recursive walk two or three times during its first
 * verification (~40 ms each, --trace-opt), on the two cores both walks needed. XXHash32
 * verifications with fresh agents, seven interleaved rounds: medians 0.463 / 0.418 s (first /
 * second of the agent) against 0.483 / 0.461 s; MD5 unchanged.
 */
export async function* walkRoots(
  roots: readonly MigrationRoot[],
  exclusions: Exclusions,
  batchEntries: number,
  options: WalkOptions = {},
): AsyncGenerator<LocalEntry[]> {
  const { temps = [], budget = new SyncBudget(), digestAlgorithm } = options;
  const inlineHashing: InlineHashing = { spentMs: 0, budgetMs: options.inlineHashMs ?? LISTING_INLINE_HASH_MS };
  let batch: LocalEntry[] = [];
  for (const root of roots) {
    const base = root.path;
    try {
      if (!(await stat(base)).isDirectory()) continue;
    } catch (err) {
      if (vanished(err)) continue;
      throw new AgentError("Internal", `cannot read ${base}: ${(err as Error).message}`, { cause: err });
    }
    const walk: RootWalk = { root, exclusions, temps, budget, digestAlgorithm, inlineHashing, turn: undefined };
    /** The directories being walked, innermost last: each is emitted up to its `next` entry. */
    const stack: DirectoryListing[] = [];
    const top = await listDirectory(walk, base, "", rootFileUrl(root));
    if (top) stack.push(top);
    while (stack.length > 0) {
      const dir = stack[stack.length - 1]!;
      if (dir.next === dir.names.length) {
        stack.pop();
        continue;
      }
      const k = dir.next++;
      const entry = dir.found[k];
      if (!entry) continue;
      batch.push(entry);
      if (batch.length >= batchEntries) {
        yield batch;
        batch = [];
      }
      // Traverse real directories only, never a symlink to one.
      if (entry.fileType === "DIRECTORY" && dir.names[k]!.isDirectory()) {
        const sub = await listDirectory(walk, entry.absPath, entry.relPath, entry.fileUrl);
        if (sub) stack.push(sub);
      }
    }
  }
  if (batch.length > 0) yield batch;
}

/** What the walk of one root shares across its directories. */
interface RootWalk {
  readonly root: MigrationRoot;
  readonly exclusions: Exclusions;
  readonly temps: string[];
  readonly budget: SyncBudget;
  readonly digestAlgorithm: DigestAlgorithmName | undefined;
  /** Shared by every root of the listing. */
  readonly inlineHashing: InlineHashing;
  /** The event loop's turn that statEntriesSync stopped for, for the walk to await. */
  turn: Promise<void> | undefined;
}

/** A listing's hashing of big files itself (digestsWhileListing), in ms. */
interface InlineHashing {
  spentMs: number;
  readonly budgetMs: number;
}

/** One directory of the walk: its sorted entries, the listing entry found for each, and how far it has been emitted. */
interface DirectoryListing {
  readonly names: readonly Dirent[];
  /** The directory's absolute path with a trailing separator. */
  readonly prefix: string;
  readonly relDir: string;
  readonly dirUrl: string;
  /** Per name: its listing entry, or undefined for what the listing leaves out. */
  readonly found: (LocalEntry | undefined)[];
  /** The next entry to emit (walkRoots). */
  next: number;
}

/**
 * Reads one directory and stats (or opens and digests) its entries, in name order.
 * Undefined when the directory vanished.
 */
async function listDirectory(walk: RootWalk, absDir: string, relDir: string, dirUrl: string): Promise<DirectoryListing | undefined> {
  const { budget } = walk;
  let names;
  try {
    names = await budget.run(
      () => readdirSync(absDir, { withFileTypes: true }),
      () => readdir(absDir, { withFileTypes: true }),
    );
  } catch (err) {
    if (vanished(err)) return undefined;
    throw new AgentError("Internal", `cannot list ${absDir}: ${(err as Error).message}`, { cause: err });
  }
  names.sort(byName);
  const dir: DirectoryListing = {
    names,
    // absDir is normalized (roots are path.resolve'd) and a name has no slash: no path.join.
    prefix: absDir === path.sep ? absDir : absDir + path.sep,
    relDir,
    dirUrl,
    found: new Array(names.length),
    next: 0,
  };
  for (let i = 0; i < names.length; ) {
    if (budget.fast) {
      i = statEntriesSync(walk, dir, i);
      const turn = walk.turn;
      if (turn) {
        walk.turn = undefined;
        await turn;
      }
    } else {
      i = await statEntriesAsync(walk, dir, i);
    }
  }
  return dir;
}

/**
 * Stats (or opens and digests) the directory's entries from `from` on, one at a time with no
 * promise per entry (a listing stats every path), while the budget stays fast. Stops early when
 * the event loop's turn is due, leaving the promise to await in `walk.turn`.
 * @returns the index of the first entry not yet done.
 */
function statEntriesSync(walk: RootWalk, dir: DirectoryListing, from: number): number {
  const { root, exclusions, temps, budget, digestAlgorithm } = walk;
  const { names, prefix, found } = dir;
  let i = from;
  while (i < names.length && budget.fast) {
    const dirent = names[i]!;
    const absPath = prefix + dirent.name;
    if (isTempName(dirent.name) && (dirent.isFile() || dirent.isDirectory())) {
      temps.push(absPath);
      i++;
      continue;
    }
    const started = performance.now();
    let st: BigIntStats | undefined;
    let digested: OpenDigest | undefined;
    try {
      if (digestAlgorithm !== undefined && dirent.isFile() && !exclusions.isFileExcluded(root, absPath)) {
        digested = statAndDigestSync(absPath, digestAlgorithm, walk.inlineHashing);
        st = digested?.stats;
      }
      st ??= statSync(absPath, { bigint: true });
    } catch (err) {
      statFailed(absPath, err);
    }
    // A file opened for its digest was checked against files_to_exclude before.
    if (st) found[i] = entryOf(walk, dir.relDir, dir.dirUrl, dirent, absPath, st, digested?.digest, digested?.stats.isFile() === true);
    i++;
    // Only the filesystem calls are charged: hashing costs the same however the bytes were read.
    const turn = budget.charge(started + (digested?.hashingMs ?? 0));
    if (turn) {
      walk.turn = turn;
      break;
    }
  }
  return i;
}

/**
 * For slow metadata: stats the next STAT_PARALLELISM entries from `from` at once through the
 * thread pool (no digests: those files are left to the caller's separate digests).
 * @returns the index of the first entry not yet done.
 */
async function statEntriesAsync(walk: RootWalk, dir: DirectoryListing, from: number): Promise<number> {
  const { names, prefix, found } = dir;
  const slice = names.slice(from, from + STAT_PARALLELISM);
  await Promise.all(
    slice.map(async (dirent, j) => {
      const absPath = prefix + dirent.name;
      if (isTempName(dirent.name) && (dirent.isFile() || dirent.isDirectory())) {
        walk.temps.push(absPath);
        return;
      }
      const st = await stat(absPath, { bigint: true }).catch((err: unknown) => statFailed(absPath, err));
      if (st) found[from + j] = entryOf(walk, dir.relDir, dir.dirUrl, dirent, absPath, st);
    }),
  );
  return from + slice.length;
}

function byName(a: Dirent, b: Dirent): number {
  return a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
}

/**
 * The listing entry of a stat'ed path, or undefined for what a listing leaves out: other types
 * than files and directories (sockets, FIFOs, dangling links) and excluded paths.
 * `included`: the caller already knows `absPath` to be a file that files_to_exclude does not match.
 */
function entryOf(
  walk: RootWalk,
  relDir: string,
  dirUrl: string,
  dirent: Dirent,
  absPath: string,
  st: BigIntStats,
  digest?: string,
  included = false,
): LocalEntry | undefined {
  const isDir = st.isDirectory();
  if (!isDir && !st.isFile()) return undefined;
  const { root, exclusions } = walk;
  if (!included && (isDir ? exclusions.isDirExcluded(root, absPath) : exclusions.isFileExcluded(root, absPath))) return undefined;
  return {
    root,
    relPath: relDir === "" ? dirent.name : `${relDir}/${dirent.name}`,
    absPath,
    fileUrl: childFileUrl(dirUrl, dirent.name),
    size: isDir ? -1 : Number(st.size),
    fileType: isDir ? "DIRECTORY" : "FILE",
    lastModifiedTime: mtimeMsOf(st),
    // Always present, so that every entry has one shape (no spread per entry).
    digest,
  };
}

/** A path that vanished is left out; any other stat error fails the listing. */
function statFailed(absPath: string, err: unknown): undefined {
  if (vanished(err)) return undefined;
  throw new AgentError("Internal", `cannot stat ${absPath}: ${(err as Error).message}`, { cause: err });
}

interface OpenDigest {
  readonly stats: BigIntStats;
  /** Undefined for a big file left for a separate digest (digestsWhileListing), or one whose read failed. */
  readonly digest?: string;
  readonly hashingMs: number;
}

/**
 * Opens a file the walk found regular (without following a symlink, without waiting on a FIFO),
 * fstats it and, if it is still a regular file that digestsWhileListing admits, digests it.
 * Undefined when it could not be opened for another reason than vanishing (a symlink swapped
 * in, no read permission): the caller stats the path as a plain listing does. A failed read
 * leaves the digest out, for the caller's separate digest to report.
 * @throws the open's or fstat's errno error when the file vanished (ENOENT, ENOTDIR).
 */
function statAndDigestSync(absPath: string, algorithm: DigestAlgorithmName, inlineHashing: InlineHashing): OpenDigest | undefined {
  let fd: number;
  try {
    fd = openSync(absPath, OPEN_CHECKED);
  } catch (err) {
    if (vanished(err)) throw err;
    return undefined;
  }
  try {
    const stats = fstatSync(fd, { bigint: true });
    const size = Number(stats.size);
    if (!stats.isFile() || !digestsWhileListing(size, inlineHashing.spentMs, inlineHashing.budgetMs)) return { stats, hashingMs: 0 };
    const started = performance.now();
    try {
      const { digest, hashingMs } = digestOpenFileSync(fd, algorithm);
      return { stats, digest, hashingMs };
    } catch {
      return { stats, hashingMs: 0 };
    } finally {
      if (size > SYNC_DIGEST_MAX_BYTES) inlineHashing.spentMs += performance.now() - started;
    }
  } finally {
    closeSync(fd);
  }
}

/** Strips the local fields, leaving the wire shape. */
export function toFileEntry(e: LocalEntry): FileEntry {
  return { fileUrl: e.fileUrl, size: e.size, fileType: e.fileType, lastModifiedTime: e.lastModifiedTime };
}
