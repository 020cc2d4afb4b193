/**
 * Deterministic, Cassandra-like data directory trees for the demo, the tests and the benchmark
 * (the library form of bench/make-dataset.sh, with two data dirs).
 *
 * Layout under ROOT (N = `dataDirs`, default 2):
 *   ROOT/data<i>/<keyspace>/<table>-<32 hex>/nb-<gen>-big-{Data,Index,Filter,Statistics,Summary,
 *        CompressionInfo}.db, nb-<gen>-big-TOC.txt, nb-<gen>-big-Digest.crc32
 *        (tables alternate between data0 … data<N-1> in planning order)
 *   ROOT/data<i>/<ks>/<table>-<hex>/snapshots/<name>/  hard links to that table's SSTable
 *        components, plus manifest.json and schema.cql
 *   ROOT/commitlog/CommitLog-7-<id>.log, ROOT/hints/<host>-<ts>-2.{hints,crc32},
 *   ROOT/saved_caches/{KeyCache,CounterCache}-g.db
 *
 * .db/.log/.hints bytes are AES-256-CTR keystream (key = sha256("lmbench-dataset-v1:key:"+seed),
 * IV = md5(path relative to ROOT)): incompressible and identical on every run and machine.
 * Every file and directory gets a fixed whole-second mtime, so rsync's quick check is stable.
 */
import { createHash } from "node:crypto";
import { link, lstat, mkdir, readdir, rm, stat } from "node:fs/promises";
import path from "node:path";
import { AgentError } from "../errors.js";
import { DATASET_VERSION, datasetKey, setTimeSeconds, writeKeystreamFile, writeTextFile } from "./writer.js";

export type DatasetProfile = "large" | "small" | "tiny";

export interface DatasetOptions {
  /** Size and file-count preset; default "large". */
  profile?: DatasetProfile;
  /** Unique byte total (hard links counted once); overrides the profile's size, like the script's --size. */
  sizeBytes?: number;
  /** Regular-file directory entries, hard links included (what `find ROOT -type f | wc -l` says). */
  files?: number;
  /** Largest Data.db in bytes; default the profile's, capped at 12 % of `sizeBytes` when that is given. */
  maxFileBytes?: number;
  /** PRNG and key seed; default 1. */
  seed?: number;
  /** Number of data directories (data0 … data<N-1>); default 2. */
  dataDirs?: number;
}

export interface DatasetSummary {
  /** Absolute root the tree was built under. */
  root: string;
  /** Regular-file directory entries, hard links included. */
  entries: number;
  /** Distinct inodes (entries minus snapshot hard links). */
  uniqueFiles: number;
  /** Snapshot hard links. */
  hardlinkEntries: number;
  /** Directories under root (root itself not counted). */
  dirs: number;
  /** Bytes of the distinct inodes. */
  uniqueBytes: number;
  /** The 8 largest files, largest first; `rel` is relative to root with "/" separators. */
  largest: { rel: string; bytes: number }[];
  /** Wall time of the build, in seconds. */
  seconds: number;
}

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

interface Profile {
  size: number;
  files: number;
  maxFile: number;
  minData: number;
  bigFiles: number;
  commitlog: { count: number; size: number };
  hints: { count: number; size: number };
  keyCache: number;
}

const PROFILES: Record<DatasetProfile, Profile> = {
  // ~4 GiB in ~400 files; a handful of Data.db between 200 and 500 MiB.
  large: {
    size: 4 * GiB, files: 400, maxFile: 500 * MiB, minData: 256 * KiB, bigFiles: 6,
    commitlog: { count: 4, size: 32 * MiB }, hints: { count: 3, size: 2 * MiB }, keyCache: 8 * MiB,
  },
  // ~200 MiB in ~20,000 files (mean ~10 KiB): many tiny tables, as on a schema-heavy node.
  small: {
    size: 200 * MiB, files: 20000, maxFile: 4 * MiB, minData: 1 * KiB, bigFiles: 1,
    commitlog: { count: 1, size: 8 * MiB }, hints: { count: 6, size: 64 * KiB }, keyCache: 1 * MiB,
  },
  // for self-tests and CI smoke runs
  tiny: {
    size: 16 * MiB, files: 300, maxFile: 2 * MiB, minData: 1 * KiB, bigFiles: 1,
    commitlog: { count: 1, size: 1 * MiB }, hints: { count: 2, size: 16 * KiB }, keyCache: 64 * KiB,
  },
};

