import { execFile } from "node:child_process";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
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

  it("merges calls that arrive while a syncfs runs, and answers every caller", async () => {
    const { syncFiles } = await import("../../src/fs/durable.js");
    const written = await files(40);
    const groups = Array.from({ length: 8 }, (_, i) => written.slice(i * 5, i * 5 + 5));
    await Promise.all(groups.map((group) => syncFiles(group)));
    expect(await readFile(written[39]!, "utf8")).toBe("content 39");
  });

  it("fsyncs files in a directory whose name cannot be sent to the shell (a newline)", async () => {
    const { syncFiles } = await import("../../src/fs/durable.js");
    await files(0);
    const odd = path.join(dir!, "a\nb");
    await mkdir(odd);
    await writeFile(path.join(odd, "f"), "x");
    await syncFiles([path.join(odd, "f")]);
    // Only the per-file fallback opens each file, so only it notices a missing one.
    await expect(syncFiles([path.join(odd, "missing")])).rejects.toMatchObject({ code: "ENOENT" });
  });

  it("fsyncs file by file when a directory of the group is gone, so the error names what is missing", async () => {
    const { syncFiles } = await import("../../src/fs/durable.js");
    const written = await files(2);
    await expect(syncFiles([...written, path.join(dir!, "gone", "f")])).rejects.toMatchObject({ code: "ENOENT" });
    await syncFiles(written); // syncfs still used afterwards
  });

  it("does not keep the process alive once idle", async () => {
    const written = await files(2);
    const script = `import { syncFiles } from ${JSON.stringify(path.resolve("src/fs/durable.ts"))};
      await syncFiles(${JSON.stringify(written)}); console.log("synced");`;
    const started = Date.now();
    const stdout = await new Promise<string>((resolve, reject) =>
      execFile(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], { timeout: 20_000 }, (err, out) =>
        err ? reject(err) : resolve(out),
      ),
    );
    expect(stdout.trim()).toBe("synced");
    expect(Date.now() - started).toBeLessThan(15_000);
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

describe("syncDirectories", () => {
  it("syncs many directories of one filesystem at once; a missing one is named by its fsync error", async () => {
    const { syncDirectories } = await import("../../src/fs/durable.js");
    await files(0);
    const dirs = ["a", "b", path.join("b", "c")].map((d) => path.join(dir!, d));
    for (const d of dirs) await mkdir(d, { recursive: true });
    await writeFile(path.join(dirs[2]!, "f"), "renamed here");
    await syncDirectories(dirs);
    expect(await readFile(path.join(dirs[2]!, "f"), "utf8")).toBe("renamed here");
    await syncDirectories([]);
    await expect(syncDirectories([...dirs, path.join(dir!, "gone")])).rejects.toMatchObject({ code: "ENOENT" });
  });

  it("falls back to one fsync per directory when `sync` cannot run", async () => {
    process.env.PATH = "/nonexistent";
    const { syncDirectories } = await import("../../src/fs/durable.js");
    await files(0);
    const dirs = ["x", "y"].map((d) => path.join(dir!, d));
    for (const d of dirs) await mkdir(d);
    await syncDirectories(dirs);
    await expect(syncDirectories([...dirs, path.join(dir!, "gone")])).rejects.toMatchObject({ code: "ENOENT" });
  });
});
