/**
 * The destination's handle on its source: migration/peer.ts's SourcePeer over the gRPC plane
 * (@grpc/grpc-js). Bulk data flows server → client (ReadFile and ReadFiles are server-streaming), so this
 * client's flow-control window governs throughput (stack-notes §3.3): 16 MiB, and for large
 * files up to 20 MiB on a slow link (bulkWindowBytes, measureLink). The source picks
 * the instance by :authority, which is the source host unless `authority` says otherwise.
 */
import { create } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { GetMigrationStatusRequestSchema, LiveMigrationService } from "../../gen/livemigration/v1/live_migration_pb.js";
import {
  DigestFilesRequestSchema,
  PeerService,
  PeerServiceListFilesRequestSchema,
  ReadFilesRequestSchema,
} from "../../gen/livemigration/v1/peer_pb.js";
import { abortError, AgentError } from "../errors.js";
import { silentLogger, type Logger } from "../log.js";
import type { BatchReadMessage, DigestResult, ReadFileMessage, ReadFileRequest, SourcePeer } from "../migration/peer.js";
import type { DigestAlgorithmName, FileEntry, MigrationStatus } from "../migration/types.js";
import { decodeDigestFilesResponse, decodeListFilesResponse, decodeReadFilesResponse } from "./codec.js";
import { methodDefinition, PLANE_MAX_MESSAGE_BYTES } from "./definition.js";
import { pingRoundTripMs } from "./link-probe.js";
import {
  fromClientError,
  fromMigrationStatus,
  fromReadFileResponse,
  fromReadFilesPiece,
  toDigestAlgorithm,
  toReadFileRequest,
} from "./wire.js";

/**
 * HTTP/2 stream and connection receive window of the client (16 MiB ≥ 10 Gbit/s × 10 ms).
 * grpc-js sets both from one option, and Node acknowledges connection-level bytes on receipt:
 * a stream whose reader is paused holds up to this much here (see LARGE_STREAMS_MAX).
 */
export const CLIENT_FLOW_CONTROL_WINDOW_BYTES = 16 * 1024 * 1024;
const MiB = 1024 * 1024;
/** The largest window bulkWindowBytes gives a slow link. */
export const BULK_WINDOW_MAX_BYTES = 20 * 1024 * 1024;
/** Window per ms of round trip: two round trips' worth at ~1.6 GB/s, faster than a destination writes. */
const BULK_WINDOW_BYTES_PER_RTT_MS = 3.2 * 1024 * 1024;
/** The longest round trip, in ms, that CLIENT_FLOW_CONTROL_WINDOW_BYTES covers (5 ms; see bulkWindowBytes). */
const FAST_LINK_MAX_RTT_MS = CLIENT_FLOW_CONTROL_WINDOW_BYTES / BULK_WINDOW_BYTES_PER_RTT_MS;
/** PINGs measureLink times at most (link-probe.ts); the least counts, and it stops at the first that finds the link fast. */
const RTT_PINGS = 3;
/** Deadline of each of measureLink's calls, in ms: a source that does not answer fails the first pass instead, under its own retries. */
const LINK_PROBE_DEADLINE_MS = 5_000;

/**
 * The receive window for large files over a link of `rttMs` round trip: CLIENT_FLOW_CONTROL_WINDOW_BYTES
 * up to 5 ms, then growing with the round trip up to BULK_WINDOW_MAX_BYTES at 6.25 ms.
 *
 * A large file streams alone, its stream paused with its window buffered here while this side
 * writes; each time the writer takes a message the source may send that much more, which arrives
 * a round trip later. With 16 MiB the stream ran dry behind the benchmark's 10 ms delay proxy:
 * copies of the large tree, fresh agents, interleaved: 16 MiB 7.20-7.68 s, 24 MiB 6.53-7.23 s,
 * 32 MiB 6.56-6.95 s. On loopback the window only holds data the writer has not taken yet, and
 * 32 MiB raised the destination's peak RSS from 165-175 MB to 192-202 MB for the same time,
 * hence a window by the link rather than one for all. Behind the proxy the window is what the
 * destination holds too: on a slower machine (twenty-sixth session, `npm run ab --rtt-ms 10`,
 * large tree, six interleaved rounds) 16 MiB took 11.06 s with a destination peak of 173-181 MB,
 * 20 MiB 10.30 s and 182-199 MB, 24 MiB 10.51 s and 194-207 MB, 32 MiB 10.42 s and 209-228 MB,
 * over the 200 MB target; hence 20 MiB. The round trip is measured at the start of a task
 * (measureLink), with HTTP/2 PINGs (link-probe.ts): timed at a large file's first request,
 * mid-copy, two loopback calls took 55 ms (an event loop busy with the batches reads their
 * answers late), and loopback got the largest window.
 */
