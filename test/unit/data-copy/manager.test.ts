import { copyFile, mkdir, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:net";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { AgentError } from "../../../src/errors.js";
import { mtimeMsOf, setMtimeMs } from "../../../src/fs/mtime.js";
import { isTempName } from "../../../src/fs/temp-name.js";
import { isCassandraRunning } from "../../../src/migration/data-copy/cassandra-probe.js";
import {
  CASSANDRA_RUNNING_MESSAGE,
  CONFLICT_MESSAGE,
  DataCopyManager,
  type DataCopyManagerOptions,
} from "../../../src/migration/data-copy/manager.js";
import { TASKS_DIR_NAME } from "../../../src/migration/data-copy/task-store.js";
import type { CreateDataCopyRequest, DataCopyTaskView } from "../../../src/migration/task-api.js";
import type { MigrationTask } from "../../../src/migration/task-slot.js";
import type { FileEntry } from "../../../src/migration/types.js";
import { makeInstance, makePair, migratedTree, taskDeps, writeTree, type TreeSpec } from "./fakes.js";

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const NOT_RUNNING = async () => false;

/** A Cassandra-like tree: two data dirs, commitlog, hints, saved_caches, snapshots, empty files and dirs. */
const TREE: TreeSpec = {
  "data0/ks1/t1-abc/nb-1-big-Data.db": { size: 700_000, seed: 1 },
  "data0/ks1/t1-abc/nb-1-big-Index.db": { size: 20_000, seed: 2 },
  "data0/ks1/t1-abc/nb-1-big-TOC.txt": "Data.db\nIndex.db\n",
  "data0/ks1/t1-abc/nb-1-big-Digest.crc32": "",
  "data0/ks1/t1-abc/snapshots/snap1/nb-1-big-Data.db": "snapshot copy",
  "data0/ks1/t2-def/": null,
  "data0/snapshots/top-level-kept": "x",
  "data1/ks1/t1-abc/nb-2-big-Data.db": { size: 300_000, seed: 3 },
  "data1/ks2/t3-ghi/nb-3-big-Data.db": { size: 5_000, seed: 4 },
  "commitlog/CommitLog-7-1.log": { size: 100_000, seed: 5 },
  "hints/": null,
  "saved_caches/KeyCache-e.db": { size: 1000, seed: 6 },
};

async function setup(spec: TreeSpec = TREE, options: DataCopyManagerOptions = {}) {
  const pair = await makePair(spec);
  cleanups.push(pair.cleanup);
  const manager = new DataCopyManager(taskDeps(pair.dest, pair.peer), { probe: NOT_RUNNING, resumeMinBytes: 0, ...options });
  cleanups.push(() => manager.close());
  return { ...pair, manager };
}

const REQ: CreateDataCopyRequest = { maxIterations: 3, successThreshold: 1, maxConcurrency: 4 };

async function runToEnd(manager: DataCopyManager, slotOwner: { slot: { current(): MigrationTask | undefined } }, request = REQ) {
  const { taskId } = await manager.create(request);
  await slotOwner.slot.current()!.settled;
  return manager.get(taskId);
}

function states(view: DataCopyTaskView): string[] {
  return view.status.map((s) => s.state);
}

/** The source tree without snapshots below table dirs (the default exclusion). */
function withoutTableSnapshots<T>(tree: Record<string, T>): Record<string, T> {
  return Object.fromEntries(Object.entries(tree).filter(([k]) => !/^data\d\/[^/]+\/[^/]+\/snapshots(\/|$)/.test(k)));
}

async function allNames(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) out.push(e.name);
  return out;
}

