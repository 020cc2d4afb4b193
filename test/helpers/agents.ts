/**
 * Two real agents on loopback, as two hosts would run them: the source on 127.0.0.1, the
 * destination on 127.0.0.2, both on the same gateway/peer port pair. Agents run in-process
 * (fast) or as child processes (`node --import tsx src/main.ts serve`, so tests can kill -9
 * and restart them). Every test tears its pair down with `pair.stop()`.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { stringify } from "yaml";
import { Agent } from "../../src/agent/agent.js";
import { parseConfig } from "../../src/config/load.js";
import { silentLogger } from "../../src/log.js";
import { httpRequest, type HttpResult } from "./http.js";

export const SOURCE_HOST = "127.0.0.1";
export const DEST_HOST = "127.0.0.2";
export const REPO_ROOT = path.resolve(import.meta.dirname, "../..");

/** The directories of one side (the generator's layout: two data dirs, commitlog, hints, saved_caches). */
export interface SideLayout {
  readonly root: string;
  readonly dataDirs: string[];
  readonly commitlogDir: string;
  readonly hintsDir: string;
  readonly savedCachesDir: string;
  readonly stagingDir: string;
}

export function sideLayout(base: string, name: string): SideLayout {
  const root = path.join(base, name);
  return {
    root,
    dataDirs: [path.join(root, "data0"), path.join(root, "data1")],
    commitlogDir: path.join(root, "commitlog"),
    hintsDir: path.join(root, "hints"),
    savedCachesDir: path.join(root, "saved_caches"),
    stagingDir: path.join(base, `${name}-staging`),
  };
}

export interface ExtraInstance {
  readonly host: string;
  readonly layout: SideLayout;
}

export interface AgentSpec {
  readonly host: string;
  readonly layout: SideLayout;
  readonly gatewayPort: number;
  readonly peerPort: number;
  readonly migrationMap: Record<string, string>;
  /** Native and JMX ports the not-running probe checks; default: closed ports. */
  readonly nativePort?: number;
  readonly jmxPort?: number;
  readonly extraInstances?: ExtraInstance[];
  /** Merged into the live_migration section. */
  readonly liveMigration?: Record<string, unknown>;
  /** Merged into the sidecar_client section (fast retries by default in tests). */
  readonly sidecarClient?: Record<string, unknown>;
}

/** The sidecar.yaml an operator would write for this agent. */
export function agentYaml(spec: AgentSpec): string {
  const instance = (id: number, host: string, layout: SideLayout) => ({
    id,
    host,
    port: spec.nativePort ?? 1,
    jmx_host: host,
    jmx_port: spec.jmxPort ?? 1,
    data_dirs: layout.dataDirs,
    commitlog_dir: layout.commitlogDir,
    hints_dir: layout.hintsDir,
    saved_caches_dir: layout.savedCachesDir,
    staging_dir: layout.stagingDir,
  });
  return stringify({
    cassandra_instances: [
      instance(1, spec.host, spec.layout),
      ...(spec.extraInstances ?? []).map((e, i) => instance(i + 2, e.host, e.layout)),
    ],
    sidecar: { host: spec.host, port: spec.gatewayPort, peer_port: spec.peerPort },
    live_migration: {
      migration_map: spec.migrationMap,
      files_to_exclude: [],
      dirs_to_exclude: ["glob:${DATA_FILE_DIR}/*/*/snapshots"],
      max_concurrent_file_requests: 20,
      ...spec.liveMigration,
    },
    sidecar_client: { max_retries: 3, retry_delay: "50ms", max_retry_delay: "500ms", ...spec.sidecarClient },
  });
}

/** One running agent, in-process or as a child process. */
export class AgentHandle {
  private agent: Agent | undefined;
  private child: ChildProcess | undefined;
  private output = "";

  constructor(
    public spec: AgentSpec,
    readonly configFile: string,
    readonly mode: "in-process" | "process",
  ) {}

  get host(): string {
    return this.spec.host;
  }

  get port(): number {
    return this.spec.gatewayPort;
  }

  /** stdout+stderr of a child-process agent so far. */
  get logs(): string {
    return this.output;
  }

