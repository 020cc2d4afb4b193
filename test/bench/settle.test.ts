import { mkdir, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { makeTempDir, removeTempDirs } from "../helpers/tree.js";
import { DELETION_SETTLE_MS, onExt4WithoutJournal, recordDeletion, settleDeletions } from "./settle.js";

afterAll(removeTempDirs);

describe("settleDeletions", () => {
  const settleFast = async (workDir: string) => {
    const lines: string[] = [];
    const started = Date.now();
    const waited = await settleDeletions(workDir, (l) => lines.push(l));
    return { waited, lines, tookMs: Date.now() - started };
  };

  it("does not wait without a recorded deletion, after a small one, or after an old one", async () => {
    const workDir = await makeTempDir("lm-settle-");
    expect(await settleFast(workDir)).toMatchObject({ waited: 0, lines: [] });

    await recordDeletion(workDir, 400);
    const small = await settleFast(workDir);
    expect(small).toMatchObject({ waited: 0, lines: [] });
    expect(small.tookMs).toBeLessThan(1000);

    await writeFile(path.join(workDir, "last-deletion.json"), JSON.stringify({ at: Date.now() - DELETION_SETTLE_MS - 1000, files: 100_000 }));
    expect(await settleFast(workDir)).toMatchObject({ waited: 0, lines: [] });
  });

  it("never waits on a filesystem other than ext4 without a journal (tmpfs)", async () => {
    const shm = path.join("/dev/shm", `lm-settle-${process.pid}`);
    await mkdir(shm, { recursive: true });
    try {
      expect(await onExt4WithoutJournal(shm)).toBe(false);
      await recordDeletion(shm, 100_000);
      expect(await settleFast(shm)).toMatchObject({ waited: 0, lines: [] });
      expect(await onExt4WithoutJournal(path.join(shm, "missing"))).toBe(false);
    } finally {
      await rm(shm, { recursive: true, force: true });
    }
  });
});
