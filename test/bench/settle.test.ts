import { mkdir, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { makeTempDir, removeTempDirs } from "../helpers/tree.js";
import { readdir } from "node:fs/promises";
import { createCostUs, DELETION_SETTLE_MS, lastLargeDeletion, onExt4WithoutJournal, PROBE_FILES, recordDeletion, settleDeletions, SLOW_CREATE_US } from "./settle.js";

afterAll(removeTempDirs);

describe("settleDeletions", () => {
  // Every test keeps its per-filesystem records in a directory of its own, never in the real one.
  // Creates are reported fast: the real probe would measure the machine's own state.
  const settleFast = async (workDir: string, sharedDir: string) => {
    const lines: string[] = [];
    const started = Date.now();
    const waited = await settleDeletions(workDir, (l) => lines.push(l), { sharedDir, probe: async () => 0 });
    return { waited, lines, tookMs: Date.now() - started };
  };

  it("does not wait without a recorded deletion, after a small one, or after an old one", async () => {
    const workDir = await makeTempDir("lm-settle-");
    const sharedDir = await makeTempDir("lm-settle-shared-");
    expect(await settleFast(workDir, sharedDir)).toMatchObject({ waited: 0, lines: [] });

    await recordDeletion(workDir, 400, sharedDir);
    const small = await settleFast(workDir, sharedDir);
    expect(small).toMatchObject({ waited: 0, lines: [] });
    expect(small.tookMs).toBeLessThan(1000);

    const old = JSON.stringify({ at: Date.now() - DELETION_SETTLE_MS - 1000, files: 100_000 });
    await writeFile(path.join(workDir, "last-deletion.json"), old);
    await recordDeletion(await makeTempDir("lm-settle-other-"), 400, sharedDir);
    expect(await settleFast(workDir, sharedDir)).toMatchObject({ waited: 0, lines: [] });
  });

  it("counts a large deletion recorded by another work directory on the same filesystem", async () => {
    const sharedDir = await makeTempDir("lm-settle-shared-");
    const small = await makeTempDir("lm-settle-small-");
    const large = await makeTempDir("lm-settle-large-");
    expect(await lastLargeDeletion(large, sharedDir)).toBeUndefined();

    const before = Date.now();
    await recordDeletion(small, 300_000, sharedDir);
    expect(await lastLargeDeletion(large, sharedDir)).toEqual({ at: expect.any(Number), files: 300_000 });
    expect((await lastLargeDeletion(large, sharedDir))!.at).toBeGreaterThanOrEqual(before);

    // Its own older record does not hide the other's newer one; a newer own one wins.
    await writeFile(path.join(large, "last-deletion.json"), JSON.stringify({ at: before - 60_000, files: 50_000 }));
    expect(await lastLargeDeletion(large, sharedDir)).toMatchObject({ files: 300_000 });
    await writeFile(path.join(large, "last-deletion.json"), JSON.stringify({ at: Date.now() + 1000, files: 50_000 }));
    expect(await lastLargeDeletion(large, sharedDir)).toMatchObject({ files: 50_000 });

    // A smaller deletion elsewhere does not hide it.
    await recordDeletion(small, 400, sharedDir);
    expect(await lastLargeDeletion(await makeTempDir("lm-settle-third-"), sharedDir)).toMatchObject({ files: 300_000 });

    // Another filesystem's records are its own (tmpfs).
    const shm = path.join("/dev/shm", `lm-settle-large-${process.pid}`);
    await mkdir(shm, { recursive: true });
    try {
      expect(await lastLargeDeletion(shm, sharedDir)).toBeUndefined();
    } finally {
      await rm(shm, { recursive: true, force: true });
    }
  });

  it("never waits on a filesystem other than ext4 without a journal (tmpfs)", async () => {
    const sharedDir = await makeTempDir("lm-settle-shared-");
    const shm = path.join("/dev/shm", `lm-settle-${process.pid}`);
    await mkdir(shm, { recursive: true });
    try {
      expect(await onExt4WithoutJournal(shm)).toBe(false);
      await recordDeletion(shm, 100_000, sharedDir);
      expect(await settleFast(shm, sharedDir)).toMatchObject({ waited: 0, lines: [] });
      expect(await onExt4WithoutJournal(path.join(shm, "missing"))).toBe(false);
    } finally {
      await rm(shm, { recursive: true, force: true });
    }
  });

  it("after a slow probe waits the whole settling time once, without probing again", async () => {
    const workDir = await makeTempDir("lm-settle-");
    const sharedDir = await makeTempDir("lm-settle-shared-");
    const probed: string[] = [];
    const settle = async (costUs: number) => {
      const lines: string[] = [];
      const probe = async (dir: string) => {
        probed.push(dir);
        return costUs;
      };
      const options = { sharedDir, probe, slowCreateWaitMs: 30, needsSettling: async () => true };
      const started = Date.now();
      const waited = await settleDeletions(workDir, (l) => lines.push(l), options);
      return { waited, lines, tookMs: Date.now() - started };
    };
    const slow = await settle(580);
    expect(probed).toEqual([path.join(workDir, "create-probes")]);
    expect(slow.waited).toBe(30);
    expect(slow.tookMs).toBeGreaterThanOrEqual(29);
    expect(slow.lines).toEqual([
      "ext4 without a journal: creating a file takes 580 µs (over 150): files were deleted in the last 6 minutes, not by this benchmark; " +
        "waiting 0 s (test/bench/settle.ts)",
    ]);
    expect(await settle(SLOW_CREATE_US)).toMatchObject({ waited: 0, lines: [] });
    expect(probed).toHaveLength(2);

    // Elsewhere it neither probes nor waits.
    const none: string[] = [];
    expect(await settleDeletions(workDir, (l) => none.push(l), { sharedDir, probe: async () => 1000, needsSettling: async () => false })).toBe(0);
    expect(none).toEqual([]);
  });

  it("measures the time creating files takes, and leaves them for the caller's cleanup", async () => {
    const dir = path.join(await makeTempDir("lm-settle-probe-"), "create-probes");
    const costUs = await createCostUs(dir, PROBE_FILES);
    expect(Number.isFinite(costUs)).toBe(true);
    expect(costUs).toBeGreaterThan(0);
    const [probe, ...others] = await readdir(dir);
    expect(others).toEqual([]);
    expect(probe).toMatch(/^create-probe-/);
    expect((await readdir(path.join(dir, probe!))).length).toBe(PROBE_FILES);
  });
});
