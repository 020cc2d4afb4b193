/**
 * The files-verification tasks of one destination instance (Java:
 * FilesVerificationTaskManager), behaviour doc §1.5–§1.6 and §4. Tasks share the instance's
 * one slot with data-copy tasks; the current or last task stays readable until replaced.
 */
import { randomUUID } from "node:crypto";
import { parseDigestAlgorithm } from "../../digest/digest.js";
import { AgentError } from "../../errors.js";
import { taskLogger, type Logger } from "../../log.js";
import type { CreateVerificationRequest, VerificationTaskView, VerificationTasks } from "../task-api.js";
import type { TaskDeps } from "../task-deps.js";
import { VerificationTaskStore } from "./store.js";
import { isVerificationTask, RestoredVerificationTask, VerificationTask, type VerificationTaskHandle } from "./task.js";

export interface VerificationManagerOptions {
  /** Where the last task's view is kept; default `<staging_dir>/live_migration_tasks/`. null: keep nothing. */
  readonly store?: VerificationTaskStore | null;
  /** Task ids; default crypto.randomUUID. */
  readonly newId?: () => string;
}

/** How long PATCH waits for a cancelled task's work to stop before answering. */
const CANCEL_WAIT_MS = 1_000;
/** How long close() waits for a running task to stop. */
const CLOSE_WAIT_MS = 10_000;

export class VerificationManager implements VerificationTasks {
  private readonly store: VerificationTaskStore | null;
  private readonly newId: () => string;
  private readonly log: Logger;

  constructor(
    private readonly deps: TaskDeps,
    options: VerificationManagerOptions = {},
  ) {
    this.store = options.store === undefined ? new VerificationTaskStore(deps.instance.config.stagingDir) : options.store;
    this.newId = options.newId ?? randomUUID;
    this.log = deps.logger;
  }

  /**
   * Makes the last saved task readable again after a restart, unless the slot holds a newer one
   * (a data-copy task restored later, or a task started since). Optional; never throws.
   */
  async init(): Promise<void> {
    if (!this.store) return;
    try {
      const saved = await this.store.load();
      if (saved) this.deps.instance.slot.restore(new RestoredVerificationTask(saved.task), saved.createdAt);
    } catch (err) {
      this.log.warn({ err }, "Could not restore the last verification task");
    }
  }

  /**
   * Validates in the Java Sidecar's order, claims the slot and starts the task.
   * @throws InvalidArgument `maxConcurrency must be >= 1`, `Digest algorithm name cannot be null or empty`,
   *   `max concurrency can not be more than <N>`, `Unsupported digest algorithm <x>`;
   *   AlreadyExists `Another files digest verification is in progress for instance=<id>`.
   */
  async create(request: CreateVerificationRequest): Promise<{ taskId: string }> {
    const { maxConcurrency, digestAlgorithm } = request;
    if (!(maxConcurrency >= 1)) throw new AgentError("InvalidArgument", "maxConcurrency must be >= 1");
    if (digestAlgorithm === undefined || digestAlgorithm === null || digestAlgorithm.trim() === "") {
      throw new AgentError("InvalidArgument", "Digest algorithm name cannot be null or empty");
    }
    const limit = this.deps.maxConcurrentFileRequests;
    if (maxConcurrency > limit) throw new AgentError("InvalidArgument", `max concurrency can not be more than ${limit}`);
    const algorithm = parseDigestAlgorithm(digestAlgorithm);
    if (algorithm === undefined) throw new AgentError("InvalidArgument", `Unsupported digest algorithm ${digestAlgorithm}`);

    const instance = this.deps.instance;
    const conflict = `Another files digest verification is in progress for instance=${instance.config.id}`;
    const store = this.store;
    const task = await instance.slot.claim(conflict, () => {
      const id = this.newId();
      const createdAt = Date.now();
      return new VerificationTask({
        id,
        digestAlgorithm,
        algorithm,
        maxConcurrency,
        deps: this.deps,
        logger: taskLogger(this.log, id, "files-verification"),
        ...(store ? { persist: (view: VerificationTaskView) => store.save(view, createdAt) } : {}),
      });
    });
    task.start();
    return { taskId: task.id };
  }

  /** [] or the instance's current/last task when it is a verification task. */
  list(): VerificationTaskView[] {
    const current = this.deps.instance.slot.current();
    return isVerificationTask(current) ? [current.view()] : [];
  }

  /** @throws NotFound `No task found with given id <id>` / `Task <id> is not a files verification task` */
  get(taskId: string): VerificationTaskView {
    return this.find(taskId).view();
  }

  /**
   * Cancels a running task and waits (up to a second) for its work to stop; a finished task is
   * returned unchanged.
   * @throws NotFound as get().
   */
  async cancel(taskId: string): Promise<VerificationTaskView> {
    const task = this.find(taskId);
    if (task.cancel()) await waitAtMost(task.settled, CANCEL_WAIT_MS);
    return task.view();
  }

  /** Cancels a running task (agent shutdown) and waits for its work to stop. */
  async close(): Promise<void> {
    const current = this.deps.instance.slot.current();
    if (!isVerificationTask(current)) return;
    current.cancel("agent shutting down");
    await waitAtMost(current.settled, CLOSE_WAIT_MS);
  }

  private find(taskId: string): VerificationTaskHandle {
    const current = this.deps.instance.slot.current();
    if (current === undefined || current.id !== taskId) throw new AgentError("NotFound", `No task found with given id ${taskId}`);
    if (!isVerificationTask(current)) throw new AgentError("NotFound", `Task ${taskId} is not a files verification task`);
    return current;
  }
}

function waitAtMost(promise: Promise<void>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([promise, new Promise<void>((resolve) => (timer = setTimeout(resolve, ms)))]).finally(() => clearTimeout(timer));
}
