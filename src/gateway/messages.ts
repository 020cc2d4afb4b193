/**
 * Domain → generated message conversions for the LiveMigrationService (the gateway's half of
 * "generated code stops at two adapters"; plane/wire.ts is the other half and owns the
 * InstanceFile conversion both use).
 */
import { create } from "@bufbuild/protobuf";
import {
  DataCopyIterationSchema,
  DataCopyState,
  type DataCopyTask,
  DataCopyTaskSchema,
  type FilesVerificationTask,
  FilesVerificationTaskSchema,
  MigrationState,
  VerificationState,
} from "../../gen/livemigration/v1/live_migration_pb.js";
import type { DataCopyTaskView, VerificationTaskView } from "../migration/task-api.js";
import type { MigrationStatus } from "../migration/types.js";

export function toDataCopyTaskMessage(view: DataCopyTaskView): DataCopyTask {
  return create(DataCopyTaskSchema, {
    taskId: view.taskId,
    source: view.source,
    port: view.port,
    maxIterations: view.maxIterations,
    successThreshold: view.successThreshold,
    maxConcurrency: view.maxConcurrency,
    status: view.status.map((s) =>
      create(DataCopyIterationSchema, {
        iteration: s.iteration,
        state: DataCopyState[s.state],
        totalSize: BigInt(s.totalSize),
        totalFiles: BigInt(s.totalFiles),
        bytesToDownload: BigInt(s.bytesToDownload),
        filesToDownload: BigInt(s.filesToDownload),
        filesDownloaded: BigInt(s.filesDownloaded),
        downloadFailures: BigInt(s.downloadFailures),
        bytesDownloaded: BigInt(s.bytesDownloaded),
        bytesTransferred: BigInt(s.bytesTransferred),
        bytesPerSecond: s.bytesPerSecond,
        etaSeconds: s.etaSeconds,
        failureReason: s.failureReason ?? "",
      }),
    ),
  });
}

export function toVerificationTaskMessage(view: VerificationTaskView): FilesVerificationTask {
  return create(FilesVerificationTaskSchema, {
    id: view.id,
    digestAlgorithm: view.digestAlgorithm,
    state: VerificationState[view.state],
    source: view.source,
    port: view.port,
    filesNotFoundAtSource: BigInt(view.filesNotFoundAtSource),
    filesNotFoundAtDestination: BigInt(view.filesNotFoundAtDestination),
    metadataMatched: BigInt(view.metadataMatched),
    metadataMismatches: BigInt(view.metadataMismatches),
    digestMismatches: BigInt(view.digestMismatches),
    digestVerificationFailures: BigInt(view.digestVerificationFailures),
    filesMatched: BigInt(view.filesMatched),
    mismatchedFiles: [...view.mismatchedFiles],
    failureReason: view.failureReason ?? "",
  });
}

export function toMigrationStateMessage(status: MigrationStatus): { state: MigrationState; endTime?: bigint } {
  return status.state === "COMPLETED"
    ? { state: MigrationState.COMPLETED, endTime: BigInt(status.endTime ?? 0) }
    : { state: MigrationState.NOT_COMPLETED };
}
