import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it, vi } from "vitest";

let dir: string | undefined;
const savedPath = process.env.PATH;
afterEach(async () => {
  process.env.PATH = savedPath;
  vi.resetModules();
  if (dir) await rm(dir, { recursive: true, force: true });
});

async function files(n: number): Promise<string[]> {
  dir = await mkdtemp(path.join(os.tmpdir(), "lm-durable-"));
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    const file = path.join(dir, `f${i}`);
    await writeFile(file, `content ${i}`);
    out.push(file);
  }
  return out;
}

describe("syncFiles", () => {
  it("syncs a group of files with one `sync -f`, leaving them intact", async () => {
    const { syncFiles } = await import("../../src/fs/durable.js");
    const written = await files(5);
    await syncFiles(written);
    expect(await readFile(written[3]!, "utf8")).toBe("content 3");
    await syncFiles([]);
  });

  it("falls back to one fsync per file when `sync` cannot run", async () => {
    process.env.PATH = "/nonexistent";
    const { syncFiles } = await import("../../src/fs/durable.js");
    const written = await files(3);
    await syncFiles(written);
    // Only the per-file fallback opens each file, so only it notices a missing one.
    await expect(syncFiles([...written, path.join(dir!, "missing")])).rejects.toMatchObject({ code: "ENOENT" });
  });
});
