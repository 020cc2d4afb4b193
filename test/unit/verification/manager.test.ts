import { readFile } from "node:fs/promises";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { AgentError } from "../../../src/errors.js";
import type { TaskDeps } from "../../../src/migration/task-deps.js";
import { TaskSlot, type MigrationTask } from "../../../src/migration/task-slot.js";
import { VerificationManager } from "../../../src/migration/verification/manager.js";
import { VerificationTaskStore } from "../../../src/migration/verification/store.js";
import { makeEnv, SAMPLE_DIRS, SAMPLE_FILES, type Env, waitFor } from "./fixtures.js";

let env: Env | undefined;
afterEach(async () => {
  await env?.cleanup();
  env = undefined;
});

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

async function settle(deps: TaskDeps): Promise<void> {
  await deps.instance.slot.current()?.settled;
}

function dataCopyTask(id: string, finished = false): MigrationTask {
  return { id, kind: "data-copy", finished, settled: Promise.resolve() };
}

describe("VerificationManager.create validation (Java order and messages)", () => {
  const cases: [string, { maxConcurrency: number; digestAlgorithm: string }, string][] = [
    ["maxConcurrency < 1 first", { maxConcurrency: 0, digestAlgorithm: "" }, "maxConcurrency must be >= 1"],
    ["negative maxConcurrency", { maxConcurrency: -3, digestAlgorithm: "MD5" }, "maxConcurrency must be >= 1"],
    ["blank algorithm before the limit", { maxConcurrency: 50, digestAlgorithm: "  " }, "Digest algorithm name cannot be null or empty"],
    ["limit before the algorithm", { maxConcurrency: 21, digestAlgorithm: "SHA1" }, "max concurrency can not be more than 20"],
    ["unknown algorithm", { maxConcurrency: 20, digestAlgorithm: "SHA1" }, "Unsupported digest algorithm SHA1"],
    ["internal hash not offered", { maxConcurrency: 1, digestAlgorithm: "xxh64" }, "Unsupported digest algorithm xxh64"],
  ];
  for (const [name, request, message] of cases) {
    it(name, async () => {
      env = await makeEnv();
      const manager = new VerificationManager(env.deps, { store: null });
      await expect(manager.create(request)).rejects.toMatchObject({ code: "InvalidArgument", message });
      expect(env.deps.instance.slot.current()).toBeUndefined();
    });
  }
});

