/**
 * The Java Cassandra Sidecar's Live Migration REST API, reproduced route for route: paths,
 * guard order, statuses and JSON shapes (behaviour doc §1). Handlers parse the request, call
 * the same LiveMigrationService implementation that Connect and gRPC serve, and render the
 * Java JSON. Bodies are checked strictly: malformed JSON, wrong types and missing fields are
 * 400s that say what is wrong.
 */
import { create, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import { createHandlerContext, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { FileType, InstanceFile } from "../../gen/livemigration/v1/common_pb.js";
import { FileType as FileTypeEnum } from "../../gen/livemigration/v1/common_pb.js";
import {
  DataCopyState,
  type DataCopyTask,
  DataCopyTaskSchema,
  type FilesVerificationTask,
  FilesVerificationTaskSchema,
  GetMigrationStatusResponseSchema,
  ListFilesResponseSchema,
  LiveMigrationService,
  MigrationState,
  VerificationState,
} from "../../gen/livemigration/v1/live_migration_pb.js";
import { AgentError } from "../errors.js";
import type { Logger } from "../log.js";
import { serveFileRoute, type FileRouteDeps } from "./file-route.js";
import { sendError, sendJson } from "./http-status.js";
import { authorize, toAgentError, type Operation } from "./service.js";

export const API_PREFIX = "/api/v1/live-migration";
const MAX_BODY_BYTES = 64 * 1024;

type Impl = ServiceImpl<typeof LiveMigrationService>;

export interface RestDeps extends FileRouteDeps {
  readonly service: Impl;
  readonly logger: Logger;
}

interface Route {
  readonly method: string;
  readonly pattern: RegExp;
  readonly handle: (ctx: RouteContext) => Promise<void>;
}

interface RouteContext {
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
  readonly params: string[];
  readonly rawPath: string;
  readonly query: URLSearchParams;
  readonly deps: RestDeps;
}

/** Calls one service method in-process with the request's Host header, as Connect would. */
function call<K extends Operation>(ctx: RouteContext, op: K, request: Parameters<Impl[K]>[0]): ReturnType<Impl[K]> {
  const method = LiveMigrationService.method[op];
  const handlerContext: HandlerContext = createHandlerContext({
    service: LiveMigrationService,
    method,
    protocolName: "rest",
    requestMethod: ctx.req.method ?? "GET",
    url: ctx.req.url ?? "",
    requestHeader: { host: ctx.req.headers.host ?? "" },
  });
  return (ctx.deps.service[op] as (req: unknown, c: HandlerContext) => ReturnType<Impl[K]>)(request, handlerContext);
}

function message<D extends DescMessage>(schema: D, init: unknown): MessageShape<D> {
  return create(schema, init as never);
}

// ---- JSON renderers: the Java Sidecar's shapes, numbers as JSON numbers ----

function dataCopyJson(t: DataCopyTask) {
  return {
    taskId: t.taskId,
    source: t.source,
    port: t.port,
    maxIterations: t.maxIterations,
    successThreshold: t.successThreshold,
    maxConcurrency: t.maxConcurrency,
    status: t.status.map((s) => ({
      iteration: s.iteration,
      state: DataCopyState[s.state],
      totalSize: Number(s.totalSize),
      totalFiles: Number(s.totalFiles),
      bytesToDownload: Number(s.bytesToDownload),
      filesToDownload: Number(s.filesToDownload),
      filesDownloaded: Number(s.filesDownloaded),
      downloadFailures: Number(s.downloadFailures),
      bytesDownloaded: Number(s.bytesDownloaded),
      bytesTransferred: Number(s.bytesTransferred),
      bytesPerSecond: s.bytesPerSecond,
      etaSeconds: s.etaSeconds,
      ...(s.failureReason ? { failureReason: s.failureReason } : {}),
    })),
  };
}

function verificationJson(t: FilesVerificationTask) {
  return {
    id: t.id,
    digestAlgorithm: t.digestAlgorithm,
    state: VerificationState[t.state],
    source: t.source,
    port: t.port,
    filesNotFoundAtSource: Number(t.filesNotFoundAtSource),
    filesNotFoundAtDestination: Number(t.filesNotFoundAtDestination),
    metadataMatched: Number(t.metadataMatched),
    metadataMismatches: Number(t.metadataMismatches),
    digestMismatches: Number(t.digestMismatches),
    digestVerificationFailures: Number(t.digestVerificationFailures),
    filesMatched: Number(t.filesMatched),
    mismatchedFiles: t.mismatchedFiles,
    ...(t.failureReason ? { failureReason: t.failureReason } : {}),
  };
}

function statusJson(init: { state?: MigrationState; endTime?: bigint }) {
  const s = message(GetMigrationStatusResponseSchema, init);
  return { state: MigrationState[s.state], endTime: s.endTime === undefined ? null : Number(s.endTime) };
}

function fileJson(f: InstanceFile) {
  return {
    fileUrl: f.fileUrl,
    size: Number(f.size),
    fileType: FileTypeEnum[f.fileType as FileType],
    lastModifiedTime: Number(f.lastModifiedTime),
  };
}

// ---- bodies ----

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) throw new AgentError("InvalidArgument", `request body exceeds ${MAX_BODY_BYTES} bytes`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString("utf8");
}

/** Parses a JSON object body; field checks are the caller's. `prefix` is the Java decode-failure text. */
function parseObject(text: string, prefix: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new AgentError("InvalidArgument", `${prefix}: ${(err as Error).message}`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new AgentError("InvalidArgument", `${prefix}: the body must be a JSON object`);
  }
  return value as Record<string, unknown>;
}

function numberField(body: Record<string, unknown>, name: string, prefix: string, integer: boolean): number {
  const v = body[name];
  if (v === undefined || v === null) throw new AgentError("InvalidArgument", `${prefix}: ${name} is required`);
  if (typeof v !== "number" || !Number.isFinite(v) || (integer && !Number.isInteger(v))) {
    throw new AgentError("InvalidArgument", `${prefix}: ${name} must be ${integer ? "an integer" : "a number"}, got ${JSON.stringify(v)}`);
  }
  if (integer && (v > 2 ** 31 - 1 || v < -(2 ** 31))) {
    throw new AgentError("InvalidArgument", `${prefix}: ${name} is out of range, got ${v}`);
  }
  return v;
}

const DATA_COPY_DECODE = "Error while decoding values, please check your request body.";
const VERIFICATION_DECODE = "Failed to parse request body, please ensure that the request is valid.";

// ---- routes ----

const TASK_ID = "([^/]+)";

const ROUTES: Route[] = [
  {
    method: "POST",
    pattern: /^\/data-copy-tasks$/,
    async handle(ctx) {
      const text = await readBody(ctx.req);
      await authorize(ctx.deps.registry, ctx.req.headers.host, "createDataCopyTask");
      const body = parseObject(text, DATA_COPY_DECODE);
      const created = await call(ctx, "createDataCopyTask", {
        maxIterations: numberField(body, "maxIterations", DATA_COPY_DECODE, true),
        successThreshold: numberField(body, "successThreshold", DATA_COPY_DECODE, false),
        maxConcurrency: numberField(body, "maxConcurrency", DATA_COPY_DECODE, true),
      } as never);
      sendJson(ctx.res, 202, { taskId: created.taskId, statusUrl: created.statusUrl });
    },
  },
  {
    method: "GET",
    pattern: /^\/data-copy-tasks$/,
    async handle(ctx) {
      const listed = await call(ctx, "listDataCopyTasks", {} as never);
      sendJson(ctx.res, 200, (listed.tasks ?? []).map((t) => dataCopyJson(message(DataCopyTaskSchema, t))));
    },
  },
  {
    method: "GET",
    pattern: new RegExp(`^/data-copy-tasks/${TASK_ID}$`),
    async handle(ctx) {
      const got = await call(ctx, "getDataCopyTask", { taskId: ctx.params[0] } as never);
      sendJson(ctx.res, 200, dataCopyJson(message(DataCopyTaskSchema, got.task)));
    },
  },
  {
    method: "PATCH",
    pattern: new RegExp(`^/data-copy-tasks/${TASK_ID}$`),
    async handle(ctx) {
      const cancelled = await call(ctx, "cancelDataCopyTask", { taskId: ctx.params[0] } as never);
      sendJson(ctx.res, 200, dataCopyJson(message(DataCopyTaskSchema, cancelled.task)));
    },
  },
  {
    method: "POST",
    pattern: /^\/files-verification-tasks$/,
    async handle(ctx) {
      const text = await readBody(ctx.req);
      await authorize(ctx.deps.registry, ctx.req.headers.host, "createFilesVerificationTask");
      const body = parseObject(text, VERIFICATION_DECODE);
      const algorithm = body["digestAlgorithm"];
      if (algorithm !== undefined && algorithm !== null && typeof algorithm !== "string") {
        throw new AgentError("InvalidArgument", `${VERIFICATION_DECODE}: digestAlgorithm must be a string, got ${JSON.stringify(algorithm)}`);
      }
      const created = await call(ctx, "createFilesVerificationTask", {
        maxConcurrency: numberField(body, "maxConcurrency", VERIFICATION_DECODE, true),
        digestAlgorithm: algorithm ?? "",
      } as never);
      sendJson(ctx.res, 202, { taskId: created.taskId, statusUrl: created.statusUrl });
    },
  },
  {
    method: "GET",
    pattern: /^\/files-verification-tasks$/,
    async handle(ctx) {
      const listed = await call(ctx, "listFilesVerificationTasks", {} as never);
      sendJson(ctx.res, 200, (listed.tasks ?? []).map((t) => verificationJson(message(FilesVerificationTaskSchema, t))));
    },
  },
  {
    method: "GET",
    pattern: new RegExp(`^/files-verification-tasks/${TASK_ID}$`),
    async handle(ctx) {
      const got = await call(ctx, "getFilesVerificationTask", { taskId: ctx.params[0] } as never);
      sendJson(ctx.res, 200, verificationJson(message(FilesVerificationTaskSchema, got.task)));
    },
  },
  {
    method: "PATCH",
    pattern: new RegExp(`^/files-verification-tasks/${TASK_ID}$`),
    async handle(ctx) {
      const cancelled = await call(ctx, "cancelFilesVerificationTask", { taskId: ctx.params[0] } as never);
      sendJson(ctx.res, 200, verificationJson(message(FilesVerificationTaskSchema, cancelled.task)));
    },
  },
  {
    method: "GET",
    pattern: /^\/status$/,
    async handle(ctx) {
      sendJson(ctx.res, 200, statusJson(await call(ctx, "getMigrationStatus", {} as never)));
    },
  },
  {
    method: "POST",
    pattern: /^\/status$/,
    async handle(ctx) {
      sendJson(ctx.res, 200, statusJson(await call(ctx, "markMigrationCompleted", {} as never)));
    },
  },
  {
    method: "DELETE",
    pattern: /^\/status$/,
    async handle(ctx) {
      const cleared = await call(ctx, "clearMigrationStatus", {} as never);
      sendJson(ctx.res, 200, { status: cleared.status ?? "OK" });
    },
  },
  {
    method: "GET",
    pattern: /^\/files$/,
    async handle(ctx) {
      const listed = message(ListFilesResponseSchema, await call(ctx, "listFiles", {} as never));
      sendJson(ctx.res, 200, { files: listed.files.map(fileJson), totalSize: Number(listed.totalSize) });
    },
  },
  {
    method: "GET",
    pattern: /^\/files\/.+/,
    async handle(ctx) {
      await serveFileRoute(ctx.deps, ctx.req, ctx.res, ctx.rawPath, ctx.query);
    },
  },
];

/** Handles a request under /api/v1/live-migration; never throws. */
export async function handleRest(deps: RestDeps, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const url = req.url ?? "/";
  const q = url.indexOf("?");
  const rawPath = q >= 0 ? url.slice(0, q) : url;
  const query = new URLSearchParams(q >= 0 ? url.slice(q + 1) : "");
  const sub = rawPath.slice(API_PREFIX.length);
  try {
    const matching = ROUTES.map((r) => ({ r, m: r.pattern.exec(sub) })).filter((x) => x.m !== null);
    if (matching.length === 0) throw new AgentError("NotFound", `No live migration route for ${rawPath}`);
    const hit = matching.find((x) => x.r.method === req.method);
    if (!hit) {
      const allow = [...new Set(matching.map((x) => x.r.method))].join(", ");
      res.setHeader("allow", allow);
      sendJson(res, 405, { status: "Method Not Allowed", code: 405, message: `${req.method} is not allowed on ${rawPath}; use ${allow}` }, { allow });
      return;
    }
    const params = hit.m!.slice(1).map((p) => {
      try {
        return decodeURIComponent(p);
      } catch {
        throw new AgentError("InvalidArgument", `Malformed request path: ${rawPath}`);
      }
    });
    await hit.r.handle({ req, res, params, rawPath, query, deps });
  } catch (err) {
    const error = toAgentError(err);
    if (error.code === "Internal") deps.logger.error({ err: error, method: req.method, url }, "request failed");
    sendError(res, error);
  }
}
