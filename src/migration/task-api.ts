/**
 * What the API shows of tasks: plain JSON-safe snapshots. REST renders them field for field
 * (the Java Sidecar's JSON), Connect/gRPC map them to the generated messages.
 */

export const DATA_COPY_STATES = [
  "STARTING",
  "CLEANING",
  "PREPARING",
  "DOWNLOADING",
  "DOWNLOAD_COMPLETE",
  "SUCCESS",
  "FAILED",
  "CANCELLED",
] as const;
export type DataCopyState = (typeof DATA_COPY_STATES)[number];

/** One iteration's status entry (Java: OperationStatus) plus lm-sidecar's progress fields. */
export interface DataCopyIterationView {
  readonly iteration: number;
  readonly state: DataCopyState;
  readonly totalSize: number;
  readonly totalFiles: number;
  readonly bytesToDownload: number;
  readonly filesToDownload: number;
  readonly filesDownloaded: number;
  readonly downloadFailures: number;
  readonly bytesDownloaded: number;
  /** Bytes written this iteration, partial files included. */
  readonly bytesTransferred: number;
  readonly bytesPerSecond: number;
  /** -1 when unknown. */
  readonly etaSeconds: number;
  /** Set when state is FAILED. */
  readonly failureReason?: string;
}

export interface DataCopyTaskView {
  readonly taskId: string;
  readonly source: string;
  readonly port: number;
  readonly maxIterations: number;
  readonly successThreshold: number;
  readonly maxConcurrency: number;
  readonly status: readonly DataCopyIterationView[];
}

export const VERIFICATION_STATES = ["NOT_STARTED", "IN_PROGRESS", "COMPLETED", "FAILED", "CANCELLED"] as const;
export type VerificationState = (typeof VERIFICATION_STATES)[number];

export interface VerificationTaskView {
  readonly id: string;
  readonly digestAlgorithm: string;
  readonly state: VerificationState;
  readonly source: string;
  readonly port: number;
  readonly filesNotFoundAtSource: number;
  readonly filesNotFoundAtDestination: number;
  readonly metadataMatched: number;
  readonly metadataMismatches: number;
  readonly digestMismatches: number;
  readonly digestVerificationFailures: number;
  readonly filesMatched: number;
  /** fileUrls that failed a check, at most 100. */
  readonly mismatchedFiles: readonly string[];
  /** Set when the task FAILED for a reason no counter shows (e.g. the source listing failed). */
  readonly failureReason?: string;
}

export interface CreateDataCopyRequest {
  readonly maxIterations: number;
  readonly successThreshold: number;
  readonly maxConcurrency: number;
}

export interface CreateVerificationRequest {
  readonly maxConcurrency: number;
  /** As submitted; matched case-insensitively. */
  readonly digestAlgorithm: string;
}

/**
 * The data-copy tasks of one destination instance (implemented by migration/data-copy/).
 * Errors are AgentErrors with the Java Sidecar's messages (400/404/409).
 */
export interface DataCopyTasks {
  create(request: CreateDataCopyRequest): Promise<{ taskId: string }>;
  /** [] or the current/last task if it is a data-copy task. */
  list(): DataCopyTaskView[];
  /** @throws NotFound `No task found with given id <id>` / `Task <id> is not a data copy task` */
  get(taskId: string): DataCopyTaskView;
  /** Cancels and returns the task; a finished task is returned unchanged. */
  cancel(taskId: string): Promise<DataCopyTaskView>;
  /** Aborts any running task and waits until its writers stopped (agent shutdown). */
  close(): Promise<void>;
}

/** The files-verification tasks of one destination instance (implemented by migration/verification/). */
export interface VerificationTasks {
  create(request: CreateVerificationRequest): Promise<{ taskId: string }>;
  list(): VerificationTaskView[];
  get(taskId: string): VerificationTaskView;
  cancel(taskId: string): Promise<VerificationTaskView>;
  close(): Promise<void>;
}
