/**
 * The benchmark's peers — an rsync daemon on loopback, `cp -a`, `md5sum` and `xxhsum -H0` — and
 * the measuring of any process tree: wall time, CPU seconds and peak RSS from /proc (Linux only).
 * Nothing here installs anything; {@link checkTools} says which apt packages are missing.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { readdir, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";

/** Commands the peer scenarios run, with the Debian package that provides each. */
export const REQUIRED_TOOLS: Readonly<Record<string, string>> = {
  rsync: "rsync",
  xxhsum: "xxhash",
  md5sum: "coreutils",
  cp: "coreutils",
  sync: "coreutils",
  xargs: "findutils",
  bash: "bash",
};

export interface ToolCheck {
  /** Commands not found on PATH. */
  missing: string[];
  /** Debian packages that provide them, deduplicated. */
  packages: string[];
  /** Human-readable hint, empty when nothing is missing. */
  hint: string;
}

/** Looks each of `tools` up on PATH (via `command -v`); never installs anything. */
export function checkTools(tools: readonly string[] = Object.keys(REQUIRED_TOOLS)): ToolCheck {
  const missing = tools.filter((t) => spawnSync("sh", ["-c", `command -v ${t}`], { stdio: "ignore" }).status !== 0);
  const packages = [...new Set(missing.map((t) => REQUIRED_TOOLS[t] ?? t))];
  const hint = missing.length === 0 ? "" : `missing: ${missing.join(", ")}; install with: apt-get update && apt-get install -y ${packages.join(" ")}`;
  return { missing, packages, hint };
}

/** First line of `<tool> --version`, or "unknown". */
export function toolVersion(tool: string): string {
  const r = spawnSync(tool, ["--version"], { encoding: "utf8" });
  return `${r.stdout ?? ""}${r.stderr ?? ""}`.split("\n")[0]?.trim() || "unknown";
}

// ---------------------------------------------------------------- /proc sampling

/** Clock ticks per second of /proc/<pid>/stat times (getconf CLK_TCK, almost always 100). */
export const CLOCK_TICKS_PER_S = (() => {
  const out = spawnSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).stdout;
  const n = Number.parseInt(out ?? "", 10);
  return Number.isFinite(n) && n > 0 ? n : 100;
})();

interface ProcStat {
  ppid: number;
  /** utime + stime of the process itself, in ticks. */
  selfTicks: number;
  /** cutime + cstime: waited-for descendants, in ticks. */
  childTicks: number;
}

/** Parses /proc/<pid>/stat; undefined when the process is gone. */
export async function readProcStat(pid: number): Promise<ProcStat | undefined> {
  let text: string;
  try {
    text = await readFile(`/proc/${pid}/stat`, "utf8");
  } catch {
    return undefined;
  }
  return parseStat(text);
}

function parseStat(text: string): ProcStat | undefined {
  // Fields after "(comm)": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime cutime cstime …
  const f = text.slice(text.lastIndexOf(")") + 2).split(" ");
  if (f.length < 15) return undefined;
  const n = (i: number) => Number(f[i]);
  return { ppid: n(1), selfTicks: n(11) + n(12), childTicks: n(13) + n(14) };
}

/** CPU seconds of `pid` and its reaped descendants (utime+stime+cutime+cstime); undefined when gone. */
export async function cpuSecondsOf(pid: number): Promise<number | undefined> {
  const s = await readProcStat(pid);
  return s ? (s.selfTicks + s.childTicks) / CLOCK_TICKS_PER_S : undefined;
}

