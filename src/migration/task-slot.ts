/**
 * One Live Migration task per instance, shared by data-copy and verification tasks
 * (behaviour doc §6.4). Unlike the Java Sidecar, a cancelled task holds the slot until its
 * in-flight writers have stopped, so a new task can never race with them.
 */
import { AgentError } from "../errors.js";

export interface MigrationTask {
  readonly id: string;
  readonly kind: "data-copy" | "files-verification";
  /** True once the task reached a terminal state (SUCCESS/FAILED/CANCELLED/COMPLETED). */
  readonly finished: boolean;
  /** Resolves when every piece of work of the task, in-flight transfers included, has stopped. Never rejects. */
  readonly settled: Promise<void>;
}

/** How long a claim waits for a just-cancelled task's writers to stop before answering 409. */
const SETTLE_WAIT_MS = 3_000;

export class TaskSlot {
  private task: MigrationTask | undefined;
  /** When `task` came from restore: its creation time; undefined for a claimed task. */
  private restoredCreatedAt: number | undefined;
  private claiming = false;

  /** The current or last task of the instance. */
  current(): MigrationTask | undefined {
    return this.task;
  }

  /**
   * Installs the task made by `create` if the slot is free or holds a finished task.
   * Exactly one of several concurrent claims wins; the others get AlreadyExists(conflictMessage).
   */
  async claim<T extends MigrationTask>(conflictMessage: string, create: () => T): Promise<T> {
    if (this.claiming) throw new AgentError("AlreadyExists", conflictMessage);
    const previous = this.task;
    if (previous && !previous.finished) throw new AgentError("AlreadyExists", conflictMessage);
    this.claiming = true;
    try {
      if (previous) {
        const settled = await Promise.race([
          previous.settled.then(() => true),
          new Promise<boolean>((r) => setTimeout(r, SETTLE_WAIT_MS, false).unref()),
        ]);
        if (!settled) throw new AgentError("AlreadyExists", conflictMessage);
      }
      const task = create();
      this.task = task;
      this.restoredCreatedAt = undefined;
      return task;
    } finally {
      this.claiming = false;
    }
  }

  /**
   * Restores a task from persisted state at startup. Data-copy and verification tasks are
   * persisted apart; of those restored, the one created last (`createdAt`, epoch ms) stays, and
   * a task claimed since start is never replaced.
   */
  restore(task: MigrationTask, createdAt = 0): void {
    if (this.task !== undefined && (this.restoredCreatedAt === undefined || this.restoredCreatedAt >= createdAt)) return;
    this.task = task;
    this.restoredCreatedAt = createdAt;
  }
}
