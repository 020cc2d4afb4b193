/**
 * The peer plane over loopback: a real grpc-js plane server fronting a source instance
 * (127.0.0.1) and its destination (127.0.0.2) on a generated Cassandra-like tree, and the
 * plane client (plus raw grpc-js clients for health, reflection and LiveMigrationService).
 */
import { execFileSync, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import http2 from "node:http2";
import os from "node:os";
import path from "node:path";
import { create, fromBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import {
  Health,
  HealthCheckRequestSchema,
  type HealthCheckResponse,
  HealthCheckResponse_ServingStatus,
} from "../../gen/grpc/health/v1/health_pb.js";
import {
  CreateDataCopyTaskRequestSchema,
  ListFilesRequestSchema,
  LiveMigrationService,
  MarkMigrationCompletedRequestSchema,
  MigrationState,
} from "../../gen/livemigration/v1/live_migration_pb.js";
import { DigestAlgorithm } from "../../gen/livemigration/v1/common_pb.js";
import { DigestFilesRequestSchema, type DigestFilesResponse, PeerService, ReadFilesRequestSchema, type ReadFilesResponse } from "../../gen/livemigration/v1/peer_pb.js";
import type { Config, InstanceConfig } from "../../src/config/schema.js";
import { generateDataset } from "../../src/dataset/generate.js";
import { createHasher } from "../../src/digest/digest.js";
import { hashPoolThreads, INLINE_HASH_MAX_BYTES } from "../../src/digest/hash-pool.js";
import { AgentError } from "../../src/errors.js";
import { InstanceRegistry } from "../../src/instance/registry.js";
import { createRootLogger, silentLogger } from "../../src/log.js";
import { type BatchReadMessage, collectListing, type ReadFileMessage, type ReadFileTrailer, type SourcePeer } from "../../src/migration/peer.js";
import { BUSY_MESSAGE, RequestLimiter } from "../../src/migration/request-limiter.js";
import type { DigestAlgorithmName, FileEntry } from "../../src/migration/types.js";
import { BULK_WINDOW_MAX_BYTES, CLIENT_FLOW_CONTROL_WINDOW_BYTES, connectSourcePeer } from "../../src/plane/client.js";
import { methodDefinition } from "../../src/plane/definition.js";
import { PACK_BYTES, READ_CHUNK_BYTES } from "../../src/plane/peer-service.js";
import { createPlaneServer, type PlaneServer, SERVER_CONNECTION_WINDOW_BYTES } from "../../src/plane/server.js";
import { startDelayProxy } from "../bench/delay-proxy.js";
import { freePort } from "../helpers/agents.js";

const SOURCE = "127.0.0.1";
const DESTINATION = "127.0.0.2";
const FILES = "/api/v1/live-migration/files";
const MiB = 1024 * 1024;

interface Side {
  root: string;
  staging: string;
  dataDirs: string[];
  commitlog: string;
  hints: string;
  savedCaches: string;
}

function side(base: string, name: string): Side {
  const root = path.join(base, name);
  return {
    root,
    staging: path.join(base, `${name}-staging`),
    dataDirs: [path.join(root, "data0"), path.join(root, "data1")],
    commitlog: path.join(root, "commitlog"),
    hints: path.join(root, "hints"),
    savedCaches: path.join(root, "saved_caches"),
  };
}

function instanceConfig(id: number, host: string, s: Side): InstanceConfig {
  return {
    id,
    host,
    port: 9042,
    jmxHost: host,
    jmxPort: 7199,
    storageDir: s.root,
    dataDirs: s.dataDirs,
    stagingDir: s.staging,
    commitlogDir: s.commitlog,
    hintsDir: s.hints,
    savedCachesDir: s.savedCaches,
    cdcDir: undefined,
    localSystemDataFileDir: undefined,
  };
}

let base: string;
let src: Side;
let registry: InstanceRegistry;
let limiter: RequestLimiter;
let server: PlaneServer;
let port: number;
let peer: SourcePeer;
let listing: FileEntry[];
let statusHost: string | null = null;

/** Absolute source path of a file URL built by the independent walk (no percent-encoding beyond encodeURIComponent). */
function localPath(fileUrl: string): string {
  const [dirType, index, ...rest] = fileUrl.slice(FILES.length + 1).split("/");
  const rel = rest.map(decodeURIComponent).join("/");
  const root =
    dirType === "data" ? src.dataDirs[Number(index)]! : dirType === "hints" ? src.hints : dirType === "commitlog" ? src.commitlog : src.savedCaches;
  return path.join(root, rel);
}

/** An independent walk of the source roots, leaving out <data>/<ks>/<table>/snapshots subtrees. */
async function independentListing(): Promise<FileEntry[]> {
  const roots: [string, string][] = [
    ["hints/0", src.hints],
    ["commitlog/0", src.commitlog],
    ["saved_caches/0", src.savedCaches],
    ["data/0", src.dataDirs[0]!],
    ["data/1", src.dataDirs[1]!],
  ];
  const out: FileEntry[] = [];
  for (const [prefix, root] of roots) {
    const walk = async (dir: string, rel: string): Promise<void> => {
      for (const d of await readdir(dir, { withFileTypes: true })) {
        const r = rel ? `${rel}/${d.name}` : d.name;
        const abs = path.join(dir, d.name);
        const st = await stat(abs, { bigint: true });
        const isDir = d.isDirectory();
        if (isDir && prefix.startsWith("data/") && /^[^/]+\/[^/]+\/snapshots$/.test(r)) continue;
        out.push({
          fileUrl: `${FILES}/${prefix}/${r.split("/").map(encodeURIComponent).join("/")}`,
          size: isDir ? -1 : Number(st.size),
          fileType: isDir ? "DIRECTORY" : "FILE",
          lastModifiedTime: Number(st.mtimeNs / 1_000_000n),
        });
        if (isDir) await walk(abs, r);
      }
    };
    await walk(root, "");
  }
  return out;
}

const byUrl = (a: FileEntry, b: FileEntry) => (a.fileUrl < b.fileUrl ? -1 : a.fileUrl > b.fileUrl ? 1 : 0);

async function collect(stream: AsyncIterable<ReadFileMessage>): Promise<{ data: Buffer; trailer: Extract<ReadFileMessage, { trailer: unknown }>["trailer"] | undefined; chunks: number }> {
  const parts: Uint8Array[] = [];
  let trailer;
  for await (const message of stream) {
    if ("data" in message) parts.push(message.data);
    else trailer = message.trailer;
  }
  return { data: Buffer.concat(parts), trailer, chunks: parts.length };
}

async function expectAgentError(promise: Promise<unknown>, code: string, message?: string | RegExp): Promise<AgentError> {
  try {
    await promise;
  } catch (err) {
    expect(err).toBeInstanceOf(AgentError);
    const e = err as AgentError;
    expect(e.code, e.message).toBe(code);
    if (message !== undefined) expect(e.message).toMatch(message);
    return e;
  }
  throw new Error(`expected ${code}, got success`);
}

/** XXH64 of a file as `xxhsum -H64` prints it (or the project's hasher when xxhsum is missing). */
function xxh64OfFile(file: string, bytes: Buffer): string {
  const run = spawnSync("xxhsum", ["-H64", file], { encoding: "utf8" });
  if (run.status === 0) return run.stdout.split(/\s+/)[0]!;
  const h = createHasher("XXH64");
  h.update(bytes);
  return h.digest();
}

async function waitFor(predicate: () => boolean, timeoutMs: number): Promise<number> {
  const started = Date.now();
  while (!predicate()) {
    if (Date.now() - started > timeoutMs) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
  return Date.now() - started;
}

/** A tiny LiveMigrationService: enough to prove the Connect adapter and the error mapping. */
const stubService = {
  getMigrationStatus(_req, ctx) {
    statusHost = ctx.requestHeader.get("host");
    return { state: MigrationState.COMPLETED, endTime: 1_700_000_000_123n };
  },
  listFiles() {
    throw new AgentError("NotFound", "x");
  },
  markMigrationCompleted() {
    throw new ConnectError("already completed", Code.FailedPrecondition);
  },
} as Partial<ServiceImpl<typeof LiveMigrationService>> as ServiceImpl<typeof LiveMigrationService>;

function rawClient(): grpc.Client {
  return new grpc.Client(`${SOURCE}:${port}`, grpc.credentials.createInsecure(), { "grpc.default_authority": SOURCE });
}

function unaryCall<Req, Res>(client: grpc.Client, method: grpc.MethodDefinition<Req, Res>, request: Req): Promise<Res> {
  return new Promise((resolve, reject) => {
    client.makeUnaryRequest(method.path, method.requestSerialize, method.responseDeserialize, request, (err, value) =>
      err ? reject(err) : resolve(value!),
    );
  });
}

beforeAll(async () => {
  base = await mkdtemp(path.join(os.tmpdir(), "lm-plane-"));
  src = side(base, "source");
  const dst = side(base, "destination");
  await generateDataset(src.root, { profile: "tiny" });
  // Files the generator does not make: empty, a multi-MB one for cancel/offset tests, a name that needs encoding.
  await writeFile(path.join(src.commitlog, "CommitLog-7-0.log"), "");
  await writeFile(path.join(src.dataDirs[0]!, "big.bin"), randomBytes(24 * MiB));
  await writeFile(path.join(src.savedCaches, "odd name %.db"), "odd");
  await mkdir(src.staging, { recursive: true });
  await mkdir(dst.root, { recursive: true });
  await mkdir(dst.staging, { recursive: true });
  const config: Config = {
    sidecar: { host: SOURCE, port: 0, peerPort: 0 },
    instances: [instanceConfig(1, SOURCE, src), instanceConfig(2, DESTINATION, dst)],
    liveMigration: {
      migrationMap: new Map([[SOURCE, DESTINATION]]),
      filesToExclude: [],
      dirsToExclude: ["glob:${DATA_FILE_DIR}/*/*/snapshots"],
      maxConcurrentFileRequests: 8,
      preCheckCommand: undefined,
    },
    sidecarClient: { maxRetries: 0, retryDelayMs: 10, maxRetryDelayMs: 10 },
  };
  registry = new InstanceRegistry(config);
  limiter = new RequestLimiter(8);
  server = createPlaneServer({ registry, limiter, logger: silentLogger, liveMigrationService: stubService });
  port = await server.listen(SOURCE, 0);
  peer = connectSourcePeer({ host: SOURCE, port });
  listing = await collectListing(peer.listFiles());
}, 120_000);

afterAll(async () => {
  peer?.close();
  await server?.shutdown(1_000);
  if (base) await rm(base, { recursive: true, force: true });
});

/** A verification's listing (ListFiles with a digest algorithm), its batches joined. */
async function listedWithDigests(source: SourcePeer, algorithm: DigestAlgorithmName): Promise<FileEntry[]> {
  const entries: FileEntry[] = [];
  for await (const batch of source.listFilesWithDigests(algorithm)) entries.push(...batch);
  return entries;
}

describe("PeerService.ListFiles", () => {
  it("lists what an independent walk finds", async () => {
    const expected = await independentListing();
    expect(listing.length).toBeGreaterThan(100);
    expect([...listing].sort(byUrl)).toEqual(expected.sort(byUrl));
    expect(listing.some((e) => e.fileUrl === `${FILES}/saved_caches/0/odd%20name%20%25.db`)).toBe(true);
    expect(listing.some((e) => e.fileUrl.includes("/snapshots"))).toBe(false);
  });

  it("with a digest algorithm: the same listing, each file of at most 1 MiB with DigestFiles's digest, bigger ones up to the listing's budget", async () => {
    const files = listing.filter((e) => e.fileType === "FILE");
    const viaDigestFiles = new Map<string, string>();
    for await (const r of peer.digestFiles("MD5", files.map((e) => e.fileUrl), 4)) viaDigestFiles.set(r.fileUrl, r.digest!);
    // DigestFiles hashed the big files on the pool, whose thread still runs: the listing digests its own all the same.
    expect(hashPoolThreads()).toBeGreaterThan(0);
    const listed = await listedWithDigests(peer, "MD5");
    expect(listed.map(({ digest: _, ...entry }) => entry)).toEqual(listing);
    const small = files.filter((e) => e.size <= MiB);
    const mid = files.filter((e) => e.size > MiB && e.size <= INLINE_HASH_MAX_BYTES);
    expect(small.length).toBeGreaterThan(100);
    expect(mid.length).toBeGreaterThan(0); // the tree's larger Data.db files
    const digestOf = new Map(listed.map((e) => [e.fileUrl, e.digest]));
    for (const e of small) expect(digestOf.get(e.fileUrl), e.fileUrl).toBe(viaDigestFiles.get(e.fileUrl));
    // The first big file comes while the budget is unspent; later ones may come after.
    expect(digestOf.get(mid[0]!.fileUrl)).toBe(viaDigestFiles.get(mid[0]!.fileUrl));
    for (const e of mid) expect([viaDigestFiles.get(e.fileUrl), undefined], e.fileUrl).toContain(digestOf.get(e.fileUrl));
    // big.bin, over INLINE_HASH_MAX_BYTES, is left to DigestFiles.
    const big = files.filter((e) => e.size > INLINE_HASH_MAX_BYTES);
    expect(big.map((e) => e.fileUrl.split("/").at(-1))).toEqual(["big.bin"]);
    expect(digestOf.get(big[0]!.fileUrl)).toBeUndefined();
    expect(listed.filter((e) => e.fileType === "DIRECTORY").every((e) => e.digest === undefined)).toBe(true);
    const xxh32 = await listedWithDigests(peer, "XXHash32");
    const hasher = createHasher("XXHash32");
    hasher.update(await readFile(localPath(small[0]!.fileUrl)));
    expect(xxh32.find((e) => e.fileUrl === small[0]!.fileUrl)?.digest).toBe(hasher.digest());
    expect(limiter.active).toBe(0);
  });

  it("with a digest algorithm: refuses a COMPLETED instance, and answers Unavailable when no permit is free", async () => {
    const instance = await registry.resolve(SOURCE);
    await instance.status.markCompleted();
    try {
      await expectAgentError(listedWithDigests(peer, "MD5"), "FailedPrecondition", /already marked COMPLETED/);
      expect(await collectListing(peer.listFiles())).toEqual(listing); // a plain listing is still served
    } finally {
      await instance.status.clear(SOURCE);
    }
    const tight = new RequestLimiter(1);
    const busyServer = createPlaneServer({ registry, limiter: tight, logger: silentLogger, liveMigrationService: stubService });
    const busyPeer = connectSourcePeer({ host: SOURCE, port: await busyServer.listen(SOURCE, 0) });
    try {
      const release = tight.acquire();
      await expectAgentError(listedWithDigests(busyPeer, "XXHash32"), "Unavailable", BUSY_MESSAGE);
      expect(await collectListing(busyPeer.listFiles())).toEqual(listing);
      release();
      expect((await listedWithDigests(busyPeer, "XXHash32")).filter((e) => e.digest !== undefined).length).toBeGreaterThan(100);
      expect(tight.active).toBe(0);
    } finally {
      busyPeer.close();
      await busyServer.shutdown(500);
    }
  });

  it("refuses a destination instance (role guard, NOT_FOUND)", async () => {
    const wrongRole = connectSourcePeer({ host: SOURCE, port, authority: DESTINATION });
    try {
      await expectAgentError(collectListing(wrongRole.listFiles()), "NotFound", /not a source/);
      await expectAgentError(
        collect(wrongRole.readFile({ fileUrl: listing[0]!.fileUrl, offset: 0, expectedSize: -1, expectedLastModifiedTime: -1 })),
        "NotFound",
      );
    } finally {
      wrongRole.close();
    }
  });
});

describe("PeerService.ReadFile", () => {
  const bigUrl = `${FILES}/data/0/big.bin`;

  it("streams a whole file in 512 KiB chunks with a whole-file XXH64 trailer", async () => {
    const entry = listing.find((e) => e.fileUrl === bigUrl)!;
    const bytes = await readFile(localPath(bigUrl));
    const got = await collect(peer.readFile({ fileUrl: bigUrl, offset: 0, expectedSize: entry.size, expectedLastModifiedTime: entry.lastModifiedTime }));
    expect(READ_CHUNK_BYTES).toBe(512 * 1024);
    expect(got.chunks).toBe(48);
    expect(got.data.equals(bytes)).toBe(true);
    expect(got.trailer).toEqual({ xxh64: xxh64OfFile(localPath(bigUrl), bytes), size: bytes.length, lastModifiedTime: entry.lastModifiedTime });
  });

  it("streams from an offset and still hashes the whole file", async () => {
    const bytes = await readFile(localPath(bigUrl));
    const offset = Math.floor(bytes.length / 3) + 7;
    const got = await collect(peer.readFile({ fileUrl: bigUrl, offset, expectedSize: bytes.length, expectedLastModifiedTime: -1 }));
    expect(got.data.equals(bytes.subarray(offset))).toBe(true);
    expect(got.trailer?.xxh64).toBe(xxh64OfFile(localPath(bigUrl), bytes));
    const atEnd = await collect(peer.readFile({ fileUrl: bigUrl, offset: bytes.length, expectedSize: -1, expectedLastModifiedTime: -1 }));
    expect(atEnd.chunks).toBe(0);
    expect(atEnd.trailer?.size).toBe(bytes.length);
  });

  it("reads every listed file of the generated tree byte-exactly", async () => {
    const files = listing.filter((e) => e.fileType === "FILE" && e.size < 4 * MiB);
    for (const entry of files.slice(0, 60)) {
      const got = await collect(peer.readFile({ fileUrl: entry.fileUrl, offset: 0, expectedSize: entry.size, expectedLastModifiedTime: entry.lastModifiedTime }));
      const bytes = await readFile(localPath(entry.fileUrl));
      expect(got.data.equals(bytes), entry.fileUrl).toBe(true);
      const h = createHasher("XXH64");
      h.update(bytes);
      expect(got.trailer?.xxh64).toBe(h.digest());
    }
  });

  it("sends only a trailer for an empty file", async () => {
    const got = await collect(peer.readFile({ fileUrl: `${FILES}/commitlog/0/CommitLog-7-0.log`, offset: 0, expectedSize: 0, expectedLastModifiedTime: -1 }));
    expect(got.chunks).toBe(0);
    expect(got.trailer?.xxh64).toBe("ef46db3751d8e999");
    expect(got.trailer?.size).toBe(0);
  });

  it("fails with Aborted when the file no longer matches the listing", async () => {
    const entry = listing.find((e) => e.fileUrl === bigUrl)!;
    await expectAgentError(
      collect(peer.readFile({ fileUrl: bigUrl, offset: 0, expectedSize: entry.size + 1, expectedLastModifiedTime: -1 })),
      "Aborted",
      `file changed since listing: ${bigUrl}`,
    );
    const err = await expectAgentError(
      collect(peer.readFile({ fileUrl: bigUrl, offset: 0, expectedSize: -1, expectedLastModifiedTime: entry.lastModifiedTime - 1000 })),
      "Aborted",
    );
    expect(err.retryable).toBe(true);
  });

  it("fails with Aborted when the file grows while it is read", async () => {
    // Larger than everything in flight (16 MiB client window + two 16-message stream buffers), so the source is still reading.
    const file = path.join(src.dataDirs[1]!, "growing.bin");
    await writeFile(file, randomBytes(80 * MiB));
    try {
      const iterator = peer
        .readFile({ fileUrl: `${FILES}/data/1/growing.bin`, offset: 0, expectedSize: -1, expectedLastModifiedTime: -1 })
        [Symbol.asyncIterator]();
      await iterator.next();
      await writeFile(file, "more", { flag: "a" });
      await expectAgentError(
        (async () => {
          while (!(await iterator.next()).done);
        })(),
        "Aborted",
        `file changed during read: ${FILES}/data/1/growing.bin`,
      );
      await waitFor(() => limiter.active === 0, 1_000);
    } finally {
      await rm(file);
    }
  });

  it("fails with OutOfRange past the end, and with the path checker's errors", async () => {
    await expectAgentError(collect(peer.readFile({ fileUrl: bigUrl, offset: 24 * MiB + 1, expectedSize: -1, expectedLastModifiedTime: -1 })), "OutOfRange");
    await expectAgentError(collect(peer.readFile({ fileUrl: `${FILES}/data/0/missing.db`, offset: 0, expectedSize: -1, expectedLastModifiedTime: -1 })), "NotFound", "File not found");
    await expectAgentError(
      collect(peer.readFile({ fileUrl: `${FILES}/data/0/../../etc/passwd`, offset: 0, expectedSize: -1, expectedLastModifiedTime: -1 })),
      "InvalidArgument",
      /relative path/,
    );
    await expectAgentError(collect(peer.readFile({ fileUrl: `${FILES}/data/0`, offset: 0, expectedSize: -1, expectedLastModifiedTime: -1 })), "InvalidArgument", "Cannot transfer directory");
    expect(limiter.active).toBe(0);
  });

  it("releases its limiter permit within 1 s when the client cancels after the first chunk", async () => {
    const abort = new AbortController();
    const stream = peer.readFile({ fileUrl: bigUrl, offset: 0, expectedSize: -1, expectedLastModifiedTime: -1 }, abort.signal);
    const iterator = stream[Symbol.asyncIterator]();
    const first = await iterator.next();
    expect(first.done).toBe(false);
    expect(limiter.active).toBe(1);
    abort.abort();
    await expectAgentError(iterator.next(), "Cancelled");
    const ms = await waitFor(() => limiter.active === 0, 1_000);
    expect(ms).toBeLessThan(1_000);
  });

  it("releases its permit when the consumer stops iterating early", async () => {
    for await (const message of peer.readFile({ fileUrl: bigUrl, offset: 0, expectedSize: -1, expectedLastModifiedTime: -1 })) {
      expect("data" in message).toBe(true);
      break;
    }
    await waitFor(() => limiter.active === 0, 1_000);
  });

  it("measureLink: behind a 10 ms link large files get their own connection with a 20 MiB window; batches stay on the control connection", async () => {
    const lines: Record<string, unknown>[] = [];
    const sink = { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) };
    const logger = createRootLogger({ level: "debug", destination: sink });
    const sized = () => lines.filter((l) => l["msg"] === "large files get their own connection, its window sized by the link's round trip");
    const file = listing.find((e) => e.fileUrl === bigUrl)!;
    const expected = await readFile(localPath(bigUrl));
    const request = { fileUrl: bigUrl, offset: 0, expectedSize: file.size, expectedLastModifiedTime: file.lastModifiedTime };

    const proxy = await startDelayProxy({ listenHost: SOURCE, targetHost: SOURCE, targetPort: port, oneWayDelayMs: 5 });
    const far = connectSourcePeer({ host: SOURCE, port: proxy.port, logger });
    try {
      // Before the measurement everything shares the control connection.
      expect((await collect(far.readFile(request))).data.equals(expected)).toBe(true);
      expect(sized()).toEqual([]);
      expect(far.largeFileWindowBytes).toBe(CLIENT_FLOW_CONTROL_WINDOW_BYTES);
      const rttMs = await far.measureLink();
      expect(rttMs).toBeGreaterThanOrEqual(10);
      expect(sized()).toHaveLength(1);
      expect(sized()[0]).toMatchObject({ windowBytes: BULK_WINDOW_MAX_BYTES });
      expect(far.largeFileWindowBytes).toBe(BULK_WINDOW_MAX_BYTES);
      const [first, second] = await Promise.all([collect(far.readFile(request)), collect(far.readFile(request))]);
      expect(first.data.equals(expected) && second.data.equals(expected)).toBe(true);
      const small = listing.filter((e) => e.fileType === "FILE" && e.size < MiB).slice(0, 5);
      let trailers = 0;
      for await (const group of far.readFiles(small.map((e) => ({ fileUrl: e.fileUrl, offset: 0, expectedSize: e.size, expectedLastModifiedTime: e.lastModifiedTime })))) {
        trailers += group.filter((m) => "trailer" in m).length;
      }
      expect(trailers).toBe(small.length);
      // Measured again (a new task would): no second connection.
      await far.measureLink();
      expect(sized()).toHaveLength(1);
    } finally {
      far.close();
      await proxy.close();
    }
  });

  it("measureLink on loopback: a fast link, with no second connection, and an error (not a hang) when the source is gone", async () => {
    const lines: Record<string, unknown>[] = [];
    const sink = { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) };
    const near = connectSourcePeer({ host: SOURCE, port, logger: createRootLogger({ level: "debug", destination: sink }) });
    try {
      // A fresh client's first calls run cold code; PINGs time the link itself (link-probe.ts).
      const rttMs = await near.measureLink();
      expect(rttMs).toBeGreaterThan(0);
      expect(rttMs).toBeLessThan(5);
      expect(near.largeFileWindowBytes).toBe(CLIENT_FLOW_CONTROL_WINDOW_BYTES);
      expect(lines.filter((l) => l["msg"] === "round trip to the source measured")).toHaveLength(1);
      expect(lines.filter((l) => String(l["msg"]).startsWith("large files get their own connection"))).toEqual([]);
    } finally {
      near.close();
    }
    const gone = connectSourcePeer({ host: SOURCE, port: await freePort() });
    try {
      await expectAgentError(gone.measureLink(), "Unavailable");
    } finally {
      gone.close();
    }
  });
});

describe("PeerService.ReadFiles", () => {
  /** Every message of a ReadFiles stream, grouped per request index in arrival order. */
  async function collectBatch(stream: AsyncIterable<readonly BatchReadMessage[]>) {
    const order: number[] = [];
    const files = new Map<number, { data: Buffer[]; trailer?: ReadFileTrailer; error?: AgentError }>();
    for await (const group of stream) for (const message of group) {
      if (order.at(-1) !== message.index) order.push(message.index);
      const file = files.get(message.index) ?? { data: [] };
      files.set(message.index, file);
      if ("data" in message) file.data.push(Buffer.from(message.data));
      else if ("trailer" in message) file.trailer = message.trailer;
      else file.error = message.error;
    }
    return { order, files };
  }

  it("sends many files in request order, each byte-exact with its XXH64 trailer, large ones in chunks", async () => {
    const chosen = [...listing.filter((e) => e.fileType === "FILE" && e.size < MiB).slice(0, 40), listing.find((e) => e.fileUrl === `${FILES}/data/0/big.bin`)!];
    const requests = chosen.map((e) => ({ fileUrl: e.fileUrl, offset: 0, expectedSize: e.size, expectedLastModifiedTime: e.lastModifiedTime }));
    const { order, files } = await collectBatch(peer.readFiles(requests));
    expect(order).toEqual(chosen.map((_, i) => i));
    for (const [i, entry] of chosen.entries()) {
      const bytes = await readFile(localPath(entry.fileUrl));
      const got = files.get(i)!;
      expect(got.error).toBeUndefined();
      expect(Buffer.concat(got.data).equals(bytes), entry.fileUrl).toBe(true);
      expect(got.trailer).toEqual({ xxh64: xxh64OfFile(localPath(entry.fileUrl), bytes), size: bytes.length, lastModifiedTime: entry.lastModifiedTime });
    }
    expect(files.get(chosen.length - 1)!.data.length).toBe((24 * MiB) / READ_CHUNK_BYTES);
    await waitFor(() => limiter.active === 0, 1_000);
  });

  it("fails a missing or changed file alone and goes on with the rest", async () => {
    const good = listing.filter((e) => e.fileType === "FILE" && e.size > 0 && e.size < MiB).slice(0, 2);
    const requests = [
      { fileUrl: good[0]!.fileUrl, offset: 0, expectedSize: good[0]!.size, expectedLastModifiedTime: good[0]!.lastModifiedTime },
      { fileUrl: `${FILES}/data/0/missing.db`, offset: 0, expectedSize: 10, expectedLastModifiedTime: -1 },
      { fileUrl: good[1]!.fileUrl, offset: 0, expectedSize: good[1]!.size + 1, expectedLastModifiedTime: -1 },
      { fileUrl: `${FILES}/data/0/../../etc/passwd`, offset: 0, expectedSize: -1, expectedLastModifiedTime: -1 },
      { fileUrl: good[1]!.fileUrl, offset: 0, expectedSize: good[1]!.size, expectedLastModifiedTime: good[1]!.lastModifiedTime },
    ];
    const { order, files } = await collectBatch(peer.readFiles(requests));
    expect(order).toEqual([0, 1, 2, 3, 4]);
    expect(files.get(0)!.trailer?.size).toBe(good[0]!.size);
    expect([files.get(1)!.error?.code, files.get(1)!.error?.message]).toEqual(["NotFound", "File not found"]);
    expect([files.get(2)!.error?.code, files.get(2)!.error?.message]).toEqual(["Aborted", `file changed since listing: ${good[1]!.fileUrl}`]);
    expect(files.get(3)!.error?.code).toBe("InvalidArgument");
    expect(Buffer.concat(files.get(4)!.data).equals(await readFile(localPath(good[1]!.fileUrl)))).toBe(true);
  });

  it("holds one limiter permit for the whole stream and releases it when the client stops early", async () => {
    const requests = listing
      .filter((e) => e.fileType === "FILE")
      .map((e) => ({ fileUrl: e.fileUrl, offset: 0, expectedSize: e.size, expectedLastModifiedTime: e.lastModifiedTime }));
    const iterator = peer.readFiles(requests)[Symbol.asyncIterator]();
    expect((await iterator.next()).done).toBe(false);
    expect(limiter.active).toBe(1);
    await iterator.return?.();
    await waitFor(() => limiter.active === 0, 1_000);
  });

  it("packs small files into messages of about PACK_BYTES (256 KiB), one piece per small file", async () => {
    const small = listing.filter((e) => e.fileType === "FILE" && e.size > 0 && e.size < 64 * 1024);
    expect(small.length).toBeGreaterThan(50);
    const client = rawClient();
    try {
      const method = methodDefinition(PeerService.method.readFiles);
      const request = create(ReadFilesRequestSchema, {
        files: small.map((e) => ({ fileUrl: e.fileUrl, offset: 0n, expectedSize: BigInt(e.size), expectedLastModifiedTime: BigInt(e.lastModifiedTime) })),
      });
      const responses: ReadFilesResponse[] = [];
      await new Promise<void>((resolve, reject) => {
        const call = client.makeServerStreamRequest(method.path, method.requestSerialize, method.responseDeserialize, request);
        call.on("data", (r: ReadFilesResponse) => responses.push(r));
        call.on("error", reject);
        call.on("end", resolve);
      });
      const pieces = responses.flatMap((r) => r.pieces);
      expect(pieces.map((p) => p.index)).toEqual(small.map((_, i) => i));
      expect(pieces.every((p) => p.trailer !== undefined && p.data.byteLength === small[p.index]!.size)).toBe(true);
      expect(responses.length).toBeLessThan(small.length / 4);
      const packed = responses.map((r) => r.pieces.reduce((n, p) => n + p.data.byteLength, 0));
      // Each message stops at the first file that takes it to PACK_BYTES (these files are < 64 KiB).
      for (const bytes of packed) expect(bytes).toBeLessThan(PACK_BYTES + 64 * 1024);
      expect(packed.filter((bytes) => bytes >= PACK_BYTES).length).toBeGreaterThan(0);
    } finally {
      client.close();
    }
  });

  it("refuses more than 4096 files with InvalidArgument", async () => {
    const requests = Array.from({ length: 4097 }, () => ({ fileUrl: `${FILES}/data/0/big.bin`, offset: 0, expectedSize: -1, expectedLastModifiedTime: -1 }));
    await expectAgentError(collectBatch(peer.readFiles(requests)), "InvalidArgument", "at most 4096 files per ReadFiles request, got 4097");
  });
});

describe("PeerService.DigestFiles", () => {
  it("digests many files over one stream; MD5 equals openssl, XXHash32 equals xxh32sum", async () => {
    const files = listing.filter((e) => e.fileType === "FILE");
    const urls = files.map((e) => e.fileUrl);
    const md5 = new Map<string, string>();
    for await (const r of peer.digestFiles("MD5", urls, 4)) {
      expect(r.error, r.fileUrl).toBeUndefined();
      md5.set(r.fileUrl, r.digest!);
    }
    expect(md5.size).toBe(urls.length);
    // One shell for all files: openssl md5 -binary | base64 per file.
    const script = 'for f in "$@"; do openssl md5 -binary "$f" | base64; done';
    const expected = execFileSync("bash", ["-c", script, "_", ...urls.map(localPath)], { encoding: "utf8", maxBuffer: 64 * MiB }).trim().split("\n");
    urls.forEach((u, i) => expect(md5.get(u), u).toBe(expected[i]));

    const xx32 = new Map<string, string>();
    for await (const r of peer.digestFiles("XXHash32", urls.slice(0, 50), 8)) xx32.set(r.fileUrl, r.digest!);
    const run = spawnSync("xxh32sum", urls.slice(0, 50).map(localPath), { encoding: "utf8", maxBuffer: 64 * MiB });
    for (const [i, u] of urls.slice(0, 50).entries()) {
      if (run.status === 0) {
        const line = run.stdout.trim().split("\n")[i]!;
        expect(xx32.get(u), u).toBe(parseInt(line.split(/\s+/)[0]!, 16).toString(16));
      } else {
        const h = createHasher("XXHash32");
        h.update(await readFile(localPath(u)));
        expect(xx32.get(u)).toBe(h.digest());
      }
    }
    expect(limiter.active).toBe(0);
  });

  it("packs the results that are ready together into one message, each file exactly once", async () => {
    const urls = listing.filter((e) => e.fileType === "FILE").map((e) => e.fileUrl);
    expect(urls.length).toBeGreaterThan(50);
    const client = rawClient();
    try {
      const method = methodDefinition(PeerService.method.digestFiles);
      const request = create(DigestFilesRequestSchema, { algorithm: DigestAlgorithm.XXHASH32, fileUrls: urls, maxConcurrency: 4 });
      const responses: DigestFilesResponse[] = [];
      await new Promise<void>((resolve, reject) => {
        const call = client.makeServerStreamRequest(method.path, method.requestSerialize, method.responseDeserialize, request);
        call.on("data", (r: DigestFilesResponse) => responses.push(r));
        call.on("error", reject);
        call.on("end", resolve);
      });
      const digests = responses.flatMap((r) => r.digests);
      expect(digests.map((d) => d.fileUrl).sort()).toEqual([...urls].sort());
      expect(digests.every((d) => d.errorCode === 0 && /^[0-9a-f]{1,8}$/.test(d.digest))).toBe(true);
      expect(responses.length).toBeLessThan(urls.length / 4);
    } finally {
      client.close();
    }
  });

  it("reports per-file failures without failing the stream", async () => {
    const good = `${FILES}/data/0/big.bin`;
    const results = new Map<string, { digest?: string; error?: AgentError }>();
    const urls = [`${FILES}/data/0/nope.db`, `${FILES}/data/0/../x`, `${FILES}/cdc_raw/0/a`, good];
    for await (const r of peer.digestFiles("XXH64", urls, 2)) results.set(r.fileUrl, r);
    expect(results.size).toBe(4);
    expect(results.get(urls[0]!)?.error?.code).toBe("NotFound");
    expect(results.get(urls[1]!)?.error?.code).toBe("InvalidArgument");
    expect(results.get(urls[2]!)?.error?.code).toBe("NotFound");
    expect(results.get(good)?.digest).toBe(xxh64OfFile(localPath(good), await readFile(localPath(good))));
  });

  it("stops promptly and releases permits when the client cancels", async () => {
    const urls = listing.filter((e) => e.fileType === "FILE").map((e) => e.fileUrl);
    const abort = new AbortController();
    let seen = 0;
    await expectAgentError(
      (async () => {
        for await (const _ of peer.digestFiles("MD5", urls, 4, abort.signal)) if (++seen === 3) abort.abort();
      })(),
      "Cancelled",
    );
    await waitFor(() => limiter.active === 0, 1_000);
  });
});

describe("limiter, health, reflection and LiveMigrationService on the plane", () => {
  it("answers Unavailable with the busy message when the limiter is full", async () => {
    const tight = new RequestLimiter(1);
    const busyServer = createPlaneServer({ registry, limiter: tight, logger: silentLogger, liveMigrationService: stubService, digestPermitWaitMs: 200 });
    const busyPort = await busyServer.listen(SOURCE, 0);
    const busyPeer = connectSourcePeer({ host: SOURCE, port: busyPort });
    try {
      const release = tight.acquire();
      const url = `${FILES}/data/0/big.bin`;
      const err = await expectAgentError(collect(busyPeer.readFile({ fileUrl: url, offset: 0, expectedSize: -1, expectedLastModifiedTime: -1 })), "Unavailable", BUSY_MESSAGE);
      expect(err.retryable).toBe(true);
      const started = Date.now();
      const busy = [];
      for await (const r of busyPeer.digestFiles("MD5", [url], 1)) busy.push(r);
      expect(Date.now() - started).toBeGreaterThanOrEqual(150);
      expect(busy[0]?.error?.code).toBe("Unavailable");
      expect(busy[0]?.error?.message).toBe(BUSY_MESSAGE);
      release();
      // With the permit back, a multi-file digest shares the single permit file by file.
      const urls = listing.filter((e) => e.fileType === "FILE").slice(0, 10).map((e) => e.fileUrl);
      const results = [];
      for await (const r of busyPeer.digestFiles("MD5", urls, 4)) results.push(r);
      expect(results.filter((r) => r.digest !== undefined)).toHaveLength(10);
    } finally {
      busyPeer.close();
      await busyServer.shutdown(500);
    }
  });

  it("opens a 1 MiB connection window to each client, so that several ReadFiles requests of ~50 KB go out at once", async () => {
    const session = http2.connect(`http://${SOURCE}:${port}`);
    try {
      await new Promise<void>((resolve, reject) => session.once("remoteSettings", () => resolve()).once("error", reject));
      // Node's default is 65,535 bytes; the server's WINDOW_UPDATE follows its SETTINGS.
      await vi.waitFor(() => expect(session.state.remoteWindowSize).toBe(SERVER_CONNECTION_WINDOW_BYTES));
    } finally {
      session.close();
    }
  });

  it("reports SERVING through grpc.health.v1.Health", async () => {
    const client = rawClient();
    try {
      const check = methodDefinition(Health.method.check);
      for (const service of ["", "livemigration.v1.PeerService", "livemigration.v1.LiveMigrationService"]) {
        const res: HealthCheckResponse = await unaryCall(client, check, create(HealthCheckRequestSchema, { service }));
        expect(res.status, service).toBe(HealthCheckResponse_ServingStatus.SERVING);
      }
    } finally {
      client.close();
    }
  });

  it("serves reflection v1 and v1alpha from the generated descriptors", async () => {
    type Reply = {
      list_services_response?: { service: { name: string }[] };
      file_descriptor_response?: { file_descriptor_proto: Buffer[] };
      error_response?: { error_code: number; error_message: string };
    };
    for (const version of ["v1", "v1alpha"] as const) {
      const protoFile = path.resolve(`node_modules/@grpc/reflection/build/proto/grpc/reflection/${version}/reflection.proto`);
      const definition = protoLoader.loadSync(protoFile, { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true });
      const pkg = grpc.loadPackageDefinition(definition) as unknown as {
        grpc: { reflection: Record<string, { ServerReflection: new (address: string, creds: grpc.ChannelCredentials) => grpc.Client }> };
      };
      const Ctor = pkg.grpc.reflection[version]!.ServerReflection;
      const client = new Ctor(`${SOURCE}:${port}`, grpc.credentials.createInsecure()) as grpc.Client & {
        ServerReflectionInfo(): grpc.ClientDuplexStream<object, Reply>;
      };
      try {
        const ask = (request: object) =>
          new Promise<Reply>((resolve, reject) => {
            const call = client.ServerReflectionInfo();
            call.once("data", (reply: Reply) => {
              resolve(reply);
              call.end();
            });
            call.once("error", reject);
            call.write(request);
          });
        const listed = await ask({ list_services: "*" });
        const names = listed.list_services_response!.service.map((s) => s.name);
        expect(names).toEqual(expect.arrayContaining(["livemigration.v1.LiveMigrationService", "livemigration.v1.PeerService", "grpc.health.v1.Health"]));
        const file = await ask({ file_containing_symbol: "livemigration.v1.PeerService" });
        const protos = file.file_descriptor_response!.file_descriptor_proto.map((b) => fromBinary(FileDescriptorProtoSchema, b));
        const peerProto = protos.find((p) => p.name === "livemigration/v1/peer.proto");
        expect(peerProto?.service.map((s) => s.name)).toEqual(["PeerService"]);
        expect(peerProto?.service[0]?.method.map((m) => m.name)).toEqual(["ListFiles", "ReadFile", "ReadFiles", "DigestFiles"]);
        expect(protos.map((p) => p.name)).toContain("livemigration/v1/common.proto");
      } finally {
        client.close();
      }
    }
  });

  it("serves LiveMigrationService through the Connect adapter, with :authority as host and mapped errors", async () => {
    expect(await peer.migrationStatus()).toEqual({ state: "COMPLETED", endTime: 1_700_000_000_123 });
    expect(statusHost).toBe(SOURCE);
    const client = rawClient();
    try {
      const codeOf = (p: Promise<unknown>) =>
        p.then(
          () => ({ code: -1, details: "ok" }),
          (e: grpc.ServiceError) => ({ code: e.code, details: e.details }),
        );
      expect(await codeOf(unaryCall(client, methodDefinition(LiveMigrationService.method.listFiles), create(ListFilesRequestSchema)))).toEqual({
        code: grpc.status.NOT_FOUND,
        details: "x",
      });
      expect(
        await codeOf(unaryCall(client, methodDefinition(LiveMigrationService.method.markMigrationCompleted), create(MarkMigrationCompletedRequestSchema))),
      ).toEqual({ code: grpc.status.FAILED_PRECONDITION, details: "already completed" });
      expect(
        (await codeOf(unaryCall(client, methodDefinition(LiveMigrationService.method.createDataCopyTask), create(CreateDataCopyTaskRequestSchema)))).code,
      ).toBe(grpc.status.UNIMPLEMENTED);
    } finally {
      client.close();
    }
  });

  it("reports NOT_SERVING after setServing(false) and shuts down within its grace", async () => {
    const other = createPlaneServer({ registry, limiter: new RequestLimiter(2), logger: silentLogger, liveMigrationService: stubService });
    const otherPort = await other.listen(SOURCE, 0);
    const client = new grpc.Client(`${SOURCE}:${otherPort}`, grpc.credentials.createInsecure());
    try {
      other.setServing(false);
      const res: HealthCheckResponse = await unaryCall(client, methodDefinition(Health.method.check), create(HealthCheckRequestSchema, { service: "" }));
      expect(res.status).toBe(HealthCheckResponse_ServingStatus.NOT_SERVING);
      // A stream left open by a stalled consumer is cut after the grace period.
      const stalled = connectSourcePeer({ host: SOURCE, port: otherPort });
      const iterator = stalled.readFile({ fileUrl: `${FILES}/data/0/big.bin`, offset: 0, expectedSize: -1, expectedLastModifiedTime: -1 })[Symbol.asyncIterator]();
      await iterator.next();
      const started = Date.now();
      await other.shutdown(300);
      expect(Date.now() - started).toBeLessThan(2_000);
      stalled.close();
    } finally {
      client.close();
      await other.shutdown(100);
    }
  });
});