describe("data-copy task end to end (fake peer)", () => {
  it("copies the tree exactly (bytes, sizes, ms mtimes, directories and their mtimes), snapshots excluded", async () => {
    const s = await setup();
    const view = await runToEnd(s.manager, s.dest);
    expect(states(view)).toEqual(["DOWNLOAD_COMPLETE", "SUCCESS"]);
    const [first, second] = view.status;
    expect(first).toMatchObject({ downloadFailures: 0, bytesToDownload: first!.totalSize, bytesDownloaded: first!.totalSize });
    expect(first!.filesDownloaded).toBe(first!.filesToDownload);
    expect(first!.totalFiles).toBe(first!.filesToDownload);
    expect(second).toMatchObject({ state: "SUCCESS", bytesToDownload: -1, filesToDownload: -1, filesDownloaded: 0 });
    const src = withoutTableSnapshots(await migratedTree(s.srcRoot, { dirMtimes: true }));
    const dst = await migratedTree(s.dstRoot, { dirMtimes: true });
    expect(dst).toEqual(src);
    expect(Object.keys(dst)).toContain("data0/snapshots/top-level-kept");
    expect(s.peer.closed).toBe(1);
    // The link is measured once per task, before its first pass.
    expect(s.peer.linkMeasurements).toBe(1);
    expect(view).toMatchObject({ source: "source.example", port: 9043, maxIterations: 3, successThreshold: 1, maxConcurrency: 4 });
  });

  it("converges after the source changes between tasks (added, removed, same size new mtime, type swap, stale temp)", async () => {
    const s = await setup();
    await runToEnd(s.manager, s.dest);
    await rm(path.join(s.srcRoot, "data1/ks2"), { recursive: true });
    await rm(path.join(s.srcRoot, "data0/ks1/t1-abc/nb-1-big-Index.db"));
    await writeTree(s.srcRoot, { "data0/ks1/t1-abc/nb-4-big-Data.db": { size: 50_000, seed: 9 } }, 1_700_000_100_000);
    // Same size, new content and mtime.
    await writeTree(s.srcRoot, { "commitlog/CommitLog-7-1.log": { size: 100_000, seed: 55 } }, 1_700_000_200_000);
    // Type swap: a file becomes a directory at the source, and a directory becomes a file.
    await rm(path.join(s.srcRoot, "saved_caches/KeyCache-e.db"));
    await writeTree(s.srcRoot, { "saved_caches/KeyCache-e.db/inner": "now a dir" });
    await rm(path.join(s.srcRoot, "data0/ks1/t2-def"), { recursive: true });
    await writeTree(s.srcRoot, { "data0/ks1/t2-def": "now a file" });
    // A stale temp file on the destination.
    await writeFile(path.join(s.dstRoot, "data0/ks1/t1-abc/.lm-sidecar.gone-Data.db.partial"), "junk");
    const view = await runToEnd(s.manager, s.dest);
    expect(states(view)).toEqual(["DOWNLOAD_COMPLETE", "SUCCESS"]);
    expect(await migratedTree(s.dstRoot)).toEqual(withoutTableSnapshots(await migratedTree(s.srcRoot)));
    expect((await allNames(s.dstRoot)).filter(isTempName)).toEqual([]);
  });

  it("threshold: two 64-byte files, one present: SUCCESS without download at 0.49, download at 1.0", async () => {
    const spec: TreeSpec = { "data0/ks/t/a": "a".repeat(64), "data0/ks/t/b": "b".repeat(64) };
    const s = await setup(spec);
    await mkdir(path.join(s.dstRoot, "data0/ks/t"), { recursive: true });
    for (const f of ["ks", "ks/t"]) await mkdir(path.join(s.dstRoot, "data0", f), { recursive: true });
    await copyFile(path.join(s.srcRoot, "data0/ks/t/a"), path.join(s.dstRoot, "data0/ks/t/a"));
    const st = await stat(path.join(s.srcRoot, "data0/ks/t/a"), { bigint: true });
    await setMtimeMs(path.join(s.dstRoot, "data0/ks/t/a"), mtimeMsOf(st));
    const skipped = await runToEnd(s.manager, s.dest, { maxIterations: 2, successThreshold: 0.49, maxConcurrency: 1 });
    expect(states(skipped)).toEqual(["SUCCESS"]);
    expect(skipped.status[0]).toMatchObject({ totalSize: 128, bytesToDownload: -1 });
    await expect(stat(path.join(s.dstRoot, "data0/ks/t/b"))).rejects.toThrow();
    const copied = await runToEnd(s.manager, s.dest, { maxIterations: 2, successThreshold: 1.0, maxConcurrency: 1 });
    expect(states(copied)).toEqual(["DOWNLOAD_COMPLETE", "SUCCESS"]);
    expect(copied.status[0]).toMatchObject({ bytesToDownload: 64, filesToDownload: 1, bytesDownloaded: 64 });
    expect(s.peer.readFileCalls.map((c) => c.fileUrl.split("/").pop())).toEqual(["b"]);
  });

  it("fails with Retries exhausted when files are still missing after maxIterations, waiting between failed iterations", async () => {
    const s = await setup();
    s.peer.faults = { corrupt: { fileUrlEndsWith: "nb-2-big-Data.db", chunk: 0, times: 1_000 } };
    const view = await runToEnd(s.manager, s.dest, { maxIterations: 2, successThreshold: 1, maxConcurrency: 2 });
    expect(states(view)).toEqual(["FAILED", "FAILED", "FAILED"]);
    expect(view.status[0]!.failureReason).toMatch(/^1 of \d+ entries failed to download; first: .*nb-2-big-Data\.db: XXH64 mismatch/);
    expect(view.status[0]!.downloadFailures).toBe(1);
    expect(view.status[2]!.failureReason).toBe("Retries exhausted: 1 entry (300000 bytes) still missing after 2 download passes");
    expect(view.status[2]).toMatchObject({ bytesToDownload: -1, filesToDownload: -1 });
  });

  it("stops the download phase early when the source keeps failing, instead of retrying every file", async () => {
    const s = await setup();
    s.peer.faults = {
      failAfter: { fileUrlEndsWith: "nb-1-big-Data.db", chunks: 0, error: () => new AgentError("Unavailable", "source down"), times: 1_000 },
    };
    const view = await runToEnd(s.manager, s.dest, { maxIterations: 1, successThreshold: 1, maxConcurrency: 1 });
    expect(view.status[0]!.failureReason).toMatch(
      /^1 of \d+ entries failed to download \(the phase stopped early: the source keeps failing\); first: .*nb-1-big-Data\.db: source down$/,
    );
    // The largest file goes first; nothing else was tried after its retries ran out.
    expect(new Set(s.peer.readFileCalls.map((c) => c.fileUrl)).size).toBe(1);
    expect(view.status[0]).toMatchObject({ downloadFailures: 1 });
  });

  it("fails an iteration when the source is COMPLETED, and copies nothing", async () => {
    const s = await setup();
    s.peer.status = { state: "COMPLETED", endTime: 1 };
    const view = await runToEnd(s.manager, s.dest, { maxIterations: 1, successThreshold: 1, maxConcurrency: 1 });
    expect(states(view)).toEqual(["FAILED", "FAILED"]);
    expect(view.status[0]!.failureReason).toBe("Live migration has completed at source.");
    // The listing starts with the status request (one round trip less per pass) and is dropped.
    expect([s.peer.readFileCalls, s.peer.readFilesCalls]).toEqual([[], 0]);
    expect(await migratedTree(s.dstRoot)).toEqual({});
  });

  it("a link measurement that fails does not fail the task: its passes copy as usual", async () => {
    const s = await setup();
    s.peer.linkError = new AgentError("DeadlineExceeded", "deadline exceeded");
    const view = await runToEnd(s.manager, s.dest);
    expect(states(view)).toEqual(["DOWNLOAD_COMPLETE", "SUCCESS"]);
    expect(s.peer.linkMeasurements).toBe(1);
    expect(await migratedTree(s.dstRoot)).toEqual(withoutTableSnapshots(await migratedTree(s.srcRoot)));
  });

  it("retries a transient listing failure", async () => {
    const s = await setup();
    s.peer.listErrors = [new AgentError("Unavailable", "connection refused")];
    const view = await runToEnd(s.manager, s.dest);
    expect(states(view)).toEqual(["DOWNLOAD_COMPLETE", "SUCCESS"]);
  });

  it("fails when the source has more data dirs than the destination", async () => {
    const s = await setup();
    const oneDataDir = makeInstance({ ...s.dest.config, dataDirs: [s.dest.config.dataDirs[0]!] });
    const manager = new DataCopyManager(taskDeps(oneDataDir, s.peer), { probe: NOT_RUNNING });
    const view = await runToEnd(manager, oneDataDir, { maxIterations: 1, successThreshold: 1, maxConcurrency: 1 });
    expect(view.status[0]!.state).toBe("FAILED");
    expect(view.status[0]!.failureReason).toMatch(/Cannot map source file .*\/data\/1\/.* is unknown\./);
  });

  it("runs the pre-check hook and command before every iteration", async () => {
    const checked: number[] = [];
    const s = await setup(TREE, {
      preCheck: { check: async (c) => void checked.push(c.iteration) },
      preCheckCommand: 'test "$LM_ITERATION" = 0 || { echo "iteration $LM_ITERATION refused" >&2; exit 3; }',
    });
    const view = await runToEnd(s.manager, s.dest);
    expect(checked).toEqual([0, 1, 2, 3]);
    expect(states(view)).toEqual(["DOWNLOAD_COMPLETE", "FAILED", "FAILED", "FAILED"]);
    expect(view.status[1]!.failureReason).toBe("Pre-check command exited with code 3: iteration 1 refused");
  });

  it("a failing PreCheck fails the iteration with its message", async () => {
    const s = await setup(TREE, {
      preCheck: {
        check: async () => {
          throw new Error("destination already joined the ring");
        },
      },
    });
    const view = await runToEnd(s.manager, s.dest, { maxIterations: 1, successThreshold: 1, maxConcurrency: 1 });
    expect(view.status[0]!.failureReason).toBe("Pre-check failed: destination already joined the ring");
    expect(s.peer.listCalls).toBe(0);
  });

  it("a file vanishing at the source after the listing does not fail the iteration", async () => {
    const s = await setup();
    const victim = path.join(s.srcRoot, "data1/ks2/t3-ghi/nb-3-big-Data.db");
    const list = s.peer.listFiles.bind(s.peer);
    let first = true;
    s.peer.listFiles = async function* (): AsyncGenerator<FileEntry[]> {
      yield* list();
      if (first) await rm(victim);
      first = false;
    };
    const view = await runToEnd(s.manager, s.dest);
    expect(states(view)).toEqual(["DOWNLOAD_COMPLETE", "SUCCESS"]);
    expect(view.status[0]!.downloadFailures).toBe(0);
    expect(view.status[0]!.filesDownloaded).toBe(view.status[0]!.filesToDownload - 1);
    expect(await migratedTree(s.dstRoot)).toEqual(withoutTableSnapshots(await migratedTree(s.srcRoot)));
  });
});

