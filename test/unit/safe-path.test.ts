import { execFileSync } from "node:child_process";
import { closeSync, readFileSync } from "node:fs";
import { mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { InstanceConfig } from "../../src/config/schema.js";
import { AgentError } from "../../src/errors.js";
import { Exclusions } from "../../src/fs/exclude.js";
import {
  type ReadableFile,
  type RealDirCache,
  type ResolvedFileUrl,
  openReadableFileSync,
  resolveFileUrl,
  resolveReadableFile,
  resolveReadableFileSync,
} from "../../src/fs/safe-path.js";
import { fileUrlOf, migrationRoots, type MigrationRoot } from "../../src/instance/directories.js";

let base: string;
let roots: MigrationRoot[];
let exclusions: Exclusions;

beforeAll(async () => {
  base = await mkdtemp(path.join(os.tmpdir(), "lm-safe-path-"));
  const instance: InstanceConfig = {
    id: 1,
    host: "h",
    port: 9042,
    jmxHost: "h",
    jmxPort: 7199,
    storageDir: undefined,
    dataDirs: [path.join(base, "data0"), path.join(base, "data1")],
    stagingDir: path.join(base, "staging"),
    commitlogDir: path.join(base, "commitlog"),
    hintsDir: undefined,
    savedCachesDir: undefined,
    cdcDir: undefined,
    localSystemDataFileDir: undefined,
  };
  roots = migrationRoots(instance);
  exclusions = Exclusions.compile(roots, [], ["glob:${DATA_FILE_DIR}/*/*/snapshots"]);
  await mkdir(path.join(base, "data0/ks/t-1/snapshots/s1"), { recursive: true });
  await mkdir(path.join(base, "data1"), { recursive: true });
  await mkdir(path.join(base, "commitlog"), { recursive: true });
  await writeFile(path.join(base, "data0/ks/t-1/nb-1-big-Data.db"), "data");
  await writeFile(path.join(base, "data0/ks/t-1/snapshots/s1/nb-1-big-Data.db"), "snap");
  await writeFile(path.join(base, "data0/ks/t-1/we ird%name #1.db"), "x");
  await writeFile(path.join(base, "secret.txt"), "secret");
  await symlink(path.join(base, "secret.txt"), path.join(base, "data0/ks/escape.db"));
  await symlink(path.join(base, "data0/ks/t-1/nb-1-big-Data.db"), path.join(base, "data0/ks/inside.db"));
  await mkdir(path.join(base, "outside"));
  await writeFile(path.join(base, "outside/nb-2-big-Data.db"), "out");
  await symlink(path.join(base, "outside"), path.join(base, "data0/ks/linked-out"));
  await symlink(path.join(base, "data0/ks/t-1"), path.join(base, "data0/ks/linked-in"));
  execFileSync("mkfifo", [path.join(base, "data0/ks/t-1/nb-3-big-Data.db")]);
});

/** The four ways the source checks a file on disk: all must give the same answers. */
const realDirs: RealDirCache = new Map();
const openedRealDirs: RealDirCache = new Map();
const checkers: [string, (resolved: ResolvedFileUrl) => Promise<ReadableFile>][] = [
  ["resolveReadableFile", (resolved) => resolveReadableFile(resolved, exclusions)],
  ["resolveReadableFileSync", async (resolved) => resolveReadableFileSync(resolved, exclusions)],
  // One cache across the tests, as across the files of one stream.
  ["resolveReadableFileSync with a RealDirCache", async (resolved) => resolveReadableFileSync(resolved, exclusions, realDirs)],
  [
    "openReadableFileSync",
    async (resolved) => {
      const { fd, ...file } = openReadableFileSync(resolved, exclusions, openedRealDirs);
      // The descriptor is the checked file's.
      const content = readFileSync(fd);
      closeSync(fd);
      expect(content).toEqual(readFileSync(file.realPath));
      return file;
    },
  ],
];

afterAll(async () => rm(base, { recursive: true, force: true }));

function failure(url: string): { code: string; message: string } {
  try {
    resolveFileUrl(roots, url);
  } catch (err) {
    return { code: (err as AgentError).code, message: (err as AgentError).message };
  }
  throw new Error(`accepted ${url}`);
}

const P = "/api/v1/live-migration/files";

describe("the path checker", () => {
  it("resolves a plain URL", async () => {
    const file = await resolveReadableFile(resolveFileUrl(roots, `${P}/data/0/ks/t-1/nb-1-big-Data.db`), exclusions);
    expect(file.relPath).toBe("ks/t-1/nb-1-big-Data.db");
    expect(file.size).toBe(4);
  });

  it("round-trips names that need percent-encoding, decoding exactly once", async () => {
    const url = fileUrlOf(roots.find((r) => r.dirType === "data" && r.dirIndex === 0)!, "ks/t-1/we ird%name #1.db");
    expect(url).toBe(`${P}/data/0/ks/t-1/we%20ird%25name%20%231.db`);
    const file = await resolveReadableFile(resolveFileUrl(roots, url), exclusions);
    expect(file.relPath).toBe("ks/t-1/we ird%name #1.db");
  });

  const attacks: [string, string, string][] = [
    ["'..' at the end", `${P}/data/0/ks/..`, "InvalidArgument:Tried to access file using relative path: ks/.."],
    ["'..' right after the index", `${P}/data/0/../secret.txt`, "InvalidArgument:Tried to access file using relative path: ../secret.txt"],
    ["'..' as the whole path", `${P}/data/0/..`, "InvalidArgument:Tried to access file using relative path: .."],
    ["encoded %2E%2E", `${P}/data/0/%2E%2E/secret.txt`, "InvalidArgument:Tried to access file using relative path: ../secret.txt"],
    ["encoded slash and dots", `${P}/data/0/ks%2F..%2F..%2Fsecret.txt`, "InvalidArgument:Tried to access file using relative path: ks/../../secret.txt"],
    ["NUL", `${P}/data/0/ks/a%00b`, "InvalidArgument:Malformed request path"],
    ["malformed escape", `${P}/data/0/ks/%E0%A4%A`, "InvalidArgument:Malformed request path"],
    ["unknown dir type", `${P}/secrets/0/x`, "InvalidArgument:Invalid directory type: secrets"],
    ["negative index", `${P}/data/-1/x`, "InvalidArgument:Invalid directoryIndex: -1"],
    ["non-numeric index", `${P}/data/one/x`, "InvalidArgument:Invalid directoryIndex: one"],
    ["missing index", `${P}/data`, "InvalidArgument:Invalid directoryIndex: "],
    ["index beyond the data dirs", `${P}/data/2/x`, `NotFound:File url ${P}/data/2/x is unknown.`],
    ["unconfigured cdc dir", `${P}/cdc_raw/0/x`, `NotFound:File url ${P}/cdc_raw/0/x is unknown.`],
  ];
  for (const [name, url, expected] of attacks) {
    it(`refuses ${name}`, () => {
      const f = failure(url);
      expect(`${f.code}:${f.message}`).toBe(expected);
    });
  }

  // Plain names take a short cut past the path module; every path must still resolve exactly as
  // path.resolve and path.relative would resolve it.
  const shapes = [
    "ks/t-1/nb-1-big-Data.db",
    "x",
    ".hidden/.b",
    "ks/t-1/",
    "ks//t-1",
    "./ks/t-1",
    "ks/./t-1",
    "ks/t-1/.",
    "",
    "ks%2F%2Ft-1",
    "ks%2F.%2Ft-1",
    "we%20ird%25name",
    "...",
    "ks/..t-1/t-1..",
    "ks/t.1/.t..1",
  ];
  it("reads the directory index as a number, and resolves the root itself without a path", () => {
    const root = roots.find((r) => r.dirType === "data" && r.dirIndex === 0)!;
    expect(resolveFileUrl(roots, `${P}/data/000/ks/x`)).toEqual({ root, relPath: "ks/x", absPath: path.join(root.path, "ks/x") });
    expect(resolveFileUrl(roots, `${P}/data/0`)).toEqual({ root, relPath: "", absPath: root.path });
    expect(failure(`${P}/data/1234567890123456/ks/x`)).toEqual({ code: "NotFound", message: `File url ${P}/data/1234567890123456/ks/x is unknown.` });
    expect(failure(`${P}/data/12345678901234567890/ks/x`)).toEqual({ code: "InvalidArgument", message: "Invalid directoryIndex: 12345678901234567890" });
  });

  for (const shape of shapes) {
    it(`resolves '${shape}' as the path module does`, () => {
      const root = roots.find((r) => r.dirType === "data" && r.dirIndex === 0)!;
      const resolved = resolveFileUrl(roots, `${P}/data/0/${shape}`);
      const rootPath = path.resolve(root.path);
      const expectedAbs = path.resolve(rootPath, decodeURIComponent(shape));
      expect(resolved.absPath).toBe(expectedAbs);
      expect(resolved.relPath).toBe(path.relative(rootPath, expectedAbs));
    });
  }
});

describe.each(checkers)("the checks on disk (%s)", (_name, check) => {
  async function readFailure(url: string): Promise<{ code: string; message: string }> {
    try {
      await check(resolveFileUrl(roots, url));
    } catch (err) {
      return { code: (err as AgentError).code, message: (err as AgentError).message };
    }
    throw new Error(`served ${url}`);
  }

  it("does not decode twice: %252E%252E stays a literal name that does not exist", async () => {
    const f = await readFailure(`${P}/data/0/%252E%252E/secret.txt`);
    expect(f).toEqual({ code: "NotFound", message: "File not found" });
  });

  it("treats triple-encoded dots as a literal name too", async () => {
    const f = await readFailure(`${P}/data/0/%25252E%25252E/secret.txt`);
    expect(f).toEqual({ code: "NotFound", message: "File not found" });
  });

  it("refuses a symlink escaping the data dir with 403", async () => {
    expect(await readFailure(`${P}/data/0/ks/escape.db`)).toEqual({ code: "PermissionDenied", message: "Resolved path escapes base directory" });
  });

  it("serves a symlink that stays inside the data dir", async () => {
    const file = await check(resolveFileUrl(roots, `${P}/data/0/ks/inside.db`));
    expect(file.size).toBe(4);
    expect(file.realPath).toBe(path.join(base, "data0/ks/t-1/nb-1-big-Data.db"));
  });

  it("refuses directories, missing files and excluded files", async () => {
    expect(await readFailure(`${P}/data/0/ks`)).toEqual({ code: "InvalidArgument", message: "Cannot transfer directory" });
    expect(await readFailure(`${P}/data/0/ks/none.db`)).toEqual({ code: "NotFound", message: "File not found" });
    expect(await readFailure(`${P}/data/0/ks/t-1/snapshots/s1/nb-1-big-Data.db`)).toEqual({
      code: "NotFound",
      message: "Requested path is excluded from live migration",
    });
  });

  it("refuses a FIFO as not a file, without waiting for a writer", async () => {
    expect(await readFailure(`${P}/data/0/ks/t-1/nb-3-big-Data.db`)).toEqual({ code: "NotFound", message: "File not found" });
  });

  it("refuses the root itself as a directory", async () => {
    expect(await readFailure(`${P}/data/0`)).toEqual({ code: "InvalidArgument", message: "Cannot transfer directory" });
  });

  it("refuses a file under a symlinked directory that leads out of the data dir, and serves one that stays in", async () => {
    expect(await readFailure(`${P}/data/0/ks/linked-out/nb-2-big-Data.db`)).toEqual({
      code: "PermissionDenied",
      message: "Resolved path escapes base directory",
    });
    const file = await check(resolveFileUrl(roots, `${P}/data/0/ks/linked-in/nb-1-big-Data.db`));
    expect(file.realPath).toBe(path.join(base, "data0/ks/t-1/nb-1-big-Data.db"));
  });

  it("serves a plain file with its size and real path", async () => {
    const file = await check(resolveFileUrl(roots, `${P}/data/0/ks/t-1/nb-1-big-Data.db`));
    expect(file.size).toBe(4);
    expect(file.realPath).toBe(path.join(base, "data0/ks/t-1/nb-1-big-Data.db"));
  });
});
