/**
 * The plane's half of "generated code stops at two adapters": every conversion between the
 * domain (migration/types.ts, migration/peer.ts, AgentError) and the generated livemigration.v1
 * messages or gRPC status codes happens here and nowhere else in plane/.
 *
 * int64 fields arrive as bigint; the domain uses numbers (byte counts and epoch milliseconds
 * stay far below 2^53).
 *
 * The messages sent once per file (listing entries, file transfer messages) are built as the
 * plain objects that protobuf-es v2 messages are, with every field set, instead of with
 * create(), which walks the schema each time: for the small benchmark tree's 17,711 files (four
 * transfer messages each) 27-144 ms against 2-34 ms (micro-benchmark), on the source's main
 * thread. plane-wire tests hold them equal to create()'s.
 */
import { create } from "@bufbuild/protobuf";
import { ConnectError } from "@connectrpc/connect";
import { status as GrpcStatus, type ServiceError } from "@grpc/grpc-js";
import { DigestAlgorithm, FileType, type InstanceFile, InstanceFileSchema } from "../../gen/livemigration/v1/common_pb.js";
import { type GetMigrationStatusResponse, MigrationState } from "../../gen/livemigration/v1/live_migration_pb.js";
import {
  type DigestFilesResponse,
  DigestFilesResponseSchema,
  type FileDigest,
  FileDigestSchema,
  type ReadFileRequest as ReadFileRequestMessage,
  ReadFileRequestSchema,
  type ReadFileResponse,
  ReadFileResponseSchema,
  type ReadFileTrailer as ReadFileTrailerMessage,
  ReadFileTrailerSchema,
  type ReadFilesError,
  ReadFilesErrorSchema,
  type ReadFilesPiece,
  ReadFilesPieceSchema,
  type ReadFilesResponse,
  ReadFilesResponseSchema,
} from "../../gen/livemigration/v1/peer_pb.js";
import { AgentError, type ErrorCode } from "../errors.js";
import type { BatchReadMessage, DigestResult, ReadFileMessage, ReadFileRequest, ReadFileTrailer } from "../migration/peer.js";
import type { DigestAlgorithmName, FileEntry, MigrationStatus } from "../migration/types.js";

// ---------------------------------------------------------------------------------------------
// Files

/** Domain listing entry → wire InstanceFile (a plain object: see the top of this file). */
export function toInstanceFile(entry: FileEntry): InstanceFile {
  return {
    $typeName: InstanceFileSchema.typeName,
    fileUrl: entry.fileUrl,
    size: BigInt(entry.size),
    fileType: entry.fileType === "DIRECTORY" ? FileType.DIRECTORY : FileType.FILE,
    lastModifiedTime: BigInt(entry.lastModifiedTime),
  };
}

/**
 * Wire InstanceFile → domain listing entry.
 * @throws AgentError Internal when the file type is unspecified (a peer speaking another contract).
 */
export function fromInstanceFile(file: InstanceFile): FileEntry {
  let fileType: FileEntry["fileType"];
  switch (file.fileType) {
    case FileType.FILE:
      fileType = "FILE";
      break;
    case FileType.DIRECTORY:
      fileType = "DIRECTORY";
      break;
    case FileType.UNSPECIFIED:
      throw new AgentError("Internal", `peer listed ${file.fileUrl} without a file type`);
    default:
      throw new AgentError("Internal", `peer listed ${file.fileUrl} with unknown file type ${String(file.fileType)}`);
  }
  return {
    fileUrl: file.fileUrl,
    size: Number(file.size),
    fileType,
    lastModifiedTime: Number(file.lastModifiedTime),
  };
}

// ---------------------------------------------------------------------------------------------
// ReadFile

/**
 * Domain read request → wire message (-1 keeps "no check"). Built as a literal, as create()
 * would build it without its reflection: a ReadFiles request holds hundreds.
 */
export function toReadFileRequest(request: ReadFileRequest): ReadFileRequestMessage {
  return {
    $typeName: ReadFileRequestSchema.typeName,
    fileUrl: request.fileUrl,
    offset: BigInt(request.offset),
    expectedSize: BigInt(request.expectedSize),
    expectedLastModifiedTime: BigInt(request.expectedLastModifiedTime),
  };
}