export function bulkWindowBytes(rttMs: number): number {
  const wanted = Math.ceil((rttMs * BULK_WINDOW_BYTES_PER_RTT_MS) / MiB) * MiB;
  return Math.min(BULK_WINDOW_MAX_BYTES, Math.max(CLIENT_FLOW_CONTROL_WINDOW_BYTES, wanted));
}
/** Deadline of unary calls (GetMigrationStatus), in ms. Streams have none: keepalive detects dead peers. */
export const UNARY_DEADLINE_MS = 30_000;

export interface SourcePeerOptions {
  /** Source host as in migration_map (name or IP). */
  readonly host: string;
  /** The source's peer_port. */
  readonly port: number;
  /** :authority sent on every call; default `host` (bracketed if IPv6). The source picks its instance by it. */
  readonly authority?: string;
  readonly logger?: Logger;
}

/** What a call needs of a method definition: its path and the two codecs the client uses. */
type PlaneMethod<Req, Res> = Pick<grpc.MethodDefinition<Req, Res>, "path" | "requestSerialize" | "responseDeserialize">;

const METHODS = {
  // Listing messages decode straight into entries (codec.ts).
  listFiles: { ...methodDefinition(PeerService.method.listFiles), responseDeserialize: decodeListFilesResponse },
  readFile: methodDefinition(PeerService.method.readFile),
  // And the pieces of batched small files (codec.ts).
  readFiles: { ...methodDefinition(PeerService.method.readFiles), responseDeserialize: decodeReadFilesResponse },
  // Digest results too (codec.ts).
  digestFiles: { ...methodDefinition(PeerService.method.digestFiles), responseDeserialize: decodeDigestFilesResponse },
  getMigrationStatus: methodDefinition(LiveMigrationService.method.getMigrationStatus),
};

/** The error a failed call rejects with: the caller's abort reason wins over the transport's CANCELLED. */
function callError(err: unknown, signal: AbortSignal | undefined): AgentError {
  return signal?.aborted ? abortError(signal, err) : fromClientError(err);
}

function checkSignal(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw callError(undefined, signal);
}

/**
 * Opens channels to a source's plane (connections are made lazily on the first call).
 * Every method rejects with an AgentError: Unavailable (peer down, connection reset, source
 * busy), DeadlineExceeded, Cancelled (the signal aborted), or the source's own code (NotFound
 * for a wrong role, Aborted for a file that changed, ...).
 */
