/**
 * The listing walk (src/fs/list.ts): file URLs built one segment at a time must be fileUrlOf's,
 * the batches of walkRoots must be listRoots's entries, in the same order, and the walk through
 * the thread pool (slow metadata) must find what the synchronous one finds. A verification's
 * walk must give the same entries, with the digests of exactly the small regular files.
 */
import { rm, symlink } from "node:fs/promises";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { digestFile, SYNC_DIGEST_MAX_BYTES } from "../../src/digest/digest.js";
import { hashPoolThreads, INLINE_HASH_MAX_BYTES } from "../../src/digest/hash-pool.js";
import { listRoots, walkRoots } from "../../src/fs/list.js";
import { SyncBudget } from "../../src/fs/sync-budget.js";
import { fileUrlOf } from "../../src/instance/directories.js";
import type { DigestAlgorithmName } from "../../src/migration/types.js";
import { instanceConfig, makeInstance, tempDir, writeTree } from "./data-copy/fakes.js";

const dirs: string[] = [];
afterAll(async () => {
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

async function oddTree() {
  const base = await tempDir("lm-list-");
  dirs.push(base);
  await writeTree(base, {
    "data0/ks/caf\u00e9 x/x!'()*y%.db": "1",
    "data0/ks/caf\u00e9 x/plain-Data.db": "22",
    "data0/ks/t~1.2_a/nb-1-big-TOC.txt": "333",
    "data0/ks/t~1.2_a/sub dir/": null,
    "data1/\u{1F600}/f": "4",
    "hints/1-2.hints": "55",
    "hints/.lm-sidecar.1-3.hints.partial": "6",
    // A staging directory (migration/data-copy/staging.ts): a temp, never walked.
    "data0/ks/.lm-sidecar.t2.partial/nb-1-big-Data.db": "7",
  });
  return makeInstance(instanceConfig(base));
}

describe("listing walk", () => {
  it("builds each file URL from its parent's, exactly as fileUrlOf encodes the whole path", async () => {
    const instance = await oddTree();
    const { entries } = await listRoots(instance.roots, instance.exclusions);
    expect(entries.length).toBe(10); // 7 under data0, 2 under data1, 1 under hints
    for (const e of entries) expect(e.fileUrl).toBe(fileUrlOf(e.root, e.relPath));
    expect(entries.map((e) => e.fileUrl)).toContain("/api/v1/live-migration/files/data/0/ks/caf%C3%A9%20x/x%21%27%28%29%2Ay%25.db");
    expect(entries.map((e) => e.fileUrl)).toContain("/api/v1/live-migration/files/data/0/ks/t~1.2_a/sub%20dir");
    expect(entries.map((e) => e.fileUrl)).toContain("/api/v1/live-migration/files/data/1/%F0%9F%98%80/f");
  });

  it("yields listRoots's entries in the same order, in batches of at most the size asked", async () => {
    const instance = await oddTree();
    const { entries } = await listRoots(instance.roots, instance.exclusions);
    const batches = [];
    for await (const batch of walkRoots(instance.roots, instance.exclusions, 4)) batches.push(batch);
    expect(batches.map((b) => b.length)).toEqual([4, 4, 2]);
    expect(batches.flat().map((e) => e.absPath)).toEqual(entries.map((e) => e.absPath));
  });

  it("finds the same entries, temp files and staging directories through the thread pool as with synchronous calls", async () => {
    const instance = await oddTree();
    const walk = async (budget: SyncBudget) => {
      const temps: string[] = [];
      const entries = [];
      for await (const batch of walkRoots(instance.roots, instance.exclusions, 1000, { temps, budget })) entries.push(...batch);
      return { entries, temps };
    };
    const alwaysAsync = new (class extends SyncBudget {
      override get fast(): boolean {
        return false;
      }
    })();
    const synchronous = await walk(new SyncBudget());
    expect(synchronous.entries).toHaveLength(10);
    expect(synchronous.temps).toEqual([
      expect.stringMatching(/hints\/\.lm-sidecar\.1-3\.hints\.partial$/),
      expect.stringMatching(/data0\/ks\/\.lm-sidecar\.t2\.partial$/),
    ]);
    expect(await walk(alwaysAsync)).toEqual(synchronous);
  });

  it("with a digest algorithm: the same entries, and the digest of each regular file of at most 1 MiB, or bigger within the listing's budget", async () => {
    const instance = await oddTree();
    const data0 = instance.config.dataDirs[0]!;
    await writeTree(data0, {
      "ks/big/at-limit-Data.db": { size: SYNC_DIGEST_MAX_BYTES, seed: 1 },
      "ks/big/over-limit-Data.db": { size: SYNC_DIGEST_MAX_BYTES + 1, seed: 2 },
      "ks/big/over-inline-limit-Data.db": { size: INLINE_HASH_MAX_BYTES + 1, seed: 3 },
      "ks/big/empty-Digest.crc32": "",
    });
    await symlink(path.join(data0, "ks/t~1.2_a/nb-1-big-TOC.txt"), path.join(data0, "ks/big/linked-TOC.txt"));
    const plain = await listRoots(instance.roots, instance.exclusions);
    const small = ["ks/big/at-limit-Data.db", "ks/big/empty-Digest.crc32", "ks/caf\u00e9 x/plain-Data.db", "ks/caf\u00e9 x/x!'()*y%.db"]
      .concat(["ks/t~1.2_a/nb-1-big-TOC.txt", "../data1/\u{1F600}/f", "../hints/1-2.hints"]);
    const digestedBy = async (algorithm: DigestAlgorithmName, inlineHashMs?: number) => {
      const entries = [];
      const temps: string[] = [];
      for await (const batch of walkRoots(instance.roots, instance.exclusions, 1000, { digestAlgorithm: algorithm, temps, inlineHashMs })) entries.push(...batch);
      expect(entries.map(({ digest: _, ...entry }) => entry)).toEqual(plain.entries);
      expect(temps).toEqual(plain.temps);
      for (const entry of entries.filter((e) => e.digest !== undefined)) {
        expect(entry.digest, `${algorithm} ${entry.relPath}`).toBe(await digestFile(entry.absPath, algorithm));
      }
      return entries.filter((e) => e.digest !== undefined).map((e) => path.relative(data0, e.absPath)).sort();
    };
    expect(hashPoolThreads()).toBe(0);
    for (const algorithm of ["MD5", "XXHash32", "XXH64"] as const) {
      expect(await digestedBy(algorithm)).toEqual([...small, "ks/big/over-limit-Data.db"].sort());
    }
    // The file over INLINE_HASH_MAX_BYTES was left to the pool, which started a thread for it;
    // that thread does not stop the listings above (the second and third) from digesting the other big one.
    expect(hashPoolThreads()).toBe(1);
    // A listing that has spent its budget on big files leaves the rest to the pool.
    expect(await digestedBy("MD5", 0)).toEqual([...small].sort());
    // The slow-metadata walk lists the same entries and leaves every digest to the caller.
    const alwaysAsync = new (class extends SyncBudget {
      override get fast(): boolean {
        return false;
      }
    })();
    const slow = [];
    for await (const batch of walkRoots(instance.roots, instance.exclusions, 1000, { budget: alwaysAsync, digestAlgorithm: "MD5" })) slow.push(...batch);
    expect(slow).toEqual(plain.entries);
  });

  it("with a digest algorithm, files_to_exclude and dirs_to_exclude still leave their paths out, unread", async () => {
    const base = await tempDir("lm-list-");
    dirs.push(base);
    await writeTree(base, { "data0/ks/t/nb-1-big-TOC.txt": "toc", "data0/ks/t/nb-1-big-Data.db": "data", "data0/ks/t/backups/x.db": "b" });
    const instance = makeInstance(instanceConfig(base), { filesToExclude: ["glob:**/*-TOC.txt"], dirsToExclude: ["glob:**/backups"] });
    const plain = await listRoots(instance.roots, instance.exclusions);
    const listed = await listRoots(instance.roots, instance.exclusions, { digestAlgorithm: "XXHash32" });
    expect(listed.entries.map((e) => e.relPath)).toEqual(["ks", "ks/t", "ks/t/nb-1-big-Data.db"]);
    expect(listed.entries.map(({ digest: _, ...entry }) => entry)).toEqual(plain.entries);
    expect(listed.entries[2]!.digest).toBe(await digestFile(listed.entries[2]!.absPath, "XXHash32"));
  });
});
