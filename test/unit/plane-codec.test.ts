/**
 * The hand codecs (src/plane/codec.ts) against protobuf-es: every encoder must write toBinary's
 * exact bytes, and every decoder must give fromBinary's (and wire.ts's conversions') results and
 * errors, on canonical input through its own path and on anything else through theirs.
 */
import { create, fromBinary, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { DigestAlgorithm, FileType, InstanceFileSchema } from "../../gen/livemigration/v1/common_pb.js";
import {
  DigestFilesRequestSchema,
  DigestFilesResponseSchema,
  FileDigestSchema,
  PeerServiceListFilesResponseSchema,
  ReadFileRequestSchema,
  ReadFileResponseSchema,
  type ReadFilesPiece,
  ReadFilesRequestSchema,
  ReadFilesResponseSchema,
} from "../../gen/livemigration/v1/peer_pb.js";
import { AgentError } from "../../src/errors.js";
import type { BatchReadMessage, DigestResult } from "../../src/migration/peer.js";
import type { FileEntry } from "../../src/migration/types.js";
import {
  allocChunk,
  decodeDigestFilesResponse,
  decodeListFilesResponse,
  decodeReadFilesRequest,
  decodeReadFilesResponse,
  encodeDigestFilesRequest,
  encodeDigestFilesResponse,
  encodeListFilesResponse,
  encodeReadFileResponse,
  encodeReadFilesRequest,
  encodeReadFilesResponse,
  trimChunk,
} from "../../src/plane/codec.js";
import {
  fromFileDigest,
  fromInstanceFile,
  fromReadFilesPiece,
  toDigestFilesResponse,
  toInstanceFile,
  toReadFileData,
  toReadFileRequest,
  toReadFilesPiece,
  toReadFilesResponse,
  toReadFileTrailer,
} from "../../src/plane/wire.js";

describe("zero-copy ReadFile chunks", () => {
  it("encode exactly as toBinary, in the chunk's own memory, for every length-varint size", () => {
    for (const size of [0, 1, 127, 128, 16_383, 16_384, (1 << 20) - 1, 1 << 20, (1 << 21) + 3]) {
      const chunk = allocChunk(size);
      for (let i = 0; i < size; i++) chunk[i] = (i * 7 + 3) & 0xff;
      const message = toReadFileData(chunk);
      const wire = encodeReadFileResponse(message);
      expect(wire, `size ${size}`).toBeDefined();
      expect(Buffer.compare(wire!, Buffer.from(toBinary(ReadFileResponseSchema, message))), `size ${size}`).toBe(0);
      expect(wire!.buffer).toBe(chunk.buffer);
      const decoded = fromBinary(ReadFileResponseSchema, wire!);
      expect(decoded.payload.case).toBe("data");
      expect(Buffer.compare(Buffer.from(decoded.payload.value as Uint8Array), chunk)).toBe(0);
    }
  });

  it("keep a short read's trimmed view encodable in place", () => {
    const chunk = allocChunk(1000);
    chunk.fill(9);
    const trimmed = trimChunk(chunk, 200);
    const wire = encodeReadFileResponse(toReadFileData(trimmed));
    expect(wire).toBeDefined();
    expect(Buffer.compare(wire!, Buffer.from(toBinary(ReadFileResponseSchema, toReadFileData(trimmed))))).toBe(0);
    expect(trimChunk(chunk, 1000)).toBe(chunk);
  });

  it("leave every other message to toBinary", () => {
    expect(encodeReadFileResponse(toReadFileData(Buffer.alloc(10, 1)))).toBeUndefined();
    expect(encodeReadFileResponse(toReadFileData(allocChunk(10).subarray(2)))).toBeUndefined();
    expect(encodeReadFileResponse(toReadFileTrailer({ xxh64: "ef46db3751d8e999", size: 0, lastModifiedTime: 1 }))).toBeUndefined();
  });
});

describe("hand-encoded ListFiles responses", () => {
  const sameAsToBinary = (files: MessageInitShape<typeof InstanceFileSchema>[]) => {
    const message = create(PeerServiceListFilesResponseSchema, { files });
    const wire = encodeListFilesResponse(message);
    expect(wire).toBeDefined();
    expect(wire!.toString("hex")).toBe(Buffer.from(toBinary(PeerServiceListFilesResponseSchema, message)).toString("hex"));
    return fromBinary(PeerServiceListFilesResponseSchema, wire!);
  };

  it("encode exactly as toBinary across varint boundaries, defaults and negative int64s", () => {
    const values = [0n, 1n, 127n, 128n, 16_383n, 16_384n, 2n ** 31n - 1n, 2n ** 31n, 2n ** 32n - 1n, 2n ** 32n, 2n ** 35n + 5n, 2n ** 53n - 1n, 2n ** 53n, 2n ** 63n - 1n, -1n, -2n, -(2n ** 63n)];
    const files = values.flatMap((value, i) => [
      { fileUrl: `/api/v1/live-migration/files/data/0/ks/t-${i}/nb-${i}-big-Data.db`, size: value, fileType: FileType.FILE, lastModifiedTime: 1_700_000_000_123n },
      { fileUrl: "", size: 0n, fileType: FileType.UNSPECIFIED, lastModifiedTime: value },
      { fileUrl: `/api/v1/live-migration/files/hints/0/d${i}`, size: -1n, fileType: FileType.DIRECTORY, lastModifiedTime: 0n },
    ]);
    const decoded = sameAsToBinary(files);
    expect(decoded.files.map((f) => [f.fileUrl, f.size, f.fileType, f.lastModifiedTime])).toEqual(files.map((f) => [f.fileUrl, f.size, f.fileType, f.lastModifiedTime]));
  });

  it("encode multi-byte UTF-8, URLs whose length needs a two-byte varint, an empty message and an all-default file", () => {
    sameAsToBinary([{ fileUrl: "/api/v1/live-migration/files/data/0/ks/tbl-\u00e9\u4e2d\u{1F600}/x", size: 3n, fileType: FileType.FILE, lastModifiedTime: 5n }]);
    sameAsToBinary([{ fileUrl: `/api/v1/live-migration/files/data/0/${"a".repeat(300)}`, size: 1n, fileType: FileType.FILE, lastModifiedTime: 1n }]);
    sameAsToBinary([{ fileUrl: "/lone-surrogates-\uD800-\uDC00-end", size: 1n, fileType: FileType.FILE, lastModifiedTime: 1n }]);
    sameAsToBinary([]);
    sameAsToBinary([{}]);
  });

  it("encode a realistic listing batch byte for byte (toInstanceFile of LIST_BATCH_ENTRIES-sized batches)", () => {
    const entries: FileEntry[] = Array.from({ length: 1000 }, (_, i) => ({
      fileUrl: `/api/v1/live-migration/files/data/${i % 2}/ks${i % 7}/table-${i % 13}/nb-${i}-big-${i % 3 === 0 ? "Data.db" : "Index.db"}`,
      size: i % 10 === 0 ? -1 : i * 4099,
      fileType: i % 10 === 0 ? "DIRECTORY" : "FILE",
      lastModifiedTime: 1_700_000_000_000 + i * 1337,
    }));
    const decoded = sameAsToBinary(entries.map(toInstanceFile));
    expect(decoded.files.map(fromInstanceFile)).toEqual(entries);
  });

  it("encode a verification's listing, one digest per file, empty ones included, exactly as toBinary", () => {
    const files = [
      { fileUrl: "/api/v1/live-migration/files/data/0/ks/t/nb-1-big-Data.db", size: 10n, fileType: FileType.FILE, lastModifiedTime: 7n },
      { fileUrl: "/api/v1/live-migration/files/data/0/ks/t", size: -1n, fileType: FileType.DIRECTORY, lastModifiedTime: 7n },
      { fileUrl: "/api/v1/live-migration/files/data/0/ks/t/nb-1-big-Index.db", size: 0n, fileType: FileType.FILE, lastModifiedTime: 7n },
    ];
    const digests = ["1B2M2Y8AsgTpgAmY7PhCfg==", "", "2cc5d05"];
    const message = create(PeerServiceListFilesResponseSchema, { files, digests });
    const wire = encodeListFilesResponse(message);
    expect(wire!.toString("hex")).toBe(Buffer.from(toBinary(PeerServiceListFilesResponseSchema, message)).toString("hex"));
    expect(fromBinary(PeerServiceListFilesResponseSchema, wire!).digests).toEqual(digests);
  });

  it("leave messages with unknown fields or a negative enum to toBinary", () => {
    const withUnknown = create(PeerServiceListFilesResponseSchema, { files: [{ fileUrl: "/x", size: 1n }] });
    withUnknown.files[0]!.$unknown = [{ no: 9, wireType: 0, data: new Uint8Array([1]) }];
    expect(encodeListFilesResponse(withUnknown)).toBeUndefined();
    const outerUnknown = create(PeerServiceListFilesResponseSchema, { files: [] });
    outerUnknown.$unknown = [{ no: 9, wireType: 0, data: new Uint8Array([1]) }];
    expect(encodeListFilesResponse(outerUnknown)).toBeUndefined();
    expect(encodeListFilesResponse(create(PeerServiceListFilesResponseSchema, { files: [{ fileType: -1 as FileType }] }))).toBeUndefined();
  });
});

describe("ListFiles responses decoded straight into entries", () => {
  const viaFromBinary = (bytes: Uint8Array) => fromBinary(PeerServiceListFilesResponseSchema, bytes).files.map(fromInstanceFile);
  const wireOf = (files: MessageInitShape<typeof InstanceFileSchema>[]) =>
    toBinary(PeerServiceListFilesResponseSchema, create(PeerServiceListFilesResponseSchema, { files }));
  /** Outcome of a decode: its entries, or its error's class and message. */
  const outcome = (decode: () => FileEntry[]) => {
    try {
      return { entries: decode() };
    } catch (err) {
      return { error: `${(err as Error).constructor.name}: ${(err as Error).message}` };
    }
  };
  const sameAsFromBinary = (bytes: Uint8Array) => {
    const expected = outcome(() => viaFromBinary(bytes));
    expect(outcome(() => decodeListFilesResponse(bytes))).toEqual(expected);
    return expected;
  };

  it("decode canonical listings exactly as fromBinary and fromInstanceFile, -1 and 2^53 - 1 included", () => {
    const entries: FileEntry[] = [
      { fileUrl: "/api/v1/live-migration/files/data/0/ks/t-1/nb-1-big-Data.db", size: 2 ** 53 - 1, fileType: "FILE", lastModifiedTime: 1_700_000_000_123 },
      { fileUrl: "/api/v1/live-migration/files/data/0/ks/t-1", size: -1, fileType: "DIRECTORY", lastModifiedTime: 0 },
      { fileUrl: "/api/v1/live-migration/files/hints/0/empty%20file", size: 0, fileType: "FILE", lastModifiedTime: 128 },
      { fileUrl: `/api/v1/live-migration/files/data/1/${"x".repeat(200)}`, size: 16_384, fileType: "FILE", lastModifiedTime: 2 ** 32 },
    ];
    const bytes = encodeListFilesResponse(create(PeerServiceListFilesResponseSchema, { files: entries.map(toInstanceFile) }))!;
    expect(sameAsFromBinary(bytes)).toEqual({ entries });
    expect(sameAsFromBinary(new Uint8Array(0))).toEqual({ entries: [] });
    // A view into a larger buffer, as grpc-js hands messages over.
    const padded = Buffer.concat([Buffer.from([9, 9, 9]), bytes, Buffer.from([7])]);
    expect(decodeListFilesResponse(padded.subarray(3, 3 + bytes.length))).toEqual(entries);
  });

  it("give every other input to fromBinary and fromInstanceFile: same entries, same errors", () => {
    const file = { fileUrl: "/api/v1/live-migration/files/data/0/f", size: 5n, fileType: FileType.FILE, lastModifiedTime: 9n };
    const canonical = Buffer.from(wireOf([file]));
    const cases: Record<string, Uint8Array> = {
      "non-ASCII URL": wireOf([{ ...file, fileUrl: "/api/v1/live-migration/files/data/0/caf\u00e9" }]),
      "size above 2^53": wireOf([{ ...file, size: 2n ** 60n }]),
      "size 2^53 + 1 (an 8-byte varint)": wireOf([{ ...file, size: 2n ** 53n + 1n }]),
      "size 2^56 - 1": wireOf([{ ...file, size: 2n ** 56n - 1n }]),
      "negative size other than -1": wireOf([{ ...file, size: -2n }]),
      "unspecified file type": wireOf([{ ...file, fileType: FileType.UNSPECIFIED }]),
      "unknown file type": wireOf([{ ...file, fileType: 7 as FileType }]),
      "negative file type": wireOf([{ ...file, fileType: -1 as FileType }]),
      "unknown field in the file": Buffer.concat([Buffer.from([0x0a, canonical[1]! + 2]), canonical.subarray(2), Buffer.from([0x28, 0x01])]),
      "unknown field in the response": Buffer.concat([canonical, Buffer.from([0x18, 0x05])]),
      "over-long varint for the size": Buffer.from([0x0a, 0x04, 0x10, 0x85, 0x80, 0x00]),
      "truncated file": canonical.subarray(0, canonical.length - 2),
      "truncated varint": Buffer.from([0x0a, 0x02, 0x10, 0x80]),
      "length past the end": Buffer.from([0x0a, 0x7f, 0x10, 0x01]),
      "files with the wrong wire type": Buffer.from([0x08, 0x01]),
    };
    for (const [name, bytes] of Object.entries(cases)) {
      const expected = outcome(() => viaFromBinary(bytes));
      expect(outcome(() => decodeListFilesResponse(bytes)), name).toEqual(expected);
    }
    expect(outcome(() => decodeListFilesResponse(cases["unspecified file type"]!))).toEqual({
      error: "AgentError: peer listed /api/v1/live-migration/files/data/0/f without a file type",
    });
  });

  it("give each entry its digest from a verification's listing, canonical or not; an empty digest is none", () => {
    const files = [
      { fileUrl: "/api/v1/live-migration/files/data/0/ks/t/a", size: 3n, fileType: FileType.FILE, lastModifiedTime: 9n },
      { fileUrl: "/api/v1/live-migration/files/data/0/ks/t", size: -1n, fileType: FileType.DIRECTORY, lastModifiedTime: 9n },
      { fileUrl: "/api/v1/live-migration/files/data/0/ks/t/caf\u00e9", size: 4n, fileType: FileType.FILE, lastModifiedTime: 9n },
    ];
    const expected: FileEntry[] = [
      { fileUrl: files[0]!.fileUrl, size: 3, fileType: "FILE", lastModifiedTime: 9, digest: "ab12" },
      { fileUrl: files[1]!.fileUrl, size: -1, fileType: "DIRECTORY", lastModifiedTime: 9 },
      { fileUrl: files[2]!.fileUrl, size: 4, fileType: "FILE", lastModifiedTime: 9, digest: "cd34" },
    ];
    const digests = ["ab12", "", "cd34"];
    // The non-ASCII URL sends the message through fromBinary; without it, the direct path.
    const bytes = toBinary(PeerServiceListFilesResponseSchema, create(PeerServiceListFilesResponseSchema, { files, digests }));
    expect(decodeListFilesResponse(bytes)).toEqual(expected);
    const ascii = create(PeerServiceListFilesResponseSchema, { files: files.slice(0, 2), digests: digests.slice(0, 2) });
    expect(decodeListFilesResponse(encodeListFilesResponse(ascii)!)).toEqual(expected.slice(0, 2));
  });

  it("refuse any other number of digests than none or one per file, on both paths", () => {
    const file = { fileUrl: "/api/v1/live-migration/files/data/0/f", size: 5n, fileType: FileType.FILE, lastModifiedTime: 9n };
    const nonAscii = { ...file, fileUrl: "/api/v1/live-migration/files/data/0/caf\u00e9" };
    for (const files of [[file, file], [nonAscii, nonAscii]]) {
      const bytes = toBinary(PeerServiceListFilesResponseSchema, create(PeerServiceListFilesResponseSchema, { files, digests: ["ab12"] }));
      expect(outcome(() => decodeListFilesResponse(bytes))).toEqual({ error: "AgentError: ListFiles sent 1 digests for 2 files" });
    }
    const digestsOnly = toBinary(PeerServiceListFilesResponseSchema, create(PeerServiceListFilesResponseSchema, { digests: ["ab12"] }));
    expect(outcome(() => decodeListFilesResponse(digestsOnly))).toEqual({ error: "AgentError: ListFiles sent 1 digests for 0 files" });
    expect(() => decodeListFilesResponse(digestsOnly)).toThrow(expect.objectContaining({ code: "DataLoss" }));
  });
});

describe("hand-encoded DigestFiles responses", () => {
  const sameAsToBinary = (message: ReturnType<typeof toDigestFilesResponse>) => {
    const wire = encodeDigestFilesResponse(message);
    expect(wire).toBeDefined();
    expect(wire!.toString("hex")).toBe(Buffer.from(toBinary(DigestFilesResponseSchema, message)).toString("hex"));
    return fromBinary(DigestFilesResponseSchema, wire!).digests.map(fromFileDigest);
  };

  it("encode results and per-file errors exactly as toBinary, and decode back to the same results", () => {
    const results: DigestResult[] = [
      { fileUrl: "/api/v1/live-migration/files/data/0/ks/t/nb-1-big-Data.db", digest: "2cc5d05" },
      { fileUrl: "/api/v1/live-migration/files/data/0/ks/t/nb-2-big-Data.db", digest: "1B2M2Y8AsgTpgAmY7PhCfg==" },
      { fileUrl: "/api/v1/live-migration/files/data/0/ks/t/gone", error: new AgentError("NotFound", "File not found") },
      { fileUrl: "/api/v1/live-migration/files/data/0/ks/t/busy", error: new AgentError("Unavailable", "no permit within 5000 ms") },
      { fileUrl: `/api/v1/live-migration/files/data/1/${"d".repeat(200)}/caf\u00e9-\u{1F600}`, digest: "0" },
      { fileUrl: "/x", error: new AgentError("DataLoss", `bad \uD800 byte in ${"m".repeat(130)}`) },
      { fileUrl: "", digest: "" },
    ];
    const decoded = sameAsToBinary(toDigestFilesResponse(results));
    expect(decoded.map((r) => r.fileUrl)).toEqual(results.map((r) => r.fileUrl.replace("\uD800", "\uFFFD")));
    expect(decoded.map((r) => r.digest ?? r.error?.code)).toEqual(["2cc5d05", "1B2M2Y8AsgTpgAmY7PhCfg==", "NotFound", "Unavailable", "0", "DataLoss", ""]);
    expect(decoded[3]!.error?.message).toBe("no permit within 5000 ms");
    sameAsToBinary(toDigestFilesResponse([]));
  });

  it("leave messages with unknown fields or a negative error code to toBinary", () => {
    const withUnknown = toDigestFilesResponse([{ fileUrl: "/x", digest: "1" }]);
    withUnknown.digests[0]!.$unknown = [{ no: 9, wireType: 0, data: new Uint8Array([1]) }];
    expect(encodeDigestFilesResponse(withUnknown)).toBeUndefined();
    const negative = toDigestFilesResponse([{ fileUrl: "/x", digest: "1" }]);
    negative.digests[0]!.errorCode = -1;
    expect(encodeDigestFilesResponse(negative)).toBeUndefined();
  });
});

describe("hand-encoded ReadFiles requests", () => {
  it("encode exactly as toBinary: zero fields left out, -1 as ten bytes, large and non-ASCII values", () => {
    const batch = Array.from({ length: 300 }, (_, i) => ({
      fileUrl: `/api/v1/live-migration/files/data/${i % 2}/ks/t-${i}/nb-${i}-big-Data.db`,
      offset: 0,
      expectedSize: i * 997,
      expectedLastModifiedTime: 1_700_000_000_000 + i,
    }));
    const requests = [
      batch,
      [
        { fileUrl: "/caf\u00e9-\uD800", offset: 5, expectedSize: -1, expectedLastModifiedTime: -1 },
        { fileUrl: "", offset: 0, expectedSize: 0, expectedLastModifiedTime: 0 },
        { fileUrl: "/big", offset: Number.MAX_SAFE_INTEGER, expectedSize: 2 ** 40, expectedLastModifiedTime: 127 },
      ],
      [],
    ];
    for (const files of requests) {
      // toReadFileRequest builds each file as a literal message: the same as create() would.
      const literal = create(ReadFilesRequestSchema, { files: files.map(toReadFileRequest) });
      const created = create(ReadFilesRequestSchema, {
        files: files.map((f) =>
          create(ReadFileRequestSchema, {
            fileUrl: f.fileUrl,
            offset: BigInt(f.offset),
            expectedSize: BigInt(f.expectedSize),
            expectedLastModifiedTime: BigInt(f.expectedLastModifiedTime),
          }),
        ),
      });
      const wire = encodeReadFilesRequest(literal);
      expect(wire).toBeDefined();
      expect(wire!.toString("hex")).toBe(Buffer.from(toBinary(ReadFilesRequestSchema, created)).toString("hex"));
      // A lone surrogate travels as U+FFFD either way.
      const fields = (m: typeof created) => m.files.map((f) => [f.fileUrl, f.offset, f.expectedSize, f.expectedLastModifiedTime]);
      expect(fields(fromBinary(ReadFilesRequestSchema, wire!))).toEqual(fields(fromBinary(ReadFilesRequestSchema, toBinary(ReadFilesRequestSchema, created))));
    }
  });

  it("decode exactly as fromBinary, canonical or not (non-ASCII URLs, numbers past 2^53, other negatives, unknown fields)", () => {
    const canonical = [
      { fileUrl: "/data/0/ks/t/nb-1-big-Data.db", offset: 0, expectedSize: 5000, expectedLastModifiedTime: 1_700_000_000_123 },
      { fileUrl: "", offset: 7, expectedSize: -1, expectedLastModifiedTime: -1 },
      { fileUrl: "/max", offset: Number.MAX_SAFE_INTEGER, expectedSize: 0, expectedLastModifiedTime: 1 },
    ];
    const others = [
      create(ReadFilesRequestSchema, { files: [create(ReadFileRequestSchema, { fileUrl: "/caf\u00e9", expectedSize: 1n })] }),
      create(ReadFilesRequestSchema, { files: [create(ReadFileRequestSchema, { fileUrl: "/x", offset: 2n ** 60n, expectedSize: -2n })] }),
    ];
    const withUnknown = create(ReadFilesRequestSchema, { files: [create(ReadFileRequestSchema, { fileUrl: "/u" })] });
    withUnknown.files[0]!.$unknown = [{ no: 9, wireType: 0, data: new Uint8Array([1]) }];
    const messages = [create(ReadFilesRequestSchema, { files: canonical.map(toReadFileRequest) }), create(ReadFilesRequestSchema), ...others, withUnknown];
    for (const message of messages) {
      const wire = toBinary(ReadFilesRequestSchema, message);
      const decoded = decodeReadFilesRequest(wire);
      const expected = fromBinary(ReadFilesRequestSchema, wire);
      expect(decoded.files.map((f) => ({ ...f, $unknown: f.$unknown ?? [] }))).toEqual(expected.files.map((f) => ({ ...f, $unknown: f.$unknown ?? [] })));
      expect(Buffer.from(toBinary(ReadFilesRequestSchema, decoded)).equals(Buffer.from(wire))).toBe(true);
    }
    // Truncated input: fromBinary's own error.
    const wire = toBinary(ReadFilesRequestSchema, messages[0]!);
    expect(() => decodeReadFilesRequest(wire.subarray(0, wire.length - 3))).toThrow();
  });

  it("leave unknown fields to toBinary", () => {
    const withUnknown = create(ReadFilesRequestSchema, { files: [toReadFileRequest({ fileUrl: "/x", offset: 0, expectedSize: 1, expectedLastModifiedTime: 1 })] });
    withUnknown.files[0]!.$unknown = [{ no: 9, wireType: 0, data: new Uint8Array([1]) }];
    expect(encodeReadFilesRequest(withUnknown)).toBeUndefined();
    withUnknown.files[0]!.$unknown = undefined;
    withUnknown.$unknown = [{ no: 9, wireType: 0, data: new Uint8Array([1]) }];
    expect(encodeReadFilesRequest(withUnknown)).toBeUndefined();
  });
});

describe("hand-encoded DigestFiles requests", () => {
  it("encode exactly as toBinary, empty URLs and default numbers included", () => {
    const urls = Array.from({ length: 300 }, (_, i) => `/api/v1/live-migration/files/data/${i % 2}/ks/t-${i}/${"n".repeat(i % 150)}-Data.db`);
    const inits: MessageInitShape<typeof DigestFilesRequestSchema>[] = [
      { algorithm: DigestAlgorithm.XXHASH32, fileUrls: urls, maxConcurrency: 10 },
      { algorithm: DigestAlgorithm.MD5, fileUrls: ["", "/caf\u00e9-\uD800", ""], maxConcurrency: 200 },
      { fileUrls: [] },
      { algorithm: DigestAlgorithm.XXH64, fileUrls: ["/x"], maxConcurrency: 0 },
    ];
    for (const init of inits) {
      const message = create(DigestFilesRequestSchema, init);
      const wire = encodeDigestFilesRequest(message);
      expect(wire).toBeDefined();
      expect(wire!.toString("hex")).toBe(Buffer.from(toBinary(DigestFilesRequestSchema, message)).toString("hex"));
      expect(fromBinary(DigestFilesRequestSchema, wire!).fileUrls.length).toBe(init.fileUrls!.length);
    }
  });

  it("leave unknown fields and negative numbers to toBinary", () => {
    expect(encodeDigestFilesRequest(create(DigestFilesRequestSchema, { fileUrls: ["/x"], maxConcurrency: -1 }))).toBeUndefined();
    const withUnknown = create(DigestFilesRequestSchema, { fileUrls: ["/x"] });
    withUnknown.$unknown = [{ no: 9, wireType: 0, data: new Uint8Array([1]) }];
    expect(encodeDigestFilesRequest(withUnknown)).toBeUndefined();
  });
});

describe("DigestFiles responses decoded straight into results", () => {
  /** A result as comparable data: the digest, or the error's code and message. */
  const plain = (r: DigestResult) => ({ fileUrl: r.fileUrl, digest: r.digest, code: r.error?.code, message: r.error?.message });
  const viaFromBinary = (bytes: Uint8Array) => fromBinary(DigestFilesResponseSchema, bytes).digests.map(fromFileDigest).map(plain);
  const outcome = (decode: () => unknown) => {
    try {
      return { value: decode() };
    } catch (err) {
      return { error: `${(err as Error).constructor.name}: ${(err as Error).message}` };
    }
  };
  const wireOf = (digests: MessageInitShape<typeof FileDigestSchema>[]) =>
    toBinary(DigestFilesResponseSchema, create(DigestFilesResponseSchema, { digests }));

  it("decode what the source sends exactly as fromBinary and fromFileDigest", () => {
    const results: DigestResult[] = [
      { fileUrl: "/api/v1/live-migration/files/data/0/ks/t/nb-1-big-Data.db", digest: "2cc5d05" },
      { fileUrl: "/api/v1/live-migration/files/data/0/ks/t/gone", error: new AgentError("NotFound", "File not found") },
      { fileUrl: `/api/v1/live-migration/files/data/1/${"u".repeat(300)}`, digest: "1B2M2Y8AsgTpgAmY7PhCfg==" },
    ];
    const bytes = encodeDigestFilesResponse(toDigestFilesResponse(results))!;
    expect(decodeDigestFilesResponse(bytes).map(plain)).toEqual(viaFromBinary(bytes));
    expect(decodeDigestFilesResponse(bytes).map(plain)).toEqual(results.map(plain));
    expect(decodeDigestFilesResponse(new Uint8Array(0))).toEqual([]);
  });

  it("give every other input to fromBinary: same results, same errors", () => {
    const ok = { fileUrl: "/api/v1/live-migration/files/data/0/f", digest: "abc" };
    const canonical = Buffer.from(wireOf([ok]));
    const cases: Record<string, Uint8Array> = {
      "non-ASCII URL": wireOf([{ ...ok, fileUrl: "/caf\u00e9" }]),
      "non-ASCII error message": wireOf([{ fileUrl: "/x", errorCode: 13, errorMessage: "\u00e9chec" }]),
      "error code without a message": wireOf([{ fileUrl: "/x", errorCode: 5 }]),
      "message without an error code": wireOf([{ fileUrl: "/x", errorMessage: "odd" }]),
      "error code past int32": Buffer.from([0x0a, 0x0a, 0x0a, 0x02, 0x2f, 0x78, 0x18, 0xff, 0xff, 0xff, 0xff, 0x0f]),
      "error code 2^32 + 5 (int32 reads 5)": Buffer.from([0x0a, 0x0a, 0x0a, 0x02, 0x2f, 0x78, 0x18, 0x85, 0x80, 0x80, 0x80, 0x10]),
      "negative error code": wireOf([{ fileUrl: "/x", errorCode: -3 }]),
      "unknown field in the result": Buffer.concat([Buffer.from([0x0a, canonical[1]! + 2]), canonical.subarray(2), Buffer.from([0x28, 0x01])]),
      "unknown field in the response": Buffer.concat([canonical, Buffer.from([0x18, 0x05])]),
      "truncated result": canonical.subarray(0, canonical.length - 1),
      "length past the end": Buffer.from([0x0a, 0x7f, 0x0a, 0x01, 0x2f]),
    };
    for (const [name, bytes] of Object.entries(cases)) {
      expect(outcome(() => decodeDigestFilesResponse(bytes).map(plain)), name).toEqual(outcome(() => viaFromBinary(bytes)));
    }
    expect(decodeDigestFilesResponse(cases["error code without a message"]!).map(plain)).toEqual([
      { fileUrl: "/x", digest: undefined, code: "NotFound", message: "digest failed" },
    ]);
  });
});

describe("hand-coded ReadFiles responses", () => {
  const trailerOf = (size: number, lastModifiedTime = 1_700_000_000_123) => toReadFileTrailer({ xxh64: "0123456789abcdef", size, lastModifiedTime });
  /** The pieces the source builds for: a small file whole, an empty file, a failed file, the first and last chunk of a bigger one. */
  const sourcePieces = () => {
    const pieces: ReadFilesPiece[] = [];
    const add = (index: number, message: Parameters<typeof toReadFilesPiece>[1]) => {
      const piece = toReadFilesPiece(index, message, pieces.at(-1));
      if (piece) pieces.push(piece);
    };
    const small = Buffer.from("a small SSTable component");
    add(0, toReadFileData(small));
    add(0, trailerOf(small.length));
    add(1, trailerOf(0, 0));
    add(2, new AgentError("NotFound", "File not found: /api/v1/live-migration/files/data/0/ks/t/gone"));
    add(130, toReadFileData(Buffer.alloc(1 << 20, 7)));
    add(130, toReadFileData(Buffer.alloc(300, 8)));
    add(130, trailerOf((1 << 20) + 300, Number.MAX_SAFE_INTEGER));
    add(4095, new AgentError("Aborted", `file changed during read: /caf\u00e9-${"x".repeat(200)}`));
    return pieces;
  };
  /** A domain message as comparable data. */
  const plain = (m: BatchReadMessage) =>
    "error" in m
      ? { index: m.index, code: m.error.code, message: m.error.message }
      : "data" in m
        ? { index: m.index, data: Buffer.from(m.data).toString("hex") }
        : { index: m.index, trailer: m.trailer };
  const viaFromBinary = (bytes: Uint8Array) => fromBinary(ReadFilesResponseSchema, bytes).pieces.flatMap(fromReadFilesPiece).map(plain);
  const outcome = (decode: () => unknown) => {
    try {
      return { value: decode() };
    } catch (err) {
      return { error: `${(err as Error).constructor.name}: ${(err as Error).message}` };
    }
  };

  it("encode what the source sends exactly as toBinary", () => {
    const message = toReadFilesResponse(sourcePieces());
    expect(message.pieces.length).toBe(6); // the trailers joined their files' last data pieces
    const wire = encodeReadFilesResponse(message);
    expect(wire).toBeDefined();
    expect(Buffer.compare(wire!, Buffer.from(toBinary(ReadFilesResponseSchema, message)))).toBe(0);
    for (const init of [
      { pieces: [] },
      { pieces: [{ index: 0 }] },
      { pieces: [{ index: 1, trailer: {} }, { index: 2, error: {} }] },
      { pieces: [{ index: 3, data: new Uint8Array(127) }, { index: 4, data: new Uint8Array(128), trailer: { size: -1n, lastModifiedTime: -(2n ** 63n) } }] },
      { pieces: [{ index: 0x7fffffff, trailer: { xxh64: "\u00e9", size: 2n ** 63n - 1n }, error: { code: 0x7fffffff, message: "both" } }] },
    ] satisfies MessageInitShape<typeof ReadFilesResponseSchema>[]) {
      const other = create(ReadFilesResponseSchema, init);
      expect(encodeReadFilesResponse(other)!.toString("hex")).toBe(Buffer.from(toBinary(ReadFilesResponseSchema, other)).toString("hex"));
    }
  });

  it("leave unknown fields, negative indexes and negative error codes to toBinary", () => {
    const unknown = [{ no: 9, wireType: 0, data: new Uint8Array([1]) }];
    const variants = [
      create(ReadFilesResponseSchema, { pieces: [{ index: -1 }] }),
      create(ReadFilesResponseSchema, { pieces: [{ index: 1, error: { code: -2 } }] }),
    ];
    const withUnknown = (mark: (m: ReturnType<typeof create<typeof ReadFilesResponseSchema>>) => { $unknown?: unknown }) => {
      const message = create(ReadFilesResponseSchema, { pieces: [{ index: 1, trailer: { xxh64: "1" }, error: { code: 5 } }] });
      mark(message).$unknown = unknown;
      variants.push(message);
    };
    withUnknown((m) => m);
    withUnknown((m) => m.pieces[0]!);
    withUnknown((m) => m.pieces[0]!.trailer!);
    withUnknown((m) => m.pieces[0]!.error!);
    for (const message of variants) expect(encodeReadFilesResponse(message)).toBeUndefined();
  });

  it("decode what the source sends exactly as fromBinary, with the data as views of the message", () => {
    const bytes = encodeReadFilesResponse(toReadFilesResponse(sourcePieces()))!;
    const pieces = decodeReadFilesResponse(bytes);
    const decoded = pieces.flatMap(fromReadFilesPiece);
    expect(decoded.map(plain)).toEqual(viaFromBinary(bytes));
    expect(decoded.map((m) => Object.keys(m)[1])).toEqual(["data", "trailer", "trailer", "error", "data", "data", "trailer", "error"]);
    for (const m of decoded) if ("data" in m) expect(m.data.buffer).toBe(bytes.buffer);
    expect(decodeReadFilesResponse(new Uint8Array(0))).toEqual([]);
  });

  it("give every other input to fromBinary: same results, same errors", () => {
    const wireOf = (init: MessageInitShape<typeof ReadFilesResponseSchema>) => toBinary(ReadFilesResponseSchema, create(ReadFilesResponseSchema, init));
    const canonical = Buffer.from(wireOf({ pieces: [{ index: 1, data: new Uint8Array([1, 2]), trailer: { xxh64: "ab", size: 2n } }] }));
    const cases: Record<string, Uint8Array> = {
      "non-ASCII error message": wireOf({ pieces: [{ index: 1, error: { code: 13, message: "\u00e9chec" } }] }),
      "non-ASCII digest": wireOf({ pieces: [{ index: 1, trailer: { xxh64: "\u00e9" } }] }),
      "trailer and error": wireOf({ pieces: [{ index: 1, trailer: {}, error: { code: 5 } }] }),
      "a piece with nothing": wireOf({ pieces: [{ index: 1 }] }),
      "error code 0": wireOf({ pieces: [{ index: 1, error: { message: "odd" } }] }),
      "negative index": wireOf({ pieces: [{ index: -1, trailer: {} }] }),
      "negative size": wireOf({ pieces: [{ index: 1, trailer: { size: -1n } }] }),
      "index 2^32 + 5 (int32 reads 5)": Buffer.from([0x0a, 0x08, 0x08, 0x85, 0x80, 0x80, 0x80, 0x10, 0x1a, 0x00]),
      "two trailers (protobuf merges them)": Buffer.from([0x0a, 0x0a, 0x08, 0x01, 0x1a, 0x02, 0x10, 0x05, 0x1a, 0x02, 0x18, 0x07]),
      "two errors": Buffer.from([0x0a, 0x0a, 0x08, 0x01, 0x22, 0x02, 0x08, 0x05, 0x22, 0x02, 0x12, 0x00]),
      "unknown field in the piece": Buffer.concat([Buffer.from([0x0a, canonical[1]! + 2]), canonical.subarray(2), Buffer.from([0x28, 0x01])]),
      "unknown field in the trailer": Buffer.from([0x0a, 0x06, 0x08, 0x01, 0x1a, 0x02, 0x20, 0x01]),
      "unknown field in the error": Buffer.from([0x0a, 0x06, 0x08, 0x01, 0x22, 0x02, 0x20, 0x01]),
      "unknown field in the response": Buffer.concat([canonical, Buffer.from([0x18, 0x05])]),
      "truncated piece": canonical.subarray(0, canonical.length - 1),
      "data past the piece": Buffer.from([0x0a, 0x04, 0x08, 0x01, 0x12, 0x05, 1, 2, 3, 4, 5]),
    };
    for (const [name, bytes] of Object.entries(cases)) {
      expect(outcome(() => decodeReadFilesResponse(bytes).flatMap(fromReadFilesPiece).map(plain)), name).toEqual(outcome(() => viaFromBinary(bytes)));
    }
    expect(outcome(() => decodeReadFilesResponse(cases["two trailers (protobuf merges them)"]!).flatMap(fromReadFilesPiece).map(plain))).toEqual({
      value: [{ index: 1, trailer: { xxh64: "", size: 5, lastModifiedTime: 7 } }],
    });
    expect(outcome(() => decodeReadFilesResponse(cases["trailer and error"]!).flatMap(fromReadFilesPiece))).toEqual({
      error: "AgentError: ReadFiles piece of file 1 has both a trailer and an error",
    });
  });
});
