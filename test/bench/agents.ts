/**
 * Real agents for the benchmarks (bench.ts, ab.ts): their sidecar.yaml, their processes, what
 * they cost (CPU, peak RSS), and the destination's REST API as an operator drives it. Linux
 * only (/proc).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { closeSync, openSync, readFileSync } from "node:fs";
import { mkdir, writeFile } from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import { stringify } from "yaml";
import { datasetLayout } from "../../src/dataset/generate.js";
import type { Resources } from "./report.js";
import { cpuSecondsOf, peakRssOf, resetPeakRss, stopChild } from "./tools.js";

export const REPO_ROOT = path.resolve(import.meta.dirname, "../..");
/** The source agent's address, and the destination's. */
export const SOURCE_HOST = "127.0.0.1";
export const DEST_HOST = "127.0.0.2";
/** The source's address as the destination sees it behind the delay proxy (delay-proxy.ts). */
export const PROXIED_SOURCE_HOST = "127.0.0.3";
export const API = "/api/v1/live-migration";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A TCP port free on every address. */
export async function freePort(addresses: readonly string[], avoid: readonly number[]): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const port = await new Promise<number>((resolve, reject) => {
      const s = net.createServer();
      s.once("error", reject);
      s.listen(0, addresses[0], () => {
        const p = (s.address() as net.AddressInfo).port;
        s.close(() => resolve(p));
      });
    });
    if (avoid.includes(port)) continue;
    let ok = true;
    for (const address of addresses.slice(1)) {
      ok = await new Promise<boolean>((resolve) => {
        const s = net.createServer();
        s.once("error", () => resolve(false));
        s.listen(port, address, () => s.close(() => resolve(true)));
      });
      if (!ok) break;
    }
    if (ok) return port;
  }
  throw new Error(`no port free on all of ${addresses.join(", ")}`);
}

/** Resolves once `host:port` accepts a TCP connection. */
export function canConnect(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host, port });
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });
}

export interface Side {
  name: string;
  root: string;
  stagingDir: string;
}

export function sideOf(workDir: string, name: string): Side {
  return { name, root: path.join(workDir, name), stagingDir: path.join(workDir, `${name}-staging`) };
}

/** Creates the directories that agentConfigYaml names for `side` (an empty destination's). */
export async function makeAgentDirs(side: Side): Promise<void> {
  const layout = datasetLayout(side.root);
  for (const d of [...layout.dataDirs, layout.commitlogDir, layout.hintsDir, layout.savedCachesDir, side.stagingDir]) await mkdir(d, { recursive: true });
}

/** The sidecar.yaml of one agent (see the benchmark issue): instance `instanceHost`, listening on `bindHost`. */
export function agentConfigYaml(side: Side, instanceHost: string, bindHost: string, ports: AgentPorts, migrationMap: Record<string, string>): string {
  const layout = datasetLayout(side.root);
  return stringify({
    cassandra_instances: [
      {
        id: 1,
        host: instanceHost,
        port: 19042, // native port nobody listens on: Cassandra counts as stopped
        jmx_host: "127.0.0.1",
        jmx_port: 19199,
        data_dirs: layout.dataDirs,
        commitlog_dir: layout.commitlogDir,
        hints_dir: layout.hintsDir,
        saved_caches_dir: layout.savedCachesDir,
        staging_dir: side.stagingDir,
      },
    ],
    sidecar: { host: bindHost, port: ports.gateway, peer_port: ports.peer },
    live_migration: {
      migration_map: migrationMap,
      dirs_to_exclude: ["glob:${DATA_FILE_DIR}/*/*/snapshots"],
      max_concurrent_file_requests: 20,
    },
  });
}

/** The two ports every agent of a run listens on, on its own address, as two hosts would. */
export interface AgentPorts {
  gateway: number;
  peer: number;
}

/** The built entry point an agent command runs: itself if a .js file, else its launcher's checkout's dist/src/main.js. */
export function builtEntryOf(agentMain: string): string {
  return agentMain.endsWith(".js") ? agentMain : path.resolve(path.dirname(agentMain), "../../dist/src/main.js");
}

export interface AgentProcessOptions {
  readonly label: string;
  /**
   * The agent command: an lm-sidecar launcher (`<checkout>/src/cli/lm-sidecar.sh`, which runs
   * that checkout's dist/src/main.js), or a .js entry point run with node.
   */
  readonly agentMain: string;
  readonly configFile: string;
  /** Where stdout and stderr are appended. */
  readonly logFile: string;
  readonly bindHost: string;
  readonly ports: AgentPorts;
  readonly logLevel: string;
  /** Node flags (--cpu-prof): the launcher's entry point then runs with node directly. */
  readonly nodeArgs?: readonly string[];
  /** Added to the environment. The launcher puts GLIBC_TUNABLES given here after its own, so they win. */
  readonly env?: Readonly<Record<string, string>>;
}

