/**
 * The LiveMigrationService implementation: the one implementation behind REST, Connect and
 * gRPC. Each RPC picks the instance from the Host header (gRPC: :authority), runs the Java
 * Sidecar's guard chain for that operation (ACCESS below), then calls the migration layer.
 * It throws ConnectError whose code mirrors the AgentError code, with the AgentError as cause.
 */
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import {
  ClearMigrationStatusResponseSchema,
  ListFilesResponseSchema,
  LiveMigrationService,
} from "../../gen/livemigration/v1/live_migration_pb.js";
import { AgentError, type ErrorCode } from "../errors.js";
import { listRoots } from "../fs/list.js";
import type { InstanceContext, InstanceRegistry } from "../instance/registry.js";
import {
  requireDestination,
  requireNeither,
  requireNotCompleted,
  requireSourceOrDestination,
} from "../migration/guards.js";
import type { DataCopyTasks, VerificationTasks } from "../migration/task-api.js";
import { toInstanceFile } from "../plane/wire.js";
import { toDataCopyTaskMessage, toMigrationStateMessage, toVerificationTaskMessage } from "./messages.js";

export type Operation = keyof ServiceImpl<typeof LiveMigrationService>;

/** The guard chain of every operation, in the Java Sidecar's order (behaviour doc §1.1). */
export const ACCESS: Record<Operation, (instance: InstanceContext) => Promise<void> | void> = {
  createDataCopyTask: async (i) => {
    requireDestination(i);
    await requireNotCompleted(i);
  },
  listDataCopyTasks: requireDestination,
  getDataCopyTask: requireDestination,
  cancelDataCopyTask: requireDestination,
  createFilesVerificationTask: async (i) => {
    requireDestination(i);
    await requireNotCompleted(i);
  },
  listFilesVerificationTasks: requireDestination,
  getFilesVerificationTask: requireDestination,
  cancelFilesVerificationTask: requireDestination,
  getMigrationStatus: requireSourceOrDestination,
  markMigrationCompleted: requireSourceOrDestination,
  clearMigrationStatus: requireNeither,
  listFiles: requireSourceOrDestination,
};

/** Resolves the instance of a request and runs the operation's guards. */
export async function authorize(registry: InstanceRegistry, host: string | null | undefined, op: Operation): Promise<InstanceContext> {
  const instance = await registry.resolve(host ?? undefined);
  await ACCESS[op](instance);
  return instance;
}

/** AgentError → ConnectError with the same-named code. Other errors pass through ConnectError.from. */
export function toConnectError(err: unknown): ConnectError {
  if (err instanceof ConnectError) return err;
  if (err instanceof AgentError) return new ConnectError(err.message, CONNECT_CODE[err.code], undefined, undefined, err);
  return ConnectError.from(err);
}

const CONNECT_CODE: Record<ErrorCode, Code> = {
  InvalidArgument: Code.InvalidArgument,
  FailedPrecondition: Code.FailedPrecondition,
  OutOfRange: Code.OutOfRange,
  NotFound: Code.NotFound,
  PermissionDenied: Code.PermissionDenied,
  AlreadyExists: Code.AlreadyExists,
  Aborted: Code.Aborted,
  Unavailable: Code.Unavailable,
  Cancelled: Code.Canceled,
  DeadlineExceeded: Code.DeadlineExceeded,
  DataLoss: Code.DataLoss,
  ResourceExhausted: Code.ResourceExhausted,
  Unimplemented: Code.Unimplemented,
  Internal: Code.Internal,
};

/** ConnectError (or anything) → AgentError, preferring the AgentError that caused it. */
export function toAgentError(err: unknown): AgentError {
  if (err instanceof ConnectError) {
    if (err.cause instanceof AgentError) return err.cause;
    const code = (Object.keys(CONNECT_CODE) as ErrorCode[]).find((c) => CONNECT_CODE[c] === err.code) ?? "Internal";
    return new AgentError(code, err.rawMessage, { cause: err });
  }
  return AgentError.from(err);
}

function hostOf(ctx: HandlerContext): string | null {
  return ctx.requestHeader.get("host");
}

function dataCopy(instance: InstanceContext): DataCopyTasks {
  if (!instance.dataCopy) throw new AgentError("Unavailable", "data-copy tasks are not ready on this agent");
  return instance.dataCopy;
}

