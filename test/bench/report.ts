/**
 * The benchmark's output: per-scenario statistics, lm-sidecar-versus-peer ratios with the
 * targets of the benchmark issue, the machine it ran on, as `bench.md` and `bench.json`.
 * Units: seconds, bytes; MB = 10^6 bytes, MiB = 2^20 bytes.
 */
import { spawnSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { mkdir, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";

export type Tool = "lm-sidecar" | "rsync" | "cp" | "md5sum" | "xxhsum";

/** CPU and memory of one process (tree) during one run. */
export interface Resources {
  /** Peak resident set, in bytes (VmHWM; summed over concurrently live processes of a tree). */
  peakRssBytes: number;
  /** User + system CPU, in seconds. */
  cpuSeconds: number;
}

export interface RunRecord {
  /** 1-based repetition. */
  run: number;
  /** Wall time of the measured operation; NaN when it failed. */
  seconds: number;
  ok: boolean;
  error?: string;
  /** The tool's own processes (rsync client + daemon worker, cp, md5sum, …). */
  resources?: Resources;
  /** lm-sidecar only: the two agents. */
  agents?: { source?: Resources; destination?: Resources };
  /** Behind the delay proxy: CPU of the benchmark process, which runs the proxy (and polls). */
  proxyCpuSeconds?: number;
  /** Anything scenario-specific worth keeping (task ids, bytes downloaded, files mutated). */
  detail?: Record<string, unknown>;
}

export interface ScenarioResult {
  id: string;
  label: string;
  tool: Tool;
  /** Bytes the MB/s figure divides by (the migrated set, or both trees for digests). */
  bytes: number;
  runs: RunRecord[];
}

export interface Stats {
  median: number;
  min: number;
  max: number;
  /** bytes / median seconds / 10^6. */
  mbPerSecond: number;
  okRuns: number;
}

/** A row of the headline table: lm-sidecar scenario `lm` against scenario `peer`. */
export interface Comparison {
  label: string;
  lm: string;
  peer: string;
  /** Target from the benchmark issue: speed ratio (peer s ÷ lm s) at least `minSpeedRatio`. */
  target?: { minSpeedRatio: number; text: string; profiles: readonly string[] };
}

export interface MachineInfo {
  cpuModel: string;
  nproc: number;
  memoryBytes: number;
  kernel: string;
  node: string;
  disk: string;
  /** The kernel's proactive reclaim of idle memory, when it runs one (describeProactiveReclaim). */
  proactiveReclaim?: string;
  tools: Record<string, string>;
}

export interface BenchReport {
  createdAt: string;
  profile: string;
  options: Record<string, unknown>;
  machine: MachineInfo;
  dataset: Record<string, unknown>;
  scenarios: (ScenarioResult & { stats?: Stats })[];
  comparisons: (Comparison & { lmMedian?: number; peerMedian?: number; speedRatio?: number; met?: boolean })[];
  /** Largest agent peak RSS over all lm-sidecar runs, in bytes. */
  agentPeakRssBytes?: { source?: number; destination?: number };
  failures: string[];
}

/** Median, min, max and MB/s over the successful runs; undefined when none succeeded. */
export function stats(s: ScenarioResult): Stats | undefined {
  const xs = s.runs.filter((r) => r.ok && Number.isFinite(r.seconds)).map((r) => r.seconds).sort((a, b) => a - b);
  if (xs.length === 0) return undefined;
  const mid = Math.floor(xs.length / 2);
  const median = xs.length % 2 === 1 ? xs[mid]! : (xs[mid - 1]! + xs[mid]!) / 2;
  return { median, min: xs[0]!, max: xs.at(-1)!, mbPerSecond: median > 0 ? s.bytes / median / 1e6 : Number.POSITIVE_INFINITY, okRuns: xs.length };
}

/** The comparisons and targets of the benchmark issue (speed ratio = peer seconds ÷ lm-sidecar seconds). */
export const COMPARISONS: readonly Comparison[] = [
  { label: "full copy + sync vs rsync daemon + sync", lm: "lm.full", peer: "rsync.full", target: { minSpeedRatio: 1.0, text: "≥ 1.0×", profiles: ["large", "small"] } },
  { label: "full copy + sync vs cp -a + sync", lm: "lm.full", peer: "cp.full", target: { minSpeedRatio: 0.9, text: "≥ 0.9×", profiles: ["large"] } },
  { label: "no-op pass vs rsync no-op", lm: "lm.noop", peer: "rsync.noop", target: { minSpeedRatio: 0.5, text: "time ≤ 2×", profiles: ["small"] } },
  { label: "5 % pass vs rsync 5 % pass", lm: "lm.5pct", peer: "rsync.5pct" },
  { label: "verify MD5 vs md5sum over both trees", lm: "lm.verify.md5", peer: "md5sum.both", target: { minSpeedRatio: 1 / 1.2, text: "time ≤ 1.2×", profiles: ["large", "small"] } },
  { label: "verify XXHash32 vs xxhsum -H0 over both trees", lm: "lm.verify.xxhash32", peer: "xxhsum.both", target: { minSpeedRatio: 1 / 1.2, text: "time ≤ 1.2×", profiles: ["large", "small"] } },
  { label: "verify MD5 vs rsync --checksum no-op", lm: "lm.verify.md5", peer: "rsync.checksum" },
  { label: "full copy behind delay proxy vs rsync behind it", lm: "lm.full.proxy", peer: "rsync.full.proxy", target: { minSpeedRatio: 1.0, text: "≥ 1.0×", profiles: ["small"] } },
  { label: "full copy behind delay proxy vs own loopback", lm: "lm.full.proxy", peer: "lm.full", target: { minSpeedRatio: 0.8, text: "≥ 0.8×", profiles: ["large"] } },
];

/** Agent memory target of the benchmark issue: each agent under 200 MB on the large profile. */
export const AGENT_RSS_TARGET_BYTES = 200e6;

/** Builds the report: statistics per scenario, ratios, targets, failures. */
export function buildReport(input: {
  profile: string;
  options: Record<string, unknown>;
  machine: MachineInfo;
  dataset: Record<string, unknown>;
  scenarios: ScenarioResult[];
}): BenchReport {
  const scenarios = input.scenarios.map((s) => ({ ...s, stats: stats(s) }));
  const byId = new Map(scenarios.map((s) => [s.id, s]));
  const comparisons = COMPARISONS.filter((c) => byId.has(c.lm) && byId.has(c.peer)).map((c) => {
    const lmMedian = byId.get(c.lm)!.stats?.median;
    const peerMedian = byId.get(c.peer)!.stats?.median;
    const speedRatio = lmMedian !== undefined && peerMedian !== undefined && lmMedian > 0 ? peerMedian / lmMedian : undefined;
    const applies = c.target?.profiles.includes(input.profile) ?? false;
    const met = applies && speedRatio !== undefined ? speedRatio >= c.target!.minSpeedRatio : undefined;
    return { ...c, lmMedian, peerMedian, speedRatio, ...(met === undefined ? {} : { met }) };
  });
  const agentPeak = (side: "source" | "destination") => {
    const xs = scenarios.flatMap((s) => s.runs.map((r) => r.agents?.[side]?.peakRssBytes ?? 0));
    return xs.length > 0 && Math.max(...xs) > 0 ? Math.max(...xs) : undefined;
  };
  const failures = scenarios.flatMap((s) => s.runs.filter((r) => !r.ok).map((r) => `${s.id} run ${r.run}: ${r.error ?? "failed"}`));
  return {
    createdAt: new Date().toISOString(),
    profile: input.profile,
    options: input.options,
    machine: input.machine,
    dataset: input.dataset,
    scenarios,
    comparisons,
    agentPeakRssBytes: { source: agentPeak("source"), destination: agentPeak("destination") },
    failures,
  };
}

const fmtS = (x: number | undefined) => (x === undefined || !Number.isFinite(x) ? "–" : x < 10 ? x.toFixed(3) : x.toFixed(1));
const fmtMb = (bytes: number | undefined) => (bytes === undefined || !Number.isFinite(bytes) ? "–" : (bytes / 1e6).toFixed(bytes < 1e7 ? 1 : 0));
const fmtRate = (x: number | undefined) => (x === undefined || !Number.isFinite(x) ? "–" : x.toFixed(x < 10 ? 1 : 0));
const fmtRatio = (x: number | undefined) => (x === undefined || !Number.isFinite(x) ? "–" : `${x.toFixed(2)}×`);
const fmtMiB = (bytes: unknown) => (typeof bytes === "number" ? `${(bytes / 2 ** 20).toFixed(1)} MiB` : "?");

/** Median of `pick` over a scenario's successful runs. */
function medianOf(s: ScenarioResult, pick: (r: RunRecord) => number | undefined): number | undefined {
  const xs = s.runs.filter((r) => r.ok).map(pick).filter((x): x is number => x !== undefined && Number.isFinite(x)).sort((a, b) => a - b);
  if (xs.length === 0) return undefined;
  const mid = Math.floor(xs.length / 2);
  return xs.length % 2 === 1 ? xs[mid] : (xs[mid - 1]! + xs[mid]!) / 2;
}

/** The Markdown report (headline ratios, all scenarios, machine and dataset). */
export function renderMarkdown(r: BenchReport): string {
  const m = r.machine;
  const d = r.dataset;
  const lines: string[] = [];
  lines.push(`# lm-sidecar benchmark — ${r.profile} profile`, "");
  lines.push(`${r.createdAt}; ${String(r.options["runs"])} run(s) per scenario, tools alternating; delay proxy RTT ${String(r.options["rttMs"])} ms.`, "");
  const reclaim = m.proactiveReclaim ? `; ${m.proactiveReclaim}` : "";
  lines.push(`**Machine:** ${m.cpuModel}, ${m.nproc} CPUs, ${(m.memoryBytes / 2 ** 30).toFixed(1)} GiB RAM; Linux ${m.kernel}; Node ${m.node}; disk: ${m.disk}${reclaim}.  `);
  lines.push(`**Tools:** ${Object.entries(m.tools).map(([k, v]) => `${k}: ${v}`).join("; ")}.  `);
  lines.push(
    `**Dataset:** ${fmtMiB(d["uniqueBytes"])} unique in ${String(d["entries"])} files (${String(d["hardlinkEntries"])} snapshot hard links); ` +
      `the migrated set (snapshots excluded) is ${fmtMiB(d["migratedBytes"])} in ${String(d["migratedFiles"])} files. ` +
      "Page cache warm: no cache drop between runs, and the source tree read once, untimed, before the first.",
    "",
  );
  lines.push("## lm-sidecar against its peers", "");
  lines.push("Speed ratio = peer median seconds ÷ lm-sidecar median seconds (> 1: lm-sidecar is faster). MB/s = migrated bytes (both trees for verification) ÷ median seconds.", "");
  lines.push("| comparison | lm-sidecar s | peer s | lm-sidecar MB/s | peer MB/s | speed ratio lm-sidecar/peer | target | met |");
  lines.push("|---|---:|---:|---:|---:|---:|---|---|");
  const byId = new Map(r.scenarios.map((s) => [s.id, s]));
  for (const c of r.comparisons) {
    const lm = byId.get(c.lm)?.stats;
    const peer = byId.get(c.peer)?.stats;
    const target = c.target ? `${c.target.text} (${c.target.profiles.join(", ")})` : "";
    const met = c.met === undefined ? "" : c.met ? "yes" : "**no**";
    lines.push(`| ${c.label} | ${fmtS(lm?.median)} | ${fmtS(peer?.median)} | ${fmtRate(lm?.mbPerSecond)} | ${fmtRate(peer?.mbPerSecond)} | ${fmtRatio(c.speedRatio)} | ${target} | ${met} |`);
  }
  const peak = r.agentPeakRssBytes ?? {};
  if (peak.source !== undefined || peak.destination !== undefined) {
    const worst = Math.max(peak.source ?? 0, peak.destination ?? 0);
    const met = r.profile === "large" ? (worst < AGENT_RSS_TARGET_BYTES ? "yes" : "**no**") : "";
    lines.push(`| agent peak RSS (source / destination, MB) | ${fmtMb(peak.source)} / ${fmtMb(peak.destination)} | | | | | < 200 MB (large) | ${met} |`);
  }
  lines.push("", "## All scenarios", "");
  lines.push(
    "Peak RSS and CPU are medians over runs; for lm-sidecar they are the source / destination agents, for the others the tool's process tree (rsync: client and daemon worker). Behind the delay proxy, + proxy is the CPU of the benchmark process, which runs the proxy.",
    "",
  );
  lines.push("| scenario | tool | ok runs | median s | min s | max s | MB/s | peak RSS MB | CPU s |");
  lines.push("|---|---|---:|---:|---:|---:|---:|---:|---:|");
  for (const s of r.scenarios) {
    const st = s.stats;
    let rss: string;
    let cpu: string;
    if (s.tool === "lm-sidecar") {
      rss = `${fmtMb(medianOf(s, (x) => x.agents?.source?.peakRssBytes))} / ${fmtMb(medianOf(s, (x) => x.agents?.destination?.peakRssBytes))}`;
      cpu = `${fmtS(medianOf(s, (x) => x.agents?.source?.cpuSeconds))} / ${fmtS(medianOf(s, (x) => x.agents?.destination?.cpuSeconds))}`;
    } else {
      rss = fmtMb(medianOf(s, (x) => x.resources?.peakRssBytes));
      cpu = fmtS(medianOf(s, (x) => x.resources?.cpuSeconds));
    }
    const proxyCpu = medianOf(s, (x) => x.proxyCpuSeconds);
    if (proxyCpu !== undefined) cpu += ` + proxy ${fmtS(proxyCpu)}`;
    lines.push(`| ${s.label} | ${s.tool} | ${st?.okRuns ?? 0}/${s.runs.length} | ${fmtS(st?.median)} | ${fmtS(st?.min)} | ${fmtS(st?.max)} | ${fmtRate(st?.mbPerSecond)} | ${rss} | ${cpu} |`);
  }
  if (r.failures.length > 0) {
    lines.push("", "## Failures", "");
    for (const f of r.failures) lines.push(`- ${f.replaceAll("\n", " ")}`);
  }
  lines.push("");
  return lines.join("\n");
}

function sh(cmd: string, args: string[]): string {
  const res = spawnSync(cmd, args, { encoding: "utf8", timeout: 5_000 });
  return res.status === 0 ? res.stdout.trim() : "";
}

/** Filesystem, device, model and rotational flag of the disk holding `dir`, best effort. */
export function describeDisk(dir: string): string {
  const mount = sh("findmnt", ["-no", "SOURCE,FSTYPE", "--target", dir]).split(/\s+/);
  const [source = "?", fstype = "?"] = mount;
  let model = "";
  const dev = path.basename(source);
  if (source.startsWith("/dev/")) {
    const parent = sh("lsblk", ["-no", "PKNAME", source]).split("\n")[0] || dev;
    const info = sh("lsblk", ["-dno", "MODEL,ROTA,SIZE", `/dev/${parent}`]).replace(/\s+/g, " ").trim();
    if (info) {
      const parts = info.split(" ");
      const size = parts.pop() ?? "";
      const rota = parts.pop();
      model = `${parts.join(" ") || "unknown model"}, ${rota === "1" ? "rotational" : "non-rotational"}, ${size}`;
    }
  }
  return `${fstype} on ${source}${model ? ` (${model})` : ""}`;
}

/**
 * What the kernel's DAMON pages out on its own, e.g. "DAMON pages out memory idle for 60 s":
 * undefined when no kdamond with a `pageout` scheme runs (sysfs interface, Linux 5.18+).
 *
 * Some VMs run one to hand idle guest memory back to the host. The page cache is memory too:
 * on such a machine a tree nobody has read for that long is read from disk again, so the tool
 * that runs first after a pause (the benchmark's wait for deletions to settle, up to six
 * minutes) would be timed on a cold tree and the others on a warm one.
 */
export function describeProactiveReclaim(root = "/sys/kernel/mm/damon/admin/kdamonds"): string | undefined {
  const read = (p: string) => {
    try {
      return readFileSync(p, "utf8").trim();
    } catch {
      return undefined;
    }
  };
  const list = (p: string) => {
    try {
      return readdirSync(p).filter((n) => /^\d+$/.test(n));
    } catch {
      return [];
    }
  };
  const idleSeconds: number[] = [];
  for (const kdamond of list(root)) {
    if (read(path.join(root, kdamond, "state")) !== "on") continue;
    const contexts = path.join(root, kdamond, "contexts");
    for (const context of list(contexts)) {
      // A region's age counts aggregation intervals.
      const aggregationUs = Number(read(path.join(contexts, context, "monitoring_attrs/intervals/aggr_us")));
      const schemes = path.join(contexts, context, "schemes");
      for (const scheme of list(schemes)) {
        if (read(path.join(schemes, scheme, "action")) !== "pageout") continue;
        const minAge = Number(read(path.join(schemes, scheme, "access_pattern/age/min")));
        if (Number.isFinite(aggregationUs) && Number.isFinite(minAge)) idleSeconds.push((minAge * aggregationUs) / 1e6);
      }
    }
  }
  if (idleSeconds.length === 0) return undefined;
  return `DAMON pages out memory idle for ${Math.min(...idleSeconds).toFixed(0)} s`;
}

/** The machine the benchmark runs on. */
export function describeMachine(workDir: string, tools: Record<string, string>): MachineInfo {
  let cpuModel = os.cpus()[0]?.model ?? "unknown CPU";
  try {
    const m = /^model name\s*:\s*(.+)$/m.exec(readFileSync("/proc/cpuinfo", "utf8"));
    if (m) cpuModel = m[1]!.trim();
  } catch {
    // keep os.cpus()'s answer
  }
  return {
    cpuModel,
    nproc: os.availableParallelism(),
    memoryBytes: os.totalmem(),
    kernel: `${os.release()} ${os.arch()}`,
    node: process.version,
    disk: describeDisk(workDir),
    proactiveReclaim: describeProactiveReclaim(),
    tools,
  };
}

/** Writes `bench.json` and `bench.md` under `outDir` (created if needed); returns their paths. */
export async function writeReport(outDir: string, report: BenchReport): Promise<{ json: string; markdown: string }> {
  await mkdir(outDir, { recursive: true });
  const json = path.join(outDir, "bench.json");
  const markdown = path.join(outDir, "bench.md");
  await writeFile(json, JSON.stringify(report, (_k, v: unknown) => (typeof v === "number" && !Number.isFinite(v) ? null : v), 2) + "\n");
  await writeFile(markdown, renderMarkdown(report));
  return { json, markdown };
}
