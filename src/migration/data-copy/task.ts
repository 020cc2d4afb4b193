/**
 * A data-copy task (Java: LiveMigrationDataCopyTask), behaviour doc §3.4: iterations
 * 0..maxIterations, each a fresh runIteration; a SUCCESS ends the task, so does iteration
 * maxIterations whatever its state. Unlike the Java task:
 * - a FAILED iteration is followed by a backoff wait (sidecar_client policy, growing with
 *   consecutive failures) instead of an immediate retry that burns the iterations;
 * - cancel aborts every stream, wait and pre-check command of the task through one
 *   AbortController, and `settled` resolves only once every writer has stopped;
 * - cancel on a finished task changes nothing;
 * - the state is persisted (task-store.ts) and a restart shows an interrupted task as FAILED.
 */
import type { SidecarClientConfig } from "../../config/schema.js";
import { AgentError } from "../../errors.js";
import type { InstanceContext } from "../../instance/registry.js";
import type { Logger } from "../../log.js";
import type { SourcePeer } from "../peer.js";
import { backoffDelayMs, sleep } from "../retry.js";
import type { CreateDataCopyRequest, DataCopyIterationView, DataCopyTaskView } from "../task-api.js";
import type { PreCheck } from "../task-deps.js";
import type { MigrationTask } from "../task-slot.js";
import { runIteration } from "./iteration.js";
import { isTerminal, OperationStatus } from "./operation-status.js";
import type { ResumeStore } from "./resume-store.js";
import { TaskPersister, type PersistedDataCopyTask, type TaskStore } from "./task-store.js";

/** What the manager shows and cancels: a running task or one restored from disk. */
export interface DataCopyTaskHandle extends MigrationTask {
  readonly kind: "data-copy";
  view(): DataCopyTaskView;
  /** Cancels a running task; a finished one is left unchanged. */
  cancel(): void;
}

export interface DataCopyTaskOptions {
  readonly id: string;
  readonly request: CreateDataCopyRequest;
  readonly instance: InstanceContext;
  readonly sourceHost: string;
  readonly gatewayPort: number;
  readonly connectSource: (logger?: Logger) => SourcePeer;
  readonly retry: SidecarClientConfig;
  /** The task's logger (taskLogger). */
  readonly logger: Logger;
  readonly preCheck: PreCheck;
  readonly preCheckCommand: string | undefined;
  readonly resume: ResumeStore;
  readonly resumeMinBytes: number;
  readonly store: TaskStore;
  readonly clock?: () => number;
}

/** A running data-copy task; `start()` once, then `cancel()` or `interrupt()` at any time. */
export class DataCopyTask implements DataCopyTaskHandle {
  readonly kind = "data-copy" as const;
  readonly id: string;
  readonly createdAt: number;
  readonly settled: Promise<void>;
  private readonly controller = new AbortController();
  private readonly iterations: OperationStatus[] = [];
  private readonly persister: TaskPersister;
  private readonly clock: () => number;
  private resolveSettled!: () => void;
  private started = false;
  private done = false;
  private cancelled = false;

  constructor(private readonly options: DataCopyTaskOptions) {
    this.id = options.id;
    this.clock = options.clock ?? Date.now;
    this.createdAt = this.clock();
    this.settled = new Promise((resolve) => (this.resolveSettled = resolve));
    this.persister = new TaskPersister(options.store, () => this.record(), options.logger);
  }

  get finished(): boolean {
    return this.done || this.cancelled;
  }

  /** Starts the iterations in the background; call once. */
  start(): void {
    if (this.started) return;
    this.started = true;
    this.options.logger.info({ request: this.options.request, source: this.options.sourceHost }, "data-copy task started");
    this.persister.start();
    void this.run()
      .catch((err: unknown) => this.options.logger.error({ err: (err as Error).message }, "data-copy task crashed"))
      .then(() => this.finish());
  }

  cancel(): void {
    if (this.finished) return;
    this.cancelled = true;
    const last = this.iterations.at(-1);
    if (last && !last.terminal) last.cancel();
    else if (this.nextIteration() <= this.options.request.maxIterations) {
      const entry = new OperationStatus(this.nextIteration(), this.clock);
      entry.cancel();
      this.iterations.push(entry);
    }
    this.options.logger.info("data-copy task cancelled");
    this.controller.abort(new AgentError("Cancelled", "operation cancelled"));
    this.persister.save();
    if (!this.started) void this.finish();
  }

  /**
   * Stops a running task for agent shutdown: the current iteration ends FAILED with
   * `interrupted: <why> during iteration <k>`. Resolves when every writer has stopped.
   */
  interrupt(why: string): Promise<void> {
    if (!this.finished) {
      const last = this.iterations.at(-1);
      const k = last && !last.terminal ? last.iteration : this.nextIteration();
      this.controller.abort(new AgentError("Cancelled", `interrupted: ${why} during iteration ${k}`));
      if (!this.started) void this.finish();
    }
    return this.settled;
  }

  view(): DataCopyTaskView {
    const { request } = this.options;
    return {
      taskId: this.id,
      source: this.options.sourceHost,
      port: this.options.gatewayPort,
      maxIterations: request.maxIterations,
      successThreshold: request.successThreshold,
      maxConcurrency: request.maxConcurrency,
      status: this.iterations.map((s) => s.view()),
    };
  }