describe("cancel, shutdown and resume", () => {
  it("cancel mid-copy: CANCELLED at once, writers stop within a second, no partial file under a real name", async () => {
    const s = await setup();
    s.peer.faults = { chunkDelayMs: 30 };
    const { taskId } = await s.manager.create(REQ);
    await waitFor(() => s.peer.bytesSent > 100_000);
    const t0 = Date.now();
    const view = await s.manager.cancel(taskId);
    expect(view.status.at(-1)!.state).toBe("CANCELLED");
    await s.dest.slot.current()!.settled;
    expect(Date.now() - t0).toBeLessThan(1000);
    const src = await migratedTree(s.srcRoot);
    const dst = await migratedTree(s.dstRoot);
    for (const [rel, item] of Object.entries(dst)) {
      if (item.type === "FILE" && !isTempName(path.basename(rel))) expect(item).toEqual(src[rel]);
    }
    // PATCH again, and GET: unchanged.
    const again = await s.manager.cancel(taskId);
    expect(again).toEqual(s.manager.get(taskId));
    expect(again.status.at(-1)!.state).toBe("CANCELLED");
  });

  it("a new task resumes the partial files of a cancelled one and moves fewer bytes", async () => {
    const s = await setup();
    s.peer.faults = { chunkDelayMs: 10 };
    const { taskId } = await s.manager.create(REQ);
    await waitFor(() => s.peer.bytesSent > 400_000);
    await s.manager.cancel(taskId);
    await s.dest.slot.current()!.settled;
    const sentBefore = s.peer.bytesSent;
    s.peer.faults = {};
    const view = await runToEnd(s.manager, s.dest);
    expect(states(view)).toEqual(["DOWNLOAD_COMPLETE", "SUCCESS"]);
    const totalSize = view.status[0]!.totalSize;
    expect(view.status[0]!.bytesTransferred).toBeLessThan(totalSize);
    expect(s.peer.bytesSent - sentBefore).toBe(view.status[0]!.bytesTransferred);
    expect(s.peer.readFileCalls.some((c) => c.offset > 0)).toBe(true);
    expect(await migratedTree(s.dstRoot)).toEqual(withoutTableSnapshots(await migratedTree(s.srcRoot)));
  });

  it("PATCH on a finished task returns it unchanged", async () => {
    const s = await setup();
    const done = await runToEnd(s.manager, s.dest);
    expect(await s.manager.cancel(done.taskId)).toEqual(done);
  });

  it("close() interrupts a running task: FAILED with a reason, writers stopped", async () => {
    const s = await setup();
    s.peer.faults = { chunkDelayMs: 30 };
    const { taskId } = await s.manager.create(REQ);
    await waitFor(() => s.peer.bytesSent > 0);
    await s.manager.close();
    const last = s.manager.get(taskId).status.at(-1)!;
    expect(last).toMatchObject({ state: "FAILED", failureReason: "interrupted: agent stopped during iteration 0" });
    await expect(s.manager.create(REQ)).rejects.toMatchObject({ code: "Unavailable" });
  });

  it("persists the task; after a restart the last task shows, and an interrupted one shows FAILED", async () => {
    const s = await setup();
    s.peer.faults = { chunkDelayMs: 20 };
    const { taskId } = await s.manager.create(REQ);
    const file = path.join(s.dest.config.stagingDir, TASKS_DIR_NAME, `data-copy-${taskId}.json`);
    // Snapshot the persisted state while DOWNLOADING, as a kill -9 would leave it.
    await waitFor(async () => (await readFile(file, "utf8").catch(() => "")).includes('"DOWNLOADING"'));
    const crashedStaging = path.join(s.base, "crashed-staging");
    await mkdir(path.join(crashedStaging, TASKS_DIR_NAME), { recursive: true });
    await copyFile(file, path.join(crashedStaging, TASKS_DIR_NAME, path.basename(file)));
    await s.manager.cancel(taskId);
    await s.dest.slot.current()!.settled;

    // Restart on the crashed state.
    const restarted = makeInstance({ ...s.dest.config, stagingDir: crashedStaging });
    const manager2 = await DataCopyManager.restore(taskDeps(restarted, s.peer), { probe: NOT_RUNNING });
    const [view] = manager2.list();
    expect(view!.taskId).toBe(taskId);
    expect(view!.status.at(-1)).toMatchObject({ iteration: 0, state: "FAILED", failureReason: "interrupted: agent restarted during iteration 0" });
    expect(await manager2.cancel(taskId)).toEqual(view);
    // Written back: a second restart shows the same.
    const again = await DataCopyManager.restore(taskDeps(makeInstance(restarted.config), s.peer), { probe: NOT_RUNNING });
    expect(again.list()).toEqual([view]);

    // Restart on the cancelled (finished) state.
    const manager3 = await DataCopyManager.restore(taskDeps(makeInstance(s.dest.config), s.peer), { probe: NOT_RUNNING });
    expect(manager3.list()[0]!.status.at(-1)!.state).toBe("CANCELLED");

    // A new task replaces the old record.
    s.peer.faults = {};
    const fresh = makeInstance(s.dest.config);
    const manager4 = await DataCopyManager.restore(taskDeps(fresh, s.peer), { probe: NOT_RUNNING });
    const next = await runToEnd(manager4, fresh);
    expect(await readdir(path.join(s.dest.config.stagingDir, TASKS_DIR_NAME))).toEqual([`data-copy-${next.taskId}.json`]);
  });
});

