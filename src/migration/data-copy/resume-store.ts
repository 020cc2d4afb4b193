/**
 * Resume records of interrupted downloads.
 *
 * Resume policy: a download writes `.lm-sidecar.<name>.partial` beside its target. Before the
 * first byte of a file of at least `resumeMinBytes` is written, a record of the source file's
 * listed size and mtime (ms) is stored under `<stagingDir>/live_migration_resume/`, keyed by
 * the target path. A later attempt (a retry, the next iteration, or a new task after a restart)
 * continues from the temp file's length only when the record exists and matches the current
 * listing's size and mtime and the temp file is not longer than that size; the bytes already
 * on disk are then hashed first, and the source's XXH64 of the whole file [0, size) must match
 * the hash over prefix + new bytes, or the temp file is deleted and the file restarts from 0.
 * A temp file without a matching record (small file, source changed, record lost) is deleted,
 * as is one whose stream reported corruption (DataLoss) or a change at the source (Aborted);
 * a temp file left by a cancel, a crash or a transient fault is kept for the next attempt.
 * Records are written without fsync: a lost or torn record only costs a restart from 0, and the
 * whole-file hash guards correctness whatever the record says.
 */
import { mkdir, readdir, readFile, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { createHasher } from "../../digest/digest.js";
import type { FileEntry } from "../types.js";

export const RESUME_DIR_NAME = "live_migration_resume";

/** Files smaller than this restart from 0 instead of keeping a record (4 MiB: eight ReadFile messages). */
export const DEFAULT_RESUME_MIN_BYTES = 4 << 20;

export interface ResumeRecord {
  /** Absolute target path. */
  readonly target: string;
  readonly fileUrl: string;
  /** The source file's listed size in bytes. */
  readonly size: number;
  /** The source file's listed mtime in epoch ms. */
  readonly lastModifiedTime: number;
}

/** True when a temp file of `tempSize` bytes recorded as `record` may be continued for `entry`. */
export function isResumable(record: ResumeRecord | undefined, tempSize: number, entry: FileEntry): boolean {
  return (
    record !== undefined &&
    entry.fileType === "FILE" &&
    record.size === entry.size &&
    record.lastModifiedTime === entry.lastModifiedTime &&
    tempSize <= entry.size
  );
}

/** The resume records of one instance, one small JSON file per target, keyed by XXH64 of the target path. */
export class ResumeStore {
  readonly dir: string;

  constructor(stagingDir: string) {
    this.dir = path.join(stagingDir, RESUME_DIR_NAME);
  }

  /** The record for a target, or undefined when there is none or it cannot be read. */
  async get(target: string): Promise<ResumeRecord | undefined> {
    try {
      const parsed = JSON.parse(await readFile(this.fileOf(target), "utf8")) as Partial<ResumeRecord>;
      if (
        parsed.target === target &&
        typeof parsed.fileUrl === "string" &&
        typeof parsed.size === "number" &&
        typeof parsed.lastModifiedTime === "number"
      ) {
        return parsed as ResumeRecord;
      }
    } catch {
      // missing or torn: not resumable
    }
    return undefined;
  }

  async put(record: ResumeRecord): Promise<void> {
    await mkdir(this.dir, { recursive: true });
    await writeFile(this.fileOf(record.target), JSON.stringify(record));
  }

  async delete(target: string): Promise<void> {
    await rm(this.fileOf(target), { force: true });
  }

  /** Deletes every record except those of `keepTargets`; returns how many were deleted. */
  async prune(keepTargets: Iterable<string>): Promise<number> {
    let names: string[];
    try {
      names = await readdir(this.dir);
    } catch {
      return 0;
    }
    const keep = new Set([...keepTargets].map((t) => path.basename(this.fileOf(t))));
    let deleted = 0;
    for (const name of names) {
      if (keep.has(name)) continue;
      await rm(path.join(this.dir, name), { force: true, recursive: true });
      deleted++;
    }
    return deleted;
  }

  private fileOf(target: string): string {
    const hasher = createHasher("XXH64");
    hasher.update(Buffer.from(target, "utf8"));
    return path.join(this.dir, `${hasher.digest()}.json`);
  }
}
