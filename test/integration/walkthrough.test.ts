/**
 * The guide's walkthrough, phases 1–6, through the REST API of two real agents (source
 * 127.0.0.1, destination 127.0.0.2, one shared port pair), while a separate writer process plays
 * the live source during phase 1. README "Walkthrough" shows the same calls with curl.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { access, readdir } from "node:fs/promises";
import http from "node:http";
import path from "node:path";
import { createInterface } from "node:readline";
import { afterEach, describe, expect, it } from "vitest";
import { generateDataset } from "../../src/dataset/generate.js";
import {
  type AgentHandle,
  DEST_HOST,
  lastState,
  type Pair,
  pollUntil,
  REPO_ROOT,
  SOURCE_HOST,
  startPair,
  TERMINAL_DATA_COPY_STATES,
} from "../helpers/agents.js";
import { expectSameTree } from "../helpers/tree.js";

const API = "/api/v1/live-migration";
const DATA_COPY = `${API}/data-copy-tasks`;
const VERIFY = `${API}/files-verification-tasks`;
const STATUS = `${API}/status`;
/** One SSTable set as the writer writes it: Data, Index, Filter, Statistics, Summary, CompressionInfo, Digest, TOC. */
const COMPONENTS_PER_SET = 8;

/** `<data>/<ks>/<table>/snapshots` subtrees: excluded by the default dirs_to_exclude. */
const tableSnapshots = (rel: string, isDir: boolean) => isDir && /^data\d+\/[^/]+\/[^/]+\/snapshots$/.test(rel);
const snapshotDirs = async (root: string) => (await readdir(root, { recursive: true })).filter((rel) => /(^|\/)snapshots$/.test(rel));
/** The gateway's error body. */
const error = (code: number, message: string) => ({ status: http.STATUS_CODES[code], code, message });

interface Counts {
  added: number;
  removed: number;
}

/** walkthrough.writer.ts as a child process; `counts` follows what it reports on stdout. */
class WriterProcess {
  counts: Counts = { added: 0, removed: 0 };
  private readonly waiters = new Set<() => void>();

  private constructor(readonly child: ChildProcess) {
    createInterface({ input: child.stdout! }).on("line", (line) => {
      if (line.startsWith("{")) this.counts = JSON.parse(line) as Counts;
      for (const w of this.waiters) w();
    });
  }

  static async start(intervalMs: number, dataDirs: readonly string[]): Promise<WriterProcess> {
    const child = spawn(process.execPath, ["--import", "tsx", "test/integration/walkthrough.writer.ts", String(intervalMs), ...dataDirs], {
      cwd: REPO_ROOT,
      stdio: ["ignore", "pipe", "inherit"],
    });
    const writer = new WriterProcess(child);
    await writer.until(() => true, 15_000); // the "started" line
    return writer;
  }

  /** Resolves once `done(counts)` holds; rejects after `timeoutMs` or if the writer exits. */
  until(done: (c: Counts) => boolean, timeoutMs = 10_000): Promise<Counts> {
    return new Promise((resolve, reject) => {
      const check = () => {
        if (!done(this.counts)) return;
        cleanup();
        resolve(this.counts);
      };
      const onExit = (code: number | null) => {
        cleanup();
        reject(new Error(`writer exited (${code}) at ${JSON.stringify(this.counts)}`));
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`writer stuck at ${JSON.stringify(this.counts)}`));
      }, timeoutMs);
      const cleanup = () => {
        clearTimeout(timer);
        this.waiters.delete(check);
        this.child.off("exit", onExit);
      };
      this.waiters.add(check);
      this.child.once("exit", onExit);
    });
  }

  /** SIGTERM, as the source Cassandra is drained and stopped; resolves with the final counts. */
  async stop(): Promise<Counts> {
    const exited = once(this.child, "exit");
    this.child.kill("SIGTERM");
    const [code] = (await exited) as [number | null];
    expect(code).toBe(0);
    return this.counts;
  }
}

let pair: Pair | undefined;
let writer: WriterProcess | undefined;
afterEach(async () => {
  if (writer && writer.child.exitCode === null && writer.child.signalCode === null) {
    const exited = once(writer.child, "exit");
    writer.child.kill("SIGKILL");
    await exited;
  }
  writer = undefined;
  await pair?.stop();
  pair = undefined;
});

