/**
 * Unit-test doubles for the data-copy task: an in-memory SourcePeer that serves a local
 * directory tree like a source agent would (listing, ReadFile with offset, expected size/mtime
 * checks and a whole-file XXH64 trailer), with fault hooks; and InstanceContext builders.
 */
import { mkdir, mkdtemp, open, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import type { InstanceConfig, SidecarClientConfig } from "../../../src/config/schema.js";
import { createHasher, hashFileRange } from "../../../src/digest/digest.js";
import { AgentError } from "../../../src/errors.js";
import { Exclusions } from "../../../src/fs/exclude.js";
import { listRoots, toFileEntry } from "../../../src/fs/list.js";
import { mtimeMsOf, setMtimeMs } from "../../../src/fs/mtime.js";
import { resolveFileUrl } from "../../../src/fs/safe-path.js";
import { SyncBudget } from "../../../src/fs/sync-budget.js";
import { migrationRoots } from "../../../src/instance/directories.js";
import type { TransferContext } from "../../../src/migration/data-copy/file-transfer.js";
import { OperationStatus } from "../../../src/migration/data-copy/operation-status.js";
import { ResumeStore } from "../../../src/migration/data-copy/resume-store.js";
import type { InstanceContext } from "../../../src/instance/registry.js";
import type { BatchReadMessage, ReadFileMessage, ReadFileRequest, SourcePeer } from "../../../src/migration/peer.js";
import { sleep } from "../../../src/migration/retry.js";
import { StatusStore } from "../../../src/migration/status-store.js";
import type { TaskDeps } from "../../../src/migration/task-deps.js";
import { TaskSlot } from "../../../src/migration/task-slot.js";
import type { FileEntry, MigrationStatus } from "../../../src/migration/types.js";
import { silentLogger } from "../../../src/log.js";

export const FAST_RETRY: SidecarClientConfig = { maxRetries: 3, retryDelayMs: 5, maxRetryDelayMs: 20 };
export const SNAPSHOTS = "glob:${DATA_FILE_DIR}/*/*/snapshots";

export async function tempDir(prefix = "lm-dc-"): Promise<string> {
  return mkdtemp(path.join(tmpdir(), prefix));
}

/** An instance config whose dirs live under `base`: data dirs data0..data<n-1>, commitlog, hints, saved_caches. */
export function instanceConfig(base: string, overrides: Partial<InstanceConfig> = {}): InstanceConfig {
  return {
    id: 1,
    host: "127.0.0.1",
    port: 1,
    jmxHost: "127.0.0.1",
    jmxPort: 1,
    storageDir: base,
    dataDirs: [path.join(base, "data0"), path.join(base, "data1")],
    stagingDir: path.join(base, "staging"),
    commitlogDir: path.join(base, "commitlog"),
    hintsDir: path.join(base, "hints"),
    savedCachesDir: path.join(base, "saved_caches"),
    cdcDir: undefined,
    localSystemDataFileDir: undefined,
    ...overrides,
  };
}

export function makeInstance(
  config: InstanceConfig,
  options: { dirsToExclude?: string[]; filesToExclude?: string[]; role?: "source" | "destination" } = {},
): InstanceContext {
  const roots = migrationRoots(config);
  return {
    config,
    roots,
    exclusions: Exclusions.compile(roots, options.filesToExclude ?? [], options.dirsToExclude ?? [SNAPSHOTS]),
    role: options.role ?? "destination",
    sourceHost: options.role === "source" ? undefined : "source.example",
    destinationHost: options.role === "source" ? "dest.example" : undefined,
    status: new StatusStore(config.stagingDir),
    slot: new TaskSlot(),
    dataCopy: undefined,
    verification: undefined,
  };
}

/** Writes files: relative path -> content (string/Buffer) or { size } (pseudo-random bytes) or null (directory). */
export type TreeSpec = Record<string, string | Buffer | { size: number; seed?: number } | null>;

export function pseudoRandom(size: number, seed = 1): Buffer {
  const b = Buffer.allocUnsafe(size);
  let x = seed * 2654435761 + 1;
  for (let i = 0; i < size; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    b[i] = x >>> 24;
  }
  return b;
}

export async function writeTree(base: string, spec: TreeSpec, mtimeMs = 1_700_000_000_123): Promise<void> {
  let t = mtimeMs;
  for (const [rel, content] of Object.entries(spec)) {
    const p = path.join(base, rel);
    if (content === null) {
      await mkdir(p, { recursive: true });
      continue;
    }
    await mkdir(path.dirname(p), { recursive: true });
    const data = typeof content === "string" || Buffer.isBuffer(content) ? content : pseudoRandom(content.size, content.seed);
    await writeFile(p, data);
    await setMtimeMs(p, (t += 7));
  }
}

export interface TreeItem {
  readonly type: "FILE" | "DIRECTORY";
  readonly size: number;
  readonly mtimeMs: number;
  readonly xxh64: string;
}

/** Every path below `base` (temp files included) with type, size, ms mtime and XXH64 of files. */
export async function snapshotTree(base: string, options: { dirMtimes?: boolean } = {}): Promise<Record<string, TreeItem>> {
  const out: Record<string, TreeItem> = {};
  const walk = async (dir: string, rel: string) => {
    let names;
    try {
      names = await readdir(dir, { withFileTypes: true });
    } catch {
      return;
    }
    for (const d of names) {
      const p = path.join(dir, d.name);
      const r = rel ? `${rel}/${d.name}` : d.name;
      const st = await stat(p, { bigint: true });
      if (d.isDirectory()) {
        out[r] = { type: "DIRECTORY", size: -1, mtimeMs: options.dirMtimes ? mtimeMsOf(st) : 0, xxh64: "" };
        await walk(p, r);
      } else {
        const h = createHasher("XXH64");
        await hashFileRange(p, [h], 0, undefined);
        out[r] = { type: "FILE", size: Number(st.size), mtimeMs: mtimeMsOf(st), xxh64: h.digest() };
      }
    }
  };
  await walk(base, "");
  return out;
}

export interface FakePeerFaults {
  /** Flip one byte of this data message (0-based) of this file, once per listed key. */
  corrupt?: { fileUrlEndsWith: string; chunk: number; times?: number };
  /** Throw this error after sending this many data messages of the matching file. */
  failAfter?: { fileUrlEndsWith: string; chunks: number; error: () => AgentError; times?: number };
  /** Wait before each data message. */
  chunkDelayMs?: number;
  /** Ignore the abort signal (to prove the destination stops anyway). */
  ignoreSignal?: boolean;
}

/** A SourcePeer backed by a local instance's directories (unit tests only). */
export class FakeSourcePeer implements SourcePeer {
  status: MigrationStatus = { state: "NOT_COMPLETED", endTime: null };
  faults: FakePeerFaults = {};
  chunkSize = 64 * 1024;
  bytesSent = 0;
  readFileCalls: ReadFileRequest[] = [];
  /** ReadFile streams open now, and the most open at once. */
  readFilesOpen = 0;
  maxReadFilesOpen = 0;
  /** Of those, the ones with more than `farBytes` still to send, and the most at once. */
  farBytes = Number.POSITIVE_INFINITY;
  readFilesFar = 0;
  maxReadFilesFar = 0;
  readFilesCalls = 0;
  /** ReadFile and ReadFiles streams open now, and the most open at once. */
  streamsOpen = 0;
  maxStreamsOpen = 0;
  /** Files per group of readFiles messages (the plane packs ~1 MiB of small files per message). */
  groupFiles = 1;
  listCalls = 0;
  closed = 0;
  /** Errors thrown by the next listFiles calls. */
  listErrors: AgentError[] = [];
  private corruptions = 0;
  private failures = 0;

  constructor(readonly source: InstanceContext) {}

  async migrationStatus(): Promise<MigrationStatus> {
    return this.status;
  }

  /** Calls of measureLink (a data-copy task measures once, before its first pass). */
  linkMeasurements = 0;
  /** Thrown by measureLink when set. */
  linkError: AgentError | undefined;
  /** A LAN's window (plane/client.ts): the cap of a large file's tail. */
  largeFileWindowBytes = 16 << 20;
  async measureLink(): Promise<number> {
    this.linkMeasurements++;
    if (this.linkError) throw this.linkError;
    return 0;
  }

  /** The real walk, in batches of 4, after the queued listErrors. */
  async *listFiles(): AsyncGenerator<FileEntry[]> {
    this.listCalls++;
    const err = this.listErrors.shift();
    if (err) throw err;
    const entries = (await listRoots(this.source.roots, this.source.exclusions)).entries.map(toFileEntry);
    for (let i = 0; i < entries.length; i += 4) yield entries.slice(i, i + 4);
  }

  /** A data copy never asks for a verification's listing. */
  async *listFilesWithDigests(): AsyncGenerator<FileEntry[]> {
    throw new AgentError("Unimplemented", "not used by the data copy");
  }

  async *readFile(request: ReadFileRequest, signal?: AbortSignal): AsyncGenerator<ReadFileMessage> {
    const leave = this.enterStream();
    this.readFilesOpen++;
    this.maxReadFilesOpen = Math.max(this.maxReadFilesOpen, this.readFilesOpen);
    let far = false;
    const toSend = (bytes: number) => {
      if (far === bytes > this.farBytes) return;
      far = !far;
      this.readFilesFar += far ? 1 : -1;
      this.maxReadFilesFar = Math.max(this.maxReadFilesFar, this.readFilesFar);
    };
    try {
      yield* this.readFileUncounted(request, signal, toSend);
    } finally {
      toSend(0);
      this.readFilesOpen--;
      leave();
    }
  }

  /** Counts one more open stream; the returned function counts it closed. */
  private enterStream(): () => void {
    this.streamsOpen++;
    this.maxStreamsOpen = Math.max(this.maxStreamsOpen, this.streamsOpen);
    return () => void this.streamsOpen--;
  }

  /** `toSend` hears the bytes left to send: at the start, and before each data message is yielded (after it). */
  private async *readFileUncounted(
    request: ReadFileRequest,
    signal?: AbortSignal,
    toSend?: (bytes: number) => void,
  ): AsyncGenerator<ReadFileMessage> {
    this.readFileCalls.push(request);
    const effectiveSignal = this.faults.ignoreSignal ? undefined : signal;
    const { absPath } = resolveFileUrl(this.source.roots, request.fileUrl);
    let st;
    try {
      st = await stat(absPath, { bigint: true });
    } catch {
      throw new AgentError("NotFound", "File not found");
    }
    const size = Number(st.size);
    const mtime = mtimeMsOf(st);
    if ((request.expectedSize >= 0 && request.expectedSize !== size) || (request.expectedLastModifiedTime >= 0 && request.expectedLastModifiedTime !== mtime)) {
      throw new AgentError("Aborted", `file changed: ${request.fileUrl}`);
    }
    const hasher = createHasher("XXH64");
    await hashFileRange(absPath, [hasher], 0, request.offset);
    const handle = await open(absPath, "r");
    try {
      let position = request.offset;
      toSend?.(size - position);
      let chunk = 0;
      while (position < size) {
        if (effectiveSignal?.aborted) throw new AgentError("Cancelled", "call cancelled");
        if (this.faults.chunkDelayMs) await sleep(this.faults.chunkDelayMs, effectiveSignal);
        const fail = this.faults.failAfter;
        if (fail && request.fileUrl.endsWith(fail.fileUrlEndsWith) && chunk === fail.chunks && this.failures < (fail.times ?? 1)) {
          this.failures++;
          throw fail.error();
        }
        const buf = Buffer.alloc(Math.min(this.chunkSize, size - position));
        const { bytesRead } = await handle.read(buf, 0, buf.length, position);
        const data = buf.subarray(0, bytesRead);
        hasher.update(data);
        const c = this.faults.corrupt;
        let out: Uint8Array = data;
        if (c && request.fileUrl.endsWith(c.fileUrlEndsWith) && chunk === c.chunk && this.corruptions < (c.times ?? 1)) {
          this.corruptions++;
          out = Buffer.from(data);
          (out as Buffer)[Math.floor(out.length / 2)]! ^= 0x01;
        }
        position += bytesRead;
        chunk++;
        this.bytesSent += bytesRead;
        toSend?.(size - position);
        yield { data: out };
      }
      yield { trailer: { xxh64: hasher.digest(), size, lastModifiedTime: mtime } };
    } finally {
      await handle.close();
    }
  }

  /**
   * ReadFiles as the plane serves it: each file's readFile messages in order; a per-file error
   * becomes that file's error message, a transport-like one (Unavailable, Cancelled) fails the stream.
   * Messages are grouped `groupFiles` files at a time, as the plane packs small files.
   */
  async *readFiles(requests: readonly ReadFileRequest[], signal?: AbortSignal): AsyncGenerator<BatchReadMessage[]> {
    this.readFilesCalls++;
    const leave = this.enterStream();
    try {
      let group: BatchReadMessage[] = [];
      for (const [index, request] of requests.entries()) {
        try {
          for await (const message of this.readFileUncounted(request, signal)) group.push({ index, ...message });
        } catch (err) {
          const error = AgentError.from(err);
          if (error.code === "Unavailable" || error.code === "Cancelled") {
            // What the stream delivered before it broke still arrives.
            if (group.length > 0) yield group;
            throw error;
          }
          group.push({ index, error });
        }
        if ((index + 1) % this.groupFiles === 0) {
          yield group;
          group = [];
        }
      }
      if (group.length > 0) yield group;
    } finally {
      leave();
    }
  }

  async *digestFiles(): AsyncGenerator<never> {
    throw new AgentError("Unimplemented", "not in the fake");
  }

  close(): void {
    this.closed++;
  }
}

/** TaskDeps for a destination instance whose source is `peer`. */
export function taskDeps(instance: InstanceContext, peer: SourcePeer, overrides: Partial<TaskDeps> = {}): TaskDeps {
  return {
    instance,
    connectSource: () => peer,
    logger: silentLogger,
    retry: FAST_RETRY,
    gatewayPort: 9043,
    maxConcurrentFileRequests: 20,
    ...overrides,
  };
}

/** A source and a destination instance under one temp dir, with the fake peer between them. */
export async function makePair(spec: TreeSpec = {}) {
  const base = await tempDir();
  const sourceConfig = instanceConfig(path.join(base, "src"));
  const destConfig = instanceConfig(path.join(base, "dst"));
  const source = makeInstance(sourceConfig, { role: "source" });
  const dest = makeInstance(destConfig);
  await writeTree(path.join(base, "src"), spec);
  await mkdir(destConfig.stagingDir, { recursive: true });
  const peer = new FakeSourcePeer(source);
  return {
    base,
    srcRoot: path.join(base, "src"),
    dstRoot: path.join(base, "dst"),
    source,
    dest,
    peer,
    cleanup: () => rm(base, { recursive: true, force: true }),
  };
}

/** A TransferContext that downloads from `pair`'s fake source into its destination. */
export function transferContext(
  pair: { readonly peer: SourcePeer; readonly dest: InstanceContext },
  options: { readonly resumeMinBytes: number; readonly signal?: AbortSignal },
): TransferContext {
  return {
    peer: pair.peer,
    signal: options.signal ?? new AbortController().signal,
    retry: FAST_RETRY,
    logger: silentLogger,
    resume: new ResumeStore(pair.dest.config.stagingDir),
    resumeMinBytes: options.resumeMinBytes,
    touchedDirs: new Set(),
    knownDirs: new Set(),
    budget: new SyncBudget(),
  };
}

/** An iteration's status as PREPARING leaves it: DOWNLOADING `toDownload` of a `totalFiles`-entry, `totalBytes` listing. */
export function downloadingStatus(totalBytes: number, totalFiles: number, toDownload: number): OperationStatus {
  const status = new OperationStatus(0);
  status.toCleaning(totalBytes, totalFiles);
  status.toPreparing();
  status.toDownloading(totalBytes, toDownload);
  return status;
}

/** Tree of the migrated dirs only (staging and the like left out). */
export async function migratedTree(root: string, options: { dirMtimes?: boolean } = {}): Promise<Record<string, TreeItem>> {
  const all: Record<string, TreeItem> = {};
  for (const dir of ["data0", "data1", "commitlog", "hints", "saved_caches"]) {
    const sub = await snapshotTree(path.join(root, dir), options);
    for (const [k, v] of Object.entries(sub)) all[`${dir}/${k}`] = v;
  }
  return all;
}

export async function readText(p: string): Promise<string> {
  return readFile(p, "utf8");
}