/** Wire read request → domain request. */
export function fromReadFileRequest(message: ReadFileRequestMessage): ReadFileRequest {
  return {
    fileUrl: message.fileUrl,
    offset: Number(message.offset),
    expectedSize: Number(message.expectedSize),
    expectedLastModifiedTime: Number(message.expectedLastModifiedTime),
  };
}

/** One data chunk of a ReadFile stream. The buffer is sent as is: never reuse it afterwards. */
export function toReadFileData(data: Uint8Array): ReadFileResponse {
  return { $typeName: ReadFileResponseSchema.typeName, payload: { case: "data", value: data } };
}

/** The last message of a ReadFile stream. */
export function toReadFileTrailer(trailer: ReadFileTrailer): ReadFileResponse {
  return {
    $typeName: ReadFileResponseSchema.typeName,
    payload: {
      case: "trailer",
      value: {
        $typeName: ReadFileTrailerSchema.typeName,
        xxh64: trailer.xxh64,
        size: BigInt(trailer.size),
        lastModifiedTime: BigInt(trailer.lastModifiedTime),
      },
    },
  };
}

/**
 * Wire ReadFile message → domain message.
 * @throws AgentError DataLoss when the message carries neither data nor a trailer.
 */
export function fromReadFileResponse(message: ReadFileResponse): ReadFileMessage {
  switch (message.payload.case) {
    case "data":
      return { data: message.payload.value };
    case "trailer": {
      const t = message.payload.value;
      return { trailer: { xxh64: t.xxh64, size: Number(t.size), lastModifiedTime: Number(t.lastModifiedTime) } };
    }
    case undefined:
      throw new AgentError("DataLoss", "ReadFile message without data or trailer");
  }
}

/**
 * A ReadFile message (or a per-file failure) as a piece of a ReadFiles stream. A trailer joins
 * `previous` when that is the same file's last data piece, so a small file takes one piece.
 * @returns the new piece, or undefined when the message went into `previous`.
 */
export function toReadFilesPiece(index: number, message: ReadFileResponse | AgentError, previous?: ReadFilesPiece): ReadFilesPiece | undefined {
  if (message instanceof AgentError) {
    const error: ReadFilesError = { $typeName: ReadFilesErrorSchema.typeName, code: grpcStatusOf(message.code), message: message.message };
    return readFilesPiece(index, EMPTY_BYTES, undefined, error);
  }
  switch (message.payload.case) {
    case "data":
      return readFilesPiece(index, message.payload.value, undefined, undefined);
    case "trailer":
      if (previous && previous.index === index && !previous.trailer && !previous.error) {
        previous.trailer = message.payload.value;
        return undefined;
      }
      return readFilesPiece(index, EMPTY_BYTES, message.payload.value, undefined);
    case undefined:
      throw new AgentError("Internal", "ReadFile message without data or trailer");
  }
}

/** The `bytes` field's default (a piece without data). */
export const EMPTY_BYTES = new Uint8Array(0);

function readFilesPiece(index: number, data: Uint8Array, trailer: ReadFileTrailerMessage | undefined, error: ReadFilesError | undefined): ReadFilesPiece {
  return { $typeName: ReadFilesPieceSchema.typeName, index, data, trailer, error };
}

/** A ReadFiles message of `pieces`. */
export function toReadFilesResponse(pieces: ReadFilesPiece[]): ReadFilesResponse {
  return { $typeName: ReadFilesResponseSchema.typeName, pieces };
}

/**
 * What fromReadFilesPiece reads of a piece: a ReadFilesPiece from fromBinary, or the plain
 * fields that codec.ts's decoder reads straight from the wire (numbers instead of bigints).
 */
export interface ReadFilesPieceFields {
  readonly index: number;
  readonly data: Uint8Array;
  readonly trailer?: { readonly xxh64: string; readonly size: bigint | number; readonly lastModifiedTime: bigint | number } | undefined;
  readonly error?: { readonly code: number; readonly message: string } | undefined;
}

/**
 * Wire ReadFiles piece → domain messages: its data (if any), then its trailer or error.
 * @throws AgentError DataLoss for a piece with both a trailer and an error, or with nothing.
 */
