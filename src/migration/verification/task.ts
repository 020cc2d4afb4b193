/**
 * One files-verification task of a destination instance (behaviour doc §4): proves that the
 * destination's copy equals the source's, metadata first, then byte for byte by digest.
 *
 * States:
 *   NOT_STARTED  created, nothing read yet
 *   IN_PROGRESS  listing both sides, comparing metadata, then digests
 *   COMPLETED    every check passed: all five failure counters are 0
 *   FAILED       a check failed (see the counters and mismatchedFiles) or a listing failed
 *                (see failureReason)
 *   CANCELLED    cancelled from NOT_STARTED or IN_PROGRESS; counters stop moving
 * COMPLETED, FAILED and CANCELLED are terminal: cancel() leaves them unchanged, and start()
 * after a cancel does nothing.
 *
 * Pipeline:
 *   walk local ──┐                                   ┌─ any failure → FAILED (no digest counted)
 *                ├─ metadata compared as they arrive ┤
 *   list source ─┘   (compare.ts; a broken source    └─ digests (digests.ts) → COMPLETED | FAILED
 *                     listing restarts both)
 *
 * Both listings are taken with the task's algorithm, so the small files come with their digests
 * (each side opens such a file once, for its metadata and its bytes); their verdicts are kept
 * until the metadata has all matched, and the digest step digests only the rest (files over
 * 1 MiB beyond what each listing digests itself, digest.ts; symlinks; failed reads) on both sides.
 *
 * Cancel aborts one AbortController that reaches the source streams and the local hashers, so
 * the work stops within a read of 1 MiB or a stream round trip; no source request starts after it.
 */
import { AgentError, throwIfAborted } from "../../errors.js";
import { type LocalEntry, walkRoots } from "../../fs/list.js";
import type { Logger } from "../../log.js";
import type { SourcePeer } from "../peer.js";
import { withRetries } from "../retry.js";
import type { VerificationState, VerificationTaskView } from "../task-api.js";
import type { TaskDeps } from "../task-deps.js";
import type { MigrationTask } from "../task-slot.js";
import type { DigestAlgorithmName } from "../types.js";
import { ListingComparison, type MetadataComparison, type MetadataProblem } from "./compare.js";
import { compareDigests, type DigestVerdict, judgeListedDigest } from "./digests.js";

/** How many fileUrls a view names at most. */
export const MISMATCHED_FILES_CAP = 100;
/** Entries per batch of the local walk (the source's come in ListFiles batches). */
const LOCAL_BATCH_ENTRIES = 1000;
/**
 * How far one listing may run ahead of the other (entries waiting for their pair) before it
 * pauses until the other catches up: ~8 MB of entries. Without a bound the faster walk's entries
 * piled up, on a node of millions of files with a busy source the destination's whole listing
 * (~0.5 KB an entry). A bound of 4 batches paused the destination's walk early in the small
 * benchmark tree's verifications, which then ended no sooner (XXHash32 0.417–0.488 s against
 * 0.413–0.462, six rounds): a walk ahead banks work the other side's pace does not need yet.
 */
const LISTING_LEAD_MAX_ENTRIES = 16 * LOCAL_BATCH_ENTRIES;

/** Both listings compared, with the verdicts of the digests they carried. */
interface ListedComparison {
  readonly comparison: MetadataComparison;
  /** Metadata-matched files either listing left without a digest: for compareDigests. */
  readonly toDigest: LocalEntry[];
  /** Files whose listed digests matched. */
  readonly matches: number;
  /** The other verdicts on listed digests (mismatches). */
  readonly otherVerdicts: DigestVerdict[];
  readonly listingMs: number;
}

/** What the manager needs of a verification task, live or restored from disk. */
export interface VerificationTaskHandle extends MigrationTask {
  readonly kind: "files-verification";
  view(): VerificationTaskView;
  /** Cancels a task that has not finished; returns false (and changes nothing) otherwise. */
  cancel(reason?: string): boolean;
}

export function isVerificationTask(task: MigrationTask | undefined): task is VerificationTaskHandle {
  return task?.kind === "files-verification" && typeof (task as Partial<VerificationTaskHandle>).view === "function";
}

export interface VerificationTaskOptions {
  readonly id: string;
  /** As submitted; echoed in the view. */
  readonly digestAlgorithm: string;
  readonly algorithm: DigestAlgorithmName;
  /** Files hashed at once at the source, and locally. */
  readonly maxConcurrency: number;
  readonly deps: TaskDeps;
  /** The task's logger (carries liveMigrationRequest). */
  readonly logger: Logger;
  /** Called with the view on start and on reaching a terminal state; settled waits for it. */
  readonly persist?: (view: VerificationTaskView) => Promise<void>;
  /** LISTING_PROGRESS_LOG_MS unless set (tests shorten it). */
  readonly listingProgressLogMs?: number;
  /** LISTING_LEAD_MAX_ENTRIES and LOCAL_BATCH_ENTRIES unless set (tests shorten them). */
  readonly listingLeadMaxEntries?: number;
  readonly localBatchEntries?: number;
}

