import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { Metadata, status, type ServiceError } from "@grpc/grpc-js";
import { describe, expect, it } from "vitest";
import { DigestAlgorithm, FileType, InstanceFileSchema } from "../../gen/livemigration/v1/common_pb.js";
import { GetMigrationStatusResponseSchema, MigrationState } from "../../gen/livemigration/v1/live_migration_pb.js";
import { DigestFilesResponseSchema, ReadFileResponseSchema, ReadFilesPieceSchema, ReadFilesResponseSchema } from "../../gen/livemigration/v1/peer_pb.js";
import { AgentError, type ErrorCode } from "../../src/errors.js";
import type { FileEntry } from "../../src/migration/types.js";
import {
  errorCodeOf,
  fromClientError,
  fromDigestAlgorithm,
  fromFileDigest,
  fromInstanceFile,
  fromMigrationStatus,
  fromReadFileRequest,
  fromReadFileResponse,
  grpcStatusOf,
  toDigestAlgorithm,
  toDigestFilesResponse,
  toInstanceFile,
  toReadFileData,
  toReadFileRequest,
  toReadFilesPiece,
  toReadFilesResponse,
  toReadFileTrailer,
  toServerError,
} from "../../src/plane/wire.js";

const ALL_CODES: Record<ErrorCode, number> = {
  Cancelled: 1,
  InvalidArgument: 3,
  DeadlineExceeded: 4,
  NotFound: 5,
  AlreadyExists: 6,
  PermissionDenied: 7,
  ResourceExhausted: 8,
  FailedPrecondition: 9,
  Aborted: 10,
  OutOfRange: 11,
  Unimplemented: 12,
  Internal: 13,
  Unavailable: 14,
  DataLoss: 15,
};

function serviceError(code: status, details: string): ServiceError {
  return Object.assign(new Error(`${code} ${status[code]}: ${details}`), { code, details, metadata: new Metadata() });
}

describe("AgentError code <-> gRPC status", () => {
  it("maps every code to its gRPC number and back", () => {
    for (const [code, number] of Object.entries(ALL_CODES) as [ErrorCode, number][]) {
      expect(grpcStatusOf(code), code).toBe(number);
      expect(errorCodeOf(number), String(number)).toBe(code);
    }
  });

  it("folds statuses outside the closed set", () => {
    expect(errorCodeOf(status.UNKNOWN)).toBe("Internal");
    expect(errorCodeOf(status.OK)).toBe("Internal");
    expect(errorCodeOf(status.UNAUTHENTICATED)).toBe("PermissionDenied");
    expect(errorCodeOf(99)).toBe("Internal");
  });

  it("turns handler errors into server statuses without leaking causes", () => {
    expect(toServerError(new AgentError("Aborted", "file changed since listing: /x"))).toEqual({
      code: status.ABORTED,
      details: "file changed since listing: /x",
    });
    expect(toServerError(new ConnectError("gone", Code.NotFound))).toEqual({ code: status.NOT_FOUND, details: "gone" });
    const wrapped = new ConnectError("wrapped", Code.Internal, undefined, undefined, new AgentError("Unavailable", "busy"));
    expect(toServerError(wrapped)).toEqual({ code: status.UNAVAILABLE, details: "busy" });
    const enoent = Object.assign(new Error("ENOENT: no such file"), { code: "ENOENT" });
    expect(toServerError(enoent).code).toBe(status.NOT_FOUND);
    expect(toServerError("boom")).toEqual({ code: status.INTERNAL, details: "boom" });
  });

  it("turns client errors into AgentErrors with the server's details", () => {
    const busy = fromClientError(serviceError(status.UNAVAILABLE, "Server is busy"));
    expect(busy.code).toBe("Unavailable");
    expect(busy.message).toBe("Server is busy");
    expect(busy.retryable).toBe(true);
    expect(fromClientError(serviceError(status.CANCELLED, "Cancelled on client")).code).toBe("Cancelled");
    expect(fromClientError(serviceError(status.DEADLINE_EXCEEDED, "Deadline exceeded")).code).toBe("DeadlineExceeded");
    expect(fromClientError(serviceError(status.NOT_FOUND, "not a source")).code).toBe("NotFound");
    const reset = fromClientError(serviceError(status.INTERNAL, "Received RST_STREAM with code 2 (Call ended without gRPC status)"));
    expect(reset.code).toBe("Unavailable");
    expect(fromClientError(serviceError(status.INTERNAL, "disk on fire")).code).toBe("Internal");
    const plain = Object.assign(new Error("read ECONNRESET"), { code: "ECONNRESET" });
    expect(fromClientError(plain).code).toBe("Unavailable");
  });

  it("drops grpc-js's empty resolution note from connection failures, and keeps a real one", () => {
    const refused = "No connection established. Last error: connect ECONNREFUSED 127.0.0.1:9044";
    expect(fromClientError(serviceError(status.UNAVAILABLE, `${refused}. Resolution note: `)).message).toBe(`${refused}.`);
    const dns = `${refused}. Resolution note: DNS resolution failed for peer.example`;
    expect(fromClientError(serviceError(status.UNAVAILABLE, dns)).message).toBe(dns);
  });
});

