/**
 * New table directories are filled under a staging name and renamed into place whole.
 *
 *   plan: a directory the pass creates, with files and no subdirectory to create, whose files
 *         all go in batches (batch-transfer.ts) or are empty
 *   mkdir  parent/.lm-sidecar.<table dir>.partial          (temp-name.ts: every listing skips it)
 *   write  each file there under its own name: no temp name, no rename of its own
 *   durable (the batch's syncfs), then settled, for every file of the directory
 *   rename the staging directory to its real name, once; it and its parent join touchedDirs
 *
 * Why: a first pass into an empty destination creates nearly every file in a directory that did
 * not exist, and a file's own rename (temp name -> real name) cost the destination's main thread
 * ~240 ms of the ~1.95 s it spent copying the small benchmark tree (~17,700 renames).
 *
 * The guarantees stay those of the per-file path: a real table directory appears only once each
 * of its files is complete, checked against the source's hash and durable. A file that fails in
 * its batch is retried alone (downloadFile), with a temp name inside the staging directory. A
 * directory is published once every one of its files has settled, whatever the outcome (a
 * failed or vanished file is simply absent, as it would be without staging). Directories of a
 * cancelled or stopped phase are never published: the next pass's CLEANING deletes their
 * staging directories, like any temp file without a resume record.
 *
 * The price: a pass that stops (cancel, crash, source down) loses the files of the directories
 * it was filling, where per-file renames would have kept those already in place. Batches take
 * files in path order, so that is a few directories per stream.
 */
import { rename, renameSync } from "node:fs";
import path from "node:path";
import { promisify } from "node:util";
import { AgentError } from "../../errors.js";
import { ParentCache } from "../../fs/parent-dir.js";
import { tempPathFor } from "../../fs/temp-name.js";
import { isBatchable } from "./batch-transfer.js";
import type { TransferContext } from "./file-transfer.js";
import type { SourceTarget } from "./plan.js";

const renameAsync = promisify(rename);

/**
 * Longest directory name staged: its staging name adds ~20 bytes, and a name must stay within
 * NAME_MAX (255 bytes). Cassandra's table directories are at most 48 + 33 characters.
 */
const MAX_STAGED_NAME_BYTES = 200;

/** A staged directory: where its files go until it is published, and how many have yet to settle. */
interface StagedDirectory {
  /** The directory's own entry (its real path). */
  readonly target: SourceTarget;
  readonly stagingPath: string;
  unsettled: number;
}

export class DirectoryStaging {
  /** By real directory path. */
  private readonly directories = new Map<string, StagedDirectory>();
  /** The directory of each target handed out by targetFor. */
  private readonly directoryOf = new Map<SourceTarget, StagedDirectory>();
  /** Publications started, awaited by `published`. */
  private readonly publishing: Promise<void>[] = [];
  private readonly parents = new ParentCache();

  /**
   * Stages every directory of `shortlist` that qualifies (see the module comment). `onFailure`
   * receives a directory entry that could not be published.
   */
  constructor(
    shortlist: readonly SourceTarget[],
    resumeMinBytes: number,
    private readonly onFailure: (directory: SourceTarget, err: AgentError) => void,
  ) {
    const created = new Map<string, SourceTarget>();
    for (const t of shortlist) {
      if (t.entry.fileType === "DIRECTORY" && Buffer.byteLength(path.basename(t.absPath)) <= MAX_STAGED_NAME_BYTES) {
        created.set(t.absPath, t);
      }
    }
    const files = new Map<string, number>();
    const excluded = new Set<string>();
    const parents = new ParentCache();
    for (const t of shortlist) {
      const parent = parents.of(t.absPath);
      if (!created.has(parent)) continue;
      if (t.entry.fileType === "DIRECTORY" || (t.entry.size > 0 && !isBatchable(t, resumeMinBytes))) excluded.add(parent);
      else files.set(parent, (files.get(parent) ?? 0) + 1);
    }
    for (const [dir, count] of files) {
      if (excluded.has(dir)) continue;
      this.directories.set(dir, { target: created.get(dir)!, stagingPath: tempPathFor(dir), unsettled: count });
    }
  }

  /** Directories staged. */
  get size(): number {
    return this.directories.size;
  }

  /** Where to create a directory entry: its staging path when it is staged. */
  directoryPath(target: SourceTarget): string {
    return this.directories.get(target.absPath)?.stagingPath ?? target.absPath;
  }

  /** The target to transfer: a file of a staged directory at its staging path, marked `staged`. */
  targetFor(target: SourceTarget): SourceTarget {
    if (target.entry.fileType !== "FILE") return target;
    const parent = this.parents.of(target.absPath);
    const dir = this.directories.get(parent);
    if (!dir) return target;
    const name = target.absPath.slice(target.absPath.lastIndexOf("/"));
    const staged: SourceTarget = { entry: target.entry, absPath: dir.stagingPath + name, staged: true };
    this.directoryOf.set(staged, dir);
    return staged;
  }

  /**
   * A file from targetFor has its outcome (downloaded, vanished, changed, failed). Once every file
   * of its directory has one, the directory is published, unless `ctx.signal` has aborted.
   * Call it once per target; calls for targets targetFor did not stage are ignored.
   */
  settled(ctx: Pick<TransferContext, "signal" | "budget" | "touchedDirs" | "knownDirs">, target: SourceTarget): void {
    const dir = this.directoryOf.get(target);
    if (!dir || --dir.unsettled > 0) return;
    this.publishing.push(this.publish(ctx, dir));
  }

  /** Resolves once every publication started has finished. */
  async published(): Promise<void> {
    for (let i = 0; i < this.publishing.length; i++) await this.publishing[i];
  }

  private async publish(ctx: Pick<TransferContext, "signal" | "budget" | "touchedDirs" | "knownDirs">, dir: StagedDirectory): Promise<void> {
    if (ctx.signal.aborted) return; // its files may not be durable yet: the next pass's CLEANING deletes it
    const realPath = dir.target.absPath;
    try {
      await ctx.budget.run(
        () => renameSync(dir.stagingPath, realPath),
        () => renameAsync(dir.stagingPath, realPath),
      );
    } catch (err) {
      const cause = AgentError.from(err);
      this.onFailure(dir.target, new AgentError("Internal", `cannot move the staged directory into place: ${cause.message}`, { cause }));
      return;
    }
    // The directory's entries (its files' names, renames of files retried alone in it) and its
    // own new name become durable with the phase's other renames: where syncfs runs, the
    // batches' syncfs has already covered the former; the fsync fallback needs both.
    ctx.touchedDirs.delete(dir.stagingPath);
    ctx.touchedDirs.add(realPath);
    ctx.touchedDirs.add(path.dirname(realPath));
    ctx.knownDirs.delete(dir.stagingPath);
    ctx.knownDirs.add(realPath);
  }
}
