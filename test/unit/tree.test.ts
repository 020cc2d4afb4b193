import { cp, mkdir, readFile, rm, symlink, utimes, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { expectSameTree, makeTempDir, removeTempDirs, snapshotTree } from "../helpers/tree.js";

afterAll(removeTempDirs);

const T0 = 1_700_000_000; // epoch seconds

/** A small tree: a/x.db (4 KiB), a/b/y.txt, c/ (empty), top.bin; fixed mtimes. */
async function makeTree(root: string): Promise<void> {
  await mkdir(path.join(root, "a", "b"), { recursive: true });
  await mkdir(path.join(root, "c"), { recursive: true });
  const files: [string, Buffer | string][] = [
    ["a/x.db", Buffer.alloc(4096, 7)],
    ["a/b/y.txt", "hello\n"],
    ["top.bin", Buffer.from([1, 2, 3, 4])],
  ];
  for (const [rel, data] of files) {
    const abs = path.join(root, rel);
    await writeFile(abs, data);
    await utimes(abs, T0, T0);
  }
}

async function pair(): Promise<[string, string]> {
  const base = await makeTempDir("lm-tree-");
  const src = path.join(base, "src");
  const dst = path.join(base, "dst");
  await makeTree(src);
  await cp(src, dst, { recursive: true, preserveTimestamps: true });
  return [src, dst];
}

describe("snapshotTree", () => {
  it("lists files and dirs sorted by rel, with sizes, ms mtimes and optional sha256", async () => {
    const [src] = await pair();
    await symlink("a/x.db", path.join(src, "link")); // not followed, not listed
    const tree = await snapshotTree(src, { withContent: true });
    expect(tree.map((e) => `${e.type}:${e.rel}`)).toEqual(["dir:a", "dir:a/b", "file:a/b/y.txt", "file:a/x.db", "dir:c", "file:top.bin"]);
    const x = tree.find((e) => e.rel === "a/x.db")!;
    expect(x).toMatchObject({ size: 4096, mtimeMs: T0 * 1000 });
    expect(x.sha256).toMatch(/^[0-9a-f]{64}$/);
    const plain = await snapshotTree(src, { exclude: (rel, isDir) => isDir && rel === "a" });
    expect(plain.map((e) => e.rel)).toEqual(["c", "top.bin"]);
    expect(plain[1]!.sha256).toBeUndefined();
  });
});

describe("expectSameTree", () => {
  it("passes for equal trees (directory mtimes are ignored)", async () => {
    const [src, dst] = await pair();
    await utimes(path.join(dst, "a"), T0 - 50, T0 - 50);
    await expect(expectSameTree(src, dst)).resolves.toBeUndefined();
  });

  it("fails on a flipped byte, naming the file", async () => {
    const [src, dst] = await pair();
    const abs = path.join(dst, "a", "x.db");
    const buf = await readFile(abs);
    buf[1000] = buf[1000]! ^ 0x01;
    await writeFile(abs, buf);
    await utimes(abs, T0, T0);
    await expect(expectSameTree(src, dst)).rejects.toThrow(/content: a\/x\.db/);
  });

  it("fails on an mtime change, naming the file", async () => {
    const [src, dst] = await pair();
    await utimes(path.join(dst, "a", "b", "y.txt"), T0, T0 + 0.002);
    await expect(expectSameTree(src, dst)).rejects.toThrow(/mtime: a\/b\/y\.txt source 1700000000000 ms, destination 1700000000002 ms/);
  });

  it("fails on a missing file, an extra file, a size change and a type change", async () => {
    const [src, dst] = await pair();
    await rm(path.join(dst, "top.bin"));
    await writeFile(path.join(dst, "c", "new.db"), "x");
    await writeFile(path.join(dst, "a", "b", "y.txt"), "hello world\n");
    await rm(path.join(dst, "a", "x.db"));
    await mkdir(path.join(dst, "a", "x.db"));
    const err = await expectSameTree(src, dst).then(
      () => undefined,
      (e: unknown) => e as Error,
    );
    expect(err?.name).toBe("AssertionError");
    expect(err?.message).toMatch(/missing: top\.bin/);
    expect(err?.message).toMatch(/extra: c\/new\.db/);
    expect(err?.message).toMatch(/size: a\/b\/y\.txt source 6 B, destination 12 B/);
    expect(err?.message).toMatch(/type: a\/x\.db is a file at the source, a dir at the destination/);
  });

  it("lists at most 20 differences and honours exclude", async () => {
    const [src, dst] = await pair();
    await mkdir(path.join(dst, "junk"));
    for (let i = 0; i < 30; i++) await writeFile(path.join(dst, "junk", `f${String(i).padStart(2, "0")}`), "");
    await expect(expectSameTree(src, dst)).rejects.toThrow(/31 difference\(s\)[\s\S]*… and 11 more/);
    await expect(expectSameTree(src, dst, { exclude: (rel) => rel === "junk" })).resolves.toBeUndefined();
  });
});
