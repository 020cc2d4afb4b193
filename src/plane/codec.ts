/**
 * Hand-written protobuf codecs for the plane's high-volume messages, beside the generated code
 * (wire.ts converts messages; this file writes and reads their bytes where protobuf-es's
 * reflective codec was a measured cost):
 * - ReadFile data chunks, framed in place without a copy (allocChunk, encodeReadFileResponse);
 * - ListFiles responses, both ways (every pass and every verification starts with one);
 * - ReadFiles responses, both ways (the small files of a copy, a few to a message);
 * - DigestFiles requests and responses (one result per file of a verification).
 *
 * Contract: every encoder writes exactly toBinary's bytes, and returns undefined (the caller
 * then uses toBinary) for what it does not cover; every decoder takes only canonical input
 * (CanonicalReader) and hands anything else to fromBinary and wire.ts's conversions, so results
 * and errors stay theirs. test/unit/plane-codec.test.ts holds both sides to that.
 */
import { fromBinary } from "@bufbuild/protobuf";
import { FileType, type InstanceFile } from "../../gen/livemigration/v1/common_pb.js";
import {
  type DigestFilesRequest,
  type DigestFilesResponse,
  DigestFilesResponseSchema,
  type PeerServiceListFilesResponse,
  PeerServiceListFilesResponseSchema,
  type ReadFileResponse,
  type ReadFileRequest,
  ReadFileRequestSchema,
  type ReadFilesRequest,
  ReadFilesRequestSchema,
  type ReadFilesResponse,
  ReadFilesResponseSchema,
} from "../../gen/livemigration/v1/peer_pb.js";
import { AgentError } from "../errors.js";
import type { DigestResult } from "../migration/peer.js";
import type { FileEntry } from "../migration/types.js";
import { EMPTY_BYTES, fromFileDigest, fromInstanceFile, type ReadFilesPieceFields } from "./wire.js";

// ---------------------------------------------------------------------------------------------
// ReadFile chunks

/*
 * Zero-copy ReadFile chunks. toBinary copies every chunk into a fresh buffer before grpc-js
 * copies it again into its frame: on a 4 GiB copy that is 4 GiB more of short-lived 1 MiB
 * buffers, and the source agent's GC and page faults were the biggest share of its CPU. A chunk
 * read into allocChunk's buffer has room in front for the protobuf field header and the gRPC
 * message header, so encodeReadFileResponse writes the first there, grpc-framing.ts the second,
 * and grpc-js sends that very memory. (Recycling chunk memory once grpc-js had copied it was tried twice: the source's peak RSS fell
 * by 25-55 MB, but the 4 GiB copy took longer both times, ~3 s in an A/B of 6 pairs, and ~1.1 s
 * (17.7 -> 18.8 s) in 5 pairs without incremental marking, so each chunk has its own.)
 */

/**
 * Bytes of the gRPC message header (compression flag, 4-byte length) that grpc-js puts in front
 * of every message it sends.
 */
export const FRAME_HEADER_BYTES = 5;
/**
 * Encoded server messages with FRAME_HEADER_BYTES of their own memory in front: grpc-framing.ts
 * writes their gRPC header there instead of copying them behind one.
 */
export const framable = new WeakSet<Uint8Array>();

/** A buffer for an encoded server message of `size` bytes, with room of its own for its gRPC header. */
function allocMessage(size: number): Buffer {
  const message = Buffer.allocUnsafeSlow(FRAME_HEADER_BYTES + size).subarray(FRAME_HEADER_BYTES);
  framable.add(message);
  return message;
}

/**
 * Room in front of a chunk: the `data` field's tag (1 byte) and longest length varint (5 bytes),
 * and the gRPC header in front of those.
 */
const CHUNK_HEADROOM = 6 + FRAME_HEADER_BYTES;
/** Chunks with CHUNK_HEADROOM bytes of their own memory in front (never shared, never pooled). */
const chunksWithHeadroom = new WeakSet<Uint8Array>();
/** `data` is field 1, wire type 2 (length-delimited). */
const DATA_FIELD_TAG = (1 << 3) | 2;

/** A buffer for up to `size` bytes of a file, to be sent with toReadFileData without a copy. */
export function allocChunk(size: number): Buffer {
  const chunk = Buffer.allocUnsafeSlow(CHUNK_HEADROOM + size).subarray(CHUNK_HEADROOM);
  chunksWithHeadroom.add(chunk);
  return chunk;
}

/** The first `length` bytes of an allocChunk buffer, still sent without a copy. */
export function trimChunk(chunk: Buffer, length: number): Buffer {
  if (length === chunk.length) return chunk;
  const trimmed = chunk.subarray(0, length);
  if (chunksWithHeadroom.has(chunk)) chunksWithHeadroom.add(trimmed);
  return trimmed;
}

/**
 * The wire bytes of a ReadFileResponse, identical to toBinary's: for a data chunk from
 * allocChunk they are written around the chunk in place; undefined for any other message.
 */
