/**
 * The data-copy tasks of one destination instance (Java: DataCopyTaskManager), behaviour doc
 * §1.3–§1.4. Creation checks, in order: request values, maxConcurrency against this agent's
 * max_concurrent_file_requests, the source in migration_map, Cassandra not running (fresh TCP
 * probes), then the instance's task slot. Tasks persist under the staging dir; `restore` puts
 * the last one back into the slot at startup.
 */
import { randomUUID } from "node:crypto";
import { AgentError } from "../../errors.js";
import type { InstanceContext } from "../../instance/registry.js";
import { taskLogger } from "../../log.js";
import type { CreateDataCopyRequest, DataCopyTasks, DataCopyTaskView } from "../task-api.js";
import { NO_PRE_CHECK, type PreCheck, type TaskDeps } from "../task-deps.js";
import type { MigrationTask } from "../task-slot.js";
import { isCassandraRunning } from "./cassandra-probe.js";
import { DEFAULT_RESUME_MIN_BYTES, ResumeStore } from "./resume-store.js";
import { DataCopyTask, interruptedView, RestoredDataCopyTask, type DataCopyTaskHandle } from "./task.js";
import { TaskStore } from "./task-store.js";

export const CONFLICT_MESSAGE = "Another task is already under progress. Cannot accept new task.";
export const CASSANDRA_RUNNING_MESSAGE =
  "Cannot start data copy: Cassandra is currently running on this instance (JMX or native connectivity established). Data copy cannot proceed while Cassandra is active.";

export interface DataCopyManagerOptions {
  /** The deployment's per-iteration check (default: none). */
  readonly preCheck?: PreCheck;
  /** live_migration.pre_check_command, run with /bin/sh -c before every iteration. */
  readonly preCheckCommand?: string | undefined;
  /** Whether Cassandra runs on the instance (default: isCassandraRunning, fresh TCP probes). */
  readonly probe?: (instance: InstanceContext) => Promise<boolean>;
  /** Smallest file that keeps a resume record (default 4 MiB; see resume-store.ts). */
  readonly resumeMinBytes?: number;
  readonly clock?: () => number;
}

/** Java's Double.toString for the values a request can carry ("1.0", "1.5", "NaN"). */
function javaDouble(v: number): string {
  return Number.isInteger(v) ? v.toFixed(1) : String(v);
}

/**
 * Checks the request values with the Java Sidecar's messages.
 * @throws AgentError InvalidArgument
 */
export function validateDataCopyRequest(request: CreateDataCopyRequest): void {
  const { maxIterations, successThreshold, maxConcurrency } = request;
  if (typeof maxIterations !== "number" || !Number.isInteger(maxIterations)) {
    throw new AgentError("InvalidArgument", `Invalid maxIterations ${String(maxIterations)}. It must be an integer.`);
  }
  if (maxIterations <= 0) {
    throw new AgentError("InvalidArgument", `Invalid maxIterations ${maxIterations}. It cannot be less than or equal to zero.`);
  }
  if (typeof successThreshold !== "number" || !(successThreshold >= 0 && successThreshold <= 1)) {
    const shown = typeof successThreshold === "number" ? javaDouble(successThreshold) : String(successThreshold);
    throw new AgentError("InvalidArgument", `Invalid successThreshold ${shown}. It cannot be less than zero or greater than one.`);
  }
  if (typeof maxConcurrency !== "number" || !Number.isInteger(maxConcurrency)) {
    throw new AgentError("InvalidArgument", `Invalid maxConcurrency ${String(maxConcurrency)}. It must be an integer.`);
  }
  if (maxConcurrency <= 0) {
    throw new AgentError("InvalidArgument", `Invalid maxConcurrency ${maxConcurrency}. It cannot be less than or equal to zero.`);
  }
}

function isDataCopyHandle(task: MigrationTask | undefined): task is DataCopyTaskHandle {
  return task !== undefined && task.kind === "data-copy" && typeof (task as Partial<DataCopyTaskHandle>).view === "function";
}

/** The data-copy tasks of one destination instance; errors are AgentErrors with the Java Sidecar's messages. */
export class DataCopyManager implements DataCopyTasks {
  private readonly store: TaskStore;
  private readonly resume: ResumeStore;
  private closed = false;