/**
 * While the listings run, their progress is logged this often (ms). On a node of millions of
 * small files the listings, which digest them, are most of a verification, and the view's
 * counters only move once they end (Java's: nothing counts before the metadata has all matched).
 */
export const LISTING_PROGRESS_LOG_MS = 10_000;

type Counters = {
  filesNotFoundAtSource: number;
  filesNotFoundAtDestination: number;
  metadataMatched: number;
  metadataMismatches: number;
  digestMismatches: number;
  digestVerificationFailures: number;
  filesMatched: number;
};

const TERMINAL: ReadonlySet<VerificationState> = new Set(["COMPLETED", "FAILED", "CANCELLED"]);

export class VerificationTask implements VerificationTaskHandle {
  readonly kind = "files-verification" as const;
  readonly id: string;
  readonly settled: Promise<void>;
  private stateValue: VerificationState = "NOT_STARTED";
  private readonly counters: Counters = {
    filesNotFoundAtSource: 0,
    filesNotFoundAtDestination: 0,
    metadataMatched: 0,
    metadataMismatches: 0,
    digestMismatches: 0,
    digestVerificationFailures: 0,
    filesMatched: 0,
  };
  private readonly mismatched: string[] = [];
  private failureReason: string | undefined;
  /** Aborted on cancel, and when the run ends, so that no stray work outlives the task. */
  private readonly work = new AbortController();
  private readonly log: Logger;
  private persisting: Promise<void> = Promise.resolve();
  private resolveSettled!: () => void;

  constructor(private readonly options: VerificationTaskOptions) {
    this.id = options.id;
    this.log = options.logger;
    this.settled = new Promise<void>((resolve) => (this.resolveSettled = resolve));
  }

  get state(): VerificationState {
    return this.stateValue;
  }

  get finished(): boolean {
    return TERMINAL.has(this.stateValue);
  }

  /** Starts the pipeline in the background; does nothing unless NOT_STARTED. */
  start(): void {
    if (this.stateValue !== "NOT_STARTED") return;
    this.stateValue = "IN_PROGRESS";
    this.log.info(
      { digestAlgorithm: this.options.digestAlgorithm, maxConcurrency: this.options.maxConcurrency, source: this.source },
      "Files verification started",
    );
    this.changed();
    void this.run().then(
      () => this.settle(),
      (err: unknown) => {
        // run() handles its own failures; this is a last guard so that settled always resolves.
        this.log.error({ err }, "Files verification crashed");
        this.finish("FAILED", `internal error: ${AgentError.from(err).message}`);
        this.settle();
      },
    );
  }

  cancel(reason = "cancelled by request"): boolean {
    if (this.finished) return false;
    const wasRunning = this.stateValue === "IN_PROGRESS";
    this.stateValue = "CANCELLED";
    this.work.abort(new AgentError("Cancelled", reason));
    this.log.info({ reason, ...this.counters }, "Files verification cancelled");
    this.changed();
    if (!wasRunning) this.settle();
    return true;
  }

  view(): VerificationTaskView {
    return {
      id: this.id,
      digestAlgorithm: this.options.digestAlgorithm,
      state: this.stateValue,
      source: this.source,
      port: this.options.deps.gatewayPort,
      ...this.counters,
      mismatchedFiles: [...this.mismatched],
      ...(this.failureReason !== undefined ? { failureReason: this.failureReason } : {}),
    };
  }

  private get source(): string {
    return this.options.deps.instance.sourceHost ?? "";
  }

  private settle(): void {
    void this.persisting.then(() => this.resolveSettled());
  }

  private changed(): void {
    const persist = this.options.persist;
    if (!persist) return;
    const view = this.view();
    this.persisting = this.persisting.then(() =>
      persist(view).catch((err: unknown) => this.log.warn({ err }, "Could not persist the verification task")),
    );
  }

  private finish(state: "COMPLETED" | "FAILED", failureReason?: string): void {
    if (this.finished) return;
    this.stateValue = state;
    this.failureReason = failureReason;
    const summary = { state, ...this.counters, ...(failureReason !== undefined ? { failureReason } : {}) };
    if (state === "COMPLETED") this.log.info(summary, "Files verification completed");
    else this.log.error(summary, "Files verification failed");
    this.changed();
  }

  private get running(): boolean {
    return this.stateValue === "IN_PROGRESS";
  }