describe("message conversions", () => {
  it("round-trips listing entries through the wire", () => {
    const entries: FileEntry[] = [
      { fileUrl: "/api/v1/live-migration/files/data/0/ks/t-1/nb-1-big-Data.db", size: 5_000_000_000, fileType: "FILE", lastModifiedTime: 1_700_000_000_123 },
      { fileUrl: "/api/v1/live-migration/files/data/0/ks", size: -1, fileType: "DIRECTORY", lastModifiedTime: 1_700_000_000_000 },
    ];
    for (const entry of entries) {
      const bytes = toBinary(InstanceFileSchema, toInstanceFile(entry));
      expect(fromInstanceFile(fromBinary(InstanceFileSchema, bytes))).toEqual(entry);
    }
    expect(() => fromInstanceFile(create(InstanceFileSchema, { fileUrl: "/x", fileType: FileType.UNSPECIFIED }))).toThrow(AgentError);
  });

  it("round-trips read requests, data and trailers", () => {
    const request = { fileUrl: "/api/v1/live-migration/files/hints/0/a.hints", offset: 1 << 20, expectedSize: -1, expectedLastModifiedTime: 42 };
    expect(fromReadFileRequest(toReadFileRequest(request))).toEqual(request);
    const data = new Uint8Array([1, 2, 3]);
    const decoded = fromReadFileResponse(fromBinary(ReadFileResponseSchema, toBinary(ReadFileResponseSchema, toReadFileData(data))));
    expect(decoded).toEqual({ data });
    const trailer = { xxh64: "ef46db3751d8e999", size: 0, lastModifiedTime: 1_700_000_000_001 };
    expect(fromReadFileResponse(toReadFileTrailer(trailer))).toEqual({ trailer });
    expect(() => fromReadFileResponse(create(ReadFileResponseSchema))).toThrow(/neither|without data/);
  });

  it("builds listing entries and transfer messages as plain objects equal to create()'s", () => {
    const data = new Uint8Array([1, 2, 3]);
    const trailer = { xxh64: "ef46db3751d8e999", size: 3, lastModifiedTime: 1_700_000_000_001 };
    const trailerInit = { xxh64: trailer.xxh64, size: 3n, lastModifiedTime: 1_700_000_000_001n };
    expect(toReadFileData(data)).toStrictEqual(create(ReadFileResponseSchema, { payload: { case: "data", value: data } }));
    expect(toReadFileTrailer(trailer)).toStrictEqual(create(ReadFileResponseSchema, { payload: { case: "trailer", value: trailerInit } }));
    const normalize = (piece: object | undefined) => JSON.parse(JSON.stringify(piece, (_, v: unknown) => (typeof v === "bigint" ? `${v}n` : v)));
    const cases = [
      [toReadFilesPiece(4, toReadFileData(data)), create(ReadFilesPieceSchema, { index: 4, data })],
      [toReadFilesPiece(5, toReadFileTrailer(trailer)), create(ReadFilesPieceSchema, { index: 5, trailer: trailerInit })],
      [toReadFilesPiece(6, new AgentError("NotFound", "gone")), create(ReadFilesPieceSchema, { index: 6, error: { code: status.NOT_FOUND, message: "gone" } })],
    ] as const;
    for (const [built, created] of cases) {
      expect(normalize(built)).toEqual(normalize(created));
      expect(toBinary(ReadFilesPieceSchema, built!)).toEqual(toBinary(ReadFilesPieceSchema, created));
    }
    const entry: FileEntry = { fileUrl: "/api/v1/live-migration/files/data/0/ks", size: -1, fileType: "DIRECTORY", lastModifiedTime: 1_700_000_000_000 };
    expect(toInstanceFile(entry)).toStrictEqual(
      create(InstanceFileSchema, { fileUrl: entry.fileUrl, size: -1n, fileType: FileType.DIRECTORY, lastModifiedTime: 1_700_000_000_000n }),
    );
    const joined = toReadFilesPiece(4, toReadFileData(data))!;
    expect(toReadFilesPiece(4, toReadFileTrailer(trailer), joined)).toBeUndefined();
    expect(normalize(toReadFilesResponse([joined]))).toEqual(
      normalize(create(ReadFilesResponseSchema, { pieces: [{ index: 4, data, trailer: trailerInit }] })),
    );
  });

  it("maps digest algorithms both ways and refuses an unspecified one", () => {
    for (const name of ["MD5", "XXHash32", "XXH64"] as const) expect(fromDigestAlgorithm(toDigestAlgorithm(name))).toBe(name);
    expect(toDigestAlgorithm("XXHash32")).toBe(DigestAlgorithm.XXHASH32);
    try {
      fromDigestAlgorithm(DigestAlgorithm.UNSPECIFIED);
      expect.unreachable();
    } catch (err) {
      expect((err as AgentError).code).toBe("InvalidArgument");
    }
  });

  it("packs digest results and carries per-file failures as gRPC codes", () => {
    const ok = { fileUrl: "/a", digest: "1B2M2Y8AsgTpgAmY7PhCfg==" };
    const packed = toDigestFilesResponse([ok, { fileUrl: "/b", error: new AgentError("NotFound", "File not found") }]);
    expect(packed.digests.map((d) => d.errorCode)).toEqual([status.OK, status.NOT_FOUND]);
    const [first, second] = fromBinary(DigestFilesResponseSchema, toBinary(DigestFilesResponseSchema, packed)).digests.map(fromFileDigest);
    expect(first).toEqual(ok);
    expect(second!.digest).toBeUndefined();
    expect(second!.error?.code).toBe("NotFound");
    expect(second!.error?.message).toBe("File not found");
  });

  it("maps the migration status", () => {
    expect(fromMigrationStatus(create(GetMigrationStatusResponseSchema, { state: MigrationState.COMPLETED, endTime: 1234n }))).toEqual({
      state: "COMPLETED",
      endTime: 1234,
    });
    expect(fromMigrationStatus(create(GetMigrationStatusResponseSchema, { state: MigrationState.NOT_COMPLETED }))).toEqual({
      state: "NOT_COMPLETED",
      endTime: null,
    });
    expect(() => fromMigrationStatus(create(GetMigrationStatusResponseSchema))).toThrow(AgentError);
  });
});

