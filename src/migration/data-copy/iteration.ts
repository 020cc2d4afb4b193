/**
 * One data-copy iteration (Java: LiveMigrationFileDownloader.downloadFiles), behaviour doc §3.5:
 *
 *   pre-check -> source status -> list source -> CLEANING -> PREPARING -+-> SUCCESS (nothing to do)
 *                                                                        +-> FAILED (k >= maxIterations)
 *                                                                        +-> DOWNLOADING -> DOWNLOAD_COMPLETE | FAILED
 *
 * Any error fails the iteration with the error's message as `failureReason`; after a cancel
 * the status stays CANCELLED. runIteration resolves only when every transfer it started has
 * stopped, and never rejects.
 */
import { stat } from "node:fs/promises";
import type { SidecarClientConfig } from "../../config/schema.js";
import { AgentError, throwIfAborted } from "../../errors.js";
import { listRoots } from "../../fs/list.js";
import { SyncBudget } from "../../fs/sync-budget.js";
import { targetPathOf } from "../../fs/temp-name.js";
import type { InstanceContext } from "../../instance/registry.js";
import type { Logger } from "../../log.js";
import type { SourcePeer } from "../peer.js";
import { withRetries } from "../retry.js";
import type { CreateDataCopyRequest } from "../task-api.js";
import type { PreCheck } from "../task-deps.js";
import { downloadShortlist, syncDirectoryTimes } from "./download.js";
import type { TransferContext } from "./file-transfer.js";
import type { OperationStatus } from "./operation-status.js";
import { applyCleaning, applyThreshold, findMissing, planCleaning, SourceMapping, type TempFileInfo } from "./plan.js";
import { runPreCheck } from "./pre-check.js";
import type { ResumeStore } from "./resume-store.js";

export const SOURCE_COMPLETED_MESSAGE = "Live migration has completed at source.";
export const RETRIES_EXHAUSTED_MESSAGE = "Retries exhausted";

export interface IterationContext {
  readonly taskId: string;
  readonly request: CreateDataCopyRequest;
  readonly instance: InstanceContext;
  readonly sourceHost: string;
  readonly gatewayPort: number;
  readonly peer: SourcePeer;
  /** The task's signal; its reason (an AgentError) becomes the failure reason when it is not a cancel. */
  readonly signal: AbortSignal;
  readonly retry: SidecarClientConfig;
  /** The task's logger (carries liveMigrationRequest). */
  readonly logger: Logger;
  readonly preCheck: PreCheck;
  readonly preCheckCommand: string | undefined;
  readonly resume: ResumeStore;
  readonly resumeMinBytes: number;
  /** Called after every state change of the status. */
  readonly onStateChange: () => void;
}

