/**
 * grpc-js plumbing over protobuf-es v2 descriptors (no proto-loader):
 * - grpcServiceDefinition / methodDefinition: a grpc-js ServiceDefinition built from a
 *   generated DescService, serializing with toBinary/fromBinary;
 * - grpcHandlersOf: mounts a Connect-style ServiceImpl (async functions and async generators
 *   that throw AgentError or ConnectError) on a grpc-js server, for unary and server-streaming
 *   methods, so that one implementation serves both Connect and gRPC;
 * - writeAsync: a backpressure-aware write that also settles when the call is cancelled.
 */
import {
  create,
  type DescMessage,
  type DescMethod,
  type DescMethodBiDiStreaming,
  type DescMethodClientStreaming,
  type DescMethodServerStreaming,
  type DescMethodUnary,
  type DescService,
  fromBinary,
  type MessageInitShape,
  type MessageShape,
  toBinary,
} from "@bufbuild/protobuf";
import { createHandlerContext, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import * as grpc from "@grpc/grpc-js";
import { AgentError } from "../errors.js";
import type { Logger } from "../log.js";
import {
  type DigestFilesRequest,
  DigestFilesRequestSchema,
  type DigestFilesResponse,
  DigestFilesResponseSchema,
  type PeerServiceListFilesResponse,
  PeerServiceListFilesResponseSchema,
  type ReadFileResponse,
  ReadFileResponseSchema,
  type ReadFilesRequest,
  ReadFilesRequestSchema,
  type ReadFilesResponse,
  ReadFilesResponseSchema,
} from "../../gen/livemigration/v1/peer_pb.js";
import {
  decodeReadFilesRequest,
  encodeDigestFilesRequest,
  encodeDigestFilesResponse,
  encodeListFilesResponse,
  encodeReadFileResponse,
  encodeReadFilesRequest,
  encodeReadFilesResponse,
} from "./codec.js";
import { toServerError } from "./wire.js";

/** Largest gRPC message either way on the plane, server and client (64 MiB): DigestFiles requests carry many URLs. */
export const PLANE_MAX_MESSAGE_BYTES = 64 * 1024 * 1024;

type AnyDescMethod<I extends DescMessage, O extends DescMessage> =
  | DescMethodUnary<I, O>
  | DescMethodServerStreaming<I, O>
  | DescMethodClientStreaming<I, O>
  | DescMethodBiDiStreaming<I, O>;

function serializer<D extends DescMessage>(desc: D): (message: MessageShape<D>) => Buffer {
  const toBinaryBuffer = (message: MessageShape<D>) => {
    const bytes = toBinary(desc, message);
    return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  };
  switch (desc.typeName) {
    case ReadFileResponseSchema.typeName:
      // File chunks, the plane's bulk: encoded in place when possible (codec.ts, allocChunk).
      return (message) => encodeReadFileResponse(message as ReadFileResponse) ?? toBinaryBuffer(message);
    case ReadFilesRequestSchema.typeName:
      // The destination's batches of small files to read, hundreds of files each (codec.ts).
      return (message) => encodeReadFilesRequest(message as ReadFilesRequest) ?? toBinaryBuffer(message);
    case ReadFilesResponseSchema.typeName:
      // Batched small files, a few to a message (codec.ts).
      return (message) => encodeReadFilesResponse(message as ReadFilesResponse) ?? toBinaryBuffer(message);
    case PeerServiceListFilesResponseSchema.typeName:
      // Listings, tens of thousands of small messages: encoded by hand (codec.ts).
      return (message) => encodeListFilesResponse(message as PeerServiceListFilesResponse) ?? toBinaryBuffer(message);
    case DigestFilesRequestSchema.typeName:
      // A verification's whole file list in one request (codec.ts).
      return (message) => encodeDigestFilesRequest(message as DigestFilesRequest) ?? toBinaryBuffer(message);
    case DigestFilesResponseSchema.typeName:
      // Digest results, one small message per file of a verification: encoded by hand (codec.ts).
      return (message) => encodeDigestFilesResponse(message as DigestFilesResponse) ?? toBinaryBuffer(message);
    default:
      return toBinaryBuffer;
  }
}

function deserializer<D extends DescMessage>(desc: D): (bytes: Buffer) => MessageShape<D> {
  if (desc.typeName === ReadFilesRequestSchema.typeName) {
    // The source's side of the hand-encoded batches (codec.ts).
    return (bytes) => decodeReadFilesRequest(bytes) as unknown as MessageShape<D>;
  }
  return (bytes) => fromBinary(desc, bytes);
}

/** The grpc-js definition of one method: path `/<package.Service>/<Method>`, binary protobuf codecs. */
export function methodDefinition<I extends DescMessage, O extends DescMessage>(
  method: AnyDescMethod<I, O>,
): grpc.MethodDefinition<MessageShape<I>, MessageShape<O>> {
  return {
    path: `/${method.parent.typeName}/${method.name}`,
    requestStream: method.methodKind === "client_streaming" || method.methodKind === "bidi_streaming",
    responseStream: method.methodKind === "server_streaming" || method.methodKind === "bidi_streaming",
    requestSerialize: serializer(method.input),
    requestDeserialize: deserializer(method.input),
    responseSerialize: serializer(method.output),
    responseDeserialize: deserializer(method.output),
    originalName: method.name,
  };
}

/** The grpc-js ServiceDefinition of a generated service, keyed by each method's localName. */
export function grpcServiceDefinition(service: DescService): grpc.ServiceDefinition {
  const definition: Record<string, grpc.MethodDefinition<MessageShape<DescMessage>, MessageShape<DescMessage>>> = {};
  for (const method of service.methods) {
    definition[method.localName] = methodDefinition(method as AnyDescMethod<DescMessage, DescMessage>);
  }
  return definition;
}

/** Calls on which writeAsync can wait. */
export type WritableCall<T> = grpc.ServerWritableStream<unknown, T> | grpc.ServerDuplexStream<unknown, T>;

/**
 * Writes one message and resolves when the call can take the next one: at once while grpc-js
 * buffers fewer than its highWaterMark (16 messages), else on `drain` (which follows the peer's
 * HTTP/2 flow control). Rejects with AgentError Cancelled when the call is cancelled or closes
 * before draining, and with the stream error on `error`, so a cancelled handler never hangs.
 * The message object is serialized later if buffered: never mutate or reuse it.
 */
export function writeAsync<T>(call: WritableCall<T>, message: T): Promise<void> {
  if (call.cancelled || call.destroyed) return Promise.reject(new AgentError("Cancelled", "call cancelled by the client"));
  if (call.write(message)) return Promise.resolve();
  return new Promise<void>((resolve, reject) => {
    const listeners: [string, (...args: unknown[]) => void][] = [
      ["drain", () => done()],
      ["error", (err) => done(AgentError.from(err))],
      ["cancelled", () => done(new AgentError("Cancelled", "call cancelled by the client"))],
      ["close", () => done(new AgentError("Cancelled", "call closed before the message was sent"))],
    ];
    const done = (err?: AgentError) => {
      for (const [event, listener] of listeners) call.off(event, listener);
      if (err) reject(err);
      else resolve();
    };
    for (const [event, listener] of listeners) call.once(event, listener);
  });
}

/** Options of the Connect → grpc-js adapter. */
export interface AdapterOptions {
  /** Failures are logged here: Internal/Unknown at warn, the rest at debug. */
  readonly logger: Logger;
  /** Aborts every handler context (e.g. agent shutdown). */
  readonly shutdownSignal?: AbortSignal;
}

type ServerCall = grpc.ServerUnaryCall<unknown, unknown> | grpc.ServerWritableStream<unknown, unknown>;

/** Request metadata → Fetch Headers; `host` is the call's :authority (the instance selector). */
function requestHeaders(call: ServerCall): Headers {
  const headers = new Headers();
  for (const [key, value] of Object.entries(call.metadata.getMap())) {
    try {
      headers.set(key, typeof value === "string" ? value : Buffer.from(value).toString("base64"));
    } catch {
      // A metadata key Fetch Headers refuses is not one a handler can ask for.
    }
  }
  headers.set("host", call.getHost());
  return headers;
}

/** Fetch Headers → metadata; "-bin" values are base64 as Connect writes them. */
function toMetadata(headers: Headers): grpc.Metadata | undefined {
  let metadata: grpc.Metadata | undefined;
  headers.forEach((value, key) => {
    metadata ??= new grpc.Metadata();
    try {
      if (key.endsWith("-bin")) metadata.add(key, Buffer.from(value, "base64"));
      else metadata.add(key, value);
    } catch {
      // Reserved or malformed keys (grpc-*, pseudo-headers) are not forwarded.
    }
  });
  return metadata;
}

function contextFor(service: DescService, method: DescMethod, call: ServerCall, options: AdapterOptions) {
  const requestAbort = new AbortController();
  const onCancelled = () => requestAbort.abort(new AgentError("Cancelled", "call cancelled by the client"));
  if (call.cancelled) onCancelled();
  else call.once("cancelled", onCancelled);
  const deadline = call.getDeadline();
  const deadlineMs = deadline instanceof Date ? deadline.getTime() : deadline;
  const timeoutMs = Number.isFinite(deadlineMs) ? Math.max(0, deadlineMs - Date.now()) : undefined;
  const ctx = createHandlerContext({
    service,
    method,
    protocolName: "grpc",
    requestMethod: "POST",
    url: `http://${call.getHost()}/${service.typeName}/${method.name}`,
    timeoutMs,
    shutdownSignal: options.shutdownSignal,
    requestSignal: requestAbort.signal,
    requestHeader: requestHeaders(call),
  });
  const finish = () => {
    call.off("cancelled", onCancelled);
    ctx.abort();
  };
  return { ctx, finish };
}

function logFailure(logger: Logger, path: string, err: unknown, status: { code: grpc.status; details: string }): void {
  if (status.code === grpc.status.INTERNAL || status.code === grpc.status.UNKNOWN) {
    logger.warn({ err, rpc: path, code: status.code }, "plane call failed");
  } else {
    logger.debug({ rpc: path, code: status.code, details: status.details }, "plane call failed");
  }
}

type UnaryFn = (request: unknown, ctx: HandlerContext) => Promise<unknown> | unknown;
type StreamFn = (request: unknown, ctx: HandlerContext) => AsyncIterable<unknown>;

function unaryHandler(
  service: DescService,
  method: DescMethod,
  impl: UnaryFn,
  options: AdapterOptions,
): grpc.handleUnaryCall<unknown, unknown> {
  return (call, callback) => {
    const { ctx, finish } = contextFor(service, method, call, options);
    void (async () => {
      try {
        const init = await impl(call.request, ctx);
        const header = toMetadata(ctx.responseHeader);
        if (header) call.sendMetadata(header);
        callback(null, create(method.output, init as MessageInitShape<DescMessage>), toMetadata(ctx.responseTrailer));
      } catch (err) {
        const status = toServerError(err);
        logFailure(options.logger, `${service.typeName}/${method.name}`, err, status);
        callback(status);
      } finally {
        finish();
      }
    })();
  };
}

function serverStreamingHandler(
  service: DescService,
  method: DescMethod,
  impl: StreamFn,
  options: AdapterOptions,
): grpc.handleServerStreamingCall<unknown, unknown> {
  return (call) => {
    const { ctx, finish } = contextFor(service, method, call, options);
    void (async () => {
      try {
        let headerSent = false;
        for await (const init of impl(call.request, ctx)) {
          if (!headerSent) {
            headerSent = true;
            const header = toMetadata(ctx.responseHeader);
            if (header) call.sendMetadata(header);
          }
          await writeAsync(call, create(method.output, init as MessageInitShape<DescMessage>));
        }
        call.end(toMetadata(ctx.responseTrailer));
      } catch (err) {
        const status = toServerError(err);
        if (call.cancelled || call.destroyed) {
          options.logger.debug({ rpc: `${service.typeName}/${method.name}` }, "plane stream cancelled by the client");
        } else {
          logFailure(options.logger, `${service.typeName}/${method.name}`, err, status);
          // grpc-js turns an emitted error into the call's status after flushing buffered messages.
          call.emit("error", status);
        }
      } finally {
        finish();
      }
    })();
  };
}

/**
 * grpc-js handlers for a Connect-style ServiceImpl, keyed like grpcServiceDefinition(service).
 * Each call gets a HandlerContext whose `requestHeader` carries the request metadata plus
 * `host` = the call's :authority, whose `signal` aborts when the client cancels, the deadline
 * passes, `shutdownSignal` aborts, or the call ends. Errors become gRPC statuses through
 * wire.toServerError. Unary and server-streaming only: other kinds answer UNIMPLEMENTED.
 * Streamed messages are written with writeAsync (backpressure).
 */
export function grpcHandlersOf<S extends DescService>(
  service: S,
  impl: ServiceImpl<S>,
  options: AdapterOptions,
): grpc.UntypedServiceImplementation {
  const handlers: grpc.UntypedServiceImplementation = {};
  const fns = impl as unknown as Record<string, ((...args: never[]) => unknown) | undefined>;
  for (const method of service.methods) {
    const fn = fns[method.localName]?.bind(impl);
    const path = `${service.typeName}.${method.name}`;
    switch (method.methodKind) {
      case "unary": {
        const unary: UnaryFn =
          (fn as UnaryFn | undefined) ??
          (() => {
            throw new AgentError("Unimplemented", `${path} is not implemented`);
          });
        handlers[method.localName] = unaryHandler(service, method, unary, options);
        break;
      }
      case "server_streaming": {
        const stream: StreamFn =
          (fn as StreamFn | undefined) ??
          async function* () {
            throw new AgentError("Unimplemented", `${path} is not implemented`);
          };
        handlers[method.localName] = serverStreamingHandler(service, method, stream, options);
        break;
      }
      case "client_streaming": {
        const handler: grpc.handleClientStreamingCall<unknown, unknown> = (_call, callback) =>
          callback({ code: grpc.status.UNIMPLEMENTED, details: `${path} is not supported on the plane` });
        handlers[method.localName] = handler;
        break;
      }
      case "bidi_streaming": {
        const handler: grpc.handleBidiStreamingCall<unknown, unknown> = (call) =>
          call.emit("error", { code: grpc.status.UNIMPLEMENTED, details: `${path} is not supported on the plane` });
        handlers[method.localName] = handler;
        break;
      }
    }
  }
  return handlers;
}

/**
 * Adds a generated service with a Connect-style implementation to a grpc-js server.
 * See grpcHandlersOf for the context and error contract.
 */
export function addConnectService<S extends DescService>(
  server: grpc.Server,
  service: S,
  impl: ServiceImpl<S>,
  options: AdapterOptions,
): void {
  server.addService(grpcServiceDefinition(service), grpcHandlersOf(service, impl, options));
}
