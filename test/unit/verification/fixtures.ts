/**
 * Unit-test fixtures for files verification: two instance trees in a temp dir and a fake
 * SourcePeer that serves the source tree with the real listing and digest code, plus hooks
 * for faults (per-file errors, broken streams, failing listings) and slow digests.
 */
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { Writable } from "node:stream";
import { pino } from "pino";
import type { InstanceConfig } from "../../../src/config/schema.js";
import { digestFile } from "../../../src/digest/digest.js";
import { AgentError } from "../../../src/errors.js";
import { Exclusions } from "../../../src/fs/exclude.js";
import { listRoots, walkRoots, toFileEntry } from "../../../src/fs/list.js";
import { setMtimeMs } from "../../../src/fs/mtime.js";
import { migrationRoots } from "../../../src/instance/directories.js";
import type { InstanceContext } from "../../../src/instance/registry.js";
import type { Logger } from "../../../src/log.js";
import type { DigestResult, ReadFileMessage, SourcePeer } from "../../../src/migration/peer.js";
import { sleep } from "../../../src/migration/retry.js";
import { StatusStore } from "../../../src/migration/status-store.js";
import type { TaskDeps } from "../../../src/migration/task-deps.js";
import { TaskSlot } from "../../../src/migration/task-slot.js";
import type { DigestAlgorithmName, FileEntry, MigrationStatus } from "../../../src/migration/types.js";

export const SOURCE_HOST = "10.0.0.1";
export const DEST_HOST = "10.0.0.2";
/** The mtime every fixture file gets unless a test changes it. */
export const MTIME_MS = 1_700_000_000_123;

/** relPath (under the side's root dir, e.g. "data0/ks/t/a.db") → content, or null for a directory. */
export type Tree = Record<string, string | Buffer | null>;

/** A small Cassandra-like tree: two data dirs, a commitlog, an empty hints dir. 5 files (1 empty), 4 dirs. */
export const SAMPLE_TREE: Tree = {
  "data0/ks1": null,
  "data0/ks1/tbl-1": null,
  "data0/ks1/tbl-1/nb-1-big-Data.db": "x".repeat(300_000),
  "data0/ks1/tbl-1/nb-1-big-Index.db": "index bytes",
  "data0/ks1/tbl-1/nb-1-big-Filter.db": "",
  "data1/ks2": null,
  "data1/ks2/tbl-2": null,
  "data1/ks2/tbl-2/nb-2-big-Data.db": Buffer.from(Array.from({ length: 4096 }, (_, i) => i % 251)),
  "commitlog/CommitLog-7-1.log": "commitlog segment",
};
export const SAMPLE_FILES = 5;
export const SAMPLE_DIRS = 4;

export interface Side {
  readonly root: string;
  readonly instance: InstanceContext;
  /** Absolute path of a tree relPath. */
  abs(relPath: string): string;
  /** fileUrl of a tree relPath ("data1/ks2/x" → /api/v1/live-migration/files/data/1/ks2/x). */
  url(relPath: string): string;
}

function instanceConfig(id: number, host: string, root: string, stagingDir: string): InstanceConfig {
  return {
    id,
    host,
    port: 9042,
    jmxHost: host,
    jmxPort: 7199,
    storageDir: undefined,
    dataDirs: [path.join(root, "data0"), path.join(root, "data1")],
    stagingDir,
    commitlogDir: path.join(root, "commitlog"),
    hintsDir: path.join(root, "hints"),
    savedCachesDir: undefined,
    cdcDir: undefined,
    localSystemDataFileDir: undefined,
  };
}

export function makeSide(base: string, name: string, host: string, sourceHost: string | undefined): Side {
  const root = path.join(base, name);
  const config = instanceConfig(sourceHost ? 2 : 1, host, root, path.join(base, `${name}-staging`));
  const roots = migrationRoots(config);
  const instance: InstanceContext = {
    config,
    roots,
    exclusions: Exclusions.compile(roots, [], ["glob:${DATA_FILE_DIR}/*/*/snapshots"]),
    role: sourceHost ? "destination" : "source",
    sourceHost,
    destinationHost: sourceHost ? undefined : DEST_HOST,
    status: new StatusStore(config.stagingDir),
    slot: new TaskSlot(),
    dataCopy: undefined,
    verification: undefined,
  };
  const url = (relPath: string) => {
    const [top, ...rest] = relPath.split("/");
    const m = /^data(\d+)$/.exec(top!);
    const prefix = m ? `data/${m[1]}` : `${top}/0`;
    return `/api/v1/live-migration/files/${prefix}/${rest.join("/")}`;
  };
  return { root, instance, abs: (p) => path.join(root, p), url };
}

