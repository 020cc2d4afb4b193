/**
 * The status of one data-copy iteration (Java: OperationStatus), behaviour doc §3.8, plus
 * lm-sidecar's progress fields.
 *
 * States and allowed moves:
 *   STARTING          -> CLEANING, FAILED, CANCELLED
 *   CLEANING          -> PREPARING, FAILED, CANCELLED
 *   PREPARING         -> DOWNLOADING, SUCCESS, FAILED, CANCELLED
 *   DOWNLOADING       -> DOWNLOAD_COMPLETE, FAILED, CANCELLED
 *   DOWNLOAD_COMPLETE, SUCCESS, FAILED, CANCELLED: terminal
 * CANCELLED -> FAILED is tolerated and leaves CANCELLED (a transfer failing after a cancel);
 * every other move throws IllegalStateTransitionError "Cannot move from X state to Y state.".
 *
 * The Java counters (filesDownloaded, downloadFailures, bytesDownloaded) move only in
 * DOWNLOADING or CANCELLED (late completions after a cancel) and throw otherwise; entering
 * DOWNLOADING resets them. Sizes and counts start at -1, counters at 0.
 *
 * Progress (not in the Java status): `bytesTransferred` counts every byte received from the
 * source this iteration, partial files and retried bytes included; `bytesPerSecond` is the
 * receive rate over the last few seconds while DOWNLOADING and the phase average afterwards;
 * `etaSeconds` is the time left at that rate for the bytes not yet on disk (-1 when unknown,
 * 0 once DOWNLOAD_COMPLETE or SUCCESS).
 */
import { AgentError } from "../../errors.js";
import type { DataCopyIterationView, DataCopyState } from "../task-api.js";

const NEXT: Readonly<Record<DataCopyState, readonly DataCopyState[]>> = {
  STARTING: ["CLEANING", "FAILED", "CANCELLED"],
  CLEANING: ["PREPARING", "FAILED", "CANCELLED"],
  PREPARING: ["DOWNLOADING", "SUCCESS", "FAILED", "CANCELLED"],
  DOWNLOADING: ["DOWNLOAD_COMPLETE", "FAILED", "CANCELLED"],
  DOWNLOAD_COMPLETE: [],
  SUCCESS: [],
  FAILED: [],
  CANCELLED: [],
};

/** Thrown on a move the table does not allow; a programming error, so code Internal. */
export class IllegalStateTransitionError extends AgentError {
  constructor(
    readonly from: DataCopyState,
    readonly to: DataCopyState,
  ) {
    super("Internal", `Cannot move from ${from} state to ${to} state.`);
  }
}

/** The state after moving `from` -> `to`. @throws IllegalStateTransitionError */
export function nextState(from: DataCopyState, to: DataCopyState): DataCopyState {
  if (from === "CANCELLED" && to === "FAILED") return "CANCELLED";
  if (NEXT[from].includes(to)) return to;
  throw new IllegalStateTransitionError(from, to);
}

export function isTerminal(state: DataCopyState): boolean {
  return NEXT[state].length === 0;
}

/** The receive-rate window while DOWNLOADING. */
const RATE_WINDOW_MS = 5_000;
const SAMPLE_EVERY_MS = 250;

/** One iteration's state, plan, counters and progress; mutable, owned by the iteration that runs it. */
export class OperationStatus {
  private current: DataCopyState = "STARTING";
  private totalSize = -1;
  private totalFiles = -1;
  private bytesToDownload = -1;
  private filesToDownload = -1;
  private filesDownloaded = 0;
  private downloadFailures = 0;
  private bytesDownloaded = 0;
  private bytesTransferred = 0;
  /** Bytes of shortlisted files already in temp files but not yet complete (resumed prefixes included). */
  private bytesInFlight = 0;
  private failureReason: string | undefined;
  private downloadStartedAt = -1;
  private downloadEndedAt = -1;
  private samples: { t: number; bytes: number }[] = [];

  constructor(
    readonly iteration: number,
    private readonly clock: () => number = Date.now,
  ) {}

  get state(): DataCopyState {
    return this.current;
  }

  get terminal(): boolean {
    return isTerminal(this.current);
  }

  /** STARTING -> CLEANING with the source listing's FILE bytes and entry count (dirs included). */
  toCleaning(totalSize: number, totalFiles: number): void {
    this.move("CLEANING");
    this.totalSize = totalSize;
    this.totalFiles = totalFiles;
  }

  toPreparing(): void {
    this.move("PREPARING");
  }