  private async run(): Promise<void> {
    const signal = this.work.signal;
    let peer: SourcePeer | undefined;
    try {
      peer = this.options.deps.connectSource(this.log);
      const listed = await this.listAndCompare(peer, signal);
      if (!this.running || listed === undefined) return;
      const { comparison } = listed;
      this.counters.metadataMatched = comparison.metadataMatched;
      this.counters.metadataMismatches = comparison.metadataMismatches;
      this.counters.filesNotFoundAtSource = comparison.filesNotFoundAtSource;
      this.counters.filesNotFoundAtDestination = comparison.filesNotFoundAtDestination;
      for (const problem of comparison.problems) this.reportMetadataProblem(problem);
      if (comparison.problems.length > 0) {
        this.finish("FAILED");
        return;
      }
      // Only now do the listings' digest verdicts count (Java: no digest work after a metadata failure).
      this.counters.filesMatched += listed.matches;
      for (const verdict of listed.otherVerdicts) this.record(verdict);
      const toDigest = listed.toDigest;
      this.log.info(
        {
          listingMs: listed.listingMs,
          metadataMatched: comparison.metadataMatched,
          digestsCompared: listed.matches + listed.otherVerdicts.length,
          filesToDigest: toDigest.length,
        },
        "Files verification: metadata matched, comparing digests",
      );
      await compareDigests({
        peer,
        algorithm: this.options.algorithm,
        files: toDigest,
        maxConcurrency: this.options.maxConcurrency,
        retry: this.options.deps.retry,
        signal,
        onVerdict: (verdict) => this.record(verdict),
        onRetry: (files, attempt, delayMs, lastError) =>
          this.log.debug(
            { files, attempt, maxRetries: this.options.deps.retry.maxRetries, delayMs, err: lastError },
            `Files verification: re-requesting source digests, retry ${attempt}/${this.options.deps.retry.maxRetries}`,
          ),
      });
      if (!this.running) return;
      const c = this.counters;
      const failures =
        c.filesNotFoundAtSource + c.filesNotFoundAtDestination + c.metadataMismatches + c.digestMismatches + c.digestVerificationFailures;
      this.finish(failures === 0 ? "COMPLETED" : "FAILED");
    } catch (err) {
      if (!this.running) return; // cancelled: later failures do not change the state
      const error = AgentError.from(err);
      this.finish("FAILED", error.message);
    } finally {
      this.work.abort(new AgentError("Cancelled", "verification task ended"));
      peer?.close();
    }
  }

  /**
   * Lists both sides at once, each batch compared as it arrives (compare.ts), and judges the
   * digests the listings carry (digests.ts). On a failure finishes FAILED and returns undefined.
   * A retryable failure of the source's listing restarts both walks: the comparison has
   * consumed the local one.
   */
  private async listAndCompare(peer: SourcePeer, signal: AbortSignal): Promise<ListedComparison | undefined> {
    const { instance, retry } = this.options.deps;
    const digestAlgorithm = this.options.algorithm;
    const leadMax = this.options.listingLeadMaxEntries ?? LISTING_LEAD_MAX_ENTRIES;
    const localBatchEntries = this.options.localBatchEntries ?? LOCAL_BATCH_ENTRIES;
    const started = performance.now();
    let localError: AgentError | undefined;
    const attempt = async (): Promise<ListedComparison> => {
      const toDigest: LocalEntry[] = [];
      const otherVerdicts: DigestVerdict[] = [];
      let matches = 0;
      const comparison = new ListingComparison<LocalEntry>((file) => {
        const verdict = judgeListedDigest(file);
        if (verdict === undefined) toDigest.push(file.local);
        else if (verdict.kind === "MATCH") matches++;
        else otherVerdicts.push(verdict);
      });
      let localEntries = 0;
      let sourceEntries = 0;
      const progress = setInterval(
        () =>
          this.log.info(
            { localEntries, sourceEntries, digestsCompared: matches + otherVerdicts.length, filesToDigest: toDigest.length },
            "Files verification: listing both sides",
          ),
        this.options.listingProgressLogMs ?? LISTING_PROGRESS_LOG_MS,
      ).unref();
      // Either walk failing stops the other one.
      const both = new AbortController();
      const stopBoth = () => both.abort(signal.reason);
      signal.addEventListener("abort", stopBoth, { once: true });
      // A walk that runs leadMax entries ahead waits for the other one's next batch or end.
      const local = new Pacer(both.signal);
      const source = new Pacer(both.signal);
      try {
        await Promise.all([
          (async () => {
            try {
              for await (const batch of walkRoots(instance.roots, instance.exclusions, localBatchEntries, { digestAlgorithm })) {
                throwIfAborted(both.signal);
                comparison.addLocal(batch);
                localEntries += batch.length;
                source.wake();
                while (comparison.localAhead > leadMax && !source.ended) await local.pause();
                throwIfAborted(both.signal);
              }
            } catch (err) {
              if (both.signal.aborted) throw err;
              localError = AgentError.from(err);
              throw new AgentError("Internal", localError.message, { cause: err }); // never retried
            } finally {
              local.end();
              source.wake();
            }
          })(),
          (async () => {
            try {
              for await (const batch of peer.listFilesWithDigests(digestAlgorithm, both.signal)) {
                comparison.addSource(batch);
                sourceEntries += batch.length;
                local.wake();
                while (comparison.sourceAhead > leadMax && !local.ended) await source.pause();
              }
            } finally {
              source.end();
              local.wake();
            }
          })(),
        ]).catch((err: unknown) => {
          both.abort(err);
          throw err;
        });
      } finally {
        clearInterval(progress);
        signal.removeEventListener("abort", stopBoth);
      }
      return { comparison: comparison.finish(), toDigest, matches, otherVerdicts, listingMs: Math.round(performance.now() - started) };
    };
    try {
      return await withRetries(attempt, retry, {
        signal,
        onRetry: (err, attempt, delayMs) =>
          this.log.debug({ err, attempt, delayMs }, `Files verification: source listing failed, retry ${attempt}/${retry.maxRetries}`),
      });
    } catch (err) {
      if (!this.running) return undefined;
      if (localError !== undefined) this.finish("FAILED", `Failed to list local files: ${localError.message}`);
      else this.finish("FAILED", `Failed to list files at source ${this.source}: ${AgentError.from(err).message}`);
      return undefined;
    }
  }