/** Writes a tree under `root`; every file gets MTIME_MS. The root dirs of the layout always exist. */
export async function writeTree(root: string, tree: Tree): Promise<void> {
  for (const dir of ["data0", "data1", "commitlog", "hints"]) await mkdir(path.join(root, dir), { recursive: true });
  for (const [relPath, content] of Object.entries(tree)) {
    const abs = path.join(root, relPath);
    if (content === null) {
      await mkdir(abs, { recursive: true });
    } else {
      await mkdir(path.dirname(abs), { recursive: true });
      await writeFile(abs, content);
      await setMtimeMs(abs, MTIME_MS);
    }
  }
}

export interface Env {
  readonly base: string;
  readonly source: Side;
  readonly destination: Side;
  readonly peer: FakeSourcePeer;
  readonly logs: LogSink;
  readonly deps: TaskDeps;
  cleanup(): Promise<void>;
}

/** Source and destination trees (the destination a copy of the source unless given), a fake peer and deps. */
export async function makeEnv(options: { source?: Tree; destination?: Tree; maxRetries?: number } = {}): Promise<Env> {
  const base = await mkdtemp(path.join(os.tmpdir(), "lm-verify-"));
  const source = makeSide(base, "source", SOURCE_HOST, undefined);
  const destination = makeSide(base, "destination", DEST_HOST, SOURCE_HOST);
  await writeTree(source.root, options.source ?? SAMPLE_TREE);
  await writeTree(destination.root, options.destination ?? options.source ?? SAMPLE_TREE);
  const peer = new FakeSourcePeer(source.instance);
  const logs = new LogSink();
  const deps: TaskDeps = {
    instance: destination.instance,
    connectSource: () => peer.connect(),
    logger: logs.logger,
    retry: { maxRetries: options.maxRetries ?? 3, retryDelayMs: 5, maxRetryDelayMs: 20 },
    gatewayPort: 9043,
    maxConcurrentFileRequests: 20,
  };
  return { base, source, destination, peer, logs, deps, cleanup: () => rm(base, { recursive: true, force: true }) };
}

/** A pino logger whose JSON lines are kept for assertions. */
export class LogSink {
  readonly lines: Record<string, any>[] = [];
  readonly logger: Logger;

  constructor() {
    const lines = this.lines;
    const stream = new Writable({
      write(chunk: Buffer, _enc, callback) {
        for (const line of chunk.toString().split("\n")) if (line.trim() !== "") lines.push(JSON.parse(line));
        callback();
      },
    });
    this.logger = pino({ level: "debug" }, stream);
  }

  /** Lines at ERROR (pino level 50). */
  errors(): Record<string, any>[] {
    return this.lines.filter((l) => l["level"] === 50);
  }
}

/** One DigestFiles call the fake received. */
export interface DigestCall {
  readonly algorithm: DigestAlgorithmName;
  readonly fileUrls: readonly string[];
  readonly maxConcurrency: number;
}

/**
 * A SourcePeer over a local source instance. listFiles and digestFiles use the real listing and
 * digest code; the stream honours maxConcurrency and the abort signal like the plane does.
 */
export class FakeSourcePeer implements SourcePeer {
  readonly digestCalls: DigestCall[] = [];
  /** fileUrl → errors to answer on its next requests, one per request, before the real digest. */
  readonly fileFaults = new Map<string, AgentError[]>();
  /** Errors the next listFiles calls reject with, in order. */
  readonly listFaults: AgentError[] = [];
  /** Break the Nth (0-based) DigestFiles call with this error after `afterResults` results. */
  streamFault: { call: number; afterResults: number; error: AgentError } | undefined;
  /** listFilesWithDigests digests the small files as the real source does. */
  listedDigests = false;
  /** The next listFilesWithDigests breaks with this error after `afterBatches` batches. */
  listBreak: { afterBatches: number; error: AgentError } | undefined;
  /** Time listFilesWithDigests takes before each batch (ms). */
  listBatchDelayMs = 0;
  /** listFilesWithDigests calls that saw their signal abort. */
  listsAborted = 0;
  /** Extra time each file's digest takes at the "source". */
  digestDelayMs = 0;
  listCalls = 0;
  connects = 0;
  closes = 0;
  inFlight = 0;
  maxInFlight = 0;
  /** Epoch ms at which each file digest started, in order. */
  readonly digestStarts: number[] = [];

  constructor(private readonly instance: InstanceContext) {}

  async *readFiles(): AsyncGenerator<never[]> {
    throw new AgentError("Unimplemented", "not in the fake");
  }

  connect(): SourcePeer {
    this.connects++;
    return this;
  }

  async migrationStatus(): Promise<MigrationStatus> {
    return { state: "NOT_COMPLETED", endTime: null };
  }