/**
 * One agent child process (`<agentMain> serve --config <file>`: the lm-sidecar launcher, which
 * execs node under the same PID, or `node <file.js>`), logs appended to a file.
 */
export class AgentProcess {
  private child: ChildProcess | undefined;
  readonly label: string;
  readonly logFile: string;

  constructor(private readonly o: AgentProcessOptions) {
    this.label = o.label;
    this.logFile = o.logFile;
  }

  get pid(): number {
    if (this.child?.pid === undefined) throw new Error(`${this.label} agent is not running`);
    return this.child.pid;
  }

  /** Writes the config, spawns the agent and waits (≤ 30 s) until both its ports accept connections. */
  async start(yaml: string): Promise<void> {
    const { agentMain, configFile, bindHost, ports, nodeArgs = [] } = this.o;
    await writeFile(configFile, yaml);
    const fd = openSync(this.logFile, "a");
    // Node options (--cpu-prof, which NODE_OPTIONS refuses) need node itself: such runs start
    // the launcher's built entry point directly, without its malloc tunables.
    const entry = nodeArgs.length === 0 ? agentMain : builtEntryOf(agentMain);
    const serve = ["serve", "--config", configFile];
    const viaNode = entry.endsWith(".js");
    const child = spawn(viaNode ? process.execPath : entry, viaNode ? [...nodeArgs, entry, ...serve] : serve, {
      cwd: REPO_ROOT,
      stdio: ["ignore", fd, fd],
      env: { ...process.env, LOG_LEVEL: this.o.logLevel, ...this.o.env },
    });
    closeSync(fd);
    this.child = child;
    const deadline = Date.now() + 30_000;
    for (;;) {
      if (child.exitCode !== null || child.signalCode !== null) {
        this.child = undefined;
        throw new Error(`${this.label} agent exited (${child.exitCode ?? child.signalCode}) while starting; last log lines:\n${this.logTail()}`);
      }
      if ((await canConnect(bindHost, ports.gateway)) && (await canConnect(bindHost, ports.peer))) return;
      if (Date.now() > deadline) throw new Error(`${this.label} agent did not listen on ${bindHost}:${ports.gateway}/${ports.peer} within 30 s:\n${this.logTail()}`);
      await sleep(50);
    }
  }

  async stop(): Promise<void> {
    const child = this.child;
    this.child = undefined;
    if (child) await stopChild(child, 10_000);
  }

  logTail(): string {
    try {
      return readFileSync(this.logFile, "utf8").split("\n").slice(-15).join("\n");
    } catch {
      return "(no log)";
    }
  }
}

/** CPU and peak RSS of an agent across one operation: VmHWM is reset before, CPU is a difference. */
export class AgentMeter {
  private cpuBefore = 0;

  constructor(private readonly agent: AgentProcess) {}

  async begin(): Promise<void> {
    await resetPeakRss(this.agent.pid);
    this.cpuBefore = (await cpuSecondsOf(this.agent.pid)) ?? 0;
  }

  async end(): Promise<Resources | undefined> {
    const cpu = await cpuSecondsOf(this.agent.pid);
    const rss = await peakRssOf(this.agent.pid);
    if (cpu === undefined || rss === undefined) return undefined;
    return { peakRssBytes: rss, cpuSeconds: cpu - this.cpuBefore };
  }
}

export interface JsonResponse {
  status: number;
  body: unknown;
}

