/**
 * `npm run bench` — lm-sidecar against rsync, cp and the digest tools on one generated dataset,
 * in one run, tools alternating between repetitions. Writes `bench.md` and `bench.json` under
 * --out. Needs Linux (/proc), 127.0.0.1–127.0.0.3 on loopback, `npm run build` (the agents run
 * as an operator runs them: `lm-sidecar serve`, the launcher src/cli/lm-sidecar.sh), and rsync +
 * xxhash from apt; it installs nothing.
 *
 * Per repetition r (1…runs), with the order of tools reversed on even r:
 *   A  full copy into an empty destination (+ sync), then a no-op pass: lm-sidecar, rsync; cp -a
 *   B  5 % of the files rewritten (round r), then a pass of each tool
 *   C  verification: lm-sidecar MD5 and XXHash32, rsync --checksum no-op, md5sum and xxhsum -H0
 *      over both trees
 * then, per repetition, the full copies of lm-sidecar and rsync through the delay proxy.
 * lm-sidecar is driven only through its documented REST API.
 */
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { mkdir, open, readFile, rename, rm, statfs, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { generateDataset, type DatasetOptions, type DatasetProfile } from "../../src/dataset/generate.js";
import { snapshotTree, type TreeEntry, type TreeExclude } from "../helpers/tree.js";
import {
  AgentMeter,
  AgentProcess,
  agentConfigYaml,
  builtEntryOf,
  DEST_HOST,
  DestinationApi,
  freePort,
  makeAgentDirs,
  PROXIED_SOURCE_HOST,
  REPO_ROOT,
  sideOf,
  SOURCE_HOST,
  type AgentPorts,
  type Side,
  type TaskOutcome,
} from "./agents.js";
import { startDelayProxy, type DelayProxy } from "./delay-proxy.js";
import { excludeSnapshots, mutateFraction } from "./mutate.js";
import { recordDeletion, settleDeletions } from "./settle.js";
import { buildReport, describeMachine, renderMarkdown, writeReport, type RunRecord, type ScenarioResult, type Tool } from "./report.js";
import {
  checkTools,
  cpCopy,
  digestFiles,
  rsyncPull,
  startRsyncDaemon,
  toolVersion,
  type Measurement,
  type RsyncDaemon,
} from "./tools.js";

const GROUPS = ["lm", "rsync", "cp", "digest", "proxy"] as const;
type Group = (typeof GROUPS)[number];

const USAGE = `usage: npm run bench -- [options]

  --profile large|small|tiny   dataset profile (default large: ~4 GiB / ~400 files; small: ~200 MiB / ~20,000 files)
  --size N[K|M|G]              unique dataset bytes instead of the profile's
  --rtt-ms N                   round trip added by the delay proxy (default 10)
  --runs N                     repetitions of every scenario (default 3)
  --out DIR                    where bench.md and bench.json go (default bench-out/)
  --work DIR                   scratch space for the trees (default $TMPDIR/lm-bench-<profile>); needs ~4x the dataset
  --only LIST                  comma-separated subset of ${GROUPS.join(",")} (default all); proxy re-runs the
                               lm and rsync full copies behind the delay proxy, so it needs lm, rsync or both
  --agent FILE                 agent command (default src/cli/lm-sidecar.sh, the installed lm-sidecar, which runs
                               dist/src/main.js: build it with npm run build); a .js file runs with node
  --agent-log-level LEVEL      LOG_LEVEL of the agents (default info); logs go to <work>/*.log. lm-sidecar's figures
                               end at the destination's log line for the task's end: above info, at a poll instead
  --cpu-prof DIR               run the agents with node --cpu-prof (node dist/src/main.js, not the launcher),
                               profiles written to DIR (open in Chrome DevTools)
  --keep                       keep the destination trees (the source dataset is always kept for reuse)
  -h, --help

On ext4 without a journal, a run that starts within 6 minutes of the previous run's cleanup
first waits that out: files created then are slow to create, whichever tool creates them
(test/bench/settle.ts). Deletions by others (the test suite's) it detects by creating files:
if a create takes over 150 µs, it waits 6 minutes. The tiny profile (a smoke run) never waits.`;

// ---------------------------------------------------------------- options

interface BenchOptions {
  profile: DatasetProfile;
  sizeBytes?: number;
  rttMs: number;
  runs: number;
  outDir: string;
  workDir: string;
  groups: Set<Group>;
  agentMain: string;
  agentLogLevel: string;
  /** Extra node flags for the agents (--cpu-prof). */
  agentNodeArgs: string[];
  keep: boolean;
}

function parseBytes(s: string): number {
  const m = /^(\d+(?:\.\d+)?)([KMGT]?)(i?B)?$/i.exec(s.trim());
  if (!m) throw new Error(`bad size: ${s} (e.g. 200M, 4G)`);
  const mult = { "": 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40 }[m[2]!.toUpperCase() as "" | "K" | "M" | "G" | "T"];
  return Math.round(Number.parseFloat(m[1]!) * mult);
}

function parseOptions(argv: string[]): BenchOptions | undefined {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      profile: { type: "string", default: "large" },
      size: { type: "string" },
      "rtt-ms": { type: "string", default: "10" },
      runs: { type: "string", default: "3" },
      out: { type: "string", default: "bench-out" },
      work: { type: "string" },
      only: { type: "string" },
      agent: { type: "string" },
      "agent-log-level": { type: "string", default: "info" },
      keep: { type: "boolean", default: false },
      "cpu-prof": { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return undefined;
  }
  const profile = values.profile as DatasetProfile;
  if (!["large", "small", "tiny"].includes(profile)) throw new Error(`unknown profile ${profile}`);
  const rttMs = Number(values["rtt-ms"]);
  const runs = Number(values.runs);
  if (!(rttMs >= 0)) throw new Error(`--rtt-ms must be a number >= 0`);
  if (!Number.isInteger(runs) || runs < 1) throw new Error(`--runs must be an integer >= 1`);
  const groups = new Set<Group>();
  for (const g of (values.only ?? GROUPS.join(",")).split(",").map((x) => x.trim()).filter(Boolean)) {
    if (!(GROUPS as readonly string[]).includes(g)) throw new Error(`--only: unknown group ${g} (one of ${GROUPS.join(", ")})`);
    groups.add(g as Group);
  }
  if (groups.size === 0) throw new Error(`--only: no group given (one or more of ${GROUPS.join(", ")})`);
  // The proxy group re-runs the lm and rsync full copies behind the delay proxy: alone it measures nothing.
  if (groups.has("proxy") && !groups.has("lm") && !groups.has("rsync")) {
    throw new Error("--only proxy runs the lm and rsync full copies behind the delay proxy: add lm, rsync or both (e.g. --only lm,rsync,proxy)");
  }
  const sizeBytes = values.size !== undefined ? parseBytes(values.size) : undefined;
  const workName = `lm-bench-${profile}${sizeBytes !== undefined ? `-${sizeBytes}` : ""}`;
  return {
    profile,
    sizeBytes,
    rttMs,
    runs,
    outDir: path.resolve(values.out!),
    workDir: path.resolve(values.work ?? path.join(os.tmpdir(), workName)),
    groups,
    agentMain: path.resolve(values.agent ?? path.join(REPO_ROOT, "src/cli/lm-sidecar.sh")),
    agentLogLevel: values["agent-log-level"]!,
    agentNodeArgs: values["cpu-prof"] ? ["--cpu-prof", "--cpu-prof-dir", path.resolve(values["cpu-prof"])] : [],
    keep: values.keep!,
  };
}

// ---------------------------------------------------------------- small utilities

const log = (msg: string) => process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);