const WORDS = ["users", "events", "orders", "sessions", "readings", "metrics", "messages", "accounts", "devices",
  "payments", "inventory", "audit_log", "profiles", "timeline", "counters", "locations", "carts", "tokens",
  "alerts", "sensors", "clicks", "ledger", "shipments", "reviews", "catalog", "followers", "likes", "trips"];
const KS_WORDS = ["shop", "iot", "analytics", "identity", "billing", "social", "telemetry", "logistics", "media", "ads"];
const SYS_TABLES: readonly (readonly [string, string])[] = [["system", "local"], ["system", "peers_v2"],
  ["system", "size_estimates"], ["system", "compaction_history"], ["system", "sstable_activity"],
  ["system_schema", "keyspaces"], ["system_schema", "tables"], ["system_schema", "columns"], ["system_auth", "roles"],
  ["system_distributed", "repair_history"], ["system_traces", "sessions"], ["system_traces", "events"]];

/** SSTable components in write order; TOC.txt is last, as Cassandra completes a set. */
const COMPONENTS = ["Data.db", "Index.db", "Filter.db", "Statistics.db", "Summary.db", "CompressionInfo.db",
  "Digest.crc32", "TOC.txt"] as const;
type Component = (typeof COMPONENTS)[number];
const TOC_TEXT = COMPONENTS.join("\n") + "\n";

/** Fixed epoch seconds of snapshot text files and of every directory. */
const SNAPSHOT_TEXT_MTIME_S = 1700009999;
const DIR_MTIME_S = 1700010000;

type Rng = () => number;

