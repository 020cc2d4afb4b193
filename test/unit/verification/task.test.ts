import { createHash } from "node:crypto";
import { readFile, rm, writeFile } from "node:fs/promises";
import { afterEach, describe, expect, it } from "vitest";
import { INLINE_HASH_MAX_BYTES } from "../../../src/digest/hash-pool.js";
import { AgentError } from "../../../src/errors.js";
import { setMtimeMs } from "../../../src/fs/mtime.js";
import type { VerificationTaskView } from "../../../src/migration/task-api.js";
import { VerificationManager } from "../../../src/migration/verification/manager.js";
import { VerificationTask } from "../../../src/migration/verification/task.js";
import { makeEnv, MTIME_MS, SAMPLE_DIRS, SAMPLE_FILES, SAMPLE_TREE, type Env, type Tree, waitFor } from "./fixtures.js";

let env: Env | undefined;
afterEach(async () => {
  await env?.cleanup();
  env = undefined;
});

const ZERO_FAILURES = {
  filesNotFoundAtSource: 0,
  filesNotFoundAtDestination: 0,
  metadataMismatches: 0,
  digestMismatches: 0,
  digestVerificationFailures: 0,
};

/** Runs one verification to its end through the manager. */
async function verify(e: Env, digestAlgorithm = "MD5", maxConcurrency = 4): Promise<VerificationTaskView> {
  const manager = new VerificationManager(e.deps, { store: null });
  const { taskId } = await manager.create({ maxConcurrency, digestAlgorithm });
  await e.deps.instance.slot.current()!.settled;
  return manager.get(taskId);
}

describe("files verification: success", () => {
  it("MD5: COMPLETED, directories count in metadataMatched only, one digest stream", async () => {
    env = await makeEnv();
    const view = await verify(env, "MD5", 3);
    expect(view).toMatchObject({
      state: "COMPLETED",
      digestAlgorithm: "MD5",
      source: "10.0.0.1",
      port: 9043,
      ...ZERO_FAILURES,
      metadataMatched: SAMPLE_FILES + SAMPLE_DIRS,
      filesMatched: SAMPLE_FILES,
      mismatchedFiles: [],
    });
    expect(view.failureReason).toBeUndefined();
    expect(env.peer.digestCalls).toHaveLength(1);
    expect(env.peer.digestCalls[0]).toMatchObject({ algorithm: "MD5", maxConcurrency: 3 });
    // every regular file, the empty one included, and no directory
    expect([...env.peer.digestCalls[0]!.fileUrls].sort()).toEqual(
      Object.entries(SAMPLE_TREE)
        .filter(([, c]) => c !== null)
        .map(([p]) => env!.source.url(p))
        .sort(),
    );
    expect(env.peer.connects).toBe(1);
    expect(env.peer.closes).toBe(1);
    expect(env.logs.errors()).toEqual([]);
  });

  it("XXHash32, case-insensitive, echoes the algorithm as submitted", async () => {
    env = await makeEnv();
    const view = await verify(env, "xxhash32");
    expect(view).toMatchObject({ state: "COMPLETED", digestAlgorithm: "xxhash32", filesMatched: SAMPLE_FILES, ...ZERO_FAILURES });
    expect(env.peer.digestCalls[0]!.algorithm).toBe("XXHash32");
  });

  it("hashes with the Java encodings (MD5 base64 of the real bytes)", async () => {
    env = await makeEnv();
    const seen: string[] = [];
    const original = env.peer.digestFiles.bind(env.peer);
    env.peer.digestFiles = async function* (...args) {
      for await (const r of original(...args)) {
        if (r.digest !== undefined) seen.push(`${r.fileUrl}=${r.digest}`);
        yield r;
      }
    };
    await verify(env);
    const index = env.source.url("data0/ks1/tbl-1/nb-1-big-Index.db");
    const expected = createHash("md5").update(await readFile(env.source.abs("data0/ks1/tbl-1/nb-1-big-Index.db"))).digest("base64");
    expect(seen).toContain(`${index}=${expected}`);
    expect(seen).toContain(`${env.source.url("data0/ks1/tbl-1/nb-1-big-Filter.db")}=1B2M2Y8AsgTpgAmY7PhCfg==`);
  });

  it("retries a transient per-file source error, then matches", async () => {
    env = await makeEnv();
    const url = env.source.url("data0/ks1/tbl-1/nb-1-big-Data.db");
    env.peer.fileFaults.set(url, [new AgentError("Unavailable", "Server is busy"), new AgentError("Unavailable", "Server is busy")]);
    const view = await verify(env);
    expect(view).toMatchObject({ state: "COMPLETED", filesMatched: SAMPLE_FILES, ...ZERO_FAILURES });
    expect(env.peer.digestCalls.map((c) => c.fileUrls)).toEqual([expect.any(Array), [url], [url]]);
    const retryLogs = env.logs.lines.filter((l) => l["level"] === 20 && String(l["msg"]).includes("re-requesting source digests"));
    expect(retryLogs.map((l) => l["msg"])).toEqual([
      "Files verification: re-requesting source digests, retry 1/3",
      "Files verification: re-requesting source digests, retry 2/3",
    ]);
  });

  it("retries a transient source listing failure", async () => {
    env = await makeEnv();
    env.peer.listFaults.push(new AgentError("Unavailable", "connection refused"));
    const view = await verify(env);
    expect(view.state).toBe("COMPLETED");
    expect(env.peer.listCalls).toBe(2);
  });
});

