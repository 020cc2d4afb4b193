/**
 * Data copy between two real agents (source 127.0.0.1, destination 127.0.0.2) over the REST
 * API and the gRPC plane, on a generated Cassandra-like tree (two data dirs, commitlog, hints,
 * saved_caches, snapshot hard links). A TCP proxy sits between the destination's plane client
 * and the source's plane where a test needs to slow, corrupt or cut the stream.
 */
import { appendFile, mkdir, readdir, readFile, stat, writeFile } from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { generateDataset, removeSstableSet, writeSstableSet } from "../../src/dataset/generate.js";
import { mtimeMsOf, setMtimeMs } from "../../src/fs/mtime.js";
import { isTempName } from "../../src/fs/temp-name.js";
import {
  DEST_HOST,
  freePort,
  lastState,
  pollUntil,
  SOURCE_HOST,
  startPair,
  TERMINAL_DATA_COPY_STATES,
  type Pair,
  type PairOptions,
  type SideLayout,
} from "../helpers/agents.js";
import { expectSameTree } from "../helpers/tree.js";
import { TcpProxy, type ProxyOptions } from "./data-copy.proxy.js";

const TASKS = "/api/v1/live-migration/data-copy-tasks";
const CASSANDRA_RUNNING =
  "Cannot start data copy: Cassandra is currently running on this instance (JMX or native connectivity established). Data copy cannot proceed while Cassandra is active.";

let pair: Pair | undefined;
let proxy: TcpProxy | undefined;
const listeners: net.Server[] = [];
afterEach(async () => {
  await proxy?.close();
  proxy = undefined;
  for (const l of listeners.splice(0)) await new Promise((r) => l.close(r));
  await pair?.stop();
  pair = undefined;
});

/** `<data>/<ks>/<table>/snapshots` subtrees: excluded by the default dirs_to_exclude. */
const tableSnapshots = (rel: string, isDir: boolean) => isDir && /^data\d+\/[^/]+\/[^/]+\/snapshots$/.test(rel);

const tiny = (layout: SideLayout) => generateDataset(layout.root, { profile: "tiny" }).then(() => undefined);

/** The tiny dataset plus one 24 MiB commitlog segment (large enough to keep a resume record). */
async function tinyWithBigFile(layout: SideLayout): Promise<void> {
  await tiny(layout);
  const big = path.join(layout.commitlogDir, "CommitLog-7-99.log");
  const piece = Buffer.alloc(1 << 20);
  for (let i = 0; i < 24; i++) {
    for (let j = 0; j < piece.length; j += 4) piece.writeUInt32LE((i * 2654435761 + j * 40503) >>> 0, j);
    await appendFile(big, piece);
  }
  await setMtimeMs(big, 1_700_000_500_321);
}

/**
 * A pair whose destination reaches the source's plane through a TcpProxy: the source serves
 * its plane on another port, the proxy listens where the destination dials (source host, the
 * destination's own peer port).
 */
async function startProxiedPair(options: PairOptions & { proxy?: Partial<ProxyOptions> } = {}) {
  const sourcePeerPort = await freePort([SOURCE_HOST]);
  pair = await startPair({ ...options, source: { ...options.source, peerPort: sourcePeerPort } });
  proxy = new TcpProxy({
    listenHost: SOURCE_HOST,
    listenPort: pair.peerPort,
    targetHost: SOURCE_HOST,
    targetPort: sourcePeerPort,
    ...options.proxy,
  });
  await proxy.start();
  return { pair, proxy };
}

async function create(p: Pair, body: unknown): Promise<string> {
  const res = await p.destination.request("POST", TASKS, { body });
  expect(res.status, res.text).toBe(202);
  expect(res.json.statusUrl).toBe(`${TASKS}/${res.json.taskId}`);
  return res.json.taskId as string;
}

/**
 * True once the task is over. A FAILED entry below maxIterations is followed by another
 * iteration (after a backoff) unless the task was interrupted, so it does not end the task.
 */
function finished(t: { maxIterations: number; status: { iteration: number; state: string; failureReason?: string }[] }): boolean {
  const last = t.status.at(-1);
  if (!last || !TERMINAL_DATA_COPY_STATES.includes(last.state)) return false;
  if (last.state !== "FAILED") return true;
  return last.iteration >= t.maxIterations || (last.failureReason ?? "").startsWith("interrupted:");
}