/** Runs iteration `status.iteration` to a terminal state. */
export async function runIteration(ctx: IterationContext, status: OperationStatus): Promise<void> {
  const k = status.iteration;
  const log = ctx.logger.child({ iteration: k });
  const move = (change: () => void) => {
    change();
    log.info({ state: status.state }, `iteration ${k}: ${status.state}`);
    ctx.onStateChange();
  };
  const retrying = (what: string) => ({
    signal: ctx.signal,
    onRetry: (err: AgentError, n: number, delayMs: number) =>
      log.debug({ code: err.code, err: err.message, delayMs }, `retry ${n}/${ctx.retry.maxRetries} of ${what}`),
  });

  try {
    await runPreCheck(
      ctx.preCheck,
      ctx.preCheckCommand,
      {
        sourceHost: ctx.sourceHost,
        instance: ctx.instance,
        gatewayPort: ctx.gatewayPort,
        taskId: ctx.taskId,
        iteration: k,
        request: ctx.request,
        signal: ctx.signal,
      },
      log,
    );

    // The source's status, its listing and the local walk start together: the listing does not
    // wait for the status's round trip (one per pass: ~10 ms on a 10 ms link, ~20 ms for a new
    // channel on loopback), and it is dropped if the source has completed.
    const listingAbort = new AbortController();
    const listingSignal = AbortSignal.any([ctx.signal, listingAbort.signal]);
    const sourceStatus = withRetries(() => ctx.peer.migrationStatus(ctx.signal), ctx.retry, retrying("source status")).catch(
      (err: unknown) => rethrowWith(err, `Cannot read the migration status of source ${ctx.sourceHost}`),
    );
    const sourceListing = withRetries(
      async () => {
        // Each batch is mapped as it arrives, while the source walks on.
        const mapping = new SourceMapping(ctx.instance.roots);
        for await (const batch of ctx.peer.listFiles(listingSignal)) mapping.add(batch);
        return mapping;
      },
      ctx.retry,
      { ...retrying("source listing"), signal: listingSignal },
    ).catch((err: unknown) => rethrowWith(err, `Cannot list the files of source ${ctx.sourceHost}`));
    // Neither depends on the other, nor on the status.
    const localListing = listRoots(ctx.instance.roots, ctx.instance.exclusions);
    // Awaited below, unless an earlier step fails.
    sourceListing.catch(() => undefined);
    localListing.catch(() => undefined);
    try {
      if ((await sourceStatus).state !== "NOT_COMPLETED") throw new AgentError("FailedPrecondition", SOURCE_COMPLETED_MESSAGE);
    } catch (err) {
      listingAbort.abort(err);
      throw err;
    }
    const listing = await sourceListing;
    const { totalSize } = listing;
    move(() => status.toCleaning(totalSize, listing.totalEntries));
    if (listing.error) throw listing.error;

    const sources = listing.targets;
    const local = await localListing;
    const temps: TempFileInfo[] = await Promise.all(
      local.temps.map(async (p) => {
        const stats = await stat(p).catch(() => undefined);
        return { path: p, size: stats?.size ?? 0, record: await ctx.resume.get(targetPathOf(p)), directory: stats?.isDirectory() };
      }),
    );
    const cleaning = planCleaning(sources, local.entries, temps);
    for (const d of cleaning.deletions) log.debug({ path: d.absPath, kind: d.kind, reason: d.reason }, "deleting");
    await applyCleaning(ctx.instance.roots, cleaning.deletions);
    await ctx.resume.prune(cleaning.resumableTargets);
    log.info(
      { deleted: cleaning.deletions.length, resumable: cleaning.resumableTargets.size, localEntries: local.entries.length },
      "cleaning done",
    );
    throwIfAborted(ctx.signal);
    move(() => status.toPreparing());

    const missing = await findMissing([...sources.values()], cleaning.keptPaths);
    const plan = applyThreshold(missing, totalSize, ctx.request.successThreshold);
    log.info(
      { missingEntries: missing.length, missingBytes: plan.missingBytes, present: plan.present, decision: plan.decision },
      "prepared",
    );
    const transfer: TransferContext = {
      peer: ctx.peer,
      signal: ctx.signal,
      retry: ctx.retry,
      logger: log,
      resume: ctx.resume,
      resumeMinBytes: ctx.resumeMinBytes,
      touchedDirs: new Set(),
      knownDirs: new Set(),
      budget: new SyncBudget(),
    };
    if (plan.shortlist.length === 0) {
      await syncDirectoryTimes(transfer, sources.values());
      throwIfAborted(ctx.signal);
      move(() => status.toSuccess());
      return;
    }
    if (k >= ctx.request.maxIterations) {
      const entries = plural(plan.shortlist.length, "entry", "entries");
      const passes = plural(ctx.request.maxIterations, "download pass", "download passes");
      throw new AgentError(
        "FailedPrecondition",
        `${RETRIES_EXHAUSTED_MESSAGE}: ${entries} (${plan.missingBytes} bytes) still missing after ${passes}`,
      );
    }
    move(() => status.toDownloading(plan.missingBytes, plan.shortlist.length));
    const summary = await downloadShortlist(transfer, status, plan.shortlist, ctx.request.maxConcurrency);
    throwIfAborted(ctx.signal);
    log.info({ ...status.view(), vanished: summary.vanished, resumedBytes: summary.resumedBytes }, "download phase done");
    if (summary.failures.length > 0) {
      const first = summary.failures[0]!;
      const stopped = summary.stoppedEarly ? " (the phase stopped early: the source keeps failing)" : "";
      throw new AgentError(
        "Unavailable",
        `${summary.failures.length} of ${plan.shortlist.length} entries failed to download${stopped}; first: ${first.fileUrl}: ${first.reason}`,
      );
    }
    await syncDirectoryTimes(transfer, sources.values());
    throwIfAborted(ctx.signal);
    move(() => status.toDownloadComplete());
  } catch (err) {
    if (status.state === "CANCELLED" || status.terminal) return;
    const reason = ctx.signal.aborted ? abortReason(ctx.signal) : AgentError.from(err).message;
    log.warn({ err: reason }, `iteration ${k} failed`);
    move(() => status.toFailed(reason));
  }
}

function plural(n: number, one: string, many: string): string {
  return `${n} ${n === 1 ? one : many}`;
}

function rethrowWith(err: unknown, context: string): never {
  const error = AgentError.from(err);
  if (error.code === "Cancelled") throw error;
  throw new AgentError(error.code, `${context}: ${error.message}`, { cause: error });
}

function abortReason(signal: AbortSignal): string {
  const reason: unknown = signal.reason;
  return reason instanceof AgentError ? reason.message : "operation cancelled";
}