describe("files verification: digests carried by both listings", () => {
  const BIG = "data0/ks1/tbl-1/nb-9-big-Data.db";
  // Too big for a listing to digest whatever the hash pool's state (hash-pool.ts).
  const withBig: Tree = { ...SAMPLE_TREE, [BIG]: Buffer.alloc(INLINE_HASH_MAX_BYTES + 1, 7) };

  it("COMPLETED with DigestFiles asked only for the file the listings leave without a digest", async () => {
    env = await makeEnv({ source: withBig, destination: withBig });
    env.peer.listedDigests = true;
    const view = await verify(env, "XXHash32");
    expect(view).toMatchObject({ state: "COMPLETED", ...ZERO_FAILURES, metadataMatched: SAMPLE_FILES + 1 + SAMPLE_DIRS, filesMatched: SAMPLE_FILES + 1 });
    expect(env.peer.digestCalls.map((c) => c.fileUrls)).toEqual([[env.source.url(BIG)]]);
    expect(env.logs.lines.find((l) => l["msg"] === "Files verification: metadata matched, comparing digests")).toMatchObject({
      digestsCompared: SAMPLE_FILES,
      filesToDigest: 1,
    });
  });

  it("a small file corrupted with the same size and mtime: DIGEST_MISMATCH from the listings alone", async () => {
    env = await makeEnv();
    env.peer.listedDigests = true;
    const rel = "data0/ks1/tbl-1/nb-1-big-Index.db";
    await writeFile(env.destination.abs(rel), "X" + (SAMPLE_TREE[rel] as string).slice(1));
    await setMtimeMs(env.destination.abs(rel), MTIME_MS);
    const view = await verify(env);
    expect(view).toMatchObject({ state: "FAILED", digestMismatches: 1, filesMatched: SAMPLE_FILES - 1, mismatchedFiles: [env.destination.url(rel)] });
    expect(env.peer.digestCalls).toEqual([]);
    expect(env.logs.errors().filter((l) => l["check"] === "DIGEST_MISMATCH")).toHaveLength(1);
  });

  it("a metadata failure: FAILED with no digest counted, though the listings carried digests", async () => {
    env = await makeEnv();
    env.peer.listedDigests = true;
    const corrupted = "data0/ks1/tbl-1/nb-1-big-Index.db";
    await writeFile(env.destination.abs(corrupted), "X" + (SAMPLE_TREE[corrupted] as string).slice(1));
    await setMtimeMs(env.destination.abs(corrupted), MTIME_MS);
    await setMtimeMs(env.destination.abs("commitlog/CommitLog-7-1.log"), MTIME_MS + 1);
    const view = await verify(env);
    expect(view).toMatchObject({ state: "FAILED", metadataMismatches: 1, filesMatched: 0, digestMismatches: 0, digestVerificationFailures: 0 });
    expect(view.mismatchedFiles).toEqual([env.destination.url("commitlog/CommitLog-7-1.log")]);
  });

  it("keeps the local walk from running more than the lead ahead of a slow source listing", async () => {
    const wide: Tree = { ...SAMPLE_TREE };
    for (let i = 0; i < 40; i++) wide[`data0/ks1/tbl-1/nb-${100 + i}-big-Digest.crc32`] = `crc ${i}`;
    env = await makeEnv({ source: wide });
    env.peer.listedDigests = true;
    env.peer.listBatchDelayMs = 3; // batches of 4
    const task = new VerificationTask({
      id: "paced-task",
      digestAlgorithm: "XXHash32",
      algorithm: "XXHash32",
      maxConcurrency: 2,
      deps: env.deps,
      logger: env.logs.logger.child({ liveMigrationRequest: "paced-task" }),
      listingProgressLogMs: 2,
      listingLeadMaxEntries: 4,
      localBatchEntries: 2,
    });
    task.start();
    await task.settled;
    expect(task.view()).toMatchObject({ state: "COMPLETED", ...ZERO_FAILURES, filesMatched: SAMPLE_FILES + 40 });
    const progress = env.logs.lines.filter((l) => l["msg"] === "Files verification: listing both sides");
    expect(progress.length).toBeGreaterThanOrEqual(3);
    // At most the lead plus one local batch ahead; unpaced, the local walk lists all 49 entries at once.
    for (const line of progress) expect((line["localEntries"] as number) - (line["sourceEntries"] as number)).toBeLessThanOrEqual(4 + 2);
  });

  it("lets the local walk go on once a shorter source listing has ended", async () => {
    const extra: Tree = { ...SAMPLE_TREE };
    for (let i = 0; i < 12; i++) extra[`commitlog/CommitLog-8-${10 + i}.log`] = `segment ${i}`;
    env = await makeEnv({ source: SAMPLE_TREE, destination: extra });
    env.peer.listedDigests = true;
    const task = new VerificationTask({
      id: "shorter-source",
      digestAlgorithm: "MD5",
      algorithm: "MD5",
      maxConcurrency: 2,
      deps: env.deps,
      logger: env.logs.logger,
      listingLeadMaxEntries: 2,
      localBatchEntries: 2,
    });
    task.start();
    await task.settled;
    // The destination's listing is the source's plus 12 files at its end: aligned to the end of the source's.
    expect(task.view()).toMatchObject({ state: "FAILED", filesNotFoundAtSource: 12, filesNotFoundAtDestination: 0, metadataMatched: SAMPLE_FILES + SAMPLE_DIRS });
  });

  it("logs the listings' progress while they run, with the task's id", async () => {
    env = await makeEnv();
    env.peer.listedDigests = true;
    env.peer.listBatchDelayMs = 60;
    const task = new VerificationTask({
      id: "progress-task",
      digestAlgorithm: "MD5",
      algorithm: "MD5",
      maxConcurrency: 2,
      deps: env.deps,
      logger: env.logs.logger.child({ liveMigrationRequest: "progress-task" }),
      listingProgressLogMs: 40,
    });
    task.start();
    await task.settled;
    expect(task.view()).toMatchObject({ state: "COMPLETED", filesMatched: SAMPLE_FILES });
    const progress = env.logs.lines.filter((l) => l["msg"] === "Files verification: listing both sides");
    expect(progress.length).toBeGreaterThanOrEqual(1);
    expect(progress[0]).toMatchObject({ liveMigrationRequest: "progress-task", localEntries: expect.any(Number), sourceEntries: expect.any(Number) });
    expect(progress.at(-1)!["sourceEntries"]).toBeLessThanOrEqual(SAMPLE_FILES + SAMPLE_DIRS);
    // None after the listings ended.
    const ended = env.logs.lines.findIndex((l) => l["msg"] === "Files verification: metadata matched, comparing digests");
    expect(env.logs.lines.slice(ended).some((l) => l["msg"] === "Files verification: listing both sides")).toBe(false);
  });

  it("a source listing that breaks mid-stream starts both walks over: COMPLETED, nothing counted twice", async () => {
    env = await makeEnv();
    env.peer.listedDigests = true;
    env.peer.listBreak = { afterBatches: 1, error: new AgentError("Unavailable", "connection reset") };
    const view = await verify(env);
    expect(view).toMatchObject({ state: "COMPLETED", ...ZERO_FAILURES, metadataMatched: SAMPLE_FILES + SAMPLE_DIRS, filesMatched: SAMPLE_FILES });
    expect(env.peer.listCalls).toBe(2);
    expect(env.peer.digestCalls).toEqual([]);
  });
});