describe("VerificationManager tasks", () => {
  it("creates a task with a UUID id, then list and get show it", async () => {
    env = await makeEnv();
    const manager = new VerificationManager(env.deps, { store: null });
    expect(manager.list()).toEqual([]);
    const { taskId } = await manager.create({ maxConcurrency: 2, digestAlgorithm: "Md5" });
    expect(taskId).toMatch(UUID);
    expect(["NOT_STARTED", "IN_PROGRESS"]).toContain(manager.get(taskId).state);
    await settle(env.deps);
    const view = manager.get(taskId);
    expect(view).toMatchObject({ id: taskId, digestAlgorithm: "Md5", state: "COMPLETED", metadataMatched: SAMPLE_FILES + SAMPLE_DIRS });
    expect(manager.list()).toEqual([view]);
    expect(Object.keys(view).sort()).toEqual(
      [
        "id",
        "digestAlgorithm",
        "state",
        "source",
        "port",
        "filesNotFoundAtSource",
        "filesNotFoundAtDestination",
        "metadataMatched",
        "metadataMismatches",
        "digestMismatches",
        "digestVerificationFailures",
        "filesMatched",
        "mismatchedFiles",
      ].sort(),
    );
  });

  it("answers 409 while another verification runs, and replaces a finished one with a new id", async () => {
    env = await makeEnv();
    env.peer.digestDelayMs = 100;
    const manager = new VerificationManager(env.deps, { store: null });
    const first = await manager.create({ maxConcurrency: 1, digestAlgorithm: "MD5" });
    await expect(manager.create({ maxConcurrency: 1, digestAlgorithm: "MD5" })).rejects.toMatchObject({
      code: "AlreadyExists",
      message: "Another files digest verification is in progress for instance=2",
    });
    await settle(env.deps);
    env.peer.digestDelayMs = 0;
    const ids = new Set([first.taskId]);
    for (let i = 0; i < 5; i++) {
      const { taskId } = await manager.create({ maxConcurrency: 1, digestAlgorithm: "XXHash32" });
      ids.add(taskId);
      await settle(env.deps);
      expect(manager.list().map((t) => t.id)).toEqual([taskId]);
    }
    expect(ids.size).toBe(6);
    expect(() => manager.get(first.taskId)).toThrow(new AgentError("NotFound", `No task found with given id ${first.taskId}`));
  });

  it("answers 409 with the same message while a data-copy task holds the slot, and hides data-copy tasks", async () => {
    env = await makeEnv();
    const slot: TaskSlot = env.deps.instance.slot;
    await slot.claim("busy", () => dataCopyTask("dc-1"));
    const manager = new VerificationManager(env.deps, { store: null });
    await expect(manager.create({ maxConcurrency: 1, digestAlgorithm: "MD5" })).rejects.toMatchObject({
      code: "AlreadyExists",
      message: "Another files digest verification is in progress for instance=2",
    });
    expect(manager.list()).toEqual([]);
    expect(() => manager.get("dc-1")).toThrow(new AgentError("NotFound", "Task dc-1 is not a files verification task"));
    await expect(manager.cancel("dc-1")).rejects.toMatchObject({ code: "NotFound", message: "Task dc-1 is not a files verification task" });
    expect(env.peer.connects).toBe(0);
  });

  it("starts once a data-copy task has finished", async () => {
    env = await makeEnv();
    env.deps.instance.slot.restore(dataCopyTask("dc-2", true));
    const manager = new VerificationManager(env.deps, { store: null });
    const { taskId } = await manager.create({ maxConcurrency: 1, digestAlgorithm: "MD5" });
    await settle(env.deps);
    expect(manager.get(taskId).state).toBe("COMPLETED");
  });

  it("lets exactly one of 20 concurrent creations win", async () => {
    env = await makeEnv();
    const manager = new VerificationManager(env.deps, { store: null });
    const results = await Promise.allSettled(Array.from({ length: 20 }, () => manager.create({ maxConcurrency: 2, digestAlgorithm: "MD5" })));
    expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(1);
    for (const r of results) if (r.status === "rejected") expect(r.reason).toMatchObject({ code: "AlreadyExists" });
    await settle(env.deps);
  });

  it("get and cancel of an unknown id: NotFound", async () => {
    env = await makeEnv();
    const manager = new VerificationManager(env.deps, { store: null });
    expect(() => manager.get("nope")).toThrow(new AgentError("NotFound", "No task found with given id nope"));
    await expect(manager.cancel("nope")).rejects.toMatchObject({ code: "NotFound", message: "No task found with given id nope" });
  });

  it("cancel of a COMPLETED task returns it unchanged", async () => {
    env = await makeEnv();
    const manager = new VerificationManager(env.deps, { store: null });
    const { taskId } = await manager.create({ maxConcurrency: 2, digestAlgorithm: "MD5" });
    await settle(env.deps);
    const before = manager.get(taskId);
    expect(before.state).toBe("COMPLETED");
    expect(await manager.cancel(taskId)).toEqual(before);
    expect(await manager.cancel(taskId)).toEqual(before);
  });

  it("cancel of a running task, twice: CANCELLED both times", async () => {
    env = await makeEnv();
    env.peer.digestDelayMs = 200;
    const manager = new VerificationManager(env.deps, { store: null });
    const { taskId } = await manager.create({ maxConcurrency: 1, digestAlgorithm: "MD5" });
    await waitFor(() => env!.peer.digestStarts.length > 0);
    expect((await manager.cancel(taskId)).state).toBe("CANCELLED");
    expect((await manager.cancel(taskId)).state).toBe("CANCELLED");
  });

  it("close() cancels a running task and waits for it", async () => {
    env = await makeEnv();
    env.peer.digestDelayMs = 200;
    const manager = new VerificationManager(env.deps, { store: null });
    const { taskId } = await manager.create({ maxConcurrency: 1, digestAlgorithm: "MD5" });
    await waitFor(() => env!.peer.digestStarts.length > 0);
    await manager.close();
    expect(manager.get(taskId).state).toBe("CANCELLED");
    expect(env.peer.closes).toBe(1);
  });
});