async function dataCopy(p: Pair, successThreshold: number) {
  const body = { maxIterations: 10, successThreshold, maxConcurrency: 4 };
  const created = await p.destination.request("POST", DATA_COPY, { body });
  expect(created.status, created.text).toBe(202);
  expect(created.json).toEqual({ taskId: expect.any(String), statusUrl: `${DATA_COPY}/${created.json.taskId}` });
  const task = await pollUntil(p.destination, created.json.statusUrl, (t) => TERMINAL_DATA_COPY_STATES.includes(lastState(t) ?? ""), 60_000, 50);
  expect(task).toMatchObject({ taskId: created.json.taskId, source: SOURCE_HOST, port: p.gatewayPort, ...body });
  return task;
}

async function verify(p: Pair, digestAlgorithm: string) {
  const created = await p.destination.request("POST", VERIFY, { body: { maxConcurrency: 4, digestAlgorithm } });
  expect(created.status, created.text).toBe(202);
  expect(created.json).toEqual({ taskId: expect.any(String), statusUrl: `${VERIFY}/${created.json.taskId}` });
  return pollUntil(p.destination, created.json.statusUrl, (t) => ["COMPLETED", "FAILED", "CANCELLED"].includes(t.state), 60_000, 50);
}

/** [status, body] of one request, for exact assertions that show both on failure. */
async function answer(agent: AgentHandle, method: string, route: string, body?: unknown): Promise<[number, unknown]> {
  const r = await agent.request(method, route, { body });
  return [r.status, r.json ?? r.text];
}