describe("creation rules (§1.3)", () => {
  const table: [Partial<CreateDataCopyRequest>, string][] = [
    [{ maxIterations: 0 }, "Invalid maxIterations 0. It cannot be less than or equal to zero."],
    [{ maxIterations: -1 }, "Invalid maxIterations -1. It cannot be less than or equal to zero."],
    [{ successThreshold: -0.1 }, "Invalid successThreshold -0.1. It cannot be less than zero or greater than one."],
    [{ successThreshold: 1.5 }, "Invalid successThreshold 1.5. It cannot be less than zero or greater than one."],
    [{ successThreshold: 2 }, "Invalid successThreshold 2.0. It cannot be less than zero or greater than one."],
    [{ maxConcurrency: 0 }, "Invalid maxConcurrency 0. It cannot be less than or equal to zero."],
    [{ maxConcurrency: -3 }, "Invalid maxConcurrency -3. It cannot be less than or equal to zero."],
    [{ maxConcurrency: 21 }, "max concurrency can not be more than 20"],
    // Value checks come before the cap.
    [{ maxIterations: 0, maxConcurrency: 21 }, "Invalid maxIterations 0. It cannot be less than or equal to zero."],
  ];
  for (const [patch, message] of table) {
    it(`${JSON.stringify(patch)} -> 400 ${message}`, async () => {
      const s = await setup({});
      await expect(s.manager.create({ ...REQ, ...patch })).rejects.toMatchObject({ code: "InvalidArgument", message });
      expect(s.dest.slot.current()).toBeUndefined();
    });
  }

  it("accepts the boundaries (1, 0.0, 1) and (N, 1.0, cap)", async () => {
    const s = await setup({});
    await runToEnd(s.manager, s.dest, { maxIterations: 1, successThreshold: 0, maxConcurrency: 1 });
    await runToEnd(s.manager, s.dest, { maxIterations: 1000, successThreshold: 1, maxConcurrency: 20 });
  });

  it("refuses while Cassandra runs, with the documented message", async () => {
    const s = await setup({}, { probe: async () => true });
    await expect(s.manager.create(REQ)).rejects.toMatchObject({ code: "InvalidArgument", message: CASSANDRA_RUNNING_MESSAGE });
  });

  it("one task per instance: 409 while one runs, a new one after it finished", async () => {
    const s = await setup();
    s.peer.faults = { chunkDelayMs: 20 };
    const { taskId } = await s.manager.create(REQ);
    const racers = await Promise.allSettled(Array.from({ length: 10 }, () => s.manager.create(REQ)));
    for (const r of racers) {
      expect(r.status).toBe("rejected");
      expect((r as PromiseRejectedResult).reason).toMatchObject({ code: "AlreadyExists", message: CONFLICT_MESSAGE });
    }
    await s.manager.cancel(taskId);
    s.peer.faults = {};
    const { taskId: second } = await s.manager.create(REQ);
    expect(second).not.toBe(taskId);
    expect(s.manager.list().map((v) => v.taskId)).toEqual([second]);
  });

  it("NotFound for unknown ids and for a verification task's id", async () => {
    const s = await setup({});
    expect(s.manager.list()).toEqual([]);
    expect(() => s.manager.get("nope")).toThrow("No task found with given id nope");
    await expect(s.manager.cancel("nope")).rejects.toMatchObject({ code: "NotFound", message: "No task found with given id nope" });
    s.dest.slot.restore({ id: "v-1", kind: "files-verification", finished: true, settled: Promise.resolve() });
    expect(() => s.manager.get("v-1")).toThrow("Task v-1 is not a data copy task");
    await expect(s.manager.cancel("v-1")).rejects.toThrow("Task v-1 is not a data copy task");
    expect(s.manager.list()).toEqual([]);
  });
});

describe("isCassandraRunning", () => {
  async function listen(): Promise<{ server: Server; port: number }> {
    const server = createServer((sock) => sock.destroy());
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    cleanups.push(() => new Promise((r) => server.close(() => r())));
    return { server, port: (server.address() as { port: number }).port };
  }
  async function freePort(): Promise<number> {
    const server = createServer();
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const port = (server.address() as { port: number }).port;
    await new Promise((r) => server.close(r));
    return port;
  }
  const config = (port: number, jmxPort: number) => ({ config: { host: "127.0.0.1", port, jmxHost: "127.0.0.1", jmxPort } as never });

  it("is false when nothing listens, true with a native listener, true with a JMX listener", async () => {
    const [a, b] = [await freePort(), await freePort()];
    expect(await isCassandraRunning(config(a, b))).toBe(false);
    const native = await listen();
    expect(await isCassandraRunning(config(native.port, b))).toBe(true);
    const jmx = await listen();
    expect(await isCassandraRunning(config(a, jmx.port))).toBe(true);
  });

});

async function waitFor(cond: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error("timed out waiting");
    await new Promise((r) => setTimeout(r, 5));
  }
}