/** `sync`, timed as part of the copy it follows. */
function syncDisks(): void {
  const r = spawnSync("sync", { stdio: "ignore" });
  if (r.status !== 0) throw new Error("sync failed");
}

/**
 * Compares sizes and mtimes (ms) of `expected` against the tree under `destRoot`; returns up
 * to 5 differences (content is verified by the verification scenarios, not here).
 */
async function metadataDiff(expected: TreeEntry[], destRoot: string, exclude?: TreeExclude): Promise<string[]> {
  let actual: TreeEntry[];
  try {
    actual = await snapshotTree(destRoot, { exclude });
  } catch (err) {
    return [`cannot walk ${destRoot}: ${(err as Error).message}`];
  }
  const byRel = new Map(actual.map((e) => [e.rel, e]));
  const diffs: string[] = [];
  for (const e of expected) {
    const a = byRel.get(e.rel);
    byRel.delete(e.rel);
    if (!a) diffs.push(`missing ${e.rel}`);
    else if (a.type !== e.type) diffs.push(`type ${e.rel}`);
    else if (e.type === "file" && (a.size !== e.size || a.mtimeMs !== e.mtimeMs)) diffs.push(`size/mtime ${e.rel}`);
  }
  for (const a of byRel.values()) diffs.push(`extra ${a.rel}`);
  return diffs.slice(0, 5).concat(diffs.length > 5 ? [`… ${diffs.length - 5} more`] : []);
}


// ---------------------------------------------------------------- the benchmark

/** The agents' ports, and the rsync daemon's. */
interface Ports extends AgentPorts {
  rsync: number;
}

