import { createHash } from "node:crypto";
import { appendFile, mkdir, readdir, readFile, rm, stat, utimes, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { datasetLayout, generateDataset, removeSstableSet, writeSstableSet } from "../../src/dataset/generate.js";
import { makeTempDir, removeTempDirs, snapshotTree } from "../helpers/tree.js";

const TINY_BYTES = 16 * 1024 * 1024;

afterAll(removeTempDirs);

describe("generateDataset (tiny profile)", () => {
  it("builds identical trees for equal options, with two data dirs, shared snapshot inodes and the target size", async () => {
    const base = await makeTempDir("lm-dataset-");
    const a = path.join(base, "a");
    const b = path.join(base, "b");
    const summaryA = await generateDataset(a, { profile: "tiny" });
    const summaryB = await generateDataset(b, { profile: "tiny" });

    // Determinism: same entries, sizes, mtimes and bytes.
    const treeA = await snapshotTree(a, { withContent: true });
    const treeB = await snapshotTree(b, { withContent: true });
    expect(treeA.length).toBeGreaterThan(100);
    expect(treeB).toEqual(treeA);
    const { root: _ra, seconds: _sa, ...restA } = summaryA;
    const { root: _rb, seconds: _sb, ...restB } = summaryB;
    expect(restB).toEqual(restA);
    expect(summaryA.entries).toBe(treeA.filter((e) => e.type === "file").length);
    expect(summaryA.dirs).toBe(treeA.filter((e) => e.type === "dir").length);

    // Layout: both data dirs hold tables, plus commitlog, hints and saved_caches.
    const layout = datasetLayout(a);
    expect(layout.dataDirs).toEqual([path.join(a, "data0"), path.join(a, "data1")]);
    for (const dir of [...layout.dataDirs, layout.commitlogDir, layout.hintsDir, layout.savedCachesDir]) {
      expect((await stat(dir)).isDirectory(), dir).toBe(true);
      expect((await readdir(dir)).length, dir).toBeGreaterThan(0);
    }
    for (const dd of ["data0", "data1"]) {
      expect(treeA.some((e) => e.rel.startsWith(`${dd}/`) && e.rel.endsWith("-big-Data.db")), dd).toBe(true);
    }

    // Snapshots: <datadir>/<ks>/<table>-<hex>/snapshots/<name>/ hold hard links to the table's files.
    const snapRe = /^(data[01]\/[^/]+\/[^/]+)\/snapshots\/[^/]+\/(nb-\d+-big-.+)$/;
    const links = treeA.filter((e) => e.type === "file" && snapRe.test(e.rel));
    expect(links.length).toBe(summaryA.hardlinkEntries);
    expect(links.length).toBeGreaterThan(0);
    for (const e of links) {
      const [, tableDir, name] = snapRe.exec(e.rel)!;
      const live = await stat(path.join(a, tableDir!, name!));
      const snap = await stat(path.join(a, e.rel));
      expect(snap.ino, e.rel).toBe(live.ino);
      expect(snap.nlink, e.rel).toBe(2);
    }
    expect(treeA.some((e) => /\/snapshots\/[^/]+\/manifest\.json$/.test(e.rel))).toBe(true);

    // Size: unique bytes (hard links once) within 10 % of the 16 MiB target.
    const unique = new Map<string, number>();
    for (const e of treeA.filter((x) => x.type === "file")) {
      unique.set(String((await stat(path.join(a, e.rel))).ino), e.size);
    }
    const uniqueBytes = [...unique.values()].reduce((s, n) => s + n, 0);
    expect(uniqueBytes).toBe(summaryA.uniqueBytes);
    expect(Math.abs(uniqueBytes - TINY_BYTES) / TINY_BYTES).toBeLessThan(0.1);
    expect(Math.abs(summaryA.entries - 300) / 300).toBeLessThan(0.1);

    // Incompressible content: a Data.db is AES-CTR keystream, not zeros or text.
    const big = await readFile(path.join(a, summaryA.largest[0]!.rel));
    expect(new Set(big.subarray(0, 4096)).size).toBeGreaterThan(200);

    // Another seed gives other bytes.
    const c = path.join(base, "c");
    await generateDataset(c, { profile: "tiny", seed: 2 });
    const treeC = await snapshotTree(c, { withContent: true });
    expect(treeC).not.toEqual(treeA);
  });

  it("honours sizeBytes and removes what was under root", async () => {
    const root = path.join(await makeTempDir("lm-dataset-"), "r");
    await mkdir(path.join(root, "stale"), { recursive: true });
    const s = await generateDataset(root, { profile: "tiny", sizeBytes: 4 * 1024 * 1024, dataDirs: 3 });
    expect(Math.abs(s.uniqueBytes - 4 * 1024 * 1024) / (4 * 1024 * 1024)).toBeLessThan(0.1);
    const top = (await readdir(root)).sort();
    expect(top).toEqual(["commitlog", "data0", "data1", "data2", "hints", "saved_caches"]);
  });
});

describe("generateDataset in place", () => {
  it("restores a tree changed in place byte for byte, keeping every inode and snapshot link", async () => {
    const base = await makeTempDir("lm-dataset-");
    const fresh = path.join(base, "fresh");
    const reused = path.join(base, "reused");
    await generateDataset(fresh, { profile: "tiny" });
    await generateDataset(reused, { profile: "tiny" });
    const inodes = async () => new Map((await snapshotTree(reused)).map((e) => [e.rel, e]));
    const before = await inodes();
    const inoOf = async (rel: string) => (await stat(path.join(reused, rel))).ino;
    const inoBefore = new Map(await Promise.all([...before.keys()].map(async (rel) => [rel, await inoOf(rel)] as const)));

    // Changed in place as the benchmark's 5 % pass does: new bytes, other lengths, other mtimes.
    const files = [...before.values()].filter((e) => e.type === "file");
    const changed = files.filter((_, i) => i % 7 === 0);
    expect(changed.length).toBeGreaterThan(10);
    for (const e of changed) {
      const abs = path.join(reused, e.rel);
      await writeFile(abs, "changed", { flag: "r+" });
      await appendFile(abs, "and longer");
      await utimes(abs, 1, 1);
    }
    expect(await snapshotTree(reused, { withContent: true })).not.toEqual(await snapshotTree(fresh, { withContent: true }));

    await generateDataset(reused, { profile: "tiny" }, { inPlace: true });
    expect(await snapshotTree(reused, { withContent: true })).toEqual(await snapshotTree(fresh, { withContent: true }));
    for (const [rel, ino] of inoBefore) expect(await inoOf(rel), rel).toBe(ino);
  });

  it("replaces an entry at a snapshot link's path that is not the link", async () => {
    const base = await makeTempDir("lm-dataset-");
    const fresh = path.join(base, "fresh");
    const reused = path.join(base, "reused");
    await generateDataset(fresh, { profile: "tiny" });
    await generateDataset(reused, { profile: "tiny" });
    const link = (await snapshotTree(reused)).find((e) => e.type === "file" && e.rel.includes("/snapshots/") && e.rel.endsWith("Data.db"))!;
    expect(link).toBeDefined();
    const abs = path.join(reused, link.rel);
    await rm(abs);
    await writeFile(abs, "a separate file");
    await generateDataset(reused, { profile: "tiny" }, { inPlace: true });
    expect(await snapshotTree(reused, { withContent: true })).toEqual(await snapshotTree(fresh, { withContent: true }));
    expect((await stat(abs)).nlink).toBe(2);
  });
});

describe("writeSstableSet / removeSstableSet", () => {
  it("writes 8 components deterministically and removes exactly one generation", async () => {
    const base = await makeTempDir("lm-sstable-");
    const dirs = [path.join(base, "x", "t-0123"), path.join(base, "y", "t-0123")];
    const digests: string[][] = [];
    for (const dir of dirs) {
      await mkdir(dir, { recursive: true });
      const names = await writeSstableSet(dir, 7, 100_000, 3);
      await writeSstableSet(dir, 8, 5_000, 3);
      expect(names).toHaveLength(8);
      expect(names[0]).toBe("nb-7-big-Data.db");
      expect(names.at(-1)).toBe("nb-7-big-TOC.txt");
      expect((await stat(path.join(dir, "nb-7-big-Data.db"))).size).toBe(100_000);
      digests.push(await Promise.all(names.map(async (n) => createHash("sha256").update(await readFile(path.join(dir, n))).digest("hex"))));
    }
    expect(digests[1]).toEqual(digests[0]);

    await removeSstableSet(dirs[0]!, 7);
    const left = (await readdir(dirs[0]!)).sort();
    expect(left).toHaveLength(8);
    expect(left.every((n) => n.startsWith("nb-8-big-"))).toBe(true);
    await removeSstableSet(dirs[0]!, 7); // already gone: no error
  });
});