describe("files verification: failures", () => {
  it("content corrupted with the same size and mtime: FAILED, digestMismatches 1, file named and logged", async () => {
    env = await makeEnv();
    const rel = "data0/ks1/tbl-1/nb-1-big-Index.db";
    const original = SAMPLE_TREE[rel] as string;
    await writeFile(env.destination.abs(rel), "X" + original.slice(1));
    await setMtimeMs(env.destination.abs(rel), MTIME_MS);
    const view = await verify(env);
    const url = env.destination.url(rel);
    expect(view).toMatchObject({
      state: "FAILED",
      digestMismatches: 1,
      filesMatched: SAMPLE_FILES - 1,
      metadataMatched: SAMPLE_FILES + SAMPLE_DIRS,
      digestVerificationFailures: 0,
      mismatchedFiles: [url],
    });
    const errors = env.logs.errors().filter((l) => l["fileUrl"] === url);
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatchObject({ liveMigrationRequest: view.id, task: "files-verification", check: "DIGEST_MISMATCH" });
  });

  it("a file missing at the destination: filesNotFoundAtDestination, no digest work", async () => {
    env = await makeEnv();
    const rel = "data1/ks2/tbl-2/nb-2-big-Data.db";
    await rm(env.destination.abs(rel));
    const view = await verify(env);
    expect(view).toMatchObject({
      state: "FAILED",
      filesNotFoundAtDestination: 1,
      filesNotFoundAtSource: 0,
      metadataMismatches: 0,
      metadataMatched: SAMPLE_FILES + SAMPLE_DIRS - 1,
      filesMatched: 0,
      mismatchedFiles: [env.destination.url(rel)],
    });
    expect(env.peer.digestCalls).toEqual([]);
    expect(env.logs.errors().some((l) => l["fileUrl"] === env!.destination.url(rel) && l["liveMigrationRequest"] === view.id)).toBe(true);
  });

  it("a file only at the destination: filesNotFoundAtSource", async () => {
    env = await makeEnv({ destination: { ...SAMPLE_TREE, "data0/ks1/tbl-1/stray.db": "stray" } });
    const view = await verify(env);
    expect(view).toMatchObject({ state: "FAILED", filesNotFoundAtSource: 1, filesNotFoundAtDestination: 0 });
    expect(view.mismatchedFiles).toEqual([env.destination.url("data0/ks1/tbl-1/stray.db")]);
    expect(env.peer.digestCalls).toEqual([]);
  });

  it("FILE vs DIRECTORY type swap: 2 metadata mismatches", async () => {
    const source: Tree = { ...SAMPLE_TREE, "data0/ks1/a": "file at source", "data0/ks1/b": null };
    const destination: Tree = { ...SAMPLE_TREE, "data0/ks1/a": null, "data0/ks1/b": "file at destination" };
    env = await makeEnv({ source, destination });
    const view = await verify(env);
    expect(view).toMatchObject({
      state: "FAILED",
      metadataMismatches: 2,
      filesNotFoundAtSource: 0,
      filesNotFoundAtDestination: 0,
      metadataMatched: SAMPLE_FILES + SAMPLE_DIRS,
    });
    expect([...view.mismatchedFiles].sort()).toEqual([env.destination.url("data0/ks1/a"), env.destination.url("data0/ks1/b")]);
    expect(env.peer.digestCalls).toEqual([]);
  });

  it("an mtime change: metadataMismatches 1, directories still match, no digest work", async () => {
    env = await makeEnv();
    const rel = "commitlog/CommitLog-7-1.log";
    await setMtimeMs(env.destination.abs(rel), MTIME_MS + 1);
    const view = await verify(env);
    expect(view).toMatchObject({ state: "FAILED", metadataMismatches: 1, metadataMatched: SAMPLE_FILES + SAMPLE_DIRS - 1, filesMatched: 0 });
    expect(view.mismatchedFiles).toEqual([env.destination.url(rel)]);
    expect(env.peer.digestCalls).toEqual([]);
  });

  it("a permanent per-file source error: digestVerificationFailures 1 without retries", async () => {
    env = await makeEnv();
    const url = env.source.url("data0/ks1/tbl-1/nb-1-big-Data.db");
    env.peer.fileFaults.set(url, [new AgentError("Internal", "IO failure while hashing")]);
    const view = await verify(env);
    expect(view).toMatchObject({
      state: "FAILED",
      digestVerificationFailures: 1,
      digestMismatches: 0,
      filesMatched: SAMPLE_FILES - 1,
      mismatchedFiles: [url],
    });
    expect(env.peer.digestCalls).toHaveLength(1);
    expect(env.logs.errors().find((l) => l["fileUrl"] === url)).toMatchObject({ check: "DIGEST_VERIFICATION_FAILURE", liveMigrationRequest: view.id });
  });

  it("a transient per-file source error that outlasts the retries: digestVerificationFailures 1", async () => {
    env = await makeEnv({ maxRetries: 2 });
    const url = env.source.url("commitlog/CommitLog-7-1.log");
    env.peer.fileFaults.set(url, Array.from({ length: 5 }, () => new AgentError("Unavailable", "Server is busy")));
    const view = await verify(env);
    expect(view).toMatchObject({ state: "FAILED", digestVerificationFailures: 1, filesMatched: SAMPLE_FILES - 1 });
    expect(env.peer.digestCalls).toHaveLength(3); // the first request and 2 retries
  });

  it("a source listing that keeps failing: FAILED with failureReason", async () => {
    env = await makeEnv({ maxRetries: 1 });
    env.peer.listFaults.push(new AgentError("Unavailable", "connection refused"), new AgentError("Unavailable", "connection refused"));
    const view = await verify(env);
    expect(view).toMatchObject({ state: "FAILED", ...ZERO_FAILURES, metadataMatched: 0, filesMatched: 0 });
    expect(view.failureReason).toBe("Failed to list files at source 10.0.0.1: connection refused");
    expect(env.peer.listCalls).toBe(2);
    expect(env.peer.digestCalls).toEqual([]);
  });

  it("names at most 100 files in mismatchedFiles", async () => {
    const extra: Tree = {};
    for (let i = 0; i < 130; i++) extra[`data0/ks1/tbl-1/stray-${String(i).padStart(3, "0")}.db`] = "s";
    env = await makeEnv({ destination: { ...SAMPLE_TREE, ...extra } });
    const view = await verify(env);
    expect(view.filesNotFoundAtSource).toBe(130);
    expect(view.mismatchedFiles).toHaveLength(100);
    expect(env.logs.errors().filter((l) => l["check"] === "NOT_FOUND_AT_SOURCE")).toHaveLength(130);
  });
});