/** Old destination trees kept aside at most (Bench.emptyDestination), in bytes. */
const TRASH_MAX_BYTES = 8 * 2 ** 30;
/** Space left free on the work directory's filesystem beyond two trees, in bytes. */
const TRASH_FREE_RESERVE_BYTES = 2 * 2 ** 30;

class Bench {
  private readonly scenarios = new Map<string, ScenarioResult>();
  private readonly source: Side;
  private readonly lmDest: Side;
  private readonly rsyncDest: string;
  private readonly cpDest: string;
  private ports!: Ports;
  private daemon: RsyncDaemon | undefined;
  private proxies: DelayProxy[] = [];
  private sourceAgent: AgentProcess | undefined;
  private destAgent: AgentProcess | undefined;
  private destYaml = "";
  /** Source tree without snapshots: what every copy must reproduce. */
  private expected: TreeEntry[] = [];
  private migratedBytes = 0;
  private datasetInfo: Record<string, unknown> = {};
  /** Which destinations currently mirror the source (for the digest tools' second tree). */
  private inSync = new Set<string>();
  /** Old destination trees moved aside by emptyDestination; deleted by cleanup(). */
  private readonly trashDir: string;
  private trashBytes = 0;
  private trashed = 0;

  constructor(private readonly o: BenchOptions) {
    this.source = sideOf(o.workDir, "source");
    this.lmDest = sideOf(o.workDir, "lm-dest");
    this.rsyncDest = path.join(o.workDir, "rsync-dest");
    this.cpDest = path.join(o.workDir, "cp-dest");
    this.trashDir = path.join(o.workDir, "trash");
  }

  private has(g: Group): boolean {
    return this.o.groups.has(g);
  }

  private scenario(id: string, label: string, tool: Tool, bytes: number): ScenarioResult {
    let s = this.scenarios.get(id);
    if (!s) {
      s = { id, label, tool, bytes, runs: [] };
      this.scenarios.set(id, s);
    }
    return s;
  }

  private get taskTimeoutMs(): number {
    return 120_000 + (this.migratedBytes / 2e6) * 1000; // never slower than 2 MB/s
  }

  /**
   * While delay proxies run (they live in this process), measures this process's CPU from now
   * on: the proxies' relaying, plus the status polling. The returned function gives the fields
   * to add to a RunRecord (none without proxies).
   */
  private proxyCpuMeter(): () => Pick<RunRecord, "proxyCpuSeconds"> {
    if (this.proxies.length === 0) return () => ({});
    const before = process.cpuUsage();
    return () => {
      const used = process.cpuUsage(before);
      return { proxyCpuSeconds: (used.user + used.system) / 1e6 };
    };
  }

  /** Records one run of a shell-tool scenario; a failed check marks the run failed. */
  private async recordTool(s: ScenarioResult, run: number, measure: () => Promise<Measurement>, check?: () => Promise<string[]>): Promise<boolean> {
    log(`${s.id} run ${run}`);
    let rec: RunRecord;
    try {
      const proxyCpu = this.proxyCpuMeter();
      const m = await measure();
      rec = { run, seconds: m.seconds, ok: m.exitCode === 0, resources: { peakRssBytes: m.peakRssBytes, cpuSeconds: m.cpuSeconds }, ...proxyCpu() };
      if (!rec.ok) rec.error = `exit ${m.exitCode}: ${m.stderrTail.trim().split("\n").slice(-3).join(" | ")}`;
      if (rec.ok && check) {
        const diffs = await check();
        if (diffs.length > 0) Object.assign(rec, { ok: false, error: `destination differs from source: ${diffs.join("; ")}` });
      }
    } catch (err) {
      rec = { run, seconds: Number.NaN, ok: false, error: (err as Error).message };
    }
    s.runs.push(rec);
    log(`  ${rec.ok ? `${rec.seconds.toFixed(3)} s` : `FAILED: ${rec.error}`}`);
    return rec.ok;
  }