export function encodeReadFileResponse(message: ReadFileResponse): Buffer | undefined {
  if (message.payload.case !== "data") return undefined;
  const data = message.payload.value;
  if (!chunksWithHeadroom.has(data)) return undefined;
  const header: number[] = [DATA_FIELD_TAG];
  for (let length = data.byteLength; ; length >>>= 7) {
    if (length < 0x80) {
      header.push(length);
      break;
    }
    header.push((length & 0x7f) | 0x80);
  }
  const start = data.byteOffset - header.length;
  const frame = Buffer.from(data.buffer, start, header.length + data.byteLength);
  frame.set(header, 0);
  framable.add(frame);
  return frame;
}

// ---------------------------------------------------------------------------------------------
// Listings

/*
 * ListFiles responses, encoded by hand. A listing is tens of thousands of InstanceFile messages:
 * protobuf-es's reflective toBinary took 85-160 ms for the 18,430 entries of the small benchmark
 * tree (micro-benchmark, warm and cold), on the source's main thread, at the start of every pass
 * and every verification, while the destination waits for the listing. Writing the four fields
 * directly takes 5-25 ms (in the agent, with the rest of serializeMessage: 91 -> 29 ms per
 * listing) and gives the same bytes (plane-codec tests compare them with toBinary).
 */

/** InstanceFile field tags: 1 file_url (length-delimited), 2 size, 3 file_type, 4 last_modified_time (varints). */
const FILE_URL_TAG = (1 << 3) | 2;
const SIZE_TAG = 2 << 3;
const FILE_TYPE_TAG = 3 << 3;
const LAST_MODIFIED_TIME_TAG = 4 << 3;
/** PeerServiceListFilesResponse.files: field 1, length-delimited. */
const FILES_TAG = (1 << 3) | 2;
/** PeerServiceListFilesResponse.digests: field 2, length-delimited (a verification's listing). */
const LISTED_DIGESTS_TAG = (2 << 3) | 2;
const MAX_SAFE_BIGINT = BigInt(Number.MAX_SAFE_INTEGER);

/** Bytes of the varint of a non-negative safe integer. */
function varintLength(value: number): number {
  let length = 1;
  while (value >= 0x80) {
    value = Math.floor(value / 0x80);
    length++;
  }
  return length;
}

/** Bytes of an int64 varint: negative values take 10 (two's complement over 64 bits). */
function int64Length(value: bigint): number {
  return value < 0n ? 10 : value <= MAX_SAFE_BIGINT ? varintLength(Number(value)) : varintLengthOfBig(value);
}

function varintLengthOfBig(value: bigint): number {
  let length = 1;
  for (let rest = BigInt.asUintN(64, value); rest >= 0x80n; rest >>= 7n) length++;
  return length;
}

/** Writes the varint of a non-negative safe integer at `at`; returns the position after it. */
function writeVarint(out: Buffer, at: number, value: number): number {
  while (value >= 0x80) {
    out[at++] = (value & 0x7f) | 0x80; // & takes the low 32 bits of any safe integer: its low 7 stay exact
    value = Math.floor(value / 0x80);
  }
  out[at++] = value;
  return at;
}

function writeInt64(out: Buffer, at: number, value: bigint): number {
  if (value >= 0n && value <= MAX_SAFE_BIGINT) return writeVarint(out, at, Number(value));
  let rest = BigInt.asUintN(64, value);
  while (rest >= 0x80n) {
    out[at++] = Number(rest & 0x7fn) | 0x80;
    rest >>= 7n;
  }
  out[at++] = Number(rest);
  return at;
}

/** Whether a message carries fields unknown to this schema (the encoders leave those to toBinary). */
function hasUnknownFields(message: { readonly $unknown?: readonly unknown[] | undefined }): boolean {
  return message.$unknown !== undefined && message.$unknown.length > 0;
}

/** Bytes of a length-delimited field with a one-byte tag: tag, length varint, `bodyBytes`. */
function delimitedLength(bodyBytes: number): number {
  return 1 + varintLength(bodyBytes) + bodyBytes;
}

/** Bytes of a string field (tag, length, UTF-8), 0 for the empty string, which toBinary leaves out. */
function stringFieldLength(utf8Bytes: number): number {
  return utf8Bytes > 0 ? delimitedLength(utf8Bytes) : 0;
}

function writeStringField(out: Buffer, at: number, tag: number, value: string, utf8Bytes: number): number {
  if (utf8Bytes === 0) return at;
  out[at++] = tag;
  at = writeVarint(out, at, utf8Bytes);
  return at + out.write(value, at, "utf8");
}

/** The body length of one InstanceFile, its URL's UTF-8 length at `urlBytes`. Fields at their default are not written, as toBinary does. */
function instanceFileLength(file: InstanceFile, urlBytes: number): number {
  return (
    stringFieldLength(urlBytes) +
    (file.size !== 0n ? 1 + int64Length(file.size) : 0) +
    (file.fileType !== 0 ? 1 + varintLength(file.fileType) : 0) +
    (file.lastModifiedTime !== 0n ? 1 + int64Length(file.lastModifiedTime) : 0)
  );
}