describe("files verification: cancel", () => {
  it("cancel during digests: CANCELLED within a second, no digest starts after it, counters frozen", async () => {
    const tree: Tree = {};
    for (let i = 0; i < 40; i++) tree[`data0/ks/t/f-${i}.db`] = `content ${i}`;
    env = await makeEnv({ source: tree });
    env.peer.digestDelayMs = 150;
    const manager = new VerificationManager(env.deps, { store: null });
    const { taskId } = await manager.create({ maxConcurrency: 2, digestAlgorithm: "MD5" });
    await waitFor(() => manager.get(taskId).filesMatched >= 2);
    const cancelledAt = Date.now();
    const view = await manager.cancel(taskId);
    expect(view.state).toBe("CANCELLED");
    await env.deps.instance.slot.current()!.settled;
    expect(Date.now() - cancelledAt).toBeLessThan(1_000);
    const frozen = manager.get(taskId);
    const startsBefore = env.peer.digestStarts.length;
    await new Promise((r) => setTimeout(r, 400));
    expect(env.peer.digestStarts.length).toBe(startsBefore);
    expect(env.peer.digestStarts.every((t) => t <= cancelledAt + 5)).toBe(true);
    expect(env.peer.digestCalls).toHaveLength(1);
    expect(manager.get(taskId)).toEqual(frozen);
    expect(frozen.filesMatched).toBeLessThan(40);
    expect(env.peer.closes).toBe(1);
  });

  it("cancel during the listings: CANCELLED within a second, the source listing aborted, nothing counted", async () => {
    const tree: Tree = {};
    for (let i = 0; i < 40; i++) tree[`data0/ks/t/f-${i}.db`] = `content ${i}`;
    env = await makeEnv({ source: tree });
    env.peer.listedDigests = true;
    env.peer.listBatchDelayMs = 100;
    const manager = new VerificationManager(env.deps, { store: null });
    const { taskId } = await manager.create({ maxConcurrency: 2, digestAlgorithm: "XXHash32" });
    await new Promise((r) => setTimeout(r, 250));
    const cancelledAt = Date.now();
    const view = await manager.cancel(taskId);
    expect(view).toMatchObject({ state: "CANCELLED", metadataMatched: 0, filesMatched: 0, ...ZERO_FAILURES });
    await env.deps.instance.slot.current()!.settled;
    expect(Date.now() - cancelledAt).toBeLessThan(1_000);
    await new Promise((r) => setTimeout(r, 300));
    expect(manager.get(taskId)).toEqual(view);
    expect(env.peer.listsAborted).toBe(1);
    expect(env.peer.listCalls).toBe(1);
    expect(env.peer.digestCalls).toEqual([]);
  });

  it("cancel while a source digest is being retried: no further digest calls", async () => {
    env = await makeEnv();
    const url = env.source.url("commitlog/CommitLog-7-1.log");
    env.peer.fileFaults.set(url, Array.from({ length: 10 }, () => new AgentError("Unavailable", "busy")));
    const manager = new VerificationManager({ ...env.deps, retry: { maxRetries: 5, retryDelayMs: 300, maxRetryDelayMs: 300 } }, { store: null });
    const { taskId } = await manager.create({ maxConcurrency: 2, digestAlgorithm: "MD5" });
    await waitFor(() => env!.peer.digestCalls.length === 1 && manager.get(taskId).filesMatched === SAMPLE_FILES - 1);
    const view = await manager.cancel(taskId);
    expect(view.state).toBe("CANCELLED");
    await new Promise((r) => setTimeout(r, 500));
    expect(env.peer.digestCalls).toHaveLength(1);
    expect(manager.get(taskId).digestVerificationFailures).toBe(0);
  });

  it("a task cancelled before it starts stays CANCELLED and never reads anything", async () => {
    env = await makeEnv();
    const task = new VerificationTask({
      id: "t1",
      digestAlgorithm: "MD5",
      algorithm: "MD5",
      maxConcurrency: 1,
      deps: env.deps,
      logger: env.logs.logger,
    });
    expect(task.state).toBe("NOT_STARTED");
    expect(task.finished).toBe(false);
    expect(task.cancel()).toBe(true);
    task.start();
    await task.settled;
    expect(task.view().state).toBe("CANCELLED");
    expect(task.finished).toBe(true);
    expect(env.peer.connects).toBe(0);
    expect(task.cancel()).toBe(false);
  });
});
