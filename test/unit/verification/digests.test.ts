import { afterEach, describe, expect, it } from "vitest";
import { AgentError } from "../../../src/errors.js";
import type { FileEntry } from "../../../src/migration/types.js";
import { batches, compareDigests, type DigestVerdict, type DigestWork, judgeListedDigest } from "../../../src/migration/verification/digests.js";
import { makeEnv, SAMPLE_TREE, type Env } from "./fixtures.js";

let env: Env | undefined;
afterEach(async () => {
  await env?.cleanup();
  env = undefined;
});

const FILES = Object.entries(SAMPLE_TREE)
  .filter(([, content]) => content !== null)
  .map(([relPath]) => relPath);

function work(e: Env): DigestWork[] {
  return FILES.map((p) => ({ fileUrl: e.destination.url(p), absPath: e.destination.abs(p) }));
}

async function run(e: Env, files: DigestWork[], extra: { maxConcurrency?: number; batchBytes?: number; signal?: AbortSignal } = {}) {
  const verdicts: DigestVerdict[] = [];
  const retries: number[] = [];
  await compareDigests({
    peer: e.peer,
    algorithm: "MD5",
    files,
    maxConcurrency: extra.maxConcurrency ?? 2,
    retry: e.deps.retry,
    signal: extra.signal ?? new AbortController().signal,
    onVerdict: (v) => verdicts.push(v),
    onRetry: (n) => retries.push(n),
    ...(extra.batchBytes !== undefined ? { batchBytes: extra.batchBytes } : {}),
  });
  return { verdicts, retries };
}

describe("judgeListedDigest", () => {
  it("judges a file both listings digested, by compareDigests's rules, and leaves any other to compareDigests", () => {
    const entry = (digest?: string): FileEntry => ({ fileUrl: "/f/a", size: 1, fileType: "FILE", lastModifiedTime: 1, ...(digest !== undefined ? { digest } : {}) });
    expect(judgeListedDigest({ local: entry("aa"), source: entry("aa") })).toEqual({ kind: "MATCH", fileUrl: "/f/a", digest: "aa" });
    expect(judgeListedDigest({ local: entry("bb"), source: entry("BB") })).toEqual({ kind: "MISMATCH", fileUrl: "/f/a", localDigest: "bb", sourceDigest: "BB" });
    expect(judgeListedDigest({ local: entry("cc"), source: entry() })).toBeUndefined();
    expect(judgeListedDigest({ local: entry(), source: entry("dd") })).toBeUndefined();
    expect(judgeListedDigest({ local: entry(), source: entry() })).toBeUndefined();
  });
});

describe("batches", () => {
  it("splits by URL bytes and never leaves a URL out", () => {
    const urls = Array.from({ length: 10 }, (_, i) => `/u/${i}`); // 4 bytes + 4 overhead each
    expect(batches(urls, 1 << 20)).toEqual([urls]);
    expect(batches(urls, 16).map((b) => b.length)).toEqual([2, 2, 2, 2, 2]);
    expect(batches(["/a-very-long-url"], 4)).toEqual([["/a-very-long-url"]]);
    expect(batches([], 16)).toEqual([]);
  });
});

describe("compareDigests", () => {
  it("gives one MATCH per file over one stream with the requested concurrency", async () => {
    env = await makeEnv();
    const { verdicts } = await run(env, work(env), { maxConcurrency: 2 });
    expect(verdicts.map((v) => v.kind)).toEqual(Array(FILES.length).fill("MATCH"));
    expect(new Set(verdicts.map((v) => v.fileUrl)).size).toBe(FILES.length);
    expect(env.peer.digestCalls).toHaveLength(1);
    expect(env.peer.digestCalls[0]).toMatchObject({ algorithm: "MD5", maxConcurrency: 2 });
    expect(env.peer.maxInFlight).toBeLessThanOrEqual(2);
  });

  it("uses several sequential streams when the URLs exceed the batch size", async () => {
    env = await makeEnv();
    const { verdicts } = await run(env, work(env), { batchBytes: 120 });
    expect(verdicts.every((v) => v.kind === "MATCH")).toBe(true);
    expect(env.peer.digestCalls.length).toBeGreaterThan(1);
    expect(env.peer.digestCalls.flatMap((c) => c.fileUrls).sort()).toEqual(work(env).map((w) => w.fileUrl).sort());
  });

  it("reports an unreadable local copy as LOCAL_ERROR", async () => {
    env = await makeEnv();
    const files = work(env);
    files[1] = { ...files[1]!, absPath: files[1]!.absPath + ".gone" };
    const { verdicts } = await run(env, files);
    const bad = verdicts.find((v) => v.fileUrl === files[1]!.fileUrl)!;
    expect(bad.kind).toBe("LOCAL_ERROR");
    expect(verdicts.filter((v) => v.kind === "MATCH")).toHaveLength(FILES.length - 1);
  });

  it("re-requests only the files of a broken stream that had no result yet", async () => {
    env = await makeEnv();
    env.peer.streamFault = { call: 0, afterResults: 2, error: new AgentError("Unavailable", "connection reset") };
    const { verdicts, retries } = await run(env, work(env), { maxConcurrency: 1 });
    expect(verdicts.every((v) => v.kind === "MATCH")).toBe(true);
    expect(verdicts).toHaveLength(FILES.length);
    expect(retries).toEqual([FILES.length - 2]);
    expect(env.peer.digestCalls.map((c) => c.fileUrls.length)).toEqual([FILES.length, FILES.length - 2]);
  });

  it("does not retry a stream broken by a non-retryable error", async () => {
    env = await makeEnv();
    env.peer.streamFault = { call: 0, afterResults: 1, error: new AgentError("PermissionDenied", "denied") };
    const { verdicts } = await run(env, work(env), { maxConcurrency: 1 });
    expect(verdicts.filter((v) => v.kind === "SOURCE_ERROR")).toHaveLength(FILES.length - 1);
    expect(env.peer.digestCalls).toHaveLength(1);
  });

  it("rejects with Cancelled and reports nothing more once the signal aborts", async () => {
    env = await makeEnv();
    env.peer.digestDelayMs = 200;
    const controller = new AbortController();
    const verdicts: DigestVerdict[] = [];
    const running = compareDigests({
      peer: env.peer,
      algorithm: "MD5",
      files: work(env),
      maxConcurrency: 1,
      retry: env.deps.retry,
      signal: controller.signal,
      onVerdict: (v) => verdicts.push(v),
    });
    setTimeout(() => controller.abort(), 50);
    await expect(running).rejects.toMatchObject({ code: "Cancelled" });
    expect(verdicts).toEqual([]);
  });
});