  private reportMetadataProblem(problem: MetadataProblem): void {
    this.addMismatched(problem.fileUrl);
    this.log.error({ fileUrl: problem.fileUrl, check: problem.kind, detail: problem.detail }, `Files verification: ${problem.kind} ${problem.fileUrl}`);
  }

  private record(verdict: DigestVerdict): void {
    if (!this.running) return;
    switch (verdict.kind) {
      case "MATCH":
        this.counters.filesMatched++;
        return;
      case "MISMATCH":
        this.counters.digestMismatches++;
        this.addMismatched(verdict.fileUrl);
        this.log.error(
          { fileUrl: verdict.fileUrl, check: "DIGEST_MISMATCH", localDigest: verdict.localDigest, sourceDigest: verdict.sourceDigest },
          `Files verification: DIGEST_MISMATCH ${verdict.fileUrl}`,
        );
        return;
      case "LOCAL_ERROR":
        this.counters.digestMismatches++;
        this.addMismatched(verdict.fileUrl);
        this.log.error(
          { fileUrl: verdict.fileUrl, check: "DIGEST_MISMATCH", err: verdict.error },
          `Files verification: DIGEST_MISMATCH ${verdict.fileUrl} (local digest failed: ${verdict.error.message})`,
        );
        return;
      case "SOURCE_ERROR":
        this.counters.digestVerificationFailures++;
        this.addMismatched(verdict.fileUrl);
        this.log.error(
          { fileUrl: verdict.fileUrl, check: "DIGEST_VERIFICATION_FAILURE", err: verdict.error },
          `Files verification: DIGEST_VERIFICATION_FAILURE ${verdict.fileUrl} (source digest failed: ${verdict.error.message})`,
        );
        return;
    }
  }

  private addMismatched(fileUrl: string): void {
    if (this.mismatched.length < MISMATCHED_FILES_CAP) this.mismatched.push(fileUrl);
  }
}

/** A finished task read back from disk after a restart; its view never changes. */
export class RestoredVerificationTask implements VerificationTaskHandle {
  readonly kind = "files-verification" as const;
  readonly finished = true;
  readonly settled = Promise.resolve();
  readonly id: string;
  private readonly saved: VerificationTaskView;

  /** A view saved while running becomes FAILED: the agent stopped before the task ended. */
  constructor(saved: VerificationTaskView) {
    this.id = saved.id;
    this.saved = TERMINAL.has(saved.state)
      ? saved
      : { ...saved, state: "FAILED", failureReason: `the agent stopped while the task was ${saved.state}` };
  }

  view(): VerificationTaskView {
    return { ...this.saved, mismatchedFiles: [...this.saved.mismatchedFiles] };
  }

  cancel(): boolean {
    return false;
  }
}

/**
 * One listing's side of the pacing in listAndCompare: pause() waits for the next wake() (the
 * other side listed a batch or ended) or for the abort; ended says this side is done.
 */
class Pacer {
  ended = false;
  private resume: (() => void) | undefined;

  constructor(private readonly signal: AbortSignal) {}

  pause(): Promise<void> {
    if (this.signal.aborted) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const done = () => {
        this.signal.removeEventListener("abort", done);
        this.resume = undefined;
        resolve();
      };
      this.resume = done;
      this.signal.addEventListener("abort", done, { once: true });
    });
  }

  wake(): void {
    this.resume?.();
  }

  end(): void {
    this.ended = true;
  }
}