  /**
   * Records one run of an lm-sidecar scenario: from the POST to the terminal state, as the
   * destination agent logged it (taskEndFromLog; else as the poll saw it), plus the `sync` after a
   * copy.
   */
  private async recordLm(s: ScenarioResult, run: number, op: () => Promise<TaskOutcome>, opts: { sync?: boolean; check?: () => Promise<string[]> } = {}): Promise<boolean> {
    log(`${s.id} run ${run}`);
    const meters = [new AgentMeter(this.sourceAgent!), new AgentMeter(this.destAgent!)] as const;
    let rec: RunRecord;
    try {
      await Promise.all(meters.map((m) => m.begin()));
      const proxyCpu = this.proxyCpuMeter();
      const startedAt = Date.now(); // the wall clock, as in the agent's log
      const t0 = performance.now();
      const { task, endedAt: readEnd } = await op();
      const polledMs = performance.now() - t0;
      const s0 = performance.now();
      if (opts.sync) syncDisks();
      const syncMs = performance.now() - s0;
      const endedAt = await readEnd();
      // A logged end after the poll that saw it would be a clock step: the poll's figure then.
      const logged = endedAt !== undefined && endedAt >= startedAt && endedAt - startedAt <= polledMs + 2 ? endedAt - startedAt : undefined;
      const seconds = ((logged ?? polledMs) + syncMs) / 1000;
      const [source, destination] = await Promise.all(meters.map((m) => m.end()));
      const timing = { endedBy: logged !== undefined ? "agent log" : "poll", polledSeconds: +((polledMs + syncMs) / 1000).toFixed(3) };
      rec = { run, seconds, ok: true, agents: { source, destination }, detail: { task, ...timing }, ...proxyCpu() };
      if (opts.check) {
        const diffs = await opts.check();
        if (diffs.length > 0) Object.assign(rec, { ok: false, error: `destination differs from source: ${diffs.join("; ")}` });
      }
    } catch (err) {
      rec = { run, seconds: Number.NaN, ok: false, error: (err as Error).message };
    }
    s.runs.push(rec);
    log(`  ${rec.ok ? `${rec.seconds.toFixed(3)} s` : `FAILED: ${rec.error}`}`);
    return rec.ok;
  }

  // -------------------------------------------------------------- setup

  private async prepareDataset(): Promise<void> {
    const options: DatasetOptions = { profile: this.o.profile, ...(this.o.sizeBytes !== undefined ? { sizeBytes: this.o.sizeBytes } : {}) };
    const stampFile = path.join(this.o.workDir, "source.stamp.json");
    const wanted = JSON.stringify({ stampVersion: 1, options });
    let summary: Record<string, unknown> | undefined;
    // A tree made with these options and only changed in place since (mutateFraction) is
    // rewritten in place: regenerating it from scratch would free 20,000 inodes (settle.ts).
    let rewrite = false;
    try {
      const stamp = JSON.parse(await readFile(stampFile, "utf8")) as { key: string; dirty: boolean; summary: Record<string, unknown> };
      if (stamp.key === wanted && existsSync(this.source.root)) {
        if (stamp.dirty) rewrite = true;
        else summary = stamp.summary;
      }
    } catch {
      // no usable stamp: generate
    }
    if (summary) log(`reusing the dataset in ${this.source.root}`);
    else {
      log(`${rewrite ? "rewriting" : "generating"} the ${this.o.profile} dataset in ${this.source.root}`);
      const replacing = !rewrite && existsSync(this.source.root);
      summary = { ...(await generateDataset(this.source.root, options, { inPlace: rewrite })) };
      if (replacing) await recordDeletion(this.o.workDir, summary["entries"] as number);
      await writeFile(stampFile, JSON.stringify({ key: wanted, dirty: false, summary }, null, 2));
      log(`  ${summary["entries"]} files, ${((summary["uniqueBytes"] as number) / 2 ** 20).toFixed(1)} MiB in ${summary["seconds"]} s`);
    }
    await this.refreshExpected();
    this.datasetInfo = {
      profile: this.o.profile,
      ...summary,
      migratedBytes: this.migratedBytes,
      migratedFiles: this.expected.filter((e) => e.type === "file").length,
    };
  }

  private async markDirty(): Promise<void> {
    const stampFile = path.join(this.o.workDir, "source.stamp.json");
    try {
      const stamp = JSON.parse(await readFile(stampFile, "utf8")) as Record<string, unknown>;
      await writeFile(stampFile, JSON.stringify({ ...stamp, dirty: true }, null, 2));
    } catch {
      // nothing to mark
    }
  }

  private async refreshExpected(): Promise<void> {
    this.expected = await snapshotTree(this.source.root, { exclude: excludeSnapshots });
    this.migratedBytes = this.expected.reduce((a, e) => a + (e.type === "file" ? e.size : 0), 0);
  }