  constructor(
    private readonly deps: TaskDeps,
    private readonly options: DataCopyManagerOptions = {},
  ) {
    this.store = new TaskStore(deps.instance.config.stagingDir);
    this.resume = new ResumeStore(deps.instance.config.stagingDir);
  }

  /** A manager with the instance's last persisted data-copy task restored (see init). */
  static async restore(deps: TaskDeps, options: DataCopyManagerOptions = {}): Promise<DataCopyManager> {
    const manager = new DataCopyManager(deps, options);
    await manager.init();
    return manager;
  }

  /**
   * Reads the last persisted task into the slot (which keeps the newest restored task). A task
   * that was still running when the agent died shows FAILED `interrupted: agent restarted
   * during iteration <k>`, and that is written back.
   */
  async init(): Promise<void> {
    const saved = await this.store.loadLatest(this.deps.logger);
    if (!saved) return;
    let view = saved.view;
    if (!saved.finished) {
      view = interruptedView(view);
      await this.store
        .save({ ...saved, finished: true, view })
        .catch((err: unknown) => this.deps.logger.warn({ err: (err as Error).message }, "cannot save the restored task"));
      taskLogger(this.deps.logger, view.taskId, "data-copy").warn(
        { reason: view.status.at(-1)?.failureReason },
        "data-copy task was interrupted by a restart",
      );
    }
    this.deps.instance.slot.restore(new RestoredDataCopyTask(view), saved.createdAt);
  }

  async create(request: CreateDataCopyRequest): Promise<{ taskId: string }> {
    validateDataCopyRequest(request);
    const cap = this.deps.maxConcurrentFileRequests;
    if (request.maxConcurrency > cap) throw new AgentError("InvalidArgument", `max concurrency can not be more than ${cap}`);
    const { instance } = this.deps;
    const sourceHost = instance.sourceHost;
    if (sourceHost === undefined) {
      throw new AgentError("InvalidArgument", `No source for destination ${instance.config.host} is present in the migration map`);
    }
    if (this.closed) throw new AgentError("Unavailable", "The agent is shutting down");
    const probe = this.options.probe ?? isCassandraRunning;
    if (await probe(instance)) throw new AgentError("InvalidArgument", CASSANDRA_RUNNING_MESSAGE);
    const request_: CreateDataCopyRequest = {
      maxIterations: request.maxIterations,
      successThreshold: request.successThreshold,
      maxConcurrency: request.maxConcurrency,
    };
    const task = await instance.slot.claim(CONFLICT_MESSAGE, () => {
      const id = randomUUID();
      return new DataCopyTask({
        id,
        request: request_,
        instance,
        sourceHost,
        gatewayPort: this.deps.gatewayPort,
        connectSource: this.deps.connectSource,
        retry: this.deps.retry,
        logger: taskLogger(this.deps.logger, id, "data-copy"),
        preCheck: this.options.preCheck ?? NO_PRE_CHECK,
        preCheckCommand: this.options.preCheckCommand,
        resume: this.resume,
        resumeMinBytes: this.options.resumeMinBytes ?? DEFAULT_RESUME_MIN_BYTES,
        store: this.store,
        ...(this.options.clock ? { clock: this.options.clock } : {}),
      });
    });
    task.start();
    await this.store
      .pruneExcept(task.id)
      .catch((err: unknown) => this.deps.logger.warn({ err: (err as Error).message }, "cannot prune old task records"));
    return { taskId: task.id };
  }

  list(): DataCopyTaskView[] {
    const current = this.deps.instance.slot.current();
    return isDataCopyHandle(current) ? [current.view()] : [];
  }

  get(taskId: string): DataCopyTaskView {
    return this.find(taskId).view();
  }

  async cancel(taskId: string): Promise<DataCopyTaskView> {
    const task = this.find(taskId);
    task.cancel();
    return task.view();
  }

  async close(): Promise<void> {
    this.closed = true;
    const current = this.deps.instance.slot.current();
    if (current instanceof DataCopyTask) await current.interrupt("agent stopped");
    else if (isDataCopyHandle(current)) await current.settled;
  }

  private find(taskId: string): DataCopyTaskHandle {
    const current = this.deps.instance.slot.current();
    if (!current || current.id !== taskId) throw new AgentError("NotFound", `No task found with given id ${taskId}`);
    if (!isDataCopyHandle(current)) throw new AgentError("NotFound", `Task ${taskId} is not a data copy task`);
    return current;
  }
}
