import { mkdir, readdir, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { listRoots } from "../../../src/fs/list.js";
import { setMtimeMs } from "../../../src/fs/mtime.js";
import { tempPathFor } from "../../../src/fs/temp-name.js";
import { SyncBudget } from "../../../src/fs/sync-budget.js";
import { fileUrlOf } from "../../../src/instance/directories.js";
import {
  applyCleaning,
  applyThreshold,
  findMissing,
  mapSourceEntries,
  SourceMapping,
  planCleaning,
  type SourceTarget,
  type TempFileInfo,
} from "../../../src/migration/data-copy/plan.js";
import type { FileEntry } from "../../../src/migration/types.js";
import { instanceConfig, makeInstance, tempDir, writeTree } from "./fakes.js";

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0)) await c();
});

async function setup() {
  const base = await tempDir();
  cleanups.push(async () => (await import("node:fs/promises")).rm(base, { recursive: true, force: true }));
  const instance = makeInstance(instanceConfig(base));
  const data0 = instance.roots.find((r) => r.dirType === "data" && r.dirIndex === 0)!;
  const file = (rel: string, size: number, mtime: number): FileEntry => ({
    fileUrl: fileUrlOf(data0, rel),
    size,
    fileType: "FILE",
    lastModifiedTime: mtime,
  });
  const dir = (rel: string): FileEntry => ({ fileUrl: fileUrlOf(data0, rel), size: -1, fileType: "DIRECTORY", lastModifiedTime: 1 });
  return { base, instance, data0: path.join(base, "data0"), file, dir };
}

describe("threshold rule (§3.6)", () => {
  const t = (name: string, size: number): SourceTarget => ({
    entry: { fileUrl: `/api/v1/live-migration/files/data/0/ks/t/${name}`, size, fileType: "FILE", lastModifiedTime: 1 },
    absPath: `/x/${name}`,
  });
  const d = (name: string): SourceTarget => ({
    entry: { fileUrl: `/api/v1/live-migration/files/data/0/${name}`, size: -1, fileType: "DIRECTORY", lastModifiedTime: 1 },
    absPath: `/x/${name}`,
  });

  it("two 64-byte files, one present: downloads at 1.0, succeeds at 0.49", () => {
    const missing = [t("b", 64)];
    const at1 = applyThreshold(missing, 128, 1.0);
    expect(at1).toMatchObject({ decision: "download", present: 0.5, missingBytes: 64 });
    expect(at1.shortlist).toHaveLength(1);
    const at049 = applyThreshold(missing, 128, 0.49);
    expect(at049).toMatchObject({ decision: "threshold-met", present: 0.5 });
    expect(at049.shortlist).toHaveLength(0);
  });

  it("downloads on equality (present <= threshold)", () => {
    expect(applyThreshold([t("b", 64)], 128, 0.5).decision).toBe("download");
  });

  it("threshold 0.0 succeeds as soon as any byte is present", () => {
    expect(applyThreshold([t("b", 64)], 128, 0).decision).toBe("threshold-met");
    expect(applyThreshold([t("a", 64), t("b", 64)], 128, 0).decision).toBe("download");
  });

  it("proceeds without a threshold check when no bytes are missing (dirs and empty files)", () => {
    const plan = applyThreshold([d("ks"), t("empty", 0)], 128, 0);
    expect(plan.decision).toBe("no-bytes-missing");
    expect(plan.shortlist).toHaveLength(2);
    expect(applyThreshold([], 0, 1).shortlist).toEqual([]);
  });
});

describe("mapSourceEntries", () => {
  it("maps data dir i to data dir i and fails on an unknown prefix", async () => {
    const { instance, file } = await setup();
    const map = mapSourceEntries(instance.roots, [file("ks/t/a-Data.db", 1, 1)]);
    expect([...map.keys()]).toEqual([path.join(instance.config.dataDirs[0]!, "ks/t/a-Data.db")]);
    expect(() =>
      mapSourceEntries(instance.roots, [
        { fileUrl: "/api/v1/live-migration/files/data/7/ks/t/x", size: 1, fileType: "FILE", lastModifiedTime: 1 },
      ]),
    ).toThrow(/Cannot map source file .*data\/7.* is unknown/);
  });
});