  /**
   * Empties a destination before a full copy by moving its tree aside, not deleting it. ext4
   * without a journal (the reference VM's root filesystem) passes over inodes freed in the last
   * 60 s (360 s while their inode table block is dirty) when it allocates new ones, reading each
   * one's table block: right after a deletion of the small tree, rsync's receiver spent 5.8-6.4 s
   * of system CPU creating its 18k files instead of 1.1-1.5 s, and whichever tool ran next paid
   * for the previous one's deletion. A migration's destination host has no such recent deletions.
   * The trash is deleted by cleanup(); past TRASH_MAX_BYTES, or without room on the filesystem for
   * two more trees, a tree is deleted at once (large trees have few files, so little to lose).
   */
  private async emptyDestination(dir: string): Promise<void> {
    this.inSync.delete(dir);
    if (!existsSync(dir)) return;
    const tree = this.migratedBytes;
    const { bavail, bsize } = await statfs(this.o.workDir);
    if (this.trashBytes + tree <= TRASH_MAX_BYTES && bavail * bsize > 2 * tree + TRASH_FREE_RESERVE_BYTES) {
      await mkdir(this.trashDir, { recursive: true });
      await rename(dir, path.join(this.trashDir, `${path.basename(dir)}-${this.trashed++}`));
      this.trashBytes += tree;
      return;
    }
    await rm(dir, { recursive: true, force: true });
  }

  /** Stops the destination agent, empties its tree and staging dir, and starts it again. */
  private async freshDestinationAgent(): Promise<void> {
    await this.destAgent?.stop();
    await this.emptyDestination(this.lmDest.root);
    await rm(this.lmDest.stagingDir, { recursive: true, force: true });
    await makeAgentDirs(this.lmDest);
    await this.destAgent!.start(this.destYaml);
  }

  private async startAgents(proxied: boolean): Promise<void> {
    await this.stopAgents();
    const o = this.o;
    const sourceInstanceHost = proxied ? PROXIED_SOURCE_HOST : SOURCE_HOST;
    const map = { [sourceInstanceHost]: DEST_HOST };
    const suffix = proxied ? "-proxied" : "";
    const agent = (label: string, name: string, bindHost: string) =>
      new AgentProcess({
        label,
        agentMain: o.agentMain,
        configFile: path.join(o.workDir, `${name}${suffix}.yaml`),
        logFile: path.join(o.workDir, `${name}-agent.log`),
        bindHost,
        ports: this.ports,
        logLevel: o.agentLogLevel,
        nodeArgs: o.agentNodeArgs,
      });
    this.sourceAgent = agent("source", "source", SOURCE_HOST);
    this.destAgent = agent("destination", "destination", DEST_HOST);
    await mkdir(this.source.stagingDir, { recursive: true });
    await this.sourceAgent.start(agentConfigYaml(this.source, sourceInstanceHost, SOURCE_HOST, this.ports, map));
    this.destYaml = agentConfigYaml(this.lmDest, DEST_HOST, DEST_HOST, this.ports, map);
    await this.freshDestinationAgent();
  }

  private async stopAgents(): Promise<void> {
    await Promise.all([this.sourceAgent?.stop(), this.destAgent?.stop()]);
  }

  private get api(): DestinationApi {
    return new DestinationApi(`http://${DEST_HOST}:${this.ports.gateway}`, this.destAgent!.logFile);
  }

  // -------------------------------------------------------------- phases

  private async lmFull(run: number, id: string, label: string): Promise<void> {
    const s = this.scenario(id, label, "lm-sidecar", this.migratedBytes);
    try {
      await this.freshDestinationAgent();
    } catch (err) {
      s.runs.push({ run, seconds: Number.NaN, ok: false, error: (err as Error).message });
      return;
    }
    if (await this.recordLm(s, run, () => this.api.dataCopy(this.taskTimeoutMs), { sync: true, check: () => metadataDiff(this.expected, this.lmDest.root) })) {
      this.inSync.add(this.lmDest.root);
    }
  }

  private async lmPass(run: number, id: string, label: string): Promise<void> {
    const s = this.scenario(id, label, "lm-sidecar", this.migratedBytes);
    const ok = await this.recordLm(s, run, () => this.api.dataCopy(this.taskTimeoutMs), { sync: true, check: () => metadataDiff(this.expected, this.lmDest.root) });
    if (ok) this.inSync.add(this.lmDest.root);
    else this.inSync.delete(this.lmDest.root);
  }

  private async rsyncFull(run: number, id: string, label: string, host: string): Promise<void> {
    const s = this.scenario(id, label, "rsync", this.migratedBytes);
    await this.emptyDestination(this.rsyncDest);
    await mkdir(this.rsyncDest, { recursive: true });
    if (await this.recordTool(s, run, () => rsyncPull(this.daemon!, this.rsyncDest, { host }), () => metadataDiff(this.expected, this.rsyncDest))) {
      this.inSync.add(this.rsyncDest);
    }
  }