  async start(): Promise<void> {
    await writeFile(this.configFile, agentYaml(this.spec));
    if (this.mode === "in-process") {
      const { config } = parseConfig(agentYaml(this.spec), this.configFile);
      this.agent = Agent.create(config, { logger: silentLogger });
      await this.agent.start();
      return;
    }
    const child = spawn(process.execPath, ["--import", "tsx", "src/main.ts", "serve", "--config", this.configFile], {
      cwd: REPO_ROOT,
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, LOG_LEVEL: process.env["LOG_LEVEL"] ?? "info" },
    });
    this.child = child;
    const started = new Promise<void>((resolve, reject) => {
      const onData = (chunk: Buffer) => {
        this.output += chunk.toString();
        if (this.output.includes('"lm-sidecar started"')) resolve();
      };
      child.stdout!.on("data", onData);
      child.stderr!.on("data", (c: Buffer) => (this.output += c.toString()));
      child.once("exit", (code) => reject(new Error(`agent exited with ${code} before starting:\n${this.output}`)));
    });
    await started;
  }

  /** Graceful stop (SIGTERM for a child). */
  async stop(): Promise<void> {
    if (this.agent) {
      await this.agent.stop(1_000);
      this.agent = undefined;
    }
    if (this.child) {
      const child = this.child;
      this.child = undefined;
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((r) => child.once("exit", r));
        child.kill("SIGTERM");
        await exited;
      }
    }
  }

  /** Kills a child-process agent without warning (default SIGKILL). */
  async kill(signal: NodeJS.Signals = "SIGKILL"): Promise<void> {
    const child = this.child;
    if (!child) throw new Error("kill() needs a child-process agent");
    this.child = undefined;
    const exited = new Promise((r) => child.once("exit", r));
    child.kill(signal);
    await exited;
  }

  /** Stops (if running) and starts again, optionally with a changed spec. */
  async restart(change: Partial<AgentSpec> = {}): Promise<void> {
    await this.stop();
    this.spec = { ...this.spec, ...change };
    await this.start();
  }

  /** An HTTP request to this agent's gateway; the Host header names this agent's instance unless given. */
  request(method: string, apiPath: string, options: { body?: unknown; host?: string; headers?: Record<string, string> } = {}): Promise<HttpResult> {
    return httpRequest({
      method,
      address: this.spec.host,
      port: this.spec.gatewayPort,
      path: apiPath,
      host: options.host ?? `${this.spec.host}:${this.spec.gatewayPort}`,
      headers: options.headers,
      body: options.body as string | Buffer | object | undefined,
    });
  }
}

/** A TCP port free on every given address. */
export async function freePort(addresses: readonly string[] = [SOURCE_HOST, DEST_HOST], avoid: readonly number[] = []): Promise<number> {
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
  throw new Error("no free port pair found");
}

export interface Pair {
  readonly base: string;
  readonly source: AgentHandle;
  readonly destination: AgentHandle;
  readonly sourceLayout: SideLayout;
  readonly destLayout: SideLayout;
  readonly gatewayPort: number;
  readonly peerPort: number;
  stop(): Promise<void>;
}

export interface PairOptions {
  /** Fills the source tree before the agents start. */
  readonly populate?: (source: SideLayout) => Promise<void>;
  readonly mode?: "in-process" | "process";
  readonly sourceMode?: "in-process" | "process";
  readonly destinationMode?: "in-process" | "process";
  readonly source?: Partial<AgentSpec>;
  readonly destination?: Partial<AgentSpec>;
}

/** Makes a temp base dir, the source tree, and starts both agents on one free port pair. */
export async function startPair(options: PairOptions = {}): Promise<Pair> {
  const base = await mkdtemp(path.join(os.tmpdir(), "lm-pair-"));
  const sourceLayout = sideLayout(base, "source");
  const destLayout = sideLayout(base, "destination");
  for (const dir of [...sourceLayout.dataDirs, sourceLayout.commitlogDir, sourceLayout.hintsDir, sourceLayout.savedCachesDir]) {
    await mkdir(dir, { recursive: true });
  }
  await options.populate?.(sourceLayout);
  const gatewayPort = await freePort();
  const peerPort = await freePort(undefined, [gatewayPort]);
  const migrationMap = { [SOURCE_HOST]: DEST_HOST };
  const source = new AgentHandle(
    { host: SOURCE_HOST, layout: sourceLayout, gatewayPort, peerPort, migrationMap, ...options.source },
    path.join(base, "source.yaml"),
    options.sourceMode ?? options.mode ?? "in-process",
  );
  const destination = new AgentHandle(
    { host: DEST_HOST, layout: destLayout, gatewayPort, peerPort, migrationMap, ...options.destination },
    path.join(base, "destination.yaml"),
    options.destinationMode ?? options.mode ?? "in-process",
  );
  await source.start();
  try {
    await destination.start();
  } catch (err) {
    await source.stop();
    throw err;
  }
  return {
    base,
    source,
    destination,
    sourceLayout,
    destLayout,
    gatewayPort,
    peerPort,
    async stop() {
      await Promise.allSettled([source.stop(), destination.stop()]);
      await rm(base, { recursive: true, force: true });
    },
  };
}

/** Polls `GET path` on an agent until `done(json)` or the timeout. */
export async function pollUntil(
  agent: AgentHandle,
  apiPath: string,
  done: (json: any) => boolean,
  timeoutMs = 60_000,
  intervalMs = 100,
): Promise<any> {
  const deadline = Date.now() + timeoutMs;
  let last: HttpResult | undefined;
  while (Date.now() < deadline) {
    last = await agent.request("GET", apiPath);
    if (last.status === 200 && done(last.json)) return last.json;
    await new Promise((r) => setTimeout(r, intervalMs));
  }
  throw new Error(`timed out polling ${apiPath}; last answer ${last?.status} ${last?.text}`);
}

/** The last status entry's state of a data-copy task. */
export function lastState(task: { status: { state: string }[] }): string | undefined {
  return task.status.at(-1)?.state;
}

export const TERMINAL_DATA_COPY_STATES = ["SUCCESS", "FAILED", "CANCELLED"];