  private record(): PersistedDataCopyTask {
    return { version: 1, kind: "data-copy", createdAt: this.createdAt, finished: this.finished, view: this.view() };
  }

  private nextIteration(): number {
    return (this.iterations.at(-1)?.iteration ?? -1) + 1;
  }

  private async run(): Promise<void> {
    const { request, logger } = this.options;
    const signal = this.controller.signal;
    let peer: SourcePeer | undefined;
    try {
      peer = this.options.connectSource(logger);
      // Before any pass, while this agent does nothing else: a failure here is the first pass's to report.
      await peer.measureLink(signal).catch(() => undefined);
      let consecutiveFailures = 0;
      for (let k = 0; k <= request.maxIterations && !signal.aborted; k++) {
        const status = new OperationStatus(k, this.clock);
        this.iterations.push(status);
        this.persister.save();
        await runIteration(
          {
            taskId: this.id,
            request,
            instance: this.options.instance,
            sourceHost: this.options.sourceHost,
            gatewayPort: this.options.gatewayPort,
            peer,
            signal,
            retry: this.options.retry,
            logger,
            preCheck: this.options.preCheck,
            preCheckCommand: this.options.preCheckCommand,
            resume: this.options.resume,
            resumeMinBytes: this.options.resumeMinBytes,
            onStateChange: () => this.persister.save(),
          },
          status,
        );
        if (status.state !== "DOWNLOAD_COMPLETE" && status.state !== "FAILED") break;
        if (k === request.maxIterations) break;
        if (status.state === "DOWNLOAD_COMPLETE") {
          consecutiveFailures = 0;
          continue;
        }
        consecutiveFailures++;
        const delayMs = backoffDelayMs(consecutiveFailures, this.options.retry);
        logger.info({ delayMs, iteration: k }, "waiting before the next iteration");
        try {
          await sleep(delayMs, signal);
        } catch {
          break;
        }
      }
    } catch (err) {
      // Only connectSource or a bug gets here; the iterations report their own failures.
      const error = AgentError.from(err);
      logger.error({ err: error.message }, "data-copy task failed");
      this.failNext(error.message);
    } finally {
      peer?.close();
    }
    if (signal.aborted && !this.cancelled) this.failNext(abortMessage(signal));
  }

  /**
   * Makes the last entry FAILED with `reason`: the running entry fails, or (between
   * iterations) the next one is added in FAILED. Nothing changes after a SUCCESS or a cancel,
   * when the last entry already failed for this reason, or when no iteration is left.
   */
  private failNext(reason: string): void {
    const last = this.iterations.at(-1);
    if (last && !last.terminal) {
      last.toFailed(reason);
      return;
    }
    if (last && (last.state === "SUCCESS" || last.state === "CANCELLED")) return;
    if (last && last.view().failureReason === reason) return;
    if (this.nextIteration() > this.options.request.maxIterations) return;
    const entry = new OperationStatus(this.nextIteration(), this.clock);
    entry.toFailed(reason);
    this.iterations.push(entry);
  }

  private async finish(): Promise<void> {
    if (this.done) return;
    this.done = true;
    const last = this.iterations.at(-1);
    this.options.logger.info({ state: last?.state, iterations: this.iterations.length }, "data-copy task finished");
    await this.persister.close();
    this.resolveSettled();
  }
}

function abortMessage(signal: AbortSignal): string {
  const reason: unknown = signal.reason;
  return reason instanceof AgentError ? reason.message : "operation cancelled";
}

/** A task read back from disk at startup: finished, shown as saved, never changes. */
export class RestoredDataCopyTask implements DataCopyTaskHandle {
  readonly kind = "data-copy" as const;
  readonly finished = true;
  readonly settled = Promise.resolve();
  readonly id: string;

  constructor(private readonly saved: DataCopyTaskView) {
    this.id = saved.taskId;
  }

  view(): DataCopyTaskView {
    return this.saved;
  }

  cancel(): void {}
}

/**
 * The view of a task saved while it was still running (the agent died): the running entry
 * becomes FAILED `interrupted: agent restarted during iteration <k>`; a task saved between
 * iterations gets the next entry in that state.
 */
export function interruptedView(view: DataCopyTaskView): DataCopyTaskView {
  const status = [...view.status];
  const last = status.at(-1);
  const failed = (k: number, base?: DataCopyIterationView): DataCopyIterationView => ({
    iteration: k,
    state: "FAILED",
    totalSize: base?.totalSize ?? -1,
    totalFiles: base?.totalFiles ?? -1,
    bytesToDownload: base?.bytesToDownload ?? -1,
    filesToDownload: base?.filesToDownload ?? -1,
    filesDownloaded: base?.filesDownloaded ?? 0,
    downloadFailures: base?.downloadFailures ?? 0,
    bytesDownloaded: base?.bytesDownloaded ?? 0,
    bytesTransferred: base?.bytesTransferred ?? 0,
    bytesPerSecond: 0,
    etaSeconds: -1,
    failureReason: `interrupted: agent restarted during iteration ${k}`,
  });
  if (last && !isTerminal(last.state)) status[status.length - 1] = failed(last.iteration, last);
  else if (!last) status.push(failed(0));
  else if ((last.state === "DOWNLOAD_COMPLETE" || last.state === "FAILED") && last.iteration < view.maxIterations) {
    status.push(failed(last.iteration + 1));
  }
  return { ...view, status };
}