  private async rsyncPass(run: number, id: string, label: string, checksum = false): Promise<void> {
    const s = this.scenario(id, label, "rsync", this.migratedBytes);
    const ok = await this.recordTool(s, run, () => rsyncPull(this.daemon!, this.rsyncDest, { checksum }), () => metadataDiff(this.expected, this.rsyncDest));
    if (ok) this.inSync.add(this.rsyncDest);
    else this.inSync.delete(this.rsyncDest);
  }

  private async cpFull(run: number): Promise<void> {
    const s = this.scenario("cp.full", "full copy: cp -a + sync (snapshots included)", "cp", this.migratedBytes);
    await this.emptyDestination(this.cpDest);
    const all = await snapshotTree(this.source.root);
    await this.recordTool(s, run, () => cpCopy(this.source.root, this.cpDest), () => metadataDiff(all, this.cpDest));
    // cp's copy is not refreshed by later passes; free the space at once.
    await this.emptyDestination(this.cpDest);
  }

  /** Both trees' migrated files: the source and a destination that mirrors it (made with an untimed cp if none does). */
  private async bothTrees(): Promise<{ abs: string; size: number }[]> {
    let dest = [this.rsyncDest, this.lmDest.root].find((d) => this.inSync.has(d));
    if (!dest) {
      dest = path.join(this.o.workDir, "digest-copy");
      if (!existsSync(dest)) {
        log("making an untimed copy for the digest tools");
        const r = spawnSync("cp", ["-a", this.source.root, dest]);
        if (r.status !== 0) throw new Error(`cp -a for the digest copy failed: ${r.stderr?.toString() ?? ""}`);
      }
    }
    const files = this.expected.filter((e) => e.type === "file");
    return [...files.map((f) => ({ abs: path.join(this.source.root, f.rel), size: f.size })), ...files.map((f) => ({ abs: path.join(dest, f.rel), size: f.size }))];
  }

  /**
   * Reads every migrated file of `root` once, untimed. lm-sidecar writes large files with
   * O_DIRECT, so after its copy its destination is not in the page cache, while rsync's and cp's
   * are: without this, lm-sidecar's verification would be timed on a cold tree against digest
   * tools hashing warm ones.
   */
  private async warmTree(root: string): Promise<void> {
    const buffer = Buffer.allocUnsafe(1 << 20);
    for (const f of this.expected) {
      if (f.type !== "file") continue;
      const handle = await open(path.join(root, f.rel), "r");
      try {
        while ((await handle.read(buffer, 0, buffer.length, null)).bytesRead > 0);
      } finally {
        await handle.close();
      }
    }
  }

  private async verificationPhase(run: number): Promise<void> {
    const steps: (() => Promise<void>)[] = [];
    if (this.inSync.has(this.lmDest.root)) await this.warmTree(this.lmDest.root);
    if (this.has("lm")) {
      for (const [alg, id] of [["MD5", "lm.verify.md5"], ["XXHash32", "lm.verify.xxhash32"]] as const) {
        steps.push(async () => {
          const s = this.scenario(id, `verification ${alg}`, "lm-sidecar", 2 * this.migratedBytes);
          if (!this.inSync.has(this.lmDest.root)) {
            s.runs.push({ run, seconds: Number.NaN, ok: false, error: "skipped: the lm-sidecar destination is not in sync" });
            return;
          }
          await this.recordLm(s, run, () => this.api.verify(alg, this.taskTimeoutMs));
        });
      }
    }
    if (this.has("rsync")) {
      steps.push(() => this.rsyncPass(run, "rsync.checksum", "no-op pass with --checksum", true));
    }
    if (this.has("digest")) {
      for (const [tool, id, label] of [["md5sum", "md5sum.both", "md5sum over both trees (2 processes)"], ["xxhsum", "xxhsum.both", "xxhsum -H0 over both trees (2 processes)"]] as const) {
        steps.push(async () => {
          const s = this.scenario(id, label, tool, 2 * this.migratedBytes);
          const files = await this.bothTrees();
          await this.recordTool(s, run, () => digestFiles(tool, files, this.o.workDir));
        });
      }
    }
    if (run % 2 === 0) steps.reverse();
    for (const step of steps) await step();
  }

  /**
   * Deletes the trash of a run that was stopped before its cleanup (killed, or its cleanup cut
   * short), which would otherwise hold the names this run sets its destinations aside under, and
   * notes the deletion for settleDeletions like cleanup() does.
   */
  private async removeLeftoverTrash(): Promise<void> {
    if (!existsSync(this.trashDir)) return;
    const files = readdirSync(this.trashDir, { recursive: true }).length;
    spawnSync("rm", ["-rf", "--", this.trashDir], { stdio: "ignore" });
    await recordDeletion(this.o.workDir, files);
    log(`deleted ${files} entries that an interrupted run left in ${this.trashDir}`);
  }