export function connectSourcePeer(options: SourcePeerOptions): SourcePeer {
  const logger = (options.logger ?? silentLogger).child({ peer: `${options.host}:${options.port}` });
  const host = options.host.includes(":") && !options.host.startsWith("[") ? `[${options.host}]` : options.host;
  const target = `${host}:${options.port}`;
  const channelOptions = (windowBytes: number): grpc.ChannelOptions => ({
    "grpc-node.flow_control_window": windowBytes,
    "grpc.max_receive_message_length": PLANE_MAX_MESSAGE_BYTES,
    "grpc.max_send_message_length": PLANE_MAX_MESSAGE_BYTES,
    "grpc.keepalive_time_ms": 30_000,
    "grpc.keepalive_timeout_ms": 10_000,
    "grpc.keepalive_permit_without_calls": 1,
    "grpc.default_authority": options.authority ?? host,
  });
  const newClient = (windowBytes: number, extra: grpc.ChannelOptions = {}) =>
    new grpc.Client(target, grpc.credentials.createInsecure(), { ...channelOptions(windowBytes), ...extra });
  /** Everything but large files: status, listings, digests, and batches of small files, whose streams seldom fill a window (they are written as they come). */
  const main = newClient(CLIENT_FLOW_CONTROL_WINDOW_BYTES);
  /** Large files: `main` unless measureLink found the link slow enough for a bigger window. */
  let large = main;
  let largeWindowBytes = CLIENT_FLOW_CONTROL_WINDOW_BYTES;
  let closed = false;

  async function* serverStream<Req, Res>(
    client: grpc.Client,
    method: PlaneMethod<Req, Res>,
    request: Req,
    signal: AbortSignal | undefined,
  ): AsyncGenerator<Res> {
    checkSignal(signal);
    const call = client.makeServerStreamRequest(
      method.path,
      method.requestSerialize,
      method.responseDeserialize,
      request,
      new grpc.Metadata(),
      {},
    );
    // A status that arrives after the consumer stopped iterating must not become an unhandled 'error'.
    call.on("error", () => {});
    const onAbort = () => call.cancel();
    signal?.addEventListener("abort", onAbort, { once: true });
    let complete = false;
    try {
      for await (const message of call as AsyncIterable<Res>) yield message;
      complete = true;
    } catch (err) {
      const error = callError(err, signal);
      logger.debug({ rpc: method.path, code: error.code, msg: error.message }, "plane call failed");
      throw error;
    } finally {
      signal?.removeEventListener("abort", onAbort);
      if (!complete) call.cancel();
    }
  }

  function unary<Req, Res>(
    method: grpc.MethodDefinition<Req, Res>,
    request: Req,
    signal: AbortSignal | undefined,
    deadlineMs = UNARY_DEADLINE_MS,
  ): Promise<Res> {
    checkSignal(signal);
    return new Promise((resolve, reject) => {
      const onAbort = () => call.cancel();
      const call = main.makeUnaryRequest(
        method.path,
        method.requestSerialize,
        method.responseDeserialize,
        request,
        new grpc.Metadata(),
        { deadline: Date.now() + deadlineMs },
        (err, value) => {
          signal?.removeEventListener("abort", onAbort);
          if (err || value === undefined) reject(callError(err ?? new Error("empty response"), signal));
          else resolve(value);
        },
      );
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }

  return {
    async migrationStatus(signal?: AbortSignal): Promise<MigrationStatus> {
      return fromMigrationStatus(await unary(METHODS.getMigrationStatus, create(GetMigrationStatusRequestSchema), signal));
    },

    listFilesWithDigests(digestAlgorithm: DigestAlgorithmName, signal?: AbortSignal): AsyncIterable<FileEntry[]> {
      const request = create(PeerServiceListFilesRequestSchema, { digestAlgorithm: toDigestAlgorithm(digestAlgorithm) });
      return serverStream(main, METHODS.listFiles, request, signal);
    },

    listFiles(signal?: AbortSignal): AsyncIterable<FileEntry[]> {
      return serverStream(main, METHODS.listFiles, create(PeerServiceListFilesRequestSchema), signal);
    },

    async measureLink(signal?: AbortSignal): Promise<number> {
      // The status call opens the plane's connection meanwhile, and fails fast when the source
      // cannot be reached; on a slow link the two cost the round trips of the pings alone.
      const opened = unary(METHODS.getMigrationStatus, create(GetMigrationStatusRequestSchema), signal, LINK_PROBE_DEADLINE_MS);
      opened.catch(() => undefined);
      const rttMs = await pingRoundTripMs(target, RTT_PINGS, FAST_LINK_MAX_RTT_MS, LINK_PROBE_DEADLINE_MS, signal);
      await opened;
      const windowBytes = bulkWindowBytes(rttMs);
      logger.debug({ rttMs: +rttMs.toFixed(2), windowBytes }, "round trip to the source measured");
      if (windowBytes > CLIENT_FLOW_CONTROL_WINDOW_BYTES && large === main && !closed) {
        large = newClient(windowBytes, { "grpc.use_local_subchannel_pool": 1 });
        largeWindowBytes = windowBytes;
        logger.info({ rttMs: +rttMs.toFixed(1), windowBytes }, "large files get their own connection, its window sized by the link's round trip");
      }
      return rttMs;
    },

    get largeFileWindowBytes(): number {
      return largeWindowBytes;
    },

    async *readFile(request: ReadFileRequest, signal?: AbortSignal): AsyncGenerator<ReadFileMessage> {
      let trailerSeen = false;
      for await (const message of serverStream(large, METHODS.readFile, toReadFileRequest(request), signal)) {
        if (trailerSeen) throw new AgentError("DataLoss", `ReadFile of ${request.fileUrl} sent data after its trailer`);
        const converted = fromReadFileResponse(message);
        if ("trailer" in converted) trailerSeen = true;
        yield converted;
      }
      if (!trailerSeen) throw new AgentError("DataLoss", `ReadFile of ${request.fileUrl} ended without a trailer`);
    },

    async *readFiles(requests: readonly ReadFileRequest[], signal?: AbortSignal): AsyncGenerator<BatchReadMessage[]> {
      const request = create(ReadFilesRequestSchema, { files: requests.map(toReadFileRequest) });
      for await (const pieces of serverStream(main, METHODS.readFiles, request, signal)) {
        const group: BatchReadMessage[] = [];
        for (const piece of pieces) {
          if (piece.index < 0 || piece.index >= requests.length) {
            throw new AgentError("DataLoss", `ReadFiles sent a piece of file ${piece.index} of ${requests.length}`);
          }
          for (const message of fromReadFilesPiece(piece)) group.push(message);
        }
        yield group;
      }
    },

    async *digestFiles(
      algorithm: DigestAlgorithmName,
      fileUrls: readonly string[],
      maxConcurrency: number,
      signal?: AbortSignal,
    ): AsyncGenerator<DigestResult> {
      const request = create(DigestFilesRequestSchema, {
        algorithm: toDigestAlgorithm(algorithm),
        fileUrls: [...fileUrls],
        maxConcurrency,
      });
      for await (const results of serverStream(main, METHODS.digestFiles, request, signal)) yield* results;
    },

    close(): void {
      closed = true;
      main.close();
      if (large !== main) large.close();
    },
  };
}