  readonly largeFileWindowBytes = 16 << 20;

  /** A verification reads no large file over its own connection: never called. */
  async measureLink(): Promise<number> {
    throw new AgentError("Unimplemented", "not used by a verification");
  }

  async *listFiles(signal?: AbortSignal): AsyncGenerator<FileEntry[]> {
    this.listCalls++;
    if (signal?.aborted) throw new AgentError("Cancelled", "aborted");
    const fault = this.listFaults.shift();
    if (fault) throw fault;
    yield (await listRoots(this.instance.roots, this.instance.exclusions)).entries.map(toFileEntry);
  }

  /**
   * The real walk in batches of 4, after the same faults as listFiles. Without `listedDigests`
   * the entries carry no digest (as from a source that digests none as it lists), so that every
   * file goes through digestFiles.
   */
  async *listFilesWithDigests(digestAlgorithm: DigestAlgorithmName, signal?: AbortSignal): AsyncIterable<FileEntry[]> {
    this.listCalls++;
    if (signal?.aborted) throw new AgentError("Cancelled", "aborted");
    const fault = this.listFaults.shift();
    if (fault) throw fault;
    const options = this.listedDigests ? { digestAlgorithm } : {};
    const broken = this.listBreak;
    this.listBreak = undefined;
    let batches = 0;
    for await (const batch of walkRoots(this.instance.roots, this.instance.exclusions, 4, options)) {
      if (this.listBatchDelayMs > 0) await new Promise((r) => setTimeout(r, this.listBatchDelayMs));
      if (signal?.aborted) {
        this.listsAborted++;
        throw new AgentError("Cancelled", "aborted");
      }
      if (broken && batches++ === broken.afterBatches) throw broken.error;
      yield batch.map((entry) => ({ ...toFileEntry(entry), ...(entry.digest !== undefined ? { digest: entry.digest } : {}) }));
    }
  }

  async *readFile(): AsyncIterable<ReadFileMessage> {
    throw new AgentError("Unimplemented", "not used by verification");
  }

  async *digestFiles(
    algorithm: DigestAlgorithmName,
    fileUrls: readonly string[],
    maxConcurrency: number,
    signal?: AbortSignal,
  ): AsyncIterable<DigestResult> {
    const callIndex = this.digestCalls.length;
    this.digestCalls.push({ algorithm, fileUrls: [...fileUrls], maxConcurrency });
    const listing = await listRoots(this.instance.roots, this.instance.exclusions);
    const pathOf = new Map(listing.entries.map((e) => [e.fileUrl, e.absPath]));
    const queue = [...fileUrls];
    const done: DigestResult[] = [];
    let running = 0;
    let wake: (() => void) | undefined;
    const onAbort = () => wake?.();
    signal?.addEventListener("abort", onAbort);
    const launch = () => {
      while (running < maxConcurrency && queue.length > 0 && !signal?.aborted) {
        const fileUrl = queue.shift()!;
        running++;
        void this.digestOne(algorithm, fileUrl, pathOf.get(fileUrl), signal).then((result) => {
          running--;
          done.push(result);
          launch();
          wake?.();
        });
      }
    };
    try {
      launch();
      let sent = 0;
      while (running > 0 || done.length > 0) {
        if (signal?.aborted) throw new AgentError("Cancelled", "stream cancelled");
        if (done.length === 0) {
          await new Promise<void>((r) => (wake = r));
          wake = undefined;
          continue;
        }
        const fault = this.streamFault;
        if (fault && fault.call === callIndex && sent === fault.afterResults) throw fault.error;
        sent++;
        yield done.shift()!;
      }
    } finally {
      signal?.removeEventListener("abort", onAbort);
    }
  }

  private async digestOne(algorithm: DigestAlgorithmName, fileUrl: string, absPath: string | undefined, signal?: AbortSignal): Promise<DigestResult> {
    this.digestStarts.push(Date.now());
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    try {
      if (this.digestDelayMs > 0) await sleep(this.digestDelayMs, signal);
      const fault = this.fileFaults.get(fileUrl)?.shift();
      if (fault) return { fileUrl, error: fault };
      if (absPath === undefined) return { fileUrl, error: new AgentError("NotFound", "File not found") };
      return { fileUrl, digest: await digestFile(absPath, algorithm, { signal }) };
    } catch (err) {
      return { fileUrl, error: AgentError.from(err) };
    } finally {
      this.inFlight--;
    }
  }

  close(): void {
    this.closes++;
  }
}

/** Polls `check` every 5 ms until it returns true or `timeoutMs` passes. */
export async function waitFor(check: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error("waitFor timed out");
    await new Promise((r) => setTimeout(r, 5));
  }
}