  /** Runs everything; returns the scenario results in a stable order. */
  async run(): Promise<ScenarioResult[]> {
    const o = this.o;
    await mkdir(o.workDir, { recursive: true });
    await this.removeLeftoverTrash();
    await this.prepareDataset();
    const addresses = [SOURCE_HOST, DEST_HOST, PROXIED_SOURCE_HOST];
    const gateway = await freePort(addresses, []);
    const peer = await freePort(addresses, [gateway]);
    const rsync = await freePort(addresses, [gateway, peer]);
    this.ports = { gateway, peer, rsync };
    log(`ports: gateway ${gateway}, peer ${peer}, rsync daemon ${rsync}`);

    const lm = this.has("lm");
    const rs = this.has("rsync");
    if (rs) {
      this.daemon = await startRsyncDaemon({ root: this.source.root, port: rsync, address: SOURCE_HOST, workDir: o.workDir });
    }
    if (lm) await this.startAgents(false);
    // The dataset just written must not be flushed by the first copy's sync, timed as its own.
    syncDisks();
    // The probes' files go with the trash at the end (settle.ts). The tiny profile is CI's smoke
    // run, right after the test suite's deletions: it has no figures worth six minutes.
    if (o.profile === "tiny") log("tiny profile: not waiting for deletions to settle (figures of a smoke run)");
    else await settleDeletions(o.workDir, log, { probeDir: path.join(this.trashDir, "create-probes") });
    // The wait above can outlast the kernel's proactive reclaim of idle page cache (report.ts,
    // describeProactiveReclaim): every tool starts from a warm source, not just those after the first.
    const started = performance.now();
    await this.warmTree(this.source.root);
    log(`source tree read once, untimed, in ${((performance.now() - started) / 1000).toFixed(1)} s`);

    for (let run = 1; run <= o.runs; run++) {
      log(`--- repetition ${run}/${o.runs}`);
      // A: full copies and no-op passes, tools alternating.
      const order: Group[] = (["lm", "rsync", "cp"] as Group[]).filter((g) => this.has(g));
      if (run % 2 === 0) order.reverse();
      for (const g of order) {
        if (g === "lm") {
          await this.lmFull(run, "lm.full", "full copy + sync");
          await this.lmPass(run, "lm.noop", "no-op pass");
        } else if (g === "rsync") {
          await this.rsyncFull(run, "rsync.full", "full copy + sync", SOURCE_HOST);
          await this.rsyncPass(run, "rsync.noop", "no-op pass");
        } else if (g === "cp") {
          await this.cpFull(run);
        }
      }
      // B: 5 % of the files change at the source, then each tool's pass.
      if (lm || rs) {
        await this.markDirty();
        const changed = await mutateFraction(this.source.root, run);
        await this.refreshExpected();
        log(`mutated ${changed.files.length} files, ${(changed.bytes / 2 ** 20).toFixed(1)} MiB`);
        for (const g of order) {
          if (g === "lm") await this.lmPass(run, "lm.5pct", "pass after 5 % of files changed");
          if (g === "rsync") await this.rsyncPass(run, "rsync.5pct", "pass after 5 % of files changed");
        }
      }
      // C: verification and the digest tools.
      await this.verificationPhase(run);
    }

    if (this.has("proxy") && (lm || rs)) {
      log(`--- delay proxy: ${o.rttMs} ms RTT on ${PROXIED_SOURCE_HOST}`);
      const oneWayDelayMs = o.rttMs / 2;
      for (const port of lm ? [this.ports.gateway, this.ports.peer] : []) {
        this.proxies.push(await startDelayProxy({ listenHost: PROXIED_SOURCE_HOST, listenPort: port, targetHost: SOURCE_HOST, targetPort: port, oneWayDelayMs }));
      }
      if (rs) this.proxies.push(await startDelayProxy({ listenHost: PROXIED_SOURCE_HOST, listenPort: this.ports.rsync, targetHost: SOURCE_HOST, targetPort: this.ports.rsync, oneWayDelayMs }));
      if (lm) await this.startAgents(true);
      for (let run = 1; run <= o.runs; run++) {
        const order: Group[] = (["lm", "rsync"] as Group[]).filter((g) => this.has(g));
        if (run % 2 === 0) order.reverse();
        for (const g of order) {
          if (g === "lm") await this.lmFull(run, "lm.full.proxy", `full copy + sync behind ${o.rttMs} ms RTT`);
          else await this.rsyncFull(run, "rsync.full.proxy", `full copy + sync behind ${o.rttMs} ms RTT`, PROXIED_SOURCE_HOST);
        }
      }
    }
    return [...this.scenarios.values()];
  }

