/**
 * The last verification task's view, kept at
 * `<staging_dir>/live_migration_tasks/last-verification-task.json` so that an operator can
 * still read the outcome after an agent restart. Written atomically; one file per instance.
 */
import { readFile } from "node:fs/promises";
import path from "node:path";
import { AgentError } from "../../errors.js";
import { writeFileAtomic } from "../../fs/atomic-file.js";
import { VERIFICATION_STATES, type VerificationTaskView } from "../task-api.js";

/** Directory under the staging dir shared with the data-copy task's record. */
export const TASKS_DIR_NAME = "live_migration_tasks";
export const LAST_VERIFICATION_TASK_FILE = "last-verification-task.json";

interface Persisted {
  readonly version: 1;
  readonly kind: "files-verification";
  /** Epoch ms when the task was accepted (orders it against a data-copy task's record). */
  readonly createdAt: number;
  /** Epoch ms of the write. */
  readonly savedAt: number;
  readonly task: VerificationTaskView;
}

const COUNTERS = [
  "port",
  "filesNotFoundAtSource",
  "filesNotFoundAtDestination",
  "metadataMatched",
  "metadataMismatches",
  "digestMismatches",
  "digestVerificationFailures",
  "filesMatched",
] as const;

export class VerificationTaskStore {
  readonly file: string;
  private queue: Promise<void> = Promise.resolve();

  constructor(stagingDir: string) {
    this.file = path.join(stagingDir, TASKS_DIR_NAME, LAST_VERIFICATION_TASK_FILE);
  }

  /** Writes `view` after any earlier write finished. Rejects with the IO error; later saves still run. */
  save(view: VerificationTaskView, createdAt: number, now: () => number = Date.now): Promise<void> {
    const record: Persisted = { version: 1, kind: "files-verification", createdAt, savedAt: now(), task: view };
    const write = this.queue.then(() => writeFileAtomic(this.file, JSON.stringify(record, null, 2) + "\n"));
    this.queue = write.catch(() => {});
    return write;
  }

  /**
   * The last saved view with its task's creation time, or undefined when there is none.
   * @throws AgentError Internal when the file exists but cannot be read or is not a saved view.
   */
  async load(): Promise<{ readonly task: VerificationTaskView; readonly createdAt: number } | undefined> {
    let text: string;
    try {
      text = await readFile(this.file, "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw new AgentError("Internal", `cannot read ${this.file}: ${(err as Error).message}`, { cause: err });
    }
    let record: unknown;
    try {
      record = JSON.parse(text);
    } catch (err) {
      throw new AgentError("Internal", `${this.file} is not JSON: ${(err as Error).message}`, { cause: err });
    }
    const { task, createdAt } = (record ?? {}) as Partial<Persisted>;
    if (!isView(task)) throw new AgentError("Internal", `${this.file} does not hold a verification task`);
    return { task, createdAt: typeof createdAt === "number" ? createdAt : 0 };
  }
}

function isView(v: unknown): v is VerificationTaskView {
  if (typeof v !== "object" || v === null) return false;
  const o = v as Record<string, unknown>;
  return (
    typeof o["id"] === "string" &&
    typeof o["digestAlgorithm"] === "string" &&
    typeof o["source"] === "string" &&
    (VERIFICATION_STATES as readonly unknown[]).includes(o["state"]) &&
    COUNTERS.every((k) => typeof o[k] === "number") &&
    Array.isArray(o["mismatchedFiles"]) &&
    (o["mismatchedFiles"] as unknown[]).every((f) => typeof f === "string") &&
    (o["failureReason"] === undefined || typeof o["failureReason"] === "string")
  );
}