describe("SourceMapping", () => {
  it("maps a listing batch by batch, in order, with its totals", async () => {
    const { instance, file } = await setup();
    const mapping = new SourceMapping(instance.roots);
    const dir = { fileUrl: "/api/v1/live-migration/files/data/0/ks", size: -1, fileType: "DIRECTORY" as const, lastModifiedTime: 1 };
    mapping.add([dir, file("ks/a", 10, 1)]);
    mapping.add([file("ks/b", 32, 2)]);
    const data0 = instance.config.dataDirs[0]!;
    expect([...mapping.targets.keys()]).toEqual(["ks", "ks/a", "ks/b"].map((p) => path.join(data0, p)));
    expect(mapping.targets.get(path.join(data0, "ks/b"))).toEqual({ entry: file("ks/b", 32, 2), absPath: path.join(data0, "ks/b"), staged: false });
    expect([mapping.totalEntries, mapping.totalSize, mapping.error]).toEqual([3, 42, undefined]);
  });

  it("keeps the first entry it cannot map as its error, and still counts the rest of the listing", async () => {
    const { instance, file } = await setup();
    const mapping = new SourceMapping(instance.roots);
    const unknown = { fileUrl: "/api/v1/live-migration/files/data/7/ks/x", size: 5, fileType: "FILE" as const, lastModifiedTime: 1 };
    mapping.add([file("ks/a", 10, 1), unknown, file("ks/b", 32, 2)]);
    mapping.add([{ fileUrl: "/api/v1/live-migration/files/data/0", size: -1, fileType: "DIRECTORY", lastModifiedTime: 1 }]);
    expect(mapping.error?.message).toMatch(/^Cannot map source file \/api\/v1\/live-migration\/files\/data\/7\/ks\/x to a local path: .*unknown/);
    expect(mapping.targets.size).toBe(1);
    expect([mapping.totalEntries, mapping.totalSize]).toEqual([4, 47]);
  });
});

