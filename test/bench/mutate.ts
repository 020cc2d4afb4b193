/**
 * The "5 % pass" change set: rewrites a deterministic 5 % of a tree's migrated files in place
 * (same size, new bytes, new mtime), as compaction-free churn that every tool must pick up.
 */
import { createCipheriv, createHash } from "node:crypto";
import { open, utimes } from "node:fs/promises";
import path from "node:path";
import { snapshotTree, type TreeExclude } from "../helpers/tree.js";

/** Skips `<data dir>/<ks>/<table>/snapshots`, as lm-sidecar's default `dirs_to_exclude` and the benchmark's rsyncd.conf do. */
export const excludeSnapshots: TreeExclude = (rel, isDir) => isDir && /^data\d+\/[^/]+\/[^/]+\/snapshots$/.test(rel);

export interface MutationResult {
  /** Relative paths rewritten, sorted. */
  files: string[];
  /** Their total size in bytes. */
  bytes: number;
}

/** Epoch seconds of the first mutation round; round r stamps files with MUTATION_MTIME_S + r. */
const MUTATION_MTIME_S = 1_800_000_000;

/**
 * Rewrites round(fraction × n) of the n regular files under `root` (snapshot subtrees
 * excluded; at least one file), chosen by a PRNG seeded with `round`. Each keeps its size and
 * inode (a snapshot hard link to it changes too), gets new AES-CTR keystream bytes and the mtime
 * MUTATION_MTIME_S + round (seconds). Equal (tree, round) give equal results. Default fraction 0.05.
 */
export async function mutateFraction(root: string, round: number, fraction = 0.05): Promise<MutationResult> {
  const files = (await snapshotTree(root, { exclude: excludeSnapshots })).filter((e) => e.type === "file");
  const count = Math.min(files.length, Math.max(1, Math.round(files.length * fraction)));
  // Rank by a keyed hash of the path: a deterministic shuffle independent of the walk order.
  const keyed = files
    .map((f) => ({ f, k: createHash("sha256").update(`lm-bench-mutate:${round}:${f.rel}`).digest("hex") }))
    .sort((a, b) => (a.k < b.k ? -1 : a.k > b.k ? 1 : 0))
    .slice(0, count)
    .map((x) => x.f)
    .sort((a, b) => (a.rel < b.rel ? -1 : 1));
  const key = createHash("sha256").update(`lm-bench-mutate-key:${round}`).digest();
  const mtimeS = MUTATION_MTIME_S + round;
  let bytes = 0;
  for (const f of keyed) {
    const abs = path.join(root, f.rel);
    await rewriteInPlace(abs, f.rel, f.size, key);
    await utimes(abs, mtimeS, mtimeS);
    bytes += f.size;
  }
  return { files: keyed.map((f) => f.rel), bytes };
}

const PIECE_BYTES = 4 * 1024 * 1024;
const ZERO = Buffer.alloc(PIECE_BYTES);

/**
 * Overwrites `size` bytes of `abs` in place (no truncate, same inode, so hard links see the
 * change) with AES-256-CTR keystream (IV = md5("mutate:" + rel)), in ≤ 4 MiB pieces.
 */
async function rewriteInPlace(abs: string, rel: string, size: number, key: Buffer): Promise<void> {
  const cipher = createCipheriv("aes-256-ctr", key, createHash("md5").update(`mutate:${rel}`).digest());
  const fh = await open(abs, "r+");
  try {
    let pos = 0;
    while (pos < size) {
      const n = Math.min(size - pos, PIECE_BYTES);
      const buf = cipher.update(ZERO.subarray(0, n));
      let off = 0;
      while (off < n) off += (await fh.write(buf, off, n - off, pos + off)).bytesWritten;
      pos += n;
    }
  } finally {
    await fh.close();
  }
}