/**
 * The wire bytes of a ListFiles response, identical to toBinary's; undefined (encode it with
 * toBinary) for a message this encoder does not cover: unknown fields, or a negative file type.
 */
export function encodeListFilesResponse(message: PeerServiceListFilesResponse): Buffer | undefined {
  const { files, digests } = message;
  if (hasUnknownFields(message)) return undefined;
  const urlBytes = new Array<number>(files.length);
  const bodyBytes = new Array<number>(files.length);
  let total = 0;
  for (let i = 0; i < files.length; i++) {
    const file = files[i]!;
    if (hasUnknownFields(file) || file.fileType < 0) return undefined;
    urlBytes[i] = Buffer.byteLength(file.fileUrl);
    bodyBytes[i] = instanceFileLength(file, urlBytes[i]!);
    total += delimitedLength(bodyBytes[i]!);
  }
  const digestBytes = digests.map((digest) => Buffer.byteLength(digest));
  // Every element of a repeated string is written, the empty string included.
  for (const bytes of digestBytes) total += delimitedLength(bytes);
  const out = allocMessage(total);
  let at = 0;
  for (let i = 0; i < files.length; i++) {
    const file = files[i]!;
    out[at++] = FILES_TAG;
    at = writeVarint(out, at, bodyBytes[i]!);
    at = writeStringField(out, at, FILE_URL_TAG, file.fileUrl, urlBytes[i]!);
    if (file.size !== 0n) {
      out[at++] = SIZE_TAG;
      at = writeInt64(out, at, file.size);
    }
    if (file.fileType !== 0) {
      out[at++] = FILE_TYPE_TAG;
      at = writeVarint(out, at, file.fileType);
    }
    if (file.lastModifiedTime !== 0n) {
      out[at++] = LAST_MODIFIED_TIME_TAG;
      at = writeInt64(out, at, file.lastModifiedTime);
    }
  }
  for (let i = 0; i < digests.length; i++) {
    out[at++] = LISTED_DIGESTS_TAG;
    at = writeVarint(out, at, digestBytes[i]!);
    at += out.write(digests[i]!, at, "utf8");
  }
  return out;
}

/** The empty input of an idle CanonicalReader. */
const NO_BYTES = Buffer.alloc(0);

/** The 10-byte varint of int64 -1 (a directory's size), the one negative value the decoders below take directly. */
const MINUS_ONE_VARINT = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];

/**
 * A cursor for the hand decoders over what an encoder writes for our messages: single-byte tags,
 * varints up to 2^53 - 1 (and int64 -1 where allowed), ASCII strings. Every read returns
 * undefined where the input is anything else, and the decoder then hands the whole message to
 * fromBinary, so that unusual or malformed input gets protobuf-es's result or error.
 *
 * One reader serves every decode (canonically): the decoders are synchronous, so no two use it
 * at once. A reader per message let V8 collect the readers' map between listings, and with it
 * the optimized code of every method, compiled for that map: a fresh destination agent
 * recompiled them all after the first full collection (`--trace-deopt`: "weak objects").
 */
class CanonicalReader {
  at = 0;
  // A Buffer always (grpc-js hands the decoders Buffers), for toString and one field type.
  private bytes: Buffer = NO_BYTES;

