/**
 * Files verification between two real agents (source 127.0.0.1, destination 127.0.0.2) over
 * the REST API. The destination tree is a byte-exact copy of the source made before each test
 * (sizes and millisecond mtimes preserved); each test then breaks it in one way.
 */
import { mkdir, readdir, rm, stat, writeFile, readFile } from "node:fs/promises";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { mtimeMsOf, setMtimeMs } from "../../src/fs/mtime.js";
import { pollUntil, startPair, type Pair, type SideLayout } from "../helpers/agents.js";

const TASKS = "/api/v1/live-migration/files-verification-tasks";
const TERMINAL = ["COMPLETED", "FAILED", "CANCELLED"];
const MTIME_MS = 1_700_000_000_123;

let pair: Pair | undefined;
afterEach(async () => {
  await pair?.stop();
  pair = undefined;
});

/** The migrated roots of a side, paired with their fileUrl prefixes. */
function roots(layout: SideLayout): [string, string][] {
  return [
    [layout.hintsDir, "hints/0"],
    [layout.commitlogDir, "commitlog/0"],
    [layout.savedCachesDir, "saved_caches/0"],
    [layout.dataDirs[0]!, "data/0"],
    [layout.dataDirs[1]!, "data/1"],
  ];
}

function fileUrl(prefix: string, relPath: string): string {
  return `/api/v1/live-migration/files/${prefix}/${relPath}`;
}

/** A small Cassandra-like tree: 2 keyspaces over both data dirs, a commitlog, an empty file. */
async function populate(source: SideLayout): Promise<void> {
  const files: [string, string | Buffer][] = [
    [path.join(source.dataDirs[0]!, "ks1/tbl-1/nb-1-big-Data.db"), Buffer.alloc(2_000_000, 7)],
    [path.join(source.dataDirs[0]!, "ks1/tbl-1/nb-1-big-Index.db"), "index bytes of sstable 1"],
    [path.join(source.dataDirs[0]!, "ks1/tbl-1/nb-1-big-Filter.db"), ""],
    [path.join(source.dataDirs[1]!, "ks2/tbl-2/nb-2-big-Data.db"), Buffer.from(Array.from({ length: 70_000 }, (_, i) => i % 253))],
    [path.join(source.dataDirs[1]!, "ks2/tbl-2/nb-2-big-Summary.db"), "summary"],
    [path.join(source.commitlogDir, "CommitLog-7-1.log"), "commitlog segment"],
  ];
  for (const [file, content] of files) {
    await mkdir(path.dirname(file), { recursive: true });
    await writeFile(file, content);
    await setMtimeMs(file, MTIME_MS);
  }
}
const FILES = 6;
const DIRS = 4;

/** Copies every migrated root of the source to the destination, sizes and ms mtimes exact. */
async function mirror(p: Pair): Promise<void> {
  const destRoots = roots(p.destLayout);
  for (const [i, [srcRoot]] of roots(p.sourceLayout).entries()) {
    const dstRoot = destRoots[i]![0];
    await mkdir(dstRoot, { recursive: true });
    const copy = async (from: string, to: string) => {
      for (const entry of await readdir(from, { withFileTypes: true })) {
        const a = path.join(from, entry.name);
        const b = path.join(to, entry.name);
        if (entry.isDirectory()) {
          await mkdir(b, { recursive: true });
          await copy(a, b);
        } else {
          await writeFile(b, await readFile(a));
          await setMtimeMs(b, mtimeMsOf(await stat(a, { bigint: true })));
        }
      }
    };
    await copy(srcRoot, dstRoot);
  }
}

async function start(populateSource: (s: SideLayout) => Promise<void> = populate): Promise<Pair> {
  pair = await startPair({ populate: populateSource });
  await mirror(pair);
  return pair;
}

async function verify(p: Pair, body: Record<string, unknown> = { maxConcurrency: 4, digestAlgorithm: "MD5" }): Promise<any> {
  const created = await p.destination.request("POST", TASKS, { body });
  expect(created.status, created.text).toBe(202);
  expect(created.json.statusUrl).toBe(`${TASKS}/${created.json.taskId}`);
  return pollUntil(p.destination, `${TASKS}/${created.json.taskId}`, (t) => TERMINAL.includes(t.state), 60_000, 20);
}

const ZERO_FAILURES = {
  filesNotFoundAtSource: 0,
  filesNotFoundAtDestination: 0,
  metadataMismatches: 0,
  digestMismatches: 0,
  digestVerificationFailures: 0,
};