  /** PREPARING -> DOWNLOADING; sets the plan and resets the counters. */
  toDownloading(bytesToDownload: number, filesToDownload: number): void {
    this.move("DOWNLOADING");
    this.bytesToDownload = bytesToDownload;
    this.filesToDownload = filesToDownload;
    this.filesDownloaded = 0;
    this.downloadFailures = 0;
    this.bytesDownloaded = 0;
    this.bytesTransferred = 0;
    this.bytesInFlight = 0;
    this.downloadStartedAt = this.clock();
    this.samples = [{ t: this.downloadStartedAt, bytes: 0 }];
  }

  toDownloadComplete(): void {
    this.move("DOWNLOAD_COMPLETE");
  }

  toSuccess(): void {
    this.move("SUCCESS");
  }

  /** -> FAILED with a reason; from CANCELLED it stays CANCELLED (and keeps no reason). */
  toFailed(reason: string): void {
    this.move("FAILED");
    if (this.current === "FAILED") this.failureReason = reason;
  }

  /** -> CANCELLED. @throws IllegalStateTransitionError from a terminal state. */
  cancel(): void {
    this.move("CANCELLED");
  }

  /** A shortlisted entry (file, empty file or directory) is in place. */
  incrementFilesDownloaded(): void {
    this.assertCounting("files downloaded");
    this.filesDownloaded++;
  }

  /** Adds a completed file's size; never partial progress (that is bytesTransferred). */
  addBytesDownloaded(size: number): void {
    this.assertCounting("bytes downloaded");
    this.bytesDownloaded += size;
  }

  incrementDownloadFailures(): void {
    this.assertCounting("download failures");
    this.downloadFailures++;
  }

  /** True while the Java counters may move (DOWNLOADING or CANCELLED). */
  get counting(): boolean {
    return this.current === "DOWNLOADING" || this.current === "CANCELLED";
  }

  /** Bytes received from the source (they are written to a temp file). Never throws. */
  addTransferred(bytes: number): void {
    this.bytesTransferred += bytes;
    this.bytesInFlight += bytes;
    const now = this.clock();
    const last = this.samples[this.samples.length - 1];
    if (this.current === "DOWNLOADING" && (!last || now - last.t >= SAMPLE_EVERY_MS)) {
      this.samples.push({ t: now, bytes: this.bytesTransferred });
      while (this.samples.length > 2 && now - this.samples[1]!.t >= RATE_WINDOW_MS) this.samples.shift();
    }
  }

  /** Moves in-flight bytes without a transfer: +prefix when a temp file is resumed, -position when one is dropped or completes. */
  adjustInFlight(bytes: number): void {
    this.bytesInFlight = Math.max(0, this.bytesInFlight + bytes);
  }

  view(): DataCopyIterationView {
    const now = this.clock();
    const bytesPerSecond = this.rate(now);
    let etaSeconds = -1;
    if (this.current === "DOWNLOAD_COMPLETE" || this.current === "SUCCESS") etaSeconds = 0;
    else if (this.current === "DOWNLOADING" && bytesPerSecond > 0) {
      const remaining = Math.max(0, this.bytesToDownload - this.bytesDownloaded - this.bytesInFlight);
      etaSeconds = Math.ceil(remaining / bytesPerSecond);
    }
    return {
      iteration: this.iteration,
      state: this.current,
      totalSize: this.totalSize,
      totalFiles: this.totalFiles,
      bytesToDownload: this.bytesToDownload,
      filesToDownload: this.filesToDownload,
      filesDownloaded: this.filesDownloaded,
      downloadFailures: this.downloadFailures,
      bytesDownloaded: this.bytesDownloaded,
      bytesTransferred: this.bytesTransferred,
      bytesPerSecond,
      etaSeconds,
      ...(this.failureReason !== undefined ? { failureReason: this.failureReason } : {}),
    };
  }

  private rate(now: number): number {
    if (this.downloadStartedAt < 0) return 0;
    if (this.current !== "DOWNLOADING") {
      const elapsed = (this.downloadEndedAt >= 0 ? this.downloadEndedAt : now) - this.downloadStartedAt;
      return elapsed > 0 ? Math.round((this.bytesTransferred * 1000) / elapsed) : 0;
    }
    const first = this.samples[0]!;
    const elapsed = now - first.t;
    return elapsed > 0 ? Math.round(((this.bytesTransferred - first.bytes) * 1000) / elapsed) : 0;
  }

  private move(to: DataCopyState): void {
    const from = this.current;
    this.current = nextState(from, to);
    if (from === "DOWNLOADING" && this.current !== "DOWNLOADING") this.downloadEndedAt = this.clock();
  }

  private assertCounting(counter: string): void {
    if (!this.counting) {
      throw new AgentError("Internal", `Cannot increment ${counter} when operation is in state ${this.current}`);
    }
  }
}