  /** Stops agents, daemon and proxies; removes the destinations unless --keep, and the trash. Safe to call twice. */
  async cleanup(): Promise<void> {
    await this.stopAgents().catch(() => undefined);
    await this.daemon?.stop().catch(() => undefined);
    this.daemon = undefined;
    await Promise.all(this.proxies.splice(0).map((p) => p.close()));
    // Trees about to be deleted, each of about the migrated set's file count (settle.ts).
    let treesDeleted = this.trashBytes / Math.max(1, this.migratedBytes);
    if (!this.o.keep) {
      const trees = [this.lmDest.root, this.rsyncDest, this.cpDest, path.join(this.o.workDir, "digest-copy")];
      treesDeleted += trees.filter((d) => existsSync(d)).length;
      for (const d of [...trees, this.lmDest.stagingDir]) await rm(d, { recursive: true, force: true });
    }
    // rm(1): fs.rm takes minutes and GBs of memory over a few hundred thousand files.
    spawnSync("rm", ["-rf", "--", this.trashDir], { stdio: "ignore" });
    this.trashBytes = 0;
    const filesPerTree = Number(this.datasetInfo["migratedFiles"] ?? 0);
    await recordDeletion(this.o.workDir, Math.round(treesDeleted * filesPerTree)).catch(() => undefined);
  }

  get dataset(): Record<string, unknown> {
    return this.datasetInfo;
  }
}

// ---------------------------------------------------------------- main

/** Tools each group needs. */
const GROUP_TOOLS: Record<Group, string[]> = {
  lm: ["sync"],
  rsync: ["rsync", "sync", "bash"],
  cp: ["cp", "sync", "bash"],
  digest: ["md5sum", "xxhsum", "xargs", "bash"],
  proxy: [],
};

async function main(argv: string[]): Promise<number> {
  let o: BenchOptions | undefined;
  try {
    o = parseOptions(argv);
  } catch (err) {
    process.stderr.write(`bench: ${(err as Error).message}\n\n${USAGE}\n`);
    return 2;
  }
  if (!o) return 0;
  if (process.platform !== "linux") {
    process.stderr.write("bench: needs Linux (/proc for CPU and memory, 127.0.0.2/127.0.0.3 on loopback)\n");
    return 2;
  }
  const built = builtEntryOf(o.agentMain);
  if (o.groups.has("lm") && !(existsSync(o.agentMain) && existsSync(built))) {
    process.stderr.write(`bench: the agent is not built: ${built} is missing.\nRun \`npm run build\` first (or pass --only rsync,cp,digest,proxy to benchmark the peers alone).\n`);
    return 2;
  }
  const tools = checkTools([...new Set([...o.groups].flatMap((g) => GROUP_TOOLS[g]))]);
  if (tools.missing.length > 0) {
    process.stderr.write(`bench: ${tools.hint}\n(the benchmark never installs packages itself)\n`);
    return 2;
  }

  const bench = new Bench(o);
  const onSignal = () => {
    log("interrupted; cleaning up");
    void bench.cleanup().finally(() => process.exit(130));
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  const started = performance.now();
  let scenarios: ScenarioResult[];
  try {
    scenarios = await bench.run();
  } catch (err) {
    process.stderr.write(`bench: ${(err as Error).stack ?? String(err)}\n`);
    await bench.cleanup();
    return 1;
  }
  await bench.cleanup();

  const toolVersions: Record<string, string> = {};
  for (const t of ["rsync", "xxhsum", "md5sum", "cp"]) if (checkTools([t]).missing.length === 0) toolVersions[t] = toolVersion(t);
  const report = buildReport({
    profile: o.profile,
    options: { profile: o.profile, sizeBytes: o.sizeBytes, rttMs: o.rttMs, runs: o.runs, groups: [...o.groups], workDir: o.workDir, totalSeconds: +((performance.now() - started) / 1000).toFixed(1) },
    machine: describeMachine(o.workDir, toolVersions),
    dataset: bench.dataset,
    scenarios,
  });
  const files = await writeReport(o.outDir, report);
  process.stdout.write(renderMarkdown(report));
  log(`wrote ${files.markdown} and ${files.json} in ${((performance.now() - started) / 1000).toFixed(1)} s; the source dataset stays in ${path.join(o.workDir, "source")} for the next run`);
  if (report.failures.length > 0) {
    log(`${report.failures.length} run(s) failed`);
    return 1;
  }
  return 0;
}

process.exitCode = await main(process.argv.slice(2));