export async function requestJson(method: string, url: string, body?: unknown): Promise<JsonResponse> {
  const res = await fetch(url, {
    method,
    headers: body === undefined ? {} : { "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    // keep the text
  }
  return { status: res.status, body: parsed };
}

/**
 * How often the benchmark asks for a running task's status. Each request costs the destination
 * agent ~0.3 ms of CPU and this process ~0.75 ms (1,000 in a row), on the cores the agents use;
 * the figures do not depend on it (taskEndFromLog).
 */
export const POLL_MS = 50;

/**
 * When a task reached its terminal state, in ms since the epoch, from the destination agent's
 * log line for it (`time`, to the ms); undefined if the log has none (a log level above info).
 * A figure that ended when a poll saw the state would add 25 ms on average (half of POLL_MS),
 * ~6 % of a small-tree verification, where the peer tools' figures end when their process
 * exits; polling every few ms instead would take ~1 ms of CPU per poll from the agents' cores
 * (~130 polls in a small-tree copy at 2.5 % of the time waited).
 */
export async function taskEndFromLog(logFile: string, taskId: string, terminal: RegExp): Promise<number | undefined> {
  // The agent writes its log asynchronously: the line may land a few ms after the state changed.
  for (let attempt = 0; attempt < 20; attempt++) {
    let text = "";
    try {
      text = readFileSync(logFile, "utf8");
    } catch {
      return undefined;
    }
    for (let end = text.length; end > 0; ) {
      const start = text.lastIndexOf("\n", end - 2) + 1;
      const line = text.slice(start, end);
      end = start;
      if (!line.includes(taskId)) continue;
      try {
        const parsed = JSON.parse(line) as { liveMigrationRequest?: string; msg?: string; time?: string };
        if (parsed.liveMigrationRequest === taskId && terminal.test(parsed.msg ?? "") && parsed.time !== undefined) return Date.parse(parsed.time);
      } catch {
        // not a log line of ours
      }
    }
    await sleep(10);
  }
  return undefined;
}

/** What an lm-sidecar task ended as, and how to learn when (taskEndFromLog). */
export interface TaskOutcome {
  readonly task: Record<string, unknown>;
  /** ms since the epoch; undefined when the log does not say. */
  readonly endedAt: () => Promise<number | undefined>;
}

/** The destination's REST API: start a task, poll its status URL until a terminal state. */
export class DestinationApi {
  constructor(
    private readonly base: string,
    private readonly logFile: string,
  ) {}

  private async start(route: string, body: unknown): Promise<{ taskId: string; statusUrl: string }> {
    const res = await requestJson("POST", `${this.base}${API}/${route}`, body);
    const b = res.body as { taskId?: string; statusUrl?: string };
    if (res.status !== 202 || typeof b?.statusUrl !== "string" || typeof b.taskId !== "string") {
      throw new Error(`POST ${route} answered ${res.status}: ${JSON.stringify(res.body)}`);
    }
    return { taskId: b.taskId, statusUrl: b.statusUrl };
  }

  private async poll<T>(statusUrl: string, done: (body: T) => boolean, timeoutMs: number): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const res = await requestJson("GET", `${this.base}${statusUrl}`);
      if (res.status !== 200) throw new Error(`GET ${statusUrl} answered ${res.status}: ${JSON.stringify(res.body)}`);
      const body = res.body as T;
      if (done(body)) return body;
      if (Date.now() > deadline) throw new Error(`task ${statusUrl} not finished after ${timeoutMs / 1000} s: ${JSON.stringify(body)}`);
      await sleep(POLL_MS);
    }
  }

  /** POST data-copy-tasks and wait for the last iteration's terminal state; throws unless SUCCESS. */
  async dataCopy(timeoutMs: number): Promise<TaskOutcome> {
    type Task = { status?: { state?: string; failureReason?: string }[] };
    const { taskId, statusUrl } = await this.start("data-copy-tasks", { maxIterations: 3, successThreshold: 1.0, maxConcurrency: 10 });
    const task = await this.poll<Task>(statusUrl, (t) => ["SUCCESS", "FAILED", "CANCELLED"].includes(t.status?.at(-1)?.state ?? ""), timeoutMs);
    const last = task.status!.at(-1)!;
    if (last.state !== "SUCCESS") throw new Error(`data copy ended ${last.state}: ${last.failureReason ?? JSON.stringify(task.status)}`);
    return { task: task as Record<string, unknown>, endedAt: () => taskEndFromLog(this.logFile, taskId, /^iteration \d+: SUCCESS$/) };
  }

  /** POST files-verification-tasks and wait for a terminal state; throws unless COMPLETED with no mismatch. */
  async verify(digestAlgorithm: "MD5" | "XXHash32", timeoutMs: number): Promise<TaskOutcome> {
    type Task = Record<string, unknown> & { state?: string };
    const { taskId, statusUrl } = await this.start("files-verification-tasks", { maxConcurrency: 10, digestAlgorithm });
    const task = await this.poll<Task>(statusUrl, (t) => ["COMPLETED", "FAILED", "CANCELLED"].includes(t.state ?? ""), timeoutMs);
    if (task.state !== "COMPLETED") throw new Error(`verification ended ${task.state}: ${JSON.stringify(task)}`);
    const bad = ["filesNotFoundAtSource", "filesNotFoundAtDestination", "metadataMismatches", "digestMismatches", "digestVerificationFailures"].filter(
      (k) => typeof task[k] === "number" && (task[k] as number) > 0,
    );
    if (bad.length > 0) throw new Error(`verification found differences: ${bad.map((k) => `${k}=${String(task[k])}`).join(", ")}`);
    return { task, endedAt: () => taskEndFromLog(this.logFile, taskId, /^Files verification completed$/) };
  }
}