describe("VerificationManager persistence", () => {
  it("keeps the last view in <staging>/live_migration_tasks/last-verification-task.json and restores it", async () => {
    env = await makeEnv();
    const manager = new VerificationManager(env.deps);
    const { taskId } = await manager.create({ maxConcurrency: 2, digestAlgorithm: "MD5" });
    await settle(env.deps);
    const view = manager.get(taskId);
    const file = path.join(env.deps.instance.config.stagingDir, "live_migration_tasks", "last-verification-task.json");
    expect(JSON.parse(await readFile(file, "utf8"))).toMatchObject({ version: 1, kind: "files-verification", createdAt: expect.any(Number), task: view });

    const restartedDeps: TaskDeps = { ...env.deps, instance: { ...env.deps.instance, slot: new TaskSlot() } };
    const restarted = new VerificationManager(restartedDeps);
    await restarted.init();
    expect(restarted.get(taskId)).toEqual(view);
    expect(restarted.list()).toEqual([view]);
    expect(await restarted.cancel(taskId)).toEqual(view);
    // a new task replaces the restored one
    const next = await restarted.create({ maxConcurrency: 2, digestAlgorithm: "MD5" });
    await settle(restartedDeps);
    expect(restarted.get(next.taskId).state).toBe("COMPLETED");
  });

  it("restores a task saved while running as FAILED; of two restored tasks the newer stays", async () => {
    env = await makeEnv();
    const store = new VerificationTaskStore(env.deps.instance.config.stagingDir);
    const running = {
      id: "t-run",
      digestAlgorithm: "MD5",
      state: "IN_PROGRESS" as const,
      source: "10.0.0.1",
      port: 9043,
      filesNotFoundAtSource: 0,
      filesNotFoundAtDestination: 0,
      metadataMatched: 3,
      metadataMismatches: 0,
      digestMismatches: 0,
      digestVerificationFailures: 0,
      filesMatched: 1,
      mismatchedFiles: [],
    };
    await store.save(running, 2_000);
    const manager = new VerificationManager(env.deps, { store });
    await manager.init();
    expect(manager.get("t-run")).toMatchObject({ state: "FAILED", failureReason: "the agent stopped while the task was IN_PROGRESS", filesMatched: 1 });

    // A data-copy task restored first but created earlier gives way to the newer verification task...
    const olderCopy: TaskDeps = { ...env.deps, instance: { ...env.deps.instance, slot: new TaskSlot() } };
    olderCopy.instance.slot.restore(dataCopyTask("dc-8", true), 1_000);
    await new VerificationManager(olderCopy, { store }).init();
    expect(olderCopy.instance.slot.current()!.id).toBe("t-run");

    // ...and a newer one stays.
    const newerCopy: TaskDeps = { ...env.deps, instance: { ...env.deps.instance, slot: new TaskSlot() } };
    newerCopy.instance.slot.restore(dataCopyTask("dc-9", true), 3_000);
    await new VerificationManager(newerCopy, { store }).init();
    expect(newerCopy.instance.slot.current()!.id).toBe("dc-9");

    // A task claimed since start is never replaced by a restored one.
    const claimed: TaskDeps = { ...env.deps, instance: { ...env.deps.instance, slot: new TaskSlot() } };
    await claimed.instance.slot.claim("busy", () => dataCopyTask("dc-live", false));
    await new VerificationManager(claimed, { store }).init();
    expect(claimed.instance.slot.current()!.id).toBe("dc-live");
  });

  it("init() survives a corrupt file", async () => {
    env = await makeEnv();
    const store = new VerificationTaskStore(env.deps.instance.config.stagingDir);
    const { mkdir, writeFile } = await import("node:fs/promises");
    await mkdir(path.dirname(store.file), { recursive: true });
    await writeFile(store.file, "{not json");
    const manager = new VerificationManager(env.deps, { store });
    await manager.init();
    expect(manager.list()).toEqual([]);
    expect(env.logs.lines.some((l) => l["level"] === 40 && l["msg"] === "Could not restore the last verification task")).toBe(true);
  });
});