function untilFinished(p: Pair, taskId: string, timeoutMs = 60_000) {
  return pollUntil(p.destination, `${TASKS}/${taskId}`, finished, timeoutMs);
}

async function copy(p: Pair, body: unknown = { maxIterations: 3, successThreshold: 1, maxConcurrency: 4 }) {
  return untilFinished(p, await create(p, body));
}

function states(task: { status: { state: string }[] }): string[] {
  return task.status.map((s) => s.state);
}

/** Download temp files and staging directories (fs/temp-name.ts) below `root`. */
async function tempsUnder(root: string): Promise<string[]> {
  const found: string[] = [];
  for (const e of await readdir(root, { withFileTypes: true, recursive: true })) {
    if (isTempName(e.name)) found.push(path.join(e.parentPath, e.name));
  }
  return found;
}

/** The download temp file below `root` whose name ends with `suffix`, once it holds data; throws after `timeoutMs`. */
async function partialWithData(root: string, suffix: string, timeoutMs: number): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const found = (await tempsUnder(root)).find((p) => p.endsWith(suffix));
    if (found && (await stat(found).catch(() => undefined))?.size) return found;
    if (Date.now() > deadline) throw new Error(`no temp file *${suffix} with data below ${root} after ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

describe("data copy between two agents", () => {
  it("copies the tree exactly (content, size, ms mtime, directories), snapshots left out", async () => {
    pair = await startPair({ populate: tiny });
    const task = await copy(pair);
    expect(states(task)).toEqual(["DOWNLOAD_COMPLETE", "SUCCESS"]);
    const [first, second] = task.status;
    expect(first).toMatchObject({ downloadFailures: 0, bytesToDownload: first.totalSize, bytesDownloaded: first.totalSize });
    expect(first.filesDownloaded).toBe(first.filesToDownload);
    expect(first.bytesTransferred).toBe(first.totalSize);
    expect(second).toMatchObject({ bytesToDownload: -1, filesToDownload: -1, etaSeconds: 0 });
    expect(task).toMatchObject({ source: SOURCE_HOST, port: pair.gatewayPort, maxIterations: 3, successThreshold: 1, maxConcurrency: 4 });
    await expectSameTree(pair.sourceLayout.root, pair.destLayout.root, { exclude: tableSnapshots });
    const snapshotDirs = (await readdir(pair.destLayout.root, { recursive: true })).filter((p) => /\/snapshots$/.test(p));
    expect(snapshotDirs).toEqual([]);
    expect(await tempsUnder(pair.destLayout.root)).toEqual([]);
    const listed = await pair.destination.request("GET", TASKS);
    expect(listed.json).toEqual([task]);
  });

  it("converges after the source changes between tasks", async () => {
    pair = await startPair({ populate: tiny });
    await copy(pair);
    const data0 = pair.sourceLayout.dataDirs[0]!;
    const tables: string[] = [];
    for (const ks of await readdir(data0)) {
      for (const t of await readdir(path.join(data0, ks)).catch(() => [])) tables.push(path.join(data0, ks, t));
    }
    const table = tables.find((t) => !t.includes("system"))!;
    const gens = (await readdir(table)).filter((n) => n.endsWith("-Data.db")).map((n) => Number(/nb-(\d+)-big/.exec(n)![1]));
    await removeSstableSet(table, gens[0]!);
    await writeSstableSet(table, 9_001, 300_000);
    // Same size, new bytes and a new mtime.
    const segment = path.join(pair.sourceLayout.commitlogDir, (await readdir(pair.sourceLayout.commitlogDir))[0]!);
    const before = await stat(segment, { bigint: true });
    await writeFile(segment, Buffer.alloc(Number(before.size), 0x5a));
    await setMtimeMs(segment, mtimeMsOf(before) + 5_000);
    const task = await copy(pair);
    expect(states(task)).toEqual(["DOWNLOAD_COMPLETE", "SUCCESS"]);
    // Only what changed moved: the new set and the rewritten segment.
    expect(task.status[0].bytesTransferred).toBeLessThan(task.status[0].totalSize / 2);
    await expectSameTree(pair.sourceLayout.root, pair.destLayout.root, { exclude: tableSnapshots });
  });

  it("threshold: two 64-byte files, one present: SUCCESS without download at 0.49, downloads at 1.0", async () => {
    pair = await startPair({
      populate: async (layout) => {
        for (const [name, fill] of [["a", 0x61], ["b", 0x62]] as const) {
          const file = path.join(layout.dataDirs[0]!, "ks/t-1", name);
          await mkdir(path.dirname(file), { recursive: true });
          await writeFile(file, Buffer.alloc(64, fill));
          await setMtimeMs(file, 1_700_000_000_999);
        }
      },
    });
    const present = path.join(pair.destLayout.dataDirs[0]!, "ks/t-1/a");
    await mkdir(path.dirname(present), { recursive: true });
    await writeFile(present, Buffer.alloc(64, 0x61));
    await setMtimeMs(present, 1_700_000_000_999);
    const skipped = await copy(pair, { maxIterations: 2, successThreshold: 0.49, maxConcurrency: 1 });
    expect(states(skipped)).toEqual(["SUCCESS"]);
    expect(skipped.status[0]).toMatchObject({ totalSize: 128, bytesToDownload: -1, filesToDownload: -1 });
    await expect(stat(path.join(pair.destLayout.dataDirs[0]!, "ks/t-1/b"))).rejects.toThrow();
    const copied = await copy(pair, { maxIterations: 2, successThreshold: 1.0, maxConcurrency: 1 });
    expect(states(copied)).toEqual(["DOWNLOAD_COMPLETE", "SUCCESS"]);
    expect(copied.status[0]).toMatchObject({ bytesToDownload: 64, filesToDownload: 1, bytesDownloaded: 64 });
    await expectSameTree(pair.sourceLayout.dataDirs[0]!, pair.destLayout.dataDirs[0]!);
  });

  it("maxIterations exhausted: a file that keeps changing at the source ends the task FAILED", async () => {
    pair = await startPair({ populate: tiny });
    const live = path.join(pair.sourceLayout.commitlogDir, "CommitLog-7-777.log");
    await writeFile(live, Buffer.alloc(256 * 1024, 1));
    let stop = false;
    const writer = (async () => {
      while (!stop) {
        await appendFile(live, "x");
        await new Promise((r) => setTimeout(r, 1));
      }
    })();
    try {
      const task = await copy(pair, { maxIterations: 2, successThreshold: 1, maxConcurrency: 4 });
      expect(task.status).toHaveLength(3);
      expect(lastState(task)).toBe("FAILED");
      expect(task.status[2].failureReason).toMatch(/^Retries exhausted: \d+ entr(y|ies) \(\d+ bytes\) still missing after 2 download passes$/);
    } finally {
      stop = true;
      await writer;
    }
  });

  it("cancel mid-copy: CANCELLED at once, streams stop, no partial file under a real name", async () => {
    await startProxiedPair({ populate: tiny, proxy: { bytesPerSecond: 2 << 20 } });
    const taskId = await create(pair!, { maxIterations: 3, successThreshold: 1, maxConcurrency: 4 });
    await pollUntil(pair!.destination, `${TASKS}/${taskId}`, (t) => t.status[0]?.bytesTransferred > 1 << 20, 30_000, 50);
    const cancelled = await pair!.destination.request("PATCH", `${TASKS}/${taskId}`);
    expect(cancelled.status).toBe(200);
    expect(lastState(cancelled.json)).toBe("CANCELLED");
    // Within a second the proxy sees no more traffic.
    await new Promise((r) => setTimeout(r, 1000));
    const settledAt = proxy!.bytesDown;
    await new Promise((r) => setTimeout(r, 500));
    expect(proxy!.bytesDown).toBe(settledAt);
    const after = await pair!.destination.request("GET", `${TASKS}/${taskId}`);
    expect(lastState(after.json)).toBe("CANCELLED");
    // Every file under a real name is complete and exact; partial data only under temp names.
    const { snapshotTree } = await import("../helpers/tree.js");
    const src = new Map((await snapshotTree(pair!.sourceLayout.root, { withContent: true })).map((e) => [e.rel, e]));
    for (const e of await snapshotTree(pair!.destLayout.root, { withContent: true })) {
      if (e.type === "file" && !isTempName(path.basename(e.rel))) expect(e).toEqual(src.get(e.rel));
    }
    // PATCH again: 200, unchanged. A new task can start at once.
    const again = await pair!.destination.request("PATCH", `${TASKS}/${taskId}`);
    expect(again.status).toBe(200);
    expect(again.json).toEqual(after.json);
    proxy!.setRate(0);
    const task = await copy(pair!);
    expect(lastState(task)).toBe("SUCCESS");
    await expectSameTree(pair!.sourceLayout.root, pair!.destLayout.root, { exclude: tableSnapshots });
  });

  it("a byte flipped in transit is detected by the end-to-end hash and the file retried", async () => {
    await startProxiedPair({ populate: tiny, proxy: { flipAtDataByte: 5 * (1 << 20) + 12_345 } });
    const task = await copy(pair!);
    expect(proxy!.flipped).toBe(true);
    expect(states(task)).toEqual(["DOWNLOAD_COMPLETE", "SUCCESS"]);
    // The corrupted file was sent twice.
    expect(task.status[0].bytesTransferred).toBeGreaterThan(task.status[0].totalSize);
    expect(task.status[0].downloadFailures).toBe(0);
    await expectSameTree(pair!.sourceLayout.root, pair!.destLayout.root, { exclude: tableSnapshots });
  });

  it("source agent killed mid-copy: FAILED with a clear reason; after a restart a new task succeeds", async () => {
    await startProxiedPair({ populate: tiny, sourceMode: "process", proxy: { bytesPerSecond: 2 << 20 } });
    const taskId = await create(pair!, { maxIterations: 2, successThreshold: 1, maxConcurrency: 4 });
    await pollUntil(pair!.destination, `${TASKS}/${taskId}`, (t) => t.status[0]?.bytesTransferred > 1 << 20, 30_000, 50);
    await pair!.source.kill("SIGKILL");
    const failed = await untilFinished(pair!, taskId);
    expect(lastState(failed)).toBe("FAILED");
    expect(failed.status.every((s: { state: string }) => s.state === "FAILED")).toBe(true);
    expect(failed.status[0].failureReason).toMatch(
      /^\d+ of \d+ entries failed to download \(the phase stopped early: the source keeps failing\); first: \/api\/v1\/live-migration\/files\/.+: /,
    );
    expect(failed.status.at(-1).failureReason).toMatch(/^Cannot read the migration status of source 127\.0\.0\.1: /);
    await pair!.source.start();
    proxy!.setRate(0);
    const task = await copy(pair!);
    expect(lastState(task)).toBe("SUCCESS");
    await expectSameTree(pair!.sourceLayout.root, pair!.destLayout.root, { exclude: tableSnapshots });
  });

  it("destination killed -9 mid-copy: GET shows it FAILED after a restart, a new task resumes and ends exact", async () => {
    await startProxiedPair({ populate: tinyWithBigFile, destinationMode: "process", proxy: { bytesPerSecond: 6 << 20 } });
    const taskId = await create(pair!, { maxIterations: 3, successThreshold: 1, maxConcurrency: 2 });
    await pollUntil(pair!.destination, `${TASKS}/${taskId}`, (t) => t.status[0]?.bytesTransferred > 10 << 20, 30_000, 50);
    // Bytes received are not yet bytes written (the big file goes to disk in 4 MiB O_DIRECT
    // blocks, behind a 16 MiB window): on a loaded machine the kill must wait for a first block.
    const partialBig = await partialWithData(pair!.destLayout.root, ".CommitLog-7-99.log.partial", 30_000);
    await pair!.destination.kill("SIGKILL");
    const partialBytes = (await stat(partialBig)).size;
    expect(partialBytes).toBeGreaterThan(0);

    await pair!.destination.start();
    const listed = await pair!.destination.request("GET", TASKS);
    expect(listed.status).toBe(200);
    expect(listed.json).toHaveLength(1);
    expect(listed.json[0].taskId).toBe(taskId);
    expect(listed.json[0].status.at(-1)).toMatchObject({
      state: "FAILED",
      failureReason: "interrupted: agent restarted during iteration 0",
    });
    // PATCH on the interrupted task: 200 and unchanged.
    const patched = await pair!.destination.request("PATCH", `${TASKS}/${taskId}`);
    expect(patched.status).toBe(200);
    expect(patched.json).toEqual(listed.json[0]);

    proxy!.setRate(0);
    const task = await copy(pair!);
    expect(states(task)).toEqual(["DOWNLOAD_COMPLETE", "SUCCESS"]);
    expect(task.status[0].bytesTransferred).toBeLessThanOrEqual(task.status[0].totalSize - partialBytes);
    await expectSameTree(pair!.sourceLayout.root, pair!.destLayout.root, { exclude: tableSnapshots });
    expect(await tempsUnder(pair!.destLayout.root)).toEqual([]);
  });
});

describe("creation rules", () => {
  it("refuses while something listens on the native port, and separately on the JMX port", async () => {
    const nativePort = await freePort([DEST_HOST]);
    const jmxPort = await freePort([DEST_HOST], [nativePort]);
    pair = await startPair({ populate: tiny, destination: { nativePort, jmxPort } });
    const body = { maxIterations: 1, successThreshold: 1, maxConcurrency: 1 };
    for (const port of [nativePort, jmxPort]) {
      const server = net.createServer((s) => s.destroy());
      await new Promise<void>((r) => server.listen(port, DEST_HOST, () => r()));
      const res = await pair.destination.request("POST", TASKS, { body });
      expect(res.status).toBe(400);
      expect(res.json.message).toBe(CASSANDRA_RUNNING);
      await new Promise((r) => server.close(r));
    }
    expect((await pair.destination.request("GET", TASKS)).json).toEqual([]);
    const ok = await pair.destination.request("POST", TASKS, { body });
    expect(ok.status).toBe(202);
  });

  it("409 while a task runs, with the documented message", async () => {
    await startProxiedPair({ populate: tiny, proxy: { bytesPerSecond: 1 << 20 } });
    const body = { maxIterations: 1, successThreshold: 1, maxConcurrency: 1 };
    const taskId = await create(pair!, body);
    const second = await pair!.destination.request("POST", TASKS, { body });
    expect(second.status).toBe(409);
    expect(second.json.message).toBe("Another task is already under progress. Cannot accept new task.");
    await pair!.destination.request("PATCH", `${TASKS}/${taskId}`);
  });

  it("validates the body (400) and the concurrency cap", async () => {
    pair = await startPair({ destination: { liveMigration: { max_concurrent_file_requests: 5 } } });
    const table: [unknown, RegExp][] = [
      [{ maxIterations: 0, successThreshold: 1, maxConcurrency: 1 }, /^Invalid maxIterations 0\. It cannot be less than or equal to zero\.$/],
      [{ maxIterations: -1, successThreshold: 1, maxConcurrency: 1 }, /^Invalid maxIterations -1\. It cannot be less than or equal to zero\.$/],
      [{ maxIterations: 1, successThreshold: -0.1, maxConcurrency: 1 }, /^Invalid successThreshold -0\.1\. It cannot be less than zero or greater than one\.$/],
      [{ maxIterations: 1, successThreshold: 1.1, maxConcurrency: 1 }, /^Invalid successThreshold 1\.1\. It cannot be less than zero or greater than one\.$/],
      [{ maxIterations: 1, successThreshold: 1, maxConcurrency: 0 }, /^Invalid maxConcurrency 0\. It cannot be less than or equal to zero\.$/],
      [{ maxIterations: 1, successThreshold: 1, maxConcurrency: -3 }, /^Invalid maxConcurrency -3\. It cannot be less than or equal to zero\.$/],
      // Value checks come before the cap.
      [{ maxIterations: 0, successThreshold: 1, maxConcurrency: 6 }, /^Invalid maxIterations 0\./],
      [{ maxIterations: 1, successThreshold: 1, maxConcurrency: 6 }, /^max concurrency can not be more than 5$/],
      [{ successThreshold: 1, maxConcurrency: 1 }, /^Error while decoding values, please check your request body\./],
    ];
    for (const [body, message] of table) {
      const res = await pair.destination.request("POST", TASKS, { body });
      expect(res.status, JSON.stringify(body)).toBe(400);
      expect(res.json.message, JSON.stringify(body)).toMatch(message);
    }
    const malformed = await pair.destination.request("POST", TASKS, { body: "{not json" });
    expect(malformed.status).toBe(400);
    expect((await pair.destination.request("GET", TASKS)).json).toEqual([]);
    const unknown = await pair.destination.request("GET", `${TASKS}/00000000-0000-0000-0000-000000000000`);
    expect(unknown.status).toBe(404);
    expect(unknown.json.message).toBe("No task found with given id 00000000-0000-0000-0000-000000000000");
  });
});

// readFile is used by ad-hoc debugging of failed runs (printing agent logs).
void readFile;
