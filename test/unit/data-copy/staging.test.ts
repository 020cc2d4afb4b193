/**
 * Which new directories are staged (src/migration/data-copy/staging.ts), where their files go,
 * and when a staging directory is renamed into place: after the last of its files has settled,
 * never after a cancel, and with a precise failure when its real name is taken.
 */
import { mkdir, readdir, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import type { AgentError } from "../../../src/errors.js";
import { SyncBudget } from "../../../src/fs/sync-budget.js";
import { BATCH_FILE_MAX_BYTES } from "../../../src/migration/data-copy/batch-transfer.js";
import type { SourceTarget } from "../../../src/migration/data-copy/plan.js";
import { DirectoryStaging } from "../../../src/migration/data-copy/staging.js";
import { tempDir } from "./fakes.js";

const RESUME_MIN_BYTES = 4 << 20;
const cleanups: string[] = [];
afterEach(async () => {
  for (const dir of cleanups.splice(0)) await rm(dir, { recursive: true, force: true });
});

function dir(absPath: string): SourceTarget {
  return { absPath, entry: { fileUrl: `/u${absPath}`, fileType: "DIRECTORY", size: -1, lastModifiedTime: 1 } };
}
function file(absPath: string, size: number): SourceTarget {
  return { absPath, entry: { fileUrl: `/u${absPath}`, fileType: "FILE", size, lastModifiedTime: 1 } };
}

describe("which directories are staged", () => {
  const shortlist = [
    dir("/d/ks"), // has a new subdirectory: not staged
    dir("/d/ks/small"),
    file("/d/ks/small/a-Data.db", 100),
    file("/d/ks/small/a-TOC.txt", 0),
    dir("/d/ks/big"), // one file streams alone
    file("/d/ks/big/b-Data.db", BATCH_FILE_MAX_BYTES + 1),
    file("/d/ks/big/b-Index.db", 10),
    dir("/d/ks/empty"), // no file: nothing to gain
    dir("/d/ks/nested"), // has a new subdirectory
    dir("/d/ks/nested/sub"),
    file("/d/ks/nested/sub/c-Data.db", 10),
    file("/d/ks/old/d-Data.db", 10), // its directory exists already
    dir(`/d/ks/${"n".repeat(201)}`), // its staging name would be too long
    file(`/d/ks/${"n".repeat(201)}/e-Data.db`, 10),
  ];

  it("stages a new directory with files, all of them batched or empty, and no new subdirectory", () => {
    const staging = new DirectoryStaging(shortlist, RESUME_MIN_BYTES, () => undefined);
    expect(staging.size).toBe(2);
    const staged = shortlist.filter((t) => t.entry.fileType === "DIRECTORY" && staging.directoryPath(t) !== t.absPath);
    expect(staged.map((t) => [t.absPath, staging.directoryPath(t)])).toEqual([
      ["/d/ks/small", "/d/ks/.lm-sidecar.small.partial"],
      ["/d/ks/nested/sub", "/d/ks/nested/.lm-sidecar.sub.partial"],
    ]);
    expect(staging.targetFor(shortlist[2]!)).toEqual({ ...shortlist[2], absPath: "/d/ks/.lm-sidecar.small.partial/a-Data.db", staged: true });
    expect(staging.targetFor(shortlist[3]!).absPath).toBe("/d/ks/.lm-sidecar.small.partial/a-TOC.txt");
    for (const t of [shortlist[6]!, shortlist[11]!, shortlist[13]!, shortlist[1]!]) expect(staging.targetFor(t)).toBe(t);
  });

  it("does not stage a directory whose files would keep a resume record", () => {
    const staging = new DirectoryStaging(shortlist, 50, () => undefined);
    expect(staging.directoryPath(shortlist[1]!)).toBe("/d/ks/small"); // a-Data.db (100 bytes) is resumable at 50
  });
});

describe("publishing a staged directory", () => {
  async function setup() {
    const base = await tempDir("lm-staging-");
    cleanups.push(base);
    const table = dir(path.join(base, "ks/t"));
    const files = [file(path.join(base, "ks/t/a-Data.db"), 1), file(path.join(base, "ks/t/a-Index.db"), 1)];
    const failures: [SourceTarget, AgentError][] = [];
    const staging = new DirectoryStaging([table, ...files], RESUME_MIN_BYTES, (d, err) => failures.push([d, err]));
    const controller = new AbortController();
    const ctx = { signal: controller.signal, budget: new SyncBudget(), touchedDirs: new Set<string>(), knownDirs: new Set<string>() };
    const stagingPath = staging.directoryPath(table);
    await mkdir(stagingPath, { recursive: true });
    const staged = files.map((t) => staging.targetFor(t));
    for (const t of staged) await writeFile(t.absPath, "x");
    return { base, table, staged, staging, ctx, controller, failures, stagingPath };
  }

  it("renames it into place once every file has settled, and marks it and its parent for the directory fsync", async () => {
    const { base, staged, staging, ctx, failures, stagingPath } = await setup();
    ctx.touchedDirs.add(stagingPath); // a file retried alone was renamed in it
    staging.settled(ctx, staged[0]!);
    await staging.published();
    expect(await readdir(path.join(base, "ks"))).toEqual([".lm-sidecar.t.partial"]);
    staging.settled(ctx, staged[1]!);
    await staging.published();
    expect(await readdir(path.join(base, "ks"))).toEqual(["t"]);
    expect((await readdir(path.join(base, "ks/t"))).sort()).toEqual(["a-Data.db", "a-Index.db"]);
    expect([...ctx.touchedDirs].sort()).toEqual([path.join(base, "ks"), path.join(base, "ks/t")]);
    expect(failures).toEqual([]);
  });

  it("leaves it unpublished after a cancel, for the next pass's cleaning", async () => {
    const { base, staged, staging, ctx, controller, failures } = await setup();
    controller.abort();
    for (const t of staged) staging.settled(ctx, t);
    await staging.published();
    expect(await readdir(path.join(base, "ks"))).toEqual([".lm-sidecar.t.partial"]);
    expect(failures).toEqual([]);
  });

  it("reports the directory when its real name has been taken meanwhile, and leaves both alone", async () => {
    const { base, table, staged, staging, ctx, failures } = await setup();
    await mkdir(table.absPath);
    await writeFile(path.join(table.absPath, "stranger"), "y");
    for (const t of staged) staging.settled(ctx, t);
    await staging.published();
    expect(failures.map(([d, err]) => [d, err.code, err.message])).toEqual([
      [table, "Internal", expect.stringMatching(/^cannot move the staged directory into place: ENOTEMPTY/)],
    ]);
    expect((await readdir(path.join(base, "ks"))).sort()).toEqual([".lm-sidecar.t.partial", "t"]);
  });
});
