/**
 * The port through which a destination reaches its source. The migration layer depends only
 * on this interface; plane/client.ts implements it over gRPC. Every method rejects with an
 * AgentError (Unavailable/DeadlineExceeded for transient faults, so callers can retry).
 */
import type { DigestAlgorithmName, FileEntry, MigrationStatus } from "./types.js";

export interface ReadFileRequest {
  readonly fileUrl: string;
  /** First byte wanted. */
  readonly offset: number;
  /** Listing size; the source fails with Aborted if the file no longer has it (-1: no check). */
  readonly expectedSize: number;
  /** Listing mtime in epoch ms; the source fails with Aborted if it changed (-1: no check). */
  readonly expectedLastModifiedTime: number;
}

/** The end of a ReadFile stream. */
export interface ReadFileTrailer {
  /** XXH64, seed 0, 16 lowercase hex digits, of the whole file [0, size). */
  readonly xxh64: string;
  readonly size: number;
  readonly lastModifiedTime: number;
}

export type ReadFileMessage = { readonly data: Uint8Array } | { readonly trailer: ReadFileTrailer };

/**
 * One message of a ReadFiles stream, about file `index` of the request: its data and trailer as
 * in ReadFile, or the error that ended that file alone.
 */
export type BatchReadMessage = { readonly index: number } & (ReadFileMessage | { readonly error: import("../errors.js").AgentError });

export interface DigestResult {
  readonly fileUrl: string;
  /** Encoded digest; undefined when `error` is set. */
  readonly digest?: string;
  readonly error?: import("../errors.js").AgentError;
}

export interface SourcePeer {
  /** The source instance's completion record. */
  migrationStatus(signal?: AbortSignal): Promise<MigrationStatus>;
  /**
   * Times the link's round trip to the source (HTTP/2 PINGs, plane/link-probe.ts), to be called
   * while this side does nothing else (a busy event loop reads late and would make any link look
   * slow); large files then go over a connection whose window suits the link (plane/client.ts).
   * Until it has, and if it fails, they share the control connection. Resolves with the round
   * trip in ms.
   */
  measureLink(signal?: AbortSignal): Promise<number>;
  /** The HTTP/2 receive window of large files (readFile): how much of one can be on its way at once. */
  readonly largeFileWindowBytes: number;
  /**
   * The source instance's full listing, batch by batch as the source walks, so that the caller
   * works on each batch while the source still walks (collectListing gathers them).
   */
  listFiles(signal?: AbortSignal): AsyncIterable<readonly FileEntry[]>;
  /**
   * The same listing batch by batch, as the source walks, with the digests of its small regular
   * files (FileEntry.digest) in `digestAlgorithm`: a verification's listing. Files without a
   * digest are for digestFiles.
   */
  listFilesWithDigests(digestAlgorithm: DigestAlgorithmName, signal?: AbortSignal): AsyncIterable<readonly FileEntry[]>;
  /** Streams a file from an offset; data messages then exactly one trailer. */
  readFile(request: ReadFileRequest, signal?: AbortSignal): AsyncIterable<ReadFileMessage>;
  /**
   * Streams many whole files over one call, in request order: for each file its data messages
   * then a trailer, or one error message. The messages come in groups, as they arrived (one
   * wire message packs many small files), so that a batch of thousands of files costs an
   * iteration step per group rather than per message. The stream itself fails only for the
   * whole batch.
   */
  readFiles(requests: readonly ReadFileRequest[], signal?: AbortSignal): AsyncIterable<readonly BatchReadMessage[]>;
  /** Digests many files over one stream, results in completion order, one per requested URL. */
  digestFiles(
    algorithm: DigestAlgorithmName,
    fileUrls: readonly string[],
    maxConcurrency: number,
    signal?: AbortSignal,
  ): AsyncIterable<DigestResult>;
  /** Closes the underlying channels. */
  close(): void;
}

/** Every entry of a batched listing (SourcePeer.listFiles), in order. */
export async function collectListing(batches: AsyncIterable<readonly FileEntry[]>): Promise<FileEntry[]> {
  const entries: FileEntry[] = [];
  for await (const batch of batches) for (const entry of batch) entries.push(entry);
  return entries;
}