  /** Starts reading `bytes` from its first byte. */
  reset(bytes: Uint8Array): void {
    this.at = 0;
    // A view is made only for input that is not a Buffer already.
    this.bytes = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  /** Lets go of the last input, so that the reader does not keep a message's buffer alive. */
  release(): void {
    this.at = 0;
    this.bytes = NO_BYTES;
  }

  get done(): boolean {
    return this.at >= this.bytes.length;
  }

  tag(): number | undefined {
    return this.bytes[this.at++];
  }

  varint(allowMinusOne = false): number | undefined {
    const { bytes } = this;
    if (allowMinusOne && bytes[this.at] === 0xff && this.atMinusOne()) {
      this.at += MINUS_ONE_VARINT.length;
      return -1;
    }
    let value = 0;
    for (let scale = 1; this.at < bytes.length && scale <= 2 ** 49; scale *= 0x80) {
      const byte = bytes[this.at++]!;
      value += (byte & 0x7f) * scale;
      if (byte < 0x80) return Number.isSafeInteger(value) ? value : undefined;
    }
    return undefined;
  }

  /** Whether the next bytes are MINUS_ONE_VARINT. */
  private atMinusOne(): boolean {
    for (let i = 0; i < MINUS_ONE_VARINT.length; i++) if (this.bytes[this.at + i] !== MINUS_ONE_VARINT[i]) return false;
    return true;
  }

  /** The end of a length-delimited field whose length comes next, if it lies within `limit`. */
  lengthDelimited(limit = this.bytes.length): number | undefined {
    const length = this.varint();
    return length !== undefined && this.at + length <= limit ? this.at + length : undefined;
  }

  /** A length-delimited ASCII string ending within `limit`. */
  ascii(limit: number): string | undefined {
    const end = this.lengthDelimited(limit);
    if (end === undefined) return undefined;
    for (let i = this.at; i < end; i++) if (this.bytes[i]! >= 0x80) return undefined;
    const value = this.bytes.toString("latin1", this.at, end);
    this.at = end;
    return value;
  }
}

const sharedReader = new CanonicalReader();

/** Runs a hand decoder on `bytes` with the one CanonicalReader, which lets go of them after. */
function canonically<T>(decode: (reader: CanonicalReader, bytes: Uint8Array) => T, bytes: Uint8Array): T {
  sharedReader.reset(bytes);
  try {
    return decode(sharedReader, bytes);
  } finally {
    sharedReader.release();
  }
}

/**
 * One ListFiles response straight into listing entries, the receiving half of
 * encodeListFilesResponse: fromBinary and fromInstanceFile took 53-109 ms for the small
 * benchmark tree's listing on the destination, this 4-22 ms. Only canonical input takes the
 * direct path (CanonicalReader: ASCII URLs, sizes and times up to 2^53, -1); anything else —
 * unknown fields, other wire types, non-ASCII text, larger or other negative numbers,
 * truncation — is decoded by fromBinary and fromInstanceFile, so the result or the error is theirs.
 */
export function decodeListFilesResponse(bytes: Uint8Array): FileEntry[] {
  let decoded = canonically(decodeCanonicalListing, bytes);
  if (decoded === undefined) {
    const message = fromBinary(PeerServiceListFilesResponseSchema, bytes);
    decoded = { entries: message.files.map(fromInstanceFile), digests: message.digests };
  }
  return withListedDigests(decoded.entries, decoded.digests);
}

/**
 * Gives each entry its non-empty digest (PeerServiceListFilesResponse.digests: none, or one per file).
 * @throws AgentError DataLoss for any other number of digests.
 */
function withListedDigests(entries: FileEntry[], digests: readonly string[]): FileEntry[] {
  if (digests.length === 0) return entries;
  if (digests.length !== entries.length) {
    throw new AgentError("DataLoss", `ListFiles sent ${digests.length} digests for ${entries.length} files`);
  }
  // The entries were just decoded, and are ours: no copies of tens of thousands of them.
  for (let i = 0; i < entries.length; i++) if (digests[i] !== "") (entries[i] as { digest?: string }).digest = digests[i];
  return entries;
}

function decodeCanonicalListing(reader: CanonicalReader, bytes: Uint8Array): { entries: FileEntry[]; digests: string[] } | undefined {
  const entries: FileEntry[] = [];
  const digests: string[] = [];
  while (!reader.done) {
    const fieldTag = reader.tag();
    if (fieldTag === LISTED_DIGESTS_TAG) {
      const digest = reader.ascii(bytes.length);
      if (digest === undefined) return undefined;
      digests.push(digest);
      continue;
    }
    if (fieldTag !== FILES_TAG) return undefined;
    const end = reader.lengthDelimited();
    if (end === undefined) return undefined;
    let fileUrl = "";
    let size = 0;
    let fileType = 0;
    let lastModifiedTime = 0;
    while (reader.at < end) {
      const tag = reader.tag();
      if (tag === FILE_URL_TAG) {
        const url = reader.ascii(end);
        if (url === undefined) return undefined;
        fileUrl = url;
        continue;
      }
      if (tag !== SIZE_TAG && tag !== FILE_TYPE_TAG && tag !== LAST_MODIFIED_TIME_TAG) return undefined;
      const value = reader.varint(tag !== FILE_TYPE_TAG);
      if (value === undefined || reader.at > end) return undefined;
      if (tag === SIZE_TAG) size = value;
      else if (tag === FILE_TYPE_TAG) fileType = value;
      else lastModifiedTime = value;
    }
    if (fileType !== FileType.FILE && fileType !== FileType.DIRECTORY) return undefined;
    entries.push({ fileUrl, size, fileType: fileType === FileType.DIRECTORY ? "DIRECTORY" : "FILE", lastModifiedTime });
  }
  return { entries, digests };
}

// ---------------------------------------------------------------------------------------------
// ReadFiles

/** ReadFilesRequest.files: field 1, length-delimited. */
const REQUEST_FILES_TAG = (1 << 3) | 2;
/** ReadFileRequest: 1 file_url (length-delimited); 2 offset, 3 expected_size, 4 expected_last_modified_time (int64 varints). */
const REQUEST_FILE_URL_TAG = (1 << 3) | 2;
const REQUEST_OFFSET_TAG = 2 << 3;
const REQUEST_EXPECTED_SIZE_TAG = 3 << 3;
const REQUEST_EXPECTED_MTIME_TAG = 4 << 3;

/**
 * The wire bytes of a ReadFiles request, identical to toBinary's; undefined (encode it with
 * toBinary) for unknown fields. A copy of the small benchmark tree sends ~35 of 512 files each:
 * toBinary took the destination 92 ms for them cold and 41 ms warm (micro-benchmark), this a few.
 */
export function encodeReadFilesRequest(message: ReadFilesRequest): Buffer | undefined {
  const { files } = message;
  if (hasUnknownFields(message)) return undefined;
  /** Per file: its URL's UTF-8 bytes, then its body length. */
  const sizes = new Array<number>(files.length * 2);
  let total = 0;
  for (let i = 0; i < files.length; i++) {
    const file = files[i]!;
    if (hasUnknownFields(file)) return undefined;
    const url = (sizes[2 * i] = Buffer.byteLength(file.fileUrl));
    const body = (sizes[2 * i + 1] =
      stringFieldLength(url) +
      (file.offset !== 0n ? 1 + int64Length(file.offset) : 0) +
      (file.expectedSize !== 0n ? 1 + int64Length(file.expectedSize) : 0) +
      (file.expectedLastModifiedTime !== 0n ? 1 + int64Length(file.expectedLastModifiedTime) : 0));
    total += delimitedLength(body);
  }
  const out = Buffer.allocUnsafe(total);
  let at = 0;
  for (let i = 0; i < files.length; i++) {
    const file = files[i]!;
    out[at++] = REQUEST_FILES_TAG;
    at = writeVarint(out, at, sizes[2 * i + 1]!);
    at = writeStringField(out, at, REQUEST_FILE_URL_TAG, file.fileUrl, sizes[2 * i]!);
    if (file.offset !== 0n) {
      out[at++] = REQUEST_OFFSET_TAG;
      at = writeInt64(out, at, file.offset);
    }
    if (file.expectedSize !== 0n) {
      out[at++] = REQUEST_EXPECTED_SIZE_TAG;
      at = writeInt64(out, at, file.expectedSize);
    }
    if (file.expectedLastModifiedTime !== 0n) {
      out[at++] = REQUEST_EXPECTED_MTIME_TAG;
      at = writeInt64(out, at, file.expectedLastModifiedTime);
    }
  }
  return out;
}

/**
 * A ReadFiles request as fromBinary would give it, the receiving half of encodeReadFilesRequest
 * (fromBinary took the source 19 ms warm and 70 ms cold for a small-tree copy's ~35 requests).
 * Canonical input only (CanonicalReader: ASCII URLs, numbers up to 2^53 and -1); anything else
 * is decoded by fromBinary, so the result or the error is its own.
 */
export function decodeReadFilesRequest(bytes: Uint8Array): ReadFilesRequest {
  return canonically(decodeCanonicalReadFilesRequest, bytes) ?? fromBinary(ReadFilesRequestSchema, bytes);
}

function decodeCanonicalReadFilesRequest(reader: CanonicalReader): ReadFilesRequest | undefined {
  const files: ReadFileRequest[] = [];
  while (!reader.done) {
    if (reader.tag() !== REQUEST_FILES_TAG) return undefined;
    const end = reader.lengthDelimited();
    if (end === undefined) return undefined;
    const file: ReadFileRequest = { $typeName: ReadFileRequestSchema.typeName, fileUrl: "", offset: 0n, expectedSize: 0n, expectedLastModifiedTime: 0n };
    while (reader.at < end) {
      const tag = reader.tag();
      if (tag === REQUEST_FILE_URL_TAG) {
        const url = reader.ascii(end);
        if (url === undefined) return undefined;
        file.fileUrl = url;
        continue;
      }
      const field =
        tag === REQUEST_OFFSET_TAG ? "offset" : tag === REQUEST_EXPECTED_SIZE_TAG ? "expectedSize" : tag === REQUEST_EXPECTED_MTIME_TAG ? "expectedLastModifiedTime" : undefined;
      const value = field === undefined ? undefined : reader.varint(true);
      if (value === undefined || reader.at > end) return undefined;
      file[field!] = BigInt(value);
    }
    files.push(file);
  }
  return { $typeName: ReadFilesRequestSchema.typeName, files };
}

/*
 * ReadFiles responses, encoded and decoded by hand: a copy of the small benchmark tree sends its
 * 17,711 files as that many pieces, a few to a message. toBinary built each message from
 * reflection, copied every file into its writer's chunks and then into one buffer (which grpc-js
 * copies once more into its frame): ~380 ms of the source's main thread per copy (`--cpu-prof`,
 * 756 ms over two), where this encoder takes ~46 ms (229 ms over five rounds of the same
 * files); fromBinary took ~0.2 s of the destination's. The encoder sizes the message first and
 * copies each file's bytes once; the decoder hands out the files' bytes as views of the
 * received message, as fromBinary does.
 */

/** ReadFilesResponse.pieces: field 1, length-delimited. */
const PIECES_TAG = (1 << 3) | 2;
/** ReadFilesPiece: 1 index (varint); 2 data, 3 trailer, 4 error (length-delimited). */
const PIECE_INDEX_TAG = 1 << 3;
const PIECE_DATA_TAG = (2 << 3) | 2;
const PIECE_TRAILER_TAG = (3 << 3) | 2;
const PIECE_ERROR_TAG = (4 << 3) | 2;
/** ReadFileTrailer: 1 xxh64 (length-delimited); 2 size, 3 last_modified_time (varints). */
const TRAILER_XXH64_TAG = (1 << 3) | 2;
const TRAILER_SIZE_TAG = 2 << 3;
const TRAILER_LAST_MODIFIED_TIME_TAG = 3 << 3;
/** ReadFilesError: 1 code (varint), 2 message (length-delimited). */
const READ_ERROR_CODE_TAG = 1 << 3;
const READ_ERROR_MESSAGE_TAG = (2 << 3) | 2;
/** Sizes kept per piece between the two passes of the encoder. */
const PIECE_SIZES = 5;

/**
 * The wire bytes of a ReadFiles response, identical to toBinary's; undefined (encode it with
 * toBinary) for a message this encoder does not cover: unknown fields, a negative index or
 * error code.
 */
export function encodeReadFilesResponse(message: ReadFilesResponse): Buffer | undefined {
  const { pieces } = message;
  if (hasUnknownFields(message)) return undefined;
  /** Per piece: its body, its trailer's body, the xxh64's bytes, its error's body, the error message's bytes. */
  const sizes = new Array<number>(pieces.length * PIECE_SIZES);
  let total = 0;
  for (let i = 0; i < pieces.length; i++) {
    const { index, data, trailer, error } = pieces[i]!;
    if (hasUnknownFields(pieces[i]!) || index < 0) return undefined;
    let body = (index !== 0 ? 1 + varintLength(index) : 0) + (data.byteLength > 0 ? delimitedLength(data.byteLength) : 0);
    const at = i * PIECE_SIZES;
    if (trailer) {
      if (hasUnknownFields(trailer)) return undefined;
      const xxh64 = (sizes[at + 2] = Buffer.byteLength(trailer.xxh64));
      const trailerBody = (sizes[at + 1] =
        stringFieldLength(xxh64) +
        (trailer.size !== 0n ? 1 + int64Length(trailer.size) : 0) +
        (trailer.lastModifiedTime !== 0n ? 1 + int64Length(trailer.lastModifiedTime) : 0));
      body += delimitedLength(trailerBody);
    }
    if (error) {
      if (hasUnknownFields(error) || error.code < 0) return undefined;
      const text = (sizes[at + 4] = Buffer.byteLength(error.message));
      const errorBody = (sizes[at + 3] = (error.code !== 0 ? 1 + varintLength(error.code) : 0) + stringFieldLength(text));
      body += delimitedLength(errorBody);
    }
    sizes[at] = body;
    total += delimitedLength(body);
  }
  const out = allocMessage(total);
  let at = 0;
  for (let i = 0; i < pieces.length; i++) {
    const { index, data, trailer, error } = pieces[i]!;
    const sized = i * PIECE_SIZES;
    out[at++] = PIECES_TAG;
    at = writeVarint(out, at, sizes[sized]!);
    if (index !== 0) {
      out[at++] = PIECE_INDEX_TAG;
      at = writeVarint(out, at, index);
    }
    if (data.byteLength > 0) {
      out[at++] = PIECE_DATA_TAG;
      at = writeVarint(out, at, data.byteLength);
      out.set(data, at);
      at += data.byteLength;
    }
    if (trailer) {
      out[at++] = PIECE_TRAILER_TAG;
      at = writeVarint(out, at, sizes[sized + 1]!);
      at = writeStringField(out, at, TRAILER_XXH64_TAG, trailer.xxh64, sizes[sized + 2]!);
      if (trailer.size !== 0n) {
        out[at++] = TRAILER_SIZE_TAG;
        at = writeInt64(out, at, trailer.size);
      }
      if (trailer.lastModifiedTime !== 0n) {
        out[at++] = TRAILER_LAST_MODIFIED_TIME_TAG;
        at = writeInt64(out, at, trailer.lastModifiedTime);
      }
    }
    if (error) {
      out[at++] = PIECE_ERROR_TAG;
      at = writeVarint(out, at, sizes[sized + 3]!);
      if (error.code !== 0) {
        out[at++] = READ_ERROR_CODE_TAG;
        at = writeVarint(out, at, error.code);
      }
      at = writeStringField(out, at, READ_ERROR_MESSAGE_TAG, error.message, sizes[sized + 4]!);
    }
  }
  return out;
}

/**
 * The pieces of one ReadFiles response, the receiving half of encodeReadFilesResponse. Data are
 * views of `bytes`, as fromBinary gives them (grpc-js hands every message its own buffer).
 * Canonical input only (CanonicalReader: ASCII strings, numbers up to 2^53, each submessage at
 * most once per piece); anything else is decoded by fromBinary, so the result or the error is its own.
 */
export function decodeReadFilesResponse(bytes: Uint8Array): ReadFilesPieceFields[] {
  return canonically(decodeCanonicalPieces, bytes) ?? fromBinary(ReadFilesResponseSchema, bytes).pieces;
}

function decodeCanonicalPieces(reader: CanonicalReader, bytes: Uint8Array): ReadFilesPieceFields[] | undefined {
  const pieces: ReadFilesPieceFields[] = [];
  while (!reader.done) {
    if (reader.tag() !== PIECES_TAG) return undefined;
    const end = reader.lengthDelimited();
    if (end === undefined) return undefined;
    // Every field set from the start, so that all pieces have one shape, as fromBinary's have.
    const piece: { index: number; data: Uint8Array; trailer?: ReadFilesPieceFields["trailer"]; error?: ReadFilesPieceFields["error"] } = {
      index: 0,
      data: EMPTY_BYTES,
      trailer: undefined,
      error: undefined,
    };
    while (reader.at < end) {
      const tag = reader.tag();
      if (tag === PIECE_INDEX_TAG) {
        const index = reader.varint();
        if (index === undefined || index > 0x7fffffff || reader.at > end) return undefined;
        piece.index = index;
      } else if (tag === PIECE_DATA_TAG) {
        const dataEnd = reader.lengthDelimited(end);
        if (dataEnd === undefined) return undefined;
        piece.data = bytes.subarray(reader.at, dataEnd);
        reader.at = dataEnd;
      } else if (tag === PIECE_TRAILER_TAG && !piece.trailer) {
        const trailerEnd = reader.lengthDelimited(end);
        if (trailerEnd === undefined) return undefined;
        const trailer = { xxh64: "", size: 0, lastModifiedTime: 0 };
        while (reader.at < trailerEnd) {
          const field = reader.tag();
          if (field === TRAILER_XXH64_TAG) {
            const xxh64 = reader.ascii(trailerEnd);
            if (xxh64 === undefined) return undefined;
            trailer.xxh64 = xxh64;
            continue;
          }
          const name = field === TRAILER_SIZE_TAG ? "size" : field === TRAILER_LAST_MODIFIED_TIME_TAG ? "lastModifiedTime" : undefined;
          const value = name === undefined ? undefined : reader.varint();
          if (value === undefined || reader.at > trailerEnd) return undefined;
          trailer[name!] = value;
        }
        piece.trailer = trailer;
      } else if (tag === PIECE_ERROR_TAG && !piece.error) {
        const errorEnd = reader.lengthDelimited(end);
        if (errorEnd === undefined) return undefined;
        const error = { code: 0, message: "" };
        while (reader.at < errorEnd) {
          const field = reader.tag();
          if (field === READ_ERROR_CODE_TAG) {
            const code = reader.varint();
            if (code === undefined || code > 0x7fffffff || reader.at > errorEnd) return undefined;
            error.code = code;
          } else if (field === READ_ERROR_MESSAGE_TAG) {
            const text = reader.ascii(errorEnd);
            if (text === undefined) return undefined;
            error.message = text;
          } else {
            return undefined;
          }
        }
        piece.error = error;
      } else {
        return undefined;
      }
    }
    pieces.push(piece);
  }
  return pieces;
}

// ---------------------------------------------------------------------------------------------
// Digests

/*
 * DigestFiles responses, encoded by hand for the same reason as listings: a verification of the
 * small benchmark tree sends 17,711 results, and building and serializing them with protobuf-es
 * took the source 71-137 ms (358 ms cold, micro-benchmark) while its digest phase is what the
 * verification waits for; this takes a few ms and writes toBinary's bytes (plane-codec tests).
 */

/** DigestFilesRequest field tags: 1 algorithm, 3 max_concurrency (varints), 2 file_urls (length-delimited). */
const ALGORITHM_TAG = 1 << 3;
const FILE_URLS_TAG = (2 << 3) | 2;
const MAX_CONCURRENCY_TAG = 3 << 3;

/**
 * The wire bytes of a DigestFiles request, identical to toBinary's (the destination sends every
 * file of a verification in one: 1.8 MB of URLs for the small benchmark tree, which toBinary
 * took 36-62 ms to write while the source waited for it); undefined (encode it with toBinary)
 * for unknown fields or a negative number.
 */
export function encodeDigestFilesRequest(message: DigestFilesRequest): Buffer | undefined {
  const { algorithm, fileUrls, maxConcurrency } = message;
  if (hasUnknownFields(message) || algorithm < 0 || maxConcurrency < 0) return undefined;
  const urlBytes = fileUrls.map((url) => Buffer.byteLength(url));
  let total = (algorithm !== 0 ? 1 + varintLength(algorithm) : 0) + (maxConcurrency !== 0 ? 1 + varintLength(maxConcurrency) : 0);
  // Every element of a repeated string is written, the empty string included.
  for (const bytes of urlBytes) total += delimitedLength(bytes);
  const out = Buffer.allocUnsafe(total);
  let at = 0;
  if (algorithm !== 0) {
    out[at++] = ALGORITHM_TAG;
    at = writeVarint(out, at, algorithm);
  }
  for (let i = 0; i < fileUrls.length; i++) {
    out[at++] = FILE_URLS_TAG;
    at = writeVarint(out, at, urlBytes[i]!);
    at += out.write(fileUrls[i]!, at, "utf8");
  }
  if (maxConcurrency !== 0) {
    out[at++] = MAX_CONCURRENCY_TAG;
    at = writeVarint(out, at, maxConcurrency);
  }
  return out;
}

/** FileDigest field tags: 1 file_url, 2 digest, 4 error_message (length-delimited), 3 error_code (varint). */
const DIGEST_FILE_URL_TAG = (1 << 3) | 2;
const DIGEST_TAG = (2 << 3) | 2;
const ERROR_CODE_TAG = 3 << 3;
const ERROR_MESSAGE_TAG = (4 << 3) | 2;
/** DigestFilesResponse.digests: field 1, length-delimited. */
const DIGESTS_TAG = (1 << 3) | 2;

/**
 * The wire bytes of a DigestFiles response, identical to toBinary's; undefined (encode it with
 * toBinary) for a message this encoder does not cover: unknown fields, or a negative error code.
 */
export function encodeDigestFilesResponse(message: DigestFilesResponse): Buffer | undefined {
  const { digests } = message;
  if (hasUnknownFields(message)) return undefined;
  /** Per result: UTF-8 bytes of file_url, digest and error_message, then the body length. */
  const sizes = new Array<number>(digests.length * 4);
  let total = 0;
  for (let i = 0; i < digests.length; i++) {
    const d = digests[i]!;
    if (hasUnknownFields(d) || d.errorCode < 0) return undefined;
    const url = (sizes[4 * i] = Buffer.byteLength(d.fileUrl));
    const digest = (sizes[4 * i + 1] = Buffer.byteLength(d.digest));
    const error = (sizes[4 * i + 2] = Buffer.byteLength(d.errorMessage));
    const body = (sizes[4 * i + 3] =
      stringFieldLength(url) + stringFieldLength(digest) + (d.errorCode !== 0 ? 1 + varintLength(d.errorCode) : 0) + stringFieldLength(error));
    total += delimitedLength(body);
  }
  const out = Buffer.allocUnsafe(total);
  let at = 0;
  for (let i = 0; i < digests.length; i++) {
    const d = digests[i]!;
    out[at++] = DIGESTS_TAG;
    at = writeVarint(out, at, sizes[4 * i + 3]!);
    at = writeStringField(out, at, DIGEST_FILE_URL_TAG, d.fileUrl, sizes[4 * i]!);
    at = writeStringField(out, at, DIGEST_TAG, d.digest, sizes[4 * i + 1]!);
    if (d.errorCode !== 0) {
      out[at++] = ERROR_CODE_TAG;
      at = writeVarint(out, at, d.errorCode);
    }
    at = writeStringField(out, at, ERROR_MESSAGE_TAG, d.errorMessage, sizes[4 * i + 2]!);
  }
  return out;
}

/**
 * One DigestFiles response straight into results, the receiving half of
 * encodeDigestFilesResponse (fromBinary took the destination ~65 ms per small-tree
 * verification). Canonical input only (CanonicalReader: ASCII strings, error codes up to 2^53);
 * anything else goes through fromBinary, and every result through fromFileDigest either way.
 */
export function decodeDigestFilesResponse(bytes: Uint8Array): DigestResult[] {
  return canonically(decodeCanonicalDigests, bytes) ?? fromBinary(DigestFilesResponseSchema, bytes).digests.map(fromFileDigest);
}

function decodeCanonicalDigests(reader: CanonicalReader): DigestResult[] | undefined {
  const results: DigestResult[] = [];
  while (!reader.done) {
    if (reader.tag() !== DIGESTS_TAG) return undefined;
    const end = reader.lengthDelimited();
    if (end === undefined) return undefined;
    const digest = { fileUrl: "", digest: "", errorCode: 0, errorMessage: "" };
    while (reader.at < end) {
      const tag = reader.tag();
      if (tag === ERROR_CODE_TAG) {
        const code = reader.varint();
        if (code === undefined || code > 0x7fffffff || reader.at > end) return undefined;
        digest.errorCode = code;
        continue;
      }
      const field = tag === DIGEST_FILE_URL_TAG ? "fileUrl" : tag === DIGEST_TAG ? "digest" : tag === ERROR_MESSAGE_TAG ? "errorMessage" : undefined;
      const value = field === undefined ? undefined : reader.ascii(end);
      if (value === undefined) return undefined;
      digest[field!] = value;
    }
    results.push(fromFileDigest(digest));
  }
  return results;
}
