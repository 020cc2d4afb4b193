/**
 * Persisted data-copy task state: `<stagingDir>/live_migration_tasks/data-copy-<taskId>.json`,
 * replaced atomically on every save. Only the newest task's file is kept. Writes of one task
 * are serialized and coalesced: a save requested while one is in flight is written once after it.
 */
import { mkdir, readdir, readFile, rm } from "node:fs/promises";
import path from "node:path";
import { writeFileAtomic } from "../../fs/atomic-file.js";
import type { Logger } from "../../log.js";
import type { DataCopyTaskView } from "../task-api.js";

export const TASKS_DIR_NAME = "live_migration_tasks";
const PREFIX = "data-copy-";
const SUFFIX = ".json";

export interface PersistedDataCopyTask {
  readonly version: 1;
  readonly kind: "data-copy";
  /** Epoch ms when the task was accepted. */
  readonly createdAt: number;
  /** False while the task was still running when saved. */
  readonly finished: boolean;
  readonly view: DataCopyTaskView;
}

/** The task records of one instance's staging dir. */
export class TaskStore {
  readonly dir: string;

  constructor(stagingDir: string) {
    this.dir = path.join(stagingDir, TASKS_DIR_NAME);
  }

  fileOf(taskId: string): string {
    return path.join(this.dir, `${PREFIX}${taskId}${SUFFIX}`);
  }

  async save(record: PersistedDataCopyTask): Promise<void> {
    await mkdir(this.dir, { recursive: true });
    await writeFileAtomic(this.fileOf(record.view.taskId), JSON.stringify(record, null, 1) + "\n");
  }

  /** The newest readable task record, or undefined. Unreadable files are logged and skipped. */
  async loadLatest(logger: Logger): Promise<PersistedDataCopyTask | undefined> {
    let names: string[];
    try {
      names = await readdir(this.dir);
    } catch {
      return undefined;
    }
    let latest: PersistedDataCopyTask | undefined;
    for (const name of names) {
      if (!name.startsWith(PREFIX) || !name.endsWith(SUFFIX)) continue;
      try {
        const parsed = JSON.parse(await readFile(path.join(this.dir, name), "utf8")) as PersistedDataCopyTask;
        if (parsed.version !== 1 || parsed.kind !== "data-copy" || typeof parsed.view?.taskId !== "string") {
          throw new Error("unknown format");
        }
        if (!latest || parsed.createdAt > latest.createdAt) latest = parsed;
      } catch (err) {
        logger.warn({ file: name, err: (err as Error).message }, "ignoring unreadable data-copy task record");
      }
    }
    return latest;
  }

  /** Deletes every task record but `keepTaskId`'s. */
  async pruneExcept(keepTaskId: string): Promise<void> {
    let names: string[];
    try {
      names = await readdir(this.dir);
    } catch {
      return;
    }
    const keep = path.basename(this.fileOf(keepTaskId));
    for (const name of names) {
      if (name.startsWith(PREFIX) && name.endsWith(SUFFIX) && name !== keep) await rm(path.join(this.dir, name), { force: true });
    }
  }
}

/** Saves one task's state: at once on state changes, at most about once a second for progress. */
export class TaskPersister {
  private writing: Promise<void> | undefined;
  private pending = false;
  private lastSaved = "";
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly store: TaskStore,
    private readonly snapshot: () => PersistedDataCopyTask,
    private readonly logger: Logger,
    private readonly progressIntervalMs = 1_000,
  ) {}

  /** Starts the progress timer. */
  start(): void {
    this.timer ??= setInterval(() => this.save(), this.progressIntervalMs);
    this.timer.unref();
  }

  /** Requests a save now (coalesced with one in flight). */
  save(): void {
    if (this.writing) {
      this.pending = true;
      return;
    }
    const record = this.snapshot();
    const text = JSON.stringify(record);
    if (text === this.lastSaved) return;
    this.writing = this.store
      .save(record)
      .then(
        () => {
          this.lastSaved = text;
        },
        (err: unknown) => this.logger.warn({ err: (err as Error).message }, "cannot save data-copy task state"),
      )
      .finally(() => {
        this.writing = undefined;
        if (this.pending) {
          this.pending = false;
          this.save();
        }
      });
  }

  /** Stops the timer, saves the final state and waits until every write is done. */
  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.save();
    while (this.writing) await this.writing;
  }
}
