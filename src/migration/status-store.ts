/**
 * The one-way completion record of an instance (behaviour doc §5):
 * `<staging_dir>/live_migration_status.json` = {"state":"COMPLETED","endTime":<epoch ms>}.
 * Operations on one instance are serialized, so a concurrent second POST gets the specific
 * 400 (the Java Sidecar answers 503 when it loses the race). The file is written atomically
 * and survives restarts.
 */
import { readFile, rm } from "node:fs/promises";
import path from "node:path";
import { AgentError } from "../errors.js";
import { fsyncDir, writeFileAtomic } from "../fs/atomic-file.js";
import type { MigrationStatus } from "./types.js";

export const STATUS_FILE_NAME = "live_migration_status.json";

const NOT_COMPLETED: MigrationStatus = { state: "NOT_COMPLETED", endTime: null };

/** How long the hot-path check (isCompleted) may trust the last record it read, in ms. */
const COMPLETED_CHECK_MAX_AGE_MS = 1_000;

export class StatusStore {
  private queue: Promise<unknown> = Promise.resolve();
  /** The last record read or written by this store, for isCompleted. */
  private cached: { readonly status: MigrationStatus; readonly atMs: number } | undefined;
  readonly file: string;

  constructor(stagingDir: string) {
    this.file = path.join(stagingDir, STATUS_FILE_NAME);
  }

  /** The record; NOT_COMPLETED when no file exists. @throws Unavailable on IO or parse errors. */
  get(): Promise<MigrationStatus> {
    return this.serialize(() => this.read());
  }

  /**
   * True when the record says COMPLETED (the allowIfMigrationNotComplete guard). Every file read
   * and digest asks, so the answer may be up to 1 s old when someone edits the file by hand;
   * changes made through this store are seen at once.
   */
  async isCompleted(): Promise<boolean> {
    const cached = this.cached;
    if (cached && Date.now() - cached.atMs < COMPLETED_CHECK_MAX_AGE_MS) return cached.status.state === "COMPLETED";
    return (await this.get()).state === "COMPLETED";
  }

  /**
   * Records completion now.
   * @throws FailedPrecondition "Live migration marked as COMPLETED earlier." when already completed;
   * Unavailable "Could not update Live Migration as complete." on IO errors.
   */
  markCompleted(now: () => number = Date.now): Promise<MigrationStatus> {
    return this.serialize(async () => {
      if ((await this.read()).state === "COMPLETED") {
        throw new AgentError("FailedPrecondition", "Live migration marked as COMPLETED earlier.");
      }
      const record: MigrationStatus = { state: "COMPLETED", endTime: now() };
      try {
        await writeFileAtomic(this.file, JSON.stringify(record) + "\n");
        this.remember(record);
      } catch (err) {
        throw new AgentError("Unavailable", "Could not update Live Migration as complete.", { cause: err });
      }
      return record;
    });
  }

  /**
   * Deletes the record.
   * @throws FailedPrecondition when there is no record or it is not COMPLETED; Unavailable on IO errors.
   */
  clear(host: string): Promise<void> {
    return this.serialize(async () => {
      let raw: string;
      try {
        raw = await readFile(this.file, "utf8");
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === "ENOENT") {
          throw new AgentError("FailedPrecondition", `Live Migration status file does not exist for instance ${host}`);
        }
        throw new AgentError("Unavailable", "Could not read Live Migration status.", { cause: err });
      }
      if (parseRecord(raw, this.file).state !== "COMPLETED") {
        throw new AgentError("FailedPrecondition", `Live Migration status is not set as completed for instance ${host}`);
      }
      try {
        await rm(this.file);
        this.remember(NOT_COMPLETED);
        await fsyncDir(path.dirname(this.file));
      } catch (err) {
        throw new AgentError("Unavailable", "Could not clear Live Migration status.", { cause: err });
      }
    });
  }

  private async read(): Promise<MigrationStatus> {
    let raw: string;
    try {
      raw = await readFile(this.file, "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return this.remember(NOT_COMPLETED);
      this.cached = undefined;
      throw new AgentError("Unavailable", "Could not read Live Migration status.", { cause: err });
    }
    try {
      return this.remember(parseRecord(raw, this.file));
    } catch (err) {
      this.cached = undefined;
      throw err;
    }
  }

  private remember(status: MigrationStatus): MigrationStatus {
    this.cached = { status, atMs: Date.now() };
    return status;
  }

  private serialize<T>(op: () => Promise<T>): Promise<T> {
    const result = this.queue.then(op, op);
    this.queue = result.catch(() => undefined);
    return result;
  }
}

function parseRecord(raw: string, file: string): MigrationStatus {
  try {
    const parsed = JSON.parse(raw) as { state?: unknown; endTime?: unknown };
    if (parsed.state === "COMPLETED" && typeof parsed.endTime === "number") return { state: "COMPLETED", endTime: parsed.endTime };
    if (parsed.state === "NOT_COMPLETED") return NOT_COMPLETED;
  } catch {
    // fall through
  }
  throw new AgentError("Unavailable", `Live Migration status file ${file} is corrupt`);
}