describe("files verification between two agents", () => {
  it("an exact copy: COMPLETED with MD5 and with XXHash32, metadataMatched > filesMatched", async () => {
    const p = await start();
    for (const digestAlgorithm of ["MD5", "xxhash32"]) {
      const task = await verify(p, { maxConcurrency: 3, digestAlgorithm });
      expect(task).toMatchObject({
        state: "COMPLETED",
        digestAlgorithm,
        source: "127.0.0.1",
        port: p.gatewayPort,
        ...ZERO_FAILURES,
        metadataMatched: FILES + DIRS,
        filesMatched: FILES,
      });
    }
    const listed = await p.destination.request("GET", TASKS);
    expect(listed.status).toBe(200);
    expect(listed.json).toHaveLength(1);
  });

  it("destination files corrupted with the same size and mtime, one digested as listed and one over 1 MiB: FAILED, both named", async () => {
    const p = await start();
    // The 70 kB file is digested by both listings; the 2 MB one too while the agents' hash pools
    // have no thread (hash-pool.ts), by DigestFiles after them otherwise.
    const corrupted = [
      [p.destLayout.dataDirs[1]!, "data/1", "ks2/tbl-2/nb-2-big-Data.db"],
      [p.destLayout.dataDirs[0]!, "data/0", "ks1/tbl-1/nb-1-big-Data.db"],
    ] as const;
    for (const [dir, , relPath] of corrupted) {
      const file = path.join(dir, relPath);
      const bytes = await readFile(file);
      bytes[bytes.length - 1] = bytes[bytes.length - 1]! ^ 0xff;
      await writeFile(file, bytes);
      await setMtimeMs(file, MTIME_MS);
    }
    for (const digestAlgorithm of ["MD5", "XXHash32"]) {
      const task = await verify(p, { maxConcurrency: 4, digestAlgorithm });
      expect(task).toMatchObject({
        state: "FAILED",
        digestMismatches: 2,
        digestVerificationFailures: 0,
        metadataMismatches: 0,
        filesMatched: FILES - 2,
        metadataMatched: FILES + DIRS,
      });
      expect([...task.mismatchedFiles].sort()).toEqual(corrupted.map(([, prefix, relPath]) => fileUrl(prefix, relPath)).sort());
    }
  });

  it("a file missing at the destination: filesNotFoundAtDestination 1", async () => {
    const p = await start();
    await rm(path.join(p.destLayout.commitlogDir, "CommitLog-7-1.log"));
    const task = await verify(p);
    expect(task).toMatchObject({
      state: "FAILED",
      filesNotFoundAtDestination: 1,
      filesNotFoundAtSource: 0,
      metadataMismatches: 0,
      filesMatched: 0,
      mismatchedFiles: [fileUrl("commitlog/0", "CommitLog-7-1.log")],
    });
  });

  it("a FILE/DIRECTORY swap: metadataMismatches 2", async () => {
    const p = await start(async (s) => {
      await populate(s);
      await writeFile(path.join(s.dataDirs[0]!, "ks1/a"), "a file at the source");
      await setMtimeMs(path.join(s.dataDirs[0]!, "ks1/a"), MTIME_MS);
      await mkdir(path.join(s.dataDirs[0]!, "ks1/b"));
    });
    const a = path.join(p.destLayout.dataDirs[0]!, "ks1/a");
    const b = path.join(p.destLayout.dataDirs[0]!, "ks1/b");
    await rm(a);
    await mkdir(a);
    await rm(b, { recursive: true });
    await writeFile(b, "a file at the destination");
    const task = await verify(p);
    expect(task).toMatchObject({ state: "FAILED", metadataMismatches: 2, filesNotFoundAtSource: 0, filesNotFoundAtDestination: 0, filesMatched: 0 });
    expect([...task.mismatchedFiles].sort()).toEqual([fileUrl("data/0", "ks1/a"), fileUrl("data/0", "ks1/b")]);
  });

  it("an mtime change: metadataMismatches 1", async () => {
    const p = await start();
    await setMtimeMs(path.join(p.destLayout.dataDirs[0]!, "ks1/tbl-1/nb-1-big-Index.db"), MTIME_MS + 1);
    const task = await verify(p);
    expect(task).toMatchObject({
      state: "FAILED",
      metadataMismatches: 1,
      metadataMatched: FILES + DIRS - 1,
      filesMatched: 0,
      mismatchedFiles: [fileUrl("data/0", "ks1/tbl-1/nb-1-big-Index.db")],
    });
  });

  it("answers 400 with the documented messages, 409 while a task runs, 404 for unknown ids", async () => {
    const p = await start(async (s) => {
      await populate(s);
      for (let i = 0; i < 8; i++) {
        const file = path.join(s.dataDirs[1]!, `ks2/tbl-2/nb-${10 + i}-big-Data.db`);
        await writeFile(file, Buffer.alloc(16 << 20, i));
        await setMtimeMs(file, MTIME_MS);
      }
    });
    const bad: [Record<string, unknown>, string][] = [
      [{ maxConcurrency: 0, digestAlgorithm: "MD5" }, "maxConcurrency must be >= 1"],
      [{ maxConcurrency: 1, digestAlgorithm: "" }, "Digest algorithm name cannot be null or empty"],
      [{ maxConcurrency: 21, digestAlgorithm: "MD5" }, "max concurrency can not be more than 20"],
      [{ maxConcurrency: 1, digestAlgorithm: "SHA-256" }, "Unsupported digest algorithm SHA-256"],
    ];
    for (const [body, message] of bad) {
      const res = await p.destination.request("POST", TASKS, { body });
      expect(res.status, res.text).toBe(400);
      expect(res.json.message).toBe(message);
    }
    const first = await p.destination.request("POST", TASKS, { body: { maxConcurrency: 1, digestAlgorithm: "MD5" } });
    expect(first.status).toBe(202);
    const second = await p.destination.request("POST", TASKS, { body: { maxConcurrency: 1, digestAlgorithm: "MD5" } });
    expect(second.status).toBe(409);
    expect(second.json.message).toBe("Another files digest verification is in progress for instance=1");
    const dataCopy = await p.destination.request("POST", "/api/v1/live-migration/data-copy-tasks", {
      body: { maxIterations: 1, successThreshold: 1, maxConcurrency: 1 },
    });
    expect(dataCopy.status).toBe(409);
    const unknown = await p.destination.request("GET", `${TASKS}/no-such-task`);
    expect(unknown.status).toBe(404);
    expect(unknown.json.message).toBe("No task found with given id no-such-task");
    const done = await pollUntil(p.destination, `${TASKS}/${first.json.taskId}`, (t) => TERMINAL.includes(t.state), 60_000, 20);
    expect(done).toMatchObject({ state: "COMPLETED", filesMatched: FILES + 8 });
  });

  it("a cancel during digests: CANCELLED within a second, and it stays so", async () => {
    const BIG = 24;
    const p = await start(async (s) => {
      const dir = path.join(s.dataDirs[0]!, "ks/big");
      await mkdir(dir, { recursive: true });
      for (let i = 0; i < BIG; i++) {
        const file = path.join(dir, `nb-${i}-big-Data.db`);
        await writeFile(file, Buffer.alloc(16 << 20, i));
        await setMtimeMs(file, MTIME_MS);
      }
    });
    const created = await p.destination.request("POST", TASKS, { body: { maxConcurrency: 1, digestAlgorithm: "MD5" } });
    expect(created.status).toBe(202);
    const url = `${TASKS}/${created.json.taskId}`;
    await pollUntil(p.destination, url, (t) => t.filesMatched >= 1 || TERMINAL.includes(t.state), 30_000, 5);
    const before = Date.now();
    const cancelled = await p.destination.request("PATCH", url);
    const took = Date.now() - before;
    expect(cancelled.status).toBe(200);
    expect(cancelled.json.state).toBe("CANCELLED");
    expect(took).toBeLessThan(1_000);
    // No more work lands after the cancel, and a new task can start at once.
    await new Promise((r) => setTimeout(r, 300));
    const later = await p.destination.request("GET", url);
    expect(later.json).toEqual(cancelled.json);
    expect(later.json.filesMatched).toBeLessThan(BIG);
    const again = await p.destination.request("PATCH", url);
    expect(again.status).toBe(200);
    expect(again.json).toEqual(cancelled.json);
    const next = await p.destination.request("POST", TASKS, { body: { maxConcurrency: 4, digestAlgorithm: "XXHash32" } });
    expect(next.status, next.text).toBe(202);
    const done = await pollUntil(p.destination, `${TASKS}/${next.json.taskId}`, (t) => TERMINAL.includes(t.state), 60_000, 20);
    expect(done).toMatchObject({ state: "COMPLETED", filesMatched: BIG, ...ZERO_FAILURES });
  });
});
