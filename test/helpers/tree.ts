/**
 * Whole-tree assertions for tests: walk a directory into a sorted list of entries, compare two
 * trees and report every difference by path, and temp directories that are cleaned up in one call.
 */
import { AssertionError } from "node:assert";
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { lstat, mkdtemp, readdir, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";

export interface TreeEntry {
  /** Path relative to the walked root, "/"-separated, never empty. */
  rel: string;
  type: "file" | "dir";
  /** Bytes for files; 0 for directories. */
  size: number;
  /** Modification time in whole epoch milliseconds (floored from the nanosecond stat). */
  mtimeMs: number;
  /** Hex SHA-256 of a file's bytes; only with `withContent`. */
  sha256?: string;
}

/** Skips an entry (and, for a directory, its whole subtree) when it returns true. */
export type TreeExclude = (rel: string, isDir: boolean) => boolean;

const byRel = (a: { rel: string }, b: { rel: string }) => (a.rel < b.rel ? -1 : a.rel > b.rel ? 1 : 0);

/** Hex SHA-256 of a file, streamed (memory stays flat for large files). */
export async function sha256File(absPath: string): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(absPath, { highWaterMark: 1024 * 1024 })) hash.update(chunk as Buffer);
  return hash.digest("hex");
}

/**
 * Walks `root` with lstat (symlinks are never followed) and returns its regular files and
 * directories sorted by `rel` (code-unit order); the root itself is not listed. Symlinks,
 * sockets and other special files are left out. `withContent` adds each file's SHA-256.
 * Rejects when `root` does not exist.
 */
export async function snapshotTree(root: string, opts: { withContent?: boolean; exclude?: TreeExclude } = {}): Promise<TreeEntry[]> {
  const out: TreeEntry[] = [];
  const walk = async (absDir: string, relDir: string): Promise<void> => {
    for (const name of await readdir(absDir)) {
      const rel = relDir === "" ? name : `${relDir}/${name}`;
      const abs = path.join(absDir, name);
      const st = await lstat(abs, { bigint: true });
      const mtimeMs = Number(st.mtimeNs / 1_000_000n);
      if (st.isDirectory()) {
        if (opts.exclude?.(rel, true)) continue;
        out.push({ rel, type: "dir", size: 0, mtimeMs });
        await walk(abs, rel);
      } else if (st.isFile()) {
        if (opts.exclude?.(rel, false)) continue;
        const entry: TreeEntry = { rel, type: "file", size: Number(st.size), mtimeMs };
        if (opts.withContent) entry.sha256 = await sha256File(abs);
        out.push(entry);
      }
    }
  };
  await walk(path.resolve(root), "");
  return out.sort(byRel);
}

/** Largest number of differences an {@link expectSameTree} failure lists. */
const MAX_LISTED = 20;

/**
 * Asserts that `destRoot` is a copy of `sourceRoot`: the same files with the same size, mtime
 * (floored to ms) and bytes, and the same directories (by presence and type only — directory
 * mtimes are ignored). Throws an AssertionError whose message lists up to 20 differences, one
 * per line, each naming the relative path: missing, extra, type, size, mtime, content.
 * Content is hashed only for files whose size matches.
 */
export async function expectSameTree(sourceRoot: string, destRoot: string, opts: { exclude?: TreeExclude } = {}): Promise<void> {
  const [src, dst] = await Promise.all([
    snapshotTree(sourceRoot, { exclude: opts.exclude }),
    snapshotTree(destRoot, { exclude: opts.exclude }),
  ]);
  const dstByRel = new Map(dst.map((e) => [e.rel, e]));
  const diffs: string[] = [];
  for (const s of src) {
    const d = dstByRel.get(s.rel);
    dstByRel.delete(s.rel);
    if (!d) {
      diffs.push(`missing: ${s.rel} (${s.type})`);
    } else if (d.type !== s.type) {
      diffs.push(`type: ${s.rel} is a ${s.type} at the source, a ${d.type} at the destination`);
    } else if (s.type === "file") {
      if (d.size !== s.size) diffs.push(`size: ${s.rel} source ${s.size} B, destination ${d.size} B`);
      if (d.mtimeMs !== s.mtimeMs) diffs.push(`mtime: ${s.rel} source ${s.mtimeMs} ms, destination ${d.mtimeMs} ms`);
      if (d.size === s.size) {
        const [hs, hd] = await Promise.all([sha256File(path.join(sourceRoot, s.rel)), sha256File(path.join(destRoot, s.rel))]);
        if (hs !== hd) diffs.push(`content: ${s.rel} sha256 source ${hs.slice(0, 16)}…, destination ${hd.slice(0, 16)}…`);
      }
    }
  }
  for (const d of dstByRel.values()) diffs.push(`extra: ${d.rel} (${d.type})`);
  if (diffs.length === 0) return;
  const listed = diffs.slice(0, MAX_LISTED).map((l) => `  ${l}`);
  if (diffs.length > MAX_LISTED) listed.push(`  … and ${diffs.length - MAX_LISTED} more`);
  throw new AssertionError({
    message: `trees differ: ${sourceRoot} → ${destRoot}, ${diffs.length} difference(s):\n${listed.join("\n")}`,
  });
}

const tempDirs: string[] = [];

/** Creates a fresh directory `<os.tmpdir()>/<prefix>XXXXXX`; {@link removeTempDirs} deletes it. */
export async function makeTempDir(prefix: string): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), prefix));
  tempDirs.push(dir);
  return dir;
}

/** Recursively deletes every directory made by {@link makeTempDir} so far (missing ones are fine). */
export async function removeTempDirs(): Promise<void> {
  const dirs = tempDirs.splice(0);
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
}