function verification(instance: InstanceContext): VerificationTasks {
  if (!instance.verification) throw new AgentError("Unavailable", "verification tasks are not ready on this agent");
  return instance.verification;
}

export const DATA_COPY_TASKS_PATH = "/api/v1/live-migration/data-copy-tasks";
export const VERIFICATION_TASKS_PATH = "/api/v1/live-migration/files-verification-tasks";

/** Builds the service implementation over the agent's instances. */
export function createLiveMigrationService(registry: InstanceRegistry): ServiceImpl<typeof LiveMigrationService> {
  const impl: ServiceImpl<typeof LiveMigrationService> = {
    async createDataCopyTask(req, ctx) {
      const instance = await authorize(registry, hostOf(ctx), "createDataCopyTask");
      const { taskId } = await dataCopy(instance).create(req);
      return { taskId, statusUrl: `${DATA_COPY_TASKS_PATH}/${taskId}` };
    },
    async listDataCopyTasks(_req, ctx) {
      const instance = await authorize(registry, hostOf(ctx), "listDataCopyTasks");
      return { tasks: dataCopy(instance).list().map(toDataCopyTaskMessage) };
    },
    async getDataCopyTask(req, ctx) {
      const instance = await authorize(registry, hostOf(ctx), "getDataCopyTask");
      return { task: toDataCopyTaskMessage(dataCopy(instance).get(req.taskId)) };
    },
    async cancelDataCopyTask(req, ctx) {
      const instance = await authorize(registry, hostOf(ctx), "cancelDataCopyTask");
      return { task: toDataCopyTaskMessage(await dataCopy(instance).cancel(req.taskId)) };
    },
    async createFilesVerificationTask(req, ctx) {
      const instance = await authorize(registry, hostOf(ctx), "createFilesVerificationTask");
      const { taskId } = await verification(instance).create(req);
      return { taskId, statusUrl: `${VERIFICATION_TASKS_PATH}/${taskId}` };
    },
    async listFilesVerificationTasks(_req, ctx) {
      const instance = await authorize(registry, hostOf(ctx), "listFilesVerificationTasks");
      return { tasks: verification(instance).list().map(toVerificationTaskMessage) };
    },
    async getFilesVerificationTask(req, ctx) {
      const instance = await authorize(registry, hostOf(ctx), "getFilesVerificationTask");
      return { task: toVerificationTaskMessage(verification(instance).get(req.taskId)) };
    },
    async cancelFilesVerificationTask(req, ctx) {
      const instance = await authorize(registry, hostOf(ctx), "cancelFilesVerificationTask");
      return { task: toVerificationTaskMessage(await verification(instance).cancel(req.taskId)) };
    },
    async getMigrationStatus(_req, ctx) {
      const instance = await authorize(registry, hostOf(ctx), "getMigrationStatus");
      return toMigrationStateMessage(await instance.status.get());
    },
    async markMigrationCompleted(_req, ctx) {
      const instance = await authorize(registry, hostOf(ctx), "markMigrationCompleted");
      return toMigrationStateMessage(await instance.status.markCompleted());
    },
    async clearMigrationStatus(_req, ctx) {
      const instance = await authorize(registry, hostOf(ctx), "clearMigrationStatus");
      await instance.status.clear(instance.config.host);
      return create(ClearMigrationStatusResponseSchema, { status: "OK" });
    },
    async listFiles(_req, ctx) {
      const instance = await authorize(registry, hostOf(ctx), "listFiles");
      const listing = await listRoots(instance.roots, instance.exclusions);
      return create(ListFilesResponseSchema, {
        files: listing.entries.map(toInstanceFile),
        totalSize: BigInt(listing.totalSize),
      });
    },
  };
  return translateErrors(impl);
}

/** Wraps every method so that AgentErrors leave as ConnectErrors. */
function translateErrors(impl: ServiceImpl<typeof LiveMigrationService>): ServiceImpl<typeof LiveMigrationService> {
  const wrapped: Record<string, unknown> = {};
  for (const [name, method] of Object.entries(impl) as [string, (req: unknown, ctx: HandlerContext) => Promise<unknown>][]) {
    wrapped[name] = async (req: unknown, ctx: HandlerContext) => {
      try {
        return await method(req, ctx);
      } catch (err) {
        throw toConnectError(err);
      }
    };
  }
  return wrapped as ServiceImpl<typeof LiveMigrationService>;
}