describe("cleaning decisions", () => {
  async function plan(instance: ReturnType<typeof makeInstance>, source: FileEntry[], records: Record<string, TempFileInfo["record"]> = {}) {
    const sources = mapSourceEntries(instance.roots, source);
    const local = await listRoots(instance.roots, instance.exclusions);
    const temps: TempFileInfo[] = await Promise.all(
      local.temps.map(async (p) => {
        const stats = await stat(p);
        return { path: p, size: stats.size, record: records[p], directory: stats.isDirectory() };
      }),
    );
    return { sources, local, result: planCleaning(sources, local.entries, temps) };
  }

  it("deletes absent, resized and re-timed files, keeps matching ones", async () => {
    const { instance, data0, file, dir } = await setup();
    await writeTree(data0, { "ks/t/keep": "1234", "ks/t/gone": "x", "ks/t/resized": "abc", "ks/t/retimed": "abc" });
    const mt = async (rel: string) => Math.floor((await stat(path.join(data0, rel))).mtimeMs);
    const source = [
      dir("ks"),
      dir("ks/t"),
      file("ks/t/keep", 4, await mt("ks/t/keep")),
      file("ks/t/resized", 4, await mt("ks/t/resized")),
      file("ks/t/retimed", 3, (await mt("ks/t/retimed")) + 1),
    ];
    const { result } = await plan(instance, source);
    const byPath = Object.fromEntries(result.deletions.map((d) => [path.relative(data0, d.absPath), d.reason]));
    expect(byPath).toEqual({
      "ks/t/gone": "absent at source",
      "ks/t/resized": "size differs: 3 here, 4 at source",
      "ks/t/retimed": expect.stringMatching(/^mtime differs/),
    });
    expect(result.keptPaths.has(path.join(data0, "ks/t/keep"))).toBe(true);
    expect(result.keptPaths.has(path.join(data0, "ks"))).toBe(true);
  });

  it("deletes directories absent at the source with their subtree, once", async () => {
    const { instance, data0, dir } = await setup();
    await writeTree(data0, { "dropped/t/a": "x", "dropped/t/b": "y", "dropped2/c": "z", "kept/": null, "kept/d": "w" });
    const { result } = await plan(instance, [dir("kept")]);
    expect(result.deletions.map((d) => [path.relative(data0, d.absPath), d.kind])).toEqual([
      ["dropped", "DIRECTORY"],
      ["dropped2", "DIRECTORY"],
      ["kept/d", "FILE"],
    ]);
    await applyCleaning(instance.roots, result.deletions);
    expect(await readdir(data0)).toEqual(["kept"]);
    expect(await readdir(path.join(data0, "kept"))).toEqual([]);
  });

  it("deletes a staging directory that an unfinished pass left, with its contents", async () => {
    const { instance, data0, file, dir } = await setup();
    await writeTree(data0, { "ks/.lm-sidecar.t.partial/a-Data.db": "x", "ks/.lm-sidecar.t.partial/.lm-sidecar.b-Data.db.partial": "y" });
    const { local, result } = await plan(instance, [dir("ks"), dir("ks/t"), file("ks/t/a-Data.db", 1, 5), file("ks/t/b-Data.db", 1, 5)]);
    expect(local.entries.map((e) => path.relative(data0, e.absPath))).toEqual(["ks"]);
    expect(result.deletions.map((d) => [path.relative(data0, d.absPath), d.kind, d.reason])).toEqual([
      ["ks/.lm-sidecar.t.partial", "TEMP", "staging directory of an unfinished pass"],
    ]);
    await applyCleaning(instance.roots, result.deletions);
    expect(await readdir(path.join(data0, "ks"))).toEqual([]);
  });

  it("repairs a type swap in both directions", async () => {
    const { instance, data0, file, dir } = await setup();
    await writeTree(data0, { "ks/was-dir/inner": "x", "ks/was-file": "y" });
    const { result } = await plan(instance, [dir("ks"), file("ks/was-dir", 1, 5), dir("ks/was-file")]);
    expect(result.deletions.map((d) => [path.relative(data0, d.absPath), d.kind, d.reason])).toEqual([
      ["ks/was-dir", "DIRECTORY", "type differs: directory here, file at source"],
      ["ks/was-file", "FILE", "type differs: file here, directory at source"],
    ]);
    await applyCleaning(instance.roots, result.deletions);
    expect(await readdir(path.join(data0, "ks"))).toEqual([]);
  });

  it("skips a listed file that has vanished or turned into a directory since the listing (the next pass decides)", async () => {
    const { instance, data0 } = await setup();
    await writeTree(data0, { "ks/t/now-a-dir/inner": "x", "ks/t/plain": "y" });
    await applyCleaning(instance.roots, [
      { absPath: path.join(data0, "ks/t/gone"), kind: "FILE", reason: "test" },
      { absPath: path.join(data0, "ks/t/now-a-dir"), kind: "FILE", reason: "test" },
      { absPath: path.join(data0, "ks/t/plain"), kind: "FILE", reason: "test" },
    ]);
    expect(await readdir(path.join(data0, "ks/t"))).toEqual(["now-a-dir"]);
  });

  it("leaves locally excluded paths alone and never deletes a root", async () => {
    const { instance, data0, base } = await setup();
    await writeTree(data0, { "ks/t/snapshots/snap1/a": "x" });
    await writeTree(path.join(base, "commitlog"), { "CommitLog-1.log": "c" });
    const { result } = await plan(instance, []);
    const deleted = result.deletions.map((d) => path.relative(base, d.absPath)).sort();
    // ks (absent at source) goes with its subtree, the roots stay.
    expect(deleted).toEqual(["commitlog/CommitLog-1.log", "data0/ks"]);
    await expect(applyCleaning(instance.roots, [{ absPath: data0, kind: "DIRECTORY", reason: "test" }])).rejects.toThrow(
      /Refusing to delete/,
    );
    await expect(applyCleaning(instance.roots, [{ absPath: "/etc", kind: "DIRECTORY", reason: "test" }])).rejects.toThrow(
      /Refusing to delete/,
    );
  });

  it("keeps an excluded snapshot dir that exists while its table dir is kept", async () => {
    const { instance, data0, dir } = await setup();
    await writeTree(data0, { "ks/t/snapshots/snap1/a": "x" });
    const { result } = await plan(instance, [dir("ks"), dir("ks/t")]);
    expect(result.deletions).toEqual([]);
  });

  it("keeps resumable temp files and removes stale ones", async () => {
    const { instance, data0, file, dir } = await setup();
    await mkdir(path.join(data0, "ks/t"), { recursive: true });
    const target = (n: string) => path.join(data0, "ks/t", n);
    const temp = async (n: string, content: string) => {
      await writeFile(tempPathFor(target(n)), content);
      return tempPathFor(target(n));
    };
    await writeTree(data0, { "ks/t/complete": "done!" });
    const completeMtime = Math.floor((await stat(target("complete"))).mtimeMs);
    const resumable = await temp("resumable", "abc");
    const noRecord = await temp("no-record", "abc");
    const changed = await temp("changed", "abc");
    const tooLong = await temp("too-long", "abcdef");
    const orphan = await temp("orphan", "abc");
    const complete = await temp("complete", "do");
    const record = (n: string, size: number, mtime: number) => ({ target: target(n), fileUrl: "u", size, lastModifiedTime: mtime });
    const { result } = await plan(
      instance,
      [
        dir("ks"),
        dir("ks/t"),
        file("ks/t/resumable", 10, 100),
        file("ks/t/no-record", 10, 100),
        file("ks/t/changed", 10, 101),
        file("ks/t/too-long", 4, 100),
        file("ks/t/complete", 5, completeMtime),
      ],
      {
        [resumable]: record("resumable", 10, 100),
        [changed]: record("changed", 10, 100),
        [tooLong]: record("too-long", 4, 100),
        [complete]: record("complete", 5, completeMtime),
        [orphan]: record("orphan", 3, 100),
      },
    );
    const reasons = Object.fromEntries(result.deletions.map((d) => [path.basename(d.absPath), d.reason]));
    expect(reasons).toEqual({
      [path.basename(noRecord)]: "stale temp file: no resume record",
      [path.basename(changed)]: "stale temp file: source file changed",
      [path.basename(tooLong)]: "stale temp file: longer than the source file",
      [path.basename(orphan)]: "stale temp file: target absent at source",
      [path.basename(complete)]: "stale temp file: target already complete",
    });
    expect([...result.resumableTargets]).toEqual([target("resumable")]);
    expect(result.deletions.every((d) => d.kind === "TEMP")).toBe(true);
  });
});