/** VmHWM (peak resident set) of `pid` in bytes; undefined when gone. */
export async function peakRssOf(pid: number): Promise<number | undefined> {
  try {
    const m = /^VmHWM:\s+(\d+)\s+kB/m.exec(await readFile(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Resets the VmHWM of `pid` to its current RSS (writes "5" to /proc/<pid>/clear_refs, Linux ≥ 4.0).
 * Returns false when the kernel or permissions refuse; VmHWM is then the peak since start.
 */
export async function resetPeakRss(pid: number): Promise<boolean> {
  try {
    await writeFile(`/proc/${pid}/clear_refs`, "5");
    return true;
  } catch {
    return false;
  }
}

/** Whether /proc/<pid>/task/<tid>/children exists (CONFIG_PROC_CHILDREN); otherwise /proc is scanned. */
let childrenFilesWork: boolean | undefined;

/** Direct children of `pid` from /proc/<pid>/task/<tid>/children (every thread's). */
async function childrenOf(pid: number): Promise<number[]> {
  let tids: string[];
  try {
    tids = await readdir(`/proc/${pid}/task`);
  } catch {
    return [];
  }
  const lists = await Promise.all(
    tids.map(async (tid) => {
      try {
        return (await readFile(`/proc/${pid}/task/${tid}/children`, "utf8")).split(" ").filter(Boolean).map(Number);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === "ENOENT" && childrenFilesWork === undefined) {
          try {
            await readdir(`/proc/${pid}/task/${tid}`);
            childrenFilesWork = false; // the thread exists but has no children file
          } catch {
            // the thread ended meanwhile
          }
        }
        return [];
      }
    }),
  );
  if (childrenFilesWork === undefined && lists.length > 0) childrenFilesWork = true;
  return lists.flat();
}

/** Child pids by parent pid, from one pass over /proc (the fallback of {@link childrenOf}). */
async function processTree(): Promise<Map<number, number[]>> {
  const children = new Map<number, number[]>();
  const pids = (await readdir("/proc")).filter((n) => /^\d+$/.test(n)).map(Number);
  await Promise.all(
    pids.map(async (pid) => {
      const s = await readProcStat(pid);
      if (!s) return;
      const list = children.get(s.ppid);
      if (list) list.push(pid);
      else children.set(s.ppid, [pid]);
    }),
  );
  return children;
}

/** Descendants of `pid` (not `pid` itself), children before grandchildren. */
export async function descendantsOf(pid: number): Promise<number[]> {
  const out: number[] = [];
  if (childrenFilesWork === false) {
    const tree = await processTree();
    const stack = [...(tree.get(pid) ?? [])];
    while (stack.length > 0) {
      const p = stack.pop()!;
      out.push(p);
      stack.push(...(tree.get(p) ?? []));
    }
    return out;
  }
  let level = await childrenOf(pid);
  while (level.length > 0) {
    out.push(...level);
    level = (await Promise.all(level.map(childrenOf))).flat();
  }
  return out;
}

/**
 * Polls the peak memory of process trees. At every poll it sums the VmHWM of the processes
 * alive under the roots (roots themselves only when `includeRoots`); the result is the largest
 * such sum. Concurrent processes therefore count together, sequential ones do not; a
 * process that lives less than one interval may be missed.
 */
export class PeakRssSampler {
  private timer: NodeJS.Timeout | undefined;
  private peakBytes = 0;
  private polling: Promise<void> = Promise.resolve();

  constructor(
    private readonly roots: () => number[],
    private readonly options: { includeRoots: boolean; intervalMs?: number },
  ) {}

  start(): void {
    const tick = () => {
      this.polling = this.poll().finally(() => {
        if (this.timer) this.timer = setTimeout(tick, this.options.intervalMs ?? 50);
      });
    };
    this.timer = setTimeout(tick, 0);
  }

  /** One more poll (to catch long-lived processes' final VmHWM), then stops; returns the peak in bytes. */
  async stop(): Promise<number> {
    clearTimeout(this.timer);
    this.timer = undefined;
    await this.polling;
    await this.poll();
    return this.peakBytes;
  }

  private async poll(): Promise<void> {
    const pids: number[] = [];
    for (const root of this.roots()) {
      if (root <= 0) continue;
      if (this.options.includeRoots) pids.push(root);
      pids.push(...(await descendantsOf(root)));
    }
    const sizes = await Promise.all(pids.map(peakRssOf));
    const sum = sizes.reduce<number>((a, b) => a + (b ?? 0), 0);
    if (sum > this.peakBytes) this.peakBytes = sum;
  }
}

// ---------------------------------------------------------------- measured shell runs

export interface Measurement {
  /** Wall time from spawn to exit, in seconds. */
  seconds: number;
  /** CPU seconds (user + system) of the whole process tree, from the wrapper shell's cutime/cstime. */
  cpuSeconds: number;
  /** Peak of the summed VmHWM of the tree's live processes (see {@link PeakRssSampler}), in bytes. */
  peakRssBytes: number;
  exitCode: number;
  /** Last 4 KiB of stderr. */
  stderrTail: string;
}

/** Quotes `s` for bash as one word. */
export function shq(s: string): string {
  return `'${s.replaceAll("'", `'\\''`)}'`;
}

/**
 * Runs the bash snippet `script` and measures it. The snippet runs inside a wrapper shell that,
 * after it finishes, records its own /proc stat: cutime+cstime there include every descendant
 * the snippet waited for, so CPU seconds are exact even for processes too short to sample.
 * `extraRoots` adds process trees (e.g. an rsync daemon's per-connection children) to the RSS
 * sampling. Never rejects for a non-zero exit: see `exitCode`.
 */
export async function runMeasured(script: string, options: { cwd?: string; extraRoots?: () => number[] } = {}): Promise<Measurement> {
  const statFile = path.join(os.tmpdir(), `lm-bench-stat-${process.pid}-${Math.random().toString(36).slice(2)}`);
  const wrapper = `{\n${script}\n}\nrc=$?\nread -r s < /proc/$$/stat\nprintf '%s\\n' "$s" > ${shq(statFile)}\nexit $rc`;
  const started = performance.now();
  const child = spawn("bash", ["-c", wrapper], { cwd: options.cwd, stdio: ["ignore", "ignore", "pipe"] });
  const sampler = new PeakRssSampler(() => [child.pid ?? -1, ...(options.extraRoots?.() ?? [])], { includeRoots: false });
  sampler.start();
  let stderr = "";
  child.stderr!.on("data", (c: Buffer) => {
    stderr = (stderr + c.toString()).slice(-4096);
  });
  const exitCode = await new Promise<number>((resolve) => {
    child.once("error", () => resolve(127));
    child.once("close", (code) => resolve(code ?? 128));
  });
  const seconds = (performance.now() - started) / 1000;
  const peakRssBytes = await sampler.stop();
  let cpuSeconds = Number.NaN;
  try {
    const s = parseStat((await readFile(statFile, "utf8")).trim());
    if (s) cpuSeconds = (s.selfTicks + s.childTicks) / CLOCK_TICKS_PER_S;
  } catch {
    // the wrapper died before writing it; CPU stays NaN
  }
  await rm(statFile, { force: true });
  return { seconds, cpuSeconds, peakRssBytes, exitCode, stderrTail: stderr };
}

/** Throws with the command's stderr when `m` did not exit 0. */
export function expectSuccess(m: Measurement, what: string): Measurement {
  if (m.exitCode !== 0) throw new Error(`${what} exited with ${m.exitCode}: ${m.stderrTail.trim()}`);
  return m;
}

// ---------------------------------------------------------------- rsync daemon

/**
 * The rsyncd.conf of the benchmark: one read-only module `module` serving `root`, chroot off, run
 * as the current user, and a daemon exclude for `<data dir>/<ks>/<table>/snapshots`, the same
 * subtrees lm-sidecar's default `dirs_to_exclude` skips.
 */
export function rsyncdConf(opts: { root: string; port: number; address: string; module: string; workDir: string }): string {
  const uid = process.getuid?.() ?? 0;
  const gid = process.getgid?.() ?? 0;
  return [
    `# generated by test/bench/tools.ts`,
    `port = ${opts.port}`,
    `address = ${opts.address}`,
    `pid file = ${path.join(opts.workDir, "rsyncd.pid")}`,
    `log file = ${path.join(opts.workDir, "rsyncd.log")}`,
    `use chroot = no`,
    `max connections = 8`,
    ``,
    `[${opts.module}]`,
    `  path = ${opts.root}`,
    `  read only = yes`,
    `  use chroot = no`,
    // As root the daemon would switch to "nobody", who cannot read a 0700 temp dir; stay ourselves.
    ...(uid === 0 ? [`  uid = ${uid}`, `  gid = ${gid}`] : []),
    `  numeric ids = yes`,
    `  exclude = /data*/*/*/snapshots/`,
    ``,
  ].join("\n");
}

export interface RsyncDaemon {
  readonly pid: number;
  readonly port: number;
  readonly module: string;
  /** Stops the daemon (SIGTERM, then SIGKILL after 3 s). */
  stop(): Promise<void>;
}

/** Starts `rsync --daemon --no-detach` on `address:port` serving `root` as module `module`; resolves once it accepts connections. */
export async function startRsyncDaemon(opts: { root: string; port: number; address?: string; module?: string; workDir: string }): Promise<RsyncDaemon> {
  const address = opts.address ?? "127.0.0.1";
  const module = opts.module ?? "src";
  const conf = path.join(opts.workDir, "rsyncd.conf");
  await writeFile(conf, rsyncdConf({ root: opts.root, port: opts.port, address, module, workDir: opts.workDir }));
  await rm(path.join(opts.workDir, "rsyncd.pid"), { force: true });
  const child = spawn("rsync", ["--daemon", "--no-detach", `--config=${conf}`, `--port=${opts.port}`, `--address=${address}`], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  let stderr = "";
  child.stderr!.on("data", (c: Buffer) => (stderr += c.toString()));
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`rsync daemon exited with ${child.exitCode}: ${stderr}`);
    const probe = spawnSync("rsync", [`rsync://${address}:${opts.port}/`], { encoding: "utf8", timeout: 5_000 });
    if (probe.status === 0 && probe.stdout.includes(module)) break;
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`rsync daemon did not answer on ${address}:${opts.port}: ${stderr}${probe.stderr ?? ""}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return { pid: child.pid!, port: opts.port, module, stop: () => stopChild(child, 3_000) };
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves when the child has exited. */
export async function stopChild(child: ChildProcess, graceMs: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
  await exited;
  clearTimeout(timer);
}

/** Waits (up to `timeoutMs`) until `pid` has no child processes, i.e. a daemon reaped its workers. */
async function waitChildless(pid: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while ((await descendantsOf(pid)).length > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
}

/**
 * `rsync -a --whole-file [--checksum] rsync://<host>:<port>/<module>/ <dest>/`, then `sync`.
 * `host` is where the client connects (the daemon's address, or a proxy in front of it). CPU and
 * RSS include the daemon's per-connection worker.
 */
export async function rsyncPull(daemon: RsyncDaemon, dest: string, opts: { host?: string; checksum?: boolean } = {}): Promise<Measurement> {
  const url = `rsync://${opts.host ?? "127.0.0.1"}:${daemon.port}/${daemon.module}/`;
  const flags = ["-a", "--whole-file", ...(opts.checksum ? ["--checksum"] : [])].join(" ");
  const daemonCpuBefore = (await cpuSecondsOf(daemon.pid)) ?? 0;
  const m = await runMeasured(`rsync ${flags} ${shq(url)} ${shq(dest + "/")} && sync`, { extraRoots: () => [daemon.pid] });
  await waitChildless(daemon.pid, 3_000);
  const daemonCpuAfter = (await cpuSecondsOf(daemon.pid)) ?? daemonCpuBefore;
  return { ...m, cpuSeconds: m.cpuSeconds + (daemonCpuAfter - daemonCpuBefore) };
}

/** `cp -a <src> <dest>; sync` — the local-disk limit (copies snapshots too, preserving their hard links). */
export function cpCopy(src: string, dest: string): Promise<Measurement> {
  return runMeasured(`cp -a ${shq(src)} ${shq(dest)} && sync`);
}

/** Writes `files` as a NUL-separated list split in two halves of about equal bytes (largest first, greedy). */
export async function writeBalancedLists(files: readonly { abs: string; size: number }[], listA: string, listB: string): Promise<void> {
  const sorted = [...files].sort((a, b) => b.size - a.size || (a.abs < b.abs ? -1 : 1));
  const halves: [string[], string[]] = [[], []];
  const bytes = [0, 0];
  for (const f of sorted) {
    const i = bytes[0]! <= bytes[1]! ? 0 : 1;
    halves[i]!.push(f.abs);
    bytes[i]! += f.size;
  }
  await writeFile(listA, halves[0].map((p) => `${p}\0`).join(""));
  await writeFile(listB, halves[1].map((p) => `${p}\0`).join(""));
}

export type DigestTool = "md5sum" | "xxhsum";

/**
 * Digests every file of `files` (both trees' lists concatenated by the caller) with `md5sum` or
 * `xxhsum -H0` (XXH32), two processes in parallel over two byte-balanced halves via xargs.
 */
export async function digestFiles(tool: DigestTool, files: readonly { abs: string; size: number }[], workDir: string): Promise<Measurement> {
  const listA = path.join(workDir, `${tool}.list.a`);
  const listB = path.join(workDir, `${tool}.list.b`);
  await writeBalancedLists(files, listA, listB);
  const cmd = tool === "md5sum" ? "md5sum" : "xxhsum -H0";
  const script = [
    `xargs -0 -r ${cmd} < ${shq(listA)} > /dev/null & a=$!`,
    `xargs -0 -r ${cmd} < ${shq(listB)} > /dev/null & b=$!`,
    `wait $a; ra=$?; wait $b; rb=$?`,
    `[ $ra -eq 0 ] && [ $rb -eq 0 ]`,
  ].join("\n");
  const m = await runMeasured(script);
  await rm(listA, { force: true });
  await rm(listB, { force: true });
  return m;
}