/** mulberry32 seeded from sha256("<version>:<seed>:<label>"); uniform in [0, 1). */
function makeRng(seed: number, label: string): Rng {
  let s = createHash("sha256").update(`${DATASET_VERSION}:${seed}:${label}`).digest().readUInt32LE(0);
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const hex = (rng: Rng, n: number): string => {
  let s = "";
  for (let i = 0; i < n; i++) s += Math.floor(rng() * 16).toString(16);
  return s;
};

interface Extra {
  rel: string;
  size: number;
  text?: string;
  mtimeS: number;
}

interface Sst {
  table: Table;
  gen: number;
  u: [number, number, number, number, number];
  crc: number;
  rank: number;
  /** Data.db bytes. */
  d: number;
}

interface Table {
  ks: string;
  name: string;
  sys: boolean;
  n: number;
  /** Relative to root: data<i>/<ks>/<name>-<hex>. */
  dir: string;
  ssts: Sst[];
  snapshot?: string;
}

interface Plan {
  tables: Table[];
  ssts: Sst[];
  entries: number;
}

function componentSizes(u: Sst["u"], crc: number, d: number): Record<Component, number> {
  const [u0, u1, u2, u3] = u;
  return {
    "Data.db": d,
    "Index.db": Math.max(64, Math.round(d * (0.01 + 0.02 * u0))),
    "Filter.db": Math.max(16, Math.round(d * (0.002 + 0.006 * u1))),
    "Statistics.db": 4096 + Math.floor(u2 * 8192),
    "Summary.db": Math.max(56, Math.round(d * (0.0002 + 0.0008 * u3))),
    "CompressionInfo.db": 40 + 8 * Math.ceil(d / 16384),
    "Digest.crc32": String(crc).length,
    "TOC.txt": TOC_TEXT.length,
  };
}

function sstBytes(s: Sst, d: number): number {
  const sizes = componentSizes(s.u, s.crc, d);
  let total = 0;
  for (const c of COMPONENTS) total += sizes[c];
  return total;
}

/** Resolves options into the effective profile (the script's `P`). */
function resolveProfile(options: DatasetOptions): Profile {
  const base = PROFILES[options.profile ?? "large"];
  if (!base) throw new AgentError("InvalidArgument", `unknown dataset profile ${String(options.profile)}`);
  const p: Profile = { ...base };
  if (options.sizeBytes !== undefined) {
    p.size = options.sizeBytes;
    // Commit log, hints and caches shrink with a smaller dataset, so that they never outgrow it.
    const ratio = Math.min(1, options.sizeBytes / base.size);
    const scaled = (bytes: number, min: number) => Math.max(min, Math.round((bytes * ratio) / 4096) * 4096);
    p.commitlog = { ...base.commitlog, size: scaled(base.commitlog.size, 64 * KiB) };
    p.hints = { ...base.hints, size: scaled(base.hints.size, 4 * KiB) };
    p.keyCache = scaled(base.keyCache, 4 * KiB);
  }
  if (options.files !== undefined) p.files = options.files;
  if (options.maxFileBytes !== undefined) p.maxFile = options.maxFileBytes;
  else if (options.sizeBytes !== undefined) p.maxFile = Math.min(p.maxFile, Math.max(64 * KiB, Math.round(p.size * 0.12)));
  return p;
}

/** Everything that decides the tree: the profile, seed and data-dir count. */
class Planner {
  constructor(
    private readonly p: Profile,
    private readonly seed: number,
    private readonly dataDirs: number,
  ) {}

  extras(): Extra[] {
    const { p } = this;
    const rng = makeRng(this.seed, "extras");
    const out: Extra[] = [];
    for (let i = 0; i < p.commitlog.count; i++) {
      out.push({ rel: `commitlog/CommitLog-7-${1700000000000 + i * 7919}.log`, size: p.commitlog.size, mtimeS: 1700003600 + i });
    }
    const host = `${hex(rng, 8)}-${hex(rng, 4)}-4${hex(rng, 3)}-a${hex(rng, 3)}-${hex(rng, 12)}`;
    for (let i = 0; i < p.hints.count; i++) {
      const size = Math.max(1024, Math.round(p.hints.size * (0.5 + rng())));
      const base = `hints/${host}-${1700000100000 + i * 60000}-2`;
      out.push({ rel: `${base}.hints`, size, mtimeS: 1700003000 + i });
      const text = String(Math.floor(rng() * 4294967296));
      out.push({ rel: `${base}.crc32`, size: text.length, text, mtimeS: 1700003000 + i });
    }
    out.push({ rel: "saved_caches/KeyCache-g.db", size: p.keyCache, mtimeS: 1700003500 });
    out.push({ rel: "saved_caches/CounterCache-g.db", size: Math.max(512, Math.round(p.keyCache / 64)), mtimeS: 1700003500 });
    return out;
  }

  /** Tables and SSTables (sizes not yet set) for `nSst` SSTables. */
  private layout(nSst: number): { tables: Table[]; ssts: Sst[] } {
    const rng = makeRng(this.seed, `layout:${nSst}`);
    const tables: Table[] = [];
    const nSys = Math.min(SYS_TABLES.length, Math.max(1, Math.round(nSst * 0.08)));
    for (let i = 0; i < nSys; i++) {
      const [ks, name] = SYS_TABLES[i]!;
      tables.push({ ks, name, sys: true, n: 1, dir: "", ssts: [] });
    }
    let remaining = nSst - nSys;
    let t = 0;
    let ksIdx = 0;
    let ksLeft = 0;
    let ks = "";
    while (remaining > 0) {
      if (ksLeft === 0) {
        ks = KS_WORDS[ksIdx % KS_WORDS.length]! + (ksIdx >= KS_WORDS.length ? `_${Math.floor(ksIdx / KS_WORDS.length)}` : "");
        ksIdx++;
        ksLeft = 1 + Math.floor(rng() * 10);
      }
      const n = Math.min(remaining, 1 + Math.floor(rng() * 8));
      const name = WORDS[t % WORDS.length]! + (t >= WORDS.length ? `_${Math.floor(t / WORDS.length)}` : "");
      tables.push({ ks, name, sys: false, n, dir: "", ssts: [] });
      remaining -= n;
      t++;
      ksLeft--;
    }
    const ssts: Sst[] = [];
    tables.forEach((tb, index) => {
      // Tables alternate between the data dirs, as Cassandra spreads them over its disks.
      tb.dir = `data${index % this.dataDirs}/${tb.ks}/${tb.name}-${hex(rng, 32)}`;
      let gen = 1 + Math.floor(rng() * 20);
      for (let j = 0; j < tb.n; j++) {
        const s: Sst = { table: tb, gen, u: [rng(), rng(), rng(), rng(), rng()], crc: Math.floor(rng() * 4294967296), rank: 0, d: 0 };
        tb.ssts.push(s);
        ssts.push(s);
        gen += 1 + Math.floor(rng() * 5);
      }
    });
    // Rank user SSTables in a random order (largest = rank 1); system ones stay small.
    const user = ssts.filter((s) => !s.table.sys);
    for (let i = user.length - 1; i > 0; i--) {
      const j = Math.floor(rng() * (i + 1));
      [user[i], user[j]] = [user[j]!, user[i]!];
    }
    user.forEach((s, i) => (s.rank = i + 1));
    return { tables, ssts };
  }

  /** Sets every Data.db size for Zipf exponent `a`; returns the SSTables' total bytes. */
  private sizeFor(ssts: Sst[], a: number): number {
    const { p } = this;
    for (const s of ssts) {
      if (s.table.sys) s.d = Math.round(p.minData * (1 + 3 * s.u[4]));
      // The top `bigFiles` ranks are spread evenly from maxFile down to 0.4*maxFile (e.g. 500..200 MiB);
      // the rest follow a Zipf-like tail below that, its exponent `a` solved to hit the size.
      else if (s.rank <= p.bigFiles) s.d = Math.round(p.maxFile * (p.bigFiles === 1 ? 1 : 1 - (0.6 * (s.rank - 1)) / (p.bigFiles - 1)));
      else {
        const top = p.bigFiles === 1 ? p.maxFile : 0.38 * p.maxFile;
        const r = s.rank - p.bigFiles + (p.bigFiles === 1 ? 1 : 0);
        s.d = Math.max(p.minData, Math.min(top, Math.round(top * Math.pow(r + (p.bigFiles === 1 ? 0 : 1), -a) * (0.9 + 0.2 * s.u[4]))));
      }
    }
    return ssts.reduce((acc, s) => acc + sstBytes(s, s.d), 0);
  }

  plan(nSst: number, nExtras: number, extraBytes: number): Plan {
    const { tables, ssts } = this.layout(nSst);
    const target = this.p.size - extraBytes;
    let lo = 0;
    let hi = 12;
    let a: number;
    if (this.sizeFor(ssts, lo) < target) a = lo; // even all-max is too small: saturate
    else if (this.sizeFor(ssts, hi) > target) a = hi; // even the minimum is too big
    else {
      for (let it = 0; it < 60; it++) {
        const mid = (lo + hi) / 2;
        if (this.sizeFor(ssts, mid) > target) lo = mid;
        else hi = mid;
      }
      a = hi;
    }
    this.sizeFor(ssts, a);
    // Snapshots: whole tables, ~12 % of SSTables and at most ~12 % of the bytes.
    const rng = makeRng(this.seed, `snap:${nSst}`);
    const order = tables
      .filter((t) => !t.sys)
      .map((t) => ({ t, k: rng() }))
      .sort((x, y) => x.k - y.k)
      .map((x) => x.t);
    let snapSst = 0;
    let snapBytes = 0;
    for (const tb of order) {
      if (snapSst >= 0.12 * nSst) break;
      const b = tb.ssts.reduce((acc, s) => acc + sstBytes(s, s.d), 0);
      if (snapBytes + b > 0.12 * this.p.size) continue;
      tb.snapshot = rng() < 0.5 ? "pre-upgrade-4.1" : `backup-${20231114 + Math.floor(rng() * 20)}`;
      snapSst += tb.ssts.length;
      snapBytes += b;
    }
    const snapTables = tables.filter((t) => t.snapshot !== undefined).length;
    const entries = nExtras + COMPONENTS.length * nSst + COMPONENTS.length * snapSst + 2 * snapTables;
    return { tables, ssts, entries };
  }

  /** The plan whose entry count is closest to the target file count. */
  best(nExtras: number, extraBytes: number): Plan {
    const want = this.p.files;
    const tried = new Map<number, Plan>();
    let best: Plan | undefined;
    const consider = (n: number): Plan => {
      n = Math.max(1, n);
      const known = tried.get(n);
      if (known) return known;
      const L = this.plan(n, nExtras, extraBytes);
      tried.set(n, L);
      if (!best || Math.abs(L.entries - want) < Math.abs(best.entries - want)) best = L;
      return L;
    };
    // A few secant-like steps, then a small scan around the best candidate.
    let n = Math.max(1, Math.round((want - nExtras) / (COMPONENTS.length * 1.12)));
    for (let it = 0; it < 8; it++) {
      const L = consider(n);
      const step = Math.round((want - L.entries) / (COMPONENTS.length * 1.12));
      if (step === 0) break;
      n += step;
    }
    const centre = best!.ssts.length;
    for (let d = -6; d <= 6; d++) consider(centre + d);
    return best!;
  }
}

/** Directory layout an agent config needs for a dataset built under `root` with `dataDirs` data dirs (default 2). */
export function datasetLayout(
  root: string,
  dataDirs = 2,
): { dataDirs: string[]; commitlogDir: string; hintsDir: string; savedCachesDir: string } {
  return {
    dataDirs: Array.from({ length: dataDirs }, (_, i) => path.join(root, `data${i}`)),
    commitlogDir: path.join(root, "commitlog"),
    hintsDir: path.join(root, "hints"),
    savedCachesDir: path.join(root, "saved_caches"),
  };
}

function schemaCql(ks: string, name: string): string {
  return `CREATE TABLE IF NOT EXISTS ${ks}.${name} (\n    id uuid,\n    ts timestamp,\n    payload blob,\n    PRIMARY KEY (id, ts)\n) WITH CLUSTERING ORDER BY (ts DESC)\n    AND compaction = {'class': 'org.apache.cassandra.db.compaction.SizeTieredCompactionStrategy'}\n    AND compression = {'chunk_length_in_kb': '16', 'class': 'org.apache.cassandra.io.compress.LZ4Compressor'};\n`;
}

/** How {@link generateDataset} treats a tree already at `root`. */
export interface GenerateMode {
  /**
   * Rewrite it in place instead of removing it first: every file is truncated and rewritten
   * (keeping its inode), and snapshot links already sharing that inode are kept. Only for a tree
   * generated before with the same options whose files were changed in place since: nothing is
   * deleted, so files it does not make stay. The point is to free no inodes (see
   * test/bench/settle.ts for why a benchmark cares).
   */
  readonly inPlace?: boolean;
}

/**
 * Builds the tree under `root` (removing whatever was there first, unless `mode.inPlace`) and
 * returns what it made. Equal options give byte-identical trees (content, sizes, file and
 * directory mtimes, inode sharing) on every run and machine. Memory stays flat: files are
 * written in ≤ 4 MiB pieces. Throws AgentError InvalidArgument for bad options; rejects with the
 * fs error (e.g. ENOSPC) on a failed write, leaving a partial tree.
 */
export async function generateDataset(root: string, options: DatasetOptions = {}, mode: GenerateMode = {}): Promise<DatasetSummary> {
  const started = performance.now();
  const p = resolveProfile(options);
  const seed = options.seed ?? 1;
  const nDataDirs = options.dataDirs ?? 2;
  if (!Number.isInteger(nDataDirs) || nDataDirs < 1) throw new AgentError("InvalidArgument", `dataDirs must be an integer >= 1, got ${nDataDirs}`);
  if (!(p.size > 0) || !(p.files > 0) || !(p.maxFile > 0)) throw new AgentError("InvalidArgument", "sizeBytes, files and maxFileBytes must be > 0");
  root = path.resolve(root);

  const planner = new Planner(p, seed, nDataDirs);
  const extras = planner.extras();
  const extraBytes = extras.reduce((a, f) => a + f.size, 0);
  const plan = planner.best(extras.length, extraBytes);
  const key = datasetKey(seed);

  if (!mode.inPlace) await rm(root, { recursive: true, force: true });
  await mkdir(root, { recursive: true });
  const files: { rel: string; bytes: number; link: boolean }[] = [];
  const dirs = new Set<string>();
  const mk = async (relDir: string) => {
    if (dirs.has(relDir)) return;
    await mkdir(path.join(root, relDir), { recursive: true });
    // Record every ancestor too, so all of them get the fixed mtime below.
    for (let d = relDir; d !== "." && !dirs.has(d); d = path.posix.dirname(d)) dirs.add(d);
  };
  for (const dir of datasetLayout(root, nDataDirs).dataDirs) await mk(path.relative(root, dir));

  for (const f of extras) {
    await mk(path.posix.dirname(f.rel));
    const abs = path.join(root, f.rel);
    if (f.text !== undefined) await writeTextFile(abs, f.text);
    else await writeKeystreamFile(abs, f.rel, f.size, key);
    await setTimeSeconds(abs, f.mtimeS);
    files.push({ rel: f.rel, bytes: f.size, link: false });
  }

  for (const tb of plan.tables) {
    await mk(tb.dir);
    const snapDir = tb.snapshot !== undefined ? `${tb.dir}/snapshots/${tb.snapshot}` : undefined;
    if (snapDir) await mk(snapDir);
    const manifest: string[] = [];
    for (const s of tb.ssts) {
      const sizes = componentSizes(s.u, s.crc, s.d);
      const mtimeS = 1700000000 + s.gen * 97;
      for (const comp of COMPONENTS) {
        const name = `nb-${s.gen}-big-${comp}`;
        const rel = `${tb.dir}/${name}`;
        const abs = path.join(root, rel);
        if (comp === "TOC.txt") await writeTextFile(abs, TOC_TEXT);
        else if (comp === "Digest.crc32") await writeTextFile(abs, String(s.crc));
        else await writeKeystreamFile(abs, rel, sizes[comp], key);
        await setTimeSeconds(abs, mtimeS);
        files.push({ rel, bytes: sizes[comp], link: false });
        if (snapDir) {
          await linkOrKeep(abs, path.join(root, snapDir, name), mode.inPlace === true);
          files.push({ rel: `${snapDir}/${name}`, bytes: sizes[comp], link: true });
          manifest.push(name);
        }
      }
    }
    if (snapDir) {
      const mf = JSON.stringify({ files: manifest.filter((n) => n.endsWith("Data.db")), created_at: "2023-11-14T22:13:20Z", expires_at: null }, null, 2) + "\n";
      for (const [name, text] of [["manifest.json", mf], ["schema.cql", schemaCql(tb.ks, tb.name)]] as const) {
        const abs = path.join(root, snapDir, name);
        await writeTextFile(abs, text);
        await setTimeSeconds(abs, SNAPSHOT_TEXT_MTIME_S);
        files.push({ rel: `${snapDir}/${name}`, bytes: Buffer.byteLength(text), link: false });
      }
    }
  }

  // Fixed directory mtimes, deepest first, so setting a child does not disturb its parent.
  const ordered = [...dirs].sort((a, b) => b.split("/").length - a.split("/").length || (a < b ? -1 : a > b ? 1 : 0));
  for (const d of ordered) await setTimeSeconds(path.join(root, d), DIR_MTIME_S);
  await setTimeSeconds(root, DIR_MTIME_S);

  const uniq = files.filter((f) => !f.link);
  return {
    root,
    entries: files.length,
    uniqueFiles: uniq.length,
    hardlinkEntries: files.length - uniq.length,
    dirs: dirs.size,
    uniqueBytes: uniq.reduce((a, f) => a + f.bytes, 0),
    largest: [...uniq]
      .sort((a, b) => b.bytes - a.bytes || (a.rel < b.rel ? -1 : 1))
      .slice(0, 8)
      .map((f) => ({ rel: f.rel, bytes: f.bytes })),
    seconds: +((performance.now() - started) / 1000).toFixed(3),
  };
}

/** Hard-links `target` at `linkPath`; with `keepSame`, a link already sharing target's inode is kept, any other entry there replaced. */
async function linkOrKeep(target: string, linkPath: string, keepSame: boolean): Promise<void> {
  try {
    await link(target, linkPath);
  } catch (err) {
    if (!keepSame || (err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    const [a, b] = await Promise.all([stat(target), lstat(linkPath)]);
    if (a.dev === b.dev && a.ino === b.ino) return;
    await rm(linkPath, { recursive: true, force: true });
    await link(target, linkPath);
  }
}

const componentPrefix = (gen: number) => `nb-${gen}-big-`;

/**
 * Writes one new SSTable set — the 8 components of generation `gen`, Data.db of `dataBytes`
 * bytes and the other components sized from it as in {@link generateDataset} — into the
 * existing table directory `tableDir`, TOC.txt last, as Cassandra completes a flush. Content is
 * keystream determined by (seed, table directory name, gen); mtimes are the write time, as on a
 * live node. Returns the file names written (relative to `tableDir`), in write order.
 * Overwrites an existing set of the same generation. `seed` defaults to 1. Throws AgentError
 * InvalidArgument for a bad `gen` or `dataBytes`; rejects with ENOENT when `tableDir` is missing.
 */
export async function writeSstableSet(tableDir: string, gen: number, dataBytes: number, seed = 1): Promise<string[]> {
  if (!Number.isInteger(gen) || gen < 1) throw new AgentError("InvalidArgument", `gen must be an integer >= 1, got ${gen}`);
  if (!Number.isInteger(dataBytes) || dataBytes < 0) throw new AgentError("InvalidArgument", `dataBytes must be an integer >= 0, got ${dataBytes}`);
  const table = path.basename(tableDir);
  const rng = makeRng(seed, `sstable:${table}:${gen}`);
  const u: Sst["u"] = [rng(), rng(), rng(), rng(), rng()];
  const crc = Math.floor(rng() * 4294967296);
  const sizes = componentSizes(u, crc, dataBytes);
  const key = datasetKey(seed);
  const written: string[] = [];
  for (const comp of COMPONENTS) {
    const name = `${componentPrefix(gen)}${comp}`;
    const abs = path.join(tableDir, name);
    if (comp === "TOC.txt") await writeTextFile(abs, TOC_TEXT);
    else if (comp === "Digest.crc32") await writeTextFile(abs, String(crc));
    else await writeKeystreamFile(abs, `live:${table}/${name}`, sizes[comp], key);
    written.push(name);
  }
  return written;
}

/**
 * Removes every component of generation `gen` (files named `nb-<gen>-big-*`) from `tableDir`,
 * TOC.txt first, as Cassandra retires a set after compaction. A missing set is not an error;
 * snapshot hard links elsewhere keep their inodes.
 */
export async function removeSstableSet(tableDir: string, gen: number): Promise<void> {
  const prefix = componentPrefix(gen);
  const names = (await readdir(tableDir)).filter((n) => n.startsWith(prefix));
  names.sort((a, b) => (a.endsWith("TOC.txt") ? -1 : b.endsWith("TOC.txt") ? 1 : a < b ? -1 : a > b ? 1 : 0));
  for (const name of names) await rm(path.join(tableDir, name), { force: true });
}