export function fromReadFilesPiece(piece: ReadFilesPieceFields): BatchReadMessage[] {
  const { index, data, trailer, error } = piece;
  if (trailer && error) throw new AgentError("DataLoss", `ReadFiles piece of file ${index} has both a trailer and an error`);
  const out: BatchReadMessage[] = [];
  if (data.byteLength > 0) out.push({ index, data });
  if (trailer) {
    out.push({ index, trailer: { xxh64: trailer.xxh64, size: Number(trailer.size), lastModifiedTime: Number(trailer.lastModifiedTime) } });
  } else if (error) {
    const code = error.code === GrpcStatus.OK ? "Internal" : errorCodeOf(error.code);
    out.push({ index, error: new AgentError(code, error.message || "read failed") });
  } else if (out.length === 0) {
    throw new AgentError("DataLoss", `ReadFiles piece of file ${index} carries nothing`);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Digests

/** Domain algorithm name → wire enum. */
export function toDigestAlgorithm(name: DigestAlgorithmName): DigestAlgorithm {
  switch (name) {
    case "MD5":
      return DigestAlgorithm.MD5;
    case "XXHash32":
      return DigestAlgorithm.XXHASH32;
    case "XXH64":
      return DigestAlgorithm.XXH64;
  }
}

/**
 * Wire enum → domain algorithm name.
 * @throws AgentError InvalidArgument for DIGEST_ALGORITHM_UNSPECIFIED or an unknown number.
 */
export function fromDigestAlgorithm(algorithm: DigestAlgorithm): DigestAlgorithmName {
  switch (algorithm) {
    case DigestAlgorithm.MD5:
      return "MD5";
    case DigestAlgorithm.XXHASH32:
      return "XXHash32";
    case DigestAlgorithm.XXH64:
      return "XXH64";
    case DigestAlgorithm.UNSPECIFIED:
      throw new AgentError("InvalidArgument", "digest algorithm is required (MD5, XXHash32 or XXH64)");
    default:
      throw new AgentError("InvalidArgument", `unknown digest algorithm ${String(algorithm)}`);
  }
}

/** Domain digest result → wire FileDigest; a failure carries its gRPC status number and message. */
export function toFileDigest(result: DigestResult): FileDigest {
  if (result.error) {
    return create(FileDigestSchema, {
      fileUrl: result.fileUrl,
      errorCode: grpcStatusOf(result.error.code),
      errorMessage: result.error.message,
    });
  }
  return create(FileDigestSchema, { fileUrl: result.fileUrl, digest: result.digest ?? "" });
}

/** Domain digest results that are ready together → one wire message. */
export function toDigestFilesResponse(results: readonly DigestResult[]): DigestFilesResponse {
  return create(DigestFilesResponseSchema, { digests: results.map(toFileDigest) });
}

/** Wire FileDigest → domain result; a non-zero error_code becomes an AgentError. */
export function fromFileDigest(message: Pick<FileDigest, "fileUrl" | "digest" | "errorCode" | "errorMessage">): DigestResult {
  if (message.errorCode !== GrpcStatus.OK || message.errorMessage !== "") {
    const code = message.errorCode === GrpcStatus.OK ? "Internal" : errorCodeOf(message.errorCode);
    return { fileUrl: message.fileUrl, error: new AgentError(code, message.errorMessage || "digest failed") };
  }
  return { fileUrl: message.fileUrl, digest: message.digest };
}

// ---------------------------------------------------------------------------------------------
// Migration status

/**
 * Wire status → domain status.
 * @throws AgentError Internal when the state is unspecified.
 */
export function fromMigrationStatus(message: GetMigrationStatusResponse): MigrationStatus {
  switch (message.state) {
    case MigrationState.COMPLETED:
      return { state: "COMPLETED", endTime: message.endTime === undefined ? null : Number(message.endTime) };
    case MigrationState.NOT_COMPLETED:
      return { state: "NOT_COMPLETED", endTime: null };
    case MigrationState.UNSPECIFIED:
    default:
      throw new AgentError("Internal", `peer answered an unknown migration state ${String(message.state)}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Errors

/** AgentError code → gRPC status number. */
export function grpcStatusOf(code: ErrorCode): GrpcStatus {
  switch (code) {
    case "InvalidArgument":
      return GrpcStatus.INVALID_ARGUMENT;
    case "FailedPrecondition":
      return GrpcStatus.FAILED_PRECONDITION;
    case "OutOfRange":
      return GrpcStatus.OUT_OF_RANGE;
    case "NotFound":
      return GrpcStatus.NOT_FOUND;
    case "PermissionDenied":
      return GrpcStatus.PERMISSION_DENIED;
    case "AlreadyExists":
      return GrpcStatus.ALREADY_EXISTS;
    case "Aborted":
      return GrpcStatus.ABORTED;
    case "Unavailable":
      return GrpcStatus.UNAVAILABLE;
    case "Cancelled":
      return GrpcStatus.CANCELLED;
    case "DeadlineExceeded":
      return GrpcStatus.DEADLINE_EXCEEDED;
    case "DataLoss":
      return GrpcStatus.DATA_LOSS;
    case "ResourceExhausted":
      return GrpcStatus.RESOURCE_EXHAUSTED;
    case "Unimplemented":
      return GrpcStatus.UNIMPLEMENTED;
    case "Internal":
      return GrpcStatus.INTERNAL;
  }
}

/**
 * gRPC status number → AgentError code. Numbers the closed set lacks fold into the nearest
 * code: UNKNOWN and OK (an error that claims success) → Internal, UNAUTHENTICATED → PermissionDenied.
 */
export function errorCodeOf(status: number): ErrorCode {
  switch (status as GrpcStatus) {
    case GrpcStatus.CANCELLED:
      return "Cancelled";
    case GrpcStatus.INVALID_ARGUMENT:
      return "InvalidArgument";
    case GrpcStatus.DEADLINE_EXCEEDED:
      return "DeadlineExceeded";
    case GrpcStatus.NOT_FOUND:
      return "NotFound";
    case GrpcStatus.ALREADY_EXISTS:
      return "AlreadyExists";
    case GrpcStatus.PERMISSION_DENIED:
    case GrpcStatus.UNAUTHENTICATED:
      return "PermissionDenied";
    case GrpcStatus.RESOURCE_EXHAUSTED:
      return "ResourceExhausted";
    case GrpcStatus.FAILED_PRECONDITION:
      return "FailedPrecondition";
    case GrpcStatus.ABORTED:
      return "Aborted";
    case GrpcStatus.OUT_OF_RANGE:
      return "OutOfRange";
    case GrpcStatus.UNIMPLEMENTED:
      return "Unimplemented";
    case GrpcStatus.UNAVAILABLE:
      return "Unavailable";
    case GrpcStatus.DATA_LOSS:
      return "DataLoss";
    case GrpcStatus.OK:
    case GrpcStatus.UNKNOWN:
    case GrpcStatus.INTERNAL:
      return "Internal";
    default:
      return "Internal";
  }
}

/** The status part of a failed call, as a grpc-js server sends it (`details` = AgentError message). */
export interface GrpcErrorStatus {
  readonly code: GrpcStatus;
  readonly details: string;
}

/**
 * Any error a handler throws → the status a grpc-js server sends. AgentError keeps its code and
 * message; ConnectError keeps its code (Connect codes are the gRPC numbers) and raw message;
 * anything else goes through AgentError.from (Node errno mapping, else Internal). Causes stay local.
 */
export function toServerError(err: unknown): GrpcErrorStatus {
  if (err instanceof ConnectError) {
    if (err.cause instanceof AgentError) return { code: grpcStatusOf(err.cause.code), details: err.cause.message };
    return { code: err.code as number as GrpcStatus, details: err.rawMessage };
  }
  const agentError = AgentError.from(err);
  return { code: grpcStatusOf(agentError.code), details: agentError.message };
}

/** Transport-level failures that grpc-js reports as INTERNAL although the peer merely went away. */
const DROPPED_STREAM = /^Received RST_STREAM with code \d+( \(Call ended without gRPC status\))?$/;

function isServiceError(err: unknown): err is ServiceError {
  return err instanceof Error && typeof (err as Partial<ServiceError>).code === "number" && "details" in err;
}

/**
 * A grpc-js client error → AgentError, the message being the server's details. UNAVAILABLE,
 * connection resets and streams reset without a status become Unavailable (retryable);
 * CANCELLED becomes Cancelled. Non-gRPC errors go through AgentError.from.
 */
export function fromClientError(err: unknown): AgentError {
  if (err instanceof AgentError) return err;
  if (!isServiceError(err)) return AgentError.from(err);
  // grpc-js appends an empty "Resolution note: " to connection failures; operators need the cause only.
  const details = (err.details || err.message).replace(/\s*Resolution note:\s*$/, "");
  if (err.code === GrpcStatus.INTERNAL && DROPPED_STREAM.test(details)) {
    return new AgentError("Unavailable", `peer stream dropped: ${details}`, { cause: err });
  }
  return new AgentError(errorCodeOf(err.code), details, { cause: err });
}