/** A budget that always takes the thread pool, as after slow metadata calls. */
class SlowBudget extends SyncBudget {
  override get fast(): boolean {
    return false;
  }
}

describe("findMissing", () => {
  it("shortlists source entries whose local path does not exist, and respects existing excluded paths", async () => {
    const { instance, data0, file, dir } = await setup();
    await writeTree(data0, { "ks/t/have": "x", "ks/t/snapshots/s/a": "y" });
    await setMtimeMs(path.join(data0, "ks/t/have"), 5);
    const source = [dir("ks"), dir("ks/t"), file("ks/t/have", 1, 5), file("ks/t/need", 3, 5), dir("ks/t/snapshots"), dir("ks/t/new")];
    const sources = mapSourceEntries(instance.roots, source);
    const local = await listRoots(instance.roots, instance.exclusions);
    const { keptPaths } = planCleaning(sources, local.entries, []);
    const missing = await findMissing([...sources.values()], keptPaths);
    expect(missing.map((m) => path.relative(data0, m.absPath))).toEqual(["ks/t/need", "ks/t/new"]);
  });

  it.each([
    ["synchronous calls", () => new SyncBudget()],
    ["thread-pool calls (slow metadata)", () => new SlowBudget()],
  ])("takes the whole subtree of a missing directory as missing, and checks each path below a present one, with %s", async (_, budget) => {
    const { instance, data0, file, dir } = await setup();
    // "ks/t" exists with one file; "ks/u" does not exist; "ks/f" is a file where the source has a directory.
    await writeTree(data0, { "ks/t/have": "x", "ks/f": "not a directory" });
    const source = [
      dir("ks"),
      dir("ks/t"),
      file("ks/t/have", 1, 5),
      file("ks/t/need", 3, 5),
      dir("ks/u"),
      dir("ks/u/deep"),
      file("ks/u/deep/a", 3, 5),
      file("ks/u/b", 3, 5),
      dir("ks/f"),
      file("ks/f/c", 3, 5),
      // Past the first STAT_PARALLELISM entries too: parents settle before their children in every batch.
      ...Array.from({ length: 40 }, (_, i) => file(`ks/u/deep/n${String(i).padStart(2, "0")}`, 1, 5)),
    ];
    const sources = mapSourceEntries(instance.roots, source);
    const missing = await findMissing([...sources.values()], new Set(), budget());
    expect(missing.map((m) => path.relative(data0, m.absPath))).toEqual([
      "ks/t/need",
      "ks/u",
      "ks/u/deep",
      "ks/u/deep/a",
      "ks/u/b",
      "ks/f/c",
      ...Array.from({ length: 40 }, (_, i) => `ks/u/deep/n${String(i).padStart(2, "0")}`),
    ]);
  });
});
