/**
 * The guide's walkthrough, phases 1–6, through the REST API of two real agents (source
 * 127.0.0.1, destination 127.0.0.2), while a separate writer process plays the live source.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { readdir } from "node:fs/promises";
import { afterEach, describe, expect, it } from "vitest";
import { generateDataset } from "../../src/dataset/generate.js";
import { DEST_HOST, lastState, pollUntil, REPO_ROOT, SOURCE_HOST, startPair, TERMINAL_DATA_COPY_STATES, type Pair } from "../helpers/agents.js";
import { expectSameTree } from "../helpers/tree.js";

const API = "/api/v1/live-migration";
const DATA_COPY = `${API}/data-copy-tasks`;
const VERIFY = `${API}/files-verification-tasks`;

let pair: Pair | undefined;
let writer: ChildProcess | undefined;
afterEach(async () => {
  writer?.kill("SIGKILL");
  writer = undefined;
  await pair?.stop();
  pair = undefined;
});

const tableSnapshots = (rel: string, isDir: boolean) => isDir && /^data\d+\/[^/]+\/[^/]+\/snapshots$/.test(rel);
const badRequest = (message: string) => ({ status: "Bad Request", code: 400, message });

/** Starts the writer process on the source's data dirs; resolves once it writes. */
async function startWriter(dataDirs: readonly string[]): Promise<ChildProcess> {
  const child = spawn(process.execPath, ["--import", "tsx", "test/integration/walkthrough.writer.ts", ...dataDirs], {
    cwd: REPO_ROOT,
    stdio: ["ignore", "pipe", "inherit"],
  });
  const [first] = (await once(child.stdout!, "data")) as [Buffer];
  expect(first.toString()).toContain("started");
  return child;
}

/** Stops the writer (the source is now "stopped") and returns what it did. */
async function stopWriter(child: ChildProcess): Promise<{ added: number; removed: number }> {
  let out = "";
  child.stdout!.on("data", (d: Buffer) => (out += d.toString()));
  child.kill("SIGTERM");
  await once(child, "exit");
  return JSON.parse(out.trim().split("\n").at(-1)!) as { added: number; removed: number };
}

async function dataCopy(p: Pair, successThreshold: number) {
  const created = await p.destination.request("POST", DATA_COPY, { body: { maxIterations: 10, successThreshold, maxConcurrency: 4 } });
  expect(created.status, created.text).toBe(202);
  return pollUntil(p.destination, created.json.statusUrl, (t) => TERMINAL_DATA_COPY_STATES.includes(lastState(t) ?? ""), 90_000);
}

async function verify(p: Pair, digestAlgorithm: string) {
  const created = await p.destination.request("POST", VERIFY, { body: { maxConcurrency: 4, digestAlgorithm } });
  expect(created.status, created.text).toBe(202);
  return pollUntil(p.destination, created.json.statusUrl, (t) => ["COMPLETED", "FAILED", "CANCELLED"].includes(t.state), 90_000);
}

describe("the guide's walkthrough", () => {
  it("phases 1–4 and 6: copy while the source writes, final sync, verification, completion, clean-up", async () => {
    pair = await startPair({ populate: (layout) => generateDataset(layout.root, { profile: "tiny" }).then(() => undefined) });
    const p = pair;

    // Phase 1: the initial copy at 0.9 while a writer adds and retires SSTable sets.
    writer = await startWriter(p.sourceLayout.dataDirs);
    const initial = await dataCopy(p, 0.9);
    expect(lastState(initial)).toBe("SUCCESS");
    const activity = await stopWriter(writer);
    writer = undefined;
    expect(activity.added).toBeGreaterThan(0);
    expect(activity.removed).toBeGreaterThan(0);

    // Phase 2: the source is stopped; the final sync at 1.0 leaves an exact copy.
    const final = await dataCopy(p, 1.0);
    expect(lastState(final)).toBe("SUCCESS");
    await expectSameTree(p.sourceLayout.root, p.destLayout.root, { exclude: tableSnapshots });
    expect((await readdir(p.destLayout.root, { recursive: true })).filter((f) => f.endsWith("/snapshots"))).toEqual([]);

    // Phase 3: verification with MD5 and with XXHash32, every failure counter 0.
    for (const algorithm of ["MD5", "XXHash32"]) {
      const task = await verify(p, algorithm);
      expect(task).toMatchObject({
        state: "COMPLETED",
        digestAlgorithm: algorithm,
        filesNotFoundAtSource: 0,
        filesNotFoundAtDestination: 0,
        metadataMismatches: 0,
        digestMismatches: 0,
        digestVerificationFailures: 0,
      });
      expect(task.metadataMatched).toBeGreaterThan(task.filesMatched);
      expect(task.filesMatched).toBeGreaterThan(0);
    }

    // Phase 4: both hosts COMPLETED; then nothing more may be migrated.
    for (const agent of [p.source, p.destination]) {
      const done = await agent.request("POST", `${API}/status`);
      expect(done.status).toBe(200);
      expect(done.json).toEqual({ state: "COMPLETED", endTime: expect.any(Number) });
      const again = await agent.request("POST", `${API}/status`);
      expect([again.status, again.json]).toEqual([400, badRequest("Live migration marked as COMPLETED earlier.")]);
    }
    const destCompleted = badRequest(`Live migration is already marked COMPLETED for ${DEST_HOST}`);
    const copyAfter = await p.destination.request("POST", DATA_COPY, { body: { maxIterations: 1, successThreshold: 1, maxConcurrency: 1 } });
    expect([copyAfter.status, copyAfter.json]).toEqual([400, destCompleted]);
    const verifyAfter = await p.destination.request("POST", VERIFY, { body: { maxConcurrency: 1, digestAlgorithm: "MD5" } });
    expect([verifyAfter.status, verifyAfter.json]).toEqual([400, destCompleted]);
    const fileAfter = await p.source.request("GET", `${API}/files/commitlog/0/${(await readdir(p.sourceLayout.commitlogDir))[0]}`);
    expect([fileAfter.status, fileAfter.json]).toEqual([400, badRequest(`Live migration is already marked COMPLETED for ${SOURCE_HOST}`)]);

    // Phase 5 (start Cassandra on the destination) is the operator's: lm-sidecar runs no Cassandra.

    // Phase 6: both agents restart with an empty migration_map; the task routes are gone and
    // the status record can be cleared once.
    for (const agent of [p.source, p.destination]) {
      await agent.restart({ migrationMap: {} });
      for (const route of [DATA_COPY, VERIFY]) expect((await agent.request("GET", route)).status).toBe(404);
      const cleared = await agent.request("DELETE", `${API}/status`);
      expect([cleared.status, cleared.json]).toEqual([200, { status: "OK" }]);
      const clearedAgain = await agent.request("DELETE", `${API}/status`);
      expect([clearedAgain.status, clearedAgain.json]).toEqual([400, badRequest(`Live Migration status file does not exist for instance ${agent.host}`)]);
    }
  }, 180_000);
});