describe("the guide's walkthrough", () => {
  it("phases 1–4 and 6: copy while the source writes, final sync, verification, completion, decommission", async () => {
    pair = await startPair({ populate: (layout) => generateDataset(layout.root, { profile: "tiny" }).then(() => undefined) });
    const p = pair;
    expect((await snapshotDirs(p.sourceLayout.root)).length).toBeGreaterThan(0);

    // Phase 1: the initial copy at 0.9 while the writer adds and retires SSTable sets; it has
    // already done both once when the task starts, and goes on during the task.
    writer = await WriterProcess.start(100, p.sourceLayout.dataDirs);
    const atStart = await writer.until((c) => c.removed >= 1);
    const initial = await dataCopy(p, 0.9);
    expect(lastState(initial)).toBe("SUCCESS");
    const atInitialEnd = writer.counts;
    expect(atInitialEnd.added).toBeGreaterThan(atStart.added);
    // The source keeps serving after the initial copy: one more flush and one more compaction
    // that the final sync has to pick up.
    await writer.until((c) => c.added > atInitialEnd.added && c.removed > atInitialEnd.removed);

    // Phase 2: the source is stopped; the final sync at 1.0 leaves an exact copy.
    const written = await writer.stop();
    writer = undefined;
    expect(written.added).toBeGreaterThanOrEqual(2);
    expect(written.removed).toBeGreaterThanOrEqual(1);
    const final = await dataCopy(p, 1.0);
    expect(lastState(final)).toBe("SUCCESS");
    expect(final.status[0].filesToDownload).toBeGreaterThanOrEqual(COMPONENTS_PER_SET);
    await expectSameTree(p.sourceLayout.root, p.destLayout.root, { exclude: tableSnapshots });
    expect(await snapshotDirs(p.destLayout.root)).toEqual([]);

    // Phase 3: verification with MD5 and with XXHash32, every failure counter 0.
    for (const digestAlgorithm of ["MD5", "XXHash32"]) {
      const task = await verify(p, digestAlgorithm);
      expect(task).toMatchObject({
        state: "COMPLETED",
        digestAlgorithm,
        source: SOURCE_HOST,
        port: p.gatewayPort,
        filesNotFoundAtSource: 0,
        filesNotFoundAtDestination: 0,
        metadataMismatches: 0,
        digestMismatches: 0,
        digestVerificationFailures: 0,
        mismatchedFiles: [],
      });
      expect(task.filesMatched).toBeGreaterThan(0);
      expect(task.metadataMatched).toBeGreaterThan(task.filesMatched); // directories match by metadata only
    }

    // Phase 4: both hosts COMPLETED; from then on nothing more is migrated.
    const commitlog = (await readdir(p.sourceLayout.commitlogDir))[0]!;
    const fileRoute = `${API}/files/commitlog/0/${commitlog}`;
    expect((await p.source.request("GET", fileRoute)).status).toBe(200);
    for (const agent of [p.source, p.destination]) {
      expect(await answer(agent, "GET", STATUS)).toEqual([200, { state: "NOT_COMPLETED", endTime: null }]);
      const before = Date.now();
      const done = await agent.request("POST", STATUS);
      expect([done.status, done.json]).toEqual([200, { state: "COMPLETED", endTime: expect.any(Number) }]);
      expect(done.json.endTime).toBeGreaterThanOrEqual(before - 1_000);
      expect(done.json.endTime).toBeLessThanOrEqual(Date.now() + 1_000);
      expect(await answer(agent, "GET", STATUS)).toEqual([200, done.json]);
    }
    const destCompleted = error(400, `Live migration is already marked COMPLETED for ${DEST_HOST}`);
    expect(await answer(p.destination, "POST", DATA_COPY, { maxIterations: 5, successThreshold: 1.0, maxConcurrency: 10 })).toEqual([400, destCompleted]);
    expect(await answer(p.destination, "POST", VERIFY, { maxConcurrency: 10, digestAlgorithm: "MD5" })).toEqual([400, destCompleted]);
    expect(await answer(p.source, "GET", fileRoute)).toEqual([
      400,
      error(400, `Live migration is already marked COMPLETED for ${SOURCE_HOST}`),
    ]);
    for (const agent of [p.source, p.destination]) {
      expect(await answer(agent, "POST", STATUS)).toEqual([400, error(400, "Live migration marked as COMPLETED earlier.")]);
      // The record cannot be cleared while the host is still in migration_map.
      expect(await answer(agent, "DELETE", STATUS)).toEqual([
        403,
        error(403, `Live migration: ${agent.host} is still in migration_map; remove it and restart before clearing the status`),
      ]);
    }

    // Phase 5 (start Cassandra on the destination) is the operator's: lm-sidecar runs no Cassandra.

    // Phase 6: both agents restart with an empty migration_map; the API is off and each
    // completion record can be cleared once.
    await p.source.restart({ migrationMap: {} });
    await p.destination.restart({ migrationMap: {} });
    for (const agent of [p.source, p.destination]) {
      const notDestination = error(404, `Live migration: ${agent.host} is not a destination in migration_map`);
      expect(await answer(agent, "GET", DATA_COPY)).toEqual([404, notDestination]);
      expect(await answer(agent, "POST", DATA_COPY, { maxIterations: 5, successThreshold: 1.0, maxConcurrency: 10 })).toEqual([404, notDestination]);
      expect(await answer(agent, "GET", VERIFY)).toEqual([404, notDestination]);
      expect(await answer(agent, "POST", VERIFY, { maxConcurrency: 10, digestAlgorithm: "MD5" })).toEqual([404, notDestination]);
      // The guide's prose says GET /status stays 200 here; the Java code (and lm-sidecar) answer 404.
      expect(await answer(agent, "GET", STATUS)).toEqual([404, error(404, `Live migration: ${agent.host} is not in migration_map`)]);
    }
    expect(await answer(p.source, "GET", fileRoute)).toEqual([
      404,
      error(404, `Live migration: ${SOURCE_HOST} is not a source in migration_map`),
    ]);
    for (const agent of [p.source, p.destination]) {
      const record = path.join(agent.spec.layout.stagingDir, "live_migration_status.json");
      await access(record);
      expect(await answer(agent, "DELETE", STATUS)).toEqual([200, { status: "OK" }]);
      await expect(access(record)).rejects.toThrow(/ENOENT/);
      expect(await answer(agent, "DELETE", STATUS)).toEqual([400, error(400, `Live Migration status file does not exist for instance ${agent.host}`)]);
    }
  }, 60_000);
});
